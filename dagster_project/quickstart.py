"""Quick start: materialize every asset on the embedded default and print a summary.

Run with ``make run`` (or ``python -m dagster_project.quickstart``). The same environment
variables as the code location apply (``RAW_IMAGES_URI``, ``LAKE_URI``, ``AWS_*``...), so
this also runs the pipeline against S3. Runs are recorded in ``DAGSTER_HOME`` (default
``./.dagster_home``), where ``make dev`` shows them in the UI.
"""

from __future__ import annotations

import logging
import sys
import time

from dagster import DagsterInstance, materialize

from assets import ALL_ASSETS
from dagster_project.instance import ensure_dagster_home
from dagster_project.settings import build_resources
from vlm_lake.lake import LakeLayout

log = logging.getLogger("vlm_lake.quickstart")


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def main() -> int:
    """Materialize all assets, then print where each output is and a summary."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    home = ensure_dagster_home()
    resources = build_resources()
    start = time.perf_counter()
    with DagsterInstance.get() as instance:
        result = materialize(ALL_ASSETS, resources=resources, instance=instance)
    seconds = time.perf_counter() - start
    if not result.success:
        log.error("the run %s failed; see the log above", result.run_id)
        return 1

    lake = resources["lake"].process_config_and_initialize()
    store = resources["object_store"].process_config_and_initialize()
    layout = LakeLayout.at(lake.lake_uri)
    # What the run itself recorded: rows, Lance version and URI of every output.
    written = {
        event.asset_key.to_user_string(): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    _out()
    _out(f"Pipeline finished in {seconds:.1f}s (run {result.run_id}, Spark start included)")
    _out(f"  raw images : {lake.raw_images_uri}")
    _out(f"  raw texts  : {lake.raw_texts_uri}")
    _out(f"  Dagster    : DAGSTER_HOME={home}  (make dev shows this run in the UI)")
    _out()
    _out(f"{'dataset':<20} {'rows':>6} {'version':>8} {'published':>10}  uri")
    for name in (
        "image_lance",
        "rejected_images",
        "text_lance",
        "rejected_documents",
        "multimodal_lance",
        "training_json",
        "image_features",
    ):
        meta = written[name]
        version = meta["lance/version"].value if "lance/version" in meta else "-"
        if name == "training_json":
            published = "yes" if meta["published"].value else "no"
        elif "lance/published_version" in meta:
            published = meta["lance/published_version"].value
        else:
            published = "-"  # the quarantine tables are not gated
        rows, uri = meta["dagster/row_count"].value, meta["dagster/uri"].value
        _out(f"{name:<20} {rows:>6} {version:>8} {published:>10}  {uri}")

    from torch.utils.data import DataLoader

    from vlm_lake.training.dataset import VLMDataset

    dataset = VLMDataset(layout.multimodal, store.storage_options(layout.multimodal))
    texts, images = next(iter(DataLoader(dataset, batch_size=8)))
    present = (images.flatten(2).abs().sum(-1) > 0).int().tolist()
    _out()
    _out(f"first training batch: images {list(images.shape)} {images.dtype}, {len(texts)} texts")
    _out(f"  images present per document (1 = image, 0 = zero padding): {present}")
    features = written["image_features"]
    _out()
    _out(
        f"image features: {features['model'].value}, weights {features['weights'].value}, "
        f"{features['device'].value}/{features['precision'].value}, "
        f"{features['computed'].value} computed in {features['spark_seconds'].value} s on "
        f"Spark (workers start and build the model first); vector index: "
        f"{features['vector_index'].value}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
