"""The shared results cache: stable keys, atomic writes, safe loads."""

from __future__ import annotations

import pytest
import torch

from cnnvis_widgets import cache


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "c"))


def test_keys_are_stable_and_distinguish_parts() -> None:
    a = cache.cache_key("topk", model="m", layer="l", k=9)
    assert a == cache.cache_key("topk", k=9, layer="l", model="m")
    assert a != cache.cache_key("topk", model="m", layer="l", k=8)
    assert a.startswith("topk-")


def test_round_trip_and_atomic_failure(tmp_path, monkeypatch) -> None:
    path = cache.cache_path("x", "k", ".pt")
    cache.save_tensors(path, {"v": torch.arange(3), "n": 4})
    out = cache.load_tensors(path)
    assert torch.equal(out["v"], torch.arange(3)) and out["n"] == 4
    cache.save_json(path.with_suffix(".json"), {"a": [1, 2]})
    assert cache.load_json(path.with_suffix(".json")) == {"a": [1, 2]}

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(cache.os, "replace", boom)
    with pytest.raises(OSError):
        cache.save_tensors(path, {"v": torch.zeros(3)})
    # the old file is intact and no temporary file is left behind
    assert torch.equal(cache.load_tensors(path)["v"], torch.arange(3))
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_pickled_code_is_refused(tmp_path) -> None:
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path, pickle_module=pickle)
    with pytest.raises(pickle.UnpicklingError):
        cache.load_tensors(path)


# ------------------------------------------------------------------ caching is never a requirement
import os  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

from cnnvis_widgets import load_model  # noqa: E402
from tests.conftest import make_tiny  # noqa: E402


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:  # garble: same length, other bytes
        path.write_bytes(bytes((b + 101) % 256 for b in data))


def _entries(kind: str) -> list[Path]:
    return sorted(p for p in (cache.cache_dir() / kind).iterdir() if not p.name.startswith("."))


def test_cached_helper_recomputes_a_damaged_entry_and_warns_once() -> None:
    calls: list[int] = []

    def compute():
        calls.append(1)
        return {"v": torch.arange(4)}

    key = cache.cache_key("demo", n=4)
    assert torch.equal(cache.cached("demo", key, compute)["v"], torch.arange(4))
    assert torch.equal(cache.cached("demo", key, compute)["v"], torch.arange(4))
    assert len(calls) == 1
    (path,) = _entries("demo")
    _damage(path, "truncate")
    with pytest.warns(cache.CacheWarning, match=str(path.name)):
        cache.cached("demo", key, compute)
    assert len(calls) == 2
    cache.cached("demo", key, compute)  # overwritten: a hit again
    assert len(calls) == 2


@pytest.mark.parametrize("how", ["truncate", "empty", "garble"])
def test_damaged_entries_of_every_kind_are_a_miss(how: str) -> None:
    from cnnvis_widgets.core import atlas as AT
    from cnnvis_widgets.core import topk as T
    from cnnvis_widgets.core import upconv
    from cnnvis_widgets.core.dissection import dissect
    from cnnvis_widgets.data.concepts import probe_set
    from cnnvis_widgets.data.datasets import augmented_samples

    h = load_model(make_tiny(), device="cpu", input_size=32)
    probe = probe_set(8, size=32, seed=1)
    ds = augmented_samples(n=6, size=32)
    runs = {
        "dissection": lambda: dissect(h, ["relu2"], probe, batch_size=8, cache=True),
        "topk": lambda: T.top_k_patches(h, "relu2", ds, k=2, cache_results=True),
        "atlas-am": lambda: AT.layer_grid(h, "conv2", steps=2, size=32, batch=16, units=[0]),
        "upconv": lambda: upconv.train_decoder(
            h, "conv2", torch.rand(4, 3, 32, 32), steps=2, batch_size=2, size=32
        ),
    }
    for kind, run in runs.items():
        first = run()
        for path in _entries(kind):
            _damage(path, how)
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            again = run()  # no EOFError, KeyError or weights_only advice: recomputed
            if kind == "upconv":
                assert upconv.load_decoder(h, "conv2", size=32) is not None  # overwritten
        msgs = [str(w.message) for w in got if issubclass(w.category, cache.CacheWarning)]
        assert msgs and "unreadable" in msgs[0], (kind, msgs)
        if kind == "dissection":
            assert (first["relu2"].iou == again["relu2"].iou).all()
        if kind == "topk":
            assert torch.equal(first.values, again.values)


