#!/usr/bin/env python3
"""Fuzzing the DICOM service at length: malformed datasets and PDUs (the strategies of
``tests/fuzzing.py``) sent to ``mammogate serve`` (shipped model) and to Orthanc in the same run,
case by case, with a valid instance every 20 cases. Reports, for each receiver: whether it
survived, the statuses it answered, its peak resident memory and the seconds per case; and for
mammogate, that every valid instance was stored and analysed. Copy the table into RESULTS.md.

    .venv/bin/python benchmarks/fuzz.py --cases 1000
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from mammogate.db import Analysis, Database, Instance, Study  # noqa: E402
from mammogate.inference.isolated import resident_bytes  # noqa: E402
from tests.fuzzing import FAILURES, SUCCESS, Harness, malformed_file, malformed_pdu  # noqa: E402
from tests.peers import Node, Orthanc, wait_until  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--orthanc-cases", type=int, default=200,
                        help="send the first N cases to Orthanc as well (it takes up to its timeout per bad PDU)")
    parser.add_argument("--model", type=Path, default=None, help="model bundle (default: the shipped one)")
    args = parser.parse_args()
    os.environ.setdefault("TCP_NODELAY", "1")  # Orthanc (DCMTK inside) leaves Nagle on otherwise
    with tempfile.TemporaryDirectory(prefix="mammogate-fuzz-") as tmp:
        root = Path(tmp)
        env = {"MAMMOGATE_DICOM__NETWORK_TIMEOUT": "1", "MAMMOGATE_DICOM__ASSOCIATION_REQUEST_SECONDS": "1"}
        if args.model is not None:
            env["MAMMOGATE_MODEL__BUNDLE"] = str(args.model.resolve())
        node = Node(root / "node", settle_seconds=1, extra_env=env)
        orthanc = Orthanc(root / "orthanc", extra_config={"DicomScpTimeout": 1})  # as mammogate's 1 s
        (root / "cases").mkdir()
        node.start()
        orthanc.start()
        ours = Harness(node.dicom_port, root / "cases")
        theirs = Harness(orthanc.dicom_port, root / "cases", called=orthanc.aet)
        peak = {"mammogate": 0, "Orthanc": 0}
        seconds = {"mammogate": 0.0, "Orthanc": 0.0}
        alive = {"mammogate": True, "Orthanc": True}
        try:
            @settings(max_examples=args.cases, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(malformed_file(), malformed_pdu())
            def case(data: bytes, pdu: bytes) -> None:
                for name, harness, process in (("mammogate", ours, node.process), ("Orthanc", theirs, orthanc.process)):
                    if not alive[name] or (name == "Orthanc" and theirs.counter >= args.orthanc_cases):
                        continue
                    assert process is not None
                    started = time.perf_counter()
                    try:
                        harness.send_file(data)
                        harness.send_pdu(pdu)
                        if harness.counter % 20 == 0 and name == "mammogate":
                            harness.send_valid(harness.counter)
                    except AssertionError as exc:  # a refused association: the receiver is unwell
                        print(f"{name}: {exc}")
                    seconds[name] += time.perf_counter() - started
                    if process.poll() is not None:
                        alive[name] = False
                        print(f"{name} died after {harness.counter} cases (exit {process.returncode})")
                        continue
                    peak[name] = max(peak[name], resident_bytes(process.pid))
                if ours.counter % 100 == 0:
                    print(f"{ours.counter} cases", flush=True)

            case()
            analysed = 0
            if alive["mammogate"]:
                db = Database(f"sqlite:///{node.root / 'var' / 'mammogate.sqlite3'}")
                try:
                    def done() -> bool:
                        with db.session() as session:
                            states = [session.scalar(select(Study.state).join(Instance)
                                                     .where(Instance.sop_instance_uid == uid))
                                      for uid in ours.valid_sent]
                        return all(s in ("done", "skipped", "failed") for s in states)

                    wait_until(done, 600, "every valid instance to be analysed")
                    with db.session() as session:
                        analysed = session.scalar(select(func.count(Analysis.id))) or 0
                finally:
                    db.dispose()
        finally:
            node_exit = node.stop()
            orthanc.stop()
    print(f"\n{platform.node()}, {os.cpu_count()} cores, {ours.counter} cases to mammogate "
          f"({len(ours.valid_sent)} valid instances between them), the first {theirs.counter} to Orthanc")
    print("| receiver | survived | Success | failure statuses | no status | peak RSS (MiB) | s per case |")
    print("|---|---|---|---|---|---|---|")
    for name, harness in (("mammogate", ours), ("Orthanc", theirs)):
        failures = sum(harness.statuses.get(code, 0) for code in FAILURES)
        other = sum(n for code, n in harness.statuses.items() if code not in FAILURES and code != SUCCESS)
        print(f"| {name} | {'yes' if alive[name] else 'NO'} | {harness.statuses.get(SUCCESS, 0)} | {failures} | "
              f"{other} | {peak[name] / 2**20:.0f} | {seconds[name] / max(harness.counter, 1):.3f} |")
    print(f"mammogate: exit {node_exit}, {analysed} analyses for {len(ours.valid_sent)} valid instances")
    ok = alive["mammogate"] and node_exit == 0 and analysed >= len(ours.valid_sent)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
