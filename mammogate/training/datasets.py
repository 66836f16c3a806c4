"""Labelled mammogram data sets, named by a spec string, as records the trainer and the
evaluator read through the one preprocessing path (``mammogate.imaging.prepare``).

Specs::

    mias:PATH          a folder laid out like mini-MIAS (labels.csv, abnormalities.csv, PNGs)
    csv:PATH           a folder of images (DICOM, PNG or JPEG) with a labels.csv (columns below)
    dicom-csv:PATH     the same, with laterality and view read from each DICOM file's headers
                       where the CSV leaves them empty
    cbis:PATH          CBIS-DDSM images (DICOM) with a labels.csv in CBIS-DDSM's own terms
                       (columns below)
    synthetic:N[@SEED] N synthetic 4-view studies (4N images), half with a lesion

labels.csv (``csv:``/``dicom-csv:``): ``file, patient, laterality, view, label,
label_binary_malignant, lesion_type, x, y, radius, bbox``; empty where unknown. ``label`` is
normal / benign / malignant (other words: abnormal unless ``label_binary_malignant`` is 1);
``x, y, radius`` are a lesion's centre and radius in the file's pixels, origin top left;
``bbox`` is ``x0 y0 x1 y1`` in the same pixels (spaces, commas or semicolons). Several lesions
of one image are several rows with the same ``file``. Extra columns are ignored.

labels.csv (``cbis:``): ``file``, the CBIS-DDSM identifier in ``cbis_patient_id`` or
``patient_id`` (the woman is its ``P_NNNNN`` part: "Mass-Test_P_00173_LEFT_CC" and
"Calc-Training_P_00173_RIGHT_MLO" are one patient), laterality in ``laterality`` or ``left or
right breast``, view in ``view`` or ``image view``, the pathology in ``image_label``,
``pathologies`` and/or ``pathology`` (MALIGNANT, BENIGN, BENIGN_WITHOUT_CALLBACK; several
separated by ";"; all are read). Every image of CBIS-DDSM holds an abnormality (that is how the set was selected), so
each is abnormal; malignant when any of its pathologies is MALIGNANT. One row per abnormality or
per image, as the CSV has it.

Patients are the unit of every split: a record's ``patient`` is prefixed by its source, so two
data sets never share one.

Exception: ``DatasetError`` (a spec or a file that cannot be read), with the path and line.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PICTURE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
MIAS_ROWS = 1024  # mini-MIAS coordinates count rows from the bottom of a 1024-row image


class DatasetError(ValueError):
    """A data set spec, folder or labels file that cannot be used; the message says where."""


@dataclass(frozen=True)
class Lesion:
    """A lesion's centre and radius in the file's pixels: (column, row) from the top left."""

    x: float
    y: float
    radius: float
    malignant: bool
    kind: str = ""


@dataclass(frozen=True)
class Record:
    """One labelled image."""

    source: str  # data set name (folder name, or "synthetic")
    key: str  # unique within the source (file name)
    patient: str  # split unit, prefixed with the source
    malignant: int  # 1: cancer in this image
    abnormal: int  # 1: any lesion (benign or malignant)
    laterality: str | None = None
    view: str | None = None
    lesions: tuple[Lesion, ...] = ()
    path: Path | None = None
    synthetic_seed: int | None = None  # synthetic: the study seed
    synthetic_index: int = 0  # synthetic: which of the study's four views
    synthetic_lesion: bool = False  # synthetic: the study has a lesion (on one breast)
    content_hash: str = field(default="", compare=False)

    @property
    def uid(self) -> str:
        return f"{self.source}/{self.key}"

    @property
    def is_dicom(self) -> bool:
        return self.path is not None and self.path.suffix.lower() not in PICTURE_SUFFIXES


@dataclass(frozen=True)
class Dataset:
    spec: str
    name: str
    records: tuple[Record, ...]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def patients(self) -> list[str]:
        return sorted({r.patient for r in self.records})

    def counts(self) -> dict[str, int]:
        return {
            "images": len(self.records),
            "patients": len(self.patients),
            "malignant_images": sum(r.malignant for r in self.records),
            "abnormal_images": sum(r.abnormal for r in self.records),
            "images_with_lesion_locations": sum(bool(r.lesions) for r in self.records),
        }


def file_hash(path: Path) -> str:
    """The sha1 of a file: the key of the image cache and of a bundle's training list."""
    from mammogate.inference.bundle import file_sha256

    return file_sha256(path, "sha1")


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DatasetError(f"{path} not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(handle)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: {exc}") from exc


