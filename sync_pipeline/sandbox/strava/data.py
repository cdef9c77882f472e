"""Deterministic generation of Strava athletes, activities and GPS streams."""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np

from sync_pipeline.sandbox.common import rng_for, seed_for

YEAR_SECONDS = 365 * 86400
HISTORY_DAYS = 3 * 365
STREAM_KEYS = (
    "time",
    "latlng",
    "distance",
    "altitude",
    "velocity_smooth",
    "heartrate",
    "cadence",
    "watts",
    "temp",
    "moving",
    "grade_smooth",
)
_M_PER_DEG = 111_320.0


@dataclass(frozen=True)
class City:
    """A home city: centre coordinates and time zone (EU daylight-saving rules)."""

    name: str
    state: str
    country: str
    lat: float
    lng: float
    std_offset: int
    tz_name: str
    elevation: float


CITIES = (
    City("Berlin", "Berlin", "Germany", 52.52, 13.405, 3600, "Europe/Berlin", 35.0),
    City("London", "England", "United Kingdom", 51.5074, -0.1278, 0, "Europe/London", 20.0),
    City(
        "Amsterdam", "North Holland", "Netherlands", 52.3676, 4.9041, 3600, "Europe/Amsterdam", 2.0
    ),
    City("Munich", "Bavaria", "Germany", 48.1351, 11.582, 3600, "Europe/Berlin", 520.0),
    City("Lisbon", "Lisbon", "Portugal", 38.7223, -9.1393, 0, "Europe/Lisbon", 60.0),
    City("Vienna", "Vienna", "Austria", 48.2082, 16.3738, 3600, "Europe/Vienna", 190.0),
)

FIRST_NAMES = (
    ("Anna", "F"),
    ("Ben", "M"),
    ("Clara", "F"),
    ("David", "M"),
    ("Emma", "F"),
    ("Felix", "M"),
    ("Greta", "F"),
    ("Hugo", "M"),
    ("Ida", "F"),
    ("Jonas", "M"),
    ("Lena", "F"),
    ("Max", "M"),
    ("Nora", "F"),
    ("Oskar", "M"),
    ("Paula", "F"),
    ("Rafael", "M"),
    ("Sofia", "F"),
    ("Tom", "M"),
)
LAST_NAMES = (
    "Meyer",
    "Schmidt",
    "Jansen",
    "Silva",
    "Taylor",
    "Novak",
    "Berger",
    "Costa",
    "Fischer",
    "de Vries",
    "Wagner",
    "Evans",
    "Pereira",
    "Huber",
)
CUSTOM_NAMES = (
    "Easy recovery",
    "Tempo session",
    "Intervals 6x800m",
    "Long one by the river",
    "Commute home",
    "Sunday long ride",
    "Hill repeats",
    "With the club",
    "Race day!",
    "Shakeout",
    "Exploring new roads",
    "Progression run",
)
DEVICES = (
    "Garmin Forerunner 255",
    "Garmin Edge 530",
    "COROS PACE 3",
    "Apple Watch Series 9",
    "Wahoo ELEMNT BOLT",
    "Strava App",
)


@dataclass(frozen=True)
class SportProfile:
    """Ranges used to draw one activity of a sport."""

    sport_type: str
    type: str
    label: str
    speed: tuple[float, float]
    minutes: tuple[int, int]
    gps: bool
    cadence: bool
    trainer: bool = False


SPORTS = (
    (0.34, SportProfile("Run", "Run", "Run", (2.6, 4.2), (20, 110), True, True)),
    (0.06, SportProfile("TrailRun", "Run", "Trail Run", (2.0, 3.4), (40, 180), True, True)),
    (0.20, SportProfile("Ride", "Ride", "Ride", (5.5, 9.5), (40, 300), True, True)),
    (0.05, SportProfile("GravelRide", "Ride", "Gravel Ride", (5.0, 8.0), (60, 240), True, True)),
    (
        0.03,
        SportProfile(
            "MountainBikeRide", "Ride", "Mountain Bike Ride", (3.5, 6.0), (45, 200), True, True
        ),
    ),
    (0.10, SportProfile("Walk", "Walk", "Walk", (1.2, 1.6), (20, 120), True, True)),
    (0.05, SportProfile("Hike", "Hike", "Hike", (0.9, 1.4), (60, 360), True, True)),
    (0.06, SportProfile("Swim", "Swim", "Swim", (0.6, 1.0), (20, 60), False, False)),
    (
        0.06,
        SportProfile(
            "VirtualRide",
            "VirtualRide",
            "Virtual Ride",
            (7.0, 11.0),
            (30, 120),
            False,
            True,
            trainer=True,
        ),
    ),
    (
        0.05,
        SportProfile(
            "WeightTraining",
            "WeightTraining",
            "Weight Training",
            (0.0, 0.0),
            (30, 75),
            False,
            False,
        ),
    ),
)


@dataclass(frozen=True)
class Gear:
    """A bike or a pair of shoes."""

    id: str
    name: str
    primary: bool
    distance: float


