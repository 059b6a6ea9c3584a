"""timm's own model tests (tests/test_models.py from timm's sdist, unchanged) run against our models only.

`.ci/run` (or `tests/timm_suite/run`) puts that file beside this one. `S2MLP_TIMM_SUITE=per-family` (what
CI sets, to stay within its time) keeps the smallest card of each family: every class and code path,
at the lowest cost; unset, all 14 models run. Every `list_models(...)` the file
parametrizes with answers our 14 models (its name filters still apply; its `module=` filter, which names
timm's own modules, does not), and tests of named timm models are deselected. `pretrained=True` lists are
empty: timm hosts no weights for our models.
"""

import fnmatch
import os

import timm
from timm.models import _registry

import s2mlp_cli.models  # noqa: F401 (registers our models and their cfgs with timm)
from s2mlp_cli import families
from s2mlp_cli.zoo import cards

OURS = sorted(c.name for c in cards().values() if not families.get(c.family).from_timm)
if os.environ.get("S2MLP_TIMM_SUITE") == "per-family":  # CI: the smallest card of each family of ours
    smallest: dict[str, object] = {}
    for c in cards().values():
        if c.name in OURS and (c.family not in smallest or c.params < smallest[c.family].params):
            smallest[c.family] = c
    OURS = sorted(c.name for c in smallest.values())


def _patterns(value) -> list[str]:
    if not value:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def list_models(filter="", module="", pretrained=False, exclude_filters="", name_matches_cfg=False, **_):
    if pretrained:
        return []
    names = OURS
    if keep := _patterns(filter):
        names = [n for n in names if any(fnmatch.fnmatch(n, f) for f in keep)]
    drop = _patterns(exclude_filters)
    return [n for n in names if not any(fnmatch.fnmatch(n, f) for f in drop)]


timm.list_models = _registry.list_models = list_models
timm.list_pretrained = _registry.list_pretrained = lambda *args, **kwargs: []


def pytest_collection_modifyitems(config, items):
    kept, dropped = [], []
    for item in items:
        spec = getattr(item, "callspec", None)
        name = spec.params.get("model_name") if spec else None
        (kept if name in OURS else dropped).append(item)
    items[:] = kept
    config.hook.pytest_deselected(items=dropped)
