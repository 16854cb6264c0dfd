"""UpconvNet decoders: sized from the layer, brief training lowers the loss, checkpoints resume,
save/load round-trips exactly (weights_only), the cache is keyed by model and layer."""

from __future__ import annotations

import contextlib
import threading

import pytest
import torch

from cnnvis_widgets import load_model
from cnnvis_widgets.core import inversion as inv
from cnnvis_widgets.core import upconv
from cnnvis_widgets.core.blocks.runs import Run
from cnnvis_widgets.core.hooks import active_hook_count
from cnnvis_widgets.core.optimize import NonFiniteLossError
from cnnvis_widgets.core.upconv.decoder import autocast
from cnnvis_widgets.data import sample_image, sample_images
from tests.conftest import make_tiny


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def photos32() -> torch.Tensor:
    """The packaged photos at 32 px, as a pixel tensor (a fast training set)."""
    h = load_model(make_tiny(), device="cpu", input_size=32)
    return torch.cat([h.to_pixels(img, 32) for img in sample_images().values()])


def test_decoder_is_sized_from_the_layer(tiny_handle) -> None:
    d1 = upconv.UpconvDecoder.for_layer(tiny_handle, "conv1")  # 8 ch, stride 1
    d2 = upconv.UpconvDecoder.for_layer(tiny_handle, "conv2")  # 16 ch, stride 2
    dg = upconv.UpconvDecoder.for_layer(tiny_handle, "gap", size=32)  # 16 ch, 1x1
    df = upconv.UpconvDecoder.for_layer(tiny_handle, "fc", size=32)  # 5 features
    assert (d1.n_up, d2.n_up) == (0, 1)
    assert d1.config["in_channels"] == 8 and d2.config["in_channels"] == 16
    assert not dg.config["spatial"] and not df.config["spatial"] and dg.n_up == 3  # 4 -> 32
    x = inv.target_pixels(tiny_handle, sample_image("cat"), 32)
    for dec, layer in [(d1, "conv1"), (d2, "conv2"), (dg, "gap"), (df, "fc")]:
        phi = inv.layer_features(tiny_handle, x, layer)[layer]
        out = dec.decode(phi)
        assert out.shape == (1, 3, 32, 32), layer
        assert 0 <= float(out.min()) and float(out.max()) <= 1
    # a stride that is not a power of two still lands on the image size
    odd = upconv.UpconvDecoder(4, stride=3.0)
    assert odd.n_up == 2 and odd(torch.zeros(1, 4, 5, 5)).shape == (1, 3, 15, 15)
    with pytest.raises(ValueError, match="channels"):
        d2(torch.zeros(1, 3, 16, 16))


@pytest.mark.slow
def test_width_follows_the_channels(lite0) -> None:
    a = upconv.UpconvDecoder.for_layer(lite0, "_blocks.3")  # 40 ch at 1/8
    b = upconv.UpconvDecoder.for_layer(lite0, "_blocks.8")  # 112 ch at 1/16
    assert (a.n_up, b.n_up) == (3, 4)
    assert a.config["width"] == 80 and b.config["width"] == 224


def test_brief_training_lowers_the_loss_and_leaves_the_network_alone(tiny_handle, photos32) -> None:
    before = {k: v.clone() for k, v in tiny_handle.model.state_dict().items()}
    steps = list(
        upconv.train_decoder_steps(
            tiny_handle, "conv2", photos32, steps=60, batch_size=8, size=32, lr=3e-3
        )
    )
    losses = [s.loss for s in steps]
    assert len(losses) == 60 and [s.index for s in steps] == list(range(60))
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10
    last = steps[-1]
    assert last.image.shape == (2, 3, 32, 32)  # the sample and its reconstruction
    assert last.metrics["images_per_s"] > 0 and last.total == 60
    for k, v in tiny_handle.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.requires_grad for p in tiny_handle.model.parameters())
    assert active_hook_count(tiny_handle.model) == 0


