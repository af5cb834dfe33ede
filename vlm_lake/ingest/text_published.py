"""What the published ``texts.lance`` holds, as the text ingest needs it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import cached_property

import pyarrow as pa

from vlm_lake.tables import lance_io, publish
from vlm_lake.tables.contracts import image_id_columns, text_schema

log = logging.getLogger(__name__)


class Published:
    """The published version, its K, and (read on first use) its hashes and sources.

    The local path reads ``docid -> record_sha256`` and ``docid -> source_uri`` into
    dicts; the Spark path reads the same columns as a DataFrame and never builds them.
    """

    def __init__(self, uri: str, storage: dict[str, str], version: int, num_slots: int) -> None:
        self.uri, self.storage, self.version, self.num_slots = uri, storage, version, num_slots

    @cached_property
    def hashes(self) -> dict[str, str]:
        """``docid -> record_sha256``."""
        ds = lance_io.open_dataset(self.uri, self.storage, self.version)
        return lance_io.column_map(ds, "docid", "record_sha256")

    @cached_property
    def sources(self) -> dict[str, str]:
        """``docid -> source_uri``."""
        ds = lance_io.open_dataset(self.uri, self.storage, self.version)
        return lance_io.column_map(ds, "docid", "source_uri")


def published_texts(
    dataset_uri: str, storage: dict[str, str], full_rebuild: bool
) -> tuple[int | None, Published | None]:
    """The published version to merge into and what it holds.

    ``(version, None)`` or ``(None, None)`` mean a full rebuild: nothing published, a
    rebuild was asked for, or the published schema is older than this code's.
    """
    base = None if full_rebuild else publish.discard_unpublished(dataset_uri, storage)
    if base is None:
        return None, None
    ds = lance_io.open_dataset(dataset_uri, storage, base)
    num_slots = len(image_id_columns(ds.schema))
    if not ds.schema.equals(text_schema(num_slots)):
        log.warning(
            "%s version %d has a different schema than this code writes; rebuilding it",
            dataset_uri,
            base,
        )
        return base, None
    return base, Published(dataset_uri, storage, base, num_slots)


def carry_rows(
    dataset_uri: str, storage: dict[str, str], version: int, docids: list[str], num_slots: int
) -> Iterator[pa.RecordBatch]:
    """Rows of ``docids`` from one version, widened to ``num_slots`` image columns."""
    ds = lance_io.open_dataset(dataset_uri, storage, version)
    schema = text_schema(num_slots)
    for start in range(0, len(docids), 1024):
        chunk = docids[start : start + 1024]
        table = ds.to_table(filter=f"docid IN ({lance_io.sql_string_list(chunk)})")
        columns = [
            table.column(f.name) if f.name in table.schema.names else pa.nulls(len(table), f.type)
            for f in schema
        ]
        yield from pa.Table.from_arrays(columns, schema=schema).to_batches()