@dataclass(frozen=True)
class AthleteProfile:
    """Static description of a generated athlete."""

    id: int
    firstname: str
    lastname: str
    username: str
    sex: str
    city: City
    created_ts: int
    premium: bool
    weight: float
    ftp: int | None
    bikes: tuple[Gear, ...]
    shoes: tuple[Gear, ...]
    device: str
    follower_count: int
    friend_count: int


@dataclass(frozen=True)
class ActivitySpec:
    """Everything needed to render one activity: summary numbers plus track parameters."""

    id: int
    athlete_id: int
    start_ts: int
    sport: SportProfile
    name: str
    description: str
    distance: float
    moving_time: int
    elapsed_time: int
    manual: bool
    commute: bool
    private: bool
    visibility: str
    has_heartrate: bool
    average_heartrate: float
    max_heartrate: int  # whole beats per minute, as Strava sends it
    device_watts: bool
    average_watts: float
    has_temp: bool
    average_temp: int
    average_cadence: float
    max_speed_factor: float
    workout_type: int | None
    kudos_count: int
    comment_count: int
    achievement_count: int
    pr_count: int
    athlete_count: int
    total_photo_count: int
    gear_id: str | None
    device_name: str | None
    start_lat: float
    start_lng: float
    base_elevation: float
    elevation_terms: tuple[tuple[float, int, float], ...]
    upload_id: int | None
    external_id: str | None
    embed_token: str
    suffer_score: int | None
    city: City
    seed: int


def np_rng_for(*parts: object) -> np.random.Generator:
    """Return a numpy generator seeded stably from the given parts."""
    return np.random.default_rng(seed_for(*parts))


def iso_z(ts: float) -> str:
    """Format epoch seconds as Strava does: ``2024-05-01T06:12:00Z``."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _last_sunday(year: int, month: int) -> datetime:
    day = datetime(year, month + 1, 1, tzinfo=UTC) - timedelta(days=1)
    return day - timedelta(days=(day.weekday() + 1) % 7)


def utc_offset(ts: float, city: City) -> int:
    """UTC offset in seconds at ``ts`` under EU summer-time rules."""
    year = datetime.fromtimestamp(ts, UTC).year
    start = _last_sunday(year, 3).replace(hour=1).timestamp()
    end = _last_sunday(year, 10).replace(hour=1).timestamp()
    return city.std_offset + (3600 if start <= ts < end else 0)


def timezone_label(city: City) -> str:
    """Strava's timezone label, e.g. ``(GMT+01:00) Europe/Berlin``."""
    hours, rem = divmod(abs(city.std_offset), 3600)
    sign = "+" if city.std_offset >= 0 else "-"
    return f"(GMT{sign}{hours:02d}:{rem // 60:02d}) {city.tz_name}"


def default_activity_counts(seed: int, athletes: int) -> list[int]:
    """Pseudo-random activity counts in 0..300, one per athlete index."""
    rng = rng_for(seed, "counts")
    return [rng.randint(0, 300) for _ in range(athletes)]


def make_athlete(seed: int, athlete_id: int, anchor: float) -> AthleteProfile:
    """Generate the profile of one athlete."""
    rng = rng_for(seed, "athlete", athlete_id)
    first, sex = rng.choice(FIRST_NAMES)
    last = rng.choice(LAST_NAMES)
    city = rng.choice(CITIES)
    created = int(anchor) - HISTORY_DAYS * 86400 - rng.randint(30, 900) * 86400
    bikes = tuple(
        Gear(f"b{athlete_id}{k}", name, k == 0, round(rng.uniform(500_000, 9_000_000), 1))
        for k, name in enumerate(
            rng.sample(
                ["Canyon Endurace", "Trek Domane", "Cube Nuroad", "Specialized Tarmac"],
                rng.randint(1, 2),
            )
        )
    )
    shoes = tuple(
        Gear(f"g{athlete_id}{k}", name, k == 0, round(rng.uniform(100_000, 900_000), 1))
        for k, name in enumerate(
            rng.sample(
                ["Nike Pegasus 40", "ASICS Novablast 4", "Hoka Clifton 9", "Saucony Endorphin"],
                rng.randint(1, 2),
            )
        )
    )
    return AthleteProfile(
        id=athlete_id,
        firstname=first,
        lastname=last,
        username=f"{first.lower()}_{last.lower().replace(' ', '')}{athlete_id % 1000}",
        sex=sex,
        city=city,
        created_ts=created,
        premium=rng.random() < 0.4,
        weight=round(rng.uniform(52, 88), 1),
        ftp=rng.randint(180, 320) if rng.random() < 0.5 else None,
        bikes=bikes,
        shoes=shoes,
        device=rng.choice(DEVICES),
        follower_count=rng.randint(0, 400),
        friend_count=rng.randint(0, 400),
    )


