"""``loader: VLMDataset vs lance.torch LanceDataset``: pylance's own torch dataset.

Both read the same table (:mod:`benchmarks.loader_data`) in row order, in batches of
:data:`~benchmarks.loader.BATCH` documents, with as many DataLoader workers started by
``forkserver``, and make ``[B, K, 3, 224, 224]`` batches:

* ours: ``VLMDataset(output=...)`` + ``DataLoader(**VLMDataset.loader_kwargs())``;
* theirs: ``lance.torch.data.LanceDataset(batch_size=8, columns=[text, image1..K],
  shard_granularity="batch", to_tensor_fn=...)`` with each worker given its share of the
  batches (rank = worker id, world size = workers, set in ``worker_init_fn``),
  ``DataLoader(batch_size=None)``. LanceDataset does not decode images: its
  ``to_tensor_fn`` does, in the worker.

Three rows: the lake's 500x375 photos with *our* decode in their ``to_tensor_fn`` (same
pixels, asserted; float32 and uint8 output), which isolates the loader machinery; and
1000x750 photos, float32 (both datasets' default), with the decode a user writes for
LanceDataset (Pillow ``open``, ``convert("RGB")``, bilinear ``resize``), against
``VLMDataset`` as shipped (draft decoding). Rounds alternate and the best of each is kept.
Ratio: images/s ours / theirs (target: at least 1.2).
"""

from __future__ import annotations

import functools
import io
import logging
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, get_worker_info

from benchmarks.common import Context, Row, row
from benchmarks.loader_data import LoaderTable
from vlm_lake.imaging.decode import decode_rgb
from vlm_lake.training.dataset import VLMDataset

log = logging.getLogger("benchmarks.loader")

ROUNDS = 3
OUTPUTS = ("float", "uint8")


def _our_decode(data: bytes, size: int) -> Any:
    return decode_rgb(data, (size, size), draft_min=size)


def _user_decode(data: bytes, size: int) -> Any:
    """What a LanceDataset user writes: open, convert, resize (bilinear, as the seed)."""
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)


def _to_tensors(
    batch: Any, columns: list[str], size: int, output: str, decode: Any, **_: Any
) -> tuple[list[str], Any]:
    """``to_tensor_fn`` for LanceDataset: texts and the decoded images (uint8 or float)."""
    texts = batch.column("text").to_pylist()
    slots = [batch.column(c).to_pylist() for c in columns]
    out = torch.zeros(len(texts), len(columns), 3, size, size, dtype=torch.uint8)
    for s, col in enumerate(slots):
        for r, data in enumerate(col):
            if data is not None:
                pixels = np.array(decode(data, size), dtype=np.uint8)
                out[r, s] = torch.from_numpy(pixels).permute(2, 0, 1)
    return texts, out if output == "uint8" else out.float().div_(255.0)


def _shard_by_worker(_: int) -> None:
    """Give each DataLoader worker its own share of LanceDataset's batches."""
    info = get_worker_info()
    info.dataset.rank, info.dataset.world_size = info.id, info.num_workers


def _pair(uri: str, workers: int, output: str, decode: Any) -> list[DataLoader[Any]]:
    """Our loader and lance.torch's over ``uri``, making ``output`` batches."""
    from lance.torch.data import LanceDataset

    from benchmarks.loader import BATCH, SIZE

    ours = VLMDataset(uri, version=None, output=output)
    columns = ours.columns[2:]
    to_tensor = functools.partial(
        _to_tensors, columns=columns, size=SIZE, output=output, decode=decode
    )
    theirs = LanceDataset(
        uri,
        batch_size=BATCH,
        columns=["text", *columns],
        shard_granularity="batch",
        to_tensor_fn=to_tensor,
    )
    return [
        DataLoader(ours, batch_size=BATCH, num_workers=workers, **VLMDataset.loader_kwargs()),
        DataLoader(
            theirs,
            batch_size=None,
            num_workers=workers,
            multiprocessing_context="forkserver",
            persistent_workers=True,
            worker_init_fn=_shard_by_worker,
        ),
    ]


def _race(pairs: dict[str, list[DataLoader[Any]]], present: list[int], workers: int) -> dict:
    """Best images/s of each loader over alternating rounds."""
    from benchmarks.loader import _loader_pass

    best = {name: [0.0, 0.0] for name in pairs}
    for r in range(ROUNDS):
        for name, loaders in pairs.items():
            for side, loader in enumerate(loaders):
                rate = _loader_pass(loader, present, 2 * workers)[0]
                best[name][side] = max(best[name][side], rate)
        log.info("loader vs lance.torch round %d: %s", r, best)
    return best


def lance_torch_rows(ctx: Context, table: LoaderTable, web: LoaderTable, workers: int) -> list[Row]:
    """images/s of VLMDataset and of lance.torch's LanceDataset (see the module doc)."""
    same = {output: _pair(table.uri, workers, output, _our_decode) for output in OUTPUTS}
    for output, (ours, theirs) in same.items():  # same pixels, same order
        if not torch.equal(next(iter(ours))[1], next(iter(theirs))[1]):
            raise AssertionError(f"VLMDataset and LanceDataset differ ({output} output)")
    best = _race(same, table.present, workers)
    user = {"float": _pair(web.uri, workers, "float", _user_decode)}
    best_web = _race(user, web.present, workers)
    same.clear()
    user.clear()
    where = f"{workers} workers, documents in row order"
    return [
        row(
            "loader: VLMDataset vs lance.torch LanceDataset, 1000x750 photos, float32, "
            "theirs with a user's Pillow decode",
            *best_web["float"],
            f"images/s, {where}, {web.docs} documents",
        ),
        *(
            row(
                f"loader: VLMDataset vs lance.torch LanceDataset, same decode, {output} output",
                *best[output],
                f"images/s, {where}, {table.docs} documents of 500x375 photos",
            )
            for output in OUTPUTS
        ),
    ]
