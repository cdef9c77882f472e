"""The part of GitHub's GraphQL schema the sandbox serves: users, contributions, rateLimit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from sync_pipeline.sandbox.github.data import User, iso, node_id
from sync_pipeline.sandbox.github.graphql import Engine, FieldDef, GraphQLError, Schema

if TYPE_CHECKING:
    from sync_pipeline.sandbox.github.state import GitHubSandboxState

LEVEL_COLORS = {
    "NONE": "#ebedf0",
    "FIRST_QUARTILE": "#9be9a8",
    "SECOND_QUARTILE": "#40c463",
    "THIRD_QUARTILE": "#30a14e",
    "FOURTH_QUARTILE": "#216e39",
}
SCALARS = frozenset(
    {"String", "Int", "Float", "Boolean", "ID", "DateTime", "Date", "URI", "ContributionLevel"}
)


@dataclass
class Context:
    """Per-request data the resolvers need."""

    state: GitHubSandboxState
    viewer: User
    rate_limit: dict[str, Any]


@dataclass
class Collection:
    """A user's contributions between two instants."""

    user: User
    start: datetime
    end: datetime


@dataclass
class Day:
    """One calendar day."""

    date: date
    count: int
    level: str


def _shift_years(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year + years, day=28)


def _one_year_after(start: datetime) -> datetime:
    return _shift_years(start, 1)


def _collection(user: User, args: dict[str, Any], ctx: Context) -> Collection:
    start: datetime | None = args.get("from")
    end: datetime | None = args.get("to")
    now = datetime.fromtimestamp(ctx.state.time(), UTC)
    if start is None and end is None:
        end = now
    if start is None:
        assert end is not None
        start = _shift_years(end, -1)
    if end is None:
        end = min(_one_year_after(start), now) if start < now else _one_year_after(start)
    if end < start:
        raise GraphQLError(
            "The 'to' argument must be after the 'from' argument", type_="VALIDATION"
        )
    if end > _one_year_after(start):
        raise GraphQLError(
            "The total time spanned by 'from' and 'to' must not exceed 1 year",
            type_="VALIDATION",
        )
    return Collection(user, start, end)


