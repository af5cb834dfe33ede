"""Odd pixel modes and EXIF orientation: every case decodes to the right upright RGB image."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from bad_images import ODD_MODE_CASES, SIZE, OddImage, exif_rotated
from helpers import sample_image_bytes
from PIL import Image, ImageOps

from vlm_lake.imaging.decode import DECODABLE_MODES, decode_rgb, probe_image
from vlm_lake.training.dataset import to_tensor

CASES = sorted(ODD_MODE_CASES)
EXIF_CASES = [name for name in CASES if name.startswith("exif_orientation_")]


def _assert_points(image: Image.Image, case: OddImage) -> None:
    """Every expected point of ``case`` has its colour in ``image`` (within the tolerance)."""
    assert image.mode == "RGB"
    w, h = image.size
    for fx, fy, expected in case.points:
        got = image.getpixel((int(fx * w), int(fy * h)))
        error = max(abs(a - b) for a, b in zip(got, expected, strict=True))
        assert error <= case.tolerance, f"at ({fx}, {fy}) of {w}x{h}: {got} != {expected}"


@pytest.mark.parametrize("name", CASES)
def test_fixture_is_stored_in_its_mode(name: str) -> None:
    case = ODD_MODE_CASES[name]
    with Image.open(io.BytesIO(case.data)) as im:
        assert im.mode == case.mode
        assert im.mode in DECODABLE_MODES


@pytest.mark.parametrize("name", CASES)
def test_decodes_to_rgb_at_displayed_size(name: str) -> None:
    case = ODD_MODE_CASES[name]
    out = decode_rgb(case.data)
    assert out.mode == "RGB"
    assert out.size == case.size == SIZE
    _assert_points(out, case)


@pytest.mark.parametrize("name", CASES)
def test_decodes_to_rgb_224(name: str) -> None:
    case = ODD_MODE_CASES[name]
    out = decode_rgb(case.data, (224, 224))
    assert (out.mode, out.size) == ("RGB", (224, 224))
    _assert_points(out, case)


@pytest.mark.parametrize("name", CASES)
def test_probe_reports_displayed_size(name: str) -> None:
    case = ODD_MODE_CASES[name]
    info = probe_image(case.data, f"s3://bucket/raw/{name}")
    assert (info.width, info.height) == case.size


@pytest.mark.parametrize("name", CASES)
def test_to_tensor_of_each_mode(name: str) -> None:
    """What VLMDataset yields per image: [3, 224, 224] float32, RGB / 255."""
    case = ODD_MODE_CASES[name]
    rgb = decode_rgb(case.data, (224, 224))
    tensor = to_tensor(rgb)
    assert tensor.shape == (3, 224, 224)
    assert tensor.dtype == torch.float32
    assert 0.0 <= float(tensor.min()) and float(tensor.max()) <= 1.0
    reference = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
    assert torch.allclose(tensor, reference, atol=1e-6)
    for fx, fy, expected in case.points:
        x, y = int(fx * 224), int(fy * 224)
        want = torch.tensor(expected, dtype=torch.float32) / 255.0
        assert torch.allclose(tensor[:, y, x], want, atol=case.tolerance / 255.0 + 1e-6)


@pytest.mark.parametrize("name", [n for n in EXIF_CASES if not n.startswith("exif_orientation_1")])
def test_exif_fixture_is_wrong_without_rotation(name: str) -> None:
    """The stored pixels alone put the markers elsewhere, so the tests above mean something."""
    case = ODD_MODE_CASES[name]
    with Image.open(io.BytesIO(case.data)) as im:
        naive = im.convert("RGB").resize(SIZE)
    with pytest.raises(AssertionError):
        _assert_points(naive, case)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("size", [(224, 224), (100, 300)])
def test_exif_photo_matches_turning_first(orientation: int, size: tuple[int, int]) -> None:
    """decode_rgb resizes before it turns; on a real photo that is within one level of
    Pillow's exif_transpose followed by the resize."""
    with Image.open(io.BytesIO(sample_image_bytes("image2.jpg"))) as photo:
        upright = photo.convert("RGB")
    stored = _stored_for(upright, orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=90, exif=exif)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        reference = ImageOps.exif_transpose(im).convert("RGB").resize(size, Image.BILINEAR)
    out = decode_rgb(data, size)
    assert out.size == size
    diff = np.abs(np.asarray(out, dtype=np.int16) - np.asarray(reference, dtype=np.int16))
    assert int(diff.max()) <= 1
    assert probe_image(data, "x").width == upright.width  # displayed, not stored


def _stored_for(upright: Image.Image, orientation: int) -> Image.Image:
    """How a camera stores ``upright`` when it writes EXIF Orientation ``orientation``."""
    inverse = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }
    return upright if orientation == 1 else upright.transpose(inverse[orientation])


def test_exif_fixture_sizes() -> None:
    for orientation in range(1, 9):
        with Image.open(io.BytesIO(exif_rotated(orientation))) as im:
            stored = im.size
            assert im.getexif()[0x0112] == orientation
        assert stored == (SIZE if orientation < 5 else SIZE[::-1])


def test_sixteen_bit_ramp_is_scaled_not_clipped() -> None:
    """Every 16-bit value v maps to round(v / 257); Pillow's own convert clips to 255."""
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, format="PNG")
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "I;16"
        assert im.convert("RGB").getpixel((255, 0)) == (255, 255, 255)  # value 255: clipped
        assert im.convert("RGB").getpixel((0, 200)) == (255, 255, 255)  # 51200: clipped
    out = np.asarray(decode_rgb(data))
    expected = np.array([round(v / 257) for v in range(65536)], dtype=np.uint8).reshape(256, 256)
    assert np.array_equal(out[:, :, 0], expected)
    assert np.array_equal(out[:, :, 0], out[:, :, 1]) and np.array_equal(out[:, :, 1], out[:, :, 2])


def test_float_image_with_nan_and_inf_decodes() -> None:
    values = np.array([[0.0, 0.5, 1.0, np.nan, np.inf, -np.inf]], dtype=np.float32)
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, format="TIFF")
    out = decode_rgb(buf.getvalue())
    row = [out.getpixel((x, 0))[0] for x in range(6)]
    assert row == [0, 128, 255, 0, 255, 0]  # 0..1 scaled; NaN as the minimum, inf as extremes


def test_cmyk_jpeg_is_adobe_inverted_and_reads_right() -> None:
    """Pillow writes CMYK JPEGs as Photoshop does (APP14 'Adobe', inverted inks) and reads
    the marker back; the colours survive the round trip."""
    case = ODD_MODE_CASES["cmyk_jpeg"]
    assert b"Adobe" in case.data
    with Image.open(io.BytesIO(case.data)) as im:
        assert im.info.get("adobe") is not None
        assert im.tile[0].args[0] == "CMYK;I"  # stored inverted
    _assert_points(decode_rgb(case.data, (224, 224)), case)


def test_plain_rgb_jpeg_is_pillows_own_decode() -> None:
    """The common case is untouched: no conversion, the same pixels as Pillow's decode."""
    data = sample_image_bytes("image1.jpg")
    with Image.open(io.BytesIO(data)) as im:
        reference = im.convert("RGB")
        resized = reference.resize((224, 224), Image.BILINEAR)
    assert np.array_equal(np.asarray(decode_rgb(data)), np.asarray(reference))
    assert np.array_equal(np.asarray(decode_rgb(data, (224, 224))), np.asarray(resized))
