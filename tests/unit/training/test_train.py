from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mammogate.inference.pipeline as pipeline
import mammogate.training.train as train_module
from mammogate.imaging import to_model_grid
from mammogate.inference import Analyzer, load_bundle
from mammogate.training.synthetic import write_study
from mammogate.training.train import (
    IMAGE_SIZES,
    build_arrays,
    build_parser,
    choose_operating_point,
    exam_scores,
    held_out_seeds,
    roc_auc,
    train,
    train_seeds,
    validation_seeds,
)


def test_roc_auc_counts_ties_as_half() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert roc_auc([1, 0, 1, 0], [0.1, 0.2, 0.3, 0.4]) == 0.25


def test_operating_point_separates_validation_scores() -> None:
    point = choose_operating_point([0, 0, 0, 1, 1], [0.1, 0.2, 0.35, 0.6, 0.9])
    assert point == {"threshold": pytest.approx(0.475), "sensitivity": 1.0, "specificity": 1.0}


def test_training_validation_and_held_out_seeds_are_disjoint() -> None:
    train_set = set(train_seeds(0, 5000))
    assert not train_set & set(validation_seeds(0, 1000))
    assert not train_set & set(held_out_seeds(1000))
    assert not set(validation_seeds(0, 1000)) & set(held_out_seeds(1000))


def test_cli_options() -> None:
    args = build_parser().parse_args(["--out", "x", "--seed", "3", "--studies", "7", "--epochs", "2"])
    assert (args.out, args.seed, args.studies, args.epochs) == (Path("x"), 3, 7, 2)


def test_tiny_training_run_writes_a_loadable_bundle(tmp_path: Path) -> None:
    out = train(
        tmp_path / "bundle", seed=1, n_train_studies=4, epochs=1, n_validation_studies=4,
        n_test_studies=0,
    )
    bundle = load_bundle(out)
    assert (out / "NOTICE").is_file()
    assert bundle.metadata["training_data"]["studies"] == 4
    assert 0.0 <= bundle.operating_point <= 1.0
    study = write_study(tmp_path / "study", seed=9200, lesion=True, rows=256, columns=208)
    result = Analyzer(bundle).analyze_study(study.paths)
    assert len(result.images) == 4 and result.exam_score is not None


def test_training_scores_images_with_the_inference_rule() -> None:
    # 400 x 205 → 160 x 82 on the grid: 20.5 heatmap columns, which inference rounds to 20
    grid, transform = to_model_grid(np.ones((400, 205), np.float32), 160, 128, flipped=False)
    assert transform.content_columns == 82
    heatmap = np.full((40, 32), 0.1, np.float32)
    heatmap[7, 20] = 0.9  # outside inference's valid region (the old training rule rounded up)
    assert train_module.image_score is pipeline.image_score
    assert train_module.image_score(heatmap, transform) == pytest.approx(0.1)
    assert not hasattr(train_module, "_valid_max")


def test_exam_scores_are_the_analyzer_scores(tmp_path: Path) -> None:
    bundle = load_bundle(None)
    analyzer = Analyzer(bundle)
    seeds = [9140, 9141]
    arrays = build_arrays(seeds)
    assert len(arrays.transforms) == len(arrays.grids)
    scores = exam_scores(analyzer.model, arrays)
    for number, seed in enumerate(seeds):
        # build_arrays cycles through IMAGE_SIZES and alternates lesions, as written here
        rows, columns = IMAGE_SIZES[number % len(IMAGE_SIZES)]
        study = write_study(tmp_path / str(seed), seed=seed, lesion=number % 2 == 1, rows=rows, columns=columns)
        result = analyzer.analyze_study(study.paths)
        assert result.exam_score == pytest.approx(scores[number], abs=1e-6)
