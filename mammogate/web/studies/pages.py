"""The studies' pages and their JSON API: the worklist and its CSV export, the study page and
what it fetches (overlays, the viewer's pixels and heatmaps, result objects), feedback and
uploads; thin handlers over ``detail``, ``worklist`` and ``uploads``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from litestar import Controller, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, QueryParameter, URLEncodedBody
from litestar.response import File, Redirect, Response, Stream, Template

from mammogate.db import Database, audit, utcnow
from mammogate.imaging import ImagingError, read_dataset, viewer_pixels
from mammogate.imaging.display import check_viewable
from mammogate.web.audit import record_access
from mammogate.web.auth.users import any_role, radiologist_or_admin, user_of
from mammogate.web.errors import ConflictError, InvalidInputError
from mammogate.web.http import AnyRequest, DataDir, Db, DbSession, ExpectedViews, read
from mammogate.web.i18n import gettext as _
from mammogate.web.studies.detail import (
    StudyDetail,
    heatmap_for,
    image_file_for,
    overlay_for,
    record_feedback,
    result_object_for,
    study_detail,
    study_operations,
)
from mammogate.web.studies.uploads import (
    MAX_UPLOAD_BYTES,
    UploadError,
    dataset_from_upload,
    store_upload,
)
from mammogate.web.studies.worklist import (
    StudyPage,
    WorklistFilter,
    export_csv,
    list_studies,
    parse_filter,
)

PER_PAGE = 50
VIEWER_ROWS = 1024  # the viewer's default: a 4096-row detector image averaged over 4x4 blocks
Days = Annotated[int, QueryParameter(name="days", ge=1, le=3650)]
PageNumber = Annotated[int, QueryParameter(name="page", ge=1, le=1_000_000)]


def worklist_filter(request: AnyRequest) -> WorklistFilter:
    """The worklist's filters from the query string; 422 naming the parameter that is wrong."""
    try:
        return parse_filter(request.query_params)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def _audit_target(page: int, worklist: WorklistFilter) -> str:
    # the audit log (an admin-only table, not the process log) records who searched for what
    return f"page {page}" + (f" ({worklist.describe()})" if worklist.active else "")


class HistoryController(Controller):
    guards = [any_role]

    @read("/", sync_to_thread=True)
    def history(self, request: AnyRequest, db_session: DbSession, db: Db,
                expected_views: ExpectedViews, page: PageNumber = 1) -> Template:
        worklist = worklist_filter(request)
        result = list_studies(db_session, page, PER_PAGE, worklist, expected_views)
        record_access(db, request, "history viewed", _audit_target(page, worklist))
        return Template("studies/history.html", context={"result": result})

    @read("/worklist.csv", sync_to_thread=True)
    def export(self, request: AnyRequest, db: Db, expected_views: ExpectedViews) -> Stream:
        """Exactly the filtered set (every page), streamed as CSV; audited like the page."""
        worklist = worklist_filter(request)
        record_access(db, request, "worklist exported", worklist.describe() or "all studies")

        def chunks() -> Iterator[str]:
            with db.session() as session:
                yield from export_csv(session, worklist, expected_views)

        stamp = utcnow().strftime("%Y%m%d-%H%M%S")
        return Stream(chunks(), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="mammogate-worklist-{stamp}.csv"',
            "Cache-Control": "no-store",
        })


def _image_png(db: Database, request: AnyRequest, study_instance_uid: str, path: Path) -> File:
    """A rendering of the patient's image (overlay, heatmap): as much patient data as the
    study page, so audited as a look at the image."""
    record_access(db, request, "image viewed", study_instance_uid)
    return File(path, media_type="image/png", content_disposition_type="inline")


