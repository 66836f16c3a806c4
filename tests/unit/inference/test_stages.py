from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mammogate.inference import Analyzer, ModelBundle, postprocess, predict, preprocess
from mammogate.inference.tf_runtime import serving_function
from mammogate.training.cache import prepare_record
from mammogate.training.datasets import load_synthetic
from mammogate.training.synthetic import VIEWS, _add_lesion, make_study


def test_preprocess_puts_the_chest_wall_left_and_only_the_breast_on_the_grid() -> None:
    study = make_study(seed=12, lesion=False, rows=1024, columns=832, burned_in_label=True)
    for ds, (laterality, view) in zip(study.datasets, VIEWS, strict=True):
        prepared = preprocess(ds, 256, 160)
        assert prepared.grid.shape == (256, 160) and prepared.grid.dtype == np.float32
        assert prepared.transform.flipped is (laterality == "R")
        columns = prepared.grid.any(axis=0)
        assert columns[:4].all()  # the breast touches the chest wall on the left
        assert np.all(prepared.grid[~prepared.breast] == 0)  # labels and background are gone
        assert bool(prepared.pectoral.any()) is (view == "MLO")
        assert not (prepared.pectoral & ~prepared.breast).any()
        assert prepared.display.shape == (512, 416)  # reduced before the LUTs: 2 x 256 rows


def test_training_reads_an_image_through_the_serving_path() -> None:
    dataset = load_synthetic(1, seed=3)
    record = dataset.records[3]
    study = make_study(seed=record.synthetic_seed, lesion=record.synthetic_lesion, burned_in_label=record.synthetic_seed % 2 == 0)
    served = preprocess(study.datasets[record.synthetic_index], 256, 160)
    trained = prepare_record(record, 256, 160)
    assert np.array_equal(served.grid, trained.grid)
    assert np.array_equal(served.scoring_mask, trained.scoring_mask)
    assert served.transform == trained.transform


def test_predict_returns_logit_maps_at_stride_8(tiny_analyzer: Analyzer) -> None:
    maps = predict(tiny_analyzer.model, [np.zeros((256, 160), np.float32), np.full((256, 160), 0.3, np.float32)])
    assert maps.shape == (2, 32, 20, 2)
    assert np.allclose(maps, -4.0, atol=1e-5)  # flat images: no contrast anywhere


def test_one_traced_graph_serves_every_batch_size_and_matches_keras(tiny_bundle: ModelBundle) -> None:
    analyzer = Analyzer(tiny_bundle)  # its own model: nothing traced yet
    assert analyzer.warm_up() > 0
    function = serving_function(analyzer.model, 256, 160)
    assert function.experimental_get_tracing_count() == 1  # the warm-up traced it
    rng = np.random.default_rng(4)
    grids = [rng.random((256, 160), dtype=np.float32) for _ in range(4)]
    for count in (1, 3, 4, 2):  # a study's number of views varies; Keras would trace twice
        maps = predict(analyzer.model, grids[:count])
        assert maps.shape == (count, 32, 20, 2)
    assert function.experimental_get_tracing_count() == 1
    keras_maps = analyzer.model.predict_on_batch(np.stack(grids)[..., None])
    assert np.abs(maps - keras_maps[:2]).max() < 1e-5
    assert np.ptp(maps) > 0.1  # the random grids are not flat: the comparison says something


def _study_with_a_blob(seed: int, laterality: str, column: float, row: float, radius: float):  # type: ignore[no-untyped-def]
    study = make_study(seed=seed, lesion=False, rows=1024, columns=832)
    index = VIEWS.index((laterality, "CC"))
    ds = study.datasets[index]
    pixels = ds.pixel_array.astype(np.float32)
    blob = np.zeros(pixels.shape, np.float32)
    _add_lesion(np.random.default_rng(0), blob, "mass", (column, row), radius, contrast=900.0)
    ds.PixelData = np.clip(pixels + blob, 0, 4095).astype("<u2").tobytes()
    return ds


