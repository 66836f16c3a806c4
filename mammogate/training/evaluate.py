"""``mammogate evaluate``: a model bundle on labelled data sets → ``report.json`` and
``report.html`` (with PNG plots, no CDN).

Every image goes through the serving path (the bundle's grid, ``prepare_*``, the ensemble,
``inference.scoring`` with the bundle's calibration) one at a time, timed. Images whose sha1 is
in the bundle's list of training images are left out unless asked for, since numbers on them
say nothing about new data. report.json holds, for all the data sets pooled and for each:
``malignant_vs_rest`` and ``abnormal_vs_normal`` (image and patient level, AUC with a
patient-bootstrap 95 % interval, sensitivity at 90 % specificity and the reverse),
``localisation`` (top mark within the lesion radius, FROC) where locations are known,
``calibration`` (ECE and curve), ``operating_points`` (the bundle's, measured here),
``timing`` and the trivial-statistics baseline.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mammogate.imaging import ImagingError
from mammogate.inference.bundle import ModelBundle, load_bundle
from mammogate.inference.pipeline import predict
from mammogate.inference.scoring import Calibration, cell_mask, pooled_logits
from mammogate.training.cache import STATISTICS, image_statistics, prepare_record
from mammogate.training.datasets import (
    DatasetError,
    Record,
    file_hash,
    load_all,
    patient_folds,
)
from mammogate.training.evaluation import Predictions, by_source, json_safe, summarise
from mammogate.training.metrics import binary_summary, cross_validated_logistic, roc_auc
from mammogate.training.options import add_evaluate_arguments

logger = logging.getLogger(__name__)


def training_hashes(bundle: ModelBundle) -> set[str]:
    from mammogate.training.train import TRAINING_IMAGES_FILE

    path = bundle.path / TRAINING_IMAGES_FILE
    if not path.is_file():
        return set()
    # "sha1  uid" for files; "-  uid" for synthetic images (known by their seed, not a file)
    entries = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        digest, _, uid = line.partition("  ")
        entries.add(uid if digest == "-" else digest)
    return entries


def predict_records(
    bundle: ModelBundle, model: Any, records: Sequence[Record], *, progress: bool = True
) -> tuple[Predictions, np.ndarray, list[float], list[tuple[Record, str]]]:
    """Serve each record as the node would; (predictions, statistics, seconds per image, failures)."""
    rows, columns, stride = bundle.input_rows, bundle.input_columns, bundle.heatmap_stride
    kept: list[Record] = []
    pooled, maps, cells, lesions, statistics, seconds = [], [], [], [], [], []
    failed: list[tuple[Record, str]] = []
    iterator: Any = records
    if progress:
        from rich.progress import track

        iterator = track(records, description="scoring images")
    for record in iterator:
        started = time.perf_counter()
        try:
            prepared = prepare_record(record, rows, columns)
        except ImagingError as exc:
            failed.append((record, str(exc)))
            continue
        logits = predict(model, [prepared.grid])[0]  # the node's graph
        cell = cell_mask(prepared.scoring_mask, logits.shape[0], logits.shape[1])
        pooled.append(pooled_logits(logits, cell, bundle.sharpness))
        seconds.append(time.perf_counter() - started)
        maps.append(logits)
        cells.append(cell)
        grid_lesions = np.zeros((len(record.lesions), 4), dtype=np.float32)
        for index, lesion in enumerate(record.lesions):
            gx, gy = prepared.transform.to_grid(lesion.x, lesion.y)
            scale = np.sqrt(prepared.transform.scale_x * prepared.transform.scale_y)
            grid_lesions[index] = (gx, gy, lesion.radius * scale, float(lesion.malignant))
        lesions.append(grid_lesions)
        statistics.append(image_statistics(prepared))
        kept.append(record)
    height, width = (rows // stride, columns // stride)
    predictions = Predictions(
        kept,
        np.array(pooled, dtype=np.float64).reshape(-1, 2),
        np.array(maps, dtype=np.float32).reshape(-1, height, width, 2),
        np.array(cells, dtype=bool).reshape(-1, height, width),
        lesions, stride, bundle.sharpness,
    )
    return predictions, np.array(statistics, dtype=np.float32).reshape(-1, len(STATISTICS)), seconds, failed


def _baseline(records: Sequence[Record], statistics: np.ndarray, n_boot: int) -> dict[str, Any] | None:
    labels = np.array([r.malignant for r in records], dtype=float)
    if len(records) < 10 or labels.min() == labels.max():
        return None
    folds = patient_folds(records, 5, 0)
    combined = cross_validated_logistic(statistics, labels, folds)
    single = {}
    for column, name in enumerate(STATISTICS):
        auc = roc_auc(labels, statistics[:, column])
        single[name] = round(max(auc, 1 - auc), 4) if not np.isnan(auc) else None
    return {
        "features": list(STATISTICS),
        "logistic_regression_5_fold": binary_summary(labels, combined, [r.patient for r in records], n_boot=n_boot),
        "single_statistic_auc": single,
    }


def evaluate(
    bundle_dir: Path | None, specs: Sequence[str], out: Path, *, include_training_images: bool = False,
    n_boot: int = 1000, progress: bool = True,
) -> dict[str, Any]:
    bundle = load_bundle(bundle_dir)
    started = time.perf_counter()
    model = bundle.load_model()
    load_seconds = time.perf_counter() - started
    datasets = load_all(specs)
    seen = training_hashes(bundle)
    records: list[Record] = []
    in_training: dict[str, int] = {}
    for dataset in datasets:
        for record in dataset.records:
            digest = file_hash(record.path) if record.path is not None else ""
            if (digest or record.uid) in seen:
                in_training[dataset.name] = in_training.get(dataset.name, 0) + 1
                if not include_training_images:
                    continue
            records.append(replace(record, content_hash=digest))
    if not records:
        raise DatasetError(
            "every image is in the bundle's training data; use --include-training-images to score them anyway"
        )
    predictions, statistics, seconds, failed = predict_records(bundle, model, records, progress=progress)
    metadata = bundle.metadata
    malignant = bundle.calibration
    lesion = metadata.get("calibration", {}).get("lesion", {})
    lesion_calibration = Calibration(float(lesion.get("slope", 1.0)), float(lesion.get("intercept", 0.0)))
    points = metadata.get("operating_points") or [{"name": "operating_point", "threshold": bundle.operating_point}]
    report: dict[str, Any] = summarise(predictions, malignant, lesion_calibration, points, n_boot=n_boot)
    report["model"] = {"name": bundle.name, "version": bundle.version, "sha256": bundle.sha256, "path": str(bundle.path)}
    report["timing"] = {
        "seconds_per_image_median": float(np.median(seconds)) if seconds else None,
        "seconds_per_image_p90": float(np.percentile(seconds, 90)) if seconds else None,
        "what": "read + preprocess + predict + score, one image at a time, model loaded",
        "model_load_seconds": round(load_seconds, 3),
    }
    report["images_left_out"] = {
        "in_training_data": {} if include_training_images else in_training,
        "in_training_data_but_scored": in_training if include_training_images else {},
        "unreadable": [{"image": r.uid, "reason": reason} for r, reason in failed],
    }
    report["datasets"] = {}
    for source, part in by_source(predictions).items():
        entry = summarise(part, malignant, lesion_calibration, points, n_boot=n_boot)
        keep = np.array([r.source == source for r in predictions.records])
        entry["baseline_trivial_statistics"] = _baseline(part.records, statistics[keep], n_boot)
        report["datasets"][source] = entry
    report["baseline_trivial_statistics"] = _baseline(predictions.records, statistics, n_boot)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(json_safe(report), indent=2) + "\n", encoding="utf-8")
    from mammogate.training.report import write_html

    write_html(out, json_safe(report), predictions, malignant)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammogate evaluate",
        description="Score labelled data sets with a model bundle and write report.json and report.html.",
    )
    return add_evaluate_arguments(parser)


def run_evaluate(args: argparse.Namespace) -> int:
    try:
        evaluate(
            args.model, args.dataset, args.out, include_training_images=args.include_training_images,
            n_boot=args.bootstrap, progress=not args.quiet,
        )
    except DatasetError as exc:
        logger.error("%s", exc)
        return 2
    print(args.out / "report.json")  # noqa: T201 - the command's output is the report path
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_evaluate(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
