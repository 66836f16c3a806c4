#!/usr/bin/env python3
"""Time to result: from the last C-STORE Success of a 4-view study to its CAD SR stored in the
PACS, and how much of it is not the analysis.

``mammogate serve`` (shipped model, SQLite) with `settle_seconds` at 600 s, so only the expected
views make a study ready; an Orthanc on loopback is the PACS (C-STORE destination). For each
study: DCMTK storescu pushes its four views (one association, ``TCP_NODELAY=1``); the clock
starts when storescu returns (its last Success), and stops when Orthanc lists the SR (polled
every 5 ms). The analysis time is the worker's own measure of ``analyze_study`` (the node's log
line "analysed: ... (N s)"). The overhead (time to result minus analysis) is what settling,
queueing, waking, building the objects and delivering cost.

    .venv/bin/python benchmarks/time_to_result.py --studies 10 [--size 1024x832]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mammogate.training.synthetic import write_study  # noqa: E402
from tests.peers import STORESCU, Node, Orthanc  # noqa: E402


def sr_listed(pacs: Orthanc, study_uid: str) -> bool:
    r = httpx.post(f"{pacs.url}/tools/find", json={
        "Level": "Instance", "Query": {"StudyInstanceUID": study_uid, "Modality": "SR"}},
        timeout=5)
    return bool(r.json())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--size", default="1024x832", help="rows x columns of the images")
    args = parser.parse_args()
    rows, columns = (int(v) for v in args.size.split("x"))
    env = {**os.environ, "TCP_NODELAY": "1"}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pacs = Orthanc(tmp / "pacs").start()
        node = Node(tmp / "node", settle_seconds=600, destinations=[
            {"name": "pacs", "kind": "dimse", "ae_title": pacs.aet, "host": "127.0.0.1",
             "port": pacs.dicom_port}])
        node.start()
        totals, analyses = [], []
        try:
            for seed in range(args.studies):
                study = write_study(tmp / f"study-{seed}", seed=20_000 + seed, lesion=None,
                                    rows=rows, columns=columns)
                files = [str(i.path) for i in study.images if i.path is not None]
                subprocess.run([STORESCU, "-aet", "MODALITY", "-aec", node.ae_title,
                                "127.0.0.1", str(node.dicom_port), *files],
                               check=True, capture_output=True, env=env)
                last_success = time.perf_counter()
                deadline = last_success + 300
                while not sr_listed(pacs, study.study_instance_uid):
                    if time.perf_counter() > deadline:
                        raise SystemExit(f"no SR for study {seed} after 300 s")
                    time.sleep(0.005)
                totals.append(time.perf_counter() - last_success)
                match = re.search(
                    rf"study {re.escape(study.study_instance_uid)} analysed: .*\(([0-9.]+) s\)",
                    node.log_text())
                if match is None:
                    raise SystemExit("the node's log has no analysis time for the study")
                analyses.append(float(match.group(1)))
        finally:
            node.stop()
            pacs.stop()
    overheads = [t - a for t, a in zip(totals, analyses, strict=True)]
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}")
    print(f"{args.studies} studies of 4 views {rows}x{columns}, 16-bit; settle_seconds 600 "
          "(ready by the expected views)")
    print("| measure | median s | p90 s | max s |")
    print("|---|---|---|---|")
    for label, values in (("last Success -> SR in Orthanc", totals), ("analysis (worker)", analyses),
                          ("overhead (the difference)", overheads)):
        ordered = sorted(values)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        print(f"| {label} | {statistics.median(values):.3f} | {p90:.3f} | {max(values):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
