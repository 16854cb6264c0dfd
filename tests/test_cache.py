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
