"""Training: targets, augmentation, resumable fitting, and the round trip from data sets to a
bundle the node serves."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mammogate.inference import Analyzer, load_bundle
from mammogate.training.augment import AugmentOptions, augment
from mammogate.training.cache import build_cache
from mammogate.training.datasets import DatasetError, load
from mammogate.training.evaluate import evaluate
from mammogate.training.fit import FitOptions, Trainer, cell_targets
from mammogate.training.synthetic import write_study
from mammogate.training.train import build_parser, config_from_args, train
from tests.shared_data import shared_data_dir

TINY = ["--grid", "128x96", "--widths", "4,4,8,8,8", "--batch-size", "4", "--quiet"]


def test_cli_options_make_the_training_configuration(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["--dataset", "mias:/m", "--dataset", "synthetic:3", "--out", str(tmp_path / "b"), "--folds", "3",
         "--epochs", "2", "--patch-epochs", "0", "--grid", "320x192", "--no-augment", "--members", "2"]
    )
    config = config_from_args(args)
    assert config.datasets == ("mias:/m", "synthetic:3") and config.folds == 3 and config.members == 2
    assert config.grid == (320, 192) and config.fit.epochs == 2 and config.fit.patch_epochs == 0
    assert config.fit.augment.flip == 0.0 and config.fit.augment.elastic == 0.0
    assert config.work_dir == tmp_path / ".b.work"


def test_cell_targets_mark_lesion_cells_and_weigh_them_up() -> None:
    cells = np.ones((10, 8), np.float32)
    cells[:, 6:] = 0
    options = FitOptions()
    lesions = np.array([[20.0, 36.0, 10.0, 1.0]])  # grid column 20, row 36, radius 10 px = 1.25 cells
    targets, weights = cell_targets(lesions, cells, has_locations=True, malignant=1, abnormal=1, options=options)
    assert targets[4, 2, 0] == targets[4, 2, 1] == 1.0  # the cell holding (20, 36) at stride 8
    assert targets[0, 0].sum() == 0 and weights[0, 0, 0] == 1.0
    assert weights[4, 2, 0] == options.positive_cell_weight
    assert weights[:, 6:].sum() == 0  # outside the breast: no supervision
    benign = np.array([[20.0, 36.0, 10.0, 0.0]])
    targets, _ = cell_targets(benign, cells, has_locations=True, malignant=0, abnormal=1, options=options)
    assert targets[4, 2, 1] == 1.0 and targets[4, 2, 0] == 0.0
    _, weights = cell_targets(np.zeros((0, 4)), cells, has_locations=False, malignant=1, abnormal=1, options=options)
    assert weights.sum() == 0  # a cancer without a location: image label only
    _, weights = cell_targets(np.zeros((0, 4)), cells, has_locations=False, malignant=0, abnormal=0, options=options)
    assert weights.max() == options.negative_image_cell_weight


def test_augmentation_moves_lesions_with_the_image() -> None:
    image = np.zeros((256, 160), np.uint8)
    mask = np.zeros((256, 160), np.uint8)
    image[20:240, :120], mask[20:240, :120] = 80, 1
    yy, xx = np.mgrid[0:256, 0:160]
    image[(yy - 150) ** 2 + (xx - 60) ** 2 <= 36] = 250
    lesions = np.array([[60.5, 150.5, 6.0, 1.0]], np.float32)
    options = AugmentOptions(elastic=1.0, gamma=(1.0, 1.0), contrast=(1.0, 1.0), noise=0.0)
    for seed in range(12):
        out, out_mask, moved = augment(image, mask, lesions, np.random.default_rng(seed), options)
        row, column = np.unravel_index(np.argmax(out), out.shape)
        assert np.hypot(column + 0.5 - moved[0, 0], row + 0.5 - moved[0, 1]) <= moved[0, 2] + 2, seed
        assert out_mask[:, 0].any()  # still against the chest wall on the left
        assert out[out_mask == 0].max() == 0


@pytest.fixture(scope="module")
def tiny_arrays(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    dataset = load("synthetic:4@1")
    return build_cache(dataset.records, 128, 96, tmp_path_factory.mktemp("cache"), workers=1, progress=False)


@pytest.mark.slow
def test_same_seed_same_weights_up_to_float_rounding(tiny_arrays, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    options = FitOptions(epochs=1, patch_epochs=1, batch_size=4, patch_batch_size=4, widths=(4, 4, 8, 8, 8), seed=5)
    everything = np.arange(len(tiny_arrays))
    first = Trainer(tiny_arrays, everything, options, tmp_path / "a").fit().get_weights()
    second = Trainer(tiny_arrays, everything, options, tmp_path / "b").fit().get_weights()
    other = Trainer(tiny_arrays, everything, replace(options, seed=6), tmp_path / "c").fit().get_weights()
    # same initialisation, batches and augmentation; multi-threaded sums differ in the last bits,
    # which a few hundred steps grow to about 4e-3 (measured: Eigen's kernels, oneDNN off)
    for a, b in zip(first, second, strict=True):
        assert np.allclose(a, b, rtol=1e-2, atol=1e-2)
    # another seed: another initialisation, differences of the order of the weights
    assert any(np.abs(a - c).max() > 0.1 for a, c in zip(first, other, strict=True))


@pytest.mark.slow
def test_interrupted_training_resumes_at_its_last_epoch(tiny_arrays, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    options = FitOptions(epochs=3, patch_epochs=0, batch_size=4, widths=(4, 4, 8, 8, 8), seed=6)
    seen: list[tuple[str, int]] = []

    def stop_after_first(stage: str, epoch: int, _model: object) -> None:
        seen.append((stage, epoch))
        if epoch == 0:
            raise KeyboardInterrupt

    trainer = Trainer(tiny_arrays, np.arange(len(tiny_arrays)), options, tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(epoch_end=stop_after_first)
    assert json.loads((tmp_path / "run" / "state.json").read_text()) == {"stage": "image", "epoch": 1}
    Trainer(tiny_arrays, np.arange(len(tiny_arrays)), options, tmp_path / "run").fit(
        epoch_end=lambda stage, epoch, _m: seen.append((stage, epoch))
    )
    assert seen == [("image", 0), ("image", 1), ("image", 2)]
    assert (tmp_path / "run" / "final.weights.h5").is_file()


@pytest.mark.slow
def test_members_per_fold_are_averaged_out_of_fold_and_in_the_bundle(tiny_arrays, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import keras

    from mammogate.training.datasets import patient_folds
    from mammogate.training.fit import predict_logits
    from mammogate.training.model import build_heatmap_model
    from mammogate.training.train import TrainConfig, cross_validate, export_ensemble

    widths = (4, 4, 8, 8, 8)
    config = TrainConfig(
        datasets=("synthetic:4@1",), out=tmp_path / "bundle", work=tmp_path / "work", grid=(128, 96), folds=2,
        members=2, fit=FitOptions(epochs=1, patch_epochs=0, batch_size=4, widths=widths),
    )
    folds = patient_folds(tiny_arrays.records, 2, 0)
    predictions, weights = cross_validate(config, tiny_arrays, folds)
    assert [w.parent.name for w in weights] == ["fold0", "fold0-member1", "fold1", "fold1-member1"]
    held_out = np.flatnonzero(folds == 1)
    members = []
    for weight_file in weights[2:]:
        net = build_heatmap_model(None, None, widths=widths, name="m")
        net.load_weights(weight_file)
        members.append(predict_logits(net, tiny_arrays.images[held_out]))
    assert np.abs(members[0] - members[1]).max() > 1e-3  # two seeds: two networks
    # out of fold: the mean of the fold's own members (stored as float16)
    assert np.allclose(predictions.maps[held_out], (members[0] + members[1]) / 2, atol=2e-2)
    # the bundle: all four networks, averaged
    export_ensemble(weights, 128, 96, widths, tmp_path / "model.keras")
    ensemble = keras.models.load_model(tmp_path / "model.keras")
    everyone = []
    for weight_file in weights:
        net = build_heatmap_model(None, None, widths=widths, name="m")
        net.load_weights(weight_file)
        everyone.append(predict_logits(net, tiny_arrays.images[:2]))
    assert np.allclose(predict_logits(ensemble, tiny_arrays.images[:2]), np.mean(everyone, axis=0), atol=1e-4)
    # started again, every member is reused: nothing is trained again
    stamps = {w: w.stat().st_mtime for w in weights}
    cross_validate(config, tiny_arrays, folds)
    assert {w: w.stat().st_mtime for w in weights} == stamps
    with pytest.raises(DatasetError, match="at least one network"):
        train(replace(config, members=0))


def _small_csv_dataset(folder: Path) -> Path:
    """Eight mini-MIAS images (four patients, two with a cancer) in the documented CSV layout."""
    mias = shared_data_dir() / "mias"
    folder.mkdir(parents=True)
    rows = ["file,patient,laterality,view,label,label_binary_malignant,lesion_type,x,y,radius,bbox"]
    picks = {"mdb003.png": ("2", 0), "mdb004.png": ("2", 0), "mdb028.png": ("14", 1), "mdb027.png": ("14", 0),
             "mdb006.png": ("3", 0), "mdb007.png": ("4", 0), "mdb058.png": ("29", 1), "mdb057.png": ("29", 0)}
    for name, (patient, malignant) in picks.items():
        shutil.copy(mias / name, folder / name)
        rows.append(f"{name},{patient},,MLO,{'malignant' if malignant else 'normal'},{malignant},,,,,")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


@pytest.mark.slow
@pytest.mark.shared_data
def test_round_trip_from_data_sets_to_a_bundle_the_node_serves(tmp_path: Path) -> None:
    mine = _small_csv_dataset(tmp_path / "mine")
    args = build_parser().parse_args(
        ["--dataset", f"csv:{mine}", "--dataset", "synthetic:4", "--out", str(tmp_path / "bundle"),
         "--folds", "2", "--epochs", "1", "--patch-epochs", "1", "--synthetic-check", "2", *TINY]
    )
    out = train(config_from_args(args))
    bundle = load_bundle(out)
    meta = bundle.metadata
    assert {d["name"] for d in meta["training_data"]["datasets"]} == {"mine", "synthetic"}
    assert set(meta["cross_validation"]) >= {"mine", "synthetic"}
    auc = meta["cross_validation"]["mine"]["malignant_vs_rest"]["image"]
    assert auc["n_pos"] == 2 and auc["n_neg"] == 6 and len(auc["auc_ci95"]) == 2
    assert "baseline_trivial_statistics" in meta["cross_validation"]["mine"]
    assert len(meta["cross_validation"]["mine"]["within_fold"]["malignant_vs_rest"]["image_auc_per_fold"]) == 2
    assert {p["name"] for p in meta["operating_points"]} == {"sensitivity_90", "balanced", "specificity_90"}
    assert meta["operating_point"]["name"] == "balanced"
    assert meta["calibration"]["malignant"]["slope"] != 0
    assert meta["evaluation"]["held_out_synthetic"]["studies"] == 2
    listed = (out / "training_images.txt").read_text().split("\n")
    assert sum(1 for line in listed if line.endswith(".png")) == 8
    # the node serves it
    study = write_study(tmp_path / "study", seed=9300, lesion=True, rows=256, columns=208)
    result = Analyzer(bundle).analyze_study(study.paths)
    assert len(result.images) == 4 and result.exam_score is not None
    assert result.model.description.startswith("trained on mine (8 images), synthetic (16 images)")
    # evaluating on its own training images is refused unless asked for
    with pytest.raises(DatasetError, match="training data"):
        evaluate(out, [f"csv:{mine}"], tmp_path / "report", progress=False)
    with pytest.raises(DatasetError, match="training data"):  # synthetic images are known by their seeds
        evaluate(out, ["synthetic:4"], tmp_path / "report", progress=False)
    report = evaluate(out, [f"csv:{mine}"], tmp_path / "report", include_training_images=True, progress=False, n_boot=50)
    assert report["images_left_out"]["in_training_data_but_scored"] == {"mine": 8}
    # a second run with the same work folder reuses every fold: nothing is trained again
    before = {p: p.stat().st_mtime for p in (tmp_path / ".bundle.work").glob("fold*/final.weights.h5")}
    train(config_from_args(args))
    after = {p: p.stat().st_mtime for p in (tmp_path / ".bundle.work").glob("fold*/final.weights.h5")}
    assert before == after and len(before) == 2
    # ...and its training time still counts the folds the first run trained
    resumed = json.loads((out / "model.json").read_text())["training_data"]
    assert resumed["training_seconds"] >= sum(resumed["seconds_per_fold"]) > 0


@pytest.mark.slow
def test_patches_centred_on_a_lesion_hold_it_whatever_the_augmentation(tiny_arrays, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    located = [i for i in range(len(tiny_arrays)) if len(tiny_arrays.lesions[i])]
    trainer = Trainer(tiny_arrays, np.arange(len(tiny_arrays)), FitOptions(patch_batch_size=4), tmp_path)
    trainer.rows, trainer.columns = tiny_arrays.images.shape[1:]
    from mammogate.training import fit

    patch = fit.PATCH
    fit.PATCH = 64  # the tiny 128 x 96 grid
    try:
        for seed in range(8):
            centres = [(i, float(tiny_arrays.lesions[i][0, 0]), float(tiny_arrays.lesions[i][0, 1])) for i in located]
            batch = trainer._patch_batch(centres, np.random.default_rng(seed))
            assert np.all(batch.pooled_true[:, 1] == 1.0), seed  # every crop holds its lesion
    finally:
        fit.PATCH = patch


def test_the_notice_credits_cbis_ddsm_only_when_the_weights_learned_from_it(tmp_path: Path) -> None:
    from mammogate.training.datasets import Dataset, Record
    from mammogate.training.train import _licence, _notice

    synthetic = load("synthetic:2")
    folder = tmp_path / "my_cbis_copy"  # a user's folder name: the spec kind decides, not the name
    cbis = Dataset(f"cbis:{folder}", folder.name,
                   (Record(folder.name, "a.dcm", f"{folder.name}:P_00001", 0, 1, "L", "CC"),))
    with_cbis, without = _notice([synthetic, cbis]), _notice([synthetic])
    assert "Weights trained on it credit it here." in with_cbis
    assert "- my_cbis_copy: 1 images of 1 patients" in with_cbis
    assert "no cbis: data set trained these weights" in without and "credit it here" not in without
    assert "Trained on CBIS-DDSM" in _licence([synthetic, cbis])
    assert "CBIS-DDSM" not in _licence([synthetic])
