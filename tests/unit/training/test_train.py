from __future__ import annotations

from pathlib import Path

import pytest

from mammogate.inference import Analyzer, load_bundle
from mammogate.training.synthetic import write_study
from mammogate.training.train import (
    build_parser,
    choose_operating_point,
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
