"""Training recipes: YAML files whose every value says where it comes from. `paper` (shipped in
`s2mlp_cli/recipes/`) is the S²-MLPv2 paper's; a file of your own may set any subset of keys, and the
rest come from `paper`. Overrides (`KEY=VALUE`) replace single values and are checked like the file.

The learning rate a recipe states is for `lr_batch` images per step; another global batch scales it
linearly (and the resolved recipe says so). A learning rate given as an override is used as it is.
No torch here."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from s2mlp_cli import schema
from s2mlp_cli.errors import S2MLPError

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
BUILT_IN = "paper"

# key -> (kind, what it is); kind is one of: int, float, str, bool, pair, optional-str
KEYS: dict[str, tuple[str, str]] = {
    "epochs": ("int", "epochs to train"),
    "batch_size": ("int", "global batch: images per optimizer step over all processes"),
    "opt": ("str", "optimizer, as timm's create_optimizer_v2 names it"),
    "lr": ("float", "peak learning rate at lr_batch images per step"),
    "lr_batch": ("int", "the global batch `lr` is stated for"),
    "weight_decay": ("float", "decoupled weight decay (none on norms, biases and no_weight_decay)"),
    "sched": ("str", "schedule, as timm's create_scheduler_v2 names it"),
    "min_lr": ("float", "learning rate at the end of the schedule"),
    "warmup_epochs": ("int", "linear warm-up epochs"),
    "warmup_lr": ("float", "learning rate at the start of the warm-up"),
    "auto_augment": ("optional-str", "timm auto-augment policy, or none"),
    "color_jitter": ("float", "colour jitter strength"),
    "train_interpolation": ("str", "resize filter for training crops (random: bilinear or bicubic)"),
    "scale": ("pair", "random-resized-crop area range"),
    "ratio": ("pair", "random-resized-crop aspect range"),
    "hflip": ("float", "horizontal flip probability"),
    "reprob": ("float", "random erasing probability"),
    "remode": ("str", "random erasing fill: const, rand or pixel"),
    "recount": ("int", "random erasing regions per image"),
    "mixup": ("float", "Mixup alpha (0: off)"),
    "cutmix": ("float", "CutMix alpha (0: off)"),
    "mixup_prob": ("float", "probability of mixing a batch"),
    "mixup_switch_prob": ("float", "probability of CutMix instead of Mixup when both are on"),
    "mixup_mode": ("str", "mix per batch, pair or elem"),
    "smoothing": ("float", "label smoothing"),
    "drop_path": ("float", "stochastic depth rate"),
    "ema": ("bool", "keep an exponential moving average of the weights, and validate it"),
    "ema_decay": ("float", "EMA decay per step"),
    "seed": ("int", "seed of the order and every augmentation"),
}
CHOICES = {
    "remode": ("const", "rand", "pixel"),
    "mixup_mode": ("batch", "pair", "elem"),
    "train_interpolation": ("random", "bilinear", "bicubic", "nearest"),
}
UNIT = {  # values that must lie in [0, 1]
    "hflip", "reprob", "mixup_prob", "mixup_switch_prob", "smoothing", "drop_path", "ema_decay",
}  # fmt: skip
POSITIVE = {"epochs", "batch_size", "lr", "lr_batch", "recount"}


@dataclass(frozen=True)
class Recipe:
    """Resolved values, each with its source; `lr` already scaled to `batch_size`."""

    name: str
    values: dict[str, Any]
    sources: dict[str, str]
    notes: tuple[str, ...] = field(default=())  # what was changed to fit the request, and why

    def __getattr__(self, key: str) -> Any:
        try:
            return self.values[key]
        except KeyError:
            raise AttributeError(key) from None

    def to_yaml(self) -> str:
        """The resolved recipe (`resolved: true`: its lr is already scaled), as a run folder keeps it."""
        body = {k: {"value": self.values[k], "source": self.sources[k]} for k in KEYS}
        doc = {"name": self.name, "resolved": True, "values": body}
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)

    def mixing(self) -> bool:
        return self.mixup_prob > 0 and (self.mixup > 0 or self.cutmix > 0)


def load(recipe: str | Path, overrides: Mapping[str, str] | Sequence[str] = ()) -> Recipe:
    """The recipe by name (`paper`) or path, with overrides; every problem in one S2MLPError list
    (ProblemsError), each naming `recipe` or `overrides`."""
    from s2mlp_cli.errors import ProblemsError

    problems: list[S2MLPError] = []
    recipe = load_problems(recipe, overrides, problems)
    if problems:
        raise ProblemsError(problems)
    assert recipe is not None
    return recipe


def load_problems(
    recipe: str | Path, overrides: Mapping[str, str] | Sequence[str], problems: list[S2MLPError]
) -> Recipe | None:
    """`load`, with its problems appended to `problems` (None when there are any)."""
    base = _read(RECIPES / f"{BUILT_IN}.yaml", "recipe")
    values = {k: v["value"] for k, v in base["values"].items()}
    sources = {k: f"{BUILT_IN}: {v['source']}" for k, v in base["values"].items()}
    name, resolved = BUILT_IN, False
    before = len(problems)
    if str(recipe) != BUILT_IN:
        path = Path(recipe).expanduser()
        if not path.is_file():
            known = ", ".join(p.stem for p in sorted(RECIPES.glob("*.yaml")))
            problems.append(S2MLPError(f"{recipe}: no such recipe file (built in: {known})", param="recipe"))
            return None
        try:
            mine = _read(path, "recipe")
        except S2MLPError as e:
            problems.append(e)
            return None
        name = str(mine.get("name") or path.stem)
        resolved = mine.get("resolved") is True
        for key, entry in (mine.get("values") or {}).items():
            if isinstance(entry, dict) and "value" not in entry:
                problems.append(S2MLPError(f"{path.name}: {key}: an entry needs a `value:`", param="recipe"))
                continue
            value, source = (
                (entry["value"], entry.get("source")) if isinstance(entry, dict) else (entry, None)
            )
            if (problem := _check(key, value, "recipe", f"{path.name}: ")) is not None:
                problems.append(problem)
                continue
            where = source if resolved and source else f"{path.name}" + (f": {source}" if source else "")
            values[key], sources[key] = _coerce(key, value), where
    recipe_epochs = values.get("epochs")
    pairs = overrides.items() if isinstance(overrides, Mapping) else [_split(o, problems) for o in overrides]
    given: set[str] = set()
    for key, text in (p for p in pairs if p is not None):
        value = _parse(key, text) if isinstance(text, str) else text
        if (problem := _check(key, value, "overrides", "")) is not None:
            problems.append(problem)
            continue
        values[key], sources[key] = _coerce(key, value), "command line"
        given.add(key)
    if len(problems) > before:
        return None
    notes = _fit_warmup(values, sources, given, recipe_epochs, problems)
    if notes is None:
        return None
    if not resolved and "lr" not in given and values["batch_size"] != values["lr_batch"]:
        base_lr = values["lr"]
        values["lr"] = base_lr * values["batch_size"] / values["lr_batch"]
        sources["lr"] = (
            f"{sources['lr']}; scaled linearly to the global batch: {base_lr:g} x "
            f"{values['batch_size']}/{values['lr_batch']} = {values['lr']:.4g}"
        )
    return Recipe(name, values, sources, tuple(notes))


def _fit_warmup(
    values: dict[str, Any], sources: dict[str, str], given: set[str], recipe_epochs: Any, problems: list
) -> list[str] | None:
    """A warm-up as long as the run leaves no epoch of the schedule. One the user set is their problem,
    named by the options they gave; the recipe's own is shortened in proportion to the run (10 of 300
    epochs: none in a 2-epoch run), at most to the run's length less one, and said (None: a problem)."""
    warmup, epochs = values["warmup_epochs"], values["epochs"]
    if not (warmup >= epochs > 0 and warmup > 0):
        return []
    if "warmup_epochs" in given:
        run = f"--epochs {epochs}" if "epochs" in given else f"the recipe's {epochs} epochs"
        problems.append(
            S2MLPError(f"warmup_epochs={warmup} leaves no epoch of the schedule in {run}", param="overrides")
        )
        return None
    base = recipe_epochs if isinstance(recipe_epochs, int) and recipe_epochs > 0 else warmup
    short = min(epochs - 1, warmup * epochs // base)
    values["warmup_epochs"] = short
    sources["warmup_epochs"] = (
        f"{sources['warmup_epochs']}; shortened to {short} for a {epochs}-epoch run ({warmup} of {base} "
        "epochs in proportion)"
    )
    return [
        f"the recipe's warmup_epochs {warmup} (of {base} epochs) is as long as this {epochs}-epoch run: "
        f"shortened to {short} in proportion"
    ]


def _read(path: Path, param: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        why = getattr(e, "strerror", None) or str(e).splitlines()[0]
        raise S2MLPError(f"{path}: cannot read the recipe ({why})", param=param) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("values", {}), dict):
        raise S2MLPError(f"{path}: a recipe is a mapping with `values:` (KEY: VALUE)", param=param)
    return doc


def _split(item: str, problems: list[S2MLPError]) -> tuple[str, str] | None:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        problems.append(S2MLPError(f"{item!r}: expected KEY=VALUE, e.g. lr=1e-3", param="overrides"))
        return None
    return key.strip(), value.strip()


def _parse(key: str, text: str) -> Any:
    """A command-line value as its key's kind: `1e-3` is a number (YAML would keep it a string),
    `0.08,1.0` a pair."""
    kind = KEYS.get(key, ("str", ""))[0]
    try:
        if kind == "float":
            return float(text)
        if kind == "pair" and "," in text and not text.startswith("["):
            return [float(v) for v in text.split(",")]
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _check(key: str, value: Any, param: str, where: str) -> S2MLPError | None:
    """Whether `value` is a valid `key`; the problem, naming the key and the closest known key."""
    if not isinstance(key, str):
        return S2MLPError(f"{where}{key!r}: a recipe key is a name (known: {', '.join(KEYS)})", param=param)
    if key not in KEYS:
        close = difflib.get_close_matches(key, KEYS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(KEYS)})"
        return S2MLPError(f"{where}unknown recipe key {key!r}{hint}", param=param)
    kind, _ = KEYS[key]
    value = _number_text(value) if kind in ("float", "int") else value
    if kind in ("float", "int"):  # type and finiteness through the one validation layer
        try:
            schema.number(value, f"{where}{key}", integer=kind == "int", param=param)
        except S2MLPError as e:
            return e
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        "str": isinstance(value, str) and bool(value),
        "optional-str": value is None or (isinstance(value, str) and bool(value)),
        "bool": isinstance(value, bool),
        "pair": isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value),
    }[kind]
    if not ok:
        want = {
            "int": "a whole number",
            "float": "a finite number",
            "str": "a name",
            "optional-str": "a name or none",
            "bool": "true or false",
            "pair": "two numbers, e.g. [0.08, 1.0]",
        }[kind]
        return S2MLPError(f"{where}{key}: expected {want}, got {value!r}", param=param)
    if key in CHOICES and value not in CHOICES[key]:
        return S2MLPError(
            f"{where}{key}: expected one of {', '.join(CHOICES[key])}, got {value!r}", param=param
        )
    if key == "auto_augment" and (problem := _augment_problem(value)) is not None:
        return S2MLPError(f"{where}auto_augment: {problem}, got {value!r}", param=param)
    if key in UNIT and not 0 <= value <= 1:
        return S2MLPError(f"{where}{key}: expected a value from 0 to 1, got {value!r}", param=param)
    if key in POSITIVE and value <= 0:
        return S2MLPError(f"{where}{key}: expected a value above 0, got {value!r}", param=param)
    if kind in ("float", "int") and value < 0:
        return S2MLPError(f"{where}{key}: expected a value of 0 or more, got {value!r}", param=param)
    if kind == "pair" and not 0 < value[0] <= value[1]:
        return S2MLPError(f"{where}{key}: expected 0 < low <= high, got {value!r}", param=param)
    return None


