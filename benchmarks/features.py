"""ResNet-50 features: our Spark path vs a plain torch loop vs this machine's matmul peak.

Usage (from the repository root)::

    python -m benchmarks.features                 # 1000 photos, local[*] Spark
    python -m benchmarks.features --n 200 --out features.json
    python -m benchmarks.features --device cuda   # on a GPU machine

One process run measures, side by side:

* the machine's fp32 and bf16 matmul peak (GFLOP/s, square matmuls on every core);
* a plain torch loop: the same model (:class:`~vlm_lake.features.model.FeatureModel`) over
  the same images, decoded and cropped beforehand, batch after batch, eager and
  ``torch.compile``d: the compute limit the Spark path is held against;
* our Spark path (:func:`~vlm_lake.features.extract.extract_features` over ``images.lance``, every
  image computed): once cold (new JVM, new Python workers that import torch and build the
  model, as in a fresh Dagster run) and once warm (workers reused), then compiled: once
  while the workers compile, once warm;
* the seed's way for reference: an eager model, NCHW, one image per call, on a subset.

It prints a Markdown table and, with ``--out``, writes JSON: a list of
``{"name", "ours", "baseline", "unit", "ratio"}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import markdown, row
from benchmarks.data import write_photos
from vlm_lake.features.extract import extract_features
from vlm_lake.features.model import (
    FeatureModel,
    ModelWeights,
    bf16_supported,
    load_state_dict,
    resolve_device,
    resolve_precision,
)
from vlm_lake.features.resnet import ResNet50
from vlm_lake.features.settings import FeatureSettings
from vlm_lake.imaging.transforms import imagenet_uint8, normalize_batch
from vlm_lake.ingest.images import ingest_images
from vlm_lake.store.object_store import ObjectStore
from vlm_lake.tables import publish

log = logging.getLogger("benchmarks.features")


def matmul_peak(dtype: torch.dtype, device: str, budget_s: float = 0.3) -> tuple[float, int]:
    """Best GFLOP/s of square matmuls in ``dtype`` over sizes 256, 512, ... 4096.

    Each size is timed for about ``budget_s``; sizes stop growing once one matmul takes
    more than half a second (emulated bf16 is that slow already at 1024).

    Returns:
        ``(gflops, n)``: the best rate and the matrix side it was reached at.
    """
    best_rate, best_n, n = 0.0, 0, 256
    while n <= 4096:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        a @ b  # warm-up
        _sync(device)
        started = time.perf_counter()
        a @ b
        _sync(device)
        once = time.perf_counter() - started
        reps = max(1, int(budget_s / max(once, 1e-6)))
        started = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        rate = 2 * n**3 * reps / (time.perf_counter() - started) / 1e9
        if rate > best_rate:
            best_rate, best_n = rate, n
        if once > 0.5:
            break
        n *= 2
    return best_rate, best_n


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def resnet50_gflop(size: int = 224) -> float:
    """GFLOP (2 x multiply-adds) of one image through ResNet-50 up to the pooled features."""
    model = ResNet50().eval()
    macs = 0

    def count(module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            macs += output.numel() * module.in_channels // module.groups * kh * kw

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    with torch.inference_mode():
        model.features(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return 2 * macs / 1e9


def plain_loop(model: FeatureModel, images: torch.Tensor, batch_size: int) -> float:
    """Images/s of the model over pre-decoded ``uint8`` images, batch after batch."""
    model(images[:batch_size])  # warm-up (oneDNN picks its kernels)
    _sync(model.device)
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        model(images[start : start + batch_size])
    _sync(model.device)
    return len(images) / (time.perf_counter() - started)


def seed_style_loop(state: dict[str, torch.Tensor], images: torch.Tensor, device: str) -> float:
    """Images/s the seed's way: eager model, NCHW, batch norms unfolded, one image a call."""
    model = ResNet50()
    model.load_state_dict(state)
    model = model.eval().to(device)
    batch = normalize_batch(images, device=device, channels_last=False)
    with torch.no_grad():
        model.features(batch[:1])
        _sync(device)
        started = time.perf_counter()
        for i in range(len(batch)):
            model.features(batch[i : i + 1])
        _sync(device)
    return len(batch) / (time.perf_counter() - started)


def decode_rate(blobs: list[bytes]) -> tuple[torch.Tensor, float]:
    """Decode and crop every image on one core; returns the batch and images/s."""
    started = time.perf_counter()
    images = torch.stack([imagenet_uint8(b) for b in blobs])
    return images, len(blobs) / (time.perf_counter() - started)


def _images(args: argparse.Namespace, work: Path) -> tuple[str, list[bytes]]:
    """Generate ``args.n`` photos, ingest and publish them; return the URI and the bytes."""
    raw, images_uri = work / "raw", str(work / "images.lance")
    if not (raw.exists() and len(list(raw.iterdir())) == args.n):
        shutil.rmtree(raw, ignore_errors=True)
        size = write_photos(raw, args.n)
        log.info("wrote %d photos (%.1f MB) to %s", args.n, size / 1e6, raw)
    report = ingest_images(ObjectStore(), str(raw), images_uri)
    publish.publish(images_uri, report.summary.version)
    return images_uri, [p.read_bytes() for p in sorted(raw.iterdir())]


def _peak_rows(device: str, precision: str) -> tuple[list[dict[str, Any]], float, float]:
    """Matmul peaks in fp32 and bf16 and ResNet-50's GFLOP.

    Returns:
        The rows, the peak of ``precision`` and the GFLOP of one image.
    """
    torch.set_num_threads(os.cpu_count() or 1)
    fp32_peak, fp32_n = matmul_peak(torch.float32, device)
    bf16_peak, bf16_n = matmul_peak(torch.bfloat16, device)
    hardware = "hardware" if bf16_supported(device) else "emulated"
    gflop = resnet50_gflop()
    rows = [
        row(f"matmul peak fp32 ({device}, n={fp32_n})", fp32_peak, None, "GFLOP/s"),
        row(
            f"matmul peak bf16 ({device}, {hardware}, n={bf16_n})",
            bf16_peak,
            fp32_peak,
            "GFLOP/s (ratio: vs fp32)",
        ),
        row("ResNet-50 to the pooled features, one 224x224 image", gflop, None, "GFLOP"),
    ]
    return rows, bf16_peak if precision == "bf16" else fp32_peak, gflop


def _plain_rows(
    state: dict[str, torch.Tensor], images: torch.Tensor, device: str, precision: str, batch: int
) -> tuple[list[dict[str, Any]], float, float]:
    """The plain loop eager and compiled, the other precision, the seed's way.

    Returns:
        The rows, the eager loop's and the compiled loop's images/s.
    """
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    plain = plain_loop(FeatureModel(state, device, precision), images, batch)
    log.info("plain loop (%s, %s, batch %d): %.2f images/s", device, precision, batch, plain)
    compiled = plain_loop(FeatureModel(state, device, precision, compiled=True), images, batch)
    log.info("plain loop compiled: %.2f images/s", compiled)
    other = "fp32" if precision == "bf16" else "bf16"
    subset = images[: max(batch, 16)]
    plain_other = plain_loop(FeatureModel(state, device, other), subset, batch)
    seed_style = seed_style_loop(state, images[:32], device)
    rows = [
        row(
            f"plain loop {precision} ({device}, batch {batch}, {cores} threads)",
            plain,
            None,
            "images/s",
        ),
        row("plain loop compiled (torch.compile) vs eager", compiled, plain, "images/s"),
        row(
            f"plain loop {other} (subset of {len(subset)})",
            plain_other,
            plain,
            f"images/s (ratio: vs {precision})",
        ),
        row(
            "plain loop vs seed-style loop (eager NCHW, 1 image/call)",
            plain,
            seed_style,
            "images/s",
        ),
    ]
    return rows, plain, compiled


def _spark_rows(
    args: argparse.Namespace, images_uri: str, features_uri: str, plain: dict[str, float]
) -> list[dict[str, Any]]:
    """Our Spark path cold and warm, eager and compiled, against the matching plain loop."""
    from vlm_lake.spark.session import build_spark_session

    device = resolve_device(args.device)
    spark = build_spark_session(master=args.master)
    rows = []
    runs = [("cold", "off"), ("warm", "off"), ("compiling", "on"), ("warm compiled", "on")]
    for label, compile_setting in runs:
        settings = FeatureSettings(
            device=device,
            precision=args.precision,
            batch_size=args.batch_size,
            compile=compile_setting,
            progress_interval_s=30,
        )
        started = time.perf_counter()
        result = extract_features(
            spark,
            image_uri=images_uri,
            out_uri=features_uri,
            weights=ModelWeights.random(seed=0),
            settings=settings,
            full_rebuild=True,
        )
        ips = args.n / (time.perf_counter() - started)
        log.info("Spark path %s: %.2f images/s (%d tasks)", label, ips, result.tasks)
        baseline = plain["compiled" if compile_setting == "on" else "eager"]
        rows.append(
            row(
                f"Spark path {label} ({args.master}, {result.tasks} tasks, "
                f"{result.task_slots}x{result.threads_per_task} threads) vs plain loop "
                f"{'compiled' if compile_setting == 'on' else 'eager'}",
                ips,
                baseline,
                "images/s",
            )
        )
    spark.stop()
    return rows


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Prepare the data, measure everything, return the result rows."""
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-feat-"))
    images_uri, blobs = _images(args, work)
    rows, peak, gflop = _peak_rows(device, precision)
    weights = ModelWeights.random(seed=0)
    state = load_state_dict(weights.payload(), weights.identity)
    torch.set_num_threads(1)
    images, decode_ips = decode_rate(blobs)
    args.batch_size = args.batch_size or (64 if device == "cuda" else 8)
    plain_rows, eager, compiled = _plain_rows(state, images, device, precision, args.batch_size)
    rows.append(
        row(f"plain loop {precision} vs matmul peak {precision}", eager * gflop, peak, "GFLOP/s")
    )
    rows.append(
        row(f"plain loop compiled vs matmul peak {precision}", compiled * gflop, peak, "GFLOP/s")
    )
    rows += plain_rows
    plain = {"eager": eager, "compiled": compiled}
    rows += _spark_rows(args, images_uri, str(work / "image_features.lance"), plain)
    rows.append(row("decode + resize + crop, one core", decode_ips, None, "images/s"))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=1000, help="photos to generate (1000)")
    parser.add_argument("--batch-size", type=int, default=None, help="8 on CPU, 64 on GPU")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16")
    parser.add_argument("--master", default="local[*]", help="Spark master (local[*])")
    parser.add_argument("--workdir", default=None, help="keep data here between runs")
    parser.add_argument("--out", default=None, help="write the rows as JSON to this file")
    args = parser.parse_args(argv)
    if args.n < 16:
        parser.error(f"--n {args.n}: need at least 16 photos")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rows = run(args)
    table = markdown(rows)
    sys.stdout.write(table + "\n")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
