"""load_image: every odd input becomes RGB or a clear ImageError."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cnnvis_widgets.data.images import ImageError, load_image


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_modes_become_rgb() -> None:
    gray = Image.fromarray(np.full((20, 30), 128, np.uint8), "L")
    assert load_image(png(gray)).getpixel((0, 0)) == (128, 128, 128)
    rgba = Image.new("RGBA", (16, 16), (255, 0, 0, 0))  # fully transparent red -> white
    assert load_image(png(rgba)).getpixel((3, 3)) == (255, 255, 255)
    deep = np.full((16, 16), 65535 // 2, np.uint16)
    img16 = Image.fromarray(deep)
    assert img16.mode.startswith("I;16")
    assert abs(load_image(png(img16)).getpixel((0, 0))[0] - 128) <= 1  # scaled, not clipped
    assert load_image(deep).getpixel((0, 0))[0] in (127, 128)
    assert load_image(np.ones((10, 12, 3), np.float32) * 0.5).getpixel((0, 0)) == (128,) * 3
    chw = np.zeros((3, 10, 12), np.uint8)
    assert load_image(chw).size == (12, 10)
    pal = Image.new("P", (12, 12))
    assert load_image(pal).mode == "RGB"


def test_a_dark_16_bit_png_stays_dark() -> None:
    # before: a 16-bit image whose values were all <= 255 was scaled by 255 (full white)
    dark = np.zeros((16, 16), np.uint16)
    dark[:, 8:] = 200  # 200 / 65535 of white: black on an 8-bit screen
    out = np.asarray(load_image(png(Image.fromarray(dark))))
    assert out.max() == round(200 / 65535 * 255) == 1
    bright = np.full((16, 16), 65535, np.uint16)
    assert np.asarray(load_image(png(Image.fromarray(bright)))).min() == 255
    # the same pixels give the same picture whatever else is in the image
    mixed = dark.copy()
    mixed[0, 0] = 65535
    assert np.array_equal(np.asarray(load_image(png(Image.fromarray(mixed))))[1:], out[1:])
    # an 8-bit integer image (mode "I" not from a 16-bit file) keeps its 8-bit levels
    eight = Image.fromarray(np.full((16, 16), 200, np.int32))
    assert load_image(eight).getpixel((0, 0)) == (200, 200, 200)


def test_bad_inputs_have_clear_errors(tmp_path) -> None:
    with pytest.raises(ImageError, match="not an image"):
        load_image(b"hello, this is text")
    txt = tmp_path / "notes.txt"
    txt.write_text("not an image")
    with pytest.raises(ImageError, match="notes.txt is not an image"):
        load_image(txt)
    with pytest.raises(ImageError, match="no image file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="at least 8 pixels"):
        load_image(np.zeros((4, 100), np.uint8))
    with pytest.raises(ImageError, match="NaN"):
        load_image(np.full((10, 10), np.nan))
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((10, 10, 7)))
    with pytest.raises(ImageError, match="cannot read"):
        load_image(42)


def test_huge_images_are_refused_before_decoding_or_downscaled() -> None:
    big = Image.new("RGB", (3000, 1000), (10, 20, 30))
    out = load_image(png(big))
    assert max(out.size) == 2048 and out.size[1] == 683
    with pytest.raises(ImageError, match="more than"):
        load_image(png(big), max_pixels=1_000_000)