def test_damaged_decoder_entry_is_not_trained_yet() -> None:
    from cnnvis_widgets.core import upconv

    h = load_model(make_tiny(), device="cpu", input_size=32)
    upconv.train_decoder(h, "conv2", torch.rand(4, 3, 32, 32), steps=2, batch_size=2, size=32)
    path = upconv.decoder_path(h, "conv2", size=32)
    _damage(path, "garble")
    with pytest.warns(cache.CacheWarning, match="unreadable"):
        assert upconv.load_decoder(h, "conv2", size=32) is None


def _blocked_or_readonly(tmp_path, monkeypatch, how: str) -> None:
    root = tmp_path / "blocked"
    if how == "file":
        root.write_text("a file where the cache folder should be")
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        root.mkdir()
        root.chmod(0o500)
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(root))


@pytest.mark.parametrize("how", ["file", "readonly"])
def test_an_unusable_cache_folder_runs_uncached(tmp_path, monkeypatch, how: str) -> None:
    from cnnvis_widgets.core import atlas as AT
    from cnnvis_widgets.core import topk as T
    from cnnvis_widgets.core import upconv
    from cnnvis_widgets.core.dissection import dissect
    from cnnvis_widgets.data.concepts import probe_set
    from cnnvis_widgets.data.datasets import augmented_samples

    _blocked_or_readonly(tmp_path, monkeypatch, how)
    h = load_model(make_tiny(), device="cpu", input_size=32)
    with pytest.warns(cache.CacheWarning, match="cache"):
        d = dissect(h, ["relu2"], probe_set(8, size=32, seed=1), batch_size=8, cache=True)
        top = T.top_k_patches(h, "relu2", augmented_samples(n=6, size=32), k=2, cache_results=True)
        grid = AT.layer_grid(h, "conv2", steps=2, size=32, batch=16, units=[0])
        dec, losses = upconv.train_decoder(
            h, "conv2", torch.rand(4, 3, 32, 32), steps=2, batch_size=2, size=32
        )
        assert upconv.load_decoder(h, "conv2", size=32) is None
    assert d.complete and top.count == 6 and bool(grid.done[0]) and len(losses) == 2


def test_deconvnet_widget_runs_with_an_unusable_cache_folder(tmp_path, monkeypatch) -> None:
    pytest.importorskip("anywidget")
    from cnnvis_widgets.widgets.deconvnet import DeconvNet

    _blocked_or_readonly(tmp_path, monkeypatch, "file")
    h = load_model(make_tiny(), device="cpu", input_size=32)
    w = DeconvNet(model=h, layer="relu2", unit=1)
    try:
        with pytest.warns(cache.CacheWarning):
            for _ in w._steps(__import__("threading").Event()):
                pass
        assert w._top is not None
    finally:
        w.close()


@pytest.mark.parametrize("blocked", [False, True])
def test_atlas_summary_and_unit_card_survive_damage_and_a_blocked_folder(
    tmp_path, monkeypatch, blocked: bool
) -> None:
    from cnnvis_widgets.core import atlas as AT

    if blocked:
        _blocked_or_readonly(tmp_path, monkeypatch, "file")
    h = load_model(make_tiny(), device="cpu", input_size=32)
    kw = dict(probe_images=16, inversion_steps=3, inversion_size=32)
    card_kw = dict(steps=3, size=32, seed=0, n_images=8, variants=2)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        s = AT.network_summary(h, ["relu2"], **kw)
        card = AT.unit_card(h, "relu2", 1, dissection=s.dissection, **card_kw)
        if not blocked:  # damage every atlas entry, then both again: recomputed
            for kind in ("atlas-dissection", "atlas-inversion", "atlas-variants", "topk"):
                for path in _entries(kind):
                    _damage(path, "truncate")
            s2 = AT.network_summary(h, ["relu2"], **kw)
            card2 = AT.unit_card(h, "relu2", 1, dissection=s2.dissection, **card_kw)
            assert s2.rows() == s.rows() and torch.equal(card2.variants, card.variants)
    msgs = [str(w.message) for w in got if issubclass(w.category, cache.CacheWarning)]
    assert msgs, "no warning"
    assert card.variants.shape[0] == 2 and len(card.entries) == 8
