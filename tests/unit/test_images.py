"""probe_image and decode_rgb on real image bytes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from bad_images import BAD_IMAGE_CASES, same_stem_objects
from helpers import photo_variant, sample_image_bytes
from PIL import Image, UnidentifiedImageError

from vlm_lake.errors import InvalidImageError
from vlm_lake.imaging.decode import IMAGE_SUFFIXES, MAX_PIXELS, decode_rgb, probe_image
from vlm_lake.store import uris

TESTS_DIR = Path(__file__).resolve().parents[1]
BOMBS = [name for name in BAD_IMAGE_CASES if name.startswith("bomb-")]
ignore_bomb_warning = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


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


@ignore_bomb_warning
@pytest.mark.parametrize("name", sorted(BAD_IMAGE_CASES))
def test_bad_case_names_source_and_problem(name: str) -> None:
    case = BAD_IMAGE_CASES[name]
    uri = f"s3://bucket/raw/photos/{name}"
    with pytest.raises(InvalidImageError) as info:
        probe_image(case.data, uri)
    assert info.value.source_uri == uri
    assert case.problem in info.value.problem
    message = str(info.value)
    assert repr(uri) in message and case.problem in message
    assert "expected" in message  # says what is allowed, not only what is wrong


@ignore_bomb_warning
@pytest.mark.parametrize("name", sorted(BAD_IMAGE_CASES))
def test_decode_rgb_refuses_bad_case(name: str) -> None:
    """decode_rgb has no URI: it raises Pillow's own errors (callers add the location)."""
    data = BAD_IMAGE_CASES[name].data
    expected: type[Exception] = OSError
    if name.startswith("bomb-"):
        expected = Image.DecompressionBombError
    elif not data or name in ("caption.jpg", "readme.txt"):
        expected = UnidentifiedImageError
    with pytest.raises(expected):
        decode_rgb(data, (224, 224))


@ignore_bomb_warning
@pytest.mark.parametrize("name", BOMBS)
def test_bomb_message_gives_size_and_limit(name: str) -> None:
    with pytest.raises(InvalidImageError) as info:
        probe_image(BAD_IMAGE_CASES[name].data, name)
    problem = info.value.problem
    assert problem.startswith("decompression bomb refused before decoding: the header declares")
    assert f"limit of {MAX_PIXELS:,} pixels" in problem
    with pytest.raises(Image.DecompressionBombError, match="refused before decoding"):
        decode_rgb(BAD_IMAGE_CASES[name].data)


def test_bombs_are_small_real_pngs() -> None:
    for name, (width, height) in {
        "bomb-20000x20000.png": (20000, 20000),
        "bomb-10000x10000.png": (10000, 10000),
    }.items():
        data = BAD_IMAGE_CASES[name].data
        assert len(data) < 64 * 1024
        assert width * height > MAX_PIXELS
        head = data[:33]
        assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
        assert int.from_bytes(head[16:20], "big") == width
        assert int.from_bytes(head[20:24], "big") == height


def test_our_limit_is_under_pillows() -> None:
    """Pillow warns above MAX_IMAGE_PIXELS and refuses above twice it; a bigger MAX_PIXELS
    would be dead code, so ours must be at most Pillow's."""
    assert Image.MAX_IMAGE_PIXELS is not None
    assert MAX_PIXELS <= Image.MAX_IMAGE_PIXELS


_RSS_SCRIPT = """
import io, sys, warnings
sys.path.insert(0, sys.argv[1])
from bad_images import decompression_bomb_png
from PIL import Image
from vlm_lake.errors import InvalidImageError
from vlm_lake.imaging.decode import decode_rgb, probe_image


def status_mib(field):
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


warnings.simplefilter("ignore", Image.DecompressionBombWarning)
bombs = [decompression_bomb_png(10000, 10000), decompression_bomb_png(20000, 20000)]
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
except OSError as exc:
    print(f"cannot reset the peak RSS: {exc}")
    raise SystemExit(3) from None
base = status_mib("VmRSS")
if sys.argv[2] == "ours":
    refused = 0
    for data in bombs:
        try:
            probe_image(data, "bomb.png")
        except InvalidImageError:
            refused += 1
        try:
            decode_rgb(data, (224, 224))
        except Image.DecompressionBombError:
            refused += 1
    assert refused == 4, f"only {refused} of 4 calls refused the bombs"
else:  # control: Pillow with its limit off really allocates the pixels
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(io.BytesIO(bombs[0])) as im:
        im.load()
print(status_mib("VmHWM") - base)
"""


def _peak_growth_mib(mode: str) -> float:
    """Peak RSS growth (MiB) of a fresh process while it runs the ``mode`` part of the script."""
    done = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(TESTS_DIR), mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode == 3:
        pytest.skip(done.stdout.strip())
    assert done.returncode == 0, done.stdout + done.stderr
    return float(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_bomb_is_refused_before_pixels_are_allocated() -> None:
    """A 10000x10000 and a 20000x20000 header (100 MB and 400 MB decoded) cost no memory."""
    assert _peak_growth_mib("ours") < 16
    assert _peak_growth_mib("control") > 90  # the measurement does see a real decode


@ignore_bomb_warning
def test_probe_leaves_warning_filters_alone_across_threads() -> None:
    """probe_image runs in ingest worker threads; it must not touch the global filters."""
    before = list(warnings.filters)
    bombs = [BAD_IMAGE_CASES[name].data for name in BOMBS] * 16

    def probe(data: bytes) -> str:
        with pytest.raises(InvalidImageError) as info:
            probe_image(data, "bomb.png")
        return info.value.problem

    with ThreadPoolExecutor(max_workers=8) as pool:
        problems = list(pool.map(probe, bombs))
    assert all("decompression bomb" in p for p in problems)
    assert warnings.filters == before


def test_same_stem_objects_are_two_valid_images() -> None:
    objects = same_stem_objects()
    stems = {uris.stem(key) for key in objects}
    assert stems == {"img_0001"}
    assert len({k.split("/")[0] for k in objects}) == 2
    formats = {probe_image(data, key).format for key, data in objects.items()}
    assert formats == {"jpeg", "png"}
