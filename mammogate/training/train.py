"""``mammogate train``: cross-validated training on real and synthetic mammograms, and the model
bundle the node ships.

1. Load the data sets (``datasets``), prepare every image once through the serving
   preprocessing (``cache``), deal patients into k folds (stratified by source and cancer).
2. For each fold, fit a network on the other folds (``fit``: patch stage, then whole images)
   and predict the held-out fold: out-of-fold logits for every image. Each fold keeps its
   checkpoints in the work folder: an interrupted run started again resumes.
3. Fit the calibration (Platt) on the out-of-fold logits of the real images, choose the
   operating points on them (patient level, at stated sensitivity and specificity), compute the
   cross-validated metrics with their intervals per data set, and the AUC of a logistic
   regression on trivial image statistics (the shortcut baseline the CNN must beat).
4. The bundle: the k fold networks averaged into one Keras model (an ensemble: every image is
   scored by all k and their logits averaged), model.json (calibration, operating points,
   metrics, training data and counts, intended use and limits), NOTICE with the data sets'
   licence terms, and the sha1 of every training image (so ``evaluate`` can tell a held-out
   set from the training data).
5. The bundle is then checked end to end on held-out synthetic studies (seeds disjoint from
   training) through the node's own ``Analyzer``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mammogate.inference.bundle import DEFAULT_MODEL_NAME, MODEL_FILE, load_bundle, write_model_json
from mammogate.inference.scoring import Calibration
from mammogate.training.cache import STATISTICS, GridArrays, build_cache
from mammogate.training.datasets import Dataset, DatasetError, file_hash, load_all, patient_folds
from mammogate.training.evaluation import (
    Predictions,
    by_source,
    choose_operating_points,
    json_safe,
    nested_operating_points,
    subset,
    summarise,
    within_fold_aucs,
)
from mammogate.training.fit import FitOptions, Trainer, predict_logits, scoring_cells
from mammogate.training.metrics import binary_summary, cross_validated_logistic, fit_platt
from mammogate.training.model import CHANNELS, HEATMAP_STRIDE, WIDTHS
from mammogate.training.options import add_train_arguments

logger = logging.getLogger(__name__)

BUNDLE_VERSION = "2.2.0"
GRID = (640, 384)
DEFAULT_OPERATING_POINT = "balanced"
TRAINING_IMAGES_FILE = "training_images.txt"
DISCLAIMER = "Research and decision-support use only; not a diagnostic device; not for clinical use."

MIAS_NOTICE = (
    "mini-MIAS (Mammographic Image Analysis Society Digital Mammogram Database): research use "
    "only; no renting or selling. Suckling J et al. (1994), Excerpta Medica International "
    "Congress Series 1069:375-378. Weights trained on it inherit these terms."
)
CBIS_NOTICE = (
    "CBIS-DDSM (TCIA), CC BY 3.0: Sawyer-Lee R et al. (2016) doi:10.7937/K9/TCIA.2016.7O02S9CY; "
    "Lee RS et al., Sci Data 4:170177 (2017)."
)
KAGGLE_NOTICE = (
    "kaggle_bcd640 (a Roboflow export of what appear to be RSNA Screening Mammography images): "
    "research and non-commercial use only; the images are not redistributed with this bundle."
)
KNOWN_LIMITS = [
    "mini-MIAS is digitised film: MLO views only, 8-bit, 200 micrometre pixels, 224 images.",
    "kaggle_bcd640 images were stretched to 640x640 without keeping their aspect, carry no pixel "
    "spacing, laterality or view, and their labels are image-level only; its negatives and positives "
    "come from different patient-id ranges (a possible site or scanner shortcut).",
    "Probabilities are calibrated on the training mix (enriched with cancers); in a screening "
    "population (about 0.5 % prevalence) the true probability of cancer is far lower.",
    "The model grid resolves masses of about 5 mm and larger and clusters of calcifications as "
    "texture; single calcifications under about 0.5 mm are below its resolution.",
    "Not validated on tomosynthesis, magnification or spot views (the node does not score them), "
    "implants, or any vendor other than those in the training data.",
]


@dataclass(frozen=True)
class TrainConfig:
    datasets: tuple[str, ...]
    out: Path
    work: Path | None = None
    grid: tuple[int, int] = GRID
    folds: int = 5
    members: int = 1
    fit: FitOptions = field(default_factory=FitOptions)
    seed: int = 0
    synthetic_check_studies: int = 20
    workers: int = 0
    n_boot: int = 1000
    version: str = BUNDLE_VERSION
    progress: bool = True

    @property
    def work_dir(self) -> Path:
        return self.work if self.work is not None else self.out.parent / f".{self.out.name}.work"


def _content_hashes(datasets: Sequence[Dataset]) -> list[Dataset]:
    """Records with the sha1 of their files (the cache key and the bundle's training list)."""
    out = []
    for dataset in datasets:
        records = tuple(
            replace(r, content_hash=file_hash(r.path)) if r.path is not None else r for r in dataset.records
        )
        out.append(Dataset(dataset.spec, dataset.name, records))
    return out


def _predict_fold(heatmap: Any, arrays: GridArrays, indices: np.ndarray, cells: np.ndarray) -> dict[str, np.ndarray]:
    logits = predict_logits(heatmap, arrays.images[indices])
    from mammogate.inference.scoring import pooled_logits

    pooled = np.stack([pooled_logits(logits[i], cells[index] > 0) for i, index in enumerate(indices)])
    return {"indices": indices, "pooled": pooled.astype(np.float32), "maps": logits.astype(np.float16)}


def _member_dir(work_dir: Path, fold: int, member: int) -> Path:
    """Member 0 of a fold keeps the plain ``foldK`` folder (work folders of single-member runs resume)."""
    return work_dir / (f"fold{fold}" if member == 0 else f"fold{fold}-member{member}")


def cross_validate(config: TrainConfig, arrays: GridArrays, folds: np.ndarray) -> tuple[Predictions, list[Path]]:
    """Fit ``config.members`` networks per fold and predict its held-out images with the mean of
    their logit maps (the ensemble the bundle ships); resumable."""
    from mammogate.inference.scoring import pooled_logits

    cells = scoring_cells(arrays.masks)
    pooled = np.zeros((len(arrays), len(CHANNELS)), dtype=np.float32)
    maps = np.zeros((len(arrays), *cells.shape[1:], len(CHANNELS)), dtype=np.float32)
    weights: list[Path] = []
    for fold in range(config.folds):
        train_index = np.flatnonzero(folds != fold)
        test_index = np.flatnonzero(folds == fold)
        member_maps = []
        for member in range(config.members):
            fold_dir = _member_dir(config.work_dir, fold, member)
            done = fold_dir / "out_of_fold.npz"
            if not done.is_file():
                started = time.perf_counter()
                options = replace(config.fit, seed=config.seed * 100 + fold + 1000 * member)
                trainer = Trainer(arrays, train_index, options, fold_dir)
                heatmap = trainer.fit()
                result = _predict_fold(heatmap, arrays, test_index, cells)
                partial = fold_dir / "out_of_fold.partial.npz"  # renamed once whole: a resume never reads half a file
                np.savez(partial, indices=result["indices"], pooled=result["pooled"], maps=result["maps"])
                partial.replace(done)
                (fold_dir / "fold.json").write_text(json.dumps({
                    "fold": fold, "member": member, "train_images": len(train_index), "test_images": len(test_index),
                    "seconds": round(time.perf_counter() - started, 1),
                }))
                member_name = f" member {member + 1}/{config.members}" if config.members > 1 else ""
                logger.info("fold %d/%d%s done in %.0f s", fold + 1, config.folds, member_name, time.perf_counter() - started)
            with np.load(done) as data:
                if not np.array_equal(data["indices"], test_index) or data["maps"].ndim != 4:
                    raise DatasetError(f"{done} was made from other data: delete {config.work_dir} and train again")
                member_maps.append(data["maps"].astype(np.float32))
                if config.members == 1:
                    pooled[test_index] = data["pooled"]
            weights.append(fold_dir / "final.weights.h5")
        maps[test_index] = np.mean(member_maps, axis=0)
        if config.members > 1:
            pooled[test_index] = np.stack([pooled_logits(maps[i], cells[i] > 0) for i in test_index])
    predictions = Predictions(
        list(arrays.records), pooled, maps, cells > 0, arrays.lesions, HEATMAP_STRIDE, config.fit.sharpness
    )
    return predictions, weights


def export_ensemble(weights: Sequence[Path], rows: int, columns: int, widths: tuple[int, ...], path: Path) -> None:
    """One Keras model whose logits are the mean of the fold networks' logits."""
    import keras

    from mammogate.training.model import build_heatmap_model

    image = keras.Input((rows, columns, 1), name="image")
    outputs = []
    for number, weight_file in enumerate(weights):
        member = build_heatmap_model(None, None, widths=widths, name=f"member{number}")
        member.load_weights(weight_file)
        outputs.append(member(image))
    logits = outputs[0] if len(outputs) == 1 else keras.layers.Average(name="ensemble")(outputs)
    keras.Model(image, logits, name=DEFAULT_MODEL_NAME).save(path)


def baseline(arrays: GridArrays, folds: np.ndarray, keep: np.ndarray, n_boot: int) -> dict[str, Any]:
    """AUC (malignant vs rest, per image) of a cross-validated logistic regression on trivial
    image statistics, and of each statistic alone (the better direction)."""
    index = np.flatnonzero(keep)
    labels = np.array([arrays.records[i].malignant for i in index], dtype=float)
    groups = [arrays.records[i].patient for i in index]
    features = arrays.statistics[index]
    combined = cross_validated_logistic(features, labels, folds[index])
    single = {}
    from mammogate.training.metrics import roc_auc

    for column, name in enumerate(STATISTICS):
        auc = roc_auc(labels, features[:, column])
        single[name] = round(max(auc, 1 - auc), 4) if not np.isnan(auc) else None
    return {
        "features": list(STATISTICS),
        "logistic_regression": binary_summary(labels, combined, groups, n_boot=n_boot),
        "single_statistic_auc": single,
    }


def _real(records: Sequence[Any]) -> np.ndarray:
    return np.array([r.source != "synthetic" for r in records])


def train(config: TrainConfig) -> Path:
    """Cross-validate, export the ensemble bundle to ``config.out`` and check it; returns its path."""
    if config.members < 1:
        raise DatasetError(f"--members {config.members}: a fold needs at least one network")
    from mammogate.inference.tf_runtime import tensorflow

    tensorflow()
    import keras

    started, started_at = time.perf_counter(), time.time()
    datasets = _content_hashes(load_all(config.datasets))
    records = [r for d in datasets for r in d.records]
    rows, columns = config.grid
    arrays = build_cache(records, rows, columns, config.work_dir / "cache", workers=config.workers, progress=config.progress)
    if len(arrays) < 2 * config.folds:
        raise DatasetError(f"{len(arrays)} usable images are too few for {config.folds} folds")
    folds = patient_folds(arrays.records, config.folds, config.seed)
    real = _real(arrays.records)
    malignant = np.array([r.malignant for r in arrays.records])
    # calibration and operating points come from the real images when they hold both classes
    calibration_rows = real if len(set(malignant[real])) == 2 else np.ones(len(arrays), dtype=bool)
    if len(set(malignant[calibration_rows])) < 2:
        raise DatasetError("the data sets hold no image with a cancer, or none without: nothing to learn or calibrate")
    predictions, weights = cross_validate(config, arrays, folds)

    abnormal = np.array([r.abnormal for r in arrays.records])
    slope, intercept = fit_platt(predictions.pooled[calibration_rows, 0], malignant[calibration_rows])
    lesion_slope, lesion_intercept = fit_platt(predictions.pooled[calibration_rows, 1], abnormal[calibration_rows])
    calibration = Calibration(slope, intercept)
    lesion_calibration = Calibration(lesion_slope, lesion_intercept)
    calibrated_rows = subset(predictions, calibration_rows)
    probabilities = calibration.probability(calibrated_rows.pooled[:, 0])
    points = choose_operating_points(calibrated_rows.records, probabilities)
    held_out_points = nested_operating_points(calibrated_rows.records, probabilities, folds[calibration_rows])
    default = next(p for p in points if p["name"] == DEFAULT_OPERATING_POINT)

    metrics: dict[str, Any] = {}
    for source, part in by_source(predictions).items():
        metrics[source] = summarise(part, calibration, lesion_calibration, points, n_boot=config.n_boot)
        in_source = np.array([r.source == source for r in arrays.records])
        metrics[source]["within_fold"] = within_fold_aucs(part, folds[in_source])
        if source != "synthetic":
            metrics[source]["baseline_trivial_statistics"] = baseline(arrays, folds, in_source, config.n_boot)
    if real.any() and len({r.source for r in calibrated_rows.records}) > 1:
        metrics["all_real"] = summarise(calibrated_rows, calibration, lesion_calibration, points, n_boot=config.n_boot)

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    export_ensemble(weights, rows, columns, config.fit.widths, out / MODEL_FILE)
    (out / "NOTICE").write_text(_notice(datasets), encoding="utf-8")
    (out / TRAINING_IMAGES_FILE).write_text(
        "".join(f"{r.content_hash or '-'}  {r.uid}\n" for r in arrays.records), encoding="utf-8"
    )
    fold_files = [
        _member_dir(config.work_dir, f, m) / "fold.json" for f in range(config.folds) for m in range(config.members)
    ]
    fold_runs = [(json.loads(path.read_text()).get("seconds") or 0.0, path.stat().st_mtime) for path in fold_files if path.is_file()]
    fold_seconds = [seconds for seconds, _ in fold_runs]
    # a resumed run counts the folds an earlier run trained
    earlier_seconds = sum(seconds for seconds, written in fold_runs if written < started_at)
    metadata: dict[str, Any] = {
        "name": DEFAULT_MODEL_NAME,
        "version": config.version,
        "input_size": [rows, columns],
        "outputs": {
            "kind": "logit map",
            "heatmap_stride": HEATMAP_STRIDE,
            "channels": list(CHANNELS),
            "image_score": f"masked log-sum-exp of the malignant channel over the breast (sharpness {config.fit.sharpness}), then calibrated",
            "ensemble": f"mean of the logits of {len(weights)} networks, {config.members} per cross-validation fold",
        },
        "sharpness": config.fit.sharpness,
        "calibration": {
            "method": "Platt scaling (logistic regression of the label on the pooled logit), fitted on the out-of-fold logits of the real training images",
            "malignant": {"slope": round(slope, 6), "intercept": round(intercept, 6)},
            "lesion": {"slope": round(lesion_slope, 6), "intercept": round(lesion_intercept, 6)},
            "training_prevalence": round(float(malignant[calibration_rows].mean()), 4),
        },
        "preprocessing": {
            "pipeline": "decode; whole-block mean down to at most twice the grid's rows before the modality and VOI LUTs; presentation LUT / MONOCHROME1",
            "inversion": "an image whose background is bright is inverted (exports that lost MONOCHROME1)",
            "breast": "segmented (largest tissue component on the chest-wall edge, labels and markers excluded); everything else set to 0",
            "pectoral": "found on non-CC views by a fitted line; kept in the image, excluded from scores and findings",
            "orientation": "chest wall on the left (PatientOrientation, else the breast mask)",
            "crop_and_scale": f"cropped to the breast with a 2 % margin, aspect kept, fitted to {rows}x{columns}, padded right and bottom",
            "intensity": "1st to 99.5th percentile within the breast mapped to [0, 1]",
            "grid_resolution": "a breast 180-260 mm tall gets 0.28-0.41 mm per grid pixel: a 5 mm mass spans 12-18 pixels",
        },
        "operating_point": {**default, "chosen_on": "out-of-fold predictions of the real training images, patient level (a patient's maximum)"},
        "operating_points": points,
        "operating_points_on_unseen_folds": {
            "method": "per fold: points chosen on the other folds' out-of-fold predictions, applied to this fold; pooled",
            "points": json_safe(held_out_points),
        },
        "training_data": {
            "datasets": [{"spec": d.spec, "name": d.name, **d.counts()} for d in datasets],
            "images_used": len(arrays),
            "images_left_out": [{"image": r.uid, "reason": reason} for r, reason in arrays.failed],
            "grid": [rows, columns],
            "folds": config.folds,
            "members_per_fold": config.members,
            "seed": config.seed,
            "fit": config.fit.to_json(),
            "seconds_per_fold": fold_seconds,
            "training_seconds": round(time.perf_counter() - started + earlier_seconds, 1),
        },
        "cross_validation": json_safe(metrics),
        "evaluation": {},
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        "framework": {"keras": keras.__version__},
        "licence": _licence(datasets),
        "intended_use": "2D For Presentation screening mammograms (CC, MLO) of one breast; research and decision support only; " + DISCLAIMER,
        "known_limits": KNOWN_LIMITS,
    }
    write_model_json(out, metadata)
    if config.synthetic_check_studies:
        from mammogate.training.synthetic_check import evaluate_synthetic

        metadata["evaluation"]["held_out_synthetic"] = json_safe(evaluate_synthetic(out, config.synthetic_check_studies))
        write_model_json(out, metadata)
    load_bundle(out)
    logger.info("bundle written to %s in %.0f s", out, time.perf_counter() - started)
    return out


def _has_cbis(datasets: Sequence[Dataset]) -> bool:
    return any(d.spec.startswith("cbis:") for d in datasets)


def _licence(datasets: Sequence[Dataset]) -> str:
    names = {d.name for d in datasets}
    terms = ["mammogate code: MIT."]
    if "mias" in names:
        terms.append("Trained on mini-MIAS: research use only, no renting or selling.")
    if "kaggle_bcd640" in names:
        terms.append("Trained on kaggle_bcd640 (RSNA-like screening images): research and non-commercial use only.")
    if _has_cbis(datasets):
        terms.append("Trained on CBIS-DDSM images: CC BY 3.0, attribution in NOTICE.")
    if names == {"synthetic"}:
        terms.append("Trained only on synthetic images: no patient data.")
    terms.append(DISCLAIMER)
    return " ".join(terms)


def _notice(datasets: Sequence[Dataset]) -> str:
    names = {d.name for d in datasets}
    parts = [f"{DEFAULT_MODEL_NAME} model bundle", "", _licence(datasets), "", "Data the weights were trained on:"]
    for dataset in datasets:
        counts = dataset.counts()
        parts.append(f"- {dataset.name}: {counts['images']} images of {counts['patients']} patients")
    parts.append("")
    if "mias" in names:
        parts.append(MIAS_NOTICE)
    if "kaggle_bcd640" in names:
        parts.append(KAGGLE_NOTICE)
    parts.append(CBIS_NOTICE + (" Weights trained on it credit it here." if _has_cbis(datasets)
                                else " (mammogate's tests use its images; no cbis: data set trained these weights.)"))
    return "\n".join(parts) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammogate train",
        description="Cross-validate the mammogate CNN on labelled data sets and write a model bundle.",
    )
    return add_train_arguments(parser)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    rows, _, columns = str(args.grid).partition("x")
    widths = tuple(int(w) for w in str(args.widths).split(",")) if args.widths else WIDTHS
    fit = FitOptions(
        epochs=args.epochs, patch_epochs=args.patch_epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, widths=widths, seed=args.seed,
    )
    if args.no_augment:
        from mammogate.training.fit import augmentation_off

        fit = augmentation_off(fit)
    return TrainConfig(
        datasets=tuple(args.dataset), out=args.out, work=args.work, grid=(int(rows), int(columns)),
        folds=args.folds, members=args.members, fit=fit, seed=args.seed, synthetic_check_studies=args.synthetic_check,
        workers=args.workers, progress=not args.quiet,
    )


def run_train(args: argparse.Namespace) -> int:
    """What ``mammogate train`` runs: train and print the bundle path; the exit status."""
    try:
        path = train(config_from_args(args))
    except DatasetError as exc:
        logger.error("%s", exc)
        return 2
    print(path)  # noqa: T201 - the command's output is the bundle path
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_train(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
