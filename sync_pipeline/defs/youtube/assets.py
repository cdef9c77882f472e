"""YouTube: one user's daily activity per partition, its sweep, schedule, sensors and check."""

from sync_pipeline.defs.users.platform import build_platform

_defs = build_platform("youtube", "YouTube")

youtube_daily_activity = _defs.asset
youtube_user_sync = _defs.user_job
youtube_sweep_job = _defs.sweep_job
youtube_sync_all = _defs.schedule
youtube_retry_sensor = _defs.retry_sensor
youtube_parked_sensor = _defs.parked_sensor
youtube_no_dead_letters = _defs.check
youtube_sync_queue = _defs.queue
youtube_health_sensor = _defs.health_sensor
