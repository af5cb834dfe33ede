"""List a large S3 prefix in parallel: one LIST stream per common prefix, bounded.

A single ``ListObjectsV2`` stream returns 1,000 keys per call, one call after the other:
10 million keys are 10,000 sequential round trips. :func:`list_parallel` first lists the
prefix with ``Delimiter="/"`` to find its sub-prefixes (the "folders" under it), then
lists each sub-prefix in its own stream on a thread pool of ``workers`` threads, so at most
``workers`` LIST calls are in flight. Pages are handed over through a bounded queue, so
memory holds at most ``2 x workers`` pages whatever the size of the prefix. Keys come out
in no particular order (the Spark plan does not need one). Local folders and single
objects are listed as :meth:`ObjectStore.list` lists them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from vlm_lake.store import uris
from vlm_lake.store.errors import botocore_errors, raise_store_error, store_error
from vlm_lake.store.object_info import ObjectInfo
from vlm_lake.store.object_store import ObjectStore, page_objects

_DONE = object()


def list_parallel(store: ObjectStore, uri: str, *, workers: int = 8) -> Iterator[ObjectInfo]:
    """Yield every object under ``uri``, listing its sub-prefixes in parallel.

    Args:
        store: The object store (its boto3 client is shared by the threads).
        uri: A prefix (``s3://bucket/prefix/``), or anything :meth:`ObjectStore.list` takes.
        workers: LIST streams at once (>= 1).

    Raises:
        ObjectStoreError: A LIST call failed after retries (names the prefix).
        ValueError: ``workers`` < 1.
    """
    if workers < 1:
        raise ValueError(f"workers={workers!r} must be at least 1")
    uri = uris.normalize(uri)
    bucket, key = uris.split_bucket_key(uri) if uris.is_remote(uri) else ("", "")
    if not uris.is_remote(uri) or (key and not key.endswith("/") and store.exists(uri)):
        yield from store.list(uri)
        return
    prefix = key if not key or key.endswith("/") else key + "/"
    paginator = store.client.get_paginator("list_objects_v2")
    subprefixes: list[str] = []
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            yield from page_objects(bucket, page.get("Contents", []))
            subprefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    except botocore_errors() as exc:
        raise_store_error(store_error("ListObjectsV2", uri, exc), exc)
    yield from _streams(store, bucket, subprefixes, workers)


def _streams(
    store: ObjectStore, bucket: str, prefixes: list[str], workers: int
) -> Iterator[ObjectInfo]:
    """The objects of every prefix, each listed by its own stream, ``workers`` at once."""
    if not prefixes:
        return
    pages: queue.Queue[Any] = queue.Queue(maxsize=2 * workers)
    stop = threading.Event()

    def put(item: Any) -> None:
        while not stop.is_set():
            try:
                pages.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def stream(prefix: str) -> None:
        paginator = store.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                if stop.is_set():
                    return
                put(page_objects(bucket, page.get("Contents", [])))
        except botocore_errors() as exc:
            put(store_error("ListObjectsV2", f"s3://{bucket}/{prefix}", exc))
            return
        put(_DONE)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vlm-lake-list") as pool:
        for prefix in prefixes:
            pool.submit(stream, prefix)
        try:
            done = 0
            while done < len(prefixes):
                item = pages.get()
                if item is _DONE:
                    done += 1
                elif isinstance(item, Exception):
                    raise item
                else:
                    yield from item
        finally:
            stop.set()
