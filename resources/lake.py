"""Where the raw uploads are and where the lake is written."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from vlm_lake.lake import SAMPLE_IMAGES_URI, SAMPLE_TEXTS_URI, LakeLayout


class LakeResource(ConfigurableResource):
    """Where the raw uploads are and the lake is written, and the lake's curation policy.

    Locations are URIs (``s3://...``) or local paths.
    Defaults are the embedded demo: the sample images and ``testdata.json`` shipped in the
    package, and a ``lake/`` folder in the working directory.
    """

    raw_images_uri: str = Field(
        default=SAMPLE_IMAGES_URI, description="Prefix holding the images (RAW_IMAGES_URI)."
    )
    raw_texts_uri: str = Field(
        default=SAMPLE_TEXTS_URI,
        description="JSON / JSON Lines file or a prefix of them (RAW_TEXTS_URI).",
    )
    lake_uri: str = Field(default="lake", description="Where outputs are written (LAKE_URI).")
    curation_policy: str | None = Field(
        default=None,
        description="The lake's curation policy: a JSON object, or the path or URI of a JSON "
        "file (CURATION_POLICY). Unset: no rule. A run's curation config overrides it.",
    )

    def layout(self) -> LakeLayout:
        """The output URIs under ``lake_uri``."""
        return LakeLayout.at(self.lake_uri)
