"""X: one user's daily activity per partition, its sweep, schedule, sensors and check."""

from sync_pipeline.defs.users.platform import build_platform

_defs = build_platform("x", "X")

x_daily_activity = _defs.asset
x_user_sync = _defs.user_job
x_sweep_job = _defs.sweep_job
x_sync_all = _defs.schedule
x_retry_sensor = _defs.retry_sensor
x_parked_sensor = _defs.parked_sensor
x_no_dead_letters = _defs.check
x_sync_queue = _defs.queue
x_health_sensor = _defs.health_sensor