def test_save_load_round_trips_exactly(tiny_handle, photos32, tmp_path, monkeypatch) -> None:
    dec, _ = upconv.train_decoder(
        tiny_handle, "conv2", photos32, steps=5, batch_size=4, size=32, checkpoint_every=0
    )
    path = upconv.decoder_path(tiny_handle, "conv2")
    assert path.is_file() and path.parent.name == "upconv"
    loads = []
    real = torch.load

    def spy(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    again = upconv.load_decoder(tiny_handle, "conv2")
    assert loads == [True]
    assert again is not None and again.trained_steps == 5
    assert again.config == dec.config
    for (k, a), (k2, b) in zip(dec.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    phi = inv.layer_features(tiny_handle, photos32[:3], "conv2")["conv2"]
    assert torch.equal(dec.decode(phi), again.decode(phi))
    # an explicit path works too
    other = upconv.save_decoder(again, tmp_path / "mine.pt", step=7)
    mine = upconv.load_decoder(tiny_handle, "conv2", path=other)
    assert mine.trained_steps == 7 and torch.equal(mine.decode(phi), dec.decode(phi))


def test_stop_keeps_a_checkpoint_and_a_new_call_resumes(tiny_handle, photos32) -> None:
    stop = threading.Event()
    kw = dict(batch_size=4, size=32, checkpoint_every=1000)
    done = []
    run = Run(
        upconv.train_decoder_steps(tiny_handle, "conv2", photos32, steps=100, stop_event=stop, **kw)
    )
    for s in run:
        done.append(s.index)
        if s.index == 6:
            stop.set()
    assert done == list(range(7))
    # a stopped run returns the decoder it trained so far
    assert run.result is s.metrics["decoder"] and run.result.trained_steps == 7
    assert upconv.load_decoder(tiny_handle, "conv2").trained_steps == 7
    resumed = [
        s.index for s in upconv.train_decoder_steps(tiny_handle, "conv2", photos32, steps=12, **kw)
    ]
    assert resumed == list(range(7, 12))
    # closing the generator (what a widget's Stop does) also writes the checkpoint
    gen = upconv.train_decoder_steps(tiny_handle, "conv2", photos32, steps=50, **kw)
    next(gen), next(gen)
    gen.close()
    assert upconv.load_decoder(tiny_handle, "conv2").trained_steps == 14
    fresh = [
        s.index
        for s in upconv.train_decoder_steps(
            tiny_handle, "conv2", photos32, steps=3, resume=False, save=False, **kw
        )
    ]
    assert fresh == [0, 1, 2]
    assert upconv.load_decoder(tiny_handle, "conv2").trained_steps == 14  # save=False


def test_cache_is_keyed_by_model_and_layer(tiny_handle) -> None:
    other = load_model(make_tiny(seed=1), device="cpu", input_size=32)
    p = upconv.decoder_path(tiny_handle, "conv2")
    assert p == upconv.decoder_path(tiny_handle, "conv2")
    assert p != upconv.decoder_path(tiny_handle, "conv1")
    assert p != upconv.decoder_path(other, "conv2")  # same class, other weights
    assert p != upconv.decoder_path(tiny_handle, "conv2", width=128)
    assert upconv.load_decoder(tiny_handle, "conv1") is None
    with pytest.raises(KeyError, match="nearest valid names"):
        upconv.decoder_path(tiny_handle, "conv9")


def test_default_training_set_is_offline_and_folders_work(tiny_handle, tmp_path) -> None:
    from cnnvis_widgets.data.datasets import ImageDataset

    ds = upconv.training_images(None, size=32)
    assert isinstance(ds, ImageDataset) and len(ds) == 512 and ds[0][1].size == (32, 32)
    for i, img in enumerate(list(sample_images().values())[:3]):
        img.resize((40, 30)).save(tmp_path / f"p{i}.png")
    steps = list(
        upconv.train_decoder_steps(tiny_handle, "conv1", tmp_path, steps=3, batch_size=2, size=32)
    )
    assert len(steps) == 3 and all(s.loss > 0 for s in steps)
    with pytest.raises(TypeError, match="cannot train on"):
        list(upconv.train_decoder_steps(tiny_handle, "conv1", 42, steps=1, size=32))


def test_feature_loss_trains_through_the_frozen_network(tiny_handle, photos32) -> None:
    steps = list(
        upconv.train_decoder_steps(
            tiny_handle,
            "conv2",
            photos32,
            steps=4,
            batch_size=4,
            size=32,
            feature_weight=1.0,
            save=False,
        )
    )
    # the total loss includes the feature term on top of the pixel loss
    assert all(s.loss > s.metrics["pixel_loss"] for s in steps)
    assert active_hook_count(tiny_handle.model) == 0


def test_nan_stops_training_without_a_checkpoint(photos32) -> None:
    net = make_tiny()
    h = load_model(net, device="cpu", input_size=32)
    with torch.no_grad():
        net.conv1.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="learning rate"):
        list(upconv.train_decoder_steps(h, "conv2", photos32, steps=5, batch_size=2, size=32))
    assert upconv.load_decoder(h, "conv2") is None
    assert active_hook_count(net) == 0


def test_reconstruct_needs_a_trained_decoder(tiny_handle, photos32) -> None:
    with pytest.raises(FileNotFoundError, match="train_decoder_steps"):
        upconv.reconstruct(tiny_handle, sample_image("cat"), "conv2", size=32)
    upconv.train_decoder(tiny_handle, "conv2", photos32, steps=2, batch_size=2, size=32)
    out = upconv.reconstruct(tiny_handle, sample_image("cat"), "conv2", size=32)
    assert out.shape == (1, 3, 32, 32)


def test_mixed_precision_only_on_cuda() -> None:
    assert isinstance(autocast(torch.device("cpu")), type(contextlib.nullcontext()))
    if torch.cuda.is_available():
        ctx = autocast(torch.device("cuda"))
        assert isinstance(ctx, torch.autocast)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_training_on_cuda_uses_autocast(photos32) -> None:
    h = load_model(make_tiny(), device="cuda", input_size=32)
    steps = list(upconv.train_decoder_steps(h, "conv2", photos32, steps=3, batch_size=4, size=32))
    assert steps[-1].image.is_cuda and all(s.loss > 0 for s in steps)
    dec = upconv.load_decoder(h, "conv2")
    assert next(dec.parameters()).is_cuda
