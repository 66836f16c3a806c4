"""The retention sweep: removes the spool files of delivered studies after
``storage.retention_days`` (see :mod:`mammogate.db.retention` for which studies). The worker
runs it between jobs, at most every ``storage.retention_check_seconds``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from mammogate.config import Settings
from mammogate.db import Database, utcnow
from mammogate.db.retention import (
    images_removed,
    instance_paths,
    lock_for_removal,
    studies_past_retention,
)

log = logging.getLogger(__name__)


class RetentionSweep:
    def __init__(self, settings: Settings, db: Database, actor: str,
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.db = db
        self.actor = actor
        self.clock = clock
        self._next_at: float | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.storage.retention_days > 0

    def run_if_due(self) -> int:
        """Sweep if retention is on and the last sweep is ``retention_check_seconds`` ago.
        Never raises for a database or file error (logged): the worker goes on."""
        if not self.enabled:
            return 0
        now = self.clock()
        if self._next_at is not None and now < self._next_at:
            return 0
        self._next_at = now + self.settings.storage.retention_check_seconds
        try:
            return self.sweep()
        except SQLAlchemyError as exc:
            log.error("retention sweep: database error, trying again in %g s: %s",
                      self.settings.storage.retention_check_seconds, type(exc).__name__)
            return 0

    def sweep(self) -> int:
        """Remove the spool files of every study past retention. Returns how many studies."""
        cutoff = utcnow() - timedelta(days=self.settings.storage.retention_days)
        with self.db.read_session() as session:
            candidates = studies_past_retention(session, cutoff)
        done = 0
        for study_id in candidates:
            if self._remove(study_id, cutoff):
                done += 1
        return done

    def _remove(self, study_id: int, cutoff: datetime) -> bool:
        spool = self.settings.spool_dir.resolve()
        with self.db.session() as session:
            # locked and checked again: an image or a re-analysis may have come meanwhile (the
            # SCP locks the study before it adds an image, so none lands while we hold it)
            study = lock_for_removal(session, study_id, cutoff)
            if study is None:
                return False
            removed = missing = 0
            freed = 0
            folders: set[Path] = set()
            for name in instance_paths(session, study_id):
                path = Path(name).resolve()
                if not path.is_relative_to(spool):
                    log.error("retention: %s of study %s is not in the spool %s: left alone",
                              path, study.study_instance_uid, spool)
                    continue
                try:
                    freed += path.stat().st_size
                    path.unlink()
                    removed += 1
                    folders.add(path.parent)
                except FileNotFoundError:
                    missing += 1
            for folder in folders:
                try:
                    folder.rmdir()  # the study's folder, once empty
                except OSError:
                    pass  # not empty (e.g. a half-received file): it stays
            detail = (f"{removed} spool files ({freed} bytes) removed, "
                      f"{self.settings.storage.retention_days:g} days after the last delivery"
                      + (f"; {missing} were already gone" if missing else ""))
            images_removed(session, study, detail=detail, actor=self.actor)
            uid = study.study_instance_uid
        log.info("retention: study %s: %s", uid, detail)
        return True