# timm's auto-augment policies: RandAugment and AugMix take `-`-separated settings, a letter code and a
# number each (rand-m9-mstd0.5-inc1); AutoAugment takes a policy name
_AUGMENT_PARTS = {
    "rand": {"m", "n", "mstd", "mmax", "w", "inc", "p"},
    "augmix": {"m", "w", "d", "a", "b"},
}
_AUGMENT_POLICIES = ("original", "originalr", "v0", "v0r", "3a")


def _augment_problem(value: Any) -> str | None:
    """What is wrong with an auto-augment policy (None: nothing), found before timm would assert."""
    if value is None or value.lower() == "none" or value in _AUGMENT_POLICIES:
        return None
    head, *parts = value.split("-")
    if head not in _AUGMENT_PARTS:
        return f"expected none, {', '.join(_AUGMENT_POLICIES)}, or rand-... / augmix-... settings"
    for part in parts:
        name = part.rstrip("0123456789.")
        if name not in _AUGMENT_PARTS[head] or name == part or part.count(".") > 1:
            known = ", ".join(sorted(_AUGMENT_PARTS[head]))
            return f"{part!r} is not a {head} setting (a code of {known}, then a number)"
    return None


def _number_text(value: Any) -> Any:
    """YAML 1.1 reads `1e-3` and `1.0e308` as strings; a number written so is a number."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return (
            int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number
        )
    return value


def _coerce(key: str, value: Any) -> Any:
    kind = KEYS[key][0]
    value = _number_text(value) if kind in ("float", "int") else value
    if kind == "float":
        return float(value)
    if kind == "pair":
        return [float(v) for v in value]
    if kind == "optional-str" and isinstance(value, str) and value.lower() == "none":
        return None
    return value
