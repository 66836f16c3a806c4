"""A poison study cannot take the node down: analysis runs in a watched child process whose
memory and time are limited; exceeding either fails that attempt with the reason."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from mammogate.inference import load_bundle
from mammogate.inference.isolated import AnalysisAborted, IsolatedAnalyzer, resident_bytes
from mammogate.training.synthetic import write_study
from tests.tiny_bundle import write_tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return load_bundle(write_tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle"))


@pytest.fixture
def study(tmp_path: Path) -> list[Path]:
    return list(write_study(tmp_path / "study", seed=5, lesion=True, rows=512, columns=416).paths)


def test_a_study_is_analysed_in_a_child_process(bundle, study: list[Path]) -> None:  # type: ignore[no-untyped-def]
    analyzer = IsolatedAnalyzer(bundle, max_memory_bytes=8 * 2**30, timeout_seconds=120)
    try:
        result = analyzer.analyze_study(study)
        assert len(result.images) == 4 and result.exam_score is not None
        assert analyzer.pid is not None and analyzer.pid != os.getpid()
        assert analyzer.peak_memory_bytes > 0
    finally:
        analyzer.stop()
    assert analyzer.pid is None


def test_exceeding_the_memory_limit_fails_the_attempt_and_a_new_child_serves_the_next(
    bundle, study: list[Path]  # type: ignore[no-untyped-def]
) -> None:
    analyzer = IsolatedAnalyzer(bundle, max_memory_bytes=8 * 2**30, timeout_seconds=120)
    try:
        analyzer.start()
        first = analyzer.pid
        assert first is not None
        analyzer.max_memory_bytes = max(256 * 2**20, resident_bytes(first) // 2)  # what it already uses
        with pytest.raises(AnalysisAborted, match=r"exceeded worker.max_memory_bytes \(\d+ MiB\): \d+"):
            analyzer.analyze_study(study)
        assert analyzer.pid is None  # killed
        analyzer.max_memory_bytes = 8 * 2**30
        assert len(analyzer.analyze_study(study).images) == 4
        assert analyzer.pid != first
    finally:
        analyzer.stop()


def test_exceeding_the_time_limit_fails_the_attempt(bundle, study: list[Path]) -> None:  # type: ignore[no-untyped-def]
    analyzer = IsolatedAnalyzer(bundle, max_memory_bytes=8 * 2**30, timeout_seconds=0.05)
    try:
        analyzer.start()
        with pytest.raises(AnalysisAborted, match=r"exceeded worker.analysis_timeout_seconds \(0.05 s\)"):
            analyzer.analyze_study(study * 5)
    finally:
        analyzer.stop()


def test_a_model_that_does_not_load_in_time_names_the_setting_and_the_child_is_stopped(bundle) -> None:  # type: ignore[no-untyped-def]
    analyzer = IsolatedAnalyzer(bundle, max_memory_bytes=8 * 2**30, timeout_seconds=60, start_timeout_seconds=0.05)
    with pytest.raises(AnalysisAborted, match=r"loading the model exceeded worker.model_start_timeout_seconds \(0.05 s\)"):
        analyzer.start()
    assert analyzer.pid is None  # killed, not left loading


def test_a_child_that_dies_fails_the_attempt_with_how_it_died(bundle, study: list[Path]) -> None:  # type: ignore[no-untyped-def]
    analyzer = IsolatedAnalyzer(bundle, max_memory_bytes=8 * 2**30, timeout_seconds=60)
    try:
        analyzer.start()
        pid = analyzer.pid
        assert pid is not None
        threading.Timer(0.05, os.kill, (pid, signal.SIGKILL)).start()  # the kernel's OOM killer
        with pytest.raises(AnalysisAborted, match="killed by SIGKILL"):
            analyzer.analyze_study(study * 20)
    finally:
        analyzer.stop()


def test_the_node_keeps_receiving_while_a_poison_study_fails_with_the_reason(bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import httpx
    from sqlalchemy import select

    from mammogate.db import Database, Study
    from tests.peers import Node, wait_until

    # every analysis "runs too long": the stand-in for a study that would hang or blow up
    node = Node(tmp_path / "node", settle_seconds=0.5, extra_env={
        "MAMMOGATE_WORKER__ANALYSIS_TIMEOUT_SECONDS": "0.01",
        "MAMMOGATE_WORKER__MAX_ATTEMPTS": "2",
        "MAMMOGATE_WORKER__RETRY_SECONDS": "0",
        "MAMMOGATE_MODEL__BUNDLE": str(bundle.path),
    })
    node.start()
    try:
        poison = write_study(tmp_path / "poison", seed=8, lesion=False, rows=256, columns=208)
        assert node.storescu(*poison.paths).returncode == 0
        db = Database(f"sqlite:///{node.root / 'var' / 'mammogate.sqlite3'}")
        try:
            def failed() -> Study | None:
                with db.session() as session:
                    row = session.scalar(select(Study).where(Study.study_instance_uid == poison.study_instance_uid))
                    return row if row is not None and row.state == "failed" else None

            row = wait_until(failed, 120, "the poison study to fail")
            assert "exceeded worker.analysis_timeout_seconds (0.01 s)" in row.last_error
        finally:
            db.dispose()
        # the node is whole: DICOM still stores, the portal still answers
        other = write_study(tmp_path / "other", seed=9, lesion=False, rows=256, columns=208)
        assert node.storescu(*other.paths).returncode == 0
        assert httpx.get(f"{node.url}/healthz", timeout=5).status_code == 200
        assert node.process is not None and node.process.poll() is None
    finally:
        assert node.stop() == 0
