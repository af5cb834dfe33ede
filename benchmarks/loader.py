"""The training loader: ``VLMDataset`` + ``DataLoader`` vs this machine's decode+resize limit.

Measured in one run, side by side:

* the limit: a single-core Pillow loop doing exactly the per-image work a loader must do
  (``decode_rgb`` to 224x224, then to a ``uint8`` array) over image bytes already in
  memory, in images/s, times the number of DataLoader workers (one worker per core). The
  same loop is also run in ``workers`` processes at once: if that falls well short of the
  single loop times ``workers``, the cores are not all ours (other load on the machine;
  with the kernel's autogroup scheduling a session gets its share however many processes
  it runs), the ratios to the single loop are not meaningful, and the ratios to the loops
  run at once (same share as the loader) and the CPU-time rows are the ones to read;
* ``VLMDataset`` + ``DataLoader(num_workers=workers, **VLMDataset.loader_kwargs())``:
  images/s (present images only, not the zero slots) once the workers are warm, for the
  float output and the uint8 output; the ratio to the limit is the loader's efficiency
  (target: at least 0.85);
* the same loader with the default collate (a stack into new shared memory per batch);
* CPU seconds per image of the loader (main process and workers together) vs the loop's:
  the loader's overhead, independent of what else the machine runs;
* the seed's way for reference: training JSON rows (hex strings) in memory,
  ``bytes.fromhex``, decode, ``ToTensor``, ``torch.stack`` per item, ``num_workers=0``;
* Pillow's draft mode on sources twice the target size (1000x750 photos to 224x224):
  decode with vs without draft, and how far apart the two results are.

Limit and loaders are measured in alternating rounds and the best round of each is kept, so
a burst of load from elsewhere on the machine hurts neither side more than the other.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from multiprocessing import get_context
from typing import Any

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from benchmarks.common import Context, Row, row
from benchmarks.data import write_photos
from vlm_lake.imaging.decode import decode_rgb
from vlm_lake.tables import lance_io
from vlm_lake.tables.contracts import image_columns
from vlm_lake.training.dataset import VLMDataset, to_tensor

log = logging.getLogger(__name__)

#: Output side, as in the seed.
SIZE = 224
#: Documents per batch (the seed's 8).
BATCH = 8
#: Most documents the loader reads per pass (keeps the section short at any --n).
MAX_DOCS = 2000
#: Alternating rounds of limit / float loader / uint8 loader; the best of each is kept.
ROUNDS = 5
#: Images the single-core limit loop decodes per round.
LIMIT_IMAGES = 300
#: Large photos for the draft-mode comparison (twice the generated photos' size).
DRAFT_SOURCE = (1000, 750)
DRAFT_IMAGES = 60
#: Documents the seed's loader reads (it is slow and only a reference).
SEED_DOCS = 200


def _workers() -> int:
    """DataLoader workers: one per core (2 on the 2-core benchmark machine)."""
    return max(1, os.cpu_count() or 1)


def _decode_loop(images: Sequence[bytes]) -> tuple[float, float, float]:
    """One core doing the loader's per-image work on ``images``: decode, resize, to array.

    Returns:
        ``(started, finished, cpu_seconds)``: monotonic clock at both ends (comparable
        between processes) and the CPU time the loop used.
    """
    cpu, started = time.process_time(), time.perf_counter()
    for data in images:
        np.asarray(decode_rgb(data, (SIZE, SIZE), draft_min=SIZE))
    return started, time.perf_counter(), time.process_time() - cpu


def _limit(pool: Any, images: Sequence[bytes], workers: int) -> tuple[float, float, float]:
    """The decode+resize limit, measured two ways in one go.

    Returns:
        ``(single_x_workers, parallel, cpu_per_image)``: one loop's images/s times
        ``workers``; the images/s of ``workers`` loops run at the same time in ``workers``
        processes (what the cores deliver together, under whatever else the machine runs);
        and the loops' CPU seconds per image.
    """
    started, finished, cpu = _decode_loop(images)
    single = len(images) / (finished - started)
    spans = pool.map(_decode_loop, [images] * workers, chunksize=1)
    wall = max(s[1] for s in spans) - min(s[0] for s in spans)
    cpu_per_image = (cpu + sum(s[2] for s in spans)) / (len(images) * (workers + 1))
    return single * workers, len(images) * workers / wall, cpu_per_image


def _tree_cpu() -> dict[int, float]:
    """CPU seconds so far of this process and each descendant (DataLoader workers...)."""
    me = psutil.Process()
    totals = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        totals[proc.pid] = times.user + times.system
    return totals


def _loader_pass(loader: DataLoader[Any], present: Sequence[int], warm: int) -> tuple[float, float]:
    """One epoch of ``loader``, not counting its first ``warm`` batches.

    ``present[i]`` is the number of images batch ``i`` holds (zero slots excluded).

    Returns:
        ``(images_per_s, cpu_per_image)``: the rate, and the CPU seconds per image that
        this process and its workers spent meanwhile.
    """
    started, cpu, count = 0.0, {}, 0
    for i, (_, images) in enumerate(loader):
        if i == warm - 1:
            started, cpu = time.perf_counter(), _tree_cpu()
        elif i >= warm:
            count += present[i]
        if images.shape[-3:] != (3, SIZE, SIZE):
            raise AssertionError(f"batch {i} has images of shape {tuple(images.shape)}")
    elapsed = time.perf_counter() - started
    after = _tree_cpu()
    used = sum(after[pid] - before for pid, before in cpu.items() if pid in after)
    return count / elapsed, used / count


class _SeedDataset(Dataset[tuple[str, torch.Tensor]]):
    """The seed's ``VLMDataset``: JSON rows with hex images, collected in memory."""

    def __init__(self, rows: list[str], slots: int) -> None:
        self.rows = rows
        self.slots = slots

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> tuple[str, torch.Tensor]:
        row_ = json.loads(self.rows[idx])
        images = [to_tensor(decode_rgb(bytes.fromhex(h), (SIZE, SIZE))) for h in row_["input"]]
        while len(images) < self.slots:
            images.append(torch.zeros(3, SIZE, SIZE))
        return row_["instruction"], torch.stack(images)


