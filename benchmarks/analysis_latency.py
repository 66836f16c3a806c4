#!/usr/bin/env python3
"""Analysis time per 4-view study and the worker's peak memory, with the shipped model.

    .venv/bin/python benchmarks/analysis_latency.py --studies 10 [--size 1024x832]
    .venv/bin/python benchmarks/analysis_latency.py --studies 5 --real ../shared/data/dicom/cbis_ddsm

With ``--real DIR`` the DICOM files in DIR are analysed as one study, ``--studies`` times.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mammogate.inference import Analyzer, load_bundle  # noqa: E402
from mammogate.training.synthetic import write_study  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--size", default="1024x832", help="rows x columns of each image")
    parser.add_argument("--real", type=Path, help="a folder of real DICOM images: one study")
    args = parser.parse_args()
    rows, columns = (int(v) for v in args.size.split("x"))
    started = time.perf_counter()
    analyzer = Analyzer(load_bundle(None))
    analyzer.model  # noqa: B018 -- TensorFlow import and weights, timed apart
    load_seconds = time.perf_counter() - started
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.studies):
            if args.real is not None:
                paths = sorted(args.real.glob("*.dcm"))
            else:
                study = write_study(Path(tmp) / str(seed), seed=20_000 + seed, lesion=None,
                                    rows=rows, columns=columns)
                paths = [i.path for i in study.images if i.path is not None]
            t0 = time.perf_counter()
            analyzer.analyze_study(paths)
            times.append(time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    what = (f"{len(paths)} real images from {args.real}" if args.real is not None
            else f"4 x {rows}x{columns}")
    print(f"{platform.node()} ({platform.machine()}), {time.strftime('%Y-%m-%d')}, "
          f"{args.studies} studies of {what}")
    print(f"model load (TensorFlow import + weights): {load_seconds:.1f} s")
    print(f"analysis per study: median {statistics.median(times):.2f} s, "
          f"max {max(times):.2f} s (first {times[0]:.2f} s)")
    print(f"peak RSS: {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
