"""Publishing weights: one Hub commit that others can pull, evaluate and load with timm.

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
import math
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2mlp_cli import hub, report
from s2mlp_cli.errors import ProblemsError, S2MLPError
from s2mlp_cli.zoo import Card, get_card

WEIGHTS_FILE = "model.safetensors"
# a branch name git accepts (not a commit: one pushes to a branch); repository ids follow hub.REPO_ID
_BRANCH = re.compile(r"^(?!.*\.\.)(?!.*//)[A-Za-z0-9][\w./-]{0,99}$")


class PushError(S2MLPError):
    """A push that could not be made; nothing was committed."""


@dataclass(frozen=True)
class PushOptions:
    variant: str
    weights: str | Path
    repo: str
    revision: str | None = None  # a branch; created from main when missing
    private: bool = False  # for a repository that does not exist yet
    eval_result: str | Path | None = None  # `s2mlp eval --output X.json`
    bench_result: str | Path | None = None  # `s2mlp bench --output X.json`
    progress: bool = True


@dataclass(frozen=True)
class Evidence:
    """The rows of the given result files that are about the pushed variant, with their conditions."""

    eval_rows: list[dict[str, Any]]
    eval_env: dict[str, Any]
    bench_rows: list[dict[str, Any]]
    bench_env: dict[str, Any]


def check(opts: PushOptions) -> tuple[Card, Evidence]:
    """Everything wrong with the request, before any weights are read or the network is asked (no torch)."""
    card = get_card(opts.variant)
    problems: list[S2MLPError] = []
    if not Path(opts.weights).expanduser().is_file():
        problems.append(S2MLPError(f"{opts.weights}: no such file", param="weights"))
    if not hub.REPO_ID.match(opts.repo or ""):
        problems.append(
            S2MLPError(f"expected OWNER/NAME (letters, digits, - _ .), got {opts.repo!r}", param="repo")
        )
    if opts.revision is not None and (hub.HEX40.match(opts.revision) or not _BRANCH.match(opts.revision)):
        problems.append(
            S2MLPError(f"expected a branch name to commit to, got {opts.revision!r}", param="revision")
        )
    eval_doc = _result(opts.eval_result, "eval_result", card, problems)
    bench_doc = _result(opts.bench_result, "bench_result", card, problems)
    if problems:
        raise ProblemsError(problems)
    evidence = Evidence(
        eval_rows=_rows(eval_doc, card),
        eval_env=(eval_doc or {}).get("env", {}),
        bench_rows=_rows(bench_doc, card),
        bench_env=(bench_doc or {}).get("env", {}),
    )
    return card, evidence


def _result(path: str | Path | None, param: str, card: Card, problems: list[S2MLPError]) -> dict | None:
    """A result file written by `s2mlp eval/bench --output X.json`, with an ok row for the variant."""
    if path is None:
        return None
    try:
        doc = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except OSError as e:
        problems.append(S2MLPError(f"{path}: cannot read it ({e.strerror})", param=param))
        return None
    except ValueError:
        problems.append(S2MLPError(f"{path}: not JSON (write it with --output FILE.json)", param=param))
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list) or "env" not in doc:
        problems.append(S2MLPError(f"{path}: not an s2mlp result file (no env and results)", param=param))
        return None
    if doc.get("partial"):
        problems.append(S2MLPError(f"{path}: an interrupted run; give a complete one", param=param))
        return None
    if not _rows(doc, card):
        problems.append(S2MLPError(f"{path}: has no finished result for {card.name}", param=param))
        return None
    return doc


def _rows(doc: dict | None, card: Card) -> list[dict[str, Any]]:
    if doc is None:
        return []
    return [
        r
        for r in doc["results"]
        if isinstance(r, dict) and r.get("model") == card.name and r.get("status", "ok") == "ok"
    ]


def push(opts: PushOptions) -> dict[str, Any]:
    """Commit the variant's weights, config and model card to `opts.repo`; returns what was committed."""
    card, evidence = check(opts)
    token = _token()
    source = Path(opts.weights).expanduser()
    state_dict = _state_dict(card, source)
    with tempfile.TemporaryDirectory(prefix="s2mlp-push-") as tmp:
        weights_path = Path(tmp) / WEIGHTS_FILE
        _save(state_dict, weights_path, card)
        sha = hub.file_sha256(weights_path)
        _check_evidence(evidence, {sha, hub.file_sha256(source)})
        config = config_json(card)
        readme = model_card(card, opts.repo, sha, evidence)
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