def _labels_rows(path: Path) -> list[dict[str, str]]:
    """A labels.csv's rows; a file with none is an error."""
    rows = _read_csv(path)
    if not rows:
        raise DatasetError(f"{path} has no rows")
    return rows


def _float(value: str, where: str) -> float | None:
    if value == "":
        return None
    try:
        return float(value)
    except ValueError as exc:
        raise DatasetError(f"{where}: {value!r} is not a number") from exc


def _laterality(value: str) -> str | None:
    text = value.strip().upper()
    if text in {"L", "LEFT"}:
        return "L"
    if text in {"R", "RIGHT"}:
        return "R"
    return None


def _view(value: str) -> str | None:
    text = value.strip().upper()
    return text or None


def load_mias(folder: Path) -> Dataset:
    """mini-MIAS: labels.csv (one row per image), abnormalities.csv (centre from the bottom)."""
    folder = Path(folder)
    labels = _read_csv(folder / "labels.csv")
    abnormalities = _read_csv(folder / "abnormalities.csv")
    lesions: dict[str, list[Lesion]] = {}
    for line, row in enumerate(abnormalities, start=2):
        where = f"{folder / 'abnormalities.csv'} line {line}"
        x, y, radius = (_float(row.get(k, ""), where) for k in ("x", "y", "radius"))
        if x is None or y is None or radius is None:
            continue
        lesions.setdefault(row["refnum"], []).append(
            Lesion(x, MIAS_ROWS - y, radius, row.get("severity", "") == "M", row.get("abn_class", ""))
        )
    records = []
    for line, row in enumerate(labels, start=2):
        try:
            image, refnum = row["image"], row["refnum"]
            malignant = int(row["label_binary_malignant"])
            abnormal = int(row["label_binary_abnormal"])
            patient = row["patient_pair"]
        except (KeyError, ValueError) as exc:
            raise DatasetError(f"{folder / 'labels.csv'} line {line}: {exc}") from exc
        path = folder / image
        if not path.is_file():
            raise DatasetError(f"{path} (labels.csv line {line}) not found")
        records.append(
            Record(
                "mias", image, f"mias:{patient}", malignant, abnormal, _laterality(row.get("laterality", "")),
                "MLO", tuple(lesions.get(refnum, ())), path,
            )
        )
    return Dataset(f"mias:{folder}", "mias", tuple(records))


_BBOX_SPLIT = re.compile(r"[\s,;]+")


def _csv_lesion(row: dict[str, str], malignant: bool, where: str) -> Lesion | None:
    x, y, radius = (_float(row.get(k, ""), where) for k in ("x", "y", "radius"))
    kind = row.get("lesion_type", "")
    if x is not None and y is not None:
        return Lesion(x, y, radius if radius is not None else 0.0, malignant, kind)
    bbox = row.get("bbox", "")
    if bbox:
        parts = [p for p in _BBOX_SPLIT.split(bbox) if p]
        if len(parts) != 4:
            raise DatasetError(f"{where}: bbox {bbox!r} is not 'x0 y0 x1 y1'")
        x0, y0, x1, y1 = (_float(p, where) or 0.0 for p in parts)
        return Lesion((x0 + x1) / 2, (y0 + y1) / 2, max(abs(x1 - x0), abs(y1 - y0)) / 2, malignant, kind)
    return None


