"""Materialization metadata shared by the Lance assets: rows, version, URI, schema, preview."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dagster import (
    AssetCheckResult,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
)

from vlm_lake.tables import lance_io


def lance_metadata(
    summary: lance_io.DatasetSummary, preview: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Metadata for one written Lance dataset.

    Args:
        summary: What was written.
        preview: A few rows (binary values already replaced by their size).

    Returns:
        Metadata for ``MaterializeResult``: ``dagster/row_count``, ``dagster/uri``,
        ``dagster/column_schema``, ``lance/version``, ``lance/fragments`` and ``preview``.
    """
    meta: dict[str, Any] = {
        "dagster/row_count": summary.num_rows,
        "dagster/uri": summary.uri,
        "dagster/column_schema": TableSchema(
            columns=[TableColumn(name, type_) for name, type_ in summary.columns()]
        ),
        "lance/version": summary.version,
        "lance/fragments": summary.num_fragments,
    }
    if preview is not None:
        meta["preview"] = MetadataValue.md(markdown_table(preview))
    return meta


def lance_result(
    summary: lance_io.DatasetSummary,
    storage_options: dict[str, str],
    *,
    asset_key: str | None = None,
    check_results: Sequence[AssetCheckResult] = (),
    **extra: Any,
) -> MaterializeResult:
    """``MaterializeResult`` for a Lance dataset just written.

    Args:
        summary: What was written; its version is the one previewed.
        storage_options: Lance storage options to read the preview with.
        asset_key: The asset, when the step materializes several.
        check_results: Results of the checks run on this version.
        **extra: Asset-specific metadata entries.

    Returns:
        The result carrying :func:`lance_metadata` (with a preview) and ``extra``.
    """
    ds = lance_io.open_dataset(summary.uri, storage_options, summary.version)
    return MaterializeResult(
        asset_key=asset_key,
        metadata={**lance_metadata(summary, lance_io.preview_rows(ds)), **extra},
        check_results=list(check_results),
    )


def markdown_table(rows: list[dict[str, Any]], max_chars: int = 60) -> str:
    """Render rows as a Markdown table, truncating long cells."""
    if not rows:
        return "_(no rows)_"
    headers = list(rows[0])

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= max_chars else text[: max_chars - 1] + "…"

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(r.get(h)) for h in headers) + " |" for r in rows]
    return "\n".join(lines)
