#!/usr/bin/env python3
"""The model's time per image by batch size: what a worker gains by running several studies'
views through the model together (``worker.batch_studies``).

    .venv/bin/python benchmarks/model_batch.py [--model DIR] [--sizes 1,4,8,16,32] [--repeats 5]

Times ``model.predict_on_batch`` (the best of ``--repeats``) on random grids of the bundle's
input size, after one warm-up call per batch size. Decoding, preprocessing, findings and the
overlays are not in it: they do not batch (``benchmarks/analysis_latency.py`` times them).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mammogate.inference import load_bundle, predict  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="a bundle directory (default: the shipped one)")
    parser.add_argument("--sizes", default="1,4,8,16,32", help="batch sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    bundle = load_bundle(args.model)
    model = bundle.load_model()
    rng = np.random.default_rng(0)
    print(f"{bundle.name} {bundle.version}, grid {bundle.input_rows}x{bundle.input_columns}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print("| batch | ms per batch | ms per image |")
    print("|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",")):
        grids = [rng.random((bundle.input_rows, bundle.input_columns), dtype=np.float32)
                 for _ in range(size)]
        predict(model, grids)
        best = min(_timed(model, grids) for _ in range(args.repeats))
        print(f"| {size} | {best * 1000:.1f} | {best * 1000 / size:.1f} |")
    return 0


def _timed(model: object, grids: list[np.ndarray]) -> float:
    started = time.perf_counter()
    predict(model, grids)
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
