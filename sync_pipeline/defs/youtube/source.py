"""YouTube as a source of the consistency tracker: one user's daily activity per partition."""

from sync_pipeline.core.source import source_defs
from sync_pipeline.defs.users.platform import platform_source
from sync_pipeline.defs.youtube.resources import YouTubeResource

YOUTUBE = platform_source("youtube", "YouTube", YouTubeResource)
youtube_defs = source_defs(YOUTUBE)
defs = youtube_defs.definitions()
