"""sync_to_crm: batched PostgREST upserts; the CRM row equals the app's state; no duplicates."""

from __future__ import annotations

from collections.abc import Callable

from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import Prospect
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.defs.outreach.resources import SupabaseResource
from sync_pipeline.defs.outreach.sync import SOURCE_CRM, crm_row, sync_to_crm
from sync_pipeline_tests.defs.outreach.conftest import CTX, add_campaign
from sync_pipeline_tests.outreach import CRM_TABLE, SupabaseBox


def _app_rows(db_url: str, ids: list[str]) -> dict[str, dict[str, object]]:
    with transaction(db_url) as s:
        return {pid: crm_row(s.get(Prospect, pid)) for pid in ids}  # type: ignore[arg-type]


def test_crm_rows_equal_the_apps_state_and_reruns_change_nothing(
    app_db: AppDatabaseResource,
    supabase: SupabaseResource,
    supabase_box: SupabaseBox,
    add_prospect: Callable[..., str],
) -> None:
    add_campaign(app_db.url)
    ids = [add_prospect(f"p{i}", email=f"p{i}@globex.test") for i in range(5)]
    outcomes = sync_to_crm(supabase, app_db, ids, CTX)
    assert [o.status for o in outcomes] == ["succeeded"] * 5
    assert supabase_box.state.requests == 3  # batches of 2
    crm = {r["id"]: r for r in supabase_box.state.rows(CRM_TABLE)}
    assert crm == _app_rows(app_db.url, ids)

    again = sync_to_crm(supabase, app_db, ids, CTX)
    assert [o.figures for o in again] == [{"unchanged": 1}] * 5
    assert supabase_box.state.requests == 3  # nothing changed: no request

    with transaction(app_db.url) as s:
        prospect = s.get(Prospect, "p3")
        assert prospect is not None
        prospect.state = "replied"
    sync_to_crm(supabase, app_db, ids, CTX)
    assert supabase_box.state.requests == 4
    crm = {r["id"]: r for r in supabase_box.state.rows(CRM_TABLE)}
    assert len(crm) == 5 and crm["p3"]["state"] == "replied"


def test_a_rejected_batch_is_recorded_per_prospect(
    app_db: AppDatabaseResource,
    supabase_box: SupabaseBox,
    add_prospect: Callable[..., str],
) -> None:
    add_campaign(app_db.url)
    ids = [add_prospect(f"p{i}", email=f"p{i}@globex.test") for i in range(2)]
    wrong = SupabaseResource(url=supabase_box.url, service_key="wrong", table=CRM_TABLE)
    outcomes = sync_to_crm(wrong, app_db, ids, CTX)
    wrong.close()
    assert [(o.status, o.error_class) for o in outcomes] == [("failed", "config")] * 2
    assert "check SUPABASE_SERVICE_KEY" in (outcomes[0].error or "")
    assert "wrong" not in (outcomes[0].error or "")  # the key is never in a message
    state = app_db.checkpoints(SOURCE_CRM).get("p0")
    assert state is not None and state.status == "failed"
    assert supabase_box.state.rows(CRM_TABLE) == []