def load_csv(folder: Path, *, dicom_headers: bool = False) -> Dataset:
    """A folder with labels.csv (see the module docstring). With ``dicom_headers``, laterality
    and view come from each DICOM file's headers where the CSV leaves them empty."""
    folder = Path(folder)
    rows = _labels_rows(folder / "labels.csv")
    missing = {"file", "patient", "label_binary_malignant"} - set(rows[0])
    if missing:
        raise DatasetError(f"{folder / 'labels.csv'} lacks the column(s) {', '.join(sorted(missing))}")
    grouped: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for line, row in enumerate(rows, start=2):
        grouped.setdefault(row["file"], []).append((line, row))
    name = folder.name
    records = []
    for file_name, entries in grouped.items():
        line, row = entries[0]
        where = f"{folder / 'labels.csv'} line {line}"
        path = folder / file_name
        if not path.is_file():
            raise DatasetError(f"{path} ({where}) not found")
        try:
            malignant = int(row["label_binary_malignant"])
        except ValueError as exc:
            raise DatasetError(f"{where}: label_binary_malignant {row['label_binary_malignant']!r} is not 0 or 1") from exc
        label = row.get("label", "").lower()
        abnormal = int(malignant == 1 or label not in {"", "normal", "benign"} or any(
            _csv_lesion(r, False, where) is not None for _, r in entries
        ))
        if label == "benign" and name == "kaggle_bcd640":
            abnormal = malignant  # that set's "benign" means "no cancer recorded", not a lesion
        lesions = tuple(
            lesion for ln, r in entries
            if (lesion := _csv_lesion(r, malignant == 1, f"{folder / 'labels.csv'} line {ln}")) is not None
        )
        laterality, view = _laterality(row.get("laterality", "")), _view(row.get("view", ""))
        if dicom_headers and path.suffix.lower() not in PICTURE_SUFFIXES and (laterality is None or view is None):
            laterality, view = _from_headers(path, laterality, view)
        records.append(
            Record(name, file_name, f"{name}:{row['patient']}", malignant, abnormal, laterality, view, lesions, path)
        )
    return Dataset(f"csv:{folder}", name, tuple(records))


_CBIS_PATIENT = re.compile(r"P_\d+")
_CBIS_PATHOLOGIES = {"MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK"}


def _first(row: dict[str, str], *names: str) -> str:
    return next((row[name] for name in names if row.get(name)), "")


def load_cbis(folder: Path) -> Dataset:
    """CBIS-DDSM DICOM images with a labels.csv in its own terms (see the module docstring).
    Rows of one file must agree on the woman, laterality and view."""
    folder = Path(folder)
    labels = folder / "labels.csv"
    rows = _labels_rows(labels)
    first: dict[str, tuple[int, tuple[str, str | None, str | None]]] = {}
    malignant: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        where = f"{labels} line {line}"
        file_name = row.get("file", "")
        if not file_name:
            raise DatasetError(f"{where}: no file")
        patient = _CBIS_PATIENT.search(_first(row, "cbis_patient_id", "patient_id"))
        if patient is None:
            raise DatasetError(f"{where}: no CBIS-DDSM patient (P_NNNNN) in cbis_patient_id or patient_id")
        pathologies = {p.strip().upper() for column in ("image_label", "pathologies", "pathology")
                       for p in row.get(column, "").split(";") if p.strip()}
        if not pathologies or not pathologies <= _CBIS_PATHOLOGIES:
            raise DatasetError(f"{where}: pathology {sorted(pathologies)} is not one of "
                               f"{', '.join(sorted(_CBIS_PATHOLOGIES))}")
        identity = (patient.group(), _laterality(_first(row, "laterality", "left or right breast")),
                    _view(_first(row, "view", "image view")))
        earlier = first.setdefault(file_name, (line, identity))
        if earlier[1] != identity:
            raise DatasetError(f"{where}: {file_name} is {identity} here but {earlier[1]} on line "
                               f"{earlier[0]} (woman, laterality, view)")
        malignant[file_name] = max(malignant.get(file_name, 0), int("MALIGNANT" in pathologies))
    name = folder.name
    records = []
    for file_name, (line, (woman, laterality, view)) in first.items():
        path = folder / file_name
        if not path.is_file():
            raise DatasetError(f"{path} ({labels} line {line}) not found")
        records.append(Record(name, file_name, f"{name}:{woman}", malignant[file_name], 1,
                              laterality, view, (), path))
    return Dataset(f"cbis:{folder}", name, tuple(records))


