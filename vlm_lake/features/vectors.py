"""Feature vectors as unit rows: the column checks and normalisation both searches share."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    import lance
    import torch


def vector_dim(ds: lance.LanceDataset, column: str) -> int:
    """Return the dimension of ``column``, a fixed-size list of floats, or raise ValueError."""
    names = ds.schema.names
    if column not in names:
        raise ValueError(f"column={column!r} is not in the dataset; allowed: {', '.join(names)}")
    kind = ds.schema.field(column).type
    if not pa.types.is_fixed_size_list(kind) or not pa.types.is_floating(kind.value_type):
        raise ValueError(
            f"column={column!r} has type {kind}; allowed: a fixed-size list of floats "
            "(e.g. fixed_size_list<float32, 2048>)"
        )
    return int(kind.list_size)


def check_key(ds: lance.LanceDataset, key: str) -> None:
    """Raise ValueError unless ``key`` is a string column of ``ds``."""
    names = ds.schema.names
    if key not in names:
        raise ValueError(f"key={key!r} is not in the dataset; allowed: {', '.join(names)}")
    kind = ds.schema.field(key).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise ValueError(f"key={key!r} has type {kind}; allowed: a string column")


def unit_rows(vectors: pa.Array, dim: int) -> tuple[torch.Tensor, np.ndarray]:
    """L2-normalise a fixed-size-list array into a float32 tensor ``[n, dim]``.

    Null vectors, vectors with a non-finite value and zero vectors come back as zero rows
    and ``False`` in the returned mask: they have no direction, so they match nothing.
    """
    import torch

    n = len(vectors)
    child = vectors.values.slice(vectors.offset * dim, n * dim)
    flat = child.to_numpy(zero_copy_only=False).astype(np.float32, copy=True)
    matrix = flat.reshape(n, dim)
    ok = np.isfinite(matrix).all(axis=1)
    if vectors.null_count:
        ok &= ~vectors.is_null().to_numpy(zero_copy_only=False)
    matrix[~ok] = 0.0
    tensor = torch.from_numpy(matrix)
    norms = torch.linalg.vector_norm(tensor, dim=1)
    ok &= (norms > 0).numpy()
    tensor = tensor / norms.clamp_min(torch.finfo(torch.float32).tiny).unsqueeze(1)
    tensor[torch.from_numpy(~ok)] = 0.0
    return tensor, ok
