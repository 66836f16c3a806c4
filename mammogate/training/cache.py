"""Prepared model-grid arrays of data set records, cached on disk.

Each record goes through ``mammogate.imaging.prepare`` once (the serving path: DICOM through
``prepare_dataset``, pictures through ``prepare_picture``) and is stored as one small ``.npz``
under ``CACHE/<preprocessing version>/<rows>x<columns>/``, named by the record and the sha1 of
its file, so a changed file, grid or preprocessing is never served from a stale cache and an
interrupted build resumes where it stopped. Images are kept as uint8 (the grid is already
normalised to [0, 1] within the breast); masks as bits of one uint8 (1 breast, 2 pectoral).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mammogate.imaging import ImagingError, read_dataset
from mammogate.imaging.prepare import (
    PREPROCESSING_VERSION,
    PreparedImage,
    prepare_dataset,
    prepare_picture,
)
from mammogate.training.datasets import Record, file_hash

logger = logging.getLogger(__name__)

BREAST_BIT, PECTORAL_BIT = 1, 2
CACHE_FORMAT = 2
# Trivial image statistics kept beside each grid, for the shortcut baseline of the report.
STATISTICS = (
    "mean", "std", "p05", "p50", "p95", "inverted", "border_mean", "breast_share", "aspect", "bright_share",
)


@dataclass
class GridArrays:
    """Prepared records, aligned by index."""

    records: list[Record]
    images: np.ndarray  # uint8 (N, rows, columns)
    masks: np.ndarray  # uint8 (N, rows, columns): BREAST_BIT | PECTORAL_BIT
    lesions: list[np.ndarray]  # per record (k, 4): grid column, grid row, grid radius, malignant
    statistics: np.ndarray  # (N, len(STATISTICS)) trivial image statistics
    failed: list[tuple[Record, str]]  # records that could not be prepared, with the reason

    def __len__(self) -> int:
        return len(self.records)


def prepare_record(record: Record, rows: int, columns: int) -> PreparedImage:
    """A record's pixels through the one preprocessing path. Raises ``ImagingError``."""
    if record.synthetic_seed is not None:
        from mammogate.training.synthetic import make_study

        study = make_study(
            seed=record.synthetic_seed, lesion=record.synthetic_lesion,
            burned_in_label=record.synthetic_seed % 2 == 0,
        )
        return prepare_dataset(study.datasets[record.synthetic_index], rows, columns)
    assert record.path is not None
    if record.is_dicom:
        return prepare_dataset(read_dataset(record.path), rows, columns)
    try:
        with Image.open(record.path) as picture:
            pixels = np.asarray(picture.convert("I;16") if picture.mode in ("I", "I;16") else picture.convert("L"))
    except (OSError, ValueError) as exc:
        raise ImagingError(f"cannot read {record.path.name}: {exc}") from exc
    return prepare_picture(pixels, rows, columns, view=record.view)


