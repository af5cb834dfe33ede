"""The real image ingest, from S3 to a Lance dataset on S3, through injected faults."""

from __future__ import annotations

import re

from fault_helpers import DELAY_S
from helpers import photo_variant, put, sample_image_bytes, sha256
from s3_faults import FaultProxy

from vlm_lake.ingest.images import ImageIngestOptions, ingest_images
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import lance_io


def test_image_ingest_through_faults_keeps_every_image_exact(
    faulty_s3: FaultProxy, proxy_store: ObjectStore, s3_store: ObjectStore, bucket: str
) -> None:
    images = {f"raw/img{i:02d}.jpg": photo_variant(40 + i) for i in range(10)}
    images["raw/photo.png"] = sample_image_bytes("image4.png")
    for key, data in images.items():
        put(s3_store.client, bucket, key, data)
    faulted = sorted(images)[::2]  # every other object
    kinds = ["slowdown", "internal", "delay", "drop", "truncate", "slowdown"]
    rules = [
        faulty_s3.add_fault(
            kind, method="GET", path=f"^/{bucket}/{re.escape(key)}$", times=1, delay_s=DELAY_S
        )
        for kind, key in zip(kinds, faulted, strict=True)
    ]
    rules.append(faulty_s3.add_fault("slowdown", method="GET", query="list-type=2", times=1))
    rules.append(faulty_s3.add_fault("internal", method="PUT", path=r"/images\.lance/data/"))
    rules.append(faulty_s3.add_fault("internal", method="PUT", path=r"/images\.lance/_versions/"))
    dataset_uri = f"s3://{bucket}/lake/images.lance"

    ingest_images(proxy_store, f"s3://{bucket}/raw/", dataset_uri, ImageIngestOptions(workers=4))

    assert [r.hits for r in rules] == [1] * len(rules), faulty_s3.lines()
    ds = lance_io.open_dataset(dataset_uri, s3_store.storage_options(dataset_uri))
    rows = ds.to_table(columns=["image_id", "image_data", "sha256", "source_uri"]).to_pylist()
    assert sorted(r["image_id"] for r in rows) == sorted(
        key.removeprefix("raw/").rsplit(".", 1)[0] for key in images
    )
    for row in rows:
        key = row["source_uri"].removeprefix(f"s3://{bucket}/")
        assert row["image_data"] == images[key]
        assert row["sha256"] == sha256(images[key])
    for key in faulted:  # each faulted object was fetched again and served whole
        gets = [r for r in faulty_s3.requests if r.method == "GET" and r.path == f"/{bucket}/{key}"]
        assert gets[0].fault is not None
        assert (gets[-1].fault, gets[-1].status) == (None, 200)
