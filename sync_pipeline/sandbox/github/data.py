"""Deterministic GitHub users and their public activity (events and contributions)."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sync_pipeline.sandbox.common import random_local_time, rng_for, streak_days

TIME_ZONES = (
    "America/Los_Angeles",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Tokyo",
    "Australia/Sydney",
    "UTC",
)
FIRST_NAMES = (
    "Ada",
    "Grace",
    "Linus",
    "Margaret",
    "Ken",
    "Barbara",
    "Dennis",
    "Frances",
    "Guido",
    "Radia",
)
LAST_NAMES = ("Lovelace", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie")
REPO_NAMES = (
    "dotfiles",
    "api-server",
    "notes",
    "homelab",
    "advent-of-code",
    "blog",
    "cli-tools",
    "ml-experiments",
    "website",
    "infra",
)
# Local hours of activity and their weights: a working day plus evenings and a little past
# midnight, so that per-local-day and per-UTC-day counts differ for most time zones.
HOURS = (0, 1, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23)
HOUR_WEIGHTS = (2, 1, 1, 2, 4, 5, 5, 3, 4, 5, 5, 5, 4, 3, 3, 4, 5, 5, 4)
EVENTS_PER_DAY = (1, 2, 3, 4, 5, 6, 8)
EVENTS_PER_DAY_WEIGHTS = (26, 24, 18, 12, 9, 6, 5)
# Event types with their weights and how many contributions one such event makes.
EVENT_TYPES = (
    ("PushEvent", 55),
    ("PullRequestEvent", 10),
    ("IssuesEvent", 7),
    ("CreateEvent:repository", 3),
    ("CreateEvent:branch", 6),
    ("WatchEvent", 10),
    ("IssueCommentEvent", 9),
)
CONTRIBUTING_TYPES = frozenset(
    {"PushEvent", "PullRequestEvent", "IssuesEvent", "CreateEvent:repository"}
)


@dataclass
class Repo:
    """A repository of a user."""

    id: int
    name: str


@dataclass
class Event:
    """One public event; ``contributions`` is what it adds to the contribution calendar."""

    id: int
    kind: str  # "PushEvent", "CreateEvent:branch", ...
    created_at: int
    repo: Repo
    contributions: int
    seq: int  # per-user sequence number (PR/issue numbers, shas)

    @property
    def type(self) -> str:
        """The event ``type`` as the API names it."""
        return self.kind.split(":", 1)[0]


@dataclass
class User:
    """A GitHub user with its events in ascending ``created_at`` order."""

    index: int
    id: int
    login: str
    name: str
    time_zone: str
    created_at: int
    repos: list[Repo]
    events: list[Event] = field(default_factory=list)
    next_seq: int = 1


def make_user(seed: int, index: int, user_id: int, now: float, time_zone: str | None) -> User:
    """A user generated from (seed, index); its history is made by ``history``."""
    rng = rng_for(seed, "github", index)
    first = rng.choice(FIRST_NAMES)
    last = rng.choice(LAST_NAMES)
    login = f"{first.lower()}-{last.lower()}-{index}"
    tz = time_zone or TIME_ZONES[(seed + index) % len(TIME_ZONES)]
    created = int(now) - rng.randint(400, 3000) * 86400
    names = rng.sample(REPO_NAMES, rng.randint(2, 5))
    repos = [Repo(user_id * 100 + k, f"{login}/{n}") for k, n in enumerate(names)]
    return User(index, user_id, login, f"{first} {last}", tz, created, repos)


def history(seed: int, user: User, now: float, days: int, salt: str = "") -> list[int]:
    """Timestamps of a user's activity over the ``days`` local days up to ``now``.

    A two-state chain makes streaks and gaps (quieter weekends); each active day gets a few
    items at local-time hours. Only times not after ``now`` are kept; ascending order.
    """
    rng = rng_for(seed, "github-history", user.index, salt)
    tz = ZoneInfo(user.time_zone)
    today = datetime.fromtimestamp(now, tz).date()
    out: list[int] = []
    for day in streak_days(rng, today, days, first=0.5, stay=0.72, start=0.3, weekend=0.55):
        count = rng.choices(EVENTS_PER_DAY, EVENTS_PER_DAY_WEIGHTS)[0]
        for _ in range(count):
            ts = random_local_time(rng, day, rng.choices(HOURS, HOUR_WEIGHTS)[0], tz)
            if ts <= now:
                out.append(ts)
    out.sort()
    return out


def pick_kind(rng: random.Random) -> str:
    """A random event kind by weight."""
    kinds, weights = zip(*EVENT_TYPES, strict=True)
    return rng.choices(kinds, weights)[0]


def contributions_for(kind: str, rng: random.Random) -> int:
    """Contributions an event of ``kind`` adds (commits of a push, 1 or 0 otherwise)."""
    if kind == "PushEvent":
        return rng.choices((1, 2, 3, 4, 5), (40, 25, 15, 12, 8))[0]
    return 1 if kind in CONTRIBUTING_TYPES else 0


def iso(ts: float) -> str:
    """``2025-06-15T15:06:40Z``."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha(*parts: object) -> str:
    """A stable 40-hex-digit fake git SHA."""
    return hashlib.sha1(":".join(str(p) for p in parts).encode()).hexdigest()


