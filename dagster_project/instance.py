"""A local Dagster home for the quick start, ``make dev`` and the CLI: telemetry off."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DAGSTER_YAML = """\
# Written by dagster_project.instance: local instance for the vlm-lake quick start.
telemetry:
  enabled: false
nux:
  enabled: false
python_logs:
  python_log_level: INFO
  managed_python_loggers:
    - vlm_lake
"""


def ensure_dagster_home(path: str | os.PathLike[str] | None = None) -> Path:
    """Create ``DAGSTER_HOME`` (default ``./.dagster_home``) with a ``dagster.yaml``.

    An existing ``dagster.yaml`` is left alone. The chosen path is also exported as
    ``DAGSTER_HOME`` for this process and its children.

    Args:
        path: Folder to use; defaults to ``$DAGSTER_HOME`` or ``./.dagster_home``.

    Returns:
        The absolute path of the Dagster home.
    """
    home = Path(path or os.environ.get("DAGSTER_HOME") or ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


if __name__ == "__main__":
    sys.stdout.write(f"{ensure_dagster_home(sys.argv[1] if len(sys.argv) > 1 else None)}\n")
