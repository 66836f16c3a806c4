#!/usr/bin/env python3
"""Analysis time per 4-view study, by stage, with the shipped model (or ``--model DIR``).

    .venv/bin/python benchmarks/analysis_latency.py --studies 5 [--size 4096x3328]
    .venv/bin/python benchmarks/analysis_latency.py --studies 5 --real ../shared/data/dicom/cbis_ddsm

Synthetic studies are written as uncompressed 16-bit files of ``--size`` (default 4096x3328, a
full-field detector); with ``--real DIR`` the DICOM files in DIR are analysed as one study.
Prints the model load time, the warm-up (the graph traced once, as the node's analysis process
does right after it says it is ready), the whole ``Analyzer.analyze_study`` time (read, decode, reduce,
LUTs, segment, predict, findings, overlay PNGs) and, per image, the stages apart, beside a bare
``model.predict_on_batch`` on the same tensors: the per-image overhead over the model.
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mammogate.imaging import read_dataset  # noqa: E402
from mammogate.inference import Analyzer, load_bundle, postprocess, predict, preprocess  # noqa: E402
from mammogate.training.synthetic import write_study  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--size", default="4096x3328", help="rows x columns of each synthetic image")
    parser.add_argument("--real", type=Path, help="a folder of real DICOM images: one study")
    parser.add_argument("--model", type=Path, help="model bundle (default: the shipped one)")
    args = parser.parse_args()
    rows, columns = (int(v) for v in args.size.split("x"))
    started = time.perf_counter()
    bundle = load_bundle(args.model)
    analyzer = Analyzer(bundle)
    model = analyzer.model
    load_seconds = time.perf_counter() - started
    warm_up_seconds = analyzer.warm_up()  # what the node's analysis process does after "ready"
    warm = np.zeros((1, bundle.input_rows, bundle.input_columns, 1), np.float32)
    model.predict_on_batch(warm)  # Keras' own graph, for the bare comparison
    study_times, read_times, prepare_times, predict_times, post_times, bare_times = [], [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.studies):
            if args.real is not None:
                paths = sorted(args.real.glob("*.dcm"))
            else:
                study = write_study(Path(tmp) / str(seed), seed=20_000 + seed, lesion=None, rows=rows, columns=columns)
                paths = [i.path for i in study.images if i.path is not None]
            t0 = time.perf_counter()
            analyzer.analyze_study(paths)
            study_times.append(time.perf_counter() - t0)
            # the same work by stage, image by image
            for path in paths:
                t0 = time.perf_counter()
                ds = read_dataset(path)
                t1 = time.perf_counter()
                prepared = preprocess(ds, bundle.input_rows, bundle.input_columns)
                t2 = time.perf_counter()
                batch = prepared.grid[None, ..., None]
                read_times.append(t1 - t0)
                prepare_times.append(t2 - t1)
                # the node's predict + scoring and a bare predict on the same tensor, interleaved
                # three times (the first call after preprocessing finds colder caches)
                for _ in range(3):
                    t3 = time.perf_counter()
                    logits = predict(model, [prepared.grid])[0]
                    t4 = time.perf_counter()
                    postprocess(logits, prepared, bundle.operating_point, bundle.calibration, sharpness=bundle.sharpness)
                    t5 = time.perf_counter()
                    model.predict_on_batch(batch)
                    t6 = time.perf_counter()
                    predict_times.append(t4 - t3)
                    post_times.append(t5 - t4)
                    bare_times.append(t6 - t5)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    what = f"{len(paths)} real images from {args.real}" if args.real is not None else f"4 x {rows}x{columns} 16-bit"
    median = statistics.median
    print(f"{platform.node()} ({platform.machine()}), {time.strftime('%Y-%m-%d')}, {args.studies} studies of {what}")
    print(f"model {bundle.name} {bundle.version}: load (TensorFlow import + weights) {load_seconds:.2f} s, "
          f"then the graph traced once (warm-up) {warm_up_seconds:.2f} s")
    print(f"analyze_study: median {median(study_times):.2f} s, max {max(study_times):.2f} s (first {study_times[0]:.2f} s)")
    print(
        f"per image, medians: read {median(read_times) * 1000:.0f} ms, decode+reduce+LUTs+segment+grid "
        f"{median(prepare_times) * 1000:.0f} ms, predict {median(predict_times) * 1000:.0f} ms, "
        f"score+findings {median(post_times) * 1000:.1f} ms"
    )
    overhead = (median(predict_times) + median(post_times)) / median(bare_times) - 1
    print(
        f"bare model.predict_on_batch on the same tensor: {median(bare_times) * 1000:.0f} ms; "
        f"the node's predict + scoring + findings add {overhead * 100:.1f} % to it"
    )
    print(f"peak RSS: {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
