"""Deterministic YouTube channels and their upload history."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sync_pipeline.sandbox.common import random_local_time, rng_for, streak_days

TIME_ZONES = (
    "Europe/Berlin",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "UTC",
    "Australia/Sydney",
    "America/New_York",
)
CHANNEL_WORDS = (
    "Code",
    "Trail",
    "Kitchen",
    "Garage",
    "Studio",
    "Lab",
    "Daily",
    "Notes",
    "Craft",
    "Pixel",
)
TOPICS = ("Tutorial", "Vlog", "Build log", "Review", "Live session", "Q&A", "Short", "Deep dive")
# Local upload hours and their weights: afternoons and evenings, some after midnight.
HOURS = (0, 1, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23)
HOUR_WEIGHTS = (3, 2, 1, 2, 2, 3, 3, 3, 4, 5, 6, 6, 6, 6, 6, 5, 5, 4)
UPLOADS_PER_DAY = (1, 2, 3)
UPLOADS_PER_DAY_WEIGHTS = (70, 22, 8)
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@dataclass
class Video:
    """An uploaded (public) video."""

    id: str
    published_at: int
    title: str
    seq: int


@dataclass
class Channel:
    """A Google account with its YouTube channel; videos in ascending publish order."""

    index: int
    account_id: str  # the Google account (``sub``)
    channel_id: str
    handle: str
    title: str
    time_zone: str
    created_at: int
    videos: list[Video] = field(default_factory=list)
    next_seq: int = 1

    @property
    def uploads(self) -> str:
        """The uploads playlist id (``UU`` + the channel id's tail)."""
        return "UU" + self.channel_id[2:]


def _ident(rng_parts: tuple[object, ...], length: int) -> str:
    rng = rng_for(*rng_parts)
    return "".join(rng.choice(_ID_ALPHABET) for _ in range(length))


def make_channel(seed: int, index: int, now: float, time_zone: str | None) -> Channel:
    """A channel generated from (seed, index); its history is made by ``history``."""
    rng = rng_for(seed, "youtube", index)
    word_a, word_b = rng.sample(CHANNEL_WORDS, 2)
    title = f"{word_a} {word_b} {index}"
    handle = f"@{word_a.lower()}{word_b.lower()}{index}"
    account_id = str(100_000_000_000_000_000_000 + rng.randrange(10**20))
    channel_id = "UC" + _ident((seed, "youtube-channel", index), 22)
    tz = time_zone or TIME_ZONES[(seed + index) % len(TIME_ZONES)]
    created = int(now) - rng.randint(300, 4000) * 86400
    return Channel(index, account_id, channel_id, handle, title, tz, created)


def history(seed: int, channel: Channel, now: float, days: int) -> list[int]:
    """Upload times over the ``days`` local days up to ``now``, ascending.

    A two-state chain makes upload streaks and quiet spells; uploads land at local hours.
    """
    rng = rng_for(seed, "youtube-history", channel.index)
    tz = ZoneInfo(channel.time_zone)
    today = datetime.fromtimestamp(now, tz).date()
    out: list[int] = []
    for day in streak_days(rng, today, days, first=0.4, stay=0.6, start=0.22):
        for _ in range(rng.choices(UPLOADS_PER_DAY, UPLOADS_PER_DAY_WEIGHTS)[0]):
            ts = random_local_time(rng, day, rng.choices(HOURS, HOUR_WEIGHTS)[0], tz)
            if ts <= now:
                out.append(ts)
    out.sort()
    return out


def video_id(seed: int, channel: Channel, seq: int) -> str:
    """An 11-character video id."""
    return _ident((seed, "youtube-video", channel.index, seq), 11)


def video_title(seed: int, channel: Channel, seq: int) -> str:
    """A plausible title."""
    rng = rng_for(seed, "youtube-title", channel.index, seq)
    return f"{rng.choice(TOPICS)} #{seq}: {channel.title}"


def etag(*parts: object) -> str:
    """A YouTube-style etag (27 url-safe base64 characters)."""
    digest = hashlib.sha1(repr(parts).encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def iso(ts: float) -> str:
    """``2025-06-15T15:06:40Z``."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def thumbnails(key: str) -> dict[str, Any]:
    """The ``thumbnails`` object of a snippet."""
    sizes = {"default": (120, 90), "medium": (320, 180), "high": (480, 360)}
    return {
        name: {"url": f"https://i.ytimg.com/vi/{key}/{name}.jpg", "width": w, "height": h}
        for name, (w, h) in sizes.items()
    }


def channel_json(channel: Channel, parts: set[str], mine: bool) -> dict[str, Any]:
    """A ``youtube#channel`` resource with the requested parts."""
    out: dict[str, Any] = {
        "kind": "youtube#channel",
        "etag": etag("channel", channel.channel_id, len(channel.videos), sorted(parts)),
        "id": channel.channel_id,
    }
    if "snippet" in parts:
        out["snippet"] = {
            "title": channel.title,
            "description": f"Videos from {channel.title}.",
            "customUrl": channel.handle,
            "publishedAt": iso(channel.created_at),
            "thumbnails": thumbnails(channel.channel_id),
            "localized": {"title": channel.title, "description": f"Videos from {channel.title}."},
        }
    if "contentDetails" in parts:
        out["contentDetails"] = {"relatedPlaylists": {"likes": "", "uploads": channel.uploads}}
    if "statistics" in parts:
        out["statistics"] = {
            "viewCount": str(len(channel.videos) * 1234),
            "subscriberCount": str(100 + channel.index * 37),
            "hiddenSubscriberCount": False,
            "videoCount": str(len(channel.videos)),
        }
    if "status" in parts:
        out["status"] = {
            "privacyStatus": "public",
            "isLinked": True,
            "longUploadsStatus": "longUploadsUnspecified" if not mine else "allowed",
            "madeForKids": False,
        }
    return out


def playlist_item_json(
    channel: Channel, video: Video, position: int, parts: set[str]
) -> dict[str, Any]:
    """A ``youtube#playlistItem`` of the uploads playlist with the requested parts."""
    item_id = base64.b64encode(f"{channel.uploads}.{video.id}".encode()).decode().rstrip("=")
    out: dict[str, Any] = {
        "kind": "youtube#playlistItem",
        "etag": etag("item", video.id, position, sorted(parts)),
        "id": item_id,
    }
    published = iso(video.published_at)
    if "snippet" in parts:
        out["snippet"] = {
            "publishedAt": published,
            "channelId": channel.channel_id,
            "title": video.title,
            "description": "",
            "thumbnails": thumbnails(video.id),
            "channelTitle": channel.title,
            "playlistId": channel.uploads,
            "position": position,
            "resourceId": {"kind": "youtube#video", "videoId": video.id},
            "videoOwnerChannelTitle": channel.title,
            "videoOwnerChannelId": channel.channel_id,
        }
    if "contentDetails" in parts:
        out["contentDetails"] = {"videoId": video.id, "videoPublishedAt": published}
    if "status" in parts:
        out["status"] = {"privacyStatus": "public"}
    return out