def image_statistics(prepared: PreparedImage) -> np.ndarray:
    """``STATISTICS`` of an image: intensity moments of the whole display image (after the
    inversion check), whether it was inverted, the border's brightness as exported, the breast's
    share of the image, the image's aspect and its share of near-white pixels."""
    display = prepared.display
    small = display[:: max(1, display.shape[0] // 256), :: max(1, display.shape[1] // 256)]
    raw = 1.0 - small if prepared.inverted else small
    border = np.concatenate([raw[:4].ravel(), raw[-4:].ravel(), raw[:, :4].ravel(), raw[:, -4:].ravel()])
    transform = prepared.transform
    share = (transform.box_rows * transform.box_columns) / float(transform.rows * transform.columns)
    p05, p50, p95 = np.percentile(small, [5, 50, 95])
    return np.array([
        small.mean(), small.std(), p05, p50, p95, float(prepared.inverted), border.mean(), share,
        transform.rows / transform.columns, float((small > 0.9).mean()),
    ], dtype=np.float32)


def _cache_name(record: Record, rows: int, columns: int) -> str:
    if record.path is not None:
        content = record.content_hash or file_hash(record.path)
    else:
        from mammogate.training.synthetic import GENERATOR_VERSION

        content = f"synthetic-{GENERATOR_VERSION}"
    key = f"{record.uid}|{content}|{rows}x{columns}|{PREPROCESSING_VERSION}|{CACHE_FORMAT}"
    return hashlib.sha1(key.encode()).hexdigest() + ".npz"


def _build_one(args: tuple[Record, int, int, str]) -> str | None:
    record, rows, columns, path = args
    try:
        prepared = prepare_record(record, rows, columns)
    except ImagingError as exc:
        return str(exc)
    image = np.rint(prepared.grid * 255).astype(np.uint8)
    mask = (prepared.breast * BREAST_BIT | prepared.pectoral * PECTORAL_BIT).astype(np.uint8)
    lesions = np.zeros((len(record.lesions), 4), dtype=np.float32)
    for index, lesion in enumerate(record.lesions):
        gx, gy = prepared.transform.to_grid(lesion.x, lesion.y)
        radius = lesion.radius * np.sqrt(prepared.transform.scale_x * prepared.transform.scale_y)
        lesions[index] = (gx, gy, radius, float(lesion.malignant))
    temporary = path + f".{os.getpid()}.tmp.npz"
    np.savez_compressed(temporary, image=image, mask=mask, lesions=lesions, statistics=image_statistics(prepared))
    os.replace(temporary, path)
    return None


def build_cache(
    records: Sequence[Record], rows: int, columns: int, cache_dir: Path, *, workers: int = 0,
    progress: bool = True,
) -> GridArrays:
    """Prepare every record (from the cache where it is there) and load them into memory."""
    folder = Path(cache_dir) / f"v{PREPROCESSING_VERSION}" / f"{rows}x{columns}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [str(folder / _cache_name(r, rows, columns)) for r in records]
    todo = [(r, rows, columns, p) for r, p in zip(records, paths, strict=True) if not os.path.exists(p)]
    failures: dict[str, str] = {}
    if todo:
        logger.info("preparing %d of %d images into %s", len(todo), len(records), folder)
        workers = workers or max(1, (os.cpu_count() or 1))
        with _progress(progress) as bar:
            task = bar.add_task("preparing images", total=len(todo)) if bar is not None else None
            if workers > 1:
                with ProcessPoolExecutor(workers) as pool:
                    outcomes = pool.map(_build_one, todo, chunksize=8)
                    for item, outcome in zip(todo, outcomes, strict=True):
                        if outcome is not None:
                            failures[item[3]] = outcome
                        if bar is not None and task is not None:
                            bar.advance(task)
            else:
                for item in todo:
                    outcome = _build_one(item)
                    if outcome is not None:
                        failures[item[3]] = outcome
                    if bar is not None and task is not None:
                        bar.advance(task)
    kept: list[Record] = []
    images, masks, lesions, statistics = [], [], [], []
    failed: list[tuple[Record, str]] = []
    for record, path in zip(records, paths, strict=True):
        if path in failures or not os.path.exists(path):
            failed.append((record, failures.get(path, "not prepared")))
            continue
        with np.load(path) as data:
            images.append(data["image"])
            masks.append(data["mask"])
            lesions.append(data["lesions"])
            statistics.append(data["statistics"])
        kept.append(record)
    for record, reason in failed:
        logger.warning("left out %s: %s", record.uid, reason)
    if not kept:
        empty = np.zeros((0, rows, columns), np.uint8)
        return GridArrays([], empty, empty.copy(), [], np.zeros((0, len(STATISTICS)), np.float32), failed)
    return GridArrays(kept, np.stack(images), np.stack(masks), lesions, np.stack(statistics), failed)


class _NoProgress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(enabled: bool):  # type: ignore[no-untyped-def]
    if not enabled:
        return _NoProgress()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
