"""X as a source of the consistency tracker: one user's daily activity per partition."""

from sync_pipeline.core.source import source_defs
from sync_pipeline.defs.users.platform import platform_source
from sync_pipeline.defs.x.resources import XResource

X = platform_source("x", "X", XResource)
x_defs = source_defs(X)
defs = x_defs.definitions()
