"""Sample data and helpers shared by the portal tests."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import numpy as np
from litestar import Litestar
from litestar.testing import TestClient
from PIL import Image
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import DigitalMammographyXRayImageStorageForPresentation, ExplicitVRLittleEndian

from mammogate.db import (
    Analysis,
    AnalysisImage,
    Database,
    Delivery,
    DestinationRow,
    Finding,
    Instance,
    Report,
    Study,
    heatmap_file,
    utcnow,
)

PASSWORDS = {"ada": "admin-pass-1", "rita": "radiologist-pass-2", "vic": "viewer-pass-3"}
STUDY_UID = "1.2.826.0.1.3680043.8.498.1001"
FAILED_UID = "1.2.826.0.1.3680043.8.498.1002"
LEFT_CC = "1.2.826.0.1.3680043.8.498.1001.1"
RIGHT_MLO = "1.2.826.0.1.3680043.8.498.1001.2"
SKIPPED = "1.2.826.0.1.3680043.8.498.1001.3"
SR_UID = "1.2.826.0.1.3680043.8.498.1001.99"
SR_BYTES = b"\x00" * 128 + b"DICM" + b"a stand-in for the CAD SR file"
PATIENT_NAME = "DUPONT^Hélène"
EXAM_SCORE = 0.873456
PNG_BYTES = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99"
    b"=\x1d\x00\x00\x00\x00IEND\xaeB`\x82"
)


def csrf_token(client: TestClient[Litestar], path: str = "/login") -> str:
    page = client.get(path)
    match = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def sign_in(client: TestClient[Litestar], username: str, next_path: str = "/") -> None:
    response = client.post(
        "/login",
        data={
            "username": username,
            "password": PASSWORDS[username],
            "next": next_path,
            "_csrf_token": csrf_token(client),
        },
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text


IMAGE_ROWS, IMAGE_COLUMNS = 120, 96
WINDOW = (2000.0, 4000.0)  # the sample image's Window Center and Width


def write_sample_image(path: Path) -> np.ndarray:
    """The left CC's DICOM file: a 120 x 96 MONOCHROME2 mammogram stand-in whose stored value
    rises along the rows (row r holds 30 r), with a window, and RescaleIntercept -100."""
    stored = np.repeat((np.arange(IMAGE_ROWS, dtype=np.uint16) * 30)[:, None], IMAGE_COLUMNS, axis=1)
    ds = Dataset()
    ds.SOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    ds.SOPInstanceUID = LEFT_CC
    ds.StudyInstanceUID = STUDY_UID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = -100, 1
    ds.WindowCenter, ds.WindowWidth = WINDOW
    ds.PatientOrientation = ["A", "R"]  # a left CC: columns run toward the nipple, wall on the left
    ds.PixelData = stored.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return stored


def write_sample_heatmap(path: Path) -> None:
    """A 12 x 10 heatmap, cold but for one hot cell at row 3, column 7 (the top right)."""
    heat = np.zeros((12, 10), dtype=np.uint8)
    heat[3, 7] = 255
    Image.fromarray(heat, mode="L").save(path, format="PNG")


def add_sample_study(db: Database, data_dir: Path) -> str:
    """A done study with one analysis (two analysed images, one skipped), a finding, an SR;
    the left CC's DICOM file is in the spool, its overlay and heatmap under overlays/."""
    overlay = data_dir / "overlays" / "left_cc.png"
    overlay.parent.mkdir(parents=True)
    overlay.write_bytes(PNG_BYTES)
    write_sample_heatmap(heatmap_file(overlay))
    image_file = data_dir / "spool" / STUDY_UID / f"{LEFT_CC}.dcm"
    write_sample_image(image_file)
    sr_file = data_dir / "reports" / STUDY_UID / f"{SR_UID}.dcm"
    sr_file.parent.mkdir(parents=True)
    sr_file.write_bytes(SR_BYTES)
    now = utcnow()
    with db.session() as session:
        s = Study(
            study_instance_uid=STUDY_UID,
            state="done",
            accession_number="ACC1001",
            patient_name=PATIENT_NAME,
            patient_id="PID-1",
            study_date="20240315",
            instance_count=3,
            first_received_at=now - timedelta(minutes=5),
            last_received_at=now - timedelta(minutes=4),
            updated_at=now,
        )
        session.add(s)
        session.flush()
        for sop_uid, laterality, view in ((LEFT_CC, "L", "CC"), (RIGHT_MLO, "R", "MLO"),
                                          (f"{STUDY_UID}.99", "R", "")):  # no view: skipped
            session.add(Instance(
                sop_instance_uid=sop_uid, study_id=s.id, series_instance_uid=f"{STUDY_UID}.1",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2", transfer_syntax_uid="1.2.840.10008.1.2.1",
                modality="MG", laterality=laterality, view=view,
                path=str(image_file) if sop_uid == LEFT_CC else "", size=0, sha256="",
                received_at=now - timedelta(minutes=4)))
        a = Analysis(
            study_id=s.id,
            model_name="mammo-cnn",
            model_version="1.4.0",
            model_sha256="ab12cd34ef56" + "0" * 52,
            model_description="trained on mias (224 images); mias 5-fold CV AUC 0.81 (95% CI 0.72-0.89)",
            operating_point=0.42,
            exam_score=EXAM_SCORE,
            score_left=EXAM_SCORE,
            score_right=0.051234,
            category="flagged",
            created_at=now,
        )
        session.add(a)
        session.flush()
        session.add_all(
            [
                AnalysisImage(
                    analysis_id=a.id,
                    sop_instance_uid=LEFT_CC,
                    status="analysed",
                    laterality="L",
                    view="CC",
                    score=EXAM_SCORE,
                    overlay_path=str(overlay),
                ),
                AnalysisImage(
                    analysis_id=a.id,
                    sop_instance_uid=RIGHT_MLO,
                    status="analysed",
                    laterality="R",
                    view="MLO",
                    score=0.051234,
                ),
                AnalysisImage(
                    analysis_id=a.id,
                    sop_instance_uid=SKIPPED,
                    status="skipped",
                    reason="not a For Presentation image",
                ),
                Finding(
                    analysis_id=a.id,
                    sop_instance_uid=LEFT_CC,
                    laterality="L",
                    view="CC",
                    probability=0.812345,
                    center_column=1023.5,
                    center_row=2047.25,
                    outline=[[1000, 2000], [1050, 2000], [1050, 2100], [1000, 2000]],
                    certainty=0.634,
                    nipple_distance_mm=42.3,
                    region="outer half",
                ),
            ]
        )
        dest = DestinationRow(
            name="pacs-main", kind="dimse", ae_title="PACS", host="pacs", port=104
        )
        report = Report(
            analysis_id=a.id,
            kind="cad_sr",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.88.50",
            sop_instance_uid=SR_UID,
            series_instance_uid=SR_UID + ".0",
            path=str(sr_file),
            created_at=now,
        )
        session.add_all([dest, report])
        session.flush()
        session.add(
            Delivery(
                report_id=report.id,
                destination_id=dest.id,
                state="dead",
                attempts=20,
                next_attempt_at=now,
                last_error="association rejected by PACS",
                created_at=now,
            )
        )
    return STUDY_UID
