"""Enrichment through the Hunter sandbox: domains, addresses, limits, credits, idempotence."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import Prospect
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.defs.outreach.resources import HunterResource
from sync_pipeline.defs.outreach.sync import (
    SOURCE_EMAIL,
    SOURCE_WEBSITE,
    enrich_email,
    enrich_website,
)
from sync_pipeline.sandbox.hunter.app import Company, Person
from sync_pipeline_tests.defs.outreach.conftest import CTX, add_campaign
from sync_pipeline_tests.outreach import HunterBox


def _prospect(db_url: str, pid: str) -> Prospect:
    with transaction(db_url) as s:
        prospect = s.get(Prospect, pid)
        assert prospect is not None
        return prospect


@pytest.mark.parametrize(
    ("company", "domain", "website_ok"),
    [("Globex", "globex.test", True), ("Hooli", "hooli.test", False)],
)
def test_enrich_website_finds_the_domain_and_checks_the_site(
    app_db: AppDatabaseResource,
    hunter: HunterResource,
    hunter_box: HunterBox,
    add_prospect: Callable[..., str],
    company: str,
    domain: str,
    website_ok: bool,
) -> None:
    add_campaign(app_db.url)
    pid = add_prospect("p1", company=company)
    first = enrich_website(hunter, pid, CTX)
    requests = hunter_box.state.requests
    again = enrich_website(hunter, pid, CTX)
    prospect = _prospect(app_db.url, pid)
    assert (prospect.domain, prospect.website_ok) == (domain, website_ok)
    assert first.status == again.status == "succeeded"
    assert again.figures == {"already_done": 1}
    assert hunter_box.state.requests == requests  # idempotent: no second call


def test_an_unknown_company_is_a_dead_letter_and_costs_no_credit(
    app_db: AppDatabaseResource,
    hunter: HunterResource,
    hunter_box: HunterBox,
    add_prospect: Callable[..., str],
) -> None:
    add_campaign(app_db.url)
    pid = add_prospect("p1", company="Nobody Inc")
    outcome = enrich_website(hunter, pid, CTX)
    assert (outcome.status, outcome.error_class) == ("failed", "permanent")
    assert "Nobody Inc" in (outcome.error or "")
    state = app_db.checkpoints(SOURCE_WEBSITE).get(pid)
    assert state is not None and state.status == "dead"
    assert hunter_box.state.credits_used == 0
    [usage] = [u for u in hunter.budget_usage(path="/v2/domain-search") if "credits" in u.bucket]
    assert usage.used == 0  # the reserved credit was given back


@pytest.mark.parametrize(
    ("first", "last", "state", "email", "confidence"),
    [
        ("Bill", "Lumbergh", "enriched", "bill.lumbergh@initech.test", 88),
        ("Peter", "Gibbons", "done", None, 31),  # below the threshold: never e-mailed
    ],
)
def test_enrich_email_keeps_addresses_above_the_confidence_threshold(
    app_db: AppDatabaseResource,
    hunter: HunterResource,
    hunter_box: HunterBox,
    add_prospect: Callable[..., str],
    first: str,
    last: str,
    state: str,
    email: str | None,
    confidence: int,
) -> None:
    add_campaign(app_db.url)
    pid = add_prospect(
        "p1", first_name=first, last_name=last, company="Initech", domain="initech.test"
    )
    outcome = enrich_email(hunter, pid, CTX, min_confidence=70)
    credits = hunter_box.state.credits_used
    enrich_email(hunter, pid, CTX, min_confidence=70)
    prospect = _prospect(app_db.url, pid)
    assert outcome.status == "succeeded"
    assert (prospect.state, prospect.email, prospect.email_confidence) == (
        state,
        email,
        confidence,
    )
    assert hunter_box.state.credits_used == credits == 1  # no second credit


def test_hunter_limits_are_respected_with_no_403(
    app_db: AppDatabaseResource,
    hunter_box: HunterBox,
    add_prospect: Callable[..., str],
) -> None:
    add_campaign(app_db.url)
    people = [Person(f"P{i}", "Doe", f"p{i}@many.test", 90) for i in range(12)]
    hunter_box.state.add_company(Company("Many", "many.test", people=people))
    hunter_box.state.config.per_second = 4
    resource = HunterResource(
        app_db=app_db,
        api_key="sbx-hunter-key",
        base_url=hunter_box.url,
        per_second=4,
        timeout_seconds=5.0,
    )
    try:
        for i in range(12):
            pid = add_prospect(
                f"p{i}", first_name=f"P{i}", last_name="Doe", company="Many", domain="many.test"
            )
            assert enrich_email(resource, pid, CTX).status == "succeeded"
    finally:
        resource.close()
    assert hunter_box.state.rejected == {}
    assert hunter_box.state.credits_used == 12


def test_spent_monthly_credits_park_enrichment_until_the_month_resets(
    app_db: AppDatabaseResource,
    hunter_box: HunterBox,
    add_prospect: Callable[..., str],
) -> None:
    add_campaign(app_db.url)
    hunter_box.state.config.monthly_credits = 1  # the provider's allowance
    resource = HunterResource(
        app_db=app_db,
        api_key="sbx-hunter-key",
        base_url=hunter_box.url,
        monthly_credits=100,  # our budget does not know other apps spent the rest
        timeout_seconds=5.0,
    )
    try:
        for pid, first, last in [("p1", "Bill", "Lumbergh"), ("p2", "Peter", "Gibbons")]:
            add_prospect(
                pid, first_name=first, last_name=last, company="Initech", domain="initech.test"
            )
        assert enrich_email(resource, "p1", CTX).status == "succeeded"
        parked = enrich_email(resource, "p2", CTX)
        again = enrich_email(resource, "p2", CTX)  # the budget now knows: no request
    finally:
        resource.close()
    now = dt.datetime.now(dt.UTC)
    next_month = dt.datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=dt.UTC)
    assert parked.status == again.status == "parked"
    assert parked.retry_at == again.retry_at == next_month.timestamp()
    assert hunter_box.state.rejected == {429: 1}
    state = app_db.checkpoints(SOURCE_EMAIL).get("p2")
    assert state is not None and state.status == "parked"
