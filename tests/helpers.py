"""Test helpers: real image bytes, S3 uploads, Lance reads. No mocks of project code."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import socket
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from PIL import Image, ImageEnhance, ImageFilter

from vlm_lake.lake import SAMPLE_DATA


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def feature_precision_setting() -> str:
    """``FEATURES_PRECISION`` as the suite runs (default ``auto``): set it to ``fp32`` or
    ``bf16`` to run every test that does not pin a precision in that one."""
    return os.environ.get("FEATURES_PRECISION", "auto")


S3_REGION = "us-east-1"
S3_KEY = "test-access-key-id"
S3_SECRET = "test-secret-access-key-do-not-log"

SAMPLE_IMAGES = SAMPLE_DATA / "lanceData"
SEED_TESTDATA = Path(__file__).parent / "data" / "seed_testdata.json"


def cli_env(dagster_home: Path, **values: str) -> dict[str, str]:
    """The environment of a CLI subprocess: this one without the deployment variables
    (``AWS_*``, ``RAW_*``, ``LAKE_*``, ``SPARK_*``), the tests' DAGSTER_HOME, Spark on
    loopback, and ``values``."""
    prefixes = ("AWS_", "RAW_", "LAKE_", "SPARK_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(DAGSTER_HOME=str(dagster_home), SPARK_LOCAL_IP="127.0.0.1", **values)
    return env


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path, timeout: int = 480
) -> subprocess.CompletedProcess[str]:
    """Run a command with no stdin; fail the test with its output unless it exits 0."""
    proc = subprocess.run(
        args,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return proc


def sample_image_bytes(name: str) -> bytes:
    """Bytes of one shipped sample photo (image1.jpg, image2.jpg, image3.jpg, image4.png)."""
    return (SAMPLE_IMAGES / name).read_bytes()


def photo_variant(seed: int, size: tuple[int, int] = (160, 120), fmt: str = "JPEG") -> bytes:
    """A distinct real-photo crop (from the sample cat photo) encoded as JPEG or PNG."""
    with Image.open(SAMPLE_IMAGES / "image1.jpg") as im:
        w, h = im.size
        left, top = (seed * 37) % (w - size[0]), (seed * 23) % (h - size[1])
        crop = im.crop((left, top, left + size[0], top + size[1])).rotate(seed % 4 * 90)
        buf = io.BytesIO()
        crop.save(buf, format=fmt)
        return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(client: Any, bucket: str, key: str, data: bytes) -> None:
    client.put_object(Bucket=bucket, Key=key, Body=data)


def upload_seed_example(client: Any, bucket: str) -> dict[str, bytes]:
    """The seed's layout: image1..3.jpg under lanceData/, testdata.json under Lance/data/."""
    images = {f"image{i}": sample_image_bytes(f"image{i}.jpg") for i in (1, 2, 3)}
    for stem, data in images.items():
        put(client, bucket, f"lanceData/{stem}.jpg", data)
    put(client, bucket, "Lance/data/testdata.json", SEED_TESTDATA.read_bytes())
    return images