class StudyController(Controller):
    path = "/studies/{study_instance_uid:str}"
    guards = [any_role]

    @read("/", sync_to_thread=True)
    def detail(
        self,
        request: AnyRequest,
        db_session: DbSession,
        db: Db,
        data_dir: DataDir,
        expected_views: ExpectedViews,
        study_instance_uid: FromPath[str],
    ) -> Template:
        study = study_detail(db_session, study_instance_uid, data_dir, expected_views)
        user = user_of(request)
        operations = study_operations(db_session, study_instance_uid) if user and user.is_admin else None
        record_access(db, request, "study viewed", study_instance_uid)
        return Template("studies/detail.html", context={
            "study": study, "expected_views": expected_views, "operations": operations,
            "resubmitted": resubmitted if (resubmitted := request.query_params.get("resubmitted", "")).isdigit() else "",
        })

    @read("/images/{sop_instance_uid:str}/overlay.png", sync_to_thread=True)
    def overlay(
        self,
        request: AnyRequest,
        db_session: DbSession,
        db: Db,
        data_dir: DataDir,
        study_instance_uid: FromPath[str],
        sop_instance_uid: FromPath[str],
    ) -> File:
        return _image_png(db, request, study_instance_uid,
                          overlay_for(db_session, study_instance_uid, sop_instance_uid, data_dir))

    @read("/images/{sop_instance_uid:str}/heatmap.png", sync_to_thread=True)
    def heatmap(
        self,
        request: AnyRequest,
        db_session: DbSession,
        db: Db,
        data_dir: DataDir,
        study_instance_uid: FromPath[str],
        sop_instance_uid: FromPath[str],
    ) -> File:
        """The heatmap alone (8-bit grayscale, 0 to 1 as 0 to 255): the viewer's layer."""
        return _image_png(db, request, study_instance_uid,
                          heatmap_for(db_session, study_instance_uid, sop_instance_uid, data_dir))

    @read("/images/{sop_instance_uid:str}/pixels", sync_to_thread=True)
    def pixels(
        self,
        request: AnyRequest,
        db_session: DbSession,
        db: Db,
        study_instance_uid: FromPath[str],
        sop_instance_uid: FromPath[str],
        rows: Annotated[int, QueryParameter(ge=64, le=2048)] = VIEWER_ROWS,
    ) -> Response[bytes]:
        """The image's modality values for windowing in the browser: unsigned 16-bit
        little-endian, row by row, of a block-averaged copy of at most ``rows`` rows;
        value = offset + stored x scale. The headers give the size, the offset and scale,
        the image's default window (modality units), whether low values are bright, and on
        which side the chest wall is (the viewer hangs right breasts with it on the right)."""
        path = image_file_for(db_session, study_instance_uid, sop_instance_uid)
        try:
            check_viewable(read_dataset(path, stop_before_pixels=True))  # before reading pixels
            image = viewer_pixels(read_dataset(path), max_rows=rows)
        except ImagingError as exc:
            raise ConflictError(_("Image %(uid)s cannot be shown in the viewer: %(reason)s")
                                % {"uid": sop_instance_uid, "reason": exc}) from None
        record_access(db, request, "image viewed", study_instance_uid)
        height, width = image.values.shape
        return Response(image.to_bytes(), media_type="application/octet-stream", headers={
            "X-Image-Rows": str(height), "X-Image-Columns": str(width),
            "X-Original-Rows": str(image.original_rows),
            "X-Original-Columns": str(image.original_columns),
            "X-Value-Offset": repr(image.offset), "X-Value-Scale": repr(image.scale),
            "X-Window-Center": repr(image.window_center), "X-Window-Width": repr(image.window_width),
            "X-Invert": "1" if image.invert else "0",
            "X-Chest-Wall": {True: "right", False: "left", None: ""}[image.chest_wall_on_right],
            "X-Padding-Code": "0",
        })

    @read("/objects/{sop_instance_uid:str}", sync_to_thread=True)
    def result_object(
        self,
        request: AnyRequest,
        db_session: DbSession,
        db: Db,
        data_dir: DataDir,
        study_instance_uid: FromPath[str],
        sop_instance_uid: FromPath[str],
    ) -> File:
        """A result object of the study, as a DICOM file (it holds the patient's data)."""
        path = result_object_for(db_session, study_instance_uid, sop_instance_uid, data_dir)
        record_access(db, request, "result object downloaded", study_instance_uid)
        return File(path, media_type="application/dicom", filename=f"{sop_instance_uid}.dcm",
                    content_disposition_type="attachment")