def actor_json(user: User, api: str) -> dict[str, Any]:
    """The ``actor`` object of an event."""
    return {
        "id": user.id,
        "login": user.login,
        "display_login": user.login,
        "gravatar_id": "",
        "url": f"{api}/users/{user.login}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{user.id}?",
    }


def user_stub(user: User, api: str) -> dict[str, Any]:
    """The short user object nested in issues and pull requests."""
    return {
        "login": user.login,
        "id": user.id,
        "type": "User",
        "url": f"{api}/users/{user.login}",
        "html_url": f"https://github.com/{user.login}",
    }


def payload(user: User, event: Event, api: str) -> dict[str, Any]:
    """The event's ``payload`` in the shape the github.com Events API returns today.

    PushEvent payloads on github.com carry no commit list or size (only ids, ref, head and
    before), so commit counts are only visible through the contribution calendar.
    """
    repo, n = event.repo, event.seq
    created = iso(event.created_at)
    if event.kind == "PushEvent":
        return {
            "repository_id": repo.id,
            "push_id": event.id * 7 + 1,
            "ref": "refs/heads/main",
            "head": sha(event.id, "head"),
            "before": sha(event.id, "before"),
        }
    if event.kind == "PullRequestEvent":
        return {
            "action": "opened",
            "number": n,
            "pull_request": {
                "url": f"{api}/repos/{repo.name}/pulls/{n}",
                "id": event.id * 3,
                "number": n,
                "state": "open",
                "title": f"Change #{n}",
                "user": user_stub(user, api),
                "created_at": created,
                "html_url": f"https://github.com/{repo.name}/pull/{n}",
            },
        }
    issue = {
        "url": f"{api}/repos/{repo.name}/issues/{n}",
        "id": event.id * 5,
        "number": n,
        "title": f"Issue #{n}",
        "state": "open",
        "user": user_stub(user, api),
        "created_at": created,
        "html_url": f"https://github.com/{repo.name}/issues/{n}",
    }
    if event.kind == "IssuesEvent":
        return {"action": "opened", "issue": issue}
    if event.kind == "IssueCommentEvent":
        return {
            "action": "created",
            "issue": issue,
            "comment": {
                "id": event.id * 11,
                "body": "Looks good to me.",
                "user": user_stub(user, api),
                "created_at": created,
                "html_url": f"https://github.com/{repo.name}/issues/{n}#issuecomment-{event.id}",
            },
        }
    if event.kind == "CreateEvent:repository":
        return {
            "ref": None,
            "ref_type": "repository",
            "master_branch": "main",
            "description": None,
            "pusher_type": "user",
        }
    if event.kind == "CreateEvent:branch":
        return {
            "ref": f"feature/{n}",
            "ref_type": "branch",
            "master_branch": "main",
            "description": None,
            "pusher_type": "user",
        }
    return {"action": "started"}


def event_json(user: User, event: Event, api: str) -> dict[str, Any]:
    """An event as ``GET /users/{username}/events`` lists it."""
    return {
        "id": str(event.id),
        "type": event.type,
        "actor": actor_json(user, api),
        "repo": {
            "id": event.repo.id,
            "name": event.repo.name,
            "url": f"{api}/repos/{event.repo.name}",
        },
        "payload": payload(user, event, api),
        "public": True,
        "created_at": iso(event.created_at),
    }


def user_json(user: User, api: str, public_repos: int) -> dict[str, Any]:
    """``GET /user`` body (private fields included, as for the authenticated user)."""
    base = f"{api}/users/{user.login}"
    return {
        "login": user.login,
        "id": user.id,
        "node_id": node_id(user.id),
        "avatar_url": f"https://avatars.githubusercontent.com/u/{user.id}?v=4",
        "gravatar_id": "",
        "url": base,
        "html_url": f"https://github.com/{user.login}",
        "followers_url": f"{base}/followers",
        "following_url": f"{base}/following{{/other_user}}",
        "gists_url": f"{base}/gists{{/gist_id}}",
        "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{base}/subscriptions",
        "organizations_url": f"{base}/orgs",
        "repos_url": f"{base}/repos",
        "events_url": f"{base}/events{{/privacy}}",
        "received_events_url": f"{base}/received_events",
        "type": "User",
        "user_view_type": "public",
        "site_admin": False,
        "name": user.name,
        "company": None,
        "blog": "",
        "location": None,
        "email": None,
        "hireable": None,
        "bio": None,
        "twitter_username": None,
        "notification_email": None,
        "public_repos": public_repos,
        "public_gists": 0,
        "followers": user.id % 97,
        "following": user.id % 13,
        "created_at": iso(user.created_at),
        "updated_at": iso(user.created_at + 86400),
    }


def node_id(user_id: int) -> str:
    """A GraphQL node id in GitHub's ``U_kgDO...`` style."""
    digest = hashlib.sha256(str(user_id).encode()).hexdigest()[:8].upper()
    return f"U_kgDO{digest}"
