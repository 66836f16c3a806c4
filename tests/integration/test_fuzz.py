"""Fuzzing the DICOM service: a few hundred malformed datasets and PDUs, interleaved with
valid instances, against ``mammogate serve``. The node stays up, answers every bad dataset with
a failure status (or stores it when the mutation left it valid), every valid instance is stored
and analysed once, and its memory stays under a ceiling. ``benchmarks/fuzz.py`` runs 1,000+."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, select

from mammogate.db import Analysis, Database, Instance, Study
from mammogate.inference.isolated import resident_bytes
from tests.fuzzing import FAILURES, SUCCESS, Harness, malformed_file, malformed_pdu
from tests.peers import Node, wait_until
from tests.tiny_bundle import write_tiny_bundle

CASES = 200
MEMORY_CEILING = 1_500 * 2**20  # the node process, while being fuzzed


def test_fuzzed_datasets_and_pdus_never_hurt_the_node(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "bundle")
    node = Node(tmp_path / "node", settle_seconds=1, extra_env={
        "MAMMOGATE_MODEL__BUNDLE": str(bundle),
        # a hostile peer that stops mid-PDU is cut off after 1 s, not the default minute
        "MAMMOGATE_DICOM__NETWORK_TIMEOUT": "1", "MAMMOGATE_DICOM__ASSOCIATION_REQUEST_SECONDS": "1"})
    node.start()
    (tmp_path / "cases").mkdir()
    harness = Harness(node.dicom_port, tmp_path / "cases")
    peak = 0
    try:
        @settings(max_examples=CASES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(malformed_file(), malformed_pdu())
        def case(data: bytes, pdu: bytes) -> None:
            nonlocal peak
            code = harness.send_file(data)
            assert code == SUCCESS or code in FAILURES, f"status {code:#06x}"
            harness.send_pdu(pdu)
            if harness.counter % 20 == 0:
                harness.send_valid(harness.counter)
            assert node.process is not None and node.process.poll() is None, "the node died"
            peak = max(peak, resident_bytes(node.process.pid))

        case()
        assert harness.counter == CASES
        assert sum(harness.statuses.get(code, 0) for code in FAILURES) > CASES // 2
        assert peak < MEMORY_CEILING, f"node peaked at {peak / 2**20:.0f} MiB"
        db = Database(f"sqlite:///{node.root / 'var' / 'mammogate.sqlite3'}")
        try:
            with db.session() as session:
                stored = set(session.scalars(select(Instance.sop_instance_uid)))
            assert set(harness.valid_sent) <= stored

            def analysed_once() -> bool:
                with db.session() as session:
                    for uid in harness.valid_sent:
                        study = session.scalar(select(Study).join(Instance).where(Instance.sop_instance_uid == uid))
                        if study is None or study.state not in ("done", "skipped", "failed"):
                            return False
                        count = session.scalar(select(func.count(Analysis.id)).where(Analysis.study_id == study.id))
                        assert count == 1, f"{uid} analysed {count} times"
                return True

            wait_until(analysed_once, 120, "every valid instance to be analysed")
        finally:
            db.dispose()
        assert node.echoscu().returncode == 0
    finally:
        assert node.stop() == 0
