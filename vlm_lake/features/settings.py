"""How features are computed: device, precision, batching, task sizes, index threshold.

Kept apart from :mod:`vlm_lake.features.extract` so resources and the loader's users can
read the settings without importing the Spark job.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Default rows before a vector index is built: below that a flat scan is fast and exact.
INDEX_MIN_ROWS = 5000


@dataclass(frozen=True)
class FeatureSettings:
    """How features are computed (not *what*: that is the weights and the model).

    Attributes:
        device: ``auto`` (cuda when present, else cpu), ``cpu`` or ``cuda``.
        precision: ``auto`` (bf16 where the device has it in hardware), ``fp32``, ``bf16``.
        batch_size: Images per forward pass; None means 8 on the CPU (fits the caches of
            small cores best, measured) and 64 on a GPU.
        threads_per_task: Torch threads per Spark task; None chooses them so that
            concurrent tasks x threads does not exceed the cores (see :func:`task_layout`).
        max_images_per_task: Upper bound of a work unit: smaller units give a finer
            progress log and cheaper retries, larger ones fewer fragments.
        min_images_per_task: Lower bound of a work unit (except for the last few images):
            a small job runs as fewer tasks with more threads each, so fewer Python
            workers import torch and build the model (a few seconds each).
        compile: ``auto`` (``torch.compile`` the model when each task slot gets enough
            images to pay for compiling, see ``COMPILE_MIN_IMAGES_PER_SLOT``), ``on`` or
            ``off``.
        jpeg_draft: Decode large JPEGs at a reduced DCT scale (see ``imagenet_uint8``).
        index_min_rows: Rows before a vector index on ``features`` is built (>= 256).
        progress_interval_s: Seconds between two progress log lines.
    """

    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    threads_per_task: int | None = None
    max_images_per_task: int = 256
    min_images_per_task: int = 32
    compile: str = "auto"
    jpeg_draft: bool = True
    index_min_rows: int = INDEX_MIN_ROWS
    progress_interval_s: float = 15.0

    def __post_init__(self) -> None:
        for name in ("batch_size", "threads_per_task"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}={value!r} must be a whole number >= 1 or None")
        if not isinstance(self.max_images_per_task, int) or self.max_images_per_task < 1:
            raise ValueError(
                f"max_images_per_task={self.max_images_per_task!r} must be a whole number >= 1"
            )
        if not 1 <= self.min_images_per_task <= self.max_images_per_task:
            raise ValueError(
                f"min_images_per_task={self.min_images_per_task!r} must be between 1 and "
                f"max_images_per_task={self.max_images_per_task!r}"
            )
        if self.compile not in ("auto", "on", "off"):
            raise ValueError(
                f"compile={self.compile!r} is not allowed; expected one of ('auto', 'on', 'off')"
            )
        if self.index_min_rows < 256:
            raise ValueError(
                f"index_min_rows={self.index_min_rows!r} must be >= 256 (PQ codebooks train "
                "on 256 rows)"
            )
