"""``fragments.replace_rows``: delete by key and add fragments in a single Lance commit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lance
import pyarrow as pa
import pytest

from vlm_lake.tables import fragments

SCHEMA = pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.int64())])


def _table(keys: list[str], value: int) -> pa.Table:
    return pa.Table.from_pylist([{"key": k, "value": value} for k in keys], schema=SCHEMA)


@pytest.fixture(params=["local", "s3"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, str] | None]:
    """A dataset URI and its storage options, on local disk and on the S3 test server."""
    if request.param == "local":
        return str(tmp_path / "t.lance"), None
    store: Any = request.getfixturevalue("s3_store")
    bucket = request.getfixturevalue("bucket")
    uri = f"s3://{bucket}/t.lance"
    return uri, store.storage_options(uri)


def test_delete_and_add_are_one_version_and_untouched_fragments_stay(
    where: tuple[str, dict[str, str] | None],
) -> None:
    uri, storage = where
    rows = _table([f"k{i}" for i in range(9)], 0)
    lance.write_dataset(rows, uri, max_rows_per_file=3, storage_options=storage)
    before = lance.dataset(uri, storage_options=storage)
    assert len(before.get_fragments()) == 3
    untouched = before.get_fragment(2).metadata
    new = fragments.write_fragment_files(
        iter(_table(["k1", "k3", "k4", "k5", "new"], 1).to_batches()), uri, SCHEMA, storage
    )
    # k1: part of fragment 0; k3, k4, k5: all of fragment 1; unknown keys are ignored
    after = fragments.replace_rows(
        uri, storage, key="key", remove={"k1", "k3", "k4", "k5", "gone"}, fragments_json=new
    )
    assert after.version == before.version + 1
    rows = {r["key"]: r["value"] for r in after.to_table().to_pylist()}
    assert rows == {
        "k0": 0, "k2": 0, "k6": 0, "k7": 0, "k8": 0,
        "k1": 1, "k3": 1, "k4": 1, "k5": 1, "new": 1,
    }  # fmt: skip
    ids = {f.fragment_id for f in after.get_fragments()}
    assert 1 not in ids  # emptied fragment removed outright
    assert after.get_fragment(2).metadata.data_files() == untouched.data_files()
    assert after.get_fragment(2).metadata.deletion_file == untouched.deletion_file
    # the previous version is intact
    assert lance.dataset(uri, version=before.version, storage_options=storage).count_rows() == 9


def test_nothing_to_do_writes_nothing(tmp_path: Path) -> None:
    uri = str(tmp_path / "t.lance")
    version = lance.write_dataset(_table(["a", "b"], 0), uri).version
    same = fragments.replace_rows(uri, None, key="key", remove=set(), fragments_json=[])
    assert same.version == version
    also = fragments.replace_rows(uri, None, key="key", remove={"zzz"}, fragments_json=[])
    assert also.version == version


def test_keys_with_quotes_are_matched_exactly(tmp_path: Path) -> None:
    uri = str(tmp_path / "t.lance")
    lance.write_dataset(_table(["it's", "plain", "it"], 0), uri)
    after = fragments.replace_rows(uri, None, key="key", remove={"it's"}, fragments_json=[])
    assert sorted(after.to_table().column("key").to_pylist()) == ["it", "plain"]
