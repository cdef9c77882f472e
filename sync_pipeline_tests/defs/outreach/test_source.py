"""Outreach in Dagster: the five job types' assets, sweeps, and the outreach sensors."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

import dagster as dg

from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import Campaign
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.source import source_defs
from sync_pipeline.defs.automation.sensors import partitions_sensor
from sync_pipeline.defs.outreach.prospects import redrive
from sync_pipeline.defs.outreach.resources import HunterResource, ImapResource, SmtpResource
from sync_pipeline.defs.outreach.source import (
    EMAIL,
    REPLY,
    SEND,
    WEBSITE,
    OutreachInbox,
    OutreachMailer,
    outreach_inbox,
    outreach_replies_sensor,
    prospects,
)
from sync_pipeline.defs.outreach.sync import SOURCE_SEND, business_open, message_id
from sync_pipeline.sandbox.mail.server import MailSandbox
from sync_pipeline_tests import sensors
from sync_pipeline_tests.defs.outreach.conftest import UNSUBSCRIBE_KEY, add_campaign
from sync_pipeline_tests.outreach import SENDER
from sync_pipeline_tests.sensors import apply


def _materializations(instance: dg.DagsterInstance, asset: str) -> dict[str, dict[str, object]]:
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
    out: dict[str, dict[str, object]] = {}
    for record in records:
        mat = record.asset_materialization
        assert mat is not None and mat.partition is not None
        out.setdefault(mat.partition, {k: v.value for k, v in mat.metadata.items()})
    return out


def _open_zone() -> str:
    """A time zone whose business hours are open right now (the send runs on wall time)."""
    now = dt.datetime.now(dt.UTC)
    zones = [f"Etc/GMT{-h:+d}" if h else "UTC" for h in range(-11, 15)]
    return next(z for z in zones if business_open(now, ZoneInfo(z)) is None)


def test_enrichment_assets_fill_each_prospects_partition(
    app_db: AppDatabaseResource,
    hunter: HunterResource,
    instance: dg.DagsterInstance,
    add_prospect: Callable[..., str],
) -> None:
    add_campaign(app_db.url)
    add_prospect("p1", company="Initech", first_name="Bill", last_name="Lumbergh")
    add_prospect("p2", company="Nobody Inc")
    instance.add_dynamic_partitions(prospects.name or "", ["p1", "p2"])

    for source in (WEBSITE, EMAIL):
        result = source_defs(source).sweep_job.execute_in_process(
            run_config=source.sweep_run_config(keys=["p1", "p2"]),
            resources={source.name: hunter},
            instance=instance,
        )
        assert result.success

    website = _materializations(instance, "prospect_website")
    email = _materializations(instance, "prospect_email")
    assert website["p1"]["domains_found"] == 1
    assert "p2" not in website  # a dead letter: the failure is on its partition, not data
    assert email["p1"]["emails_found"] == 1
    assert "p2" not in email
    # A batch run hands a failure over to a single-prospect run (its own status in the UI),
    # which dead-letters a permanent error at once.
    [handed] = app_db.checkpoints(WEBSITE.name).handed_over()
    assert (handed.partition_key, handed.last_error_class) == ("p2", "permanent")
    single = dg.materialize(
        [source_defs(WEBSITE).asset],
        partition_key="p2",
        resources={WEBSITE.name: hunter},
        instance=instance,
        raise_on_error=False,
    )
    assert not single.success
    assert [d.partition_key for d in app_db.checkpoints(WEBSITE.name).dead_letters()] == ["p2"]


def test_sensors_add_partitions_send_and_turn_replies_into_runs(
    app_db: AppDatabaseResource,
    smtp: SmtpResource,
    imap: ImapResource,
    mail_box: MailSandbox,
    instance: dg.DagsterInstance,
    add_prospect: Callable[..., str],
) -> None:
    add_campaign(app_db.url)
    add_prospect("p1", email="hank@globex.test", timezone=_open_zone())
    result = sensors.tick(partitions_sensor, instance, app_db)
    assert isinstance(result, dg.SensorResult)
    apply(instance, result)
    assert instance.get_dynamic_partitions("prospects") == ["p1"]
    assert [r.job_name for r in sensors.of_group(result, "outreach")] == [SEND.single_job_name]

    mailer = OutreachMailer(app_db=app_db, smtp=smtp, imap=imap, unsubscribe_key=UNSUBSCRIBE_KEY)
    sent = dg.materialize(
        [source_defs(SEND).asset],
        partition_key="p1",
        resources={SOURCE_SEND: mailer},
        instance=instance,
        raise_on_error=False,
    )
    assert sent.success
    assert _materializations(instance, "outreach_messages")["p1"]["sent"] == 1
    assert len(mail_box.messages("hank@globex.test")) == 1

    reply = (
        f"From: hank@globex.test\r\nTo: {SENDER}\r\nSubject: Re\r\n"
        f"In-Reply-To: {message_id('launch', 'p1', 0, SENDER)}\r\n\r\nYes please.\r\n"
    ).encode()
    mail_box.deliver(SENDER, reply)
    inbox = OutreachInbox(app_db=app_db, imap=imap)
    polled = dg.materialize([outreach_inbox], resources={REPLY.name: inbox}, instance=instance)
    assert polled.success
    queued = sensors.tick(outreach_replies_sensor, instance, app_db)
    assert isinstance(queued, dg.SensorResult)
    [run] = queued.run_requests or []
    assert run.job_name == REPLY.sweep_job_name
    assert run.tags["dagster/priority"] == "5"
    applied = source_defs(REPLY).sweep_job.execute_in_process(
        run_config=run.run_config, resources={REPLY.name: inbox}, instance=instance
    )
    assert applied.success
    assert _materializations(instance, "prospect_replies")["p1"]["human"] == 1


def test_a_poison_prospect_does_not_block_the_others_and_is_redriven(
    app_db: AppDatabaseResource,
    smtp: SmtpResource,
    imap: ImapResource,
    mail_box: MailSandbox,
    instance: dg.DagsterInstance,
    add_prospect: Callable[..., str],
) -> None:
    add_campaign(app_db.url)
    add_campaign(app_db.url, name="broken", body_template="Hi {{ first_name }} {{ nickname }}")
    zone = _open_zone()
    add_prospect("good1", email="a@globex.test", timezone=zone)
    add_prospect("poison", campaign="broken", email="b@globex.test", timezone=zone)
    add_prospect("good2", email="c@globex.test", timezone=zone)
    mailer = OutreachMailer(app_db=app_db, smtp=smtp, imap=imap, unsubscribe_key=UNSUBSCRIBE_KEY)
    instance.add_dynamic_partitions("prospects", ["good1", "poison", "good2"])

    result = source_defs(SEND).sweep_job.execute_in_process(
        run_config=SEND.sweep_run_config(keys=["good1", "poison", "good2"]),
        resources={SOURCE_SEND: mailer},
        instance=instance,
    )

    assert result.success
    assert sorted(_materializations(instance, "outreach_messages")) == ["good1", "good2"]
    assert mail_box.accepted == 2
    [handed] = app_db.checkpoints(SOURCE_SEND).handed_over()
    assert (handed.partition_key, handed.last_error_class) == ("poison", "template")
    single = dg.materialize(
        [source_defs(SEND).asset],
        partition_key="poison",
        resources={SOURCE_SEND: mailer},
        instance=instance,
        raise_on_error=False,
    )
    assert not single.success  # its own run, its own failure: a dead letter
    assert redrive(app_db.url, "send_email") == ["poison"]
    with transaction(app_db.url) as s:  # the template is fixed, then the work is redriven
        campaign = s.get(Campaign, "broken")
        assert campaign is not None
        campaign.body_template = "Hi {{ first_name }}"
    again = dg.materialize(
        [source_defs(SEND).asset],
        partition_key="poison",
        resources={SOURCE_SEND: mailer},
        instance=instance,
    )
    assert again.success and mail_box.accepted == 3
