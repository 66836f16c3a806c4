#!/usr/bin/env python3
"""C-STORE throughput: mammogate's SCP against DCMTK's storescp and Orthanc, in one run.

The same synthetic MG studies are pushed with DCMTK's storescu (one association per receiver)
to each receiver on loopback; each receiver makes the files durable its own way (mammogate:
fsync of file and folder plus a database row before Success). Prints seconds, images/s and the
ratio to each reference, and appends nothing by itself: copy the table into RESULTS.md.

    .venv/bin/python benchmarks/store_throughput.py --studies 10
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mammogate.training.synthetic import write_study  # noqa: E402
from tests.peers import STORESCU, Node, Orthanc, free_port, wait_until  # noqa: E402

REPEATS = 3


def push(files: list[Path], port: int, called: str) -> float:
    """Median seconds of REPEATS pushes (re-sends of the same instances are stored again by
    storescp and Orthanc, and answered Success after the duplicate check by mammogate: so the
    first push is timed separately for mammogate, see main)."""
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        result = subprocess.run(
            [STORESCU, "-aec", called, "127.0.0.1", str(port), *map(str, files)],
            capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise SystemExit(f"storescu to {called} failed: {result.stderr[-500:]}")
    return statistics.median(times)


def storescp(files: list[Path], out: Path, pdu: int) -> float:
    out.mkdir()
    port = free_port()
    server = subprocess.Popen(
        ["/usr/bin/storescp", "--max-pdu", str(pdu), "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        return push(files, port, "STORESCP")
    finally:
        server.terminate()
        server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files: list[Path] = []
        for seed in range(args.studies):
            study = write_study(tmp / f"s{seed}", seed=10_000 + seed, lesion=None)
            files += [i.path for i in study.images if i.path is not None]
        size_mb = sum(f.stat().st_size for f in files) / 1e6

        results: dict[str, float] = {}
        results["DCMTK storescp (max PDU 16 KiB, its default)"] = storescp(files, tmp / "a", 16384)
        results["DCMTK storescp (max PDU 128 KiB)"] = storescp(files, tmp / "b", 131072)

        pacs = Orthanc(tmp / "orthanc").start()
        try:
            results["Orthanc 1.10 (defaults)"] = push(files, pacs.dicom_port, pacs.aet)
        finally:
            pacs.stop()

        # Store only (no analysis during the run); each repeat into a fresh node, so every
        # push stores new instances (fsync of file and folder, a database row) before Success.
        node_times = []
        for repeat in range(REPEATS):
            node = Node(tmp / f"node{repeat}", settle_seconds=3600)
            node.start(timeout=300)
            try:
                started = time.perf_counter()
                result = node.storescu(*files)
                node_times.append(time.perf_counter() - started)
                assert result.returncode == 0, result.stderr
                wait_until(lambda n=node: "stored" in n.log_text(), 10, "the node's log")
            finally:
                node.stop()
        results["mammogate (unlimited PDU, fsync + SQLite row)"] = statistics.median(node_times)

    n = len(files)
    print(f"{n} images, {size_mb:.1f} MB, storescu over loopback; {platform.node()} "
          f"({platform.processor() or platform.machine()}), {time.strftime('%Y-%m-%d')}")
    mine = results["mammogate (unlimited PDU, fsync + SQLite row)"]
    print(f"median of {REPEATS} pushes each")
    print("| receiver | seconds | images/s | mammogate time ÷ this |")
    print("|---|---|---|---|")
    for name, seconds in results.items():
        print(f"| {name} | {seconds:.2f} | {n / seconds:.1f} | {mine / seconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
