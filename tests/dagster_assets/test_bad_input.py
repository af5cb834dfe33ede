"""Bad input, first pass: a clear error naming the object, previous versions stay readable."""

from __future__ import annotations

from typing import Any

import pytest
from dagster import materialize
from helpers import put, upload_seed_example

from assets import ALL_ASSETS, image_lance, text_lance
from vlm_lake import lance_io
from vlm_lake.errors import InvalidDocumentError, InvalidImageError
from vlm_lake.layout import LakeLayout


def _versions(store, bucket: str) -> dict[str, tuple[int, int]]:
    layout = LakeLayout.at(f"s3://{bucket}/lake")
    out = {}
    for name, uri in (
        ("images", layout.images),
        ("texts", layout.texts),
        ("multimodal", layout.multimodal),
    ):
        ds = lance_io.open_dataset(uri, store.storage_options(uri))
        out[name] = (ds.version, ds.count_rows())
    return out


def test_undecodable_image_fails_with_object_name(
    s3_resources: dict[str, Any], s3_store, bucket: str
) -> None:
    upload_seed_example(s3_store.client, bucket)
    assert materialize(ALL_ASSETS, resources=s3_resources).success
    before = _versions(s3_store, bucket)

    put(s3_store.client, bucket, "lanceData/broken.jpg", b"this is not a jpeg at all")
    with pytest.raises(InvalidImageError) as err:
        materialize([image_lance], resources=s3_resources)
    assert f"s3://{bucket}/lanceData/broken.jpg" in str(err.value)
    assert "not a decodable image" in str(err.value)
    assert _versions(s3_store, bucket) == before  # previous versions untouched and readable


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'[{"docid": "doc_001", "text": "ok"},\n {"docid": "doc_002", "text": ', "line 2"),
        (b'[{"docid": "doc_001", "image_id1": "image1"}]', "has no 'text'"),
        (b'[{"text": "no id here", "image_id1": "image1"}]', "has no 'docid'"),
    ],
    ids=["invalid-json", "missing-text", "missing-docid"],
)
def test_bad_documents_fail_clearly(
    s3_resources: dict[str, Any], s3_store, bucket: str, content: bytes, expected: str
) -> None:
    upload_seed_example(s3_store.client, bucket)
    assert materialize(ALL_ASSETS, resources=s3_resources).success
    before = _versions(s3_store, bucket)

    put(s3_store.client, bucket, "Lance/data/testdata.json", content)
    with pytest.raises(InvalidDocumentError) as err:
        materialize([text_lance], resources=s3_resources)
    message = str(err.value)
    assert f"s3://{bucket}/Lance/data/testdata.json" in message
    assert expected in message
    assert _versions(s3_store, bucket) == before
    texts = lance_io.open_dataset(
        LakeLayout.at(f"s3://{bucket}/lake").texts, s3_store.storage_options(f"s3://{bucket}")
    )
    assert texts.to_table().column("docid").to_pylist() == ["doc_001", "doc_002", "doc_003"]
