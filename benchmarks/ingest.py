#!/usr/bin/env python3
"""Ingest throughput against DCMTK and Orthanc, in one run, with Nagle off everywhere.

Two sizes, pushed by DCMTK's storescu over one association to each receiver on loopback:
  small -- ``--small N`` MG images of 64x52 (per-instance overhead: durability, database,
           association handling);
  large -- ``--large N`` MG images of 4096x3328, 16-bit (about 27 MB each: bytes moved).
Receivers: DCMTK storescp (writes each file, no fsync), Orthanc (its SQLite index and storage
area, defaults), and ``mammogate serve`` (fsync of the file and its folder and a database
commit before each Success; settle_seconds long, so no analysis runs during the timing). Each
peer gets ``TCP_NODELAY=1``. Every push starts after an ``os.sync()``, so that no receiver pays
for the dirty pages of the one before. Each receiver's fsync/fdatasync calls are counted with
strace during a separate push of each size (strace slows it; those pushes are not timed).

    .venv/bin/python benchmarks/ingest.py --small 1000 --large 16 [--runs 2] [--dir /var/tmp]

``--dir``: where the images and every receiver's storage go (default: the system's temporary
folder). Prints Markdown tables (seconds, images/s, ratio to storescp and to Orthanc, the
receiving process's CPU seconds per push; fsyncs per instance) to paste into
benchmarks/RESULTS.md. The receivers run in turn within each run, so that a change in the
machine's load falls on all of them; on a shared VM compare ratios within one run.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.peers import STORESCU, Node, Orthanc, free_port  # noqa: E402

MG = "1.2.840.10008.5.1.4.1.1.1.2"
NODELAY = {**os.environ, "TCP_NODELAY": "1"}  # for the DCMTK tools


def write_images(out: Path, count: int, rows: int, columns: int, per_study: int = 4) -> list[Path]:
    out.mkdir(parents=True)
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 4096, size=(rows, columns), dtype=np.uint16).tobytes()
    views = [("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")]
    files = []
    study_uid = series_uid = ""
    for i in range(count):
        if i % per_study == 0:
            study_uid, series_uid = generate_uid(), generate_uid()
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MG
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = MG
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.Modality = "MG"
        ds.PatientID = f"BENCH-{i // per_study}"
        ds.PatientName = "Bench^Mark"
        ds.ImageLaterality, ds.ViewPosition = views[i % 4]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.Rows, ds.Columns = rows, columns
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = pixels
        path = out / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def push(files: list[Path], port: int, called: str, pid: int | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the receiving process ``pid``) of one storescu push."""
    os.sync()  # the previous receiver's dirty pages are written before this one starts
    time.sleep(0.5)
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    started = time.perf_counter()
    result = subprocess.run(
        [STORESCU, "-aet", "MODALITY", "-aec", called, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, env=NODELAY)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu_before if pid is not None else float("nan")
    if result.returncode != 0:
        raise SystemExit(f"storescu to {called} failed: {result.stderr[-500:]}")
    return elapsed, cpu


def storescp(files: list[Path], out: Path) -> tuple[float, float]:
    out.mkdir(parents=True)
    port = free_port()
    server = subprocess.Popen(["/usr/bin/storescp", "-od", str(out), str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=NODELAY)
    time.sleep(0.5)
    try:
        return push(files, port, "STORESCP", server.pid)
    finally:
        server.terminate()
        server.wait()


def orthanc(files: list[Path], root: Path) -> tuple[float, float]:
    pacs = Orthanc(root).start()  # inherits TCP_NODELAY=1 (set in main)
    assert pacs.process is not None
    try:
        return push(files, pacs.dicom_port, pacs.aet, pacs.process.pid)
    finally:
        pacs.stop()


def _node(root: Path, tree: Path | None = None) -> Node:
    node = Node(root, allowed_calling_ae_titles=["MODALITY"], settle_seconds=3600,
                dicom={"expected_views": []}, poll_seconds=1.0)
    if tree is not None:  # another checkout's code (e.g. the commit before a change)
        node.executable = [sys.executable, "-c", f"import runpy, sys; sys.path.insert(0, {str(tree)!r}); "
                           "runpy.run_module('mammogate.cli', run_name='__main__')"]
    return node


def mammogate(files: list[Path], root: Path, tree: Path | None = None) -> tuple[float, float]:
    node = _node(root, tree)
    node.start()
    assert node.process is not None
    try:  # (the serve process; its analysis process is idle during the push)
        return push(files, node.dicom_port, node.ae_title, node.process.pid)
    finally:
        node.stop()


def _traced(pid: int, trace: Path) -> subprocess.Popen[bytes]:
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o",
                               str(trace), "-p", str(pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    return tracer


def _count(tracer: subprocess.Popen[bytes], trace: Path, files: list[Path]) -> float:
    time.sleep(0.5)
    tracer.send_signal(signal.SIGINT)
    tracer.wait()
    lines = [line for line in trace.read_text().splitlines() if "sync(" in line]
    return len(lines) / len(files)


def fsyncs_per_instance(name: str, files: list[Path], root: Path, tree: Path | None = None) -> float:
    """fsync + fdatasync calls of a receiver per instance, over one push."""
    root.mkdir(parents=True)
    trace = root / "strace.txt"
    if name == "DCMTK storescp":
        (root / "out").mkdir()
        port = free_port()
        server = subprocess.Popen(["/usr/bin/storescp", "-od", str(root / "out"), str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=NODELAY)
        time.sleep(0.5)
        tracer = _traced(server.pid, trace)
        try:
            push(files, port, "STORESCP")
            return _count(tracer, trace, files)
        finally:
            server.terminate()
            server.wait()
    if name == "Orthanc":
        pacs = Orthanc(root / "orthanc").start()
        assert pacs.process is not None
        tracer = _traced(pacs.process.pid, trace)
        try:
            push(files, pacs.dicom_port, pacs.aet)
            return _count(tracer, trace, files)
        finally:
            pacs.stop()
    node = _node(root / "node", tree)
    node.start()
    assert node.process is not None
    tracer = _traced(node.process.pid, trace)
    try:
        push(files, node.dicom_port, node.ae_title)
        return _count(tracer, trace, files)
    finally:
        node.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=16)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the images and the receivers' storage go")
    parser.add_argument("--compare-tree", type=Path, default=None,
                        help="also time mammogate from this checkout (e.g. the code before a change)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        sizes = {
            f"small ({args.small} x 64x52)": write_images(tmp / "small", args.small, 64, 52),
            f"large ({args.large} x 4096x3328)": write_images(tmp / "large", args.large, 4096, 3328),
        }
        sizes = {label: files for label, files in sizes.items() if files}  # --large 0: small only
        receivers: dict[str, Callable[[list[Path], Path], tuple[float, float]]] = {
            "DCMTK storescp": storescp, "Orthanc": orthanc, "mammogate": mammogate}
        trees = {"mammogate": None}
        if args.compare_tree is not None:
            other = f"mammogate ({args.compare_tree.name})"
            receivers[other] = functools.partial(mammogate, tree=args.compare_tree.resolve())
            trees[other] = args.compare_tree.resolve()
        print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, Python {platform.python_version()}; "
              f"{time.strftime('%Y-%m-%d')}; storage under {tmp}")
        print("| images | receiver | seconds (median) | each run | images/s | vs storescp "
              "| vs Orthanc | receiver CPU s (median) |")
        print("|---|---|---|---|---|---|---|---|")
        for label, files in sizes.items():
            times: dict[str, list[float]] = {name: [] for name in receivers}
            cpus: dict[str, list[float]] = {name: [] for name in receivers}
            for run in range(args.runs):
                for name, receive in receivers.items():
                    wall, cpu = receive(files, tmp / f"{name}-{label[:5]}-{run}".replace(" ", ""))
                    times[name].append(wall)
                    cpus[name].append(cpu)
            median = {name: statistics.median(t) for name, t in times.items()}
            for name in receivers:
                rate = len(files) / median[name]
                each = " / ".join(f"{t:.2f}" for t in times[name])
                print(f"| {label} | {name} | {median[name]:.2f} | {each} | {rate:.1f} | "
                      f"{median['DCMTK storescp'] / median[name]:.2f} | "
                      f"{median['Orthanc'] / median[name]:.2f} | "
                      f"{statistics.median(cpus[name]):.2f} |", flush=True)
        samples = {label.split(" (")[0]: files[:200] for label, files in sizes.items()}
        print("\n| fsync + fdatasync calls per instance (strace) | "
              + " | ".join(f"{kind} ({len(files)})" for kind, files in samples.items()) + " |")
        print("|---|" + "---|" * len(samples))
        for name in receivers:
            root = tmp / f"strace-{name}".replace(" ", "").replace("(", "").replace(")", "")
            tree = trees.get(name)
            counts = [fsyncs_per_instance(name, files, root / kind, tree)
                      for kind, files in samples.items()]
            print(f"| {name} | " + " | ".join(f"{c:.2f}" for c in counts) + " |", flush=True)
    return 0


if __name__ == "__main__":
    os.environ["TCP_NODELAY"] = "1"  # DCMTK and Orthanc leave Nagle on without it
    raise SystemExit(main())
