"""GitHub as a source of the consistency tracker: one user's daily activity per partition."""

from sync_pipeline.core.source import source_defs
from sync_pipeline.defs.github.resources import GitHubResource
from sync_pipeline.defs.users.platform import platform_source

GITHUB = platform_source("github", "GitHub", GitHubResource)
github_defs = source_defs(GITHUB)
defs = github_defs.definitions()
