"""Decoder reconstructions of several layers and the metrics of a finished inversion."""

from __future__ import annotations

import math

import pytest
import torch

from cnnvis_widgets.core import inversion_results as R


class PerfectDecoder:
    """Stands in for a trained decoder: gives back the photo it was built with."""

    def __init__(self, photo: torch.Tensor, trained_steps: int | None = 7) -> None:
        self.photo, self.trained_steps = photo, trained_steps

    def decode(self, features, size):
        assert tuple(size) == tuple(self.photo.shape[-2:])
        return self.photo.clone()


@pytest.fixture
def photo():
    return torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_decode_layers_grey_for_a_missing_decoder(tiny_handle, photo) -> None:
    decoders = {"conv2": PerfectDecoder(photo)}
    images, errors, missing = R.decode_layers(tiny_handle, photo, ["conv1", "conv2"], decoders.get)
    assert images.shape == (2, 3, 32, 32) and missing == ["conv1"]
    assert torch.all(images[0] == 0.5) and torch.equal(images[1], photo[0])
    assert math.isnan(float(errors[0])) and float(errors[1]) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(FileNotFoundError, match="Train decoder"):
        R.decode_layers(tiny_handle, photo, ["conv1"], lambda name: None)


def test_metrics_recomputed_or_given(tiny_handle, photo) -> None:
    noisy = (photo + 0.3 * torch.rand_like(photo)).clamp(0, 1)
    images = torch.cat([photo, noisy])
    m = R.reconstruction_metrics(tiny_handle, photo, images, ["conv2", "conv2"])
    assert m["feature_error"][0] == pytest.approx(0.0, abs=1e-6) and m["feature_error"][1] > 0
    assert m["pixel_correlation"][0] == pytest.approx(1.0, abs=1e-5)
    assert m["pixel_correlation"][1] < 1.0 and m["pixel_error"][1] > m["pixel_error"][0]
    given = R.reconstruction_metrics(tiny_handle, photo, images, ["conv2", "conv2"], [0.5, 0.25])
    assert given["feature_error"] == [0.5, 0.25]
    assert given["pixel_error"] == m["pixel_error"]


def test_metric_lines() -> None:
    m = {"feature_error": [0.1, 0.2], "pixel_correlation": [0.9, 0.8], "pixel_error": [0.3, 0.4]}
    lines = R.metric_lines(["a", "b"], m)
    assert lines == [
        "a: feature error 0.1000, pixel correlation 0.900, pixel error 0.300",
        "b: feature error 0.2000, pixel correlation 0.800, pixel error 0.400",
        R.METRICS_NOTE,
    ]
    lines = R.metric_lines(["a", "b"], m, missing=["b"], stopped=(3, 10))
    assert lines[0] == "stopped at step 3 of 10: partial result"
    assert lines[-2] == "no decoder yet (grey): b"


def test_trained_steps_from_memory_then_disk(tiny_handle, photo, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path))
    assert R.trained_steps(tiny_handle, "conv2", 32, PerfectDecoder(photo, 12)) == 12
    assert R.trained_steps(tiny_handle, "conv2", 32) is None
