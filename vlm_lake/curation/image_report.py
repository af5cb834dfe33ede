"""How many images of a table each quality signal flags: the numbers the UI plots.

Counted with Lance filters (``count_rows(filter=...)``): one streamed scan of one column
per count, memory bounded whatever the table's size. The thresholds are for reporting
only; excluding images is the curation policy's decision.
"""

from __future__ import annotations

from typing import Any

#: Report thresholds: flat (one colour), dark, bright, blurred, small.
FLAT_SHARE = 0.95
DARK_MEAN, BRIGHT_MEAN = 0.1, 0.9
BLUR_MIN = 50.0
SHORT_SIDE_MIN = 64

FLAGS: dict[str, str] = {
    "flat": f"flat_share >= {FLAT_SHARE}",
    "dark": f"luma_mean < {DARK_MEAN}",
    "bright": f"luma_mean > {BRIGHT_MEAN}",
    "blurred": f"blur < {BLUR_MIN}",
    "small": f"short_side < {SHORT_SIDE_MIN}",
    "without_signals": "phash IS NULL",
}


def signal_counts(ds: Any) -> dict[str, int]:
    """For each flag of :data:`FLAGS`, the number of images of ``ds`` it holds for."""
    return {name: int(ds.count_rows(filter=expr)) for name, expr in FLAGS.items()}
