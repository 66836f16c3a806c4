#!/usr/bin/env python3
"""Where the time of a C-STORE goes: the SCP in this process (its own SQLite database), one
DCMTK storescu association, each stage of the store function timed by wall clock.

    .venv/bin/python benchmarks/ingest_stages.py [--count 400] [--rows 64 --columns 52] [--dir /var/tmp]

Prints per instance: the push's wall time, each stage of ``StoreService.store``, and
the rest (pynetdicom's DUL thread, storescu, the loopback): a Markdown table.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy.engine.base  # noqa: E402

from benchmarks.ingest import write_images  # noqa: E402
from mammogate.dicom_node import journal as journal_module  # noqa: E402
from mammogate.dicom_node import scp as scp_module  # noqa: E402
from mammogate.dicom_node import spool as spool_module  # noqa: E402
from tests.integration.test_scp import RunningScp  # noqa: E402
from tests.peers import STORESCU  # noqa: E402

SPENT: dict[str, float] = collections.defaultdict(float)


def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - started
    return wrapper


def instrument() -> None:
    service = scp_module.StoreService
    service.store = timed("handler, in all", service.store)  # type: ignore[method-assign]
    scp_module._payload_of = timed("the received bytes (memory or file)", scp_module._payload_of)
    scp_module.parse_dataset = timed("parse within the limits", scp_module.parse_dataset)
    scp_module.check_dataset = timed("check UIDs, SOP class, Modality", scp_module.check_dataset)
    service._spool = timed("spool: write + fsync (or fsync of the received file)", service._spool)  # type: ignore[method-assign]
    service._upsert_study = timed("database: BEGIN + the study's UPDATE/INSERT … RETURNING", service._upsert_study)  # type: ignore[method-assign]
    spool_module.Spool.commit = timed("spool: rename into place + folder fsync", spool_module.Spool.commit)  # type: ignore[method-assign]
    journal = journal_module.Journal
    journal.append = timed("journal: append + fdatasync (before Success)", journal.append)  # type: ignore[method-assign]
    service.prepare = timed("the spool file, written ahead (after Success)", service.prepare)  # type: ignore[method-assign]
    service.flush = timed("flush: rows (and files not written ahead) of a batch (after Success)", service.flush)  # type: ignore[method-assign]
    transaction = sqlalchemy.engine.base.RootTransaction
    transaction.commit = timed("database: COMMIT (WAL fsync)", transaction.commit)  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--columns", type=int, default=52)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # as `mammogate serve` sets it
    instrument()
    tmp = Path(tempfile.mkdtemp(dir=args.dir))
    try:
        files = write_images(tmp / "images", args.count, args.rows, args.columns)
        running = RunningScp(tmp / "node", allowed=[], expected_views=[])
        try:
            os.sync()
            time.sleep(0.5)
            started = time.perf_counter()
            result = subprocess.run(
                [STORESCU, "-aet", "MODALITY", "-aec", "MAMMOGATE", "127.0.0.1",
                 str(running.port), *map(str, files)],
                capture_output=True, text=True, env={**os.environ, "TCP_NODELAY": "1"})
            elapsed = time.perf_counter() - started
        finally:
            running.scp.stop()
            running.db.dispose()
        if result.returncode != 0:
            raise SystemExit(f"storescu failed: {result.stderr[-500:]}")
    finally:
        shutil.rmtree(tmp)
    per = {name: spent / args.count * 1e3 for name, spent in SPENT.items()}
    handler = per.pop("handler, in all")
    total = elapsed / args.count * 1e3
    print(f"{args.count} images of {args.rows}x{args.columns}: {args.count / elapsed:.0f}/s, "
          f"{total:.2f} ms each")
    print("| per instance | ms |\n|---|---|")
    for name, ms in per.items():
        print(f"| {name} | {ms:.3f} |")
    print(f"| handler, the rest (instance INSERT, view, log) | {handler - sum(per.values()):.3f} |")
    print(f"| **handler, in all** | **{handler:.3f}** |")
    print(f"| outside the handler (pynetdicom, storescu, loopback) | {total - handler:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
