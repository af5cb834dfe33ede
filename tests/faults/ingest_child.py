"""Run one image ingest in its own process (the kill test SIGKILLs it mid-write).

Usage: ``python ingest_child.py ENDPOINT IMAGES_URI DATASET_URI``; credentials come from
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` in the environment, never the command
line. Prints ``ingest done`` when the ingest returns.
"""

from __future__ import annotations

import os
import sys

from vlm_lake.ingest.images import ImageIngestOptions, ingest_images
from vlm_lake.store.object_store import ObjectStore, StoreSettings


def main(endpoint: str, images_uri: str, dataset_uri: str) -> None:
    """Ingest ``images_uri`` into ``dataset_uri`` through the S3 endpoint given."""
    settings = StoreSettings(
        endpoint_url=endpoint,
        region=os.environ.get("AWS_REGION", "us-east-1"),
        access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        max_attempts=3,
        read_timeout=60.0,  # longer than the test waits: the kill, not a timeout, ends it
    )
    ingest_images(ObjectStore(settings), images_uri, dataset_uri, ImageIngestOptions(workers=2))
    print("ingest done", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
