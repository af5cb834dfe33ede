"""Compute the sample images' features without Spark, in a fresh process, and save them.

Run as ``python reference_features.py LAKE THREADS OUT.npz``: reads ``LAKE/images.lance``,
runs the seed-0 ResNet-50 at the given precision on one batch of all images (in the order
of ``images.lance``, as the one Spark task of the sample run does) with ``THREADS`` torch
threads, and writes ``image_id -> features`` to ``OUT.npz``. A fresh process keeps the
reference free of whatever torch settings earlier tests left in the pytest process.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(lake: Path, threads: int, precision: str, out: Path) -> None:
    """Compute and save the reference features."""
    import torch

    torch.set_num_threads(threads)

    import lance
    import numpy as np

    from vlm_lake.features.model import FeatureModel, ModelWeights, load_state_dict
    from vlm_lake.imaging.transforms import imagenet_uint8

    weights = ModelWeights.random(0)
    model = FeatureModel(load_state_dict(weights.payload(), weights.identity), "cpu", precision)
    images = lance.dataset(str(lake / "images.lance")).to_table(columns=["image_id", "image_data"])
    batch = torch.stack([imagenet_uint8(d) for d in images.column("image_data").to_pylist()])
    features = model(batch)
    np.savez(out, **dict(zip(images.column("image_id").to_pylist(), features, strict=True)))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
