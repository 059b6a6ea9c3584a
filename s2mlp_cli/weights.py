"""One checkpoint reader for every family and every on-disk layout, and the strict fit of its tensors to
a model. No model is built here (that is `s2mlp_cli.api`, which calls this with the family's filter).

Reads .safetensors, and .pth / .pth.tar / .bin files as the official training scripts saved them: weights
under `model` or `state_dict`, DDP's `module.` prefix, extra entries (optimizer, epoch, args) ignored.
Pickles are read with `torch.load(weights_only=True)`; the `argparse.Namespace` those scripts store is the
one class allowed beyond tensors, so a file that would run arbitrary code on load is refused.
"""

from __future__ import annotations

import argparse
import pickle
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from s2mlp_cli.errors import WeightsError

# Where training scripts nest the weights, in the order we look (timm's CheckpointSaver, DeiT/GFNet, ...).
_NESTED = ("state_dict", "model", "module", "state_dict_ema", "model_ema")
HEAD = re.compile(r"^head\.")
Filter = Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]]
Suggest = Callable[[dict[str, torch.Tensor], str], list[str]]

_LOAD_LOCK = threading.Lock()  # torch's safe_globals is process-wide: one thread's exit would end another's


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from training-script layouts and DDP prefixes."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path} is a folder; name a weights file in it (.safetensors, .pth, .pth.tar)")
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return _strip_wrappers(dict(load_file(str(path), device="cpu")))
        except (SafetensorError, OSError) as e:
            raise WeightsError(f"{path}: not a readable safetensors file ({e})") from e
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch's zip format, or a pickle
        raise WeightsError(
            f"{path}: not a weights file (neither safetensors nor a PyTorch checkpoint: it starts with "
            f"{head!r})"
        )
    try:
        with _LOAD_LOCK, torch.serialization.safe_globals([argparse.Namespace]):  # a process-wide list
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _first_line(str(e))
        if "GLOBAL" in str(e) or "Unsupported global" in str(e):
            raise WeightsError(
                f"refusing {path}: loading it would run code it names ({reason}); only tensors and "
                "argparse.Namespace are allowed. Convert it with a trusted tool, or use a .safetensors file"
            ) from e
        raise WeightsError(f"{path}: not a checkpoint torch can read ({reason})") from e
    except Exception as e:  # anything else torch's reader raises on a file that is not a checkpoint
        raise WeightsError(f"{path}: not a checkpoint torch can read ({_first_line(str(e))})") from e
    return _unwrap(obj, path)


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file opens with an 8-byte header length and then its JSON header: `{`."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (100 << 20)


_UNSAFE_ADVICE = ("weights_only", "can still be loaded", "Re-running", "trust the source")


def _first_line(text: str) -> str:
    """The useful sentence of torch's reader error: the refused global when there is one; never torch's
    advice to reload with weights_only=False (which would run the file's code)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported global" in line or "Unsupported operand" in line:
            return line.rstrip(".")
    lines = [ln for ln in lines if not any(a in ln for a in _UNSAFE_ADVICE)]
    if not lines:
        return "unknown error"
    first = re.sub(r"\x1b\[[0-9;]*m", "", lines[0]).split(". ")[0].rstrip(".")
    return first[:200]


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(5):  # e.g. {'model': {'state_dict': {'module': ...}}}: a few levels at most
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            if not all(isinstance(k, str) for k in obj):
                keys = ", ".join(map(repr, list(obj)[:4]))
                raise WeightsError(
                    f"{path}: no tensors named as a state dict's are (keys {keys}); not weights"
                )
            return _strip_wrappers(dict(obj))
        nested = next((obj[k] for k in _NESTED if isinstance(obj.get(k), Mapping)), None)
        if nested is None:
            break
        obj = nested
    found = ", ".join(map(str, list(obj)[:6])) if isinstance(obj, Mapping) else type(obj).__name__
    raise WeightsError(f"{path}: found no state dict in it (top-level entries: {found})")


def _strip_wrappers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DistributedDataParallel's `module.` and torch.compile's `_orig_mod.`, when every key has one."""
    for prefix in ("module.", "_orig_mod."):
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


def fit_state_dict(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    source: str,
    *,
    reset_head: bool = False,
    filter_fn: Filter | None = None,
    suggest: Suggest | None = None,
) -> dict[str, torch.Tensor]:
    """`state_dict` converted for `model` (the family's `filter_fn`, a fresh head), or a WeightsError
    naming the misfit (and, from `suggest`, the variants the file would fit).

    Works on a model built on the meta device, so a file can be checked without allocating the model.
    """
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    expected = model.state_dict()
    if reset_head:
        for key in [k for k in state_dict if HEAD.match(k)]:
            if key in expected and state_dict[key].shape != expected[key].shape:
                state_dict[key] = expected[key]
    _check_fit(model, state_dict, expected, source, suggest)
    return state_dict


def _check_fit(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    expected: dict[str, torch.Tensor],
    source: str,
    suggest: Suggest | None,
) -> None:
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [k for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape]
    kinds = [k for k in expected if k in state_dict and _kind(state_dict[k]) != _kind(expected[k])]
    if kinds and not (missing or unexpected or wrong):
        k = kinds[0]
        raise WeightsError(
            f"{source} does not fit: {k} has dtype {state_dict[k].dtype}, the model's {expected[k].dtype}"
            + (f" (+{len(kinds) - 1} more)" if len(kinds) > 1 else "")
            + "; a floating-point model takes floating-point weights"
        )
    if not (missing or unexpected or wrong):
        return
    name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture", type(model).__name__)
    parts = []
    if missing:
        parts.append(f"missing {missing[0]}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
    if unexpected:
        parts.append(
            f"unexpected {unexpected[0]}" + (f" (+{len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
        )
    if wrong:
        k = wrong[0]
        parts.append(f"shape of {k} is {tuple(state_dict[k].shape)}, the model's {tuple(expected[k].shape)}")
    message = f"{source} does not fit {name}: {'; '.join(parts)}"
    if wrong and all(HEAD.match(k) for k in wrong) and not (missing or unexpected):
        k = wrong[0]
        raise WeightsError(
            f"{source} has a head for {state_dict[k].shape[0]} classes; {name} has {expected[k].shape[0]}",
            next_step="other_classes",
            advice="load it with reset_head=True to keep the model's own head",
        )
    if suggest is not None and (fits := suggest(state_dict, name)):
        message += f"; it looks like a checkpoint of {', '.join(fits)}"
    raise WeightsError(message)


def _kind(t: torch.Tensor) -> str:
    """What a loaded value may be cast from: floating point from any float width (fp16, bf16, fp64 are
    fine); integers, booleans and complex numbers only from their own kind."""
    if t.is_complex():
        return "complex"
    if t.is_floating_point():
        return "float"
    return "bool" if t.dtype == torch.bool else "int"


# --- writing -------------------------------------------------------------------------------------------


def save_safetensors(
    path: str | Path, state_dict: Mapping[str, torch.Tensor], metadata: dict[str, str]
) -> None:
    """`state_dict` as a .safetensors file, the same bytes for the same tensors and metadata: safetensors
    writes its metadata map's keys in no fixed order, so the header is written again with them sorted.
    The caller makes `path` atomic (`files.atomic_path`)."""
    import json

    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    raw = save(tensors, metadata=dict(metadata))
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    ordered = {"__metadata__": dict(sorted(header.pop("__metadata__", {}).items()))}
    ordered.update(sorted(header.items()))
    text = json.dumps(ordered, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data that follows starts 8-aligned, as safetensors writes it
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        f.write(raw[8 + size :])
