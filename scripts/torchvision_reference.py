"""Regenerate the torchvision reference data the ResNet-50 tests compare against.

The project does not depend on torchvision (there is no CPU build to install), so the
reference comes from torchvision's own code, run once by hand and committed:

    pip download torchvision==0.28.0 --no-deps -d /tmp/tv
    mkdir -p /tmp/tvpkg && python -m zipfile -e /tmp/tv/torchvision-0.28.0-*.whl /tmp/tvpkg
    PYTHONPATH=/tmp/tvpkg python scripts/torchvision_reference.py

The CUDA wheel's compiled ops do not load next to the CPU build of torch; the models and
transforms are pure Python, so the module that registers the compiled ops is skipped.

Writes ``tests/data/torchvision_resnet50.json`` (torchvision's ``resnet50()`` state_dict
keys and shapes, parameter count) and ``tests/data/torchvision_resnet50_features.npz``
(2048-d features of the shipped sample images through torchvision's transforms and
``resnet50()`` initialised under ``torch.manual_seed(0)``, with ``fc`` removed).
"""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SAMPLES = ROOT / "vlm_lake" / "sample_data" / "lanceData"

log = logging.getLogger("torchvision_reference")


def main() -> None:
    """Write the two reference files."""
    sys.modules["torchvision._meta_registrations"] = types.ModuleType("skipped")
    import torchvision
    from PIL import Image
    from torchvision import transforms
    from torchvision.models import resnet50

    torch.manual_seed(0)
    model = resnet50().eval()
    state = model.state_dict()
    entries = ",\n".join(f"  {json.dumps([k, list(v.shape)])}" for k, v in state.items())
    (DATA / "torchvision_resnet50.json").write_text(
        "{\n"
        f' "torchvision": {json.dumps(torchvision.__version__)},\n'
        f' "parameters": {sum(p.numel() for p in model.parameters())},\n'
        f' "state_dict": [\n{entries}\n ]\n'
        "}\n"
    )
    preprocess = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    paths = sorted(SAMPLES.iterdir())
    batch = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
    model.fc = torch.nn.Identity()
    with torch.inference_mode():
        features = model(batch).numpy()
    np.savez_compressed(
        DATA / "torchvision_resnet50_features.npz",
        names=np.array([p.name for p in paths]),
        features=features.astype(np.float32),
    )
    log.info(
        "wrote reference data for %d images with torchvision %s",
        len(paths),
        torchvision.__version__,
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
