"""`sync-pipeline campaigns|prospects|outreach` (cli/outreach.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import Prospect
from sync_pipeline.sandbox.mail.server import MailSandbox
from sync_pipeline_tests.cli.conftest import CliEnv, error_of, invoke
from sync_pipeline_tests.outreach import HUNTER_KEY, SENDER, SENDER_PASSWORD, HunterBox

GOOD = (
    "first_name,last_name,company,tier,email,timezone\n"
    "Hank,Scorpio,Globex,hot,hank@globex.test,Europe/Berlin\n"
    "Bill,Lumbergh,Initech,warm,,America/Chicago\n"
)
BAD = (
    "first_name,last_name,company,tier,email,timezone\n"
    "Hank,Scorpio,Globex,hot,hank@globex.test,Europe/Berlin\n"
    "Bad,,Initech,warm,,UTC\n"
    "X,Y,Z,lukewarm,,UTC\n"
    "A,B,C,cold,not-an-email,UTC\n"
    "D,E,F,cold,,Mars/Base\n"
    "Hank,Scorpio,Globex,hot,hank@globex.test,Europe/Berlin\n"
)


def _ids(db_url: str) -> list[str]:
    with transaction(db_url) as s:
        return list(s.scalars(select(Prospect.id).order_by(Prospect.id)))


@pytest.fixture
def campaign(cli_env: CliEnv, tmp_path: Path) -> str:
    body = tmp_path / "body.txt"
    body.write_text("Hi {{ first_name }},\nUnsubscribe: {{ unsubscribe_url }}\n")
    out = invoke(
        "campaigns",
        "add",
        "launch",
        "--sender",
        SENDER,
        "--subject",
        "Hello {{ company }}",
        "--body-file",
        str(body),
        "--min-gap",
        "0",
    )
    assert out.stdout == f"added campaign launch (sender {SENDER}, cap 50/day)\n"
    return "launch"


def test_import_is_all_or_nothing_with_a_report_of_rejected_rows(
    cli_env: CliEnv, campaign: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(BAD)
    result = invoke("prospects", "import", str(bad), "--campaign", campaign, exit_code=1)
    assert result.stderr.splitlines()[:5] == [
        "line 3: missing last_name",
        "line 4: tier 'lukewarm' is not one of hot, warm, cold",
        "line 5: invalid e-mail address 'not-an-email'",
        "line 6: unknown time zone 'Mars/Base'",
        f"line 7: prospect {_dup_id()} already exists",
    ]
    assert "5 row(s) rejected; nothing imported" in error_of(result)
    assert _ids(cli_env.db_url) == []

    good = tmp_path / "good.csv"
    good.write_text(GOOD)
    assert invoke("prospects", "import", str(good), "--campaign", campaign).stdout == (
        "imported 2 prospects into launch\n"
    )
    assert len(_ids(cli_env.db_url)) == 2
    again = invoke("prospects", "import", str(good), "--campaign", campaign, exit_code=1)
    assert "2 row(s) rejected" in error_of(again)


def _dup_id() -> str:
    from sync_pipeline.defs.outreach.prospects import prospect_id

    return prospect_id("launch", "Hank", "Scorpio", "Globex")


def test_import_into_an_unknown_campaign_fails_clearly(cli_env: CliEnv, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(GOOD)
    result = invoke("prospects", "import", str(good), "--campaign", "nope", exit_code=1)
    assert "Unknown campaign 'nope'" in error_of(result)


def test_list_show_remove_and_campaign_pause(
    cli_env: CliEnv, campaign: str, tmp_path: Path
) -> None:
    good = tmp_path / "good.csv"
    good.write_text(GOOD)
    invoke("prospects", "import", str(good), "--campaign", campaign)
    listed = invoke("prospects", "list", "--state", "enriched").stdout.splitlines()
    assert len(listed) == 1 and "hank@globex.test" in listed[0]
    pid = listed[0].split()[0]
    assert '"state": "enriched"' in invoke("prospects", "show", pid).stdout
    assert invoke("campaigns", "pause", campaign).stdout == "campaign launch paused\n"
    assert "launch  paused" in invoke("campaigns", "list").stdout
    invoke("campaigns", "resume", campaign)
    assert invoke("prospects", "remove", pid).stdout == "removed 1 prospect(s)\n"
    assert len(_ids(cli_env.db_url)) == 1


def test_send_and_enrich_directly_through_the_sandboxes(
    cli_env: CliEnv,
    campaign: str,
    tmp_path: Path,
    mail_box: MailSandbox,
    hunter_box: HunterBox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "HUNTER_API_KEY": HUNTER_KEY,
        "HUNTER_BASE_URL": hunter_box.url,
        "HUNTER_WEBSITE_URL": f"{hunter_box.url}/_sandbox/sites/{{domain}}",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(mail_box.smtp_port),
        "SMTP_USERNAME": SENDER,
        "SMTP_PASSWORD": SENDER_PASSWORD,
        "SMTP_SECURITY": "none",
        "IMAP_HOST": "127.0.0.1",
        "IMAP_PORT": str(mail_box.imap_port),
        "IMAP_USERNAME": SENDER,
        "IMAP_PASSWORD": SENDER_PASSWORD,
        "IMAP_SECURITY": "none",
        "SUPABASE_URL": "http://127.0.0.1:9",
        "SUPABASE_SERVICE_KEY": "unused",
        "OUTREACH_UNSUBSCRIBE_KEY": "cli-test-unsubscribe-key",
    }.items():
        monkeypatch.setenv(name, value)
    csv_file = tmp_path / "p.csv"
    csv_file.write_text(
        "id,first_name,last_name,company,tier,email,timezone\n"
        "p1,Hank,Scorpio,Globex,hot,hank@globex.test,UTC\n"
        "p2,Bill,Lumbergh,Initech,warm,,UTC\n"
    )
    invoke("prospects", "import", str(csv_file), "--campaign", campaign)
    assert invoke("outreach", "enrich-website", "--prospect", "p2", "--direct").stdout.startswith(
        "p2: succeeded (domains_found 1"
    )
    assert invoke("outreach", "enrich-email", "--prospect", "p2", "--direct").stdout == (
        "p2: succeeded (emails_found 1)\n"
    )
    sent = invoke("outreach", "send", "--prospect", "p1", "--direct").stdout
    # Outside business hours (UTC, Mon-Sat 08-19) the send parks instead.
    assert sent == "p1: succeeded (sent 1)\n" or "parked" in sent
    stats = invoke("outreach", "status").stdout
    assert "send_email" in stats and "enrich_email" in stats
    assert HUNTER_KEY not in stats + sent and SENDER_PASSWORD not in stats + sent


def test_replies_and_crm_directly_against_all_outreach_sandboxes(
    cli_env: CliEnv, campaign: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sync_pipeline.defs.outreach.sync import message_id
    from sync_pipeline.sandbox.outreach import CRM_TABLE as TABLE
    from sync_pipeline.sandbox.outreach import start_outreach_sandboxes

    boxes = start_outreach_sandboxes()
    try:
        for name, value in boxes.env.items():
            monkeypatch.setenv(name, value)
        csv_file = tmp_path / "p.csv"
        csv_file.write_text(
            "id,first_name,last_name,company,email\np1,Hank,Scorpio,Globex,hank@globex.test\n"
        )
        invoke("prospects", "import", str(csv_file), "--campaign", campaign)
        from sync_pipeline.core.db import transaction as tx
        from sync_pipeline.core.models import OutboxMessage

        with tx(cli_env.db_url) as s:  # as if sent: the reply below answers it
            s.add(
                OutboxMessage(
                    message_id=message_id("launch", "p1", 0, SENDER),
                    prospect_id="p1",
                    step=0,
                    sender=SENDER,
                    recipient="hank@globex.test",
                    subject="Hello",
                    body="Hi",
                    state="sent",
                )
            )
        boxes.mail.deliver(
            SENDER,
            (
                f"From: hank@globex.test\r\nTo: {SENDER}\r\nSubject: Re: Hello\r\n"
                f"In-Reply-To: {message_id('launch', 'p1', 0, SENDER)}\r\n\r\nInterested!\r\n"
            ).encode(),
        )
        replies = invoke("outreach", "replies", "--direct").stdout
        assert replies == "1 prospect(s) with new mail\np1: succeeded (human 1)\n"
        assert invoke("outreach", "crm", "--direct").stdout == "succeeded 1\n"
        [row] = boxes.supabase.rows(TABLE)
        assert (row["id"], row["state"]) == ("p1", "replied")
    finally:
        boxes.stop()


# -- without --direct: a Dagster run is queued (the shared launch path) ------------------------
@pytest.mark.parametrize(
    ("args", "job", "partition"),
    [
        (["enrich-website", "--prospect", "p1"], "outreach_website_prospect_sync", "p1"),
        (["enrich-email", "--prospect", "p1"], "outreach_email_prospect_sync", "p1"),
        (["send", "--prospect", "p1"], "outreach_send_prospect_sync", "p1"),
        (["replies", "--prospect", "p1"], "outreach_reply_prospect_sync", "p1"),
        (["crm", "--prospect", "p1"], "outreach_crm_prospect_sync", "p1"),
        (["crm"], "outreach_crm_sweep_job", None),
        (["replies"], "outreach_inbox_job", None),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, list) else None,
)
def test_job_types_without_direct_queue_a_run(
    cli_env: CliEnv,
    campaign: str,
    tmp_path: Path,
    launchable: Path,
    args: list[str],
    job: str,
    partition: str | None,
) -> None:
    import dagster as dg

    from sync_pipeline.core import priorities
    from sync_pipeline.defs.outreach.source import CRM
    from sync_pipeline_tests.cli.test_main import runs

    csv_file = tmp_path / "p.csv"
    csv_file.write_text(
        "id,first_name,last_name,company\np1,Hank,Scorpio,Globex\np2,Bill,Lumbergh,Initech\n"
    )
    invoke("prospects", "import", str(csv_file), "--campaign", campaign)

    out = invoke("outreach", *args).stdout

    [run] = runs(cli_env.dagster_home)
    assert (run.job_name, run.status) == (job, dg.DagsterRunStatus.QUEUED)
    assert run.tags.get("dagster/partition") == partition
    assert (run.tags[priorities.PRIORITY_TAG], run.tags[priorities.TRIGGER_TAG]) == ("10", "cli")
    what = f"{job}, prospect {partition}" if partition else job
    assert out == (
        f"queued run {run.run_id} ({what}, priority 10); follow it in the UI at "
        f"/runs/{run.run_id}\n"
    )
    if job == "outreach_crm_sweep_job":
        assert run.run_config == CRM.sweep_run_config(keys=["p1", "p2"])
    if partition is not None:
        with dg.DagsterInstance.get() as instance:
            assert instance.has_dynamic_partition("prospects", partition)
    assert _states(cli_env.db_url) == {"p1": "new", "p2": "new"}  # nothing ran: no daemon


def _states(db_url: str) -> dict[str, str]:
    with transaction(db_url) as s:
        return {p.id: p.state for p in s.scalars(select(Prospect))}


def test_queueing_an_unknown_prospect_fails_clearly(cli_env: CliEnv, launchable: Path) -> None:
    result = invoke("outreach", "send", "--prospect", "nobody", exit_code=1)
    assert error_of(result) == (
        "Error: Unknown prospect(s): nobody; see `sync-pipeline prospects list`."
    )
