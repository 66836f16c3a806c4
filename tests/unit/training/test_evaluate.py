"""``mammogate evaluate``: a bundle scores labelled data sets through the serving path and writes
report.json (the documented shape) and a self-contained report.html."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from mammogate.cli import main
from mammogate.training.datasets import load_synthetic
from mammogate.training.train import TRAINING_IMAGES_FILE
from tests.tiny_bundle import write_tiny_bundle

SPEC = "synthetic:3@41"  # 3 studies, 12 images


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = write_tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle")
    # the bundle says it learned from one of the images: evaluate leaves it out
    first = load_synthetic(3, seed=41).records[0]
    (out / TRAINING_IMAGES_FILE).write_text(f"-  {first.uid}\n", encoding="utf-8")
    return out


def _summary_shape(summary: dict) -> None:  # type: ignore[type-arg]
    for task in ("malignant_vs_rest", "abnormal_vs_normal"):
        for level in ("image", "patient"):
            part = summary[task][level]
            assert set(part) >= {"auc", "auc_ci95", "n_pos", "n_neg"}
    localisation = summary["localisation"]
    assert set(localisation) >= {"malignant_top_mark_within_radius", "abnormal_top_mark_within_radius", "froc"}
    assert all(len(point) == 2 for point in localisation["froc"])
    assert 0 <= summary["calibration"]["ece"] <= 1
    assert summary["operating_points"]


def test_evaluate_writes_the_report_and_leaves_out_training_images(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    code = main(["evaluate", "--model", str(bundle), "--dataset", SPEC, "--out", str(out),
                 "--bootstrap", "20", "--quiet"])
    assert code == 0
    assert capsys.readouterr().out.strip() == str(out / "report.json")
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    _summary_shape(report)
    image = report["abnormal_vs_normal"]["image"]
    assert image["n_pos"] + image["n_neg"] == 11  # 12 images, one in the training data
    assert sum(report["images_left_out"]["in_training_data"].values()) == 1
    assert report["model"]["name"] == "tiny-test-model"
    assert report["timing"]["seconds_per_image_median"] > 0
    (source,) = report["datasets"]
    _summary_shape(report["datasets"][source])
    if image["auc"] is not None:
        low, high = image["auc_ci95"]
        assert low <= image["auc"] <= high

    html = (out / "report.html").read_text(encoding="utf-8")
    pictures = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert pictures, "the report shows its plots"
    for picture in pictures:  # beside the report, not on a server
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script" not in html.lower()
    assert not re.search(r'(src|href)="(https?:)?//', html)  # no CDN, nothing fetched


def test_training_images_are_scored_only_when_asked(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(bundle), "--dataset", SPEC, "--out", str(out),
                 "--bootstrap", "20", "--quiet", "--include-training-images"]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    image = report["abnormal_vs_normal"]["image"]
    assert image["n_pos"] + image["n_neg"] == 12
    assert sum(report["images_left_out"]["in_training_data_but_scored"].values()) == 1


def test_a_data_set_the_model_learned_entirely_is_refused_with_the_way_out(bundle: Path, tmp_path: Path) -> None:
    everything = tmp_path / "bundle"
    everything.mkdir()
    for path in bundle.iterdir():
        (everything / path.name).write_bytes(path.read_bytes())
    uids = [r.uid for r in load_synthetic(1, seed=41).records]
    (everything / TRAINING_IMAGES_FILE).write_text("".join(f"-  {u}\n" for u in uids), encoding="utf-8")
    code = main(["evaluate", "--model", str(everything), "--dataset", "synthetic:1@41",
                 "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 2
    assert not (tmp_path / "r" / "report.json").exists()


def test_evaluate_scores_an_image_as_the_node_does(bundle: Path, tmp_path: Path) -> None:
    """One preprocessing path and one graph: evaluate's image probabilities are the node's."""
    from mammogate.inference import Analyzer, load_bundle
    from mammogate.training.evaluate import predict_records
    from mammogate.training.synthetic import write_study

    loaded = load_bundle(bundle)
    records = load_synthetic(1, seed=43).records
    predictions, _, _, failed = predict_records(loaded, loaded.load_model(), records, progress=False)
    assert not failed and len(predictions.records) == 4
    evaluated = loaded.calibration.probability(predictions.pooled[:, 0])

    first = records[0]
    assert first.synthetic_seed is not None
    study = write_study(tmp_path / "study", seed=first.synthetic_seed, lesion=first.synthetic_lesion,
                        burned_in_label=first.synthetic_seed % 2 == 0)
    served = Analyzer(loaded).analyze_study(list(study.paths))
    by_uid = {image.sop_instance_uid: image.score for image in served.images}
    node = [by_uid[study.images[r.synthetic_index].sop_instance_uid] for r in records]
    assert np.allclose(evaluated, node, atol=1e-4)
    assert np.ptp(node) > 1e-3  # the images score apart: the comparison says something
