"""ResNet-50 in plain torch against torchvision's own reference data.

``tests/data/torchvision_resnet50*.{json,npz}`` were produced by torchvision 0.28's code
(``scripts/torchvision_reference.py``): its ``resnet50()`` state_dict layout, its parameter
count, and its features of the sample images under ``torch.manual_seed(0)``.
"""

from __future__ import annotations

import io
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SAMPLE_IMAGES, sample_image_bytes

from vlm_lake.features.model import (
    COMPILE_MIN_IMAGES_PER_SLOT,
    FeatureModel,
    ModelWeights,
    WeightsError,
    bf16_supported,
    cached_model,
    load_state_dict,
    resolve_compile,
    resolve_device,
    resolve_precision,
    state_dict_bytes,
)
from vlm_lake.features.resnet import (
    RESNET50_PARAMETERS,
    ResNet50,
    count_parameters,
    fold_batch_norm,
    resnet50,
)
from vlm_lake.features.settings import FeatureSettings
from vlm_lake.imaging.transforms import imagenet_uint8, normalize_batch
from vlm_lake.store.object_store import ObjectStore

DATA = Path(__file__).parents[1] / "data"
REFERENCE = json.loads((DATA / "torchvision_resnet50.json").read_text())


def _sample_batch(draft: bool = False) -> torch.Tensor:
    names = sorted(p.name for p in SAMPLE_IMAGES.iterdir())
    return torch.stack([imagenet_uint8(sample_image_bytes(n), draft=draft) for n in names])


def test_parameter_count_is_torchvisions() -> None:
    assert count_parameters(ResNet50()) == RESNET50_PARAMETERS == 25_557_032
    assert REFERENCE["parameters"] == RESNET50_PARAMETERS


def test_state_dict_keys_and_shapes_are_torchvisions_in_order() -> None:
    ours = [[k, list(v.shape)] for k, v in ResNet50().state_dict().items()]
    assert len(ours) == 320
    assert ours == REFERENCE["state_dict"]


