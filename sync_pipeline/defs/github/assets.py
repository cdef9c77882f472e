"""GitHub: one user's daily activity per partition, its sweep, schedule, sensors and check."""

from sync_pipeline.defs.users.platform import build_platform

_defs = build_platform("github", "GitHub")

github_daily_activity = _defs.asset
github_user_sync = _defs.user_job
github_sweep_job = _defs.sweep_job
github_sync_all = _defs.schedule
github_retry_sensor = _defs.retry_sensor
github_parked_sensor = _defs.parked_sensor
github_no_dead_letters = _defs.check
github_sync_queue = _defs.queue
github_health_sensor = _defs.health_sensor
