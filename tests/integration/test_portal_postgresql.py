"""The portal's database-heavy unit tests again on PostgreSQL (a database of its own on the
local server, migrated): sign-in throttling, the statistics and the worklist's filters.

The tests are imported from their unit modules and run unchanged: here the ``db_engine`` and
``database_url`` their fixtures build on are PostgreSQL's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.peers import postgres_database
from tests.unit.web.test_sign_in_throttle import (  # noqa: F401
    fast_client,
    fast_db,
    fast_settings,
    test_old_failures_are_forgotten,
    test_one_address_trying_many_accounts_is_locked,
    test_sixty_wrong_passwords_then_the_right_one_is_refused_until_the_lock_ends,
    test_the_lock_doubles_up_to_the_maximum,
)
from tests.unit.web.test_statistics import (  # noqa: F401
    stats_db,
    test_counts_time_to_result_breakdowns_and_site_performance,
)
from tests.unit.web.test_worklist import (  # noqa: F401
    sample_db,
    test_each_filter_narrows_the_set_on_both_engines,
    test_search_finds_patient_id_accession_or_name_in_any_case_and_wildcards_are_literal,
    test_sorting_by_score_puts_studies_without_one_last_and_rows_say_views_and_delivery,
    test_the_csv_export_is_exactly_the_filtered_set_in_batches_and_cannot_run_formulas,
)

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def db_engine() -> str:
    return "postgresql"


@pytest.fixture
def database_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url
