"""Where weights come from: choose a source (`choice`), download it (`download`), verify it and hand back
the path (`resolve`), and our local store of imports and remembered sources (`store`).

Returns verified file paths and imports no torch: reading a file into a model is `s2mlp_cli.api`'s.
"""

from s2mlp_cli.sources.choice import Choice, Source, cached_path, choose, hub_source, precheck, status
from s2mlp_cli.sources.download import check_reachable, quiet_hub_logger, reason
from s2mlp_cli.sources.places import REPO_ID, endpoint, hub_cache, offline
from s2mlp_cli.sources.resolve import resolve
from s2mlp_cli.sources.store import Pulled, remember

__all__ = [
    "REPO_ID",
    "Choice",
    "Pulled",
    "Source",
    "cached_path",
    "check_reachable",
    "choose",
    "endpoint",
    "hub_cache",
    "hub_source",
    "offline",
    "precheck",
    "quiet_hub_logger",
    "reason",
    "remember",
    "resolve",
    "status",
]
