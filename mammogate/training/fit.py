"""Fitting one network: an optional patch stage, then whole images, with checkpoints.

Stage 1 (patches, Shen et al. 2019): 128 x 128 crops of the grid centred (with jitter) on the
lesions whose locations are known (mini-MIAS, synthetic) and at random places in the breast of
normal images; each crop's label is whether a lesion centre lies in it, and its cells are
supervised where the lesion is. Stage 2 (whole images): every training image, its label pooled
from the whole breast (``masked_lse``), plus the cell targets where locations are known, and
every cell of a normal image towards 0. Both stages run the same fully convolutional net.

Losses: binary cross-entropy of the pooled logits (channel 0 malignant, channel 1 any lesion)
plus ``cell_weight`` times the mean weighted cross-entropy of the cells (lesion cells weighted
``positive_cell_weight``). Optimiser AdamW with a warm-up then cosine decay.

A checkpoint (weights + optimiser-free state: epoch, stage, RNG seed) is written after every
epoch into ``work_dir``; ``fit`` started again on the same ``work_dir`` resumes from it.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mammogate.inference.scoring import DEFAULT_SHARPNESS
from mammogate.training.augment import NONE, AugmentOptions, augment
from mammogate.training.cache import BREAST_BIT, PECTORAL_BIT, GridArrays
from mammogate.training.model import (
    CHANNELS,
    HEATMAP_STRIDE,
    WIDTHS,
    build_heatmap_model,
    masked_lse,
)

logger = logging.getLogger(__name__)

PATCH = 128


@dataclass(frozen=True)
class FitOptions:
    epochs: int = 10
    patch_epochs: int = 3
    batch_size: int = 12
    patch_batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    sharpness: float = DEFAULT_SHARPNESS
    cell_weight: float = 1.0
    positive_cell_weight: float = 8.0
    negative_image_cell_weight: float = 0.2
    oversample: dict[str, float] = field(default_factory=lambda: {"mias": 3.0})
    widths: tuple[int, ...] = WIDTHS
    augment: AugmentOptions = field(default_factory=AugmentOptions)
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["augment"] = asdict(self.augment)
        return data


def scoring_cells(masks: np.ndarray, stride: int = HEATMAP_STRIDE) -> np.ndarray:
    """Grid masks (N, rows, columns) of bits → (N, rows/stride, columns/stride) float cells
    that are at least half breast and not pectoral muscle (``inference.scoring.cell_mask``)."""
    from mammogate.inference.scoring import cell_mask

    inside = ((masks & BREAST_BIT) > 0) & ~((masks & PECTORAL_BIT) > 0)
    rows, columns = masks.shape[1] // stride, masks.shape[2] // stride
    return np.stack([cell_mask(m, rows, columns) for m in inside]).astype(np.float32)


def cell_targets(
    lesions: np.ndarray, cells: np.ndarray, *, has_locations: bool, malignant: int, abnormal: int,
    options: FitOptions, stride: int = HEATMAP_STRIDE,
) -> tuple[np.ndarray, np.ndarray]:
    """(targets, weights), each (h, w, 2), for one image's cells.

    With known lesion locations: cells whose centre lies within a lesion's radius (at least the
    cell holding its centre) are lesion cells (channel 1; channel 0 too when it is malignant),
    every other breast cell is a 0. A normal image without locations: every breast cell a 0, at
    a lower weight. A lesion image without locations: no cell supervision."""
    rows, columns = cells.shape
    targets = np.zeros((rows, columns, 2), dtype=np.float32)
    weights = np.zeros((rows, columns, 2), dtype=np.float32)
    if has_locations or (abnormal == 0 and malignant == 0):
        weight = 1.0 if has_locations else options.negative_image_cell_weight
        weights[...] = (cells > 0)[..., None] * weight
    if has_locations:
        yy, xx = np.mgrid[0:rows, 0:columns].astype(np.float32)
        for x, y, radius, is_malignant in lesions:
            cx, cy = x / stride, y / stride
            if not (0 <= cx < columns and 0 <= cy < rows):
                continue  # moved off the grid by the augmentation
            r = max(float(radius) / stride, 0.75)
            inside = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r
            row, column = int(np.clip(cy, 0, rows - 1)), int(np.clip(cx, 0, columns - 1))
            inside[row, column] = True
            targets[inside, 1] = 1.0
            weights[inside, 1] = options.positive_cell_weight
            if is_malignant > 0.5:
                targets[inside, 0] = 1.0
                weights[inside, 0] = options.positive_cell_weight
    return targets, weights


def _pooled_loss(y_true: Any, y_pred: Any) -> Any:
    from keras import ops

    labels, weights = y_true[:, :2], y_true[:, 2:]
    bce = ops.maximum(y_pred, 0) - y_pred * labels + ops.log1p(ops.exp(-ops.abs(y_pred)))
    return ops.sum(bce * weights, axis=1)


def _make_cell_loss(cell_weight: float) -> Callable[[Any, Any], Any]:
    def cell_loss(y_true: Any, y_pred: Any) -> Any:
        from keras import ops

        targets, weights = y_true[..., :2], y_true[..., 2:]
        bce = ops.maximum(y_pred, 0) - y_pred * targets + ops.log1p(ops.exp(-ops.abs(y_pred)))
        total = ops.sum(bce * weights, axis=(1, 2, 3))
        count = ops.maximum(ops.sum(ops.cast(weights > 0, "float32"), axis=(1, 2, 3)), 1.0)
        return cell_weight * total / count

    return cell_loss


def build_training_model(heatmap_model: Any, sharpness: float) -> Any:
    import keras

    image = keras.Input((None, None, 1), name="image")
    cells = keras.Input((None, None, 1), name="cells")
    logits = heatmap_model(image)
    pooled = keras.layers.Lambda(lambda t: masked_lse(t[0], t[1], sharpness), name="pooled")([logits, cells])
    identity = keras.layers.Identity(name="cell_logits")(logits)
    return keras.Model([image, cells], [pooled, identity])


@dataclass
class _Batch:
    images: np.ndarray
    cells: np.ndarray
    pooled_true: np.ndarray
    cell_true: np.ndarray


def _prefetch(generator: Iterator[_Batch], depth: int = 3) -> Iterator[_Batch]:
    """Make batches in a thread while the previous ones train (numpy and Pillow release the GIL)."""
    buffer: queue.Queue[_Batch | BaseException | None] = queue.Queue(depth)

    def worker() -> None:
        try:
            for item in generator:
                buffer.put(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            buffer.put(exc)
            return
        buffer.put(None)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    while True:
        item = buffer.get()
        if item is None:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


class Trainer:
    """Fits one heatmap model on ``arrays[indices]``."""

    def __init__(self, arrays: GridArrays, indices: np.ndarray, options: FitOptions, work_dir: Path) -> None:
        self.arrays = arrays
        self.indices = np.asarray(indices)
        self.options = options
        self.work_dir = Path(work_dir)
        self.rows, self.columns = arrays.images.shape[1:]
        self.malignant = np.array([r.malignant for r in arrays.records], dtype=np.float32)
        self.abnormal = np.array([r.abnormal for r in arrays.records], dtype=np.float32)
        self.has_locations = np.array(
            [bool(r.lesions) or (r.abnormal == 0 and r.source in ("mias", "synthetic")) for r in arrays.records]
        )
        # abnormal images whose lesions have no coordinates are not "located"
        self.has_locations &= np.array([(r.abnormal == 0) or bool(len(arrays.lesions[i])) for i, r in enumerate(arrays.records)])

    # -- sampling -------------------------------------------------------------------------------
    def _epoch_order(self, rng: np.random.Generator) -> np.ndarray:
        picks = []
        for index in self.indices:
            factor = self.options.oversample.get(self.arrays.records[index].source, 1.0)
            whole, fraction = int(factor), factor - int(factor)
            picks.extend([index] * whole)
            if rng.random() < fraction:
                picks.append(index)
        return rng.permutation(np.array(picks, dtype=np.int64))

    def _image_batches(self, order: np.ndarray, rng: np.random.Generator) -> Iterator[_Batch]:
        size = self.options.batch_size
        for start in range(0, max(len(order) - size + 1, 1), size):
            yield self._batch(order[start : start + size], rng, patch=False)  # a small set: one short batch

    def _patch_centres(self, rng: np.random.Generator) -> list[tuple[int, float, float]]:
        """(record index, column, row): every located lesion 4 times with jitter, and as many
        random breast places of normal images."""
        positives: list[tuple[int, float, float]] = []
        negatives_pool = []
        for index in self.indices:
            lesions = self.arrays.lesions[index]
            if len(lesions) and self.has_locations[index]:
                for x, y, radius, _m in lesions:
                    for _ in range(4):
                        jitter = min(PATCH / 4, max(float(radius), 8.0))
                        positives.append((int(index), x + rng.uniform(-jitter, jitter), y + rng.uniform(-jitter, jitter)))
            elif self.abnormal[index] == 0 and self.malignant[index] == 0:
                negatives_pool.append(int(index))
        negatives: list[tuple[int, float, float]] = []
        if negatives_pool:
            for index in rng.choice(negatives_pool, size=max(len(positives), 1)):
                breast = np.argwhere((self.arrays.masks[index] & BREAST_BIT) > 0)
                if len(breast):
                    row, column = breast[rng.integers(len(breast))]
                    negatives.append((int(index), float(column), float(row)))
        centres = positives + negatives
        return [centres[i] for i in rng.permutation(len(centres))]

    def _patch_batches(self, rng: np.random.Generator) -> Iterator[_Batch]:
        centres = self._patch_centres(rng)
        size = self.options.patch_batch_size
        for start in range(0, len(centres) - size + 1, size):
            yield self._patch_batch(centres[start : start + size], rng)

    # -- batches --------------------------------------------------------------------------------
    def _batch(self, picks: np.ndarray, rng: np.random.Generator, *, patch: bool) -> _Batch:
        images: list[np.ndarray] = []
        cells: list[np.ndarray] = []
        pooled: list[np.ndarray] = []
        cell_true: list[np.ndarray] = []
        for index in picks:
            image, mask, lesions = augment(
                self.arrays.images[index], self.arrays.masks[index], self.arrays.lesions[index], rng,
                self.options.augment,
            )
            self._append(int(index), image, mask, lesions, images, cells, pooled, cell_true)
        return _Batch(np.stack(images)[..., None], np.stack(cells)[..., None], np.stack(pooled), np.stack(cell_true))

    def _patch_batch(self, centres: list[tuple[int, float, float]], rng: np.random.Generator) -> _Batch:
        images: list[np.ndarray] = []
        cells: list[np.ndarray] = []
        pooled: list[np.ndarray] = []
        cell_true: list[np.ndarray] = []
        for index, x, y in centres:
            # the crop's centre rides along with the lesions through the augmentation
            with_centre = np.vstack([self.arrays.lesions[index].reshape(-1, 4), [[x, y, 0.0, -1.0]]])
            image, mask, moved_all = augment(
                self.arrays.images[index], self.arrays.masks[index], with_centre, rng,
                AugmentOptions(flip=0.5, scale=(0.9, 1.1), shift=0.0, elastic=0.0),
            )
            x, y = float(moved_all[-1, 0]), float(moved_all[-1, 1])
            lesions = moved_all[:-1]
            top = int(np.clip(round(y - PATCH / 2), 0, self.rows - PATCH))
            left = int(np.clip(round(x - PATCH / 2), 0, self.columns - PATCH))
            crop = (slice(top, top + PATCH), slice(left, left + PATCH))
            moved = lesions.copy()
            moved[:, 0] -= left
            moved[:, 1] -= top
            inside = (moved[:, 0] >= 0) & (moved[:, 0] < PATCH) & (moved[:, 1] >= 0) & (moved[:, 1] < PATCH)
            self._append(index, image[crop], mask[crop], moved[inside], images, cells, pooled, cell_true, patch=True)
        return _Batch(np.stack(images)[..., None], np.stack(cells)[..., None], np.stack(pooled), np.stack(cell_true))

    def _append(
        self, index: int, image: np.ndarray, mask: np.ndarray, lesions: np.ndarray,
        images: list[np.ndarray], cells: list[np.ndarray], pooled: list[np.ndarray], cell_true: list[np.ndarray],
        *, patch: bool = False,
    ) -> None:
        cell = scoring_cells(mask[None])[0]
        located = bool(self.has_locations[index])
        if patch:
            malignant = float(bool(len(lesions)) and bool((lesions[:, 3] > 0.5).any()))
            abnormal = float(bool(len(lesions)))
        else:
            malignant, abnormal = float(self.malignant[index]), float(self.abnormal[index])
        targets, weights = cell_targets(
            lesions, cell, has_locations=located, malignant=int(malignant), abnormal=int(abnormal),
            options=self.options,
        )
        images.append(image)
        cells.append(cell)
        pooled.append(np.array([malignant, abnormal, 1.0, 1.0], dtype=np.float32))
        cell_true.append(np.concatenate([targets, weights], axis=-1))

    # -- fitting --------------------------------------------------------------------------------
    def _state_path(self) -> Path:
        return self.work_dir / "state.json"

    def _weights_path(self) -> Path:
        return self.work_dir / "checkpoint.weights.h5"

    def fit(
        self, *, progress: Callable[[str, int, int], None] | None = None,
        epoch_end: Callable[[str, int, Any], None] | None = None,
    ) -> Any:
        """Train (or resume) and return the heatmap model; writes ``final.weights.h5``.
        ``epoch_end(stage, epoch, heatmap_model)`` is called after each epoch (experiments)."""
        import keras

        from mammogate.inference.tf_runtime import tensorflow

        tensorflow()  # one thread pool, deterministic ops
        self.work_dir.mkdir(parents=True, exist_ok=True)
        final = self.work_dir / "final.weights.h5"
        keras.utils.set_random_seed(self.options.seed)
        heatmap = build_heatmap_model(None, None, widths=self.options.widths)
        if final.is_file():
            heatmap.load_weights(final)
            return heatmap
        state: dict[str, Any] = {"stage": "patch", "epoch": 0}
        if self._state_path().is_file() and self._weights_path().is_file():
            state = json.loads(self._state_path().read_text())
            heatmap.load_weights(self._weights_path())
            logger.info("resuming %s at %s epoch %d", self.work_dir, state["stage"], state["epoch"])
        stages = [("patch", self.options.patch_epochs), ("image", self.options.epochs)]
        for stage, epochs in stages:
            order = ["patch", "image", "done"]
            if order.index(str(state["stage"])) > order.index(stage):
                continue  # this stage finished before the interruption
            first = int(state["epoch"]) if state["stage"] == stage else 0
            if first >= epochs:
                continue
            model = self._compiled(heatmap, stage, epochs, first)
            for epoch in range(first, epochs):
                rng = np.random.default_rng([self.options.seed, 1 if stage == "patch" else 2, epoch])
                started = time.perf_counter()
                batches = (
                    self._patch_batches(rng) if stage == "patch"
                    else self._image_batches(self._epoch_order(rng), rng)
                )
                losses = []
                for number, batch in enumerate(_prefetch(batches)):
                    result = model.train_on_batch(
                        [batch.images, batch.cells], [batch.pooled_true, batch.cell_true]
                    )
                    losses.append(float(np.atleast_1d(result)[0]))
                    if progress is not None:
                        progress(stage, epoch, number)
                logger.info(
                    "%s: %s epoch %d/%d loss %.4f (%d batches, %.0f s)", self.work_dir.name, stage, epoch + 1,
                    epochs, float(np.mean(losses)) if losses else float("nan"), len(losses),
                    time.perf_counter() - started,
                )
                self._checkpoint(heatmap, {"stage": stage, "epoch": epoch + 1})
                if epoch_end is not None:
                    epoch_end(stage, epoch, heatmap)
            state = {"stage": "image" if stage == "patch" else "done", "epoch": 0}
            self._checkpoint(heatmap, state)
        _save_atomically(heatmap, final)
        return heatmap

    def _checkpoint(self, heatmap: Any, state: dict[str, Any]) -> None:
        """Weights, then the state that names them, each replaced atomically: a kill at any
        moment leaves a checkpoint that loads."""
        _save_atomically(heatmap, self._weights_path())
        temporary = self._state_path().with_suffix(".tmp")
        temporary.write_text(json.dumps(state))
        os.replace(temporary, self._state_path())

    def _steps(self, stage: str, epochs: int) -> int:
        if stage == "patch":
            lesions = sum(len(self.arrays.lesions[i]) for i in self.indices if self.has_locations[i])
            per_epoch = max(1, (8 * lesions) // self.options.patch_batch_size)
        else:
            expected = sum(self.options.oversample.get(self.arrays.records[i].source, 1.0) for i in self.indices)
            per_epoch = max(1, int(expected) // self.options.batch_size)
        return max(1, per_epoch * epochs)

    def _compiled(self, heatmap: Any, stage: str, epochs: int, first_epoch: int) -> Any:
        import keras

        total = self._steps(stage, epochs)
        done = self._steps(stage, first_epoch) if first_epoch else 0
        warmup = min(total // 10, self._steps(stage, 1))
        rate = self.options.learning_rate * (1.0 if stage == "image" else 1.5)
        schedule = _Schedule(rate, total, warmup, done)
        model = build_training_model(heatmap, self.options.sharpness)
        model.compile(
            optimizer=keras.optimizers.AdamW(schedule, weight_decay=self.options.weight_decay, clipnorm=5.0),
            loss=[_pooled_loss, _make_cell_loss(self.options.cell_weight)],
        )
        return model


def _save_atomically(model: Any, path: Path) -> None:
    temporary = path.with_name(path.name.replace(".weights.h5", ".tmp.weights.h5"))
    model.save_weights(temporary)
    os.replace(temporary, path)


def _Schedule(peak: float, total: int, warmup: int, offset: int) -> Any:  # noqa: N802 - a class factory
    """Linear warm-up to ``peak`` then cosine decay to 2 %, continuing at step ``offset``."""
    import keras
    from keras import ops

    class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step: Any) -> Any:
            step = ops.cast(step, "float32") + float(offset)
            warm = peak * (step + 1.0) / float(max(warmup, 1))
            progress = ops.clip((step - warmup) / float(max(total - warmup, 1)), 0.0, 1.0)
            cosine = peak * (0.02 + 0.98 * 0.5 * (1.0 + ops.cos(np.pi * progress)))
            return ops.where(step < warmup, warm, cosine)

        def get_config(self) -> dict[str, Any]:
            return {"peak": peak, "total": total, "warmup": warmup, "offset": offset}

    return WarmupCosine()


def predict_logits(heatmap: Any, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Logit maps (N, h, w, 2) of uint8 or float grids (N, rows, columns)."""
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        batch = chunk.astype(np.float32) / (255.0 if chunk.dtype == np.uint8 else 1.0)
        out.append(np.asarray(heatmap.predict_on_batch(batch[..., None]), dtype=np.float32))
    return np.concatenate(out) if out else np.zeros((0, 1, 1, len(CHANNELS)), np.float32)


def augmentation_off(options: FitOptions) -> FitOptions:
    """The same options without augmentation (for ablations)."""
    from dataclasses import replace

    return replace(options, augment=NONE)
