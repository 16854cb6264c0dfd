"""Output capture (core/hooks.py): hooks always removed, early stop, thread ownership, copies."""

from __future__ import annotations

import threading

import pytest
import torch

from cnnvis_widgets.core.hooks import active_hook_count, capture, forward_to


def x() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_capture_records_outputs_and_removes_its_hooks(tiny_handle) -> None:
    with capture(tiny_handle, ["conv1", "conv2", "conv1"]) as acts:
        assert active_hook_count(tiny_handle) == 2  # one per distinct layer
        logits = forward_to(tiny_handle, x(), acts, needs_logits=True)
    assert active_hook_count(tiny_handle) == 0
    assert set(acts) == {"conv1", "conv2"}
    assert acts["conv1"].shape == (2, 8, 32, 32) and acts["conv2"].shape == (2, 16, 16, 16)
    assert logits.shape == (2, 5)


def test_hooks_are_removed_after_an_error_inside_the_block(tiny_handle) -> None:
    with pytest.raises(ZeroDivisionError):
        with capture(tiny_handle, ["conv1", "fc"]) as acts:
            forward_to(tiny_handle, x(), acts, needs_logits=True)
            raise ZeroDivisionError("an error inside the block")
    assert active_hook_count(tiny_handle) == 0
    with pytest.raises(KeyError):  # an unknown layer: nothing is left registered either
        with capture(tiny_handle, ["conv1", "conv9"]):
            pass
    assert active_hook_count(tiny_handle) == 0


def test_stop_early_ends_the_pass_at_the_deepest_layer(tiny_handle) -> None:
    ran = []
    later = tiny_handle.module("fc").register_forward_hook(lambda *a: ran.append("fc"))
    try:
        with capture(tiny_handle, ["conv2", "conv1"], stop_early=True) as acts:
            assert forward_to(tiny_handle, x(), acts, needs_logits=False) is None
            assert set(acts) == {"conv1", "conv2"} and ran == []  # fc never ran
            with pytest.raises(RuntimeError, match="logits are needed"):
                forward_to(tiny_handle, x(), acts, needs_logits=True)
        with capture(tiny_handle, ["conv2"]) as acts:  # without stop_early the tail runs
            forward_to(tiny_handle, x(), acts, needs_logits=False)
        assert ran == ["fc"]
    finally:
        later.remove()
    assert active_hook_count(tiny_handle) == 0


def test_only_the_thread_that_entered_the_block_is_captured(tiny_handle) -> None:
    with capture(tiny_handle, ["conv1"]) as acts:
        other = threading.Thread(target=lambda: tiny_handle.net(x()))
        other.start()
        other.join()
        assert acts == {}  # the other thread's pass went through unseen
        forward_to(tiny_handle, x(), acts, needs_logits=True)
        assert "conv1" in acts


def test_a_later_in_place_op_does_not_change_the_captured_output(tiny_handle) -> None:
    """TinyNet's relu2 works in place on conv2's output: the capture keeps the negatives."""
    with capture(tiny_handle, ["conv2", "relu2"]) as acts:
        forward_to(tiny_handle, x(), acts, needs_logits=True)
    assert (acts["conv2"] < 0).any()
    assert torch.equal(acts["relu2"], acts["conv2"].clamp_min(0))


def test_forward_to_returns_the_first_output_of_a_tuple_model() -> None:
    from cnnvis_widgets import load_model

    class Pair(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, t):
            y = self.conv(t).mean(dim=(2, 3))
            return y, y * 0

    h = load_model(Pair(), device="cpu", input_size=16)
    with capture(h, ["conv"]) as acts:
        out = forward_to(h, torch.rand(1, 3, 16, 16), acts, needs_logits=True)
    assert out.shape == (1, 4) and out.abs().sum() > 0
