"""The fragment half of distributed writes: write uncommitted fragments, commit them once.

Executors call :func:`write_fragment_files` and hand the returned metadata to the driver,
which commits all of it in one Lance transaction: :func:`commit_fragments` (overwrite or
append) or :func:`replace_rows` (an ``Update`` that also deletes the rows being replaced).
:mod:`vlm_lake.spark.fragment_job` is the protocol built on these.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from vlm_lake.errors import DatasetNotFoundError
from vlm_lake.tables.lance_io import WRITE_MODES, consume, open_dataset, sql_string_list

if TYPE_CHECKING:
    import lance


def write_fragment_files(
    batches: Iterator[pa.RecordBatch],
    uri: str,
    schema: pa.Schema,
    storage_options: dict[str, str] | None = None,
    *,
    max_rows_per_file: int = 1024 * 1024,
) -> list[str]:
    """Write batches as uncommitted Lance fragments and return their metadata as JSON.

    This is the executor half of a distributed write: each task calls it, the driver then
    passes all returned strings to :func:`commit_fragments` once.
    """
    from lance.fragment import write_fragments

    fragments = consume(
        batches,
        schema,
        lambda reader: write_fragments(
            reader,
            uri,
            schema=schema,
            mode="overwrite",
            max_rows_per_file=max_rows_per_file,
            storage_options=storage_options or None,
        ),
    )
    return [json.dumps(f.to_json()) for f in fragments]


def commit_fragments(
    uri: str,
    schema: pa.Schema,
    fragments_json: Sequence[str],
    storage_options: dict[str, str] | None = None,
    *,
    mode: str = "overwrite",
) -> lance.LanceDataset:
    """Commit fragments written by :func:`write_fragment_files` as one new version.

    Args:
        uri: Dataset URI.
        schema: Arrow schema the fragments were written with.
        fragments_json: Fragment metadata strings, in the order rows should appear.
        storage_options: Lance storage options.
        mode: ``overwrite`` replaces the table; ``append`` adds to it (needs a dataset).

    Returns:
        The dataset at the new version.
    """
    import lance
    from lance.fragment import FragmentMetadata

    fragments = [FragmentMetadata.from_json(s) for s in fragments_json]
    read_version: int | None = None
    existing = None
    try:
        existing = open_dataset(uri, storage_options)
        read_version = existing.version
    except DatasetNotFoundError:
        existing = None
    if mode == "append" and existing is not None:
        operation: Any = lance.LanceOperation.Append(fragments)
    elif mode in ("overwrite", "append", "create"):
        if mode == "create" and existing is not None:
            raise ValueError(f"mode='create' but a dataset already exists at uri={uri!r}")
        operation = lance.LanceOperation.Overwrite(schema, fragments)
    else:
        raise ValueError(f"mode={mode!r} is not a write mode; allowed: {', '.join(WRITE_MODES)}")
    return lance.LanceDataset.commit(
        uri, operation, read_version=read_version, storage_options=storage_options or None
    )


def replace_rows(
    uri: str,
    storage_options: dict[str, str] | None,
    *,
    key: str,
    remove: Collection[str],
    fragments_json: Sequence[str],
) -> lance.LanceDataset:
    """Delete the rows whose ``key`` is in ``remove`` and add new fragments, in ONE commit.

    Readers see the old rows or the new ones, never a version with both missing (as a
    delete followed by an append would show between its two commits). Fragments that
    hold no removed row are left as they are.

    Args:
        uri: Dataset URI (the dataset must exist).
        storage_options: Lance storage options.
        key: String column identifying rows.
        remove: Keys whose rows are deleted.
        fragments_json: New fragments from :func:`write_fragment_files`.

    Returns:
        The dataset at the new version (unchanged when there is nothing to do).
    """
    import lance
    from lance.fragment import FragmentMetadata

    ds = open_dataset(uri, storage_options)
    new_fragments = [FragmentMetadata.from_json(s) for s in fragments_json]
    removed_ids: list[int] = []
    updated: list[Any] = []
    if remove:
        predicate = f"{key} IN ({sql_string_list(sorted(remove))})"
        # Which fragments hold a removed row: one scan of the key column. (Lance 14's
        # LanceFragment.count_rows(filter) never returns on S3, so it is not used.)
        hits = ds.to_table(columns=[key], filter=predicate, with_row_address=True)
        touched = {a >> 32 for a in hits.column("_rowaddr").to_pylist()}
        for fragment in ds.get_fragments():
            if fragment.fragment_id not in touched:
                continue
            kept = fragment.delete(predicate)
            if kept is None:
                removed_ids.append(fragment.fragment_id)
            else:
                updated.append(kept)
    if not (removed_ids or updated or new_fragments):
        return ds
    operation = lance.LanceOperation.Update(
        removed_fragment_ids=removed_ids, updated_fragments=updated, new_fragments=new_fragments
    )
    return lance.LanceDataset.commit(
        uri, operation, read_version=ds.version, storage_options=storage_options or None
    )


def commit_job(
    uri: str,
    schema: pa.Schema,
    storage_options: dict[str, str] | None,
    fragments_json: Sequence[str],
    *,
    key: str,
    remove: Collection[str] | None,
) -> lance.LanceDataset:
    """The one commit of a fragment job: a rebuild or an incremental update.

    Args:
        uri: Dataset URI.
        schema: The fragments' schema.
        storage_options: Lance storage options.
        fragments_json: The job's fragments.
        key: String column identifying rows.
        remove: None for a rebuild (the fragments overwrite the table); else the keys whose
            rows the fragments replace or that are deleted (see :func:`replace_rows`).

    Returns:
        The dataset at the new version (unchanged when an update has nothing to do).
    """
    if remove is None:
        return commit_fragments(uri, schema, fragments_json, storage_options, mode="overwrite")
    return replace_rows(uri, storage_options, key=key, remove=remove, fragments_json=fragments_json)