def _seed_rate(rows: list[str], slots: int, images: int) -> float:
    loader = DataLoader(_SeedDataset(rows, slots), batch_size=BATCH, shuffle=False)
    started = time.perf_counter()
    for _ in loader:
        pass
    return images / (time.perf_counter() - started)


def _draft_rows(ctx: Context) -> list[Row]:
    """Decode 2x-size JPEGs to 224x224 with and without draft mode (single core)."""
    folder = ctx.cache / f"draft-{DRAFT_SOURCE[0]}x{DRAFT_SOURCE[1]}"
    write_photos(folder, DRAFT_IMAGES, size=DRAFT_SOURCE)
    images = [p.read_bytes() for p in sorted(folder.glob("*.jpg"))[:DRAFT_IMAGES]]

    def rate(draft_min: int | None) -> Callable[[], float]:
        def once() -> float:
            started = time.perf_counter()
            for data in images:
                np.asarray(decode_rgb(data, (SIZE, SIZE), draft_min=draft_min))
            return len(images) / (time.perf_counter() - started)

        return once

    with_draft = max(rate(SIZE)() for _ in range(ROUNDS))
    without = max(rate(None)() for _ in range(ROUNDS))
    diffs = [
        np.abs(
            np.asarray(decode_rgb(d, (SIZE, SIZE), draft_min=SIZE), dtype=np.int16)
            - np.asarray(decode_rgb(d, (SIZE, SIZE)), dtype=np.int16)
        ).mean()
        for d in images
    ]
    source = f"{DRAFT_SOURCE[0]}x{DRAFT_SOURCE[1]} JPEG"
    return [
        row(
            f"decode {source} -> {SIZE}: draft vs full decode (1 core)",
            with_draft,
            without,
            "images/s",
        ),
        row(
            f"draft vs full decode: mean abs pixel difference ({source}, worst image)",
            float(max(diffs)),
            None,
            "levels of 255",
            higher=False,
        ),
    ]


