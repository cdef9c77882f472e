"""Partition leases: who may sync a partition, takeovers, and the lease given back on success."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys

import pytest
from sqlalchemy import update

from sync_pipeline.core.checkpoints import (
    Checkpoints,
    DeadOwners,
    LeaseHeldError,
    process_is_gone,
    this_process,
)
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import SyncState, utcnow
from sync_pipeline_tests.serving import wait_until

TTL = dt.timedelta(minutes=10)


@pytest.fixture
def cp(db_url: str) -> Checkpoints:
    return Checkpoints(db_url, "strava")


def holder(cp: Checkpoints, key: str) -> str | None:
    state = cp.get(key)
    assert state is not None
    return state.lease_owner


def test_claiming_a_new_partition_creates_its_row_and_takes_the_lease(cp: Checkpoints) -> None:
    state = cp.claim("7", "run-a", TTL)

    assert (state.partition_key, state.status, state.lease_owner) == ("7", "idle", "run-a")
    assert state.lease_until is not None and state.last_started_at is not None
    assert holder(cp, "7") == "run-a"


def test_claim_returns_the_state_as_of_the_claim(cp: Checkpoints) -> None:
    cp.claim("7", "run-a", TTL)
    cp.succeed("7", full=True, owner="run-a")

    state = cp.claim("7", "run-b", TTL)

    assert state.last_full_sync_at is not None and state.status == "succeeded"


@pytest.mark.parametrize("same_owner", [True, False])
def test_a_live_lease_refuses_others_but_not_its_owner(cp: Checkpoints, same_owner: bool) -> None:
    cp.claim("7", "run-a", TTL)

    if same_owner:
        assert cp.claim("7", "run-a", TTL).lease_owner == "run-a"
    else:
        with pytest.raises(LeaseHeldError, match="being synced by run run-a"):
            cp.claim("7", "run-b", TTL, owner_is_dead=lambda run: False)
        assert holder(cp, "7") == "run-a"


def test_an_expired_lease_is_taken_over(cp: Checkpoints, db_url: str) -> None:
    cp.claim("7", "run-a", TTL)
    with transaction(db_url) as s:
        s.execute(
            update(SyncState)
            .where(SyncState.partition_key == "7")
            .values(lease_until=utcnow() - dt.timedelta(seconds=1))
        )

    assert cp.claim("7", "run-b", TTL).lease_owner == "run-b"


def test_a_dead_holders_lease_is_taken_over_and_only_the_holder_is_asked(
    cp: Checkpoints,
) -> None:
    cp.claim("7", "run-a", TTL)
    asked: list[str] = []

    def dead(run_id: str) -> bool:
        asked.append(run_id)
        return run_id == "run-a"

    assert cp.claim("7", "run-b", TTL, owner_is_dead=dead).lease_owner == "run-b"
    assert asked == ["run-a"]


def test_a_dead_owners_check_is_told_whose_lease_was_taken_over(cp: Checkpoints) -> None:
    cp.claim("7", "run-a", TTL)
    cp.claim("8", "run-a", TTL)
    told: list[tuple[str | None, str | None, str]] = []
    check = DeadOwners(
        lambda run: run == "run-a",
        lambda held, by: told.append((held.lease_owner, held.lease_process, by)),
    )

    cp.claim("7", "run-b", TTL, owner_is_dead=check)
    cp.claim("9", "run-b", TTL, owner_is_dead=check)  # nobody held it: nothing to tell

    assert told == [("run-a", this_process(), "run-b")]


@pytest.mark.parametrize(("owner", "released"), [("run-a", True), ("run-b", False), (None, False)])
def test_succeed_gives_the_lease_back_only_for_its_holder(
    cp: Checkpoints, owner: str | None, released: bool
) -> None:
    cp.claim("7", "run-a", TTL)

    cp.succeed("7", full=False, owner=owner)

    state = cp.get("7")
    assert state is not None and state.status == "succeeded"
    assert (state.lease_owner is None) is released
    assert (state.lease_until is None) is released


def test_release_by_a_non_holder_changes_nothing(cp: Checkpoints) -> None:
    cp.claim("7", "run-a", TTL)

    cp.release("7", "run-b")
    assert holder(cp, "7") == "run-a"
    cp.release("7", "run-a")
    assert holder(cp, "7") is None


def test_a_lease_records_this_process(cp: Checkpoints) -> None:
    cp.claim("7", "run-a", TTL)

    state = cp.get("7")
    assert state is not None and state.lease_process == this_process()
    assert f" {os.getpid()} " in this_process()
    assert not process_is_gone(this_process())


def test_a_lease_whose_process_is_gone_is_taken_over_at_once(cp: Checkpoints, db_url: str) -> None:
    with subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"]) as child:
        identity = this_process().rsplit(" ", 2)[0] + f" {child.pid} -"
        cp.claim("7", "run-a", TTL)
        with transaction(db_url) as s:
            s.execute(update(SyncState).values(lease_process=identity))
        assert cp.live_lease("7", owner_is_dead=lambda run: False) is not None
        with pytest.raises(LeaseHeldError, match=f"by run run-a \\(pid {child.pid} on "):
            cp.claim("7", "run-b", TTL, owner_is_dead=lambda run: False)

        child.kill()
        # Killed, not yet reaped (a zombie): gone. The kernel ends it asynchronously.
        wait_until(
            lambda: process_is_gone(identity), 10, what="the killed process gone", interval=0.01
        )
        child.wait()

    assert process_is_gone(identity)
    assert cp.live_lease("7", owner_is_dead=lambda run: False) is None
    assert cp.claim("7", "run-b", TTL, owner_is_dead=lambda run: False).lease_owner == "run-b"


@pytest.mark.parametrize(
    "identity",
    [None, "", "garbage", "other-host pid:[1] 1 -", "{host} pid:[0] 999999999 -"],
    ids=["none", "empty", "garbage", "another host", "another pid namespace"],
)
def test_a_process_this_host_cannot_check_counts_as_alive(identity: str | None) -> None:
    value = identity.format(host=socket.gethostname()) if identity else identity

    assert not process_is_gone(value)
