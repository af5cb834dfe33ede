"""What a reader read, precisely enough to read it again: table URI, version, rows, digest.

A :class:`TableRead` names one Lance table at one version. Its ``digest`` is the sha256 of
that version's schema and fragment metadata (data file paths and deletion files, which
Lance never rewrites in place): it costs one manifest read, no data, and two versions
with the same digest hold the same rows in the same order. :func:`open_read` opens the
version again and refuses one whose rows or digest differ (a version cleaned up and
rewritten, or another table at that URI). ``VLMDataset.manifest()`` / ``from_manifest``
and the training exports' manifests use it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from vlm_lake.tables import publish

#: Identifies the layout of a reader's manifest.
READ_MANIFEST_FORMAT = "vlm-lake/read-manifest/1"


@dataclass(frozen=True)
class TableRead:
    """One table at one version, as a reader saw it.

    Attributes:
        uri: The dataset URI.
        version: The Lance version read.
        tag: The tag it was opened by (``published``), or None for a number.
        rows: Rows in that version.
        digest: sha256 of the version's schema and fragment metadata.
    """

    uri: str
    version: int
    tag: str | None
    rows: int
    digest: str

    def to_dict(self) -> dict[str, Any]:
        """The manifest entry."""
        return asdict(self)


def version_digest(ds: Any) -> str:
    """sha256 of a dataset version's schema and its fragments' metadata (no data read)."""
    fragments = [f.metadata.to_json() for f in ds.get_fragments()]
    payload = json.dumps(
        {"schema": ds.schema.to_string(), "fragments": fragments}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def table_read(ds: Any, uri: str, tag: str | None) -> TableRead:
    """Describe ``ds`` (an open, pinned version of ``uri``) for a manifest."""
    return TableRead(uri, int(ds.version), tag, int(ds.count_rows()), version_digest(ds))


def open_read(read: TableRead | dict[str, Any], storage: dict[str, str] | None) -> Any:
    """Open exactly the version a :class:`TableRead` describes.

    Raises:
        ValueError: The version's rows or digest differ from the manifest's.
    """
    read = read if isinstance(read, TableRead) else TableRead(**read)
    ds = publish.open_version(read.uri, storage, read.version)
    now = table_read(ds, read.uri, read.tag)
    if (now.rows, now.digest) != (read.rows, read.digest):
        raise ValueError(
            f"{read.uri!r} version {read.version} is not the one the manifest recorded: "
            f"{now.rows} rows with digest {now.digest[:16]}, expected {read.rows} rows with "
            f"digest {read.digest[:16]} (was the version cleaned up and written again?)"
        )
    return ds
