"""A worker with a deep queue analyses several studies in one model pass: the same results as
one at a time, each study recorded on its own, a failed batch retried study by study, and the
analysis child process answering a batch."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from mammogate.analysis import AnalysisWorker
from mammogate.db import Analysis, Job, Study
from mammogate.inference import Analyzer, load_bundle
from mammogate.inference.isolated import AnalysisAborted, IsolatedAnalyzer
from mammogate.inference.pipeline import PreparedImage
from mammogate.inference.results import StudyResult
from mammogate.training.synthetic import write_study
from tests.integration.test_worker_races import _node, _run_until_idle, shipped_analyzer
from tests.peers import STORESCU, require_tool
from tests.tiny_bundle import write_tiny_bundle


def _studies(root: Path, count: int, seed: int) -> list[list[Path]]:
    return [list(write_study(root / f"s{n}", seed=seed + n, lesion=n % 2 == 0, rows=512,
                             columns=416).paths) for n in range(count)]


class ProbedAnalyzer(Analyzer):
    """The shipped model, noting the size of each model call."""

    calls: list[int]

    def predict_prepared(self, prepared: Sequence[PreparedImage]) -> np.ndarray:
        self.calls.append(len(prepared))
        return super().predict_prepared(prepared)


def test_studies_analysed_together_score_as_when_analysed_alone(tmp_path: Path) -> None:
    studies = _studies(tmp_path, 3, seed=9100)
    studies[1].append(tmp_path / "gone.dcm")  # a file that went missing: that view fails
    analyzer = ProbedAnalyzer(shipped_analyzer().bundle, batch_size=8)
    analyzer._model = shipped_analyzer().model  # the one loaded model
    analyzer.calls = []
    together = analyzer.analyze_studies(studies)
    assert analyzer.calls == [12], "the twelve views of three studies in one model pass"
    analyzer.calls = []
    alone = [analyzer.analyze_study(paths) for paths in studies]
    assert analyzer.calls == [4, 4, 4]
    for batched, single in zip(together, alone, strict=True):
        assert isinstance(batched, StudyResult)
        assert batched.study_instance_uid == single.study_instance_uid
        assert [i.sop_instance_uid for i in batched.images] == \
            [i.sop_instance_uid for i in single.images]
        assert batched.exam_score == pytest.approx(single.exam_score, abs=1e-5)
        for a, b in zip(batched.images, single.images, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-5)
            assert [c for f in a.findings for c in f.center] == \
                pytest.approx([c for f in b.findings for c in f.center])
    assert [s.sop_instance_uid for s in together[1].skipped if s.failed] == ["gone.dcm"]  # type: ignore[union-attr]


class Recording:
    """The shipped model through ``analyze_study`` and ``analyze_studies``, noting each call;
    ``fail_batches``: a batch's analysis process dies (as a poison study would kill it)."""

    def __init__(self, *, fail_batches: bool = False):
        self.fail_batches = fail_batches
        self.calls: list[int] = []

    def analyze_study(self, paths: Sequence[Path]) -> StudyResult:
        self.calls.append(1)
        return shipped_analyzer().analyze_study(paths)

    def analyze_studies(self, studies: Sequence[Sequence[Path]]) -> list[StudyResult | Exception]:
        self.calls.append(len(studies))
        if self.fail_batches:
            raise AnalysisAborted("the analysis process was killed by SIGKILL during the analysis")
        return shipped_analyzer().analyze_studies(studies)


def _push(port: int, studies: list[list[Path]]) -> None:
    require_tool(STORESCU)
    sent = subprocess.run([STORESCU, "-aec", "MAMMOGATE", "127.0.0.1", str(port),
                           *[str(p) for paths in studies for p in paths]],
                          capture_output=True, text=True, timeout=120)
    assert sent.returncode == 0, sent.stderr


@pytest.mark.parametrize("fail_batches", [False, True], ids=["batch-succeeds", "batch-dies"])
def test_a_deep_queue_is_analysed_in_batches_each_study_recorded_once(
    tmp_path: Path, database_url: str, fail_batches: bool
) -> None:
    db, scp, port = _node(tmp_path, database_url)
    try:
        _push(port, _studies(tmp_path / "in", 10, seed=9200))
        settings = scp.settings.model_copy(update={"worker": scp.settings.worker.model_copy(
            update={"batch_studies": 3})})
        analyzer = Recording(fail_batches=fail_batches)
        worker = AnalysisWorker(settings, db, "worker-batch", lambda: analyzer)
        worker.start_model()
        _run_until_idle(worker)

        if fail_batches:
            # 10 waiting: a batch of 3 dies (9 were waiting besides the first: more than two
            # batches), then others ...; the studies of a failed batch come back alone (a
            # retried job is never batched again)
            assert analyzer.calls[0] == 3 and max(analyzer.calls[1:]) <= 3
            assert analyzer.calls.count(1) >= 3
        else:
            # 10 waiting: a batch of 3 (9 waited besides the first: more than two batches),
            # then 1 at a time (6 left, no more than two batches: spread over the workers)
            assert analyzer.calls == [3, 1, 1, 1, 1, 1, 1, 1], analyzer.calls
        with db.session() as session:
            studies = session.scalars(select(Study)).all()
            jobs = session.scalars(select(Job)).all()
            per_study = [a.study_id for a in session.scalars(select(Analysis))]
            assert len(studies) == 10 and {s.state for s in studies} == {"done"}
            assert sorted(per_study) == sorted(s.id for s in studies), "one analysis per study"
            assert {j.state for j in jobs} == {"done"}
            attempts = sorted(j.attempts for j in jobs)
            if fail_batches:
                assert attempts.count(2) == sum(c for c in analyzer.calls if c > 1), \
                    "each study of a failed batch tried once more, alone"
            else:
                assert attempts == [1] * 10
    finally:
        scp.stop()
        db.dispose()


def test_the_analysis_process_answers_a_batch_study_by_study(tmp_path: Path) -> None:
    bundle = load_bundle(write_tiny_bundle(tmp_path / "bundle"))
    studies = _studies(tmp_path / "in", 2, seed=9300)
    analyzer = IsolatedAnalyzer(bundle, max_memory_bytes=8 * 2**30, timeout_seconds=120)
    try:
        results = analyzer.analyze_studies([*studies, [tmp_path / "nothing-here.dcm"]])
        alone = analyzer.analyze_study(studies[0])
    finally:
        analyzer.stop()
    first, second, empty = results
    assert isinstance(first, StudyResult) and isinstance(second, StudyResult)
    assert len(first.images) == 4 and len(second.images) == 4
    assert first.study_instance_uid != second.study_instance_uid
    assert first.exam_score == pytest.approx(alone.exam_score, abs=1e-5)
    assert isinstance(empty, StudyResult) and empty.category == "failed" and not empty.images
