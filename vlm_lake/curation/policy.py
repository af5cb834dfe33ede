"""The curation policy: which images and documents the training exports leave out.

Every rule is off by default, so the default policy reports and excludes nothing. A rule's
name is the policy field that sets it (``min_blur``...), and that name is what the
curation table records for each row it excludes, with the measured value and the
threshold (:mod:`vlm_lake.curation.exclusions`). See docs/curation.md ("Policy").
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from vlm_lake.curation.clusters import PHASH_THRESHOLD, TEXT_THRESHOLD

#: Duplicate levels, each including the ones before it.
DUPLICATE_LEVELS = ("none", "exact", "perceptual", "semantic")

#: Default least cosine similarity of ResNet-50 features for semantic duplicates.
SEMANTIC_THRESHOLD = 0.97


@dataclass(frozen=True)
class SignalRule:
    """An image or text signal rule: excludes a row whose ``column`` is past ``threshold``.

    Attributes:
        name: The policy field (recorded as the rule of each excluded row).
        column: The signal column it reads.
        below: True: excludes values below the threshold; False: above it.
        threshold: The threshold.
    """

    name: str
    column: str
    below: bool
    threshold: float

    @property
    def lance_filter(self) -> str:
        """The Lance filter selecting the rows this rule excludes."""
        if self.name == "max_aspect_ratio":  # either orientation
            return f"(aspect_ratio > {self.threshold!r} OR aspect_ratio < {1 / self.threshold!r})"
        # an integral threshold as an integer literal: Lance compares it with int columns too
        t = self.threshold
        literal = str(int(t)) if t.is_integer() else repr(t)
        return f"{self.column} {'<' if self.below else '>'} {literal}"


#: ``field -> (column, below)`` for the image signal rules.
IMAGE_RULES: dict[str, tuple[str, bool]] = {
    "min_blur": ("blur", True),
    "max_flat_share": ("flat_share", False),
    "min_luma_mean": ("luma_mean", True),
    "max_luma_mean": ("luma_mean", False),
    "max_dark_share": ("dark_share", False),
    "max_bright_share": ("bright_share", False),
    "min_short_side": ("short_side", True),
    "max_aspect_ratio": ("aspect_ratio", False),
}
#: Fields that must be whole numbers (int32 columns, a number of bits).
INTEGER_FIELDS = ("min_short_side", "min_text_length", "max_text_length", "phash_max_bits")
#: ``field -> (column, below)`` for the text signal rules.
TEXT_RULES: dict[str, tuple[str, bool]] = {
    "min_text_length": ("text_length", True),
    "max_text_length": ("text_length", False),
}


@dataclass(frozen=True)
class CurationPolicy:
    """Thresholds per signal, duplicate levels, and the share of exclusions allowed.

    Attributes:
        min_blur: Exclude images whose variance of the Laplacian is below this.
        max_flat_share: Exclude images whose share of flat pixels is above this.
        min_luma_mean: Exclude images darker on average than this (0..1).
        max_luma_mean: Exclude images brighter on average than this (0..1).
        max_dark_share: Exclude images with a larger share of near-black pixels.
        max_bright_share: Exclude images with a larger share of near-white pixels.
        min_short_side: Exclude images whose shorter side has fewer pixels.
        max_aspect_ratio: Exclude images longer than this on either side (>= 1).
        min_text_length: Exclude documents with fewer characters.
        max_text_length: Exclude documents with more characters.
        image_duplicates: Drop duplicates up to this level: ``none``, ``exact`` (same
            sha256), ``perceptual`` (phash within ``phash_max_bits``) or ``semantic``
            (ResNet-50 features with cosine >= ``semantic_min_cosine``); each cluster keeps
            one image.
        phash_max_bits: Largest phash distance of perceptual duplicates (0..32).
        semantic_min_cosine: Least feature cosine of semantic duplicates, in (0, 1].
        drop_near_duplicate_texts: Cluster documents whose MinHash estimates a Jaccard
            similarity of at least ``text_min_jaccard`` with another (single linkage) and
            drop all but the first of each cluster.
        text_min_jaccard: Least estimated Jaccard similarity of near-duplicate texts.
        max_excluded_share: An export whose excluded documents, or excluded images among
            those the documents name, exceed this share is not published (a blocking check).
    """

    min_blur: float | None = None
    max_flat_share: float | None = None
    min_luma_mean: float | None = None
    max_luma_mean: float | None = None
    max_dark_share: float | None = None
    max_bright_share: float | None = None
    min_short_side: int | None = None
    max_aspect_ratio: float | None = None
    min_text_length: int | None = None
    max_text_length: int | None = None
    image_duplicates: str = "none"
    phash_max_bits: int = PHASH_THRESHOLD
    semantic_min_cosine: float = SEMANTIC_THRESHOLD
    drop_near_duplicate_texts: bool = False
    text_min_jaccard: float = TEXT_THRESHOLD
    max_excluded_share: float = 0.5

    def __post_init__(self) -> None:
        for name in INTEGER_FIELDS:  # compared with int32 columns, or a count of bands
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not float(value).is_integer() or abs(value) >= 2**31
            ):
                raise ValueError(f"{name}={value!r}: must be a whole number below 2**31, or None")
            if value is not None:
                object.__setattr__(self, name, int(value))
        for name in (*IMAGE_RULES, *TEXT_RULES):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ValueError(f"{name}={value!r}: must be a finite number >= 0, or None")
        if self.max_aspect_ratio is not None and self.max_aspect_ratio < 1:
            raise ValueError(
                f"max_aspect_ratio={self.max_aspect_ratio!r}: must be >= 1 (the longer side "
                "over the shorter one), or None"
            )
        if self.image_duplicates not in DUPLICATE_LEVELS:
            raise ValueError(
                f"image_duplicates={self.image_duplicates!r}: must be one of {DUPLICATE_LEVELS}"
            )
        if not 0 <= self.phash_max_bits <= 32:
            raise ValueError(f"phash_max_bits={self.phash_max_bits!r}: must be in 0..32")
        for name in ("semantic_min_cosine", "text_min_jaccard"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be in (0, 1]")
        if not 0 <= self.max_excluded_share <= 1:
            raise ValueError(f"max_excluded_share={self.max_excluded_share!r}: must be in [0, 1]")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CurationPolicy:
        """The policy from its fields (as :meth:`to_dict` writes them; unknown keys refused)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown curation policy fields {unknown}; known: {sorted(known)}")
        return cls(**values)

    def with_overrides(self, values: dict[str, Any]) -> CurationPolicy:
        """This policy with the fields of ``values`` that are not None replacing its own."""
        return CurationPolicy.from_dict(
            self.to_dict() | {k: v for k, v in values.items() if v is not None}
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields, JSON-ready."""
        return asdict(self)

    def to_json(self) -> str:
        """The fields as canonical JSON (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def image_rules(self) -> list[SignalRule]:
        """The image signal rules this policy sets."""
        return _rules(self, IMAGE_RULES)

    def text_rules(self) -> list[SignalRule]:
        """The text signal rules this policy sets."""
        return _rules(self, TEXT_RULES)

    def duplicate_level(self, level: str) -> bool:
        """Whether duplicates at ``level`` (``exact``, ``perceptual``, ``semantic``) are dropped."""
        return DUPLICATE_LEVELS.index(self.image_duplicates) >= DUPLICATE_LEVELS.index(level)

    @property
    def excludes_anything(self) -> bool:
        """Whether any rule is set (the default policy sets none)."""
        return bool(
            self.image_rules()
            or self.text_rules()
            or self.image_duplicates != "none"
            or self.drop_near_duplicate_texts
        )


def _rules(policy: CurationPolicy, table: dict[str, tuple[str, bool]]) -> list[SignalRule]:
    return [
        SignalRule(name, column, below, float(getattr(policy, name)))
        for name, (column, below) in table.items()
        if getattr(policy, name) is not None
    ]


def parse_policy(text: str | None, read: Callable[[str], bytes]) -> CurationPolicy:
    """The policy ``CURATION_POLICY`` names: a JSON object, or a JSON file's path or URI.

    Args:
        text: The variable's value; None or blank: the default policy (no rule).
        read: Reads a file's bytes (the object store's ``read_bytes``).

    Raises:
        ValueError: Not JSON, not an object, or an unknown or out-of-range field; the
            message names the source.
    """
    if text is None or not text.strip():
        return CurationPolicy()
    source = "CURATION_POLICY"
    raw = text.strip()
    if not raw.startswith("{"):
        source, raw = f"CURATION_POLICY file {raw!r}", read(raw).decode("utf-8")
    try:
        values = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source} is not JSON: {exc}") from exc
    if not isinstance(values, dict):
        raise ValueError(f"{source} must hold a JSON object of policy fields, got {values!r}")
    try:
        return CurationPolicy.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: {exc}") from exc
