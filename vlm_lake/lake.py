"""Where each output of the lake lives under ``LAKE_URI``, and where the shipped samples are."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vlm_lake.store import uris

SAMPLE_DATA = Path(__file__).parent / "sample_data"
SAMPLE_IMAGES_URI = str(SAMPLE_DATA / "lanceData")
SAMPLE_TEXTS_URI = str(SAMPLE_DATA / "Lance" / "data" / "testdata.json")


@dataclass(frozen=True)
class LakeLayout:
    """The output URIs under one lake root.

    Attributes:
        root: The lake root (``LAKE_URI``), normalized.
    """

    root: str

    @classmethod
    def at(cls, lake_uri: str) -> LakeLayout:
        """Build the layout for ``lake_uri`` (an ``s3://`` URI or a local path)."""
        return cls(uris.normalize(lake_uri))

    @property
    def images(self) -> str:
        """``images.lance``: one row per image."""
        return uris.join(self.root, "images.lance")

    @property
    def texts(self) -> str:
        """``texts.lance``: one row per document."""
        return uris.join(self.root, "texts.lance")

    @property
    def multimodal(self) -> str:
        """``multimodal.lance``: documents joined to their image bytes."""
        return uris.join(self.root, "multimodal.lance")

    @property
    def image_features(self) -> str:
        """``image_features.lance``: ResNet-50 features of every image."""
        return uris.join(self.root, "image_features.lance")

    @property
    def curation(self) -> str:
        """``curation.lance``: what the curation policy excludes, one row per rule and row."""
        return uris.join(self.root, "curation.lance")

    @property
    def training_json(self) -> str:
        """``training_data.json``: the alpaca-style training file."""
        return uris.join(self.root, "training_data.json")

    @property
    def llamafactory(self) -> str:
        """``llamafactory/``: the LLaMA-Factory dataset folder (images, records, info)."""
        return uris.join(self.root, "llamafactory")

    @property
    def rejected_images(self) -> str:
        """``rejected_images.lance``: image objects that were quarantined, with the reason."""
        return uris.join(self.root, "rejected_images.lance")

    @property
    def rejected_documents(self) -> str:
        """``rejected_documents.lance``: documents / text files quarantined, with the reason."""
        return uris.join(self.root, "rejected_documents.lance")
