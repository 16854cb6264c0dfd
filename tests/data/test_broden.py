"""The Broden directory format: a tiny folder written by the test, read back exactly; the
generated probe set exported to the format and read back; dissection runs on it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnvis_widgets.core.dissection import dissect
from cnnvis_widgets.data.broden import (
    BrodenProbe,
    broden_probe,
    decode_mask,
    encode_mask,
    export_broden,
)
from cnnvis_widgets.data.concepts import probe_set

LABELS = [
    # number, name, category field (categories a label occurs in, with counts)
    (1, "red", "color(2)"),
    (2, "blue", "color(2)"),
    (3, "car", "object(2)"),
    (4, "wheel", "object(1);part(2)"),  # primary: part (more coverage there, see c_*.csv)
    (5, "door", "part(1)"),
    (6, "window", "part(1)"),
    (7, "street", "scene(2)"),
    (8, "park", "scene(1)"),
    (300, "rare", "object(1)"),  # a label number above 255: mask PNGs use R + 256 * G
]


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _mask(values: list[list[int]]) -> np.ndarray:
    return np.array(values, dtype=np.int64)


@pytest.fixture
def broden_dir(tmp_path) -> tuple[Path, dict]:
    """3 images of 8x8 with 4x4 masks: pixel categories color/object/part, image-level scene."""
    root = tmp_path / "broden_tiny"
    (root / "images" / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for i in range(3):
        img = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "images" / "sub" / f"img{i}.png")
        arrays[f"img{i}"] = img
    masks = {
        "img0_color": _mask([[1, 1, 2, 2]] * 4),
        "img0_object": _mask([[0, 3, 3, 0], [0, 3, 3, 0], [4, 4, 0, 0], [300, 0, 0, 0]]),
        "img0_part_a": _mask([[0, 5, 0, 0], [0, 5, 0, 0], [4, 4, 0, 0], [0, 0, 0, 0]]),
        "img0_part_b": _mask([[0, 0, 6, 0], [0, 5, 6, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
        "img1_color": _mask([[2, 2, 2, 2], [2, 1, 1, 2], [2, 1, 1, 2], [2, 2, 2, 2]]),
        "img2_object": _mask([[3] * 4, [3] * 4, [0] * 4, [0] * 4]),
    }
    for name, m in masks.items():
        encode_mask(m).save(root / "images" / "sub" / f"{name}.png")
    _write_csv(
        root / "index.csv",
        ["image", "split", "ih", "iw", "sh", "sw", "color", "object", "part", "scene"],
        [
            [
                "sub/img0.png",
                "train",
                8,
                8,
                4,
                4,
                "sub/img0_color.png",
                "sub/img0_object.png",
                "sub/img0_part_a.png;sub/img0_part_b.png",
                "",
            ],
            ["sub/img1.png", "train", 8, 8, 4, 4, "sub/img1_color.png", "", "", "7"],
            ["sub/img2.png", "val", 8, 8, 4, 4, "", "sub/img2_object.png", "", "7;8"],
            ["sub/img3.png", "train", 8, 8, 4, 4, "", "", "", ""],  # no annotation: dropped
        ],
    )
    _write_csv(
        root / "category.csv",
        ["name", "first", "last", "count", "frequency"],
        [
            ["color", 1, 2, 2, 2],
            ["object", 3, 300, 3, 2],
            ["part", 4, 6, 3, 1],
            ["scene", 7, 8, 2, 2],
        ],
    )
    _write_csv(
        root / "label.csv",
        ["number", "name", "category", "frequency", "coverage", "syns"],
        [[n, name, cat, 1, 0.1, ""] for n, name, cat in LABELS],
    )
    codes = {  # per category: number, name, frequency, coverage (code 0 is "-")
        "color": [[1, "red", 2, 0.3], [2, "blue", 2, 0.4]],
        "object": [[3, "car", 2, 0.4], [4, "wheel", 1, 0.05], [300, "rare", 1, 0.01]],
        "part": [[4, "wheel", 2, 0.2], [5, "door", 1, 0.1], [6, "window", 1, 0.1]],
        "scene": [[7, "street", 2, 2.0], [8, "park", 1, 1.0]],
    }
    header = ["code", "number", "name", "frequency", "coverage"]
    for cat, rows in codes.items():
        coded = [[0, 0, "-", 0, 0]] + [[code, *row] for code, row in enumerate(rows, 1)]
        _write_csv(root / f"c_{cat}.csv", header, coded)
    return root, {"images": arrays, "masks": masks}


def test_reads_labels_with_primary_categories(broden_dir) -> None:
    root, _ = broden_dir
    probe = broden_probe(root)
    assert isinstance(probe, BrodenProbe) and len(probe) == 3  # the unannotated row is dropped
    assert probe.categories == ["color", "object", "part", "scene"]
    assert len(probe.labels) == 301 and probe.labels[300].name == "rare"
    named = {
        c.name: c.category for c in probe.labels if c.name in dict((n, 0) for _, n, _ in LABELS)
    }
    assert named == {
        "red": "color",
        "blue": "color",
        "car": "object",
        "wheel": "part",
        "door": "part",
        "window": "part",
        "street": "scene",
        "park": "scene",
        "rare": "object",
    }
    assert probe.labels[17].name == "label 17" and probe.labels[17].category == ""
    assert probe.size == 8 and probe.mask_size == 4
    assert probe.describe()["kind"] == "broden" and probe.describe()["n_images"] == 3


def test_batches_hold_the_written_images_masks_and_image_level_labels(broden_dir) -> None:
    root, written = broden_dir
    probe = broden_probe(root)
    batch = probe.batch([0, 1, 2])
    for i in range(3):
        expect = torch.from_numpy(written["images"][f"img{i}"]).permute(2, 0, 1).float() / 255
        assert torch.equal(batch.images[i], expect)
    m = written["masks"]
    assert batch.masks.shape == (3, 4, 4, 4)  # padded to the most mask layers of an image
    for k, name in enumerate(["img0_color", "img0_object", "img0_part_a", "img0_part_b"]):
        assert np.array_equal(batch.masks[0, k].numpy(), m[name])
    assert np.array_equal(batch.masks[1, 0].numpy(), m["img1_color"])
    assert (batch.masks[1, 1:] == 0).all()
    assert np.array_equal(batch.masks[2, 0].numpy(), m["img2_object"])
    assert batch.scalars is not None
    assert batch.scalars[1].nonzero().view(-1).tolist() == [7]
    assert batch.scalars[2].nonzero().view(-1).tolist() == [7, 8]
    assert not batch.scalars[0].any()
    assert batch.present.tolist() == [
        [True, True, True, False],
        [True, False, False, True],
        [False, True, False, True],
    ]
    chunks = list(probe.batches(batch_size=2, masks=False))
    assert [len(c) for c in chunks] == [2, 1] and chunks[0].masks is None


def test_resizing_categories_split_and_errors(broden_dir, tmp_path) -> None:
    root, written = broden_dir
    big = broden_probe(root, size=16, mask_size=8)
    batch = big.batch([1])
    assert batch.images.shape == (1, 3, 16, 16)
    up = np.kron(written["masks"]["img1_color"], np.ones((2, 2), dtype=np.int64))
    assert np.array_equal(batch.masks[0, 0].numpy(), up)  # nearest-neighbour resize
    only = broden_probe(root, categories=["scene"])
    assert len(only) == 2 and only.categories == ["scene"]
    assert only.batch([0]).present.shape == (1, 1)
    assert len(broden_probe(root, split="val")) == 1
    assert len(broden_probe(root, max_images=2)) == 2
    with pytest.raises(ValueError, match="unknown category.*has color, object, part, scene"):
        broden_probe(root, categories=["material"])
    with pytest.raises(FileNotFoundError, match="not found"):
        broden_probe(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="index.csv.*category.csv"):
        broden_probe(tmp_path / "empty")
    (root / "images" / "sub" / "img1_color.png").unlink()
    with pytest.raises(FileNotFoundError, match="img1_color.png"):
        broden_probe(root).batch([1])
    with pytest.raises(IndexError, match="valid 0..2"):
        broden_probe(root).batch([3])


def test_mask_codec_round_trips_labels_above_255(tmp_path) -> None:
    labels = np.array([[0, 1, 255], [256, 300, 65535]])
    encode_mask(labels).save(tmp_path / "m.png")
    assert np.array_equal(decode_mask(tmp_path / "m.png"), labels)
    with pytest.raises(ValueError, match="65535"):
        encode_mask(np.array([[70000]]))


def test_export_of_the_generated_probe_set_reads_back(tmp_path) -> None:
    probe = probe_set(6, size=32, seed=4)
    root = export_broden(probe, tmp_path / "exported", batch_size=4)
    back = broden_probe(root)
    assert len(back) == 6 and back.categories == probe.categories
    assert back.size == 32 and back.mask_size == probe.mask_size
    assert back.labels == probe.labels  # names, primary categories and scale parents
    a, b = probe.batch(range(6)), back.batch(range(6))
    assert torch.equal(a.masks, b.masks)
    assert torch.equal((a.images * 255).round() / 255, b.images)
    assert b.present.all() and b.scalars is None
    label_rows = list(csv.DictReader(open(root / "label.csv")))
    red = next(r for r in label_rows if r["name"] == "red")
    assert red["category"].startswith("color(")


def test_dissect_runs_on_a_broden_folder(broden_dir, tiny_handle) -> None:
    root, _ = broden_dir
    probe = broden_probe(root)
    result = dissect(tiny_handle, ["conv1"], probe, batch_size=2)
    assert result["conv1"].iou.shape == (8, 301)
    assert result.categories == ["color", "object", "part", "scene"]
    assert result.probe["kind"] == "broden"
    for rec in result.units("conv1"):
        assert rec["category"] in result.categories


def _rewrite_index(root: Path, edit) -> None:
    with open(root / "index.csv", newline="") as f:
        rows = list(csv.reader(f))
    edit(rows)
    with open(root / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)


@pytest.mark.parametrize("where", ["image", "mask"])
@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
def test_paths_outside_the_folder_are_refused(broden_dir, tmp_path, where, kind) -> None:
    # before: index.csv could make the reader open any file of the machine
    root, _ = broden_dir
    secret = tmp_path / "secret.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(secret)
    bad = "../../secret.png" if kind == "dotdot" else str(secret)
    assert (root / "images" / "../../secret.png").resolve() == secret.resolve()

    def edit(rows):
        rows[2][0 if where == "image" else 6] = bad

    _rewrite_index(root, edit)
    with pytest.raises(ValueError, match="leaves the dataset folder"):
        broden_probe(root)


def test_a_link_out_of_the_folder_is_refused(broden_dir, tmp_path) -> None:
    root, _ = broden_dir
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(outside / "x.png")
    (root / "images" / "link").symlink_to(outside)
    _rewrite_index(root, lambda rows: rows[2].__setitem__(0, "link/x.png"))
    probe = broden_probe(root)
    with pytest.raises(ValueError, match="outside the dataset folder"):
        probe.batch([1])


@pytest.mark.parametrize("table", ["index", "label"])
def test_one_huge_label_number_is_refused_not_allocated(broden_dir, table) -> None:
    # before: label 10**12 made a label list (and per-batch arrays) of 10**12 entries
    root, _ = broden_dir
    if table == "index":
        _rewrite_index(root, lambda rows: rows[2].__setitem__(9, str(10**12)))
        match = "above 65535"
    else:
        with open(root / "label.csv", "a", newline="") as f:
            csv.writer(f).writerow([10**12, "huge", "object(1)", 1, 0.1, ""])
        match = "label.csv: label number 1000000000000 is above 65535"
    with pytest.raises(ValueError, match=match):
        broden_probe(root)


def test_an_index_label_beyond_the_label_table_is_refused(broden_dir) -> None:
    root, _ = broden_dir
    _rewrite_index(root, lambda rows: rows[2].__setitem__(9, "40000"))
    with pytest.raises(ValueError, match="label 40000 in column 'scene'.*goes up to 300"):
        broden_probe(root)


def test_describe_changes_when_a_csv_changes(broden_dir) -> None:
    # before: renaming labels in label.csv kept the cache key, and old names came back
    root, _ = broden_dir
    before = broden_probe(root).describe()
    assert broden_probe(root).describe() == before
    text = (root / "label.csv").read_text().replace(",red,", ",crimson,")
    (root / "label.csv").write_text(text)
    after = broden_probe(root)
    assert after.describe() != before
    assert "crimson" in [c.name for c in after.labels]
    (root / "c_part.csv").write_text((root / "c_part.csv").read_text().replace("0.2", "0.01"))
    assert broden_probe(root).describe() != after.describe()


def test_huge_sizes_in_the_index_or_arguments_are_bounded(broden_dir) -> None:
    root, _ = broden_dir
    with pytest.raises(ValueError, match="MAX_IMAGE_SIDE"):
        broden_probe(root, size=100_000)
    with pytest.raises(ValueError, match="MAX_IMAGE_SIDE"):
        broden_probe(root, mask_size=100_000)
    _rewrite_index(root, lambda rows: rows[1].__setitem__(2, "99999999"))
    assert broden_probe(root).size == 224  # an absurd ih is no hint: the default
    with pytest.raises(TypeError, match="must be an integer"):
        broden_probe(root, max_images=2.5)
    assert len(broden_probe(root, max_images=np.int64(2))) == 2
