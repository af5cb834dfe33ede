"""``python -m benchmarks``: every comparison of issue 5 in one process run.

Usage (from the repository root, after ``make dev``)::

    python -m benchmarks                      # N=20000 photos, 10000 documents
    python -m benchmarks --n 2000 --out bench.json
    python -m benchmarks --only access,loader

Sections (each measures ours against the alternative in the same run):

* ``access``: random rows and id lookups from ``image_lance`` vs Parquet and plain files;
* ``layout``: the Lance layout choices (encoding, compression, rows per fragment, scalar
  indices, compaction), each measured;
* ``join``: our id-only join vs the seed's three joins that carry image bytes;
* ``loader``: ``VLMDataset`` + ``DataLoader`` vs the machine's decode+resize limit;
* ``curation``: the image ingest with the quality signals vs without;
* ``ingest``: S3 (moto server on 127.0.0.1) into ``image_lance`` vs parallel boto3;
* ``growth``: a full materialization at N/20, N/2 and 5N/2 images: time and peak memory;
* ``scale`` (only with ``--only scale``): the sensor tick and the ingest plan as the lake
  grows (:mod:`benchmarks.scale`).

Generated data is cached under ``--cache`` (default ``~/.cache/vlm-lake-bench``); the
run's scratch files go to a temporary folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Context, Row, markdown

SECTIONS = ("access", "layout", "join", "loader", "ingest", "curation", "growth", "scale")
#: What runs without --only (``scale`` is run on its own: --only scale).
DEFAULT_SECTIONS = SECTIONS[:-1]
log = logging.getLogger("benchmarks")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=20000, help="photos (20000); documents: n/2")
    parser.add_argument("--out", default=None, help="write the rows as JSON to this file")
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_SECTIONS),
        help=f"comma-separated sections of {SECTIONS} (default: all but scale)",
    )
    parser.add_argument(
        "--cache",
        default=os.environ.get("VLM_LAKE_BENCH_CACHE", str(Path.home() / ".cache/vlm-lake-bench")),
        help="where generated data is kept between runs",
    )
    parser.add_argument("--master", default="local[*]", help="Spark master (local[*])")
    args = parser.parse_args(argv)
    if args.n < 100:
        parser.error(f"--n {args.n}: need at least 100 photos")
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        parser.error(f"--only {args.only!r}: unknown sections {unknown}; allowed: {SECTIONS}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    work = Path(tempfile.mkdtemp(prefix="vlm-lake-bench-"))
    ctx = Context(n=args.n, cache=Path(args.cache), work=work, master=args.master)
    rows: list[Row] = []
    started = time.perf_counter()
    try:
        for name in only:
            module = importlib.import_module(f"benchmarks.{name}")
            log.info("section %s: starting", name)
            section_started = time.perf_counter()
            section_rows = module.run(ctx)
            log.info(
                "section %s: done in %.0f s\n%s",
                name,
                time.perf_counter() - section_started,
                markdown(section_rows),
            )
            rows += section_rows
            if args.out:  # written after every section: a late failure keeps the rest
                Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    finally:
        ctx.stop_spark()
        shutil.rmtree(work, ignore_errors=True)
    log.info("all sections done in %.0f s", time.perf_counter() - started)
    sys.stdout.write(markdown(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