def write_json(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
    return path


def write_published(data: Any, uri: str, **kwargs: Any) -> Any:
    """``lance.write_dataset`` followed by publishing the new version (as a passing run would).

    Readers default to the ``published`` tag, so tests that build a dataset by hand publish
    it the way a run whose checks passed does.
    """
    import lance

    from vlm_lake.tables import publish

    ds = lance.write_dataset(data, uri, **kwargs)
    publish.publish(uri, ds.version, kwargs.get("storage_options"))
    return ds


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class S3Request:
    """One request line the moto server logged."""

    method: str
    path: str
    query: dict[str, list[str]]


@contextlib.contextmanager
def recorded_s3_requests() -> Iterator[list[S3Request]]:
    """Record every request the moto server handles (werkzeug logs each request line).

    The session conftest keeps the ``werkzeug`` logger at WARNING; this lowers it to INFO
    with a handler of its own for the duration of the block, then restores it.
    """
    logger = logging.getLogger("werkzeug")
    requests: list[S3Request] = []

    class _Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if not record.args or not isinstance(record.args, tuple):
                return
            line = _ANSI.sub("", str(record.args[0])).split()
            if len(line) >= 2:
                target = urlsplit(line[1])
                requests.append(S3Request(line[0], target.path, parse_qs(target.query)))

    handler = _Recorder(level=logging.INFO)
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # keep 5,000 request lines out of pytest's log capture
    try:
        yield requests
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def seed_objects(bucket: str, objects: Iterable[tuple[str, bytes]]) -> None:
    """Store many objects in the test S3 server's own state, without one HTTP PUT each.

    The moto server runs in this process and keeps its buckets in ``s3_backends``; storing
    through the backend gives the same objects, sizes and ETags (MD5) as ``PutObject`` does,
    in about 0.1 ms each instead of 6 ms (the single-process server, not the client, is the
    bottleneck of HTTP uploads). Listing and everything under test still go over HTTP.
    """
    from moto.s3.models import s3_backends

    backends = [
        backend
        for by_partition in s3_backends.values()
        for backend in by_partition.values()
        if bucket in backend.buckets
    ]
    assert len(backends) == 1, f"bucket {bucket!r} not found in the moto server's state"
    for key, data in objects:
        backends[0].put_object(bucket, key, data)


def seed_layout_resources(
    bucket: str, object_store: Any, upload_events: Any = None
) -> dict[str, Any]:
    """Resources for the seed's layout in ``bucket`` (``upload_seed_example``).

    The lake goes under ``lake/``; there is no event queue unless ``upload_events``.
    """
    from resources import LakeResource, UploadEventsResource

    return {
        "lake": LakeResource(
            raw_images_uri=f"s3://{bucket}/lanceData/",
            raw_texts_uri=f"s3://{bucket}/Lance/data/testdata.json",
            lake_uri=f"s3://{bucket}/lake",
        ),
        "object_store": object_store,
        "upload_events": upload_events or UploadEventsResource(),
    }


def checked_text_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` of ``text_lance`` without its signal columns, once they are checked.

    The length must be the text's and the MinHash its signature (recomputed here).
    """
    from vlm_lake.curation.text_signals import minhash

    length, signature = row.pop("text_length"), row.pop("minhash")
    assert length == len(row["text"]), (row["docid"], length)
    assert signature == minhash(row["text"]).tolist(), row["docid"]
    return row


def _jpeg(im: Image.Image, quality: int = 90, exif: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, **({"exif": exif} if exif else {}))
    return buf.getvalue()


def hard_case_images() -> dict[str, bytes]:
    """The shipped cat photo, its perceptual duplicates and the bad-quality cases."""
    original = sample_image_bytes("image1.jpg")
    photo = Image.open(io.BytesIO(original)).convert("RGB")
    w, h = photo.size
    rotated_exif = Image.Exif()
    rotated_exif[0x0112] = 6  # Orientation: the viewer turns it 90 degrees clockwise
    return {
        "original": original,
        "requality": _jpeg(photo, quality=35),
        "resized": _jpeg(photo.resize((w * 3 // 5, h * 3 // 5), Image.Resampling.LANCZOS)),
        "cropped": _jpeg(photo.crop((w // 25, h // 25, w - w // 25, h - h // 25))),
        # stored turned 90 degrees counter-clockwise, with EXIF saying to turn it back
        "exif_rotated": _jpeg(photo.transpose(Image.Transpose.ROTATE_90), exif=rotated_exif),
        "other_photo": sample_image_bytes("image2.jpg"),
        "flat_grey": _jpeg(Image.new("RGB", (200, 150), (128, 128, 128))),
        "almost_black": _jpeg(ImageEnhance.Brightness(photo).enhance(0.04)),
        "tiny": _jpeg(photo.resize((16, 16), Image.Resampling.LANCZOS)),
        "blurred": _jpeg(photo.filter(ImageFilter.GaussianBlur(8))),
    }


CAPTION = (
    "A grey cat sits on a wooden table next to a window and looks at the garden where two "
    "birds are eating seeds from a small feeder in the morning sun"
)


def hard_case_documents() -> list[dict[str, Any]]:
    """Documents naming the hard-case images: a caption, the caption with one word changed,
    a 3-character text, and a document of the flat grey image."""
    return [
        {"docid": "caption", "text": CAPTION, "image_id1": "original", "image_id2": "other_photo"},
        {"docid": "caption_again", "text": CAPTION.replace("wooden", "oak"), "image_id1": "tiny"},
        {"docid": "short", "text": "cat", "image_id1": "requality"},
        {
            "docid": "grey",
            "text": "A flat grey picture of nothing in particular at all.",
            "image_id1": "flat_grey",
        },
    ]
