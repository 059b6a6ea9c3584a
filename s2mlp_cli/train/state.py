"""What a run keeps in its output folder, each file written atomically:

- `.s2mlp-train`: the mark that says s2mlp made the folder (and for which variant);
- `last.safetensors` / `best.safetensors`: weights, loadable by `s2mlp eval --weights` and `push --weights`;
- `state.pt`: everything `--resume` needs (weights, EMA, optimizer, scheduler, scaler, epoch, the next
  step, the best so far, RNG states), read back with `torch.load(weights_only=True)`;
- `log.jsonl`: one line per epoch; `recipe.yaml`: the resolved recipe with every value's source;
- `curves.png` with `--plot`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from s2mlp_cli.errors import S2MLPError
from s2mlp_cli.files import atomic_path, write_text_atomic
from s2mlp_cli.train.request import MARK, STATE

FORMAT = "s2mlp-train-state"
VERSION = 1


def mark(output: Path, variant: str) -> None:
    output.mkdir(parents=True, exist_ok=True)
    if not (output / MARK).exists():
        write_text_atomic(output / MARK, json.dumps({"format": "s2mlp-train-run", "variant": variant}) + "\n")


def save_weights(path: Path, state_dict: dict[str, Any], metadata: dict[str, str]) -> None:
    from s2mlp_cli.weights import save_safetensors

    with atomic_path(path) as tmp:
        save_safetensors(tmp, state_dict, metadata)


def save_state(output: Path, state: dict[str, Any]) -> None:
    import torch

    with atomic_path(output / STATE) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **state, "rng": rng_states()}, tmp)


def load_state(output: Path) -> dict[str, Any]:
    """The saved state, or an S2MLPError saying why it cannot be resumed."""
    import pickle

    import torch

    path = output / STATE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        why = getattr(e, "strerror", None) or str(e).splitlines()[0]
        raise S2MLPError(f"{path}: cannot read the training state ({why})", param="output") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise S2MLPError(f"{path} is not a training state s2mlp wrote", param="output")
    if state.get("version") != VERSION:
        raise S2MLPError(f"{path}: state version {state.get('version')}, this s2mlp reads {VERSION}")
    return state


def check_state(
    saved: dict[str, Any], model: Any, ema: Any, recipe: dict[str, Any], steps: int, path: Path
) -> None:
    """A saved state is evidence, not an instruction: before a resume uses it, its weights must be the
    model's (names, shapes, dtypes, finite), its counters within the run, its recipe the run's; one
    line on the first mismatch."""
    import torch

    def bad(what: str) -> S2MLPError:
        return S2MLPError(
            f"{path}: {what}; it cannot be resumed (start a new run, or remove --resume)", param="output"
        )

    for key in (
        "model",
        "optimizer",
        "scheduler",
        "epoch",
        "step",
        "seconds",
        "loss_sum",
        "loss_steps",
        "best",
        "rng",
    ):
        if key not in saved:
            raise bad(f"no {key} in the state")
    if saved.get("recipe") is not None and saved["recipe"] != recipe:
        changed = sorted(
            k for k in set(saved["recipe"]) | set(recipe) if saved["recipe"].get(k) != recipe.get(k)
        )
        raise bad(f"it was saved with another recipe ({', '.join(changed[:4])} differ)")
    epoch, step = saved["epoch"], saved["step"]
    counters = all(isinstance(v, int) and not isinstance(v, bool) for v in (epoch, step, saved["loss_steps"]))
    # step == steps: stopped after an epoch's last step, before its validation (which a resume runs)
    done = counters and epoch == recipe["epochs"] and step != 0
    if not counters or not 0 <= epoch <= recipe["epochs"] or not 0 <= step <= steps or done:
        raise bad(f"its counters are off (epoch {epoch!r} of {recipe['epochs']}, step {step!r} of {steps})")
    for name, mine, theirs in (("model", model, saved["model"]), ("EMA", ema, saved.get("ema"))):
        if mine is None:
            continue
        if not isinstance(theirs, dict):
            raise bad(f"no {name} weights in the state")
        ours = mine.state_dict()
        if set(theirs) != set(ours):
            extra = sorted(set(theirs) ^ set(ours))
            raise bad(
                f"its {name} weights are another model's ({len(extra)} tensor names differ: {extra[0]})"
            )
        for key, t in theirs.items():
            if not isinstance(t, torch.Tensor) or t.shape != ours[key].shape or t.dtype != ours[key].dtype:
                raise bad(f"its {name} tensor {key} does not fit the model")
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise bad(f"its {name} tensor {key} holds NaN or infinity")


def rng_states() -> dict[str, Any]:
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def read_log(output: Path, before_epoch: int) -> list[dict[str, Any]]:
    """The log's epochs before `before_epoch` (a resumed run rewrites what came after)."""
    path = output / "log.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash of an older version: the state is what counts
        if isinstance(row, dict) and isinstance(row.get("epoch"), int) and row["epoch"] < before_epoch:
            rows.append(row)
    return rows


def write_log(output: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(output / "log.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def draw_curves(output: Path, rows: list[dict[str, Any]], title: str) -> Path:
    """Training loss and validation top-1 (model and EMA) by epoch, as `curves.png`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [r["epoch"] + 1 for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [r["train_loss"] for r in rows], marker="o", label="training loss")
    left.set(xlabel="epoch", ylabel="loss", title="training loss")
    right.plot(epochs, [r["val"]["top1"] for r in rows], marker="o", label="model")
    if any(r.get("ema_val") for r in rows):
        right.plot(epochs, [(r.get("ema_val") or {}).get("top1") for r in rows], marker="s", label="EMA")
    right.set(xlabel="epoch", ylabel="top-1 (%)", title="validation top-1")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path = output / "curves.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
