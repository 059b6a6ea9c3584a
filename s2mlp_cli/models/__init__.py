"""timm's face of the zoo: importing this package registers every card of our own families with timm's
model registry, so `timm.create_model("s2mlpv2_small")` works after `import s2mlp_cli.models`, and
`pretrained=True` (also for `hf-hub:OWNER/NAME`) loads verified weights through `s2mlp_cli.api`.

It sits on top of the library: `api` below it resolves, verifies and loads weights; `arch` builds nets.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from torch import nn

from s2mlp_cli import api, arch
from s2mlp_cli.zoo import Card, cards


def _hub_id(cfg: Any) -> str | None:
    """The Hub repository timm read a config from (`hf-hub:` names), from the cfg timm passes on."""
    if cfg is None or isinstance(cfg, str):
        return None
    get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k, None)
    return get("hf_hub_id") if get("source") == "hf-hub" else None


def _entrypoint(card: Card):
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        """`hub_id` ("OWNER/NAME[@REV]") is the repository of `timm.create_model("hf-hub:OWNER/NAME")`;
        without it the variant's own source is used (what `s2mlp pull` chose, else the card's)."""
        hub_id = _hub_id(kwargs.get("pretrained_cfg"))
        wants_features = kwargs.pop("features_only", False)
        out_indices = kwargs.pop("out_indices", None)
        feature_cls = kwargs.pop("feature_cls", "getter")
        if wants_features and str(feature_cls).lower() != "getter":
            raise ValueError(f"{card.name} supports features_only with feature_cls='getter' only")
        model = arch.create(card, **kwargs)
        if pretrained:
            repo, _, revision = (hub_id or "").partition("@")
            api.load_pretrained(model, card, repo=repo or None, revision=revision or None)
        return arch.features_only(model, out_indices) if wants_features else model

    entrypoint.__name__ = entrypoint.__qualname__ = card.name
    entrypoint.__doc__ = card.description
    return entrypoint


def _verified_config(model_id: str, filename: str, *args: Any, **kwargs: Any) -> str:
    """timm's `download_from_hf` for `hf-hub:` names, made safe: the file is read into memory through our
    one-HEAD fetch (ETag checked as plain hex, bytes verified), then written by us under
    `S2MLP_HOME/hub-configs`; huggingface_hub's client never names a file on disk. Offline, the copy
    verified last time is used."""
    from s2mlp_cli import sources
    from s2mlp_cli.errors import HubError
    from s2mlp_cli.files import s2mlp_home, write_text_atomic
    from s2mlp_cli.sources.choice import check_names
    from s2mlp_cli.sources.download import fetch_small

    repo, _, revision = model_id.partition("@")
    check_names(repo, revision or None, filename)
    target = s2mlp_home() / "hub-configs" / repo.replace("/", "--") / (revision or "main") / filename
    if sources.offline():
        if target.is_file():
            return str(target)
        raise HubError(f"hf-hub:{model_id}: {filename} is not here and HF_HUB_OFFLINE is set")
    data = fetch_small(sources.Source(repo, filename, revision or None))
    write_text_atomic(target, data.decode("utf-8"))
    return str(target)


def _ours(model_id: str) -> bool:
    """Whether an `hf-hub:` repository is one s2mlp knows for a card: the card's own, or one `s2mlp pull
    --repo` recorded as a variant's source."""
    from s2mlp_cli.sources.choice import read_record

    repo = model_id.partition("@")[0]
    known = {c.weights.repo for c in cards().values() if c.weights.repo}
    known |= {r.get("repo") for r in map(read_record, cards().values()) if r.get("kind") == "hub"}
    return repo in known


def _guard_timm_hub() -> None:
    """Route timm's Hub config fetch (`hf-hub:` names) through `_verified_config` for our cards'
    repositories only; every other `hf-hub:` model goes through timm's own download, untouched."""
    try:
        from timm.models import _hub
    except ImportError:
        return
    timms = getattr(_hub, "download_from_hf", None)
    if timms is None or getattr(timms, "s2mlp_guard", False):
        return

    def download_from_hf(model_id: str, filename: str, *args: Any, **kwargs: Any) -> Any:
        if _ours(model_id):
            return _verified_config(model_id, filename, *args, **kwargs)
        return download_from_hf.timm(model_id, filename, *args, **kwargs)  # type: ignore[attr-defined]

    download_from_hf.s2mlp_guard = True  # type: ignore[attr-defined]
    download_from_hf.timm = timms  # type: ignore[attr-defined]
    _hub.download_from_hf = download_from_hf


def register() -> None:
    """One timm entrypoint and default cfg per card of our own families, named as the card. Runs at import;
    call it again after pointing `S2MLP_ZOO` at other cards to register the new ones."""
    import timm
    from timm.models import PretrainedCfg, generate_default_cfgs, register_model

    module = sys.modules[__name__]
    fields = {f.name for f in dataclasses.fields(PretrainedCfg)}
    module.default_cfgs = getattr(module, "default_cfgs", {})  # where register_model looks for cfgs
    for card in cards().values():
        if card.family_facts.from_timm or timm.is_model(card.name):
            continue
        entrypoint = _entrypoint(card)
        entrypoint.__module__ = module.__name__
        setattr(module, card.name, entrypoint)
        cfg = arch.pretrained_cfg(card, card.preprocess.input_size, card.arch.get("num_classes", 1000))
        module.default_cfgs.update(
            generate_default_cfgs({card.name: {k: v for k, v in cfg.items() if k in fields}})
        )
        register_model(entrypoint)


register()
_guard_timm_hub()