def run(ctx: Context) -> list[Row]:
    """Loader images/s vs the decode limit, draft mode, and the seed's loader."""
    workers = _workers()
    layout = ctx.lake()
    ds = lance_io.open_dataset(layout.multimodal, {}, None)
    probe = VLMDataset(layout.multimodal, version=None)
    docs = min(ctx.n // 2, MAX_DOCS, len(probe))
    columns = image_columns(probe.num_slots)
    table = ds.take(list(range(docs)), columns=["text", *columns])
    slots = [table.column(c).to_pylist() for c in columns]
    per_doc = [sum(col[i] is not None for col in slots) for i in range(docs)]
    present = [sum(per_doc[s : s + BATCH]) for s in range(0, docs, BATCH)]
    images = [data for i in range(docs) for col in slots if (data := col[i]) is not None]
    step = max(1, len(images) // LIMIT_IMAGES)
    sample = images[::step][:LIMIT_IMAGES]
    log.info("loader: %d documents, %d images, %d workers", docs, len(images), workers)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the main process only receives batches (as the limit: 1/core)
    warm = 2 * workers
    loaders = {
        name: DataLoader(
            Subset(VLMDataset(layout.multimodal, version=None, output=output), range(docs)),
            batch_size=BATCH,
            num_workers=workers,
            **{**VLMDataset.loader_kwargs(), **extra},
        )
        for name, output, extra in (
            ("float", "float", {}),
            ("uint8", "uint8", {}),
            ("uint8, default collate", "uint8", {"collate_fn": default_collate}),
        )
    }
    pool = get_context("forkserver").Pool(workers)
    try:
        for loader in loaders.values():  # start the workers (forkserver, imports, Lance)
            next(iter(loader))
        limit = parallel = 0.0
        limit_cpu = float("inf")
        best = dict.fromkeys(loaders, (0.0, float("inf")))
        for r in range(ROUNDS):
            single_x, together, cpu = _limit(pool, sample, workers)
            limit, parallel, limit_cpu = (
                max(limit, single_x),
                max(parallel, together),
                min(limit_cpu, cpu),
            )
            for name, loader in loaders.items():
                rate, cpu = _loader_pass(loader, present, warm)
                best[name] = (max(best[name][0], rate), min(best[name][1], cpu))
            log.info("loader round %d: limit %.0f (parallel %.0f), %s", r, limit, parallel, best)
        seed_docs = min(SEED_DOCS, docs)
        texts = table.column("text").to_pylist()
        rows_json = [
            json.dumps(
                {
                    "instruction": texts[i],
                    "input": [col[i].hex() for col in slots if col[i] is not None],
                    "output": "",
                }
            )
            for i in range(seed_docs)
        ]
        seed = _seed_rate(rows_json, probe.num_slots, sum(per_doc[:seed_docs]))
    finally:
        pool.terminate()
        loaders.clear()  # persistent workers exit with their loaders' iterators
        torch.set_num_threads(threads)

    where = f"{docs} docs, batch {BATCH}, {workers} workers"
    vs = f"decode+resize limit ({workers} x 1-core Pillow loop)"
    ms = 1e3
    rows = [
        row(
            f"decode+resize limit: {workers} loops at once vs 1-core loop x {workers}",
            parallel,
            limit,
            "images/s",
        ),
        row(f"VLMDataset float32 ({where}) vs {vs}", best["float"][0], limit, "images/s"),
        row(f"VLMDataset uint8 ({where}) vs {vs}", best["uint8"][0], limit, "images/s"),
        row(
            f"VLMDataset uint8, default collate ({where}) vs {vs}",
            best["uint8, default collate"][0],
            limit,
            "images/s",
        ),
        row(
            f"VLMDataset float32 ({where}) vs {workers} loops at once",
            best["float"][0],
            parallel,
            "images/s",
        ),
        row(
            f"VLMDataset uint8 ({where}) vs {workers} loops at once",
            best["uint8"][0],
            parallel,
            "images/s",
        ),
        row(
            "CPU per image, all processes: VLMDataset float32 vs the 1-core loop",
            best["float"][1] * ms,
            limit_cpu * ms,
            "ms",
            higher=False,
        ),
        row(
            "CPU per image, all processes: VLMDataset uint8 vs the 1-core loop",
            best["uint8"][1] * ms,
            limit_cpu * ms,
            "ms",
            higher=False,
        ),
        row(
            f"VLMDataset float32 ({where}) vs the seed's loader (hex JSON, 0 workers, "
            f"{seed_docs} docs)",
            best["float"][0],
            seed,
            "images/s",
        ),
    ]
    return rows + _draft_rows(ctx) + _table_rows(ctx, docs, workers)


def _table_rows(ctx: Context, docs: int, workers: int) -> list[Row]:
    """The rows over a copy of the lake's first documents: lance.torch, and S3 vs local."""
    from benchmarks.loader_data import loader_table
    from benchmarks.loader_lance_torch import lance_torch_rows
    from benchmarks.loader_s3 import s3_rows

    table = loader_table(ctx, docs, BATCH)
    web = loader_table(ctx, docs // 2, BATCH, DRAFT_SOURCE)
    return lance_torch_rows(ctx, table, web, workers) + s3_rows(ctx, table, workers)
