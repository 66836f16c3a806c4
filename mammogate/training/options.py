"""Command-line options of ``mammogate train`` and ``mammogate evaluate`` (TensorFlow-free, so
the CLI parser builds fast)."""

from __future__ import annotations

import argparse
from pathlib import Path

DATASET_HELP = (
    "a data set: mias:PATH (a folder laid out like mini-MIAS), csv:PATH (images + labels.csv), "
    "dicom-csv:PATH (DICOM + labels.csv, laterality and view from the headers), cbis:PATH "
    "(CBIS-DDSM DICOM + labels.csv in its own terms), synthetic:N[@SEED]; "
    "repeat for several"
)


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--dataset", action="append", required=True, metavar="SPEC", help=DATASET_HELP)
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    parser.add_argument(
        "--work", type=Path, default=None,
        help="folder for the image cache, fold checkpoints and out-of-fold predictions "
        "(default: .OUT.work beside OUT); training started again with the same folder resumes",
    )
    parser.add_argument("--folds", type=int, default=5, help="patient-level cross-validation folds (default 5)")
    parser.add_argument(
        "--members", type=int, default=1,
        help="networks per fold, each from its own seed; the out-of-fold predictions and the bundle "
        "average their logits (default 1)",
    )
    parser.add_argument("--epochs", type=int, default=10, help="whole-image epochs per fold (default 10)")
    parser.add_argument("--patch-epochs", type=int, default=3, help="lesion-patch epochs per fold before the whole images (default 3; 0: none)")
    parser.add_argument("--grid", default="640x384", help="model input ROWSxCOLUMNS, multiples of 32 (default 640x384)")
    parser.add_argument("--batch-size", type=int, default=12, help="whole-image batch size (default 12)")
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="peak learning rate (default 0.002)")
    parser.add_argument("--widths", default="", help="channel widths, 5 comma-separated numbers (default 24,32,48,96,128)")
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation (for ablations)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--synthetic-check", type=int, default=20,
        help="held-out synthetic studies the bundle is checked on end to end (default 20; 0: none)",
    )
    parser.add_argument("--workers", type=int, default=0, help="processes preparing images (default: one per core)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", type=Path, default=None, help="model bundle directory (default: the shipped one)")
    parser.add_argument("--dataset", action="append", required=True, metavar="SPEC", help=DATASET_HELP)
    parser.add_argument("--out", type=Path, required=True, help="folder for report.json, report.html and its plots")
    parser.add_argument(
        "--include-training-images", action="store_true",
        help="also score images the bundle was trained on (left out by default: their numbers are not independent)",
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals (default 1000)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser
