"""Instagram: one user's daily activity per partition, its sweep, schedule, sensors and check."""

from sync_pipeline.defs.users.platform import build_platform

_defs = build_platform("instagram", "Instagram")

instagram_daily_activity = _defs.asset
instagram_user_sync = _defs.user_job
instagram_sweep_job = _defs.sweep_job
instagram_sync_all = _defs.schedule
instagram_retry_sensor = _defs.retry_sensor
instagram_parked_sensor = _defs.parked_sensor
instagram_no_dead_letters = _defs.check
instagram_sync_queue = _defs.queue
instagram_health_sensor = _defs.health_sensor
