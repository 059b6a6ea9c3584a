"""`push(PushOptions(...))`: one Hub commit that others can pull, evaluate and load with timm.

`push` checks that a checkpoint loads strictly into its variant (the safe loader), writes it as
safetensors, and commits three files to a Hub repository in one commit (all or nothing):
- `model.safetensors`: the weights, keyed as the variant's state dict;
- `config.json`: timm's Hub config (architecture, num_classes, pretrained_cfg with the card's eval
  transform), so `timm.create_model("hf-hub:OWNER/NAME", pretrained=True)` works after
  `import s2mlp_cli.models`;
- `README.md`: a model card that states the variant, paper, counts, preprocessing and the file's
  sha256, and the eval / bench tables only from result files the caller gives, with their conditions.

Then it reports the commit hash and sha256: the pin a zoo card needs (`weights.revision`, `weights.sha256`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from s2mlp_cli import sources
from s2mlp_cli.classes import metadata, of_file
from s2mlp_cli.errors import PushError
from s2mlp_cli.files import file_sha256, scratch
from s2mlp_cli.publish.card import WEIGHTS_FILE, config_json, model_card
from s2mlp_cli.publish.request import Evidence, PushOptions, check
from s2mlp_cli.zoo import Card


def push(opts: PushOptions) -> dict[str, Any]:
    """Commit the variant's weights, config and model card to `opts.repo`; returns what was committed."""
    card, evidence = check(opts)
    token = _token()
    source = Path(opts.weights).expanduser()
    own = of_file(source)  # a run's own classes travel with the weights, in their metadata
    state_dict = _state_dict(card, source, None if own is None else len(own))
    with scratch("push") as tmp:  # under S2MLP_HOME: removed on any exit, swept after a kill
        weights_path = tmp / WEIGHTS_FILE
        _save(state_dict, weights_path, card, None if own is None else metadata(own, len(own)))
        sha = file_sha256(weights_path)
        _check_evidence(evidence, {sha, file_sha256(source)})
        config = config_json(card, own)
        readme = model_card(card, opts.repo, sha, evidence, own)
        commit = _commit(opts, token, card, weights_path, config, readme)
        size = weights_path.stat().st_size
    return {
        "variant": card.name,
        "repo": opts.repo,
        "revision": opts.revision or "main",
        "commit": commit.oid,
        "commit_url": commit.commit_url,
        "sha256": sha,
        "size": size,
        "files": [WEIGHTS_FILE, "config.json", "README.md"],
        "pin": {"repo": opts.repo, "filename": WEIGHTS_FILE, "revision": commit.oid, "sha256": sha},
    }


def _token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise PushError(
            "no Hugging Face token: set HF_TOKEN to a token with write access, or log in with `hf auth login`"
        )
    return token


def _state_dict(card: Card, path: Path, num_classes: int | None) -> dict:
    """The file's tensors as the variant's state dict; refused when it does not load strictly or holds
    non-finite values (a diverged run should not be published)."""
    import torch

    from s2mlp_cli.api import check_fits

    state_dict = check_fits(card, path, path.name, num_classes)
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise PushError(
            f"{path}: {len(bad)} tensor(s) hold NaN or infinity (first: {bad[0]}); not publishing them"
        )
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}


def _save(state_dict: dict, path: Path, card: Card, metadata: dict[str, str] | None = None) -> None:
    from s2mlp_cli.weights import save_safetensors

    save_safetensors(path, state_dict, {"format": "pt", **(metadata or {})})


def _check_evidence(evidence: Evidence, ours: set[str]) -> None:
    """An eval result made with other weights says nothing about these."""
    for row in evidence.eval_rows:
        used = row.get("weights_sha256")
        if used and used not in ours:
            raise PushError(
                f"the eval result for {row['model']} was made with other weights (sha256 {used[:16]}…)",
                param="eval_result",
                next_step="eval_pushed",
                advice="evaluate the file you push and give that result",
            )


def _commit(opts: PushOptions, token: str, card: Card, weights: Path, config: dict, readme: str) -> Any:
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    url = sources.endpoint()
    sources.check_reachable(url)
    api = HfApi(endpoint=url, token=token)
    operations = [
        CommitOperationAdd(WEIGHTS_FILE, str(weights)),
        CommitOperationAdd("config.json", (json.dumps(config, indent=2) + "\n").encode()),
        CommitOperationAdd("README.md", readme.encode()),
    ]
    try:
        with sources.quiet_hub_logger(), _upload_bars(opts.progress and sys.stderr.isatty()):
            if not api.repo_exists(opts.repo):  # create_repo's own fallback misparses non-Hub endpoints
                api.create_repo(opts.repo, private=opts.private, exist_ok=True)
            _refuse_other_model(api, opts, card)
            if opts.revision and opts.revision != "main":
                api.create_branch(opts.repo, branch=opts.revision, exist_ok=True)
            return api.create_commit(
                opts.repo,
                operations,
                commit_message=f"{card.name} weights (s2mlp push)",
                revision=opts.revision,
            )
    except PushError:
        raise
    except (RepositoryNotFoundError, HfHubHTTPError) as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status == 401:
            raise PushError(
                f"the Hub at {url} refused the token (HTTP 401): set HF_TOKEN to a valid token or run "
                "`hf auth login`"
            ) from e
        if status == 403 or isinstance(e, RepositoryNotFoundError):
            raise PushError(
                f"no write access to {opts.repo} with this token: push to your own namespace or an "
                "organisation you can write to, with a token that has write scope"
            ) from e
        raise PushError(
            f"the Hub at {url} refused the push to {opts.repo}: {sources.reason(e)}; nothing was committed"
        ) from e
    except Exception as e:  # transport errors after the client's retries
        raise PushError(
            f"pushing to {opts.repo} failed ({type(e).__name__}: {sources.reason(e)}); a commit is all or "
            "nothing, so run it again"
        ) from e


def _refuse_other_model(api: Any, opts: PushOptions, card: Card) -> None:
    """A repository that already holds another model is not overwritten."""
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

    from s2mlp_cli.errors import HubError
    from s2mlp_cli.sources.download import fetch_small

    for revision in dict.fromkeys([opts.revision or "main", "main"]):
        try:  # read into memory, verified against its ETag: nothing the server names is written
            config = json.loads(fetch_small(sources.Source(opts.repo, "config.json", revision)))
        except HubError as e:
            if isinstance(e.__cause__, RevisionNotFoundError):
                continue  # a new branch: made from main, checked next
            if not isinstance(e.__cause__, EntryNotFoundError):
                raise PushError(f"cannot read {opts.repo}'s config.json: {e}") from e
            if any(api.file_exists(opts.repo, f, revision=revision) for f in _MODEL_FILES):
                raise PushError(
                    f"{opts.repo} already holds a model with no config.json naming its architecture; push "
                    f"{card.name} to a new repository"
                ) from None
            return
        except ValueError:
            config = {}
        architecture = config.get("architecture") if isinstance(config, dict) else None
        if architecture != card.name:
            raise PushError(
                f"{opts.repo} already holds another model ({architecture or 'unknown architecture'}); push "
                f"{card.name} to a new repository"
            )
        return


_MODEL_FILES = (WEIGHTS_FILE, "pytorch_model.bin", "model.pth")


@contextmanager
def _upload_bars(show: bool) -> Iterator[None]:
    """huggingface_hub's upload bars on a terminal; nothing on a pipe or with --json."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not show:
        disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()
