"""Ad-hoc analysis: a radiologist uploads one image (DICOM, PNG or JPEG) and gets the result
card. The portal does not analyse: it stores the image as a study of its own (new UIDs, marked
``source = "upload"``, never routed to a PACS), queues an analysis job for the worker, and shows
the study page, which refreshes itself until the result is there.

A PNG or JPEG becomes an 8-bit MONOCHROME2 Digital Mammography X-Ray Image (For Presentation)
with the laterality and view the uploader states, DERIVED, and a patient of its own ("UPLOAD",
the uploader's name): a picture has no header to say otherwise. Bombs are refused before
decoding (at most ``MAX_PIXELS`` pixels, ``MAX_UPLOAD_BYTES`` bytes).
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mammogate import DISCLAIMER
from mammogate.db import Database, Instance, Study, audit, utcnow
from mammogate.db.queue import enqueue_analysis
from mammogate.db.wakeup import ANALYSIS, announce
from mammogate.storage import describe_os_error, write_dicom_atomically
from mammogate.web.i18n import gettext as _
from mammogate.web.i18n import grouped

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 150 * 1024 * 1024
MAX_PIXELS = 8192 * 8192
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
VIEW_CODES = {"CC": ("399162004", "cranio-caudal"), "MLO": ("399368009", "medio-lateral oblique")}
UPLOAD_AE = "PORTAL-UPLOAD"


class UploadError(ValueError):
    """An upload that cannot be analysed; the message says why and what to send instead."""


@dataclass(frozen=True)
class StoredUpload:
    study_instance_uid: str
    job_id: int


def _picture(data: bytes, laterality: str, view: str, username: str) -> Dataset:
    if laterality not in ("R", "L") or view not in VIEW_CODES:
        raise UploadError(_("For a PNG or JPEG picture, say which breast (right or left) and which "
                            "view (CC or MLO) it shows: a picture has no header that says so."))
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ("PNG", "JPEG"):
                raise UploadError(_("%(format)s pictures are not taken: send DICOM, PNG or JPEG.")
                                  % {"format": image.format})
            if image.width * image.height > MAX_PIXELS:
                raise UploadError(_("The picture is %(width)d x %(height)d pixels, more than %(limit)s in "
                                    "all: send it at a smaller size.")
                                  % {"width": image.width, "height": image.height, "limit": grouped(MAX_PIXELS)})
            pixels = np.asarray(image.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise UploadError(_("The file is neither DICOM nor a readable PNG or JPEG picture (%(error)s).")
                          % {"error": type(exc).__name__}) from None
    ds = Dataset()
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.Modality = "MG"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PatientName = f"UPLOAD^{username[:50]}"
    ds.PatientID = f"UPLOAD-{hashlib.sha256(data).hexdigest()[:12]}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.ImageLaterality = laterality
    ds.ViewPosition = view
    code = Dataset()
    code.CodeValue, code.CodeMeaning = VIEW_CODES[view]
    code.CodingSchemeDesignator = "SCT"
    code.ViewModifierCodeSequence = DicomSequence([])
    ds.ViewCodeSequence = DicomSequence([code])
    ds.ImageComments = f"Uploaded picture (PNG/JPEG) for ad-hoc analysis. {DISCLAIMER}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    return ds


def _dicom(data: bytes) -> Dataset:
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, ValueError, EOFError, OSError) as exc:
        raise UploadError(_("The DICOM file cannot be read: %(error)s.") % {"error": exc}) from None
    if "PixelData" not in ds:
        raise UploadError(_("The DICOM file holds no image (no Pixel Data)."))
    if int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) > MAX_PIXELS:
        raise UploadError(_("The DICOM image has more pixels than this node analyses."))
    return ds


def dataset_from_upload(data: bytes, laterality: str, view: str, username: str) -> Dataset:
    """The upload as a DICOM dataset with new UIDs of its own; UploadError when it cannot be."""
    if not data:
        raise UploadError(_("The file is empty."))
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(_("The file is larger than %(size)d MB.") % {"size": MAX_UPLOAD_BYTES // (1024 * 1024)})
    is_dicom = len(data) > 132 and data[128:132] == b"DICM"
    ds = _dicom(data) if is_dicom else _picture(data, laterality, view, username)
    # a study of its own: an upload never joins (or overwrites) a study the SCP received
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    if not is_dicom or "file_meta" not in ds or not ds.file_meta.get("TransferSyntaxUID"):
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesDescription = "mammogate ad-hoc analysis (upload)"
    return ds


def store_upload(db: Database, data_dir: Path, ds: Dataset, username: str) -> StoredUpload:
    """Write the image durably into the spool, record it as a study of source "upload" and
    queue its analysis (one transaction), audited."""
    study_uid = str(ds.StudyInstanceUID)
    folder = data_dir / "spool" / study_uid
    folder.mkdir(parents=True, exist_ok=True)
    try:
        path = write_dicom_atomically(ds, folder / f"{ds.SOPInstanceUID}.dcm")
    except OSError as exc:
        raise UploadError(describe_os_error(exc, "The image could not be stored")) from None
    payload = path.read_bytes()
    now = utcnow()
    laterality = str(ds.get("ImageLaterality", "") or "")[:2]
    view = str(ds.get("ViewPosition", "") or "")[:16]
    with db.session() as session:
        study = Study(study_instance_uid=study_uid, state="receiving", source="upload",
                      accession_number="", patient_name=str(ds.get("PatientName", ""))[:324],
                      patient_id=str(ds.get("PatientID", ""))[:64], study_date=now.strftime("%Y%m%d"),
                      study_description="ad-hoc analysis (upload)", calling_ae_title=UPLOAD_AE,
                      manufacturer=str(ds.get("Manufacturer", "") or "")[:64], instance_count=1,
                      first_received_at=now, last_received_at=now, updated_at=now)
        session.add(study)
        session.flush()
        session.add(Instance(sop_instance_uid=str(ds.SOPInstanceUID), study_id=study.id,
                             series_instance_uid=str(ds.SeriesInstanceUID), sop_class_uid=str(ds.SOPClassUID),
                             study_instance_uid=study_uid, transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                             modality=str(ds.get("Modality", ""))[:16], laterality=laterality, view=view,
                             calling_ae_title=UPLOAD_AE, path=str(path), size=len(payload),
                             sha256=hashlib.sha256(payload).hexdigest(), received_at=now))
        job = enqueue_analysis(session, study)
        announce(session, ANALYSIS)
        session.flush()
        audit(session, actor=username, action="study uploaded", target=study_uid, detail=f"job {job.id}", at=now)
        job_id = job.id
    log.info("upload stored as study %s, analysis job %d", study_uid, job_id)
    return StoredUpload(study_uid, job_id)
