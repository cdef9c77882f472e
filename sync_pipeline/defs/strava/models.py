"""Typed results of the Strava API."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sync_pipeline.core.tokens import TokenSet


def parse_time(value: str) -> dt.datetime:
    """Strava's ISO-8601 UTC timestamps ("2024-05-01T07:12:00Z")."""
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class SummaryActivity:
    """The fields of a SummaryActivity people query, plus the payload as received."""

    id: int
    athlete_id: int
    name: str | None
    sport_type: str | None
    type: str | None
    start_date: dt.datetime
    timezone: str | None
    distance: float | None
    moving_time: int | None
    elapsed_time: int | None
    total_elevation_gain: float | None
    average_speed: float | None
    max_speed: float | None
    average_heartrate: float | None
    kudos_count: int | None
    private: bool
    visibility: str | None
    commute: bool
    trainer: bool
    manual: bool
    raw: dict[str, Any]

    @property
    def start_epoch(self) -> int:
        """Start time as epoch seconds (the unit of Strava's `before`/`after`)."""
        return int(self.start_date.timestamp())

    @classmethod
    def from_api(cls, d: dict[str, Any]) -> SummaryActivity:
        """Parse one element of GET /athlete/activities."""
        return cls(
            id=int(d["id"]),
            athlete_id=int(d["athlete"]["id"]),
            name=d.get("name"),
            sport_type=d.get("sport_type"),
            type=d.get("type"),
            start_date=parse_time(d["start_date"]),
            timezone=d.get("timezone"),
            distance=d.get("distance"),
            moving_time=d.get("moving_time"),
            elapsed_time=d.get("elapsed_time"),
            total_elevation_gain=d.get("total_elevation_gain"),
            average_speed=d.get("average_speed"),
            max_speed=d.get("max_speed"),
            average_heartrate=d.get("average_heartrate"),
            kudos_count=d.get("kudos_count"),
            private=bool(d.get("private", False)),
            visibility=d.get("visibility"),
            commute=bool(d.get("commute", False)),
            trainer=bool(d.get("trainer", False)),
            manual=bool(d.get("manual", False)),
            raw=d,
        )


@dataclass(frozen=True)
class TokenGrant:
    """Result of the authorization-code exchange: tokens and the athlete who consented."""

    tokens: TokenSet
    athlete: dict[str, Any]

    @property
    def athlete_id(self) -> int:
        """The consenting athlete's Strava id."""
        return int(self.athlete["id"])
