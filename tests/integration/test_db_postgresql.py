"""The database tests of tests/unit/db again on PostgreSQL (a database of its own on the local
server, migrated), and NOTIFY waking a listener from another process.

The tests are imported from their unit modules and run unchanged: here the ``db_engine`` the
unit fixtures build on is "postgresql", and ``db`` is a PostgreSQL database.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mammogate.db import Database
from mammogate.db.wakeup import ANALYSIS, PgListener
from tests.peers import migrated_database, postgres_database
from tests.unit.db.test_migrations import (  # noqa: F401
    test_finding_location_upgrades_existing_findings_and_downgrades,
    test_the_migrations_make_the_models_schema,
)
from tests.unit.db.test_queue import (  # noqa: F401
    test_a_dead_delivery_lets_the_next_go_and_resubmit_starts_it_over,
    test_a_delivery_being_sent_holds_back_the_next_one_to_its_destination,
    test_a_job_that_kills_its_worker_every_time_is_given_up,
    test_a_job_whose_lease_expired_is_reclaimed,
    test_a_loop_gives_back_what_a_failed_answer_left_it_holding_once_the_database_is_back,
    test_a_resubmitted_delivery_waits_while_a_later_one_is_being_sent,
    test_concurrent_workers_each_claim_a_job_exactly_once,
    test_config_diff_names_each_difference_and_apply_clears_it,
    test_config_seeds_once_then_the_database_is_the_truth,
    test_database_errors_do_not_carry_patient_data,
    test_deliveries_to_a_disabled_destination_wait_until_it_is_enabled,
    test_deliveries_to_one_destination_go_in_order_and_a_down_one_holds_up_no_other,
    test_failed_job_retries_then_fails_for_good,
    test_leases_of_stopped_processes_can_be_released_at_once,
    test_only_quiet_studies_settle,
)
from tests.unit.db.test_retention import (  # noqa: F401
    node,
    test_a_file_outside_the_spool_is_never_removed,
    test_only_settled_fully_delivered_studies_past_retention_are_selected,
    test_sweep_removes_the_spool_files_and_records_it_and_keeps_the_rest,
)
from tests.unit.db.test_store import (  # noqa: F401
    test_a_study_points_at_its_newest_analysis_whoever_writes_it,
    test_each_finding_keeps_its_place_on_the_breast,
    test_paired_findings_share_a_lesion_number_and_every_finding_its_nipple_distance,
)
from tests.unit.db.test_wakeup import (  # noqa: F401
    test_a_study_is_ready_when_its_expected_views_are_present_or_it_is_quiet,
    test_an_announcement_wakes_its_topic_at_commit_and_not_on_rollback,
    test_an_idle_loop_with_a_long_poll_runs_again_when_work_is_announced,
)

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def db_engine() -> str:
    return "postgresql"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with migrated_database("postgresql", tmp_path) as database:
        yield database


def test_postgresql_notify_from_another_process_wakes_the_listener() -> None:
    with postgres_database() as url:
        db = Database(url)
        db.migrate()
        woken = threading.Event()
        db.wakeup.subscribe(ANALYSIS, woken)
        listener = PgListener(url, db.wakeup, retry_seconds=0.5, check_seconds=0.2).start()
        try:
            assert listener.listening.wait(20)
            woken.clear()  # the listener wakes every topic once when it (re)connects
            code = (
                "import sys; from mammogate.db import Database; "
                "from mammogate.db.wakeup import ANALYSIS\n"
                "db = Database(sys.argv[1])\n"
                "with db.session() as s: db.announce(s, ANALYSIS)\n"
            )
            subprocess.run([sys.executable, "-c", code, url], check=True, timeout=60)
            assert woken.wait(10), "no wake-up from the other process's NOTIFY"
        finally:
            listener.stop()
            db.dispose()