@dataclass
class FeedbackForm:
    verdict: str = ""
    ground_truth: str = ""
    comment: str = ""


class FeedbackController(Controller):
    """Radiologists (and admins) say whether they agree with a result and what the truth was."""

    path = "/studies/{study_instance_uid:str}"
    guards = [radiologist_or_admin]

    @post("/feedback", sync_to_thread=True)
    def feedback(self, request: AnyRequest, db: Db, study_instance_uid: FromPath[str],
                 data: URLEncodedBody[FeedbackForm]) -> Redirect:
        user = user_of(request)
        assert user is not None  # the guard let a signed-in user through
        with db.session() as writing:
            try:
                row = record_feedback(writing, study_instance_uid, user.username, data.verdict.strip(),
                                      data.ground_truth.strip(), data.comment)
            except ValueError as exc:
                raise InvalidInputError(_("Feedback not saved: %(reason)s.") % {"reason": exc}) from None
            audit(writing, actor=user.username, action="feedback given", target=study_instance_uid, detail=f"verdict={row.verdict or '-'} ground_truth={row.ground_truth or '-'}")
        return Redirect(f"/studies/{study_instance_uid}#feedback", status_code=303)


@dataclass
class UploadForm:
    file: UploadFile
    laterality: str = ""
    view: str = ""


class UploadController(Controller):
    """Ad-hoc analysis of one image (the old upload tab): stored as a study of its own, analysed
    by the worker, never routed to a PACS."""

    path = "/upload"
    guards = [radiologist_or_admin]

    @read("/", sync_to_thread=False)
    def form(self) -> Template:
        return Template("studies/upload.html", context={"error": ""})

    @post("/", sync_to_thread=True, request_max_body_size=MAX_UPLOAD_BYTES + 1024 * 1024)
    def upload(self, request: AnyRequest, db: Db, data_dir: DataDir,
               data: Annotated[UploadForm, Body(media_type=RequestEncodingType.MULTI_PART)]) -> Template | Redirect:
        user = user_of(request)
        assert user is not None
        try:
            content = data.file.file.read(MAX_UPLOAD_BYTES + 1)
            ds = dataset_from_upload(content, data.laterality.strip().upper(), data.view.strip().upper(),
                                     user.username)
            stored = store_upload(db, data_dir, ds, user.username)
        except UploadError as exc:
            return Template("studies/upload.html", context={"error": str(exc)}, status_code=422)
        return Redirect(f"/studies/{stored.study_instance_uid}", status_code=303)


class ApiController(Controller):
    path = "/api"
    guards = [any_role]

    @read("/studies", sync_to_thread=True)
    def studies(self, request: AnyRequest, db_session: DbSession, db: Db,
                expected_views: ExpectedViews, page: PageNumber = 1) -> StudyPage:
        """The worklist page as JSON, with the same filters as the portal's (query string)."""
        worklist = worklist_filter(request)
        result = list_studies(db_session, page, PER_PAGE, worklist, expected_views)
        record_access(db, request, "history viewed", _audit_target(page, worklist))
        return result

    @read("/studies/{study_instance_uid:str}", sync_to_thread=True)
    def study(
        self,
        request: AnyRequest,
        db_session: DbSession,
        db: Db,
        data_dir: DataDir,
        expected_views: ExpectedViews,
        study_instance_uid: FromPath[str],
    ) -> StudyDetail:
        result = study_detail(db_session, study_instance_uid, data_dir, expected_views)
        record_access(db, request, "study viewed", study_instance_uid)
        return result
