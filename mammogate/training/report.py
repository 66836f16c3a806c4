"""``report.html``: the evaluation as a page a person reads, with PNG plots beside it (ROC
curves, calibration curve, FROC) drawn with matplotlib's Agg backend. No script, no CDN."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from mammogate.inference.scoring import Calibration
from mammogate.training.evaluation import Predictions, by_source
from mammogate.training.metrics import roc_curve

DISCLAIMER = "Research and decision-support tool — not a diagnostic device, not for clinical use."


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4.5, 4.0), dpi=100)
    return plt, figure, axes


def _roc_png(path: Path, predictions: Predictions, calibration: Calibration) -> None:
    plt, figure, axes = _figure()
    for source, part in by_source(predictions).items():
        labels = np.array([r.malignant for r in part.records])
        if labels.min() == labels.max():
            continue
        fpr, tpr, _ = roc_curve(labels, calibration.probability(part.pooled[:, 0]))
        axes.plot(fpr, tpr, label=source)
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("1 - specificity")
    axes.set_ylabel("sensitivity")
    axes.set_title("ROC, malignant vs rest (image)")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _calibration_png(path: Path, report: dict[str, Any]) -> None:
    plt, figure, axes = _figure()
    curve = report.get("calibration", {}).get("curve", [])
    if curve:
        axes.plot([c["mean_predicted"] for c in curve], [c["observed"] for c in curve], marker="o")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("predicted probability of cancer")
    axes.set_ylabel("observed fraction malignant")
    axes.set_title("Calibration (image)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _froc_png(path: Path, report: dict[str, Any]) -> bool:
    points = report.get("localisation", {}).get("froc") or []
    if not points:
        return False
    plt, figure, axes = _figure()
    axes.plot([p[0] for p in points], [p[1] for p in points], marker=".")
    axes.set_xlabel("false marks per image")
    axes.set_ylabel("lesion sensitivity")
    axes.set_xlim(0, max(2.0, min(5.0, max(p[0] for p in points))))
    axes.set_ylim(0, 1)
    axes.set_title("FROC (malignant lesions)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _auc_rows(name: str, entry: dict[str, Any]) -> str:
    rows = []
    for task in ("malignant_vs_rest", "abnormal_vs_normal"):
        for level in ("image", "patient"):
            m = entry.get(task, {}).get(level, {})
            low, high = (m.get("auc_ci95") or [None, None])[:2]
            rows.append(
                f"<tr><td>{html.escape(name)}</td><td>{task.replace('_', ' ')}</td><td>{level}</td>"
                f"<td>{_fmt(m.get('auc'))}</td><td>{_fmt(low)}–{_fmt(high)}</td>"
                f"<td>{_fmt(m.get('n_pos'))}/{_fmt(m.get('n_neg'))}</td>"
                f"<td>{_fmt(m.get('sensitivity_at_90_specificity'))}</td>"
                f"<td>{_fmt(m.get('specificity_at_90_sensitivity'))}</td></tr>"
            )
    return "".join(rows)


def write_html(out: Path, report: dict[str, Any], predictions: Predictions, calibration: Calibration) -> Path:
    _roc_png(out / "roc.png", predictions, calibration)
    _calibration_png(out / "calibration.png", report)
    has_froc = _froc_png(out / "froc.png", report)
    model = report.get("model", {})
    table = _auc_rows("all", report) + "".join(
        _auc_rows(name, entry) for name, entry in report.get("datasets", {}).items()
    )
    points = "".join(
        f"<tr><td>{_fmt(p.get('name'))}</td><td>{_fmt(p.get('threshold'))}</td>"
        f"<td>{_fmt(p.get('image_sensitivity'))}</td><td>{_fmt(p.get('image_specificity'))}</td>"
        f"<td>{_fmt(p.get('patient_sensitivity'))}</td><td>{_fmt(p.get('patient_specificity'))}</td></tr>"
        for p in report.get("operating_points", [])
    )
    baselines = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_fmt((entry.get('baseline_trivial_statistics') or {}).get('logistic_regression_5_fold', {}).get('auc'))}</td>"
        f"<td>{_fmt(entry.get('malignant_vs_rest', {}).get('image', {}).get('auc'))}</td></tr>"
        for name, entry in report.get("datasets", {}).items()
    )
    localisation = report.get("localisation", {})
    timing = report.get("timing", {})
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mammogate evaluation</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:right}}
td:first-child,th:first-child{{text-align:left}}.warn{{background:#fff3cd;padding:.5em 1em}}img{{margin:.5em}}</style>
</head><body>
<h1>Evaluation of {_fmt(model.get('name'))} {_fmt(model.get('version'))}</h1>
<p class="warn">{html.escape(DISCLAIMER)}</p>
<p>Model sha256 <code>{_fmt(model.get('sha256'))}</code>. {report.get('images', 0)} images of {report.get('patients', 0)} patients.
Images from the bundle's training data left out: {_fmt(report.get('images_left_out', {}).get('in_training_data'))}.</p>
<h2>Discrimination</h2>
<table><tr><th>data set</th><th>task</th><th>level</th><th>AUC</th><th>95% CI</th><th>pos/neg</th><th>sens @ 90% spec</th><th>spec @ 90% sens</th></tr>{table}</table>
<h2>Against trivial image statistics</h2>
<p>AUC of a logistic regression on {html.escape(', '.join((report.get('baseline_trivial_statistics') or {}).get('features', [])))} (5-fold by patient), beside the CNN's. A CNN that does not beat it may be reading the site, not the breast.</p>
<table><tr><th>data set</th><th>trivial statistics AUC</th><th>CNN AUC</th></tr>{baselines}</table>
<h2>Operating points</h2>
<table><tr><th>name</th><th>threshold</th><th>image sens</th><th>image spec</th><th>patient sens</th><th>patient spec</th></tr>{points}</table>
<h2>Localisation</h2>
<p>Top mark within the radius of a malignant lesion: {_fmt(localisation.get('malignant_top_mark_within_radius'))};
of any lesion: {_fmt(localisation.get('abnormal_top_mark_within_radius'))}.</p>
<h2>Calibration</h2>
<p>Expected calibration error {_fmt(report.get('calibration', {}).get('ece'))} ({_fmt(report.get('calibration', {}).get('method'))}).</p>
<p><img src="roc.png" alt="ROC curves"><img src="calibration.png" alt="calibration curve">{'<img src="froc.png" alt="FROC curve">' if has_froc else ''}</p>
<h2>Timing</h2>
<p>Median {_fmt(timing.get('seconds_per_image_median'))} s per image ({_fmt(timing.get('what'))}); model load {_fmt(timing.get('model_load_seconds'))} s.</p>
</body></html>
"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
