"""probe_image and decode_rgb on real image bytes."""

from __future__ import annotations

import io
import os

import pytest
from helpers import photo_variant, sample_image_bytes
from PIL import Image

from vlm_lake.errors import InvalidImageError
from vlm_lake.images import IMAGE_SUFFIXES, decode_rgb, probe_image


def _encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "fmt", "size"),
    [
        ("image1.jpg", "jpeg", (451, 300)),
        ("image4.png", "png", (256, 256)),
    ],
)
def test_probe_sample_images(name: str, fmt: str, size: tuple[int, int]) -> None:
    data = sample_image_bytes(name)
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == size  # ground truth from Pillow directly
    info = probe_image(data, f"s3://bucket/{name}")
    assert (info.format, info.width, info.height) == (fmt, *size)


@pytest.mark.parametrize("name", ["image2.jpg", "image3.jpg"])
def test_probe_other_sample_jpegs(name: str) -> None:
    data = sample_image_bytes(name)
    with Image.open(io.BytesIO(data)) as im:
        expected = im.size
    info = probe_image(data, name)
    assert info.format == "jpeg"
    assert (info.width, info.height) == expected


@pytest.mark.parametrize(("fmt", "expected"), [("JPEG", "jpeg"), ("PNG", "png")])
def test_probe_variants_non_square(fmt: str, expected: str) -> None:
    info = probe_image(photo_variant(3, size=(160, 120), fmt=fmt), "x")
    # rotation by 270 degrees swaps the sides of the crop
    assert info.format == expected
    assert sorted((info.width, info.height)) == [120, 160]
    data = _encode(Image.new("RGB", (33, 17), (1, 2, 3)), fmt)
    assert probe_image(data, "y") == type(info)(expected, 33, 17)


def test_probe_empty_bytes_names_source() -> None:
    with pytest.raises(InvalidImageError, match="0 bytes") as info:
        probe_image(b"", "s3://bucket/raw/empty.jpg")
    assert "'s3://bucket/raw/empty.jpg'" in str(info.value)
    assert info.value.source_uri == "s3://bucket/raw/empty.jpg"


def test_probe_random_bytes_names_source() -> None:
    junk = os.urandom(4096)
    junk = b"\x00\x00" + junk[2:]  # never a valid magic number by accident
    with pytest.raises(InvalidImageError, match="cannot identify") as info:
        probe_image(junk, "/data/images/noise.png")
    assert "'/data/images/noise.png'" in str(info.value)
    assert info.value.source_uri == "/data/images/noise.png"


def test_probe_text_bytes_named_like_an_image() -> None:
    with pytest.raises(InvalidImageError) as info:
        probe_image(b'{"this": "is json"}', "s3://b/looks-like.jpg")
    assert "s3://b/looks-like.jpg" in str(info.value)


def test_probe_truncated_jpeg_names_source() -> None:
    data = sample_image_bytes("image1.jpg")
    half = data[: len(data) // 2]
    assert half[:3] == b"\xff\xd8\xff"  # still looks like a JPEG
    with pytest.raises(InvalidImageError, match="decoding failed") as info:
        probe_image(half, "s3://bucket/lanceData/half.jpg")
    assert "'s3://bucket/lanceData/half.jpg'" in str(info.value)


def test_probe_truncated_png_names_source() -> None:
    data = sample_image_bytes("image4.png")
    with pytest.raises(InvalidImageError) as info:
        probe_image(data[: len(data) // 2], "local/half.png")
    assert "local/half.png" in str(info.value)


def test_image_suffixes_are_lower_case_with_dot() -> None:
    assert ".jpg" in IMAGE_SUFFIXES and ".png" in IMAGE_SUFFIXES
    assert all(s.startswith(".") and s == s.lower() for s in IMAGE_SUFFIXES)


def _check_rgb(out: Image.Image, size: tuple[int, int]) -> None:
    assert out.mode == "RGB"
    assert out.size == size


def test_decode_rgb_jpeg_and_png() -> None:
    _check_rgb(decode_rgb(sample_image_bytes("image1.jpg")), (451, 300))
    _check_rgb(decode_rgb(sample_image_bytes("image4.png")), (256, 256))
    resized = decode_rgb(sample_image_bytes("image1.jpg"), (224, 224))
    _check_rgb(resized, (224, 224))


def test_decode_rgb_grayscale_jpeg() -> None:
    data = _encode(Image.new("L", (40, 30), 128), "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "L"
    out = decode_rgb(data)
    _check_rgb(out, (40, 30))
    r, g, b = out.getpixel((20, 15))
    assert r == g == b and abs(r - 128) <= 2
    _check_rgb(decode_rgb(data, (224, 224)), (224, 224))


def test_decode_rgb_rgba_png_composites_on_white() -> None:
    im = Image.new("RGBA", (20, 10), (0, 0, 0, 0))  # fully transparent
    im.putpixel((0, 0), (200, 10, 10, 255))  # one opaque red pixel
    out = decode_rgb(_encode(im, "PNG"))
    _check_rgb(out, (20, 10))
    assert out.getpixel((0, 0)) == (200, 10, 10)
    assert out.getpixel((5, 5)) == (255, 255, 255)


def test_decode_rgb_palette_png() -> None:
    im = Image.new("RGB", (24, 12), (0, 0, 255)).convert("P", palette=Image.Palette.ADAPTIVE)
    data = _encode(im, "PNG")
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode == "P"
    out = decode_rgb(data, (8, 6))
    _check_rgb(out, (8, 6))
    r, g, b = out.getpixel((3, 3))
    assert b > 200 and r < 30 and g < 30


def test_decode_rgb_palette_with_transparency() -> None:
    im = Image.new("P", (10, 10), 0)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    im.putpixel((1, 1), 1)
    data = _encode(im, "PNG", transparency=0)
    out = decode_rgb(data)
    _check_rgb(out, (10, 10))
    assert out.getpixel((0, 0)) == (255, 255, 255)  # transparent index -> white
    assert out.getpixel((1, 1)) == (0, 255, 0)


def test_decode_rgb_cmyk_jpeg() -> None:
    cmyk = Image.new("RGB", (50, 40), (200, 30, 30)).convert("CMYK")
    data = _encode(cmyk, "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode == "CMYK"
    out = decode_rgb(data)
    _check_rgb(out, (50, 40))
    r, g, b = out.getpixel((25, 20))
    assert r > 150 and g < 80 and b < 80
    _check_rgb(decode_rgb(data, (224, 224)), (224, 224))
