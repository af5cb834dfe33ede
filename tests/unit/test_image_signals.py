"""Quality signals at ingest: real photos made into the hard cases curation must see."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import imagehash
import lance
import numpy as np
import pytest
from helpers import hard_case_images, photo_variant
from PIL import Image

from vlm_lake.imaging.decode import probe_image
from vlm_lake.imaging.signals import THUMB, batch_signals, hamming, hash_inputs, phashes
from vlm_lake.ingest.images import ImageIngestOptions, ingest_images
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables.contracts import IMAGE_SIGNAL_COLUMNS


class Signals:
    """One image's signals, as attributes."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def _measure(cases: dict[str, bytes]) -> dict[str, Signals]:
    """The signals of each image, probed and computed as one batch (as the ingest does)."""
    infos = {name: probe_image(data, name, signals=True) for name, data in cases.items()}
    thumbs = [info.thumbnail for info in infos.values()]
    assert all(t is not None and len(t) == THUMB * THUMB for t in thumbs)
    columns = batch_signals(thumbs, [(i.width, i.height) for i in infos.values()])  # type: ignore[arg-type]
    return {
        name: Signals({c: values[k].item() for c, values in columns.items()})
        for k, name in enumerate(infos)
    }


@pytest.fixture(scope="module")
def signals() -> dict[str, Signals]:
    return _measure(hard_case_images())


def test_the_batched_phash_is_imagehash_bit_for_bit() -> None:
    cases = {f"photo{i}": photo_variant(i) for i in range(40)} | hard_case_images()
    thumbs = [probe_image(d, n, signals=True).thumbnail for n, d in cases.items()]
    x = np.frombuffer(b"".join(thumbs), dtype=np.uint8).reshape(-1, THUMB, THUMB)  # type: ignore[arg-type]
    small = hash_inputs(x)
    ours = phashes(small)
    for image, value in zip(small, ours, strict=True):
        reference = int(str(imagehash.phash(Image.fromarray(image))), 16)
        assert int(value) & ((1 << 64) - 1) == reference
    assert len(set(ours.tolist())) > 40  # distinct photos, distinct hashes


def test_perceptual_duplicates_have_close_hashes(signals: dict[str, Signals]) -> None:
    original = signals["original"].phash
    # the same picture re-encoded, resized, cropped by 4%, or turned by EXIF (orientation
    # is applied before hashing); also shrunk to 16x16 or blurred: pHash keeps the coarse
    # structure, so those are duplicates too, and the keep-one rule keeps the largest
    same = ("requality", "resized", "cropped", "exif_rotated", "tiny", "blurred")
    near = {n: hamming(original, signals[n].phash) for n in same}
    assert all(bits <= 10 for bits in near.values()), near
    assert signals["exif_rotated"].aspect_ratio == signals["original"].aspect_ratio
    far = {n: hamming(original, signals[n].phash) for n in ("other_photo", "flat_grey")}
    assert all(bits >= 20 for bits in far.values()), far


def test_bad_quality_cases_are_measured(signals: dict[str, Signals]) -> None:
    photo = signals["original"]
    grey, dark = signals["flat_grey"], signals["almost_black"]
    assert grey.flat_share == 1.0 and grey.blur < 1.0 and abs(grey.luma_mean - 128 / 255) < 0.01
    assert photo.flat_share < 0.3 and photo.blur > 50
    assert dark.luma_mean < 0.06 and dark.dark_share > 0.8 and photo.dark_share < 0.2
    assert signals["tiny"].short_side == 16 and signals["tiny"].aspect_ratio == 1.0
    assert (photo.short_side, round(photo.aspect_ratio, 3)) == (300, round(451 / 300, 3))
    assert signals["blurred"].blur < photo.blur / 10
    assert photo.bright_share < 0.5 and grey.bright_share == 0.0


def test_ingest_stores_the_signals_and_can_leave_them_out(
    tmp_path: Path, signals: dict[str, Signals]
) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    for name, data in hard_case_images().items():
        (folder / f"{name}.jpg").write_bytes(data)
    uri = str(tmp_path / "images.lance")
    ingest_images(ObjectStore(), str(folder), uri, ImageIngestOptions(engine="local"))
    rows = {r["image_id"]: r for r in lance.dataset(uri).to_table().to_pylist()}
    assert set(rows) == set(signals)
    for name, measured in signals.items():
        stored = {c: rows[name][c] for c in IMAGE_SIGNAL_COLUMNS}
        assert stored == pytest.approx(measured.__dict__, rel=1e-6), name
        assert stored["phash"] == measured.phash  # exact: 64 bits
    plain = str(tmp_path / "plain.lance")
    options = ImageIngestOptions(engine="local", signals=False)
    ingest_images(ObjectStore(), str(folder), plain, options)
    table = lance.dataset(plain).to_table(columns=list(IMAGE_SIGNAL_COLUMNS))
    assert all(table.column(c).null_count == table.num_rows == 10 for c in table.column_names)
