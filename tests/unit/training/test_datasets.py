"""Data set loaders against the real files in ../shared/data, and the documented CSV format."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from mammogate.training.datasets import DatasetError, load, load_synthetic, patient_folds
from mammogate.training.synthetic import write_study
from tests.shared_data import shared_data_dir

CSV_HEADER = "file,patient,laterality,view,label,label_binary_malignant,lesion_type,x,y,radius,bbox\n"


@pytest.mark.shared_data
def test_mias_loader_reads_labels_lesions_and_patients() -> None:
    dataset = load(f"mias:{shared_data_dir() / 'mias'}")
    counts = dataset.counts()
    assert counts["images"] == 224 and counts["malignant_images"] == 36
    assert counts["abnormal_images"] == 78
    assert counts["patients"] == 112  # the two breasts of each woman share patient_pair
    by_key = {r.key: r for r in dataset.records}
    mdb005 = by_key["mdb005.png"]
    assert (mdb005.view, mdb005.laterality, mdb005.malignant, mdb005.abnormal) == ("MLO", "R", 0, 1)
    # centre (477, 133) counted from the bottom of the 1024-row image
    assert [(lesion.x, lesion.y, lesion.radius) for lesion in mdb005.lesions][0] == (477.0, 891.0, 30.0)
    assert all(r.patient.startswith("mias:") for r in dataset.records)
    malignant_with_lesion = [r for r in dataset.records if r.malignant and r.lesions]
    assert len(malignant_with_lesion) >= 30
    assert all(any(lesion.malignant for lesion in r.lesions) for r in malignant_with_lesion)


@pytest.mark.shared_data
def test_mias_lesion_centres_lie_on_brighter_tissue_after_the_row_flip() -> None:
    dataset = load(f"mias:{shared_data_dir() / 'mias'}")
    masses = [r for r in dataset.records if r.lesions and r.lesions[0].kind == "CIRC"]
    brighter = 0
    for record in masses:
        assert record.path is not None
        pixels = np.asarray(Image.open(record.path).convert("L"), dtype=np.float32)
        lesion = record.lesions[0]
        x, y, r = int(lesion.x), int(lesion.y), max(4, int(lesion.radius))
        core = pixels[y - r // 2 : y + r // 2, x - r // 2 : x + r // 2].mean()
        flipped = pixels[1024 - y - r // 2 : 1024 - y + r // 2, x - r // 2 : x + r // 2].mean()
        brighter += core > 0.3 * 255 and core >= flipped - 10
    assert brighter >= 0.8 * len(masses), (brighter, len(masses))


@pytest.mark.shared_data
def test_kaggle_loader_reads_image_level_labels_without_locations() -> None:
    dataset = load(f"csv:{shared_data_dir() / 'kaggle_bcd640'}")
    counts = dataset.counts()
    assert (counts["images"], counts["patients"], counts["malignant_images"]) == (2365, 674, 804)
    assert counts["images_with_lesion_locations"] == 0
    # that set's "benign" means "no cancer recorded", so abnormal is the cancer label
    assert all(r.abnormal == r.malignant for r in dataset.records)
    assert all(r.laterality is None and r.view is None for r in dataset.records)


@pytest.mark.shared_data
def test_cbis_loader_reads_the_sample_exam_as_one_woman_with_four_abnormal_views() -> None:
    dataset = load(f"cbis:{shared_data_dir() / 'dicom' / 'cbis_ddsm'}")
    assert dataset.counts() == {"images": 4, "patients": 1, "malignant_images": 0,
                                "abnormal_images": 4, "images_with_lesion_locations": 0}
    by_key = {r.key: (r.patient, r.laterality, r.view, r.is_dicom) for r in dataset.records}
    assert by_key["1-130.dcm"] == ("cbis_ddsm:P_00173", "L", "CC", True)
    assert by_key["1-133.dcm"] == ("cbis_ddsm:P_00173", "R", "MLO", True)


def test_cbis_loader_takes_its_own_column_names_one_row_per_abnormality(tmp_path: Path) -> None:
    folder = tmp_path / "cbis"
    folder.mkdir()
    for name in ("a.dcm", "b.dcm", "c.dcm"):
        (folder / name).write_bytes(b"")  # the loader reads labels; pixels are read when used
    (folder / "labels.csv").write_text(
        "file,patient_id,left or right breast,image view,pathology\n"
        "a.dcm,Calc-Training_P_00005_RIGHT_CC,RIGHT,CC,BENIGN_WITHOUT_CALLBACK\n"
        "a.dcm,Mass-Training_P_00005_RIGHT_CC,RIGHT,CC,MALIGNANT\n"
        "b.dcm,Mass-Training_P_00005_LEFT_MLO,LEFT,MLO,BENIGN\n"
        "c.dcm,Mass-Test_P_01234_LEFT_CC,LEFT,CC,benign\n")
    records = {r.key: r for r in load(f"cbis:{folder}").records}
    assert {k: (r.patient, r.malignant, r.abnormal, r.laterality, r.view)
            for k, r in records.items()} == {
        "a.dcm": ("cbis:P_00005", 1, 1, "R", "CC"),  # any malignant row makes the image malignant
        "b.dcm": ("cbis:P_00005", 0, 1, "L", "MLO"),
        "c.dcm": ("cbis:P_01234", 0, 1, "L", "CC"),
    }


@pytest.mark.parametrize(("rows", "message"), [
    ("a.dcm,Mass-Test_LEFT_CC,LEFT,CC,BENIGN", "line 2: no CBIS-DDSM patient"),
    ("a.dcm,Mass-Test_P_00001_LEFT_CC,LEFT,CC,UNSURE", r"line 2: pathology \['UNSURE'\] is not one of"),
    ("a.dcm,Mass-Test_P_00001_LEFT_CC,LEFT,CC,BENIGN\ngone.dcm,Mass-Test_P_00001_LEFT_MLO,LEFT,MLO,"
     "BENIGN", r"gone.dcm \(.*labels.csv line 3\) not found"),
    ("a.dcm,Mass-Test_P_00001_LEFT_CC,LEFT,CC,BENIGN\na.dcm,Calc-Test_P_00001_RIGHT_CC,RIGHT,CC,"
     "BENIGN", "line 3: a.dcm is .*'R'.* here but .*'L'.* on line 2"),
])
def test_cbis_loader_errors_name_the_file_and_line(tmp_path: Path, rows: str, message: str) -> None:
    (tmp_path / "a.dcm").write_bytes(b"")
    (tmp_path / "labels.csv").write_text(f"file,cbis_patient_id,laterality,view,image_label\n{rows}\n")
    with pytest.raises(DatasetError, match=message):
        load(f"cbis:{tmp_path}")


def test_cbis_loader_reads_every_pathology_column(tmp_path: Path) -> None:
    (tmp_path / "a.dcm").write_bytes(b"")
    (tmp_path / "labels.csv").write_text("file,cbis_patient_id,laterality,view,image_label,pathologies\n"
                                         "a.dcm,Mass-Test_P_00001_LEFT_CC,LEFT,CC,BENIGN,BENIGN;MALIGNANT\n")
    (record,) = load(f"cbis:{tmp_path}").records
    assert (record.malignant, record.abnormal) == (1, 1)


def _picture(path: Path, value: int) -> None:
    pixels = np.zeros((300, 200), np.uint8)
    pixels[20:280, :120] = value
    Image.fromarray(pixels).save(path)


def test_csv_loader_takes_pictures_dicom_lesion_rows_and_bounding_boxes(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    _picture(folder / "a.png", 120)
    _picture(folder / "b.jpg", 140)
    study = write_study(tmp_path / "study", seed=5, lesion=False, rows=128, columns=104)
    shutil.copy(study.paths[0], folder / "c.dcm")
    (folder / "labels.csv").write_text(
        CSV_HEADER
        + "a.png,p1,L,CC,malignant,1,mass,50,60,10,\n"
        + "a.png,p1,L,CC,malignant,1,calcification,80,90,5,\n"
        + "b.jpg,p2,,,benign,0,mass,,,,10 20 30 60\n"
        + "c.dcm,p3,,,normal,0,,,,,\n",
        encoding="utf-8",
    )
    dataset = load(f"csv:{folder}")
    by_key = {r.key: r for r in dataset.records}
    assert len(dataset) == 3
    a, b, c = by_key["a.png"], by_key["b.jpg"], by_key["c.dcm"]
    assert (a.malignant, a.abnormal, a.laterality, a.view) == (1, 1, "L", "CC")
    assert [(lesion.x, lesion.y, lesion.radius, lesion.malignant) for lesion in a.lesions] == [(50, 60, 10, True), (80, 90, 5, True)]
    assert (b.malignant, b.abnormal) == (0, 1) and (b.lesions[0].x, b.lesions[0].y, b.lesions[0].radius) == (20, 40, 20)
    assert (c.malignant, c.abnormal, c.is_dicom) == (0, 0, True)
    assert c.laterality is None  # csv: does not read headers
    headers = load(f"dicom-csv:{folder}")
    c_headers = {r.key: r for r in headers.records}["c.dcm"]
    ds = pydicom.dcmread(folder / "c.dcm")
    assert (c_headers.laterality, c_headers.view) == (ds.ImageLaterality, ds.ViewPosition)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("file,label\nx.png,normal\n", "lacks the column(s) label_binary_malignant, patient"),
        (CSV_HEADER + "missing.png,p,,,normal,0,,,,,\n", "missing.png"),
        (CSV_HEADER + "a.png,p,,,normal,maybe,,,,,\n", "'maybe' is not 0 or 1"),
        (CSV_HEADER + "a.png,p,,,malignant,1,,ten,5,3,\n", "line 2: 'ten' is not a number"),
        (CSV_HEADER + "a.png,p,,,malignant,1,,,,,1 2 3\n", "is not 'x0 y0 x1 y1'"),
    ],
)
def test_csv_loader_errors_name_the_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    _picture(tmp_path / "a.png", 100)
    (tmp_path / "labels.csv").write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(f"csv:{tmp_path}")


def test_unknown_or_malformed_specs_are_refused() -> None:
    for spec in ("nothing", "png:/tmp", "synthetic:many"):
        with pytest.raises(DatasetError, match="spec"):
            load(spec)


@pytest.mark.shared_data
def test_patient_folds_never_split_a_patient_and_spread_cancers_evenly() -> None:
    dataset = load(f"csv:{shared_data_dir() / 'kaggle_bcd640'}")
    records = list(dataset.records) + list(load_synthetic(10).records)
    folds = patient_folds(records, 5, seed=0)
    for patient in {r.patient for r in records}:
        assert len({int(folds[i]) for i, r in enumerate(records) if r.patient == patient}) == 1
    malignant_patients = {r.patient for r in records if r.malignant}
    per_fold = [len({r.patient for i, r in enumerate(records) if folds[i] == f and r.patient in malignant_patients}) for f in range(5)]
    assert max(per_fold) - min(per_fold) <= 2
    synthetic = [int(folds[i]) for i, r in enumerate(records) if r.source == "synthetic"]
    assert len(set(synthetic)) == 5  # every fold holds some of each source
    assert np.array_equal(folds, patient_folds(records, 5, seed=0))
    assert not np.array_equal(folds, patient_folds(records, 5, seed=1))


def test_synthetic_records_know_their_lesions_without_making_pixels() -> None:
    dataset = load("synthetic:4@2")
    assert len(dataset) == 16
    lesion_studies = {r.synthetic_seed for r in dataset.records if r.lesions}
    assert len(lesion_studies) == 2
    for record in dataset.records:
        assert record.malignant == record.abnormal == int(bool(record.lesions))
