#!/usr/bin/env python3
"""Result delivery: mammogate's three destination backends against DCMTK, into one Orthanc.

The same small Mammography CAD SR objects (headers only: the transport is what is timed) are
sent to an Orthanc on loopback (DICOMweb plugin loaded, TCP_NODELAY=1 for Orthanc and DCMTK):
  - by DCMTK's storescu, all in one association (the reference),
  - by mammogate's DIMSE backend (one association per object, as the outbox sends them),
  - by mammogate's Orthanc REST backend (POST /instances),
  - by mammogate's STOW-RS backend (POST /dicom-web/studies).
Each is timed over the whole set, three times, into a fresh Orthanc each time. Prints objects/s
and each backend's ratio to storescu; copy the table into RESULTS.md.

    .venv/bin/python benchmarks/delivery.py --objects 200
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mammogate.config import load_settings  # noqa: E402
from mammogate.db import DestinationRow  # noqa: E402
from mammogate.delivery.http import OrthancRestDestination, StowRsDestination  # noqa: E402
from mammogate.dicom_node.scu import DimseDestination  # noqa: E402
from tests.integration.test_sender import _sr_file  # noqa: E402
from tests.peers import STORESCU, Orthanc  # noqa: E402

REPEATS = 3


def _orthanc(root: Path) -> Orthanc:
    os.environ["TCP_NODELAY"] = "1"  # Debian's Orthanc leaves Nagle on otherwise
    return Orthanc(root, dicomweb=True).start()


def _timed(root: Path, send: Callable[[Orthanc], None], count: int) -> float:
    pacs = _orthanc(root)
    try:
        started = time.perf_counter()
        send(pacs)
        elapsed = time.perf_counter() - started
        stored = int(pacs_count(pacs))
        if stored != count:
            raise SystemExit(f"{root.name}: Orthanc holds {stored} instances, expected {count}")
        return elapsed
    finally:
        pacs.stop()


def pacs_count(pacs: Orthanc) -> int:
    import httpx

    return int(httpx.get(f"{pacs.url}/statistics", timeout=10).json()["CountInstances"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = [_sr_file(work / f"sr{n}.dcm") for n in range(args.objects)]
        settings = load_settings(None)
        dimse, rest, stow = DimseDestination(settings), OrthancRestDestination(), StowRsDestination()

        def with_storescu(pacs: Orthanc) -> None:
            subprocess.run([STORESCU, "-aec", pacs.aet, "127.0.0.1", str(pacs.dicom_port),
                            *map(str, files)], check=True, capture_output=True,
                           env={**os.environ, "TCP_NODELAY": "1"})

        def each(backend: object, row_of: Callable[[Orthanc], DestinationRow]) -> Callable[[Orthanc], None]:
            def send(pacs: Orthanc) -> None:
                row = row_of(pacs)
                for file in files:
                    backend.send(file, row)  # type: ignore[attr-defined]
            return send

        ways = {
            "DCMTK storescu (one association)": with_storescu,
            "mammogate dimse (association per object)": each(dimse, lambda p: DestinationRow(
                name="b", kind="dimse", ae_title=p.aet, host="127.0.0.1", port=p.dicom_port,
                tls=False)),
            "mammogate orthanc (POST /instances)": each(rest, lambda p: DestinationRow(
                name="b", kind="orthanc", url=p.url, timeout_seconds=30)),
            "mammogate stow (POST /dicom-web/studies)": each(stow, lambda p: DestinationRow(
                name="b", kind="stow", url=f"{p.url}/dicom-web", timeout_seconds=30)),
        }
        results = {}
        for name, send in ways.items():
            times = [_timed(work / f"pacs-{len(results)}-{n}", send, len(files))
                     for n in range(REPEATS)]
            results[name] = statistics.median(times)
        reference = results["DCMTK storescu (one association)"]
        print(f"{platform.node()} {platform.processor() or platform.machine()} "
              f"{os.cpu_count()} CPUs; {len(files)} CAD SRs of "
              f"{files[0].stat().st_size} bytes; median of {REPEATS}")
        print("| sender | seconds | objects/s | ratio to storescu |")
        print("|---|---|---|---|")
        for name, seconds in results.items():
            print(f"| {name} | {seconds:.2f} | {len(files) / seconds:.0f} | "
                  f"{reference / seconds:.2f} |")


if __name__ == "__main__":
    main()
