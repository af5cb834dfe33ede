"""Image ingest on Spark: tasks download and write fragments, the driver commits once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lance
import pytest
from helpers import photo_variant, put

from vlm_lake.errors import InvalidImageError, SourceNotFoundError
from vlm_lake.ingest.images import ImageIngestOptions, ingest_images
from vlm_lake.store.object_store import ObjectStore

COLUMNS = ["image_id", "sha256", "image_data", "source_uri", "format", "width", "height"]


def _source(root: Path, count: int = 7) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"p{i:02d}.jpg").write_bytes(photo_variant(i, size=(40 + i, 30)))
    (root / "notes.txt").write_bytes(b"not an image")  # rejected at listing
    (root / "broken.jpg").write_bytes(photo_variant(99)[:200])  # rejected at decode


def _rows(uri: str) -> list[dict[str, Any]]:
    table = lance.dataset(uri).to_table(columns=COLUMNS)
    return sorted(table.to_pylist(), key=lambda r: r["image_id"])


def _spark_options(**kwargs: Any) -> ImageIngestOptions:
    return ImageIngestOptions(engine="spark", objects_per_task=3, **kwargs)


def test_spark_tasks_write_the_same_table_as_the_local_path(
    spark: Any, tmp_path: Path, local_store: ObjectStore
) -> None:
    raw = tmp_path / "raw"
    _source(raw)
    local = ingest_images(
        local_store, str(raw), str(tmp_path / "local.lance"), ImageIngestOptions(engine="local")
    )
    on_spark = ingest_images(
        local_store, str(raw), str(tmp_path / "spark.lance"), _spark_options(), spark=spark
    )
    assert on_spark.tasks == 3 and local.tasks == 0  # 8 downloads, 3 per task
    assert _rows(str(tmp_path / "spark.lance")) == _rows(str(tmp_path / "local.lance"))
    assert on_spark.inserted == local.inserted == 7
    assert sorted(on_spark.written_ids) == sorted(local.written_ids)
    assert {(r.stage, Path(r.source_uri).name) for r in on_spark.rejected} == {
        ("listing", "notes.txt"),
        ("decode", "broken.jpg"),
    }
    assert on_spark.rejected == local.rejected
    assert on_spark.objects == local.objects == 8  # broken.jpg was downloaded too


def test_spark_incremental_replaces_changed_and_adds_new_in_one_commit(
    spark: Any, tmp_path: Path, local_store: ObjectStore
) -> None:
    raw, uri = tmp_path / "raw", str(tmp_path / "images.lance")
    _source(raw)
    from vlm_lake.tables import publish

    first = ingest_images(local_store, str(raw), uri, _spark_options(), spark=lambda: spark)
    publish.publish(uri, first.summary.version)
    (raw / "p03.jpg").write_bytes(photo_variant(303))  # changed
    (raw / "p50.jpg").write_bytes(photo_variant(350))  # new
    second = ingest_images(local_store, str(raw), uri, _spark_options(), spark=lambda: spark)
    assert (second.inserted, second.updated, second.unchanged) == (1, 1, 6)
    assert sorted(second.written_ids) == ["p03", "p50"]
    rows = {r["image_id"]: r for r in _rows(uri)}
    assert len(rows) == 8 and rows["p03"]["image_data"] == photo_variant(303)
    assert rows["p50"]["image_data"] == photo_variant(350)
    old = lance.dataset(uri, version=first.summary.version).to_table(columns=["image_id"])
    assert old.num_rows == 7  # the published version is still there, unchanged


def test_a_failing_task_commits_nothing(
    spark: Any, tmp_path: Path, local_store: ObjectStore
) -> None:
    raw, uri = tmp_path / "raw", str(tmp_path / "images.lance")
    _source(raw)
    (raw / "notes.txt").unlink()
    with pytest.raises(Exception, match=r"broken\.jpg") as err:
        ingest_images(local_store, str(raw), uri, _spark_options(on_bad_input="fail"), spark=spark)
    assert "InvalidImageError" in str(err.value) or isinstance(err.value, InvalidImageError)
    with pytest.raises(ValueError, match="was not found"):
        lance.dataset(uri)  # nothing committed


def test_no_valid_image_on_spark_is_an_error_with_the_rejections_saved(
    spark: Any, tmp_path: Path, local_store: ObjectStore
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jpg").write_bytes(b"nope")
    rejects = str(tmp_path / "rejected.lance")
    with pytest.raises(SourceNotFoundError, match="none of the 1 objects"):
        ingest_images(
            local_store,
            str(raw),
            str(tmp_path / "images.lance"),
            _spark_options(),
            rejects_uri=rejects,
            spark=spark,
        )
    assert lance.dataset(rejects).count_rows() == 1


def test_spark_tasks_read_from_s3_with_the_drivers_settings(
    spark: Any, tmp_path: Path, s3_store: ObjectStore, bucket: str
) -> None:
    for i in range(5):
        put(s3_store.client, bucket, f"raw/s{i}.jpg", photo_variant(i + 20))
    report = ingest_images(
        s3_store,
        f"s3://{bucket}/raw/",
        str(tmp_path / "images.lance"),
        _spark_options(),
        spark=spark,
    )
    assert report.tasks == 2 and report.inserted == 5
    assert {r["image_id"]: r["image_data"] for r in _rows(str(tmp_path / "images.lance"))} == {
        f"s{i}": photo_variant(i + 20) for i in range(5)
    }


def test_auto_uses_spark_only_from_the_threshold_and_spark_needs_a_session() -> None:
    options = ImageIngestOptions(spark_min_objects=100)
    assert not options.use_spark(None, 10_000)
    assert not options.use_spark(object(), 99) and options.use_spark(object(), 100)
    assert not ImageIngestOptions(engine="local").use_spark(object(), 10**6)
    with pytest.raises(ValueError, match=r"engine='spark' needs a Spark session"):
        ImageIngestOptions(engine="spark").use_spark(None, 1)
    with pytest.raises(ValueError, match=r"engine='ray' is not allowed; expected one of"):
        ImageIngestOptions(engine="ray")


def _report_facts(report: Any) -> tuple:
    return (
        report.inserted,
        report.updated,
        report.unchanged,
        report.deleted,
        report.missing_from_source,
        sorted(report.written_ids),
        sorted((r.stage, r.source_uri, r.image_id, r.etag) for r in report.rejected),
    )


def test_a_large_listing_is_planned_on_spark_with_the_same_result(
    spark: Any, tmp_path: Path, local_store: ObjectStore
) -> None:
    """Listing staged to Lance and diffed on Spark = the driver's dict-based plan."""
    raw = tmp_path / "raw"
    _source(raw)
    (raw / "sub").mkdir()
    (raw / "sub" / "p01.png").write_bytes(photo_variant(201, fmt="PNG"))  # duplicate stem
    from vlm_lake.tables import publish

    results = {}
    for name, options in {
        "driver": ImageIngestOptions(engine="local"),
        "spark": _spark_options(plan_on_spark_from=3, delete_missing=True),
    }.items():
        if name == "driver":
            options = ImageIngestOptions(engine="local", delete_missing=True)
        uri, rejects = str(tmp_path / f"{name}.lance"), str(tmp_path / f"{name}-rej.lance")
        raw_copy = tmp_path / f"raw-{name}"
        import shutil

        shutil.copytree(raw, raw_copy)
        first = ingest_images(
            local_store, str(raw_copy), uri, options, rejects_uri=rejects, spark=spark
        )
        publish.publish(uri, first.summary.version)
        (raw_copy / "p02.jpg").write_bytes(photo_variant(202))  # changed
        (raw_copy / "p05.jpg").unlink()  # gone
        (raw_copy / "p60.jpg").write_bytes(photo_variant(260))  # new
        second = ingest_images(
            local_store, str(raw_copy), uri, options, rejects_uri=rejects, spark=spark
        )
        results[name] = (first, second, _rows(uri))
    driver, on_spark = results["driver"], results["spark"]
    assert on_spark[0].tasks >= 1 and driver[0].tasks == 0
    for i in (0, 1):
        facts_driver = _report_facts(driver[i])
        facts_spark = _report_facts(on_spark[i])
        assert facts_spark[:6] == facts_driver[:6]
        strip = lambda facts: [(s, Path(u).name, i, e) for s, u, i, e in facts[6]]  # noqa: E731
        assert strip(facts_spark) == strip(facts_driver)
    assert [r["image_id"] for r in on_spark[2]] == [r["image_id"] for r in driver[2]]
    assert [r["image_data"] for r in on_spark[2]] == [r["image_data"] for r in driver[2]]
    second = on_spark[1]
    assert (second.inserted, second.updated, second.deleted) == (1, 1, 1)
    assert {r.stage for r in second.rejected} == {"listing", "decode", "duplicate"}
