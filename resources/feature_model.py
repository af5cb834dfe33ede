"""The feature-model resource: which ResNet-50 weights, on which device, in which precision."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from vlm_lake.features.model import COMPILES, DEVICES, PRECISIONS, ModelWeights
from vlm_lake.features.settings import INDEX_MIN_ROWS, FeatureSettings
from vlm_lake.store.object_store import ObjectStore


class FeatureModelResource(ConfigurableResource):
    """ResNet-50 settings of the ``image_features`` asset.

    Without ``weights_uri`` the model is a deterministic random initialisation; the run log
    and the asset metadata (``weights: random-init``) say so.
    """

    weights_uri: str | None = Field(
        default=None,
        description="torchvision resnet50 state_dict (.pth): a local path or s3:// URI "
        "(RESNET50_WEIGHTS). Unset: random weights (seed 0), for testing the pipeline only.",
    )
    device: str = Field(
        default="auto",
        description=f"One of {DEVICES}; auto picks cuda when present (FEATURES_DEVICE).",
    )
    precision: str = Field(
        default="auto",
        description=f"One of {PRECISIONS}; auto uses bf16 only where the device computes it in "
        "hardware (FEATURES_PRECISION).",
    )
    compile: str = Field(
        default="auto",
        description=f"One of {COMPILES}: torch.compile the model in each worker; auto does when "
        "each task slot gets enough images to pay for compiling (FEATURES_COMPILE).",
    )
    batch_size: int | None = Field(
        default=None, description="Images per forward pass (default 8 on CPU, 64 on GPU)."
    )
    threads_per_task: int | None = Field(
        default=None,
        description="Torch threads per Spark task; default: cores // concurrent tasks locally, "
        "spark.task.cpus on a cluster.",
    )
    index_min_rows: int = Field(
        default=INDEX_MIN_ROWS, description="Rows before a vector index on features is built."
    )
    seed: int = Field(default=0, description="Seed of the random weights (without weights_uri).")

    def settings(self) -> FeatureSettings:
        """The core settings (validated there)."""
        return FeatureSettings(
            device=self.device,
            precision=self.precision,
            compile=self.compile,
            batch_size=self.batch_size,
            threads_per_task=self.threads_per_task,
            index_min_rows=self.index_min_rows,
        )

    def weights(self, store: ObjectStore) -> ModelWeights:
        """Read and validate the weights file, or describe the random initialisation."""
        return ModelWeights.from_setting(self.weights_uri or None, store, seed=self.seed)