def _levels(days: list[tuple[date, int]]) -> list[Day]:
    nonzero = sorted(c for _, c in days if c)
    if not nonzero:
        return [Day(d, c, "NONE") for d, c in days]
    q1, q2, q3 = (nonzero[min(len(nonzero) - 1, (len(nonzero) * k) // 4)] for k in (1, 2, 3))
    out = []
    for d, c in days:
        if c == 0:
            level = "NONE"
        elif c <= q1:
            level = "FIRST_QUARTILE"
        elif c <= q2:
            level = "SECOND_QUARTILE"
        elif c <= q3:
            level = "THIRD_QUARTILE"
        else:
            level = "FOURTH_QUARTILE"
        out.append(Day(d, c, level))
    return out


def _weeks(days: list[Day]) -> list[list[Day]]:
    """Sunday-started weeks; the first and last may be partial."""
    weeks: list[list[Day]] = []
    for day in days:
        if not weeks or day.date.weekday() == 6:
            weeks.append([])
        weeks[-1].append(day)
    return weeks


def _calendar(c: Collection, args: dict[str, Any], ctx: Context) -> list[Day]:
    return _levels(ctx.state.contribution_days(c.user, c.start, c.end))


def _user_by_login(parent: Any, args: dict[str, Any], ctx: Context) -> User:
    user = ctx.state.find_login(args["login"])
    if user is None:
        raise GraphQLError(
            f"Could not resolve to a User with the login of '{args['login']}'.",
            type_="NOT_FOUND",
        )
    return user


def _total(kind: str) -> FieldDef:
    return FieldDef(
        "Int!", lambda c, a, ctx: ctx.state.contribution_totals(c.user, c.start, c.end)[kind]
    )


def build_schema() -> Schema:
    """Object types and resolvers."""

    def attr(name: str, type_: str) -> FieldDef:
        return FieldDef(type_, lambda parent, args, ctx: getattr(parent, name))

    return {
        "Query": {
            "user": FieldDef("User", _user_by_login, {"login": "String!"}),
            "viewer": FieldDef("User!", lambda p, a, ctx: ctx.viewer),
            "rateLimit": FieldDef(
                "RateLimit",
                lambda p, a, ctx: ctx.rate_limit,
                {"dryRun": "Boolean"},
                {"dryRun": False},
            ),
        },
        "User": {
            "login": attr("login", "String!"),
            "id": FieldDef("ID!", lambda u, a, ctx: node_id(u.id)),
            "databaseId": attr("id", "Int"),
            "name": attr("name", "String"),
            "createdAt": FieldDef(
                "DateTime!", lambda u, a, ctx: datetime.fromtimestamp(u.created_at, UTC)
            ),
            "url": FieldDef("URI!", lambda u, a, ctx: f"https://github.com/{u.login}"),
            "contributionsCollection": FieldDef(
                "ContributionsCollection!",
                _collection,
                {"from": "DateTime", "to": "DateTime"},
            ),
        },
        "ContributionsCollection": {
            "contributionCalendar": FieldDef("ContributionCalendar!", _calendar),
            "startedAt": FieldDef("DateTime!", lambda c, a, ctx: c.start),
            "endedAt": FieldDef("DateTime!", lambda c, a, ctx: c.end),
            "totalCommitContributions": _total("commit"),
            "totalIssueContributions": _total("issue"),
            "totalPullRequestContributions": _total("pull_request"),
            "totalRepositoryContributions": _total("repository"),
            "restrictedContributionsCount": FieldDef("Int!", lambda c, a, ctx: 0),
            "hasAnyContributions": FieldDef(
                "Boolean!",
                lambda c, a, ctx: any(
                    n for _, n in ctx.state.contribution_days(c.user, c.start, c.end)
                ),
            ),
        },
        "ContributionCalendar": {
            "totalContributions": FieldDef("Int!", lambda days, a, ctx: sum(d.count for d in days)),
            "weeks": FieldDef("[ContributionCalendarWeek!]!", lambda days, a, ctx: _weeks(days)),
            "colors": FieldDef("[String!]!", lambda days, a, ctx: list(LEVEL_COLORS.values())[1:]),
            "isHalloween": FieldDef("Boolean!", lambda days, a, ctx: False),
        },
        "ContributionCalendarWeek": {
            "firstDay": FieldDef("Date!", lambda week, a, ctx: week[0].date),
            "contributionDays": FieldDef("[ContributionCalendarDay!]!", lambda w, a, ctx: w),
        },
        "ContributionCalendarDay": {
            "date": attr("date", "Date!"),
            "contributionCount": attr("count", "Int!"),
            "weekday": FieldDef("Int!", lambda d, a, ctx: (d.date.weekday() + 1) % 7),
            "contributionLevel": attr("level", "ContributionLevel!"),
            "color": FieldDef("String!", lambda d, a, ctx: LEVEL_COLORS[d.level]),
        },
        "RateLimit": {
            "cost": FieldDef("Int!", lambda r, a, ctx: r["cost"]),
            "limit": FieldDef("Int!", lambda r, a, ctx: r["limit"]),
            "remaining": FieldDef("Int!", lambda r, a, ctx: r["remaining"]),
            "used": FieldDef("Int!", lambda r, a, ctx: r["used"]),
            "resetAt": FieldDef("DateTime!", lambda r, a, ctx: iso(r["reset"])),
            "nodeCount": FieldDef("Int!", lambda r, a, ctx: r["nodeCount"]),
        },
    }


def build_engine() -> Engine:
    """The GraphQL engine over the GitHub schema."""
    return Engine(build_schema(), SCALARS)