@pytest.mark.parametrize(("laterality", "column"), [("L", 250.0), ("R", 832 - 250.0)])
def test_a_bright_mass_is_the_top_finding_in_original_pixels(
    tiny_analyzer: Analyzer, laterality: str, column: float
) -> None:
    ds = _study_with_a_blob(31, laterality, column, 520.0, 30.0)
    prepared = preprocess(ds, 256, 160)
    logits = predict(tiny_analyzer.model, [prepared.grid])[0]
    scored = postprocess(logits, prepared, 0.0, tiny_analyzer.bundle.calibration, sharpness=6.0)
    top = scored.findings[0]
    assert np.hypot(top.center[0] - column, top.center[1] - 520.0) <= 30.0, top.center
    assert top.probability == scored.probability == scored.cell_probabilities.max()
    assert top.outline[0] == top.outline[-1] and len(top.outline) == 9


def test_a_finding_is_as_certain_a_lesion_as_the_lesion_channel_says_there(
    tiny_analyzer: Analyzer,
) -> None:
    from mammogate.inference.scoring import Calibration, cell_mask, probability_map

    ds = _study_with_a_blob(33, "L", 300.0, 400.0, 25.0)
    prepared = preprocess(ds, 256, 160)
    logits = predict(tiny_analyzer.model, [prepared.grid])[0]
    lesion = Calibration(0.8, -0.2)
    scored = postprocess(logits, prepared, 0.0, tiny_analyzer.bundle.calibration, sharpness=6.0,
                         lesion_calibration=lesion)
    cells = cell_mask(prepared.scoring_mask, *logits.shape[:2])
    _, lesion_map = probability_map(logits[..., 1], cells, lesion, 6.0)
    assert scored.findings
    for finding in scored.findings:
        assert finding.certainty is not None and 0.0 < finding.certainty < 1.0
        assert finding.certainty in set(lesion_map[cells].tolist())
    # without a lesion calibration (or a one-channel model) no certainty is claimed
    plain = postprocess(logits, prepared, 0.0, tiny_analyzer.bundle.calibration, sharpness=6.0)
    assert all(f.certainty is None for f in plain.findings)


def _float_around(value: float) -> tuple[float, float]:
    return float(np.nextafter(value, -1.0)), value


def test_flagged_exactly_when_there_is_a_finding_at_the_maximum(tiny_analyzer: Analyzer) -> None:
    ds = _study_with_a_blob(32, "L", 300.0, 400.0, 25.0)
    prepared = preprocess(ds, 256, 160)
    logits = predict(tiny_analyzer.model, [prepared.grid])[0]
    calibration = tiny_analyzer.bundle.calibration
    probability = postprocess(logits, prepared, 0.0, calibration, sharpness=6.0).probability
    under, at = _float_around(probability)
    flagged = postprocess(logits, prepared, at, calibration, sharpness=6.0)
    assert flagged.findings and flagged.findings[0].probability == probability
    assert postprocess(logits, prepared, float(np.nextafter(probability, 2.0)), calibration, sharpness=6.0).findings == []
    assert postprocess(logits, prepared, under, calibration, sharpness=6.0).findings


def test_no_finding_on_burned_in_labels_background_or_pectoral_muscle(tiny_analyzer: Analyzer) -> None:
    labelled = make_study(seed=33, lesion=False, rows=1024, columns=832, burned_in_label=True)
    plain = make_study(seed=33, lesion=False, rows=1024, columns=832)
    for ds, clean, (_laterality, view) in zip(labelled.datasets, plain.datasets, VIEWS, strict=True):
        label = ds.pixel_array != clean.pixel_array  # the text and the marker, nothing else
        assert label.sum() > 200
        distance_to_label = ndimage.distance_transform_edt(~label)
        prepared = preprocess(ds, 256, 160)
        logits = predict(tiny_analyzer.model, [prepared.grid])[0]
        # every mark the model would make at any threshold
        scored = postprocess(logits, prepared, 0.0, tiny_analyzer.bundle.calibration, sharpness=6.0, max_findings=10)
        assert scored.findings
        for finding in scored.findings:
            column, row = (int(v) for v in finding.center)
            assert distance_to_label[row, column] > 40, (view, finding.center)
            grid_column, grid_row = prepared.transform.to_grid(*finding.center)
            cell = (int(grid_row) // 8 * 8, int(grid_column) // 8 * 8)
            assert not prepared.pectoral[cell[0] : cell[0] + 8, cell[1] : cell[1] + 8].all(), (view, finding.center)
