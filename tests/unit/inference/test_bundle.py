from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mammogate.inference import (
    BundleError,
    ModelBundle,
    default_bundle_dir,
    file_sha256,
    load_bundle,
)


def copy_bundle(tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), target)
    return target


def test_shipped_bundle_is_verified_and_describes_itself(shipped_bundle: ModelBundle) -> None:
    assert shipped_bundle.path == default_bundle_dir()
    assert shipped_bundle.sha256 == file_sha256(shipped_bundle.model_file)
    meta = shipped_bundle.metadata
    for key in ("name", "version", "input_size", "preprocessing", "operating_point", "operating_points",
                "calibration", "training_data", "cross_validation", "evaluation", "date", "licence",
                "intended_use", "known_limits"):
        assert key in meta, key
    point = meta["operating_point"]
    assert 0 < point["threshold"] < 1
    assert {"patient_sensitivity", "patient_specificity", "chosen_on"} <= point.keys()
    names = {d["name"] for d in meta["training_data"]["datasets"]}
    assert {"mias", "kaggle_bcd640", "synthetic"} <= names
    for source in ("mias", "kaggle_bcd640"):
        auc = meta["cross_validation"][source]["malignant_vs_rest"]["image"]
        assert 0 < auc["auc_ci95"][0] <= auc["auc"] <= auc["auc_ci95"][1] < 1
        assert "baseline_trivial_statistics" in meta["cross_validation"][source]
    assert "research use only" in meta["licence"].lower() and "not for clinical use" in meta["licence"].lower()
    notice = (shipped_bundle.path / "NOTICE").read_text()
    assert "Suckling" in notice and "CC BY 3.0" in notice and "RSNA" in notice
    info = shipped_bundle.model_info
    assert (info.name, info.version, info.sha256) == (meta["name"], meta["version"], meta["sha256"])
    assert info.operating_point == point["threshold"]
    # the second channel (any lesion) is calibrated too: the certainty of a finding
    lesion = meta["calibration"]["lesion"]
    assert shipped_bundle.lesion_calibration is not None
    assert (shipped_bundle.lesion_calibration.slope, shipped_bundle.lesion_calibration.intercept) == (
        lesion["slope"], lesion["intercept"])
    assert "kaggle_bcd640" in info.description and "AUC" in info.description
    size = sum(p.stat().st_size for p in shipped_bundle.path.iterdir())
    assert size < 50_000_000


def test_bundle_whose_model_file_changed_is_refused(tmp_path: Path) -> None:
    bundle = copy_bundle(tmp_path)
    with open(bundle / "model.keras", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(bundle)


def test_bundle_whose_json_names_another_digest_is_refused(tmp_path: Path) -> None:
    bundle = copy_bundle(tmp_path)
    meta = json.loads((bundle / "model.json").read_text(encoding="utf-8"))
    meta["sha256"] = "0" * 64
    (bundle / "model.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(BundleError, match="refusing"):
        load_bundle(bundle)


def test_copied_bundle_loads_from_an_explicit_path(tmp_path: Path) -> None:
    bundle = load_bundle(copy_bundle(tmp_path))
    assert bundle.sha256 == load_bundle(None).sha256


def test_directory_that_is_not_a_bundle_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(tmp_path)


def test_malformed_model_json_is_refused(tmp_path: Path) -> None:
    bundle = copy_bundle(tmp_path)
    (bundle / "model.json").write_text("{", encoding="utf-8")
    with pytest.raises(BundleError, match="malformed"):
        load_bundle(bundle)


def test_bundle_of_the_old_heatmap_kind_is_refused_with_the_reason(tmp_path: Path) -> None:
    bundle = copy_bundle(tmp_path)
    meta = json.loads((bundle / "model.json").read_text(encoding="utf-8"))
    meta["outputs"] = {"heatmap_stride": 4, "heatmap": "probability per cell"}
    (bundle / "model.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(BundleError, match="not a logit-map bundle"):
        load_bundle(bundle)


def test_an_operating_point_is_chosen_by_name(shipped_bundle: ModelBundle) -> None:
    from mammogate.inference.bundle import with_operating_point

    points = {p["name"]: p["threshold"] for p in shipped_bundle.metadata["operating_points"]}
    sensitive = with_operating_point(shipped_bundle, "sensitivity_90")
    assert sensitive.operating_point == points["sensitivity_90"] < points["specificity_90"]
    assert sensitive.model_info.operating_point == points["sensitivity_90"]
    assert with_operating_point(shipped_bundle, "") is shipped_bundle
    with pytest.raises(BundleError, match="balanced, sensitivity_90, specificity_90"):
        with_operating_point(shipped_bundle, "nonsense")


def test_the_description_names_every_set_and_the_auc_only_where_there_is_one() -> None:
    from mammogate.inference.bundle import model_description

    def auc(value: float | None, interval: list[float | None]) -> dict[str, object]:
        return {"malignant_vs_rest": {"image": {"auc": value, "auc_ci95": interval}}}

    metadata = {
        "training_data": {"folds": 5, "datasets": [{"name": "mias", "images": 224},
                                                   {"name": "cbis_ddsm", "images": 4}]},
        # the CBIS-DDSM sample is four benign images: no AUC, and the description says none
        "cross_validation": {"mias": auc(0.6809, [0.5738, 0.7759]), "cbis_ddsm": auc(None, [None, None]),
                             "all_real": auc(0.63, [0.6, 0.67])},
    }
    assert model_description(metadata) == (
        "trained on mias (224 images), cbis_ddsm (4 images); mias 5-fold CV AUC 0.68 (95% CI 0.57-0.78)")
