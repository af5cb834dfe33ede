"""The image ingest's plan as a Spark join, for listings too large for a driver-side dict.

The listing is streamed page by page into a staging Lance dataset (constant driver
memory), then Spark applies the rules of :func:`~vlm_lake.ingest.image_plan.plan_image_ingest`:

* a name without an image extension is rejected (``listing``);
* objects sharing a file stem: the one already published under that id is kept, else the
  first in key order; the others are rejected (``duplicate``);
* a kept object whose (URI, ETag) equals the published row's is unchanged;
* one that was rejected at ``decode`` before with the same ETag stays rejected;
* every other kept object is downloaded; published ids absent from the listing are missing.

Only the rejections (bad input, few), the counts, and the ids that the downloads replace
or that went missing come back to the driver; the objects to download stay a DataFrame
that the download job (:mod:`vlm_lake.ingest.image_tasks`) consumes directly.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from vlm_lake.imaging.decode import IMAGE_SUFFIXES
from vlm_lake.ingest.quarantine import RejectedImage
from vlm_lake.store.object_info import ObjectInfo
from vlm_lake.tables import lance_io

log = logging.getLogger(__name__)

#: A staged listing's rows.
LISTING_SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string()),
        pa.field("key", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("etag", pa.string()),
    ]
)
_BATCH = 10_000


def stage_listing(infos: Iterable[ObjectInfo], uri: str, storage: dict[str, str] | None) -> int:
    """Write a listing to a Lance dataset at ``uri`` (overwritten), 10,000 rows a batch.

    Returns:
        The number of objects staged.
    """
    count = 0

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal count
        it = iter(infos)
        while chunk := list(itertools.islice(it, _BATCH)):
            count += len(chunk)
            yield pa.RecordBatch.from_pydict(
                {
                    "uri": [i.uri for i in chunk],
                    "key": [i.key for i in chunk],
                    "size": [i.size for i in chunk],
                    "etag": [i.etag for i in chunk],
                },
                schema=LISTING_SCHEMA,
            )

    lance_io.write_batches(batches(), uri, LISTING_SCHEMA, storage, mode="overwrite")
    return count


@dataclass(frozen=True)
class SparkPlan:
    """The plan, with the downloads still a DataFrame.

    Attributes:
        to_fetch: DataFrame of ``uri, key, size, etag`` to download.
        downloads: Its row count.
        rejected: Listing and duplicate rejections, and carried-over decode rejections.
        unchanged: Kept objects already published with the same URI and ETag.
        replaced: Published ids whose object is downloaded again (changed).
        missing: Published ids with no object in the listing.
        listed: Objects listed.
    """

    to_fetch: Any
    downloads: int
    rejected: list[RejectedImage]
    unchanged: int
    replaced: set[str]
    missing: list[str]
    listed: int
    cached: tuple[Any, ...] = ()

    def release(self) -> None:
        """Drop the plan's cached DataFrames from the executors (after the download job)."""
        for frame in self.cached:
            frame.unpersist()


def plan_on_spark(
    spark: Any,
    *,
    listing_uri: str,
    listing_storage: dict[str, str] | None,
    published_uri: str | None,
    published_storage: dict[str, str] | None,
    published_version: int | None,
    previous_rejects: list[RejectedImage],
) -> SparkPlan:
    """Plan the ingest of a staged listing against the published ``images.lance`` on Spark."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from vlm_lake.spark.lance_source import read_lance

    listing = read_lance(spark, listing_uri, storage_options=listing_storage)
    name = F.regexp_extract("key", r"([^/]*)$", 1)
    suffix = F.lower(F.regexp_extract(name, r"(\.[^.]*)$", 1))
    stem = F.regexp_replace(name, r"\.[^.]*$", "")
    listing = listing.withColumn("image_id", stem).withColumn("ok", suffix.isin(*IMAGE_SUFFIXES))
    if published_uri is not None:
        published = read_lance(
            spark,
            published_uri,
            storage_options=published_storage,
            columns=["image_id", "source_uri", "source_etag"],
            version=published_version,
        )
    else:
        published = spark.createDataFrame(
            [], "image_id string, source_uri string, source_etag string"
        )
    good = listing.where("ok").join(published, "image_id", "left")
    rank = F.row_number().over(
        Window.partitionBy("image_id").orderBy(
            F.coalesce(F.col("uri") == F.col("source_uri"), F.lit(False)).desc(), "key"
        )
    )
    ranked = good.withColumn("rank", rank).cache()
    winners = ranked.where("rank = 1")
    bad = spark.createDataFrame(
        [(r.source_uri, r.etag, r.reason) for r in previous_rejects if r.stage == "decode"]
        or [("", "", "")],
        "bad_uri string, bad_etag string, bad_reason string",
    )
    flagged = (
        winners.join(bad, (winners.uri == bad.bad_uri) & (winners.etag == bad.bad_etag), "left")
        .withColumn(
            "state",
            F.when(
                (F.col("uri") == F.col("source_uri")) & (F.col("etag") == F.col("source_etag")),
                "same",
            )
            .when(F.col("bad_reason").isNotNull(), "known_bad")
            .otherwise("fetch"),
        )
        .cache()
    )
    counts = {r["state"]: r["count"] for r in flagged.groupBy("state").count().collect()}
    rejected = _rejections(listing, ranked, flagged)
    replaced = {
        r.image_id
        for r in flagged.where("state = 'fetch' AND source_uri IS NOT NULL")
        .select("image_id")
        .collect()
    }
    missing = sorted(
        r.image_id
        for r in published.join(
            listing.where("ok").select("image_id").distinct(), "image_id", "left_anti"
        ).collect()
    )
    to_fetch = flagged.where("state = 'fetch'").select("uri", "key", "size", "etag")
    return SparkPlan(
        to_fetch,
        int(counts.get("fetch", 0)),
        rejected,
        int(counts.get("same", 0)),
        replaced,
        missing,
        int(listing.count()),
        (ranked, flagged),
    )


def _rejections(listing: Any, ranked: Any, flagged: Any) -> list[RejectedImage]:
    """The plan's rejections, collected (bad input is few by nature)."""
    from pyspark.sql import functions as F

    suffixes = ", ".join(IMAGE_SUFFIXES)
    out = [
        RejectedImage(
            r.uri,
            r.image_id,
            r.etag,
            int(r.size),
            "listing",
            f"the name does not end in an image extension; expected one of {suffixes} (any case)",
        )
        for r in listing.where("NOT ok").collect()
    ]
    kept = ranked.where("rank = 1").select("image_id", F.col("uri").alias("kept_uri"))
    for r in ranked.where("rank > 1").join(kept, "image_id").collect():
        out.append(
            RejectedImage(
                r.uri,
                r.image_id,
                r.etag,
                int(r.size),
                "duplicate",
                f"image_id {r.image_id!r} of {r.uri!r} is also the file stem of {r.kept_uri!r}, "
                "which was kept; image ids are file stems and must be unique across folders "
                "(rename one of the files)",
            )
        )
    for r in flagged.where("state = 'known_bad'").collect():
        out.append(RejectedImage(r.uri, r.image_id, r.etag, int(r.size), "decode", r.bad_reason))
    return sorted(out, key=lambda r: r.source_uri)