def test_seeded_init_and_preprocessing_give_torchvisions_features() -> None:
    """Our init under seed 0, our preprocessing and our forward equal torchvision's."""
    reference = np.load(DATA / "torchvision_resnet50_features.npz")
    names = sorted(p.name for p in SAMPLE_IMAGES.iterdir())
    assert list(reference["names"]) == names
    model = FeatureModel(resnet50(seed=0).state_dict(), "cpu", "fp32")
    ours = model(_sample_batch())
    expected = reference["features"]
    assert ours.shape == expected.shape == (4, 2048)
    assert ours.dtype == np.float32
    # BN folding and channels-last change the float summation order, nothing else.
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_random_init_is_deterministic_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a, b = resnet50(seed=7).state_dict(), resnet50(seed=7).state_dict()
    assert torch.equal(torch.rand(3), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = resnet50(seed=8).state_dict()
    assert not torch.equal(a["conv1.weight"], other["conv1.weight"])


def test_a_saved_state_dict_loads_back_and_gives_identical_features(tmp_path: Path) -> None:
    original = resnet50(seed=3)
    path = tmp_path / "resnet50-seed3.pth"
    torch.save(original.state_dict(), path)
    weights = ModelWeights.load(str(path), ObjectStore())
    assert weights.identity.startswith("sha256:") and not weights.random_init
    batch = _sample_batch()
    direct = FeatureModel(original.state_dict(), "cpu", "fp32")(batch)
    loaded = FeatureModel(load_state_dict(weights.payload(), str(path)), "cpu", "fp32")(batch)
    assert np.array_equal(direct, loaded)
    # different weights, different features
    assert not np.allclose(direct, FeatureModel(resnet50(4).state_dict(), "cpu", "fp32")(batch))


def test_batch_norm_folding_keeps_the_function() -> None:
    model = resnet50(seed=1)
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():  # trained-looking statistics, so folding has work to do
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.uniform_(-0.2, 0.2, generator=gen)
    x = normalize_batch(_sample_batch()[:2], channels_last=False)
    with torch.inference_mode():
        expected = model.features(x)
        folded = fold_batch_norm(model)
        got = folded.features(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # not modified
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_bf16_features_agree_with_fp32_within_the_stated_tolerance() -> None:
    """bf16 weights and activations vs fp32: cosine >= 0.999, relative L2 error <= 2%.

    (Measured on the sample images: cosine 0.99998, relative error about 0.5%.)
    """
    state = resnet50(seed=0).state_dict()
    batch = _sample_batch()[:2]
    fp32 = torch.from_numpy(FeatureModel(state, "cpu", "fp32")(batch))
    bf16 = torch.from_numpy(FeatureModel(state, "cpu", "bf16")(batch))
    assert bf16.dtype == torch.float32 and bf16.shape == (2, 2048)
    assert not torch.equal(fp32, bf16)  # really ran in bf16
    cosine = torch.nn.functional.cosine_similarity(fp32, bf16)
    relative = (fp32 - bf16).norm(dim=1) / fp32.norm(dim=1)
    assert bool((cosine >= 0.999).all()), cosine
    assert bool((relative <= 0.02).all()), relative


def _compiled_vs_eager(batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """In a fresh process: eager features, compiled features of the batch and of a short one."""
    state = resnet50(seed=0).state_dict()
    eager = FeatureModel(state, "cpu", "fp32")
    compiled = FeatureModel(state, "cpu", "fp32", compiled=True)
    full = compiled(batch, pad_to=len(batch))
    short = compiled(batch[:2], pad_to=len(batch))
    return eager(batch), full, short, compiled.compiled


def test_compiled_model_matches_eager_and_pads_a_short_last_batch() -> None:
    """torch.compile (inductor, frozen weights) gives the eager features; a batch shorter
    than the run's is zero-padded to it and the padding is cut off again.

    It compiles in a spawned process, as a Spark worker does, so inductor's compile workers
    and threads never live in the test process that later forks DataLoader workers.
    """
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        expected, full, short, still = pool.submit(_compiled_vs_eager, _sample_batch()[:3]).result()
    assert still, "compiling fell back to eager"
    assert full.shape == (3, 2048) and short.shape == (2, 2048)
    np.testing.assert_allclose(full, expected, rtol=1e-3, atol=1e-3 * float(abs(expected).max()))
    np.testing.assert_allclose(short, full[:2], rtol=1e-3, atol=1e-3 * float(abs(full).max()))


@pytest.mark.parametrize(
    ("setting", "images_per_slot", "expected"),
    [("on", 1, True), ("off", 10_000, False), ("auto", 511, False), ("auto", 512, True)],
)
def test_compile_setting_resolves_by_images_per_slot(setting, images_per_slot, expected) -> None:
    assert COMPILE_MIN_IMAGES_PER_SLOT == 512
    assert resolve_compile(setting, images_per_slot) is expected


def test_compile_setting_must_be_known() -> None:
    with pytest.raises(ValueError, match=r"compile='yes' is not allowed; expected one of"):
        resolve_compile("yes", 1)
    with pytest.raises(ValueError, match=r"compile='fast' is not allowed"):
        FeatureSettings(compile="fast")


def test_weights_that_are_not_a_resnet50_state_dict_are_refused(tmp_path: Path) -> None:
    store = ObjectStore()
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match=r"junk\.pth.*not a torch\.save file"):
        ModelWeights.load(str(junk), store)
    wrapped = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "epoch": 3}, wrapped)
    with pytest.raises(WeightsError, match=r"checkpoint\.pth.*not a state_dict.*unwrapped"):
        ModelWeights.load(str(wrapped), store)
    state = resnet50().state_dict()
    del state["fc.bias"]
    state["head.weight"] = torch.zeros(3)
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with pytest.raises(WeightsError) as info:
        load_state_dict(buffer.getvalue(), "s3://models/resnet.pth")
    message = str(info.value)
    assert "s3://models/resnet.pth" in message
    assert "1 missing keys ['fc.bias']" in message
    assert "1 unexpected keys ['head.weight']" in message
    assert "('conv1.weight', (64, 3, 3, 3), (64, 3, 7, 7))" in message
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        ModelWeights.load(str(tmp_path / "missing.pth"), store)


def test_random_weights_identity_and_payload() -> None:
    weights = ModelWeights.from_setting(None, ObjectStore(), seed=0)
    assert weights.random_init and weights.source == "random-init"
    assert weights.identity == "random-init:seed=0"
    state = load_state_dict(weights.payload(), weights.identity)
    assert torch.equal(state["fc.weight"], resnet50(0).state_dict()["fc.weight"])


def test_device_and_precision_settings() -> None:
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match=r"device='gpu' is not allowed.*'auto', 'cpu', 'cuda'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
    assert resolve_precision("auto", "cpu") == ("bf16" if bf16_supported("cpu") else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match=r"precision='fp16' is not allowed"):
        resolve_precision("fp16", "cpu")


def test_the_model_is_built_once_per_process() -> None:
    calls: list[int] = []

    def payload() -> bytes:
        calls.append(1)
        return state_dict_bytes(resnet50(5))

    first, built = cached_model("test:seed=5", "cpu", "fp32", payload)
    again, built_again = cached_model("test:seed=5", "cpu", "fp32", payload)
    assert built and not built_again and first is again and len(calls) == 1
    other, built_other = cached_model("test:seed=6", "cpu", "fp32", payload)
    assert built_other and other is not first and len(calls) == 2