def generate_start_times(
    seed: int, athlete_id: int, count: int, anchor: float, city: City
) -> list[int]:
    """Distinct start times (ascending) over the ~3 years before ``anchor``."""
    rng = rng_for(seed, "starts", athlete_id, count)
    latest = int(anchor) - 6 * 3600
    anchor_day = int(anchor) // 86400 * 86400
    span_days = max(HISTORY_DAYS, count // 3 + 1)
    chosen: set[int] = set()
    while len(chosen) < count:
        day = anchor_day - rng.randrange(span_days) * 86400
        local_seconds = rng.randint(5 * 3600 + 1800, 21 * 3600)
        ts = day + local_seconds - city.std_offset
        if ts <= latest:
            chosen.add(ts)
    return sorted(chosen)


def _pick_sport(rng: random.Random) -> SportProfile:
    roll = rng.random()
    acc = 0.0
    for weight, sport in SPORTS:
        acc += weight
        if roll < acc:
            return sport
    return SPORTS[0][1]


def _default_name(sport: SportProfile, local_hour: int) -> str:
    if 5 <= local_hour < 11:
        part = "Morning"
    elif 11 <= local_hour < 14:
        part = "Lunch"
    elif 14 <= local_hour < 17:
        part = "Afternoon"
    elif 17 <= local_hour < 21:
        part = "Evening"
    else:
        part = "Night"
    return f"{part} {sport.label}"


def make_activity(
    seed: int, athlete: AthleteProfile, activity_id: int, start_ts: int
) -> ActivitySpec:
    """Generate the full description of one activity."""
    rng = rng_for(seed, "activity", activity_id)
    sport = _pick_sport(rng)
    city = athlete.city
    local_hour = datetime.fromtimestamp(start_ts + utc_offset(start_ts, city), UTC).hour
    manual = sport.gps and sport.type in ("Run", "Walk") and rng.random() < 0.03
    moving = rng.randint(sport.minutes[0] * 60, sport.minutes[1] * 60)
    speed = rng.uniform(*sport.speed)
    distance = round(speed * moving, 1)
    pause = 0 if manual or sport.trainer else int(moving * rng.uniform(0.0, 0.15))
    private = rng.random() < 0.08
    visibility = "only_me" if private else ("followers_only" if rng.random() < 0.15 else "everyone")
    has_hr = (not manual) and rng.random() < 0.75
    avg_hr = round(rng.uniform(118, 162), 1) if has_hr else 0.0
    is_ride = sport.type in ("Ride", "VirtualRide")
    device_watts = is_ride and (sport.trainer or rng.random() < 0.4)
    avg_watts = round(rng.uniform(140, 260), 1) if is_ride else 0.0
    cadence = 0.0
    if sport.cadence and not manual:
        cadence = round(rng.uniform(78, 92), 1)
    achievements = rng.randint(0, 10) if rng.random() < 0.4 else 0
    gear: str | None = None
    if sport.type in ("Run", "Walk", "Hike"):
        gear = rng.choice(athlete.shoes).id
    elif is_ride:
        gear = rng.choice(athlete.bikes).id
    name = rng.choice(CUSTOM_NAMES) if rng.random() < 0.15 else _default_name(sport, local_hour)
    if sport.type == "Run":
        workout: int | None = rng.choice([0, 0, 0, 1, 2, 3, None])
    elif is_ride:
        workout = rng.choice([10, 10, 10, 11, 12, None])
    else:
        workout = None
    start_lat = city.lat + rng.uniform(-0.04, 0.04)
    start_lng = city.lng + rng.uniform(-0.06, 0.06)
    if sport.gps:
        start_lat, start_lng = _street_start(seed, city, start_lat, start_lng)
    hilly = 1.0 if sport.sport_type not in ("TrailRun", "Hike", "MountainBikeRide") else 4.0
    terms = tuple(
        (rng.uniform(2.0, 14.0) * hilly, rng.randint(1, 6), rng.uniform(0, 2 * math.pi))
        for _ in range(3)
    )
    upload_id = None if manual else activity_id * 10 + 7
    return ActivitySpec(
        id=activity_id,
        athlete_id=athlete.id,
        start_ts=start_ts,
        sport=sport,
        name=name,
        description="" if rng.random() < 0.7 else rng.choice(CUSTOM_NAMES),
        distance=distance,
        moving_time=moving,
        elapsed_time=moving + pause,
        manual=manual,
        commute=is_ride and not sport.trainer and rng.random() < 0.1,
        private=private,
        visibility=visibility,
        has_heartrate=has_hr,
        average_heartrate=avg_hr,
        max_heartrate=round(avg_hr + rng.uniform(12, 30)) if has_hr else 0,
        device_watts=device_watts,
        average_watts=avg_watts,
        has_temp=(not manual) and not sport.trainer and rng.random() < 0.5,
        average_temp=rng.randint(-2, 28),
        average_cadence=cadence,
        max_speed_factor=rng.uniform(1.25, 1.9),
        workout_type=workout,
        kudos_count=rng.randint(0, 30),
        comment_count=rng.randint(0, 4),
        achievement_count=achievements,
        pr_count=rng.randint(0, achievements),
        athlete_count=rng.choice([1, 1, 1, 2, 3]),
        total_photo_count=rng.choice([0, 0, 0, 1, 2]),
        gear_id=gear,
        device_name=None if manual else athlete.device,
        start_lat=start_lat,
        start_lng=start_lng,
        base_elevation=city.elevation + rng.uniform(-10, 40),
        elevation_terms=terms,
        upload_id=upload_id,
        external_id=None if manual else f"{upload_id:x}.fit",
        embed_token=hashlib.sha1(f"{seed}:{activity_id}".encode()).hexdigest(),
        suffer_score=int(moving / 60 * (avg_hr - 100) / 25) if has_hr else None,
        city=city,
        seed=seed,
    )


def _street_start(seed: int, city: City, lat: float, lng: float) -> tuple[float, float]:
    """Coordinates of the street intersection of ``city`` nearest to a drawn start point."""
    from sync_pipeline.sandbox.strava.city import city_streets

    net = city_streets(seed, city.name)
    r, c = net.nearest_intersection(lat, lng)
    node = r * net.shape[1] + c
    return float(net.lat[node]), float(net.lng[node])


_HEADINGS = ((0, 1), (1, 0), (0, -1), (-1, 0))  # (d_row, d_col): east, north, west, south


def _line_run(
    nodes: np.ndarray, cum: np.ndarray, pos: int, forward: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Node indices and metres from ``pos`` to each along a line, in the direction of travel."""
    if forward:
        return nodes[pos:], cum[pos:] - cum[pos]
    return nodes[pos::-1], cum[pos] - cum[pos::-1]


@lru_cache(maxsize=1024)
def _street_route(spec: ActivitySpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed walk of ``spec.distance`` metres along the city's streets from the start node.

    A persistent random walk over the intersection grid (straight on, left or right, avoiding
    streets already used) runs while the distance budget still allows returning home along an
    L-shaped path; the walk then goes home, and the leftover (less than about two blocks) becomes
    an out-and-back along a street at the turning point.  Returns local metres ``x``, ``y`` of the
    route's vertices and the metres ``arc`` travelled at each, with ``arc[-1] == spec.distance``.
    """
    from sync_pipeline.sandbox.strava.city import city_streets

    net = city_streets(spec.seed, spec.city.name)
    rng = rng_for("route", spec.seed, spec.id)
    rows, cols = net.shape
    row_arc, col_arc = net.row_arc.tolist(), net.col_arc.tolist()
    r0, c0 = net.nearest_intersection(spec.start_lat, spec.start_lng)
    straight = rng.uniform(0.45, 0.75)
    left = rng.uniform(0.35, 0.65)
    heading = rng.randrange(4)
    budget = spec.distance

    def edge(r: int, c: int, h: int) -> float:
        dr, dc = _HEADINGS[h]
        if dr == 0:
            return abs(row_arc[r][c + dc] - row_arc[r][c])
        return abs(col_arc[r + dr][c] - col_arc[r][c])

    def home(r: int, c: int) -> tuple[float, bool]:
        """Length of the shorter L-shaped path home and whether it goes along the row first."""
        row_first = abs(row_arc[r][c] - row_arc[r][c0]) + abs(col_arc[r][c0] - col_arc[r0][c0])
        col_first = abs(col_arc[r][c] - col_arc[r0][c]) + abs(row_arc[r0][c] - row_arc[r0][c0])
        return min(row_first, col_first), row_first <= col_first

    steps: list[tuple[int, int, int]] = []
    used: set[tuple[int, int, int]] = set()
    r, c, walked = r0, c0, 0.0
    while True:
        options: list[int] = []
        weights: list[float] = []
        for turn, weight in (
            (0, straight),
            (1, (1 - straight) * left),
            (3, (1 - straight) * (1 - left)),
        ):
            h = (heading + turn) % 4
            nr, nc = r + _HEADINGS[h][0], c + _HEADINGS[h][1]
            if 0 <= nr < rows and 0 <= nc < cols:
                options.append(h)
                weights.append(weight * (0.15 if (r, c, h) in used else 1.0))
        if not options:
            options, weights = [(heading + 2) % 4], [1.0]
        h = rng.choices(options, weights)[0]
        nr, nc = r + _HEADINGS[h][0], c + _HEADINGS[h][1]
        length = edge(r, c, h)
        if walked + length + home(nr, nc)[0] > budget:
            break
        steps.append((r, c, h))
        used.add((r, c, h))
        used.add((nr, nc, (h + 2) % 4))
        walked += length
        r, c, heading = nr, nc, h

    pieces: list[np.ndarray] = [np.array([r0 * cols + c0])]

    def along_row(row: int, c_from: int, c_to: int) -> None:
        a, b = int(net.row_pos[row, c_from]), int(net.row_pos[row, c_to])
        line = net.row_lines[row]
        pieces.append(line[a + 1 : b + 1] if b >= a else line[b:a][::-1])

    def along_col(col: int, r_from: int, r_to: int) -> None:
        a, b = int(net.col_pos[r_from, col]), int(net.col_pos[r_to, col])
        line = net.col_lines[col]
        pieces.append(line[a + 1 : b + 1] if b >= a else line[b:a][::-1])

    for sr, sc, h in steps:
        dr, dc = _HEADINGS[h]
        if dr == 0:
            along_row(sr, sc, sc + dc)
        else:
            along_col(sc, sr, sr + dr)
    back, row_first = home(r, c)
    xs = [net.x[np.concatenate(pieces)]]
    ys = [net.y[np.concatenate(pieces)]]
    half = (budget - walked - back) / 2
    if half > 0.01:
        runs = [
            _line_run(net.row_lines[r], net.row_cum[r], int(net.row_pos[r, c]), True),
            _line_run(net.row_lines[r], net.row_cum[r], int(net.row_pos[r, c]), False),
            _line_run(net.col_lines[c], net.col_cum[c], int(net.col_pos[r, c]), True),
            _line_run(net.col_lines[c], net.col_cum[c], int(net.col_pos[r, c]), False),
        ]
        fitting = [run for run in runs if run[1][-1] >= half] or [max(runs, key=lambda x: x[1][-1])]
        nodes, dist = fitting[rng.randrange(len(fitting))]
        k = min(int(np.searchsorted(dist, half)), len(dist) - 1)
        t = 0.0 if k == 0 else min(1.0, (half - dist[k - 1]) / (dist[k] - dist[k - 1]))
        prev = nodes[max(k - 1, 0)]
        tip_x = net.x[prev] + t * (net.x[nodes[k]] - net.x[prev])
        tip_y = net.y[prev] + t * (net.y[nodes[k]] - net.y[prev])
        out = nodes[1:k]
        xs.append(np.concatenate([net.x[out], [tip_x], net.x[out[::-1]], [net.x[nodes[0]]]]))
        ys.append(np.concatenate([net.y[out], [tip_y], net.y[out[::-1]], [net.y[nodes[0]]]]))
    pieces = []
    if row_first:
        along_row(r, c, c0)
        along_col(c0, r, r0)
    else:
        along_col(c, r, r0)
        along_row(r0, c, c0)
    tail = np.concatenate([np.array([], dtype=np.int64), *pieces])
    x = np.concatenate([*xs, net.x[tail]])
    y = np.concatenate([*ys, net.y[tail]])
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    for arr in (x, y, arc):
        arr.flags.writeable = False
    return x, y, arc


def _loop_points(spec: ActivitySpec, fractions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lat/lng of the street route at the given fractions (0..1) of its length."""
    from sync_pipeline.sandbox.strava.city import city_streets

    x, y, arc = _street_route(spec)
    target = np.clip(fractions, 0.0, 1.0) * arc[-1]
    return city_streets(spec.seed, spec.city.name).to_latlng(
        np.interp(target, arc, x), np.interp(target, arc, y)
    )


GPS_NOISE_M = 3.0
GPS_NOISE_MAX_M = 9.0


def _gps_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """(2, n) metres east/north of receiver error: slowly drifting, about 3 m, at most 9 m."""
    window = 30
    white = rng.normal(0.0, 1.0, (2, n + window))
    kernel = np.hanning(window + 2)[1:-1]
    kernel /= np.sqrt((kernel**2).sum())
    drift = np.stack([np.convolve(row, kernel, mode="valid")[:n] for row in white])
    noise = GPS_NOISE_M * drift
    return np.clip(noise, -GPS_NOISE_MAX_M, GPS_NOISE_MAX_M)


def _altitude(spec: ActivitySpec, fractions: np.ndarray) -> np.ndarray:
    alt = np.full(fractions.shape, spec.base_elevation)
    for amp, k, phase in spec.elevation_terms:
        alt += amp * (np.sin(2 * math.pi * k * fractions + phase) - math.sin(phase))
    return alt


def elevation_summary(spec: ActivitySpec) -> tuple[float, float, float]:
    """Return (total_elevation_gain, elev_high, elev_low) consistent with the stream."""
    if not spec.sport.gps or spec.manual:
        return 0.0, 0.0, 0.0
    alt = _altitude(spec, np.linspace(0.0, 1.0, 600))
    gain = float(np.clip(np.diff(alt), 0, None).sum())
    return round(gain, 1), round(float(alt.max()), 1), round(float(alt.min()), 1)


def encode_polyline(points: list[tuple[float, float]]) -> str:
    """Google encoded polyline (precision 5)."""
    out: list[str] = []
    prev_lat = prev_lng = 0
    for lat, lng in points:
        ilat, ilng = round(lat * 1e5), round(lng * 1e5)
        for delta in (ilat - prev_lat, ilng - prev_lng):
            value = ~(delta << 1) if delta < 0 else delta << 1
            while value >= 0x20:
                out.append(chr((0x20 | (value & 0x1F)) + 63))
                value >>= 5
            out.append(chr(value + 63))
        prev_lat, prev_lng = ilat, ilng
    return "".join(out)


def summary_polyline(spec: ActivitySpec) -> str:
    """Coarse polyline of the route (empty for activities without GPS)."""
    if not spec.sport.gps or spec.manual:
        return ""
    lat, lng = _loop_points(spec, np.linspace(0.0, 1.0, 60))
    return encode_polyline(list(zip(lat.tolist(), lng.tolist(), strict=True)))


@dataclass(frozen=True)
class Track:
    """Sampled streams of one activity (numpy arrays, equal length)."""

    time: np.ndarray
    distance: np.ndarray
    velocity: np.ndarray
    moving: np.ndarray
    lat: np.ndarray | None
    lng: np.ndarray | None
    altitude: np.ndarray | None
    grade: np.ndarray | None
    heartrate: np.ndarray | None
    cadence: np.ndarray | None
    watts: np.ndarray | None
    temp: np.ndarray | None


def build_track(spec: ActivitySpec) -> Track | None:
    """Generate the streams of an activity; ``None`` for manual entries."""
    if spec.manual:
        return None
    rng = np_rng_for("track", spec.id, spec.start_ts)
    elapsed = spec.elapsed_time
    dt = max(1, math.ceil(elapsed / 3000))
    t = np.arange(0, elapsed + 1, dt, dtype=np.int64)
    if t[-1] != elapsed:
        t = np.append(t, elapsed)
    n = len(t)
    moving = np.ones(n, dtype=bool)
    paused = min(n - 2, round((elapsed - spec.moving_time) / dt))
    if paused > 0:
        pieces = int(rng.integers(1, 4))
        sizes = np.diff(np.sort(np.concatenate([[0, paused], rng.integers(0, paused, pieces - 1)])))
        for size in sizes:
            if size <= 0:
                continue
            start = int(rng.integers(1, max(2, n - int(size) - 1)))
            moving[start : start + int(size)] = False
    x = np.linspace(0.0, 1.0, n)
    wobble = sum(
        rng.uniform(0.02, 0.07) * np.sin(2 * math.pi * rng.uniform(1, 12) * x + rng.uniform(0, 6))
        for _ in range(3)
    )
    velocity = np.clip(1.0 + wobble + rng.normal(0, 0.02, n), 0.3, None) * moving
    steps = np.concatenate([[0.0], np.diff(t).astype(float)])
    dist = np.cumsum(velocity * steps)
    if spec.distance > 0 and dist[-1] > 0:
        factor = spec.distance / dist[-1]
        velocity = velocity * factor
        dist = dist * factor
    else:
        velocity = np.zeros(n)
        dist = np.zeros(n)
    fractions = dist / spec.distance if spec.distance > 0 else np.zeros(n)
    lat = lng = alt = grade = None
    if spec.sport.gps:
        lat, lng = _loop_points(spec, fractions)
        noise = _gps_noise(rng, n)
        lat = lat + noise[1] / _M_PER_DEG
        lng = lng + noise[0] / (_M_PER_DEG * math.cos(math.radians(spec.city.lat)))
        lat[0] = lat[-1] = spec.start_lat
        lng[0] = lng[-1] = spec.start_lng
        alt = _altitude(spec, fractions)
        d_alt = np.diff(alt, prepend=alt[0])
        d_dist = np.diff(dist, prepend=0.0)
        raw = np.divide(100 * d_alt, d_dist, out=np.zeros(n), where=d_dist > 0.5)
        grade = np.clip(np.convolve(raw, np.ones(5) / 5, mode="same"), -30, 30)
    heartrate = cadence = watts = temp = None
    if spec.has_heartrate:
        warmup = np.clip(x * 12, 0, 1)
        hr = spec.average_heartrate * (0.85 + 0.17 * warmup) + rng.normal(0, 2.0, n)
        heartrate = np.clip(np.round(hr + spec.average_heartrate - hr.mean()), 60, 205)
    if spec.average_cadence > 0:
        cadence = np.round((spec.average_cadence + rng.normal(0, 3, n)) * moving)
    if spec.device_watts:
        mean_v = velocity[moving].mean() if moving.any() else 1.0
        power = spec.average_watts * (velocity / max(mean_v, 1e-6)) ** 1.5
        watts = np.round(np.clip(power + rng.normal(0, 12, n), 0, None) * moving)
    if spec.has_temp:
        temp = np.round(spec.average_temp + 2 * np.sin(math.pi * x) + rng.normal(0, 0.3, n))
    return Track(t, dist, velocity, moving, lat, lng, alt, grade, heartrate, cadence, watts, temp)


def stream_data(track: Track) -> dict[str, list[Any]]:
    """All available streams of a track as JSON-ready lists, keyed by Strava stream type."""
    out: dict[str, list[Any]] = {
        "time": track.time.tolist(),
        "distance": np.round(track.distance, 1).tolist(),
        "velocity_smooth": np.round(track.velocity, 3).tolist(),
        "moving": track.moving.tolist(),
    }
    if track.lat is not None and track.lng is not None:
        out["latlng"] = np.round(np.stack([track.lat, track.lng], axis=1), 6).tolist()
    if track.altitude is not None:
        out["altitude"] = np.round(track.altitude, 1).tolist()
    if track.grade is not None:
        out["grade_smooth"] = np.round(track.grade, 1).tolist()
    for key, arr in (
        ("heartrate", track.heartrate),
        ("cadence", track.cadence),
        ("watts", track.watts),
        ("temp", track.temp),
    ):
        if arr is not None:
            out[key] = arr.astype(int).tolist()
    return out


def splits(track: Track, unit: float, has_hr: bool) -> list[dict[str, Any]]:
    """Per-kilometre (or per-mile) splits computed from the track."""
    total = float(track.distance[-1])
    if total <= 0:
        return []
    bounds = np.searchsorted(track.distance, np.arange(unit, total, unit))
    edges = [0, *bounds.tolist(), len(track.time) - 1]
    steps = np.diff(track.time, prepend=track.time[0])
    result: list[dict[str, Any]] = []
    for i in range(len(edges) - 1):
        a, b = edges[i], edges[i + 1]
        if b <= a:
            continue
        dist = float(track.distance[b] - track.distance[a])
        elapsed = int(track.time[b] - track.time[a])
        moving = int(steps[a + 1 : b + 1][track.moving[a + 1 : b + 1]].sum())
        elev = 0.0
        if track.altitude is not None:
            elev = round(float(track.altitude[b] - track.altitude[a]), 1)
        speed = round(dist / moving, 2) if moving else 0.0
        split: dict[str, Any] = {
            "distance": round(dist, 1),
            "elapsed_time": elapsed,
            "elevation_difference": elev,
            "moving_time": moving,
            "split": i + 1,
            "average_speed": speed,
            "average_grade_adjusted_speed": speed,
            "pace_zone": 0,
        }
        if has_hr and track.heartrate is not None:
            split["average_heartrate"] = round(float(track.heartrate[a : b + 1].mean()), 1)
        result.append(split)
    return result


def detail_polyline(track: Track) -> str:
    """Full-resolution-ish polyline (at most ~1000 points) of the track."""
    if track.lat is None or track.lng is None:
        return ""
    step = max(1, len(track.lat) // 1000)
    lat = [*track.lat[::step].tolist(), float(track.lat[-1])]
    lng = [*track.lng[::step].tolist(), float(track.lng[-1])]
    return encode_polyline(list(zip(lat, lng, strict=True)))


def _visibility(spec: ActivitySpec, private: bool) -> str:
    if private:
        return "only_me"
    return "everyone" if spec.visibility == "only_me" else spec.visibility


def summary_dict(spec: ActivitySpec, overrides: dict[str, Any]) -> dict[str, Any]:
    """SummaryActivity (resource_state 2) as returned by ``/athlete/activities``."""
    private = bool(overrides.get("private", spec.private))
    gps = spec.sport.gps and not spec.manual
    latlng = [round(spec.start_lat, 6), round(spec.start_lng, 6)] if gps else []
    gain, high, low = elevation_summary(spec)
    offset = utc_offset(spec.start_ts, spec.city)
    avg_speed = round(spec.distance / spec.moving_time, 3) if spec.moving_time else 0.0
    out: dict[str, Any] = {
        "resource_state": 2,
        "athlete": {"id": spec.athlete_id, "resource_state": 1},
        "name": overrides.get("name", spec.name),
        "distance": spec.distance,
        "moving_time": spec.moving_time,
        "elapsed_time": spec.elapsed_time,
        "total_elevation_gain": gain,
        "type": spec.sport.type,
        "sport_type": spec.sport.sport_type,
        "workout_type": spec.workout_type,
        "id": spec.id,
        "start_date": iso_z(spec.start_ts),
        "start_date_local": iso_z(spec.start_ts + offset),
        "timezone": timezone_label(spec.city),
        "utc_offset": float(offset),
        "location_city": None,
        "location_state": None,
        "location_country": spec.city.country,
        "achievement_count": spec.achievement_count,
        "kudos_count": spec.kudos_count,
        "comment_count": spec.comment_count,
        "athlete_count": spec.athlete_count,
        "photo_count": 0,
        "map": {
            "id": f"a{spec.id}",
            "summary_polyline": summary_polyline(spec),
            "resource_state": 2,
        },
        "trainer": bool(overrides.get("trainer", spec.sport.trainer)),
        "commute": bool(overrides.get("commute", spec.commute)),
        "manual": spec.manual,
        "private": private,
        "visibility": _visibility(spec, private),
        "flagged": False,
        "gear_id": spec.gear_id,
        "start_latlng": latlng,
        "end_latlng": list(latlng),
        "average_speed": avg_speed,
        "max_speed": round(avg_speed * spec.max_speed_factor, 3),
        "has_heartrate": spec.has_heartrate,
        "heartrate_opt_out": False,
        "display_hide_heartrate_option": spec.has_heartrate,
        "elev_high": high,
        "elev_low": low,
        "upload_id": spec.upload_id,
        "upload_id_str": None if spec.upload_id is None else str(spec.upload_id),
        "external_id": spec.external_id,
        "from_accepted_tag": False,
        "pr_count": spec.pr_count,
        "total_photo_count": spec.total_photo_count,
        "has_kudoed": False,
        "suffer_score": spec.suffer_score,
        "device_watts": spec.device_watts,
    }
    if spec.average_cadence:
        out["average_cadence"] = spec.average_cadence
    if spec.has_temp:
        out["average_temp"] = spec.average_temp
    if spec.sport.type in ("Ride", "VirtualRide"):
        out["average_watts"] = spec.average_watts
        out["kilojoules"] = round(spec.average_watts * spec.moving_time / 1000, 1)
        if spec.device_watts:
            out["weighted_average_watts"] = int(spec.average_watts * 1.06)
            out["max_watts"] = int(spec.average_watts * 3.1)
    if spec.has_heartrate:
        out["average_heartrate"] = spec.average_heartrate
        out["max_heartrate"] = spec.max_heartrate
    return out


def _laps(spec: ActivitySpec, track: Track | None, summary: dict[str, Any]) -> list[dict[str, Any]]:
    lap_len = {"Run": 5000.0, "Ride": 20000.0}.get(spec.sport.type, 0.0)
    if track is None or lap_len == 0.0 or spec.distance <= lap_len:
        pieces = [(0, len(track.time) - 1)] if track is not None else []
    else:
        cuts = np.searchsorted(track.distance, np.arange(lap_len, spec.distance, lap_len)).tolist()
        edges = [0, *cuts, len(track.time) - 1]
        pieces = [(a, b) for a, b in itertools.pairwise(edges) if b > a]
    laps: list[dict[str, Any]] = []
    for i, (a, b) in enumerate(pieces):
        assert track is not None
        dist = float(track.distance[b] - track.distance[a])
        elapsed = int(track.time[b] - track.time[a])
        steps = np.diff(track.time, prepend=track.time[0])[a + 1 : b + 1]
        moving = int(steps[track.moving[a + 1 : b + 1]].sum())
        start = spec.start_ts + int(track.time[a])
        lap: dict[str, Any] = {
            "id": spec.id * 100 + i + 1,
            "resource_state": 2,
            "name": f"Lap {i + 1}",
            "activity": {"id": spec.id, "resource_state": 1},
            "athlete": {"id": spec.athlete_id, "resource_state": 1},
            "elapsed_time": elapsed,
            "moving_time": moving,
            "start_date": iso_z(start),
            "start_date_local": iso_z(start + utc_offset(start, spec.city)),
            "distance": round(dist, 1),
            "start_index": a,
            "end_index": b,
            "total_elevation_gain": 0.0,
            "average_speed": round(dist / moving, 3) if moving else 0.0,
            "max_speed": summary["max_speed"],
            "device_watts": spec.device_watts,
            "lap_index": i + 1,
            "split": i + 1,
            "pace_zone": 0,
        }
        if track.altitude is not None:
            lap["total_elevation_gain"] = round(
                float(np.clip(np.diff(track.altitude[a : b + 1]), 0, None).sum()), 1
            )
        if spec.average_cadence:
            lap["average_cadence"] = spec.average_cadence
        if spec.sport.type in ("Ride", "VirtualRide"):
            lap["average_watts"] = spec.average_watts
        if spec.has_heartrate and track.heartrate is not None:
            lap["average_heartrate"] = round(float(track.heartrate[a : b + 1].mean()), 1)
            lap["max_heartrate"] = float(track.heartrate[a : b + 1].max())
        laps.append(lap)
    return laps


def detail_dict(
    spec: ActivitySpec, overrides: dict[str, Any], athlete: AthleteProfile
) -> dict[str, Any]:
    """DetailedActivity (resource_state 3) as returned by ``/activities/{id}``."""
    out = summary_dict(spec, overrides)
    track = build_track(spec)
    out["resource_state"] = 3
    out["map"] = {
        "id": f"a{spec.id}",
        "polyline": detail_polyline(track) if track is not None else "",
        "summary_polyline": out["map"]["summary_polyline"],
        "resource_state": 3,
    }
    gear = next((g for g in (*athlete.bikes, *athlete.shoes) if g.id == spec.gear_id), None)
    has_splits = track is not None and spec.distance > 0
    out.update(
        {
            "description": overrides.get("description", spec.description),
            "calories": round(spec.moving_time / 60 * (11.0 if spec.distance else 6.0), 1),
            "perceived_exertion": None,
            "prefer_perceived_exertion": False,
            "segment_efforts": [],
            "splits_metric": splits(track, 1000.0, spec.has_heartrate)
            if has_splits and track is not None
            else [],
            "splits_standard": splits(track, 1609.34, spec.has_heartrate)
            if has_splits and track is not None
            else [],
            "laps": _laps(spec, track, out),
            "best_efforts": [] if spec.sport.type == "Run" else None,
            "gear": None
            if gear is None
            else {
                "id": gear.id,
                "primary": gear.primary,
                "name": gear.name,
                "nickname": gear.name,
                "resource_state": 2,
                "retired": False,
                "distance": gear.distance,
                "converted_distance": round(gear.distance / 1000, 1),
            },
            "photos": {"primary": None, "count": 0},
            "stats_visibility": [
                {"type": t, "visibility": "everyone"}
                for t in ("heart_rate", "pace", "power", "speed", "calories")
            ],
            "hide_from_home": bool(overrides.get("hide_from_home", False)),
            "device_name": spec.device_name,
            "embed_token": spec.embed_token,
            "similar_activities": None,
            "available_zones": ["heartrate"] if spec.has_heartrate else [],
        }
    )
    if out["best_efforts"] is None:
        del out["best_efforts"]
    return out
