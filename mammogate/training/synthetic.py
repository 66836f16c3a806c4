"""Synthetic 4-view screening studies (R-CC, L-CC, R-MLO, L-MLO) as Digital Mammography X-Ray
Image Storage – For Presentation files, with lesions at known places.

Everything is a function of the seed: same seed, same files (UIDs included). Lesion centres and
radii are returned in original pixel coordinates (column, row), SCOORD convention.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

MG_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.2")
VIEWS: tuple[tuple[str, str], ...] = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))
LESION_KINDS = ("mass", "spiculated", "calcifications")
_VIEW_CODES = {
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
}
# Row direction, column direction. Right breasts are displayed with the chest wall on the right
# (left to right runs towards posterior), left breasts with the chest wall on the left.
_PATIENT_ORIENTATION = {
    ("R", "CC"): ["P", "L"],
    ("L", "CC"): ["A", "R"],
    ("R", "MLO"): ["P", "FL"],
    ("L", "MLO"): ["A", "FR"],
}
_STORED_MAX = 4095
# Bumped whenever the pixels this module makes change (training caches key on it).
GENERATOR_VERSION = 3
_BASE, _GAIN = 200.0, 3400.0


@dataclass(frozen=True)
class SyntheticLesion:
    center: tuple[float, float]  # (column, row) in the original pixel matrix
    radius: float  # pixels
    kind: str  # mass | spiculated | calcifications


@dataclass(frozen=True)
class SyntheticImage:
    sop_instance_uid: str
    laterality: str
    view: str
    lesions: tuple[SyntheticLesion, ...]
    path: Path | None = None


@dataclass(frozen=True)
class SyntheticStudy:
    study_instance_uid: str
    seed: int
    has_lesion: bool
    images: tuple[SyntheticImage, ...]
    datasets: tuple[Dataset, ...] = field(default=(), compare=False, repr=False)

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(image.path for image in self.images if image.path is not None)

    @property
    def lesions(self) -> dict[str, tuple[SyntheticLesion, ...]]:
        """Per SOP Instance UID, the lesions on that image (empty for normal views)."""
        return {image.sop_instance_uid: image.lesions for image in self.images}


def _uid(seed: int, *parts: str) -> str:
    return str(generate_uid(entropy_srcs=["mammogate-synthetic", str(seed), *parts]))


def _smooth_noise(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    """Zero-mean, unit-variance noise with a power-law spectrum (P(f) ~ 1/f^beta, beta 2.6-3.2:
    what measured fibroglandular texture shows), made at most 256 rows and scaled up."""
    small_rows = min(rows, 256)
    small_columns = max(2, round(columns * small_rows / rows))
    beta = rng.uniform(2.6, 3.2)
    fy = np.fft.fftfreq(small_rows)[:, None]
    fx = np.fft.rfftfreq(small_columns)[None, :]
    frequency = np.sqrt(fx**2 + fy**2)
    frequency[0, 0] = 1.0
    amplitude = frequency ** (-beta / 2)
    amplitude[0, 0] = 0.0
    phase = rng.uniform(0, 2 * np.pi, amplitude.shape)
    spectrum = amplitude * rng.rayleigh(1.0, amplitude.shape) * np.exp(1j * phase)
    field = np.fft.irfft2(spectrum, s=(small_rows, small_columns)).astype(np.float32)
    if (small_rows, small_columns) != (rows, columns):
        field = np.asarray(
            Image.fromarray(field, mode="F").resize((columns, rows), Image.Resampling.BICUBIC), dtype=np.float32
        )
    return (field - field.mean()) / (field.std() + 1e-6)


def _breast(rng: np.random.Generator, rows: int, columns: int, view: str) -> tuple[np.ndarray, np.ndarray]:
    """Breast mask-ish thickness map t in [0, 1] (0 outside) and pectoral muscle map, chest wall left."""
    v, u = np.mgrid[0:rows, 0:columns].astype(np.float32)
    u = (u + 0.5) / columns
    v = (v + 0.5) / rows
    depth = rng.uniform(0.62, 0.82)
    if view == "CC":
        centre, half_height = rng.uniform(0.47, 0.53), rng.uniform(0.38, 0.45)
        d2 = (u / depth) ** 2 + ((v - centre) / half_height) ** 2
        pectoral = np.zeros_like(u)
    else:
        centre, half_height = rng.uniform(0.55, 0.62), rng.uniform(0.40, 0.46)
        d2 = (u / depth) ** 2 + ((v - centre) / half_height) ** 2
        axilla = (u / (depth * 0.55)) ** 2 + ((v - 0.3) / 0.32) ** 2
        d2 = np.minimum(d2, axilla)
        reach, drop = rng.uniform(0.22, 0.32), rng.uniform(0.45, 0.6)
        pectoral = ((u < reach * (1 - v / drop)) & (v < drop)).astype(np.float32)
    thickness = np.sqrt(np.clip(1 - d2, 0, 1))
    return thickness.astype(np.float32), pectoral * (thickness > 0)


def _pick_lesion_site(
    rng: np.random.Generator, thickness: np.ndarray, pectoral: np.ndarray, depth_hint: float | None
) -> tuple[float, float]:
    rows, columns = thickness.shape
    for _ in range(200):
        u = depth_hint + rng.normal(0, 0.04) if depth_hint is not None else rng.uniform(0.12, 0.6)
        v = rng.uniform(0.15, 0.85)
        column, row = int(u * columns), int(v * rows)
        if 0 <= column < columns and 0 <= row < rows and thickness[row, column] > 0.55 and not pectoral[row, column]:
            return u, v
    return 0.3, 0.5


def _add_lesion(
    rng: np.random.Generator, image: np.ndarray, kind: str, center: tuple[float, float], radius: float,
    *, contrast: float = 0.25, dot_radius: float = 1.5,
) -> None:
    rows, columns = image.shape
    cx, cy = center
    extent = int(radius * 2.2) + 2
    x0, x1 = max(0, int(cx) - extent), min(columns, int(cx) + extent)
    y0, y1 = max(0, int(cy) - extent), min(rows, int(cy) + extent)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx + 0.5 - cx, yy + 0.5 - cy
    patch = np.zeros_like(dx)
    if kind in ("mass", "spiculated"):
        stretch = rng.uniform(0.8, 1.25)
        angle = rng.uniform(0, np.pi)
        rx = dx * np.cos(angle) + dy * np.sin(angle)
        ry = -dx * np.sin(angle) + dy * np.cos(angle)
        core = radius * (0.8 if kind == "spiculated" else 1.0)
        dist = np.sqrt((rx * stretch) ** 2 + (ry / stretch) ** 2) / core
        patch += contrast * np.clip(1 - dist**2, 0, 1) ** 0.6
        if kind == "spiculated":
            for theta in rng.uniform(0, 2 * np.pi, rng.integers(10, 17)):
                ux, uy = np.cos(theta), np.sin(theta)
                along = dx * ux + dy * uy
                across = np.abs(-dx * uy + dy * ux)
                length = radius * rng.uniform(1.4, 2.0)
                width = max(1.0, radius * 0.08)
                inside = (along > 0) & (along < length)
                patch += np.where(inside, 0.5 * contrast * (1 - along / length) * np.exp(-((across / width) ** 2)), 0)
    else:
        patch += 0.3 * contrast * np.clip(1 - (dx**2 + dy**2) / radius**2, 0, 1)
        dot = max(1.0, dot_radius)
        for _ in range(int(rng.integers(12, 22))):
            r, theta = radius * np.sqrt(rng.uniform(0, 1)) * 0.85, rng.uniform(0, 2 * np.pi)
            px, py = r * np.cos(theta), r * np.sin(theta)
            patch += 0.55 * np.exp(-((dx - px) ** 2 + (dy - py) ** 2) / (dot**2))
    image[y0:y1, x0:x1] += patch


def _pixels(
    rng: np.random.Generator, rows: int, columns: int, view: str, lesions: Sequence[tuple[str, float, float, float]],
    density: float, *, film: bool = False,
) -> np.ndarray:
    """Intensity image in about [0, 1], chest wall on the left; lesions are (kind, u, v, radius px).

    Fatty background with power-law fibroglandular texture concentrated behind the nipple, a
    brighter skin line, the pectoral muscle on MLO views, and (``film``) film grain and a
    softer, noisier rendering."""
    thickness, pectoral = _breast(rng, rows, columns, view)
    texture = _smooth_noise(rng, rows, columns)
    inside = thickness > 0
    v, u = np.mgrid[0:rows, 0:columns].astype(np.float32)
    # glandular tissue sits in a cone from the chest wall towards the nipple
    gland_centre = 0.5 if view == "CC" else 0.6
    gland = np.exp(-(((v + 0.5) / rows - gland_centre) / 0.28) ** 2) * np.clip(1.2 - (u + 0.5) / columns / 0.7, 0, 1)
    fibro = np.clip(0.5 + 0.35 * texture, 0, 1) * gland * density
    image = np.where(inside, 0.14 + 0.22 * thickness + 0.30 * fibro * thickness, 0.0)
    # skin line: the outer 1-2 % of the breast a little brighter
    skin = inside & (thickness < rng.uniform(0.12, 0.2))
    image = np.where(skin, image + 0.04, image)
    image = np.where(pectoral > 0, np.maximum(image, 0.7 + 0.04 * texture), image).astype(np.float32)
    for kind, lu, lv, radius in lesions:
        _add_lesion(rng, image, kind, (lu * columns, lv * rows), radius)
    if film:
        image += rng.normal(0, rng.uniform(0.01, 0.025), image.shape).astype(np.float32)
        image += (0.03 + 0.03 * rng.uniform()) * (~inside)  # film base plus fog
    image += rng.normal(0, 0.008, image.shape).astype(np.float32) * inside
    return np.clip(image, 0, 1)


def _burn_in_label(rng: np.random.Generator, image: np.ndarray, text: str, *, chest_wall_right: bool) -> None:
    """Bright film-style text in the background corner away from the chest wall, plus a small
    square marker, written the right way round."""
    from PIL import ImageDraw, ImageFont

    rows, columns = image.shape
    size = max(8, rows // 24)
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=size)
    except TypeError:  # Pillow without scalable default font
        font = ImageFont.load_default()
    canvas = Image.new("F", (columns, rows), 0.0)
    draw = ImageDraw.Draw(canvas)
    top = int(rng.uniform(0.02, 0.08) * rows)
    left = int(columns - size * (len(text) * 0.7 + 1) - rng.uniform(0.01, 0.04) * columns)
    draw.text((left, top), text, fill=1.0, font=font)
    marker = max(3, size // 2)
    mr = int(rng.uniform(0.8, 0.93) * rows)
    draw.rectangle((columns - 3 * marker, mr, columns - 2 * marker, mr + marker), fill=1.0)
    text_pixels = np.asarray(canvas, dtype=np.float32)
    if chest_wall_right:  # put the label on the left, still readable
        width = int(size * (len(text) * 0.7 + 1)) + 4 * marker
        shifted = np.zeros_like(text_pixels)
        shifted[:, :width] = text_pixels[:, columns - width :]
        text_pixels = shifted
    np.maximum(image, text_pixels * rng.uniform(0.85, 1.0), out=image)


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _dataset(
    seed: int, laterality: str, view: str, stored: np.ndarray, instance: int, patient_name: str,
    study_uid: str, pixel_spacing: float,
) -> Dataset:
    rows, columns = stored.shape
    sop_uid = _uid(seed, "sop", laterality, view)
    study_date = dt.date(2024, 1, 1) + dt.timedelta(days=seed % 700)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MG_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date.strftime("%Y%m%d")
    ds.StudyTime = "093000"
    ds.SeriesTime = "093100"
    ds.AcquisitionTime = ds.ContentTime = f"0932{instance:02d}"
    ds.AccessionNumber = f"ACC{seed:08d}"
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "mammogate synthetic"
    ds.InstitutionName = "Synthetic Screening Centre"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Screening mammography (synthetic)"
    ds.SeriesDescription = f"{laterality} {view}"
    ds.ManufacturerModelName = "phantom"
    ds.PatientName = patient_name
    ds.PatientID = f"SYN{seed:06d}"
    ds.PatientBirthDate = (dt.date(1955, 1, 1) + dt.timedelta(days=(seed * 37) % 7000)).strftime("%Y%m%d")
    ds.PatientSex = "F"
    ds.BodyPartExamined = "BREAST"
    ds.KVP = "28"
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.ViewPosition = view
    ds.DetectorType = "DIRECT"
    ds.ImagerPixelSpacing = [f"{pixel_spacing:.4f}", f"{pixel_spacing:.4f}"]
    ds.EstimatedRadiographicMagnificationFactor = "1.0"
    ds.BurnedInAnnotation = "NO"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = _uid(seed, "series")
    ds.StudyID = f"{seed % 100000:d}"
    ds.SeriesNumber = "1"
    ds.InstanceNumber = str(instance)
    ds.PatientOrientation = _PATIENT_ORIENTATION[(laterality, view)]
    ds.ImageLaterality = laterality
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.WindowCenter = "1900"
    ds.WindowWidth = "3600"
    ds.VOILUTFunction = "LINEAR"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.OrganExposed = "BREAST"
    ds.BreastImplantPresent = "NO"
    ds.PartialView = "NO"
    ds.AnatomicRegionSequence = [_code_item("76752008", "SCT", "Breast")]
    view_item = _code_item("SCT", "SCT", "")
    view_item.CodeValue, view_item.CodeMeaning = _VIEW_CODES[view]
    view_item.ViewModifierCodeSequence = []
    ds.ViewCodeSequence = [view_item]
    ds.AcquisitionContextSequence = []
    ds.PixelData = np.ascontiguousarray(stored.astype("<u2")).tobytes()
    return ds


DETECTOR_HEIGHT_MM = 240.0  # rows x pixel spacing: a 24 x 30 cm detector
MASS_RADIUS_MM = (2.5, 15.0)  # masses of 5-30 mm
CALCIFICATION_CLUSTER_RADIUS_MM = (3.0, 8.0)
MASS_CONTRAST = (0.1, 0.28)


@dataclass(frozen=True)
class _Plan:
    has_lesion: bool
    lesion_side: str
    kind: str
    radius_mm: float
    depth: float
    density: float
    contrast: float
    film: bool


def _plan(seed: int, lesion: bool | None, lesion_kinds: Sequence[str]) -> _Plan:
    rng = np.random.default_rng([seed, 20240611])
    has_lesion = bool(rng.uniform() < 0.5) if lesion is None else lesion
    lesion_side = str(rng.choice(["L", "R"]))
    kind = str(rng.choice(list(lesion_kinds), p=_kind_weights(lesion_kinds)))
    bounds = CALCIFICATION_CLUSTER_RADIUS_MM if kind == "calcifications" else MASS_RADIUS_MM
    radius_mm = float(rng.uniform(*bounds))
    depth = float(rng.uniform(0.15, 0.5))
    density = float(rng.uniform(0.4, 1.3))
    contrast = float(rng.uniform(*MASS_CONTRAST))
    film = bool(rng.uniform() < 0.3)
    return _Plan(has_lesion, lesion_side, kind, radius_mm, depth, density, contrast, film)


def _view_lesions(
    plan: _Plan, seed: int, instance: int, laterality: str, view: str, rows: int, columns: int
) -> list[tuple[str, float, float, float]]:
    if not (plan.has_lesion and laterality == plan.lesion_side):
        return []
    spacing = DETECTOR_HEIGHT_MM / rows
    thickness, pectoral = _breast(np.random.default_rng([seed, instance, 78]), rows, columns, view)
    u, v = _pick_lesion_site(np.random.default_rng([seed, instance, 77]), thickness, pectoral, plan.depth)
    return [(plan.kind, u, v, plan.radius_mm / spacing)]


def lesion_truth(
    seed: int, *, lesion: bool | None = None, rows: int = 1024, columns: int = 832,
    lesion_kinds: Sequence[str] = LESION_KINDS,
) -> list[list[tuple[float, float, float, str]]]:
    """Per view (``VIEWS`` order), the lesions of ``make_study`` with the same arguments as
    (column, row, radius, kind) in original pixels, without making any pixels."""
    plan = _plan(seed, lesion, lesion_kinds)
    truth = []
    for instance, (laterality, view) in enumerate(VIEWS, start=1):
        flipped = laterality == "R"
        truth.append([
            (round((1 - u if flipped else u) * columns, 2), round(v * rows, 2), round(r, 2), k)
            for k, u, v, r in _view_lesions(plan, seed, instance, laterality, view, rows, columns)
        ])
    return truth


def make_study(
    *,
    seed: int,
    lesion: bool | None = None,
    patient_name: str = "Dupré^Hélène",
    rows: int = 1024,
    columns: int = 832,
    lesion_kinds: Sequence[str] = LESION_KINDS,
    burned_in_label: bool = False,
) -> SyntheticStudy:
    """Build a study in memory (``datasets`` holds the four pydicom datasets, no paths).

    Pixel spacing makes the detector 240 mm tall whatever ``rows``; masses are 5-30 mm across,
    calcification clusters 6-16 mm. ``burned_in_label`` burns film-style view text and a marker
    into the background (BurnedInAnnotation YES)."""
    plan = _plan(seed, lesion, lesion_kinds)
    spacing = DETECTOR_HEIGHT_MM / rows
    study_uid = _uid(seed, "study")
    images: list[SyntheticImage] = []
    datasets: list[Dataset] = []
    for instance, (laterality, view) in enumerate(VIEWS, start=1):
        lesions_uv = _view_lesions(plan, seed, instance, laterality, view, rows, columns)
        pixel_rng = np.random.default_rng([seed, instance, 78])
        intensity = _pixels(pixel_rng, rows, columns, view, [], plan.density, film=plan.film)
        lesion_rng = np.random.default_rng([seed, instance, 79])
        for kind, u, v, radius in lesions_uv:
            _add_lesion(
                lesion_rng, intensity, kind, (u * columns, v * rows), radius, contrast=plan.contrast,
                dot_radius=0.3 / spacing,
            )
        flipped = laterality == "R"
        if flipped:
            intensity = np.ascontiguousarray(intensity[:, ::-1])
        if burned_in_label:
            _burn_in_label(
                np.random.default_rng([seed, instance, 80]), intensity, f"{laterality}{view}", chest_wall_right=flipped
            )
        intensity = np.clip(intensity, 0, 1)
        stored = np.clip(np.round(_BASE + _GAIN * intensity), 0, _STORED_MAX).astype(np.uint16)
        ds = _dataset(seed, laterality, view, stored, instance, patient_name, study_uid, spacing)
        if burned_in_label:
            ds.BurnedInAnnotation = "YES"
        truth = tuple(
            SyntheticLesion(
                (round((1 - u if flipped else u) * columns, 2), round(v * rows, 2)), round(r, 2), k
            )
            for k, u, v, r in lesions_uv
        )
        images.append(SyntheticImage(str(ds.SOPInstanceUID), laterality, view, truth))
        datasets.append(ds)
    return SyntheticStudy(study_uid, seed, plan.has_lesion, tuple(images), tuple(datasets))


def _kind_weights(kinds: Sequence[str]) -> list[float]:
    base = {"mass": 0.45, "spiculated": 0.35, "calcifications": 0.2}
    weights = [base.get(k, 0.3) for k in kinds]
    return [w / sum(weights) for w in weights]


def write_study(
    out_dir: Path,
    *,
    seed: int,
    lesion: bool | None = None,
    patient_name: str = "Dupré^Hélène",
    rows: int = 1024,
    columns: int = 832,
    lesion_kinds: Sequence[str] = LESION_KINDS,
    burned_in_label: bool = False,
) -> SyntheticStudy:
    """Write the four views of one study under ``out_dir`` (created) as ``<laterality>_<view>.dcm``."""
    study = make_study(
        seed=seed, lesion=lesion, patient_name=patient_name, rows=rows, columns=columns,
        lesion_kinds=lesion_kinds, burned_in_label=burned_in_label,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = []
    for image, ds in zip(study.images, study.datasets, strict=True):
        path = out / f"{image.laterality}_{image.view}.dcm"
        ds.save_as(path, enforce_file_format=True)
        images.append(SyntheticImage(image.sop_instance_uid, image.laterality, image.view, image.lesions, path))
    return SyntheticStudy(study.study_instance_uid, seed, study.has_lesion, tuple(images), study.datasets)


def write_dataset(
    out_dir: Path, n_studies: int, seed: int, *, rows: int = 1024, columns: int = 832
) -> list[SyntheticStudy]:
    """``n_studies`` studies in ``out_dir/study_NNNN/``; odd-numbered ones carry a lesion (half)."""
    return [
        write_study(
            Path(out_dir) / f"study_{index:04d}", seed=seed + index, lesion=index % 2 == 1,
            rows=rows, columns=columns,
        )
        for index in range(n_studies)
    ]
