"""ResNet-50 features on Spark: equal to a plain loop, incremental, one commit per run.

Real images are ingested into a real ``images.lance``; the feature job runs on the shared
local Spark session (local[2]) and its output is compared with :class:`FeatureModel` run
directly on the same bytes.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pytest
import torch
from helpers import photo_variant, sample_image_bytes, sha256
from PIL import Image
from pyspark.serializers import CloudPickleSerializer

from vlm_lake.features.extract import extract_features
from vlm_lake.features.model import MODEL_NAME, FeatureModel, ModelWeights, load_state_dict
from vlm_lake.features.resnet import resnet50
from vlm_lake.features.settings import FeatureSettings
from vlm_lake.features.tasks import (
    BroadcastWeights,
    ExtractTask,
    SeedWeights,
    StoreWeights,
    broadcast_weights,
    plan_units,
    task_layout,
)
from vlm_lake.imaging.transforms import imagenet_uint8
from vlm_lake.ingest.images import ImageIngestOptions, ingest_images
from vlm_lake.spark.fragment_job import FragmentSink
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import publish
from vlm_lake.tables.contracts import FEATURES_SCHEMA, IMAGE_SCHEMA

#: Small units so a dozen images make several tasks on both slots.
# fp32 pinned: the features are compared with the plain model's to 1e-4 (bf16 where the
# CPU has it would differ by more; bf16 has its own test below).
SETTINGS = FeatureSettings(
    precision="fp32", max_images_per_task=4, min_images_per_task=2, progress_interval_s=1
)


def _cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(photo_variant(20, size=(90, 70)))).convert("CMYK").save(
        buffer, format="JPEG"
    )
    return buffer.getvalue()


class Lake:
    """A raw folder, its published ``images.lance`` and the features dataset."""

    def __init__(self, root: Path, store: ObjectStore) -> None:
        self.raw = root / "raw"
        self.images = str(root / "lake" / "images.lance")
        self.features = str(root / "lake" / "image_features.lance")
        self.store = store

    def write(self, name: str, data: bytes) -> None:
        path = self.raw / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def ingest(self) -> None:
        report = ingest_images(
            self.store, str(self.raw), self.images, ImageIngestOptions(delete_missing=True)
        )
        publish.publish(self.images, report.summary.version)

    def extract(self, spark: Any, weights: ModelWeights, **kwargs: Any) -> Any:
        report = extract_features(
            spark,
            image_uri=self.images,
            out_uri=self.features,
            weights=weights,
            settings=kwargs.pop("settings", SETTINGS),
            **kwargs,
        )
        publish.publish(self.features, report.summary.version)
        return report

    def rows(self) -> dict[str, dict[str, Any]]:
        rows = lance.dataset(self.features).to_table().to_pylist()
        by_id = {r["image_id"]: r for r in rows}
        assert len(by_id) == len(rows), "one row per image"
        return by_id

    def image_bytes(self) -> dict[str, bytes]:
        table = lance.dataset(self.images).to_table(columns=["image_id", "image_data"])
        return dict(
            zip(
                table.column("image_id").to_pylist(),
                table.column("image_data").to_pylist(),
                strict=True,
            )
        )


def _expected(images: dict[str, bytes], weights: ModelWeights) -> dict[str, np.ndarray]:
    model = FeatureModel(load_state_dict(weights.payload(), weights.identity), "cpu", "fp32")
    ids = sorted(images)
    features = model(torch.stack([imagenet_uint8(images[i]) for i in ids]))
    return dict(zip(ids, features, strict=True))


def _assert_features_match(lake: Lake, weights: ModelWeights) -> None:
    rows = lake.rows()
    expected = _expected(lake.image_bytes(), weights)
    assert set(rows) == set(expected)
    for image_id, row in rows.items():
        got = np.asarray(row["features"], dtype=np.float32)
        want = expected[image_id]
        # threads differ (1 per Spark task vs 2 here): float sums in another order
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
        assert row["model"] == MODEL_NAME and row["weights"] == weights.identity


@pytest.fixture()
def lake(tmp_path: Path, local_store: ObjectStore) -> Lake:
    lake = Lake(tmp_path, local_store)
    for i in range(9):
        lake.write(f"p{i}.jpg", photo_variant(i, size=(120 + 8 * i, 100)))
    lake.write("sample2.jpg", sample_image_bytes("image2.jpg"))
    lake.write("sample4.png", sample_image_bytes("image4.png"))
    lake.write("cmyk.jpg", _cmyk_jpeg())
    lake.ingest()
    return lake


def test_spark_features_equal_the_plain_model_and_later_runs_are_incremental(
    lake: Lake, spark: Any, tmp_path: Path
) -> None:
    weights = ModelWeights.random(seed=0)
    first = lake.extract(spark, weights)
    assert first.committed and first.full_rebuild
    assert (first.computed, first.reused, first.deleted) == (12, 0, 0)
    assert sorted(first.computed_ids) == sorted(lake.image_bytes())
    assert first.tasks == 4 and first.task_slots == 2  # 12 images in units of <= 4, 2 slots
    assert 1 <= first.workers <= 2 and first.models_built <= first.workers
    assert first.task_slots * first.threads_per_task <= max(2, os.cpu_count() or 1)
    assert (first.device, first.precision) == ("cpu", SETTINGS.precision)  # pinned: fp32
    assert first.summary.num_rows == 12
    schema = lance.dataset(lake.features).schema
    assert [(f.name, f.type) for f in schema] == [(f.name, f.type) for f in FEATURES_SCHEMA]
    assert schema.field("features").type == pa.list_(pa.float32(), 2048)
    _assert_features_match(lake, weights)

    # nothing new: no Spark at all, no commit
    def no_spark() -> Any:
        raise AssertionError("a run with nothing to compute must not start Spark")

    idle = lake.extract(no_spark, weights)
    assert not idle.committed and idle.computed == 0 and idle.reused == 12
    assert idle.summary.version == first.summary.version

    # one image changed, one added, one removed: exactly two computed, in ONE commit
    before = lake.rows()
    lake.write("p0.jpg", photo_variant(40, size=(130, 90)))
    lake.write("new.png", photo_variant(41, size=(100, 140), fmt="PNG"))
    (lake.raw / "p1.jpg").unlink()
    lake.ingest()
    update = lake.extract(spark, weights)
    assert update.committed and not update.full_rebuild
    assert (update.computed, update.reused, update.deleted) == (2, 10, 1)
    assert sorted(update.computed_ids) == ["new", "p0"]
    assert update.summary.version == first.summary.version + 1  # delete + add: one commit
    after = lake.rows()
    assert "p1" not in after and set(after) == set(lake.image_bytes())
    assert after["p0"]["image_sha256"] == sha256((lake.raw / "p0.jpg").read_bytes())
    assert after["p0"]["features"] != before["p0"]["features"]
    for image_id in set(before) - {"p0", "p1"}:
        assert after[image_id]["features"] == before[image_id]["features"]  # kept, not redone
    _assert_features_match(lake, weights)

    # other weights: every image is computed again; the model is rebuilt by the workers
    path = tmp_path / "resnet50-seed9.pth"
    torch.save(resnet50(seed=9).state_dict(), path)
    trained = ModelWeights.load(str(path), ObjectStore())
    swap = lake.extract(spark, trained)
    assert (swap.computed, swap.reused, swap.deleted) == (12, 0, 0)
    assert swap.models_built == swap.workers >= 1
    _assert_features_match(lake, trained)
    # same weights again with a full rebuild: every worker reuses its model
    again = lake.extract(spark, trained, full_rebuild=True)
    assert again.full_rebuild and again.computed == 12
    assert again.models_built <= again.workers  # a worker Spark had to restart builds again
    _assert_features_match(lake, trained)


def test_each_precision_is_recorded_and_bf16_agrees_with_fp32(
    tmp_path: Path, local_store: ObjectStore, spark: Any
) -> None:
    """Both kinds pinned, so this holds on any CPU (bf16 is only slower where emulated)."""
    lake = Lake(tmp_path, local_store)
    for i in range(3):
        lake.write(f"p{i}.jpg", photo_variant(i, size=(120, 100)))
    lake.ingest()
    weights = ModelWeights.random(seed=0)
    vectors = {}
    for precision in ("fp32", "bf16"):
        settings = FeatureSettings(precision=precision, progress_interval_s=1)
        report = lake.extract(spark, weights, settings=settings, full_rebuild=True)
        assert (report.precision, report.computed) == (precision, 3)
        rows = lake.rows()
        assert {r["precision"] for r in rows.values()} == {precision}
        vectors[precision] = torch.tensor(np.stack([rows[f"p{i}"]["features"] for i in range(3)]))
    assert not torch.equal(vectors["fp32"], vectors["bf16"])  # bf16 really ran
    cosine = torch.nn.functional.cosine_similarity(vectors["fp32"], vectors["bf16"])
    assert cosine.min() >= 0.999


def test_an_image_that_does_not_decode_is_named(tmp_path: Path, spark: Any) -> None:
    images = str(tmp_path / "images.lance")
    good = photo_variant(3)
    rows = [
        {
            "image_id": image_id,
            "image_data": data,
            "source_uri": f"/raw/{image_id}.jpg",
            "source_etag": "e",
            "sha256": sha256(data),
            "size_bytes": len(data),
            "format": "jpeg",
            "width": 1,
            "height": 1,
        }
        for image_id, data in [("fine", good), ("broken", good[: len(good) // 3])]
    ]
    ds = lance.write_dataset(pa.Table.from_pylist(rows, schema=IMAGE_SCHEMA), images)
    publish.publish(images, ds.version)
    out = str(tmp_path / "image_features.lance")
    with pytest.raises(Exception, match=r"image_id='broken'.*cannot be decoded for features"):
        extract_features(spark, image_uri=images, out_uri=out, weights=ModelWeights.random())
    with pytest.raises(ValueError, match="was not found"):
        lance.dataset(out)  # nothing committed


def test_the_task_carries_a_broadcast_handle_not_the_model(spark: Any) -> None:
    payload = ModelWeights.random().payload()
    handle = spark.sparkContext.broadcast(payload)
    try:
        task = ExtractTask(
            image_uri="/lake/images.lance",
            image_version=1,
            positions=np.arange(1000, dtype=np.int64),
            units=plan_units(1000, 2, 256),
            weights=BroadcastWeights(handle),
            identity="random-init:seed=0",
            device="cpu",
            precision="fp32",
            compiled=False,
            batch_size=8,
            threads=1,
            jpeg_draft=True,
            sink=FragmentSink("/lake/image_features.lance", FEATURES_SCHEMA, {}),
            image_storage={},
        )
        pickled = CloudPickleSerializer().dumps(task)  # what Spark ships
        assert len(payload) > 100_000_000  # the weights are about 100 MB...
        assert len(pickled) < 50_000  # ...and the task shipped with every partition is tiny
        assert b"torch.nn" not in pickled
    finally:
        # Pickling a broadcast registers it for the next Python command Spark builds; this
        # test pickled by hand, so unregister it before destroying it (a real job's
        # mapInArrow consumes the registration itself).
        spark.sparkContext._pickled_broadcast_vars.clear()
        handle.destroy()


def test_the_weights_broadcast_is_reused_until_other_weights_come(spark: Any) -> None:
    """A later run of the same weights neither serialises nor ships 100 MB again."""
    calls: list[str] = []

    def payload(name: str) -> Any:
        return lambda: calls.append(name) or name.encode() * 1000

    sc = spark.sparkContext
    first = broadcast_weights(sc, "sha256:aaa", payload("a"))
    again = broadcast_weights(sc, "sha256:aaa", payload("a"))
    other = broadcast_weights(sc, "sha256:bbb", payload("b"))
    assert again is first and other is not first
    assert calls == ["a", "b"]
    assert other() == b"b" * 1000
    assert broadcast_weights(sc, "sha256:bbb", payload("b")) is other
    assert calls == ["a", "b"]


def test_without_broadcast_workers_load_the_weights_themselves(tmp_path: Path) -> None:
    """Spark Connect has no broadcast: the seed or the file, checked against the identity."""
    seeded = SeedWeights(seed=0)()
    assert torch.equal(
        load_state_dict(seeded, "seed")["conv1.weight"], resnet50(0).state_dict()["conv1.weight"]
    )
    path = tmp_path / "w.pth"
    torch.save(resnet50(2).state_dict(), path)
    weights = ModelWeights.load(str(path), ObjectStore())
    reader = StoreWeights(str(path), weights.identity, None)
    assert reader() == path.read_bytes()
    torch.save(resnet50(3).state_dict(), path)  # replaced while the run goes on
    with pytest.raises(RuntimeError, match=r"w\.pth' changed during the run"):
        reader()


def test_task_layout_never_oversubscribes_the_cores(spark: Any) -> None:
    cores = os.cpu_count() or 1
    slots, threads = task_layout(spark)
    assert slots == spark.sparkContext.defaultParallelism == 2  # the test session is local[2]
    assert threads == max(1, cores // 2)
    assert slots * threads <= max(cores, slots)
    assert task_layout(spark, tasks=1) == (2, cores)  # a lone task gets every core
    assert task_layout(spark, threads_per_task=3) == (2, 3)  # an explicit choice wins


def test_plan_units_balances_work_across_slots() -> None:
    assert plan_units(0, 2, 256) == []
    assert plan_units(5, 2, 256) == [(0, 2), (2, 5)]
    assert plan_units(1000, 2, 256) == [(0, 250), (250, 500), (500, 750), (750, 1000)]
    units = plan_units(1001, 3, 100)
    assert len(units) % 3 == 0 and max(b - a for a, b in units) <= 100
    assert units[0][0] == 0 and units[-1][1] == 1001
    assert all(a < b for a, b in units)
    assert all(units[i][1] == units[i + 1][0] for i in range(len(units) - 1))
    assert plan_units(40, 2, 256, min_per_unit=32) == [(0, 40)]  # one worker builds a model
    assert plan_units(3, 4, 256) == [(0, 1), (1, 2), (2, 3)]


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="batch_size=0 must be a whole number >= 1"):
        FeatureSettings(batch_size=0)
    with pytest.raises(ValueError, match="index_min_rows=10 must be >= 256"):
        FeatureSettings(index_min_rows=10)
    with pytest.raises(ValueError, match="min_images_per_task=300 must be between 1 and"):
        FeatureSettings(min_images_per_task=300)
    with pytest.raises(ValueError, match="device='tpu' is not allowed"):
        extract_features(
            None,
            image_uri="x",
            out_uri="y",
            weights=ModelWeights.random(),
            settings=FeatureSettings(device="tpu"),
        )
