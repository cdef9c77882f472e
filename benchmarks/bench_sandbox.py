"""The Strava sandbox served on loopback by the benchmark process."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench_paths import CLIENT_ID, CLIENT_SECRET, UNLIMITED
from bench_procs import thread_cpu

from sync_pipeline.sandbox.server import SandboxServer
from sync_pipeline.sandbox.strava import data as sandbox_data
from sync_pipeline.sandbox.strava.app import create_app
from sync_pipeline.sandbox.strava.state import StravaSandboxConfig, StravaSandboxState

_polyline_cache: dict[str, str] = {}


def cheap_polylines() -> None:
    """Make the sandbox's summary polylines cheap (one real polyline per city, reused).

    The sandbox routes each activity along its city's streets to draw `map.summary_polyline`
    (~1 ms per activity), which would make the in-process sandbox, not the contenders, the
    bottleneck of a 1M-activity sync. Payload shape and size stay realistic; both contenders
    receive identical bytes.
    """
    real = sandbox_data.summary_polyline
    if getattr(real, "_bench_cheap", False):
        return

    def cheap(spec: sandbox_data.ActivitySpec) -> str:
        if not spec.sport.gps or spec.manual:
            return ""
        line = _polyline_cache.get(spec.city.name)
        if line is None:
            line = _polyline_cache[spec.city.name] = real(spec)
        return line

    cheap._bench_cheap = True  # type: ignore[attr-defined]
    sandbox_data.summary_polyline = cheap


@dataclass
class Sandbox:
    """The Strava sandbox served on loopback by this process."""

    state: StravaSandboxState
    server: SandboxServer

    @property
    def url(self) -> str:
        """Base URL of the sandbox."""
        return self.server.url

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the thread serving the sandbox."""
        thread = self.server._thread
        native = thread.native_id if thread is not None else None
        return thread_cpu(native) if native is not None else 0.0

    def stop(self) -> None:
        """Stop serving and the push worker."""
        self.state.close(timeout=2.0)
        self.server.stop()

    def reset(self) -> None:
        """Zero the request counters and the rate-limit usage (between contenders)."""
        self.state.reset_stats()
        self.state.reset_usage()

    def live_counts(self, athlete_ids: Iterable[int]) -> dict[int, int]:
        """Live activities per athlete, as the API would list them with activity:read_all."""
        return {a: len(self.state.activity_ids(a)) for a in athlete_ids}


def start_sandbox(
    counts: Sequence[int],
    *,
    rate_limits: bool = False,
    time_scale: float = 1.0,
    seed: int = 42,
) -> Sandbox:
    """A sandbox with one athlete per entry of `counts` (ids 1001, 1002, ...)."""
    cheap_polylines()
    limits: dict[str, int] = {}
    if not rate_limits:
        # The sandbox still counts usage and sends X-RateLimit headers with its limits; the
        # pipeline's budget adopts the limits it is told. "Limits off" is therefore an API
        # that advertises (and enforces) limits nobody reaches.
        limits = {
            f"{kind}_limit_{window}": UNLIMITED
            for kind in ("read", "overall")
            for window in ("15min", "daily")
        }
    config = StravaSandboxConfig(
        seed=seed,
        athletes=len(counts),
        activity_counts=dict(enumerate(counts)),
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        rate_limits_enabled=rate_limits,
        time_scale=time_scale,
        **limits,  # type: ignore[arg-type]
    )
    state = StravaSandboxState(config)
    server = SandboxServer(create_app(state), log_level="error").start()
    return Sandbox(state, server)
