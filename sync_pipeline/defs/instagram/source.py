"""Instagram as a source of the consistency tracker: one user's daily activity per partition."""

from sync_pipeline.core.source import source_defs
from sync_pipeline.defs.instagram.resources import InstagramResource
from sync_pipeline.defs.users.platform import platform_source

INSTAGRAM = platform_source("instagram", "Instagram", InstagramResource)
instagram_defs = source_defs(INSTAGRAM)
defs = instagram_defs.definitions()
