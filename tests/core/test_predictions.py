"""Top-k predictions of one picture and the lists the widgets show of them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnvis_widgets import load_model
from cnnvis_widgets.core import predictions as P
from tests.conftest import make_tiny


def test_top_predictions_are_the_softmax_sorted(tiny_handle) -> None:
    x = tiny_handle.normalize(torch.rand(1, 3, 32, 32))
    top, probs = P.top_predictions(tiny_handle, x, k=3)
    with torch.no_grad():
        expected = tiny_handle.net(x).softmax(1)[0]
    assert len(top) == 3 and probs == sorted(probs, reverse=True)
    assert top[0] == int(expected.argmax())
    assert probs == pytest.approx([float(expected[c]) for c in top])
    assert len(P.top_predictions(tiny_handle, x, k=50)[0]) == 5  # at most the classes


class _Tuple(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = make_tiny()

    def forward(self, x):
        return self.net(x), "aux"


def test_a_tuple_output_uses_its_logits_and_nan_is_an_error() -> None:
    h = load_model(_Tuple(), device="cpu", input_size=32)
    x = h.normalize(torch.rand(1, 3, 32, 32))
    top, probs = P.top_predictions(h, x)
    assert len(top) == 5 and sum(probs) == pytest.approx(1.0, abs=1e-5)
    with torch.no_grad():
        h.model.net.fc.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        P.top_predictions(h, x)


def test_rows_options_and_records(tiny_handle) -> None:
    name = tiny_handle.class_name
    assert P.prediction_rows(tiny_handle, [3, 1], [0.612345, 0.2]) == [
        [f"3 {name(3)}", 0.6123],
        [f"1 {name(1)}", 0.2],
    ]
    opts = P.class_options(tiny_handle, [3, 1], [0.6, 0.2])
    assert opts[0] == [f"top-1 prediction ({name(3)})", -1]
    assert opts[1][1] == 3 and opts[1][0].startswith("#1 60.0%: 3 ") and opts[2][1] == 1
    assert [o[1] for o in opts[3:]] == list(range(tiny_handle.num_outputs))
    assert P.class_options(tiny_handle, [])[0] == ["top-1 prediction", -1]
    assert P.prediction_record(tiny_handle, [3], [0.61234567]) == [
        {"class": 3, "name": name(3), "probability": 0.612346}
    ]
