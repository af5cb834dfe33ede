"""The feature model: ResNet-50 weights, their identity, and a fast inference wrapper.

* :class:`ModelWeights` names the weights (a file or ``s3://`` URI given by
  ``RESNET50_WEIGHTS``, or a deterministic random initialisation) and produces the
  ``state_dict`` bytes that travel to the workers. Its ``identity`` is stored with every
  feature vector, so features computed with other weights are recomputed.
* :class:`FeatureModel` is what a worker runs: batch norms folded into the convolutions,
  channels-last, ``torch.inference_mode``, and in bf16 (weights cast once, not autocast
  per call) where the device does bf16 in hardware. :func:`cached_model` builds it once per process.
* :func:`resolve_device` / :func:`resolve_precision` turn ``auto`` into what this machine
  can do.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vlm_lake.features.resnet import ResNet50, fold_batch_norm, resnet50
from vlm_lake.imaging.transforms import PREPROCESSING, normalize_batch
from vlm_lake.tables.contracts import FEATURE_DIM

if TYPE_CHECKING:
    from vlm_lake.store.object_store import ObjectStore

log = logging.getLogger(__name__)

#: The model stored with every feature vector: architecture, cut point and preprocessing.
MODEL_NAME = f"resnet50-v1.5/avgpool-{FEATURE_DIM}/{PREPROCESSING}"
#: Value of the ``weights`` metadata entry when no weights were given.
RANDOM_INIT = "random-init"
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
COMPILES = ("auto", "on", "off")
#: Images per task slot from which ``compile=auto`` compiles the model: compiling costs
#: each worker seconds and then runs it much faster on the CPU, so it pays from a few
#: hundred images per worker (docs/benchmarks.md#image-features).
COMPILE_MIN_IMAGES_PER_SLOT = 512


class WeightsError(ValueError):
    """The weights file cannot be used as a ResNet-50 ``state_dict``."""


def bf16_supported(device: str) -> bool:
    """Whether ``device`` computes bf16 convolutions in hardware (not emulated).

    CPUs need AVX-512 BF16 or AMX (oneDNN's check); on AVX2 alone bf16 is emulated and
    several times slower than fp32. CUDA devices need compute capability 8.0 or newer.
    """
    if device == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    mkldnn = torch.backends.mkldnn.is_available()
    return bool(mkldnn and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``.

    Raises:
        ValueError: ``device`` is not one of :data:`DEVICES`, or is ``cuda`` without a GPU.
    """
    if device not in DEVICES:
        raise ValueError(f"device={device!r} is not allowed; expected one of {DEVICES}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA GPU here; use 'auto' or 'cpu'")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` -> ``bf16`` where ``device`` does bf16 in hardware, else ``fp32``.

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not allowed; expected one of {PRECISIONS}")
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if precision == "bf16" and not bf16_supported(device):
        log.warning(
            "precision='bf16' on %s without hardware bf16: it is emulated and slower than fp32",
            device,
        )
    return precision


def resolve_compile(compile: str, images_per_slot: float) -> bool:
    """Whether to ``torch.compile`` the model: ``on``, ``off``, or ``auto`` by job size.

    ``auto`` compiles when each task slot gets at least
    :data:`COMPILE_MIN_IMAGES_PER_SLOT` images, so a small run does not pay the compile.

    Raises:
        ValueError: ``compile`` is not one of :data:`COMPILES`.
    """
    if compile not in COMPILES:
        raise ValueError(f"compile={compile!r} is not allowed; expected one of {COMPILES}")
    if compile == "auto":
        return images_per_slot >= COMPILE_MIN_IMAGES_PER_SLOT
    return compile == "on"


def state_dict_bytes(model: torch.nn.Module) -> bytes:
    """Serialise a model's ``state_dict`` with ``torch.save`` (what a ``.pth`` file holds)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


@functools.cache
def _resnet50_shapes() -> dict[str, tuple[int, ...]]:
    """The keys and shapes of torchvision's ResNet-50 state_dict (built once per process)."""
    return {k: tuple(v.shape) for k, v in ResNet50().state_dict().items()}


def load_state_dict(payload: bytes, source: str) -> dict[str, torch.Tensor]:
    """Read ``state_dict`` bytes and check they fit torchvision's ResNet-50 exactly.

    Args:
        payload: ``torch.save`` bytes of a state_dict (torchvision's ``.pth`` format).
        source: Where the bytes came from, for error messages.

    Returns:
        The state dict (tensors on the CPU).

    Raises:
        WeightsError: The bytes are not a state_dict, or its keys or shapes differ from
            torchvision's ``resnet50``.
    """
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean "not weights"
        raise WeightsError(
            f"RESNET50_WEIGHTS={source!r} is not a torch.save file of a state_dict "
            f"({len(payload)} bytes): {exc}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = sorted(state)[:5] if isinstance(state, dict) else None
        raise WeightsError(
            f"RESNET50_WEIGHTS={source!r} holds a {type(state).__name__} (keys {keys}), not a "
            "state_dict of tensors; save model.state_dict() of torchvision's resnet50 (a "
            "training checkpoint must be unwrapped first, e.g. checkpoint['state_dict'])"
        )
    expected = _resnet50_shapes()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = sorted(
        k for k in expected.keys() & state.keys() if tuple(state[k].shape) != expected[k]
    )
    if missing or unexpected or wrong:
        raise WeightsError(
            f"RESNET50_WEIGHTS={source!r} does not match torchvision's resnet50 state_dict: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:5]}, {len(wrong)} with other shapes "
            f"{[(k, tuple(state[k].shape), expected[k]) for k in wrong[:5]]}"
        )
    return state


@dataclass(frozen=True)
class ModelWeights:
    """Which ResNet-50 weights to use.

    Attributes:
        source: The weights URI, or ``random-init``.
        identity: ``sha256:<hex>`` of the file's bytes, or ``random-init:seed=<n>``; stored
            with every feature vector.
        seed: Seed of the random initialisation (only used without a file).
    """

    source: str
    identity: str
    seed: int = 0
    _payload: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def random_init(self) -> bool:
        """Whether the weights are a random initialisation rather than a trained model."""
        return self.source == RANDOM_INIT

    @classmethod
    def random(cls, seed: int = 0) -> ModelWeights:
        """Deterministic random initialisation (torchvision's scheme) from ``seed``."""
        return cls(RANDOM_INIT, f"{RANDOM_INIT}:seed={seed}", seed)

    @classmethod
    def load(cls, uri: str, store: ObjectStore) -> ModelWeights:
        """Read a ``state_dict`` file (local path or ``s3://``) and validate it.

        Raises:
            WeightsError: The file is not a ResNet-50 state_dict (see :func:`load_state_dict`).
            ObjectStoreError: The file cannot be read (names the URI).
        """
        payload = store.read_bytes(uri)
        load_state_dict(payload, uri)
        digest = hashlib.sha256(payload).hexdigest()
        return cls(uri, f"sha256:{digest}", _payload=payload)

    @classmethod
    def from_setting(cls, uri: str | None, store: ObjectStore, seed: int = 0) -> ModelWeights:
        """The weights named by ``RESNET50_WEIGHTS`` (``uri``), or random ones when unset.

        Without weights a WARNING says so plainly: the features are then only good for
        testing the pipeline.
        """
        if uri:
            weights = cls.load(uri, store)
            log.info("ResNet-50 weights: %s (%s)", uri, weights.identity)
            return weights
        log.warning(
            "RESNET50_WEIGHTS is not set: ResNet-50 weights are a RANDOM initialisation "
            "(deterministic, seed %d). The features are reproducible but carry no meaning "
            "(every pair of images looks alike); set RESNET50_WEIGHTS to a torchvision "
            "resnet50 state_dict file or s3:// URI for real features.",
            seed,
        )
        return cls.random(seed)

    def payload(self) -> bytes:
        """The ``state_dict`` bytes to ship to workers (built once per seed for random init)."""
        if self._payload is not None:
            return self._payload
        return random_payload(self.seed)


@functools.lru_cache(maxsize=1)
def random_payload(seed: int) -> bytes:
    """``state_dict`` bytes of the seeded random ResNet-50 (kept: they take long to build)."""
    return state_dict_bytes(resnet50(seed))


class FeatureModel:
    """ResNet-50 features for batches of ``uint8`` images, as fast as the device allows.

    Args:
        state_dict: torchvision-layout ResNet-50 weights.
        device: ``cpu`` or ``cuda``.
        precision: ``fp32`` or ``bf16``. In bf16 the folded weights are cast once when the
            model is built (autocast would cast them again at every call); features come
            back as float32 either way.
        compiled: ``torch.compile`` the forward pass (inductor, weights frozen in). Each
            batch size compiles once (see ``pad_to``). If compiling fails (no C++
            compiler on the worker, say) the model logs why and stays eager.
    """

    def __init__(
        self,
        state_dict: dict[str, torch.Tensor],
        device: str,
        precision: str,
        compiled: bool = False,
    ) -> None:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device={device!r} is not allowed; expected 'cpu' or 'cuda'")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision={precision!r} is not allowed; expected 'fp32' or 'bf16'")
        model = ResNet50()
        model.load_state_dict(state_dict, strict=True)
        self.device = device
        self.precision = precision
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        # Fold in fp32, then cast: the folded scales are exact before rounding to bf16.
        self.model = fold_batch_norm(model.eval()).to(
            device, dtype=self.dtype, memory_format=torch.channels_last
        )
        self.compiled = compiled
        self._forward: Callable[[torch.Tensor], torch.Tensor] = self.model.features
        if compiled:
            self._forward = torch.compile(self.model.features, dynamic=False)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor, pad_to: int | None = None) -> np.ndarray:
        """``uint8`` ``[B, 3, 224, 224]`` -> float32 ``[B, 2048]`` features (NumPy).

        Args:
            batch: The images.
            pad_to: The run's batch size. A compiled model zero-pads a shorter batch to
                it, so the last batch of a task reuses the compiled graph.
        """
        x = normalize_batch(batch, device=self.device).to(self.dtype)
        if not self.compiled:
            return self.model.features(x).float().cpu().numpy()
        n = len(x)
        if pad_to is not None and n < pad_to:
            pad = x.new_zeros((pad_to - n, *x.shape[1:]))
            x = torch.cat([x, pad]).contiguous(memory_format=torch.channels_last)
        return self._compiled_forward(x)[:n].float().cpu().numpy()

    def _compiled_forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch._dynamo.exc import BackendCompilerFailed  # slow import: only if compiled
        from torch._inductor import config

        try:
            # Freezing (weights as constants, prepacked for oneDNN) is what makes it fast;
            # torch.compile(options={"freezing": True}) gets only part of the gain, the
            # config patch all of it (docs/benchmarks.md#image-features).
            with config.patch(freezing=True):
                return self._forward(x)
        except BackendCompilerFailed as exc:  # e.g. no C++ compiler on this worker
            log.warning("torch.compile failed, the model stays eager: %s", exc)
            self.compiled = False
            return self.model.features(x)


_CACHE: dict[tuple[str, str, str, bool], FeatureModel] = {}
_CACHE_LOCK = threading.Lock()


def cached_model(
    identity: str,
    device: str,
    precision: str,
    payload: Callable[[], bytes],
    compiled: bool = False,
) -> tuple[FeatureModel, bool]:
    """The process's model for these weights, building it on first use.

    Spark reuses Python workers between tasks (``spark.python.worker.reuse``), so each
    worker process builds the model once and every later task it runs gets it for free.

    Args:
        identity: The weights identity (the cache key, with device and precision).
        device: ``cpu`` or ``cuda``.
        precision: ``fp32`` or ``bf16``.
        payload: Returns the ``state_dict`` bytes; called only when the model is built.
        compiled: Whether to ``torch.compile`` it (see :class:`FeatureModel`).

    Returns:
        ``(model, built)``: ``built`` is True when this call built it.
    """
    key = (identity, device, precision, compiled)
    with _CACHE_LOCK:
        model = _CACHE.get(key)
        if model is not None:
            return model, False
        started = time.perf_counter()
        state = load_state_dict(payload(), identity)
        _CACHE.clear()  # one model per process: a new identity replaces the old one
        model = _CACHE[key] = FeatureModel(state, device, precision, compiled)
        log.info(
            "built ResNet-50 (%s, %s, %s%s) in %.2f s",
            identity,
            device,
            precision,
            ", compiled on first call" if compiled else "",
            time.perf_counter() - started,
        )
        return model, True


def model_info(weights: ModelWeights, device: str, precision: str) -> dict[str, Any]:
    """What to record about the model that computed a run's features."""
    return {
        "model": MODEL_NAME,
        "weights": weights.source,
        "weights_identity": weights.identity,
        "device": device,
        "precision": precision,
    }