def _state_dict(card: Card, path: Path) -> dict:
    """The file's tensors as the variant's state dict; refused when it does not load strictly or holds
    non-finite values (a diverged run should not be published)."""
    import torch

    from s2mlp_cli.weights import check_fits

    state_dict = check_fits(card, path, path.name)
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise PushError(
            f"{path}: {len(bad)} tensor(s) hold NaN or infinity (first: {bad[0]}); not publishing them"
        )
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}


def _save(state_dict: dict, path: Path, card: Card) -> None:
    from safetensors.torch import save_file

    save_file(state_dict, str(path), metadata={"format": "pt", "variant": card.name, "family": card.family})


def _check_evidence(evidence: Evidence, ours: set[str]) -> None:
    """An eval result made with other weights says nothing about these."""
    for row in evidence.eval_rows:
        used = row.get("weights_sha256")
        if used and used not in ours:
            raise PushError(
                f"the eval result for {row['model']} was made with other weights (sha256 {used[:16]}…): "
                "evaluate the file you push (`s2mlp eval --weights FILE --output X.json`)",
                param="eval_result",
            )


# --- the files -------------------------------------------------------------------------------------


def config_json(card: Card) -> dict[str, Any]:
    """timm's Hub config: `timm.create_model("hf-hub:...")` builds `architecture` with this data config."""
    p = card.preprocess
    return {
        "architecture": card.name,
        "num_classes": card.arch.get("num_classes", 1000),
        "pretrained_cfg": {
            "tag": "s2mlp",
            "input_size": [3, p.input_size, p.input_size],
            "fixed_input_size": card.family in ("vip", "gfnet", "gfnet_pyramid"),
            "interpolation": p.interpolation,
            "crop_pct": p.crop_pct,
            "crop_mode": "center",
            "mean": list(p.mean),
            "std": list(p.std),
            "num_classes": card.arch.get("num_classes", 1000),
            "license": None,
        },
    }


def model_card(card: Card, repo: str, sha256: str, evidence: Evidence) -> str:
    """The repository's README.md: what the file is, and only the measurements the result files show."""
    p = card.preprocess
    paper = card.paper
    lines = [
        "---",
        "library_name: timm",
        "tags:",
        "- image-classification",
        "- timm",
        "- s2mlp",
        f"- {card.family}",
        "---",
        "",
        f"# {card.name}",
        "",
        f"{card.description}. Weights pushed with `s2mlp push`.",
        "",
        "| | |",
        "|---|---|",
        f"| variant | `{card.name}` (family `{card.family}`) |",
        f"| paper | {paper['title']}" + (f" ({paper['arxiv']})" if paper.get("arxiv") else "") + " |",
        f"| params | {card.params:,} ({card.params / 1e6:.2f} M) |",
        f"| GMACs | {card.gmacs:.2f} (1×3×{p.input_size}×{p.input_size}) |",
        f"| weights | `{WEIGHTS_FILE}`, sha256 `{sha256}` |",
        f"| eval transform | resize {p.resize} {p.interpolation}, centre crop {p.input_size} (crop_pct "
        f"{p.crop_pct}), mean {list(p.mean)}, std {list(p.std)} |",
        f"| transform source | {card.sources.get('preprocess', 'not stated')} |",
        "",
        "## Use",
        "",
        "```",
        f"s2mlp pull {card.name} --repo {repo}",
        f"s2mlp eval --variant {card.name} --data /imagenet/val",
        "```",
        "",
        "```python",
        "import timm",
        "import s2mlp_cli.models  # registers the architecture with timm",
        "",
        f'model = timm.create_model("hf-hub:{repo}", pretrained=True).eval()',
        "```",
        "",
    ]
    lines += _eval_section(evidence) + _bench_section(evidence)
    if not evidence.eval_rows and not evidence.bench_rows:
        lines += ["No evaluation or benchmark results were published with these weights.", ""]
    return "\n".join(lines)


