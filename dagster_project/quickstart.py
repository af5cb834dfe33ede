"""Quick start: materialize every asset on the embedded default and print a summary.

Run with ``make run`` (or ``python -m dagster_project.quickstart``). The same environment
variables as the code location apply (``RAW_IMAGES_URI``, ``LAKE_URI``, ``AWS_*``...), so
this also runs the pipeline against S3. Runs are recorded in ``DAGSTER_HOME`` (default
``./.dagster_home``), where ``make dev`` shows them in the UI with their full log.

By default the terminal gets one line per finished step, each warning once, and the
summary; ``--verbose`` (``make run VERBOSE=1``) prints Dagster's full console log instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, Definitions, ExecuteInProcessResult, in_process_executor

from assets import ALL_ASSETS
from dagster_project.instance import ensure_dagster_home
from dagster_project.progress_log import step_lines_logger
from dagster_project.settings import build_resources
from vlm_lake.lake import LakeLayout

log = logging.getLogger("vlm_lake.quickstart")

#: Spark's own log4j settings for a quiet run: errors only (the JVM's startup banner and
#: its warnings about native Hadoop libraries are not for a quick start's reader). The
#: gateway logger at the root's level stops PySpark's "Setting default log level" note.
QUIET_LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.gateway.name = org.apache.spark.api.python.PythonGatewayServer
logger.gateway.level = error
"""


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


class _NotDagsterManaged(logging.Filter):
    """Drops records of the loggers Dagster already prints (``vlm_lake``): each line once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("vlm_lake")


def _configure_output(verbose: bool, home: Path) -> dict[str, Any]:
    """Set up the terminal's logging; return Spark settings for a quiet run ({} if verbose).

    Dagster prints the ``vlm_lake`` loggers (``dagster.yaml`` manages them), so the root
    handler shows only other libraries' warnings. Quiet runs also keep Lance's Rust log at
    errors (its "No existing dataset ... will be created" warnings are the normal first
    write) and give Spark's JVM a log4j file that logs errors only.
    """
    handler = logging.StreamHandler()
    handler.addFilter(_NotDagsterManaged())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    if verbose:
        return {}
    os.environ.setdefault("LANCE_LOG", "error")
    config = home / "log4j2-quiet.properties"
    config.write_text(QUIET_LOG4J2)
    return {"spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{config}"}


def _run(resources: dict[str, Any], verbose: bool) -> ExecuteInProcessResult:
    """Materialize every asset in one in-process run recorded in the Dagster instance."""
    loggers = None if verbose else {"steps": step_lines_logger(len(ALL_ASSETS))}
    defs = Definitions(
        assets=ALL_ASSETS, resources=resources, loggers=loggers, executor=in_process_executor
    )
    job = defs.resolve_implicit_global_asset_job_def()
    run_config = {} if verbose else {"loggers": {"steps": {}}}
    with DagsterInstance.get() as instance:
        return job.execute_in_process(
            instance=instance, run_config=run_config, raise_on_error=False
        )


def main(argv: list[str] | None = None) -> int:
    """Materialize all assets, then print where each output is and a summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print Dagster's full log instead of one line per step",
    )
    args = parser.parse_args(argv)
    home = ensure_dagster_home()
    spark_conf = _configure_output(args.verbose, home)
    resources = build_resources()
    if spark_conf:
        spark = resources["spark"]
        resources["spark"] = spark.model_copy(
            update={"spark_config": {**spark.spark_config, **spark_conf}}
        )
    lake = resources["lake"].process_config_and_initialize()
    if not args.verbose:
        _out(
            f"Materializing every asset: {lake.raw_images_uri} + {lake.raw_texts_uri} -> "
            f"{LakeLayout.at(lake.lake_uri).root}"
        )
    start = time.perf_counter()
    result = _run(resources, args.verbose)
    seconds = time.perf_counter() - start
    if not result.success:
        log.error(
            "the run %s failed%s", result.run_id, "; see the log above" if args.verbose else ""
        )
        return 1
    _summary(result, resources, home, seconds)
    return 0


def _summary(
    result: ExecuteInProcessResult, resources: dict[str, Any], home: Path, seconds: float
) -> None:
    """Where each output is, its rows and versions, the first batch, the features."""
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
    _out(f"  Dagster    : DAGSTER_HOME={home}  (make dev shows this run and its full log)")
    _out()
    _out(f"{'dataset':<22} {'rows':>6} {'version':>8} {'published':>10}  uri")
    for name in (
        "image_lance",
        "rejected_images",
        "text_lance",
        "rejected_documents",
        "multimodal_lance",
        "training_json",
        "training_llamafactory",
        "image_features",
        "curation",
    ):
        meta = written[name]
        version = meta["lance/version"].value if "lance/version" in meta else "-"
        if name in ("training_json", "training_llamafactory"):
            published = "yes" if meta["published"].value else "no"
        elif "lance/published_version" in meta:
            published = meta["lance/published_version"].value
        else:
            published = "-"  # the quarantine tables are not gated
        rows, uri = meta["dagster/row_count"].value, meta["dagster/uri"].value
        _out(f"{name:<22} {rows:>6} {version:>8} {published:>10}  {uri}")

    from torch.utils.data import DataLoader

    from vlm_lake.curation.policy import CurationPolicy
    from vlm_lake.training.dataset import VLMDataset

    dataset = VLMDataset(
        layout.multimodal, store.storage_options(layout.multimodal), curation_uri=layout.curation
    )
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
    curation = written["curation"]
    hint = ""
    if curation["policy"].value == CurationPolicy().to_dict():
        hint = " (the default sets no rule; docs/curation.md shows how to set one)"
    _out()
    _out(
        f"curation: {curation['images_excluded'].value} images and "
        f"{curation['documents_excluded'].value} documents excluded by the policy{hint}"
    )


if __name__ == "__main__":
    sys.exit(main())