def _from_headers(path: Path, laterality: str | None, view: str | None) -> tuple[str | None, str | None]:
    from mammogate.imaging import DicomReadError, read_dataset, view_info

    try:
        info = view_info(read_dataset(path, stop_before_pixels=True))
    except DicomReadError as exc:
        raise DatasetError(f"{path}: {exc}") from exc
    return laterality or info.laterality, view or info.view


def load_synthetic(count: int, seed: int = 0) -> Dataset:
    """``count`` synthetic studies (seeds ``seed * 100000 + 500000 + i``), four images each;
    half carry a lesion, seen on both views of one breast. Pixels are made when read."""
    from mammogate.training.synthetic import VIEWS, lesion_truth

    records = []
    for number in range(count):
        study_seed = 500_000 + seed * 100_000 + number
        truth = lesion_truth(study_seed, lesion=number % 2 == 1)
        for index, (laterality, view) in enumerate(VIEWS):
            lesions = tuple(Lesion(x, y, r, True, kind) for x, y, r, kind in truth[index])
            records.append(
                Record(
                    "synthetic", f"{study_seed}/{laterality}_{view}", f"synthetic:{study_seed}",
                    int(bool(lesions)), int(bool(lesions)), laterality, view, lesions,
                    synthetic_seed=study_seed, synthetic_index=index, synthetic_lesion=number % 2 == 1,
                )
            )
    return Dataset(f"synthetic:{count}@{seed}", "synthetic", tuple(records))


def load(spec: str) -> Dataset:
    """A data set from its spec (see the module docstring)."""
    kind, _, argument = spec.partition(":")
    if not argument:
        raise DatasetError(f"data set spec {spec!r}: expected KIND:ARGUMENT (mias:, csv:, dicom-csv:, cbis:, synthetic:)")
    if kind == "mias":
        return load_mias(Path(argument))
    if kind == "csv":
        return load_csv(Path(argument))
    if kind == "dicom-csv":
        return load_csv(Path(argument), dicom_headers=True)
    if kind == "cbis":
        return load_cbis(Path(argument))
    if kind == "synthetic":
        count, _, seed = argument.partition("@")
        try:
            return load_synthetic(int(count), int(seed or 0))
        except ValueError as exc:
            raise DatasetError(f"data set spec {spec!r}: expected synthetic:N or synthetic:N@SEED") from exc
    raise DatasetError(f"data set spec {spec!r}: unknown kind {kind!r} (mias, csv, dicom-csv, cbis, synthetic)")


def load_all(specs: Sequence[str]) -> list[Dataset]:
    datasets = [load(spec) for spec in specs]
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise DatasetError(f"two data sets share a name ({', '.join(names)}): give each its own folder")
    return datasets


def iter_records(datasets: Sequence[Dataset]) -> Iterator[Record]:
    for dataset in datasets:
        yield from dataset.records


def patient_folds(records: Sequence[Record], k: int, seed: int) -> np.ndarray:
    """A fold number per record: patients shuffled with ``seed`` and dealt round-robin into
    ``k`` folds within each (source, has-a-malignant-image) stratum, so every fold holds each
    data set and its cancers in proportion. Two images of one patient never straddle folds."""
    patients: dict[str, tuple[str, int]] = {}
    for record in records:
        source, positive = patients.get(record.patient, (record.source, 0))
        patients[record.patient] = (source, max(positive, record.malignant))
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    strata: dict[tuple[str, int], list[str]] = {}
    for patient, stratum in sorted(patients.items()):
        strata.setdefault(stratum, []).append(patient)
    offset = 0
    for stratum in sorted(strata):
        members = strata[stratum]
        order = rng.permutation(len(members))
        for position, index in enumerate(order):
            fold_of[members[index]] = (position + offset) % k
        offset += len(members)
    return np.array([fold_of[r.patient] for r in records], dtype=np.int64)