def _eval_section(evidence: Evidence) -> list[str]:
    if not evidence.eval_rows:
        return []
    env = evidence.eval_env
    columns: list[report.Column] = [
        ("model", lambda r: r["model"]),
        ("top-1", lambda r: _cell(r.get("top1"), ".3f")),
        ("top-5", lambda r: _cell(r.get("top5"), ".3f")),
        ("loss", lambda r: _cell(r.get("loss"), ".5f")),
        ("images", lambda r: _cell(r.get("images"), ",")),
        ("skipped", lambda r: _cell(r.get("skipped"), "d")),
        ("set", lambda r: r.get("set") or "-"),
        ("device", lambda r: _device(env)),
        ("dtype", lambda r: r.get("dtype") or env.get("dtype") or "-"),
        ("date", lambda r: env.get("date") or "not recorded"),
    ]
    lines = ["## Evaluation", "", "From the `s2mlp eval` result file given at push time.", ""]
    lines += report.markdown_table(columns, evidence.eval_rows)
    sha = {r.get("weights_sha256") for r in evidence.eval_rows} - {None}
    lines += [
        "",
        f"Weights evaluated: sha256 `{sha.pop()}`." if len(sha) == 1 else "Weights' sha256 not recorded.",
        "",
    ]
    return lines


def _bench_section(evidence: Evidence) -> list[str]:
    if not evidence.bench_rows:
        return []
    env = evidence.bench_env

    def iqr(r: dict[str, Any]) -> str:
        low, high = r.get("throughput_iqr") or [None, None]
        return f"{_cell(low, '.1f')}–{_cell(high, '.1f')}"

    columns: list[report.Column] = [
        ("model", lambda r: r["model"]),
        ("batch", lambda r: _cell(r.get("batch_size"), "d")),
        ("images/s", lambda r: _cell(r.get("throughput"), ".1f")),
        ("IQR", iqr),
        ("ms bs1 p50", lambda r: _cell((r.get("latency_bs1_ms") or {}).get("p50"), ".2f")),
        ("peak MiB", lambda r: _cell(r.get("peak_memory_mib"), ".0f")),
        ("device", lambda r: _device(env)),
        ("dtype", lambda r: env.get("dtype") or "-"),
        ("date", lambda r: env.get("date") or "not recorded"),
    ]
    lines = ["## Speed", "", "From the `s2mlp bench` result file given at push time.", ""]
    return lines + report.markdown_table(columns, evidence.bench_rows) + [""]


def _cell(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _device(env: dict[str, Any]) -> str:
    name = env.get("device_name")
    return f"{name} ({env.get('device')})" if name else str(env.get("device") or "-")


# --- the commit --------------------------------------------------------------------------------------


def _commit(opts: PushOptions, token: str, card: Card, weights: Path, config: dict, readme: str) -> Any:
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    url = hub.endpoint()
    hub.check_reachable(url)
    api = HfApi(endpoint=url, token=token)
    operations = [
        CommitOperationAdd(WEIGHTS_FILE, str(weights)),
        CommitOperationAdd("config.json", (json.dumps(config, indent=2) + "\n").encode()),
        CommitOperationAdd("README.md", readme.encode()),
    ]
    try:
        with hub.quiet_hub_logger(), _upload_bars(opts.progress and sys.stderr.isatty()):
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
            f"the Hub at {url} refused the push to {opts.repo}: {hub.reason(e)}; nothing was committed"
        ) from e
    except Exception as e:  # transport errors after the client's retries
        raise PushError(
            f"pushing to {opts.repo} failed ({type(e).__name__}: {hub.reason(e)}); a commit is all or "
            "nothing, so run it again"
        ) from e


def _refuse_other_model(api: Any, opts: PushOptions, card: Card) -> None:
    """A repository that already holds another model is not overwritten."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

    for revision in dict.fromkeys([opts.revision or "main", "main"]):
        try:
            with tempfile.TemporaryDirectory(prefix="s2mlp-push-") as tmp:
                path = hf_hub_download(
                    opts.repo,
                    "config.json",
                    revision=revision,
                    cache_dir=tmp,
                    endpoint=api.endpoint,
                    token=api.token,
                )
                config = json.loads(Path(path).read_text(encoding="utf-8"))
        except RevisionNotFoundError:
            continue  # a new branch: made from main, checked next
        except EntryNotFoundError:
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
