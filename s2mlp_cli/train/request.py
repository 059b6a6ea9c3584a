"""A training request and every problem with it, found before anything heavy starts: the variant, the
recipe and its overrides, the train and val folders (each class present and holding images), the output
folder, `--init` / `--resume`, and the batch against the number of processes. No torch."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from s2mlp_cli.data.labels import synset_index
from s2mlp_cli.data.layouts import IMAGE_EXTS, class_folders, find_dataset
from s2mlp_cli.data.samples import Dataset
from s2mlp_cli.errors import S2MLPError, UnknownModelError
from s2mlp_cli.runtime import RunSettings, amp_problem
from s2mlp_cli.train import recipe as recipes
from s2mlp_cli.train.recipe import Recipe
from s2mlp_cli.zoo import Card, get_card

IMAGENET_CLASSES = 1000
MARK = ".s2mlp-train"  # the file that says an output folder is a run s2mlp made
STATE = "state.pt"
_WNID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class TrainOptions(RunSettings):
    """One training run; None means the recipe's value or the machine's default."""

    variant: str
    data: str | Path | None
    output: str | Path
    val: str | Path | None = None  # default: DATA/val
    recipe: str | Path = recipes.BUILT_IN
    overrides: Sequence[str] = ()  # KEY=VALUE
    num_classes: int | None = None  # other class folders than ImageNet-1k's (sorted folder index)
    init: str | Path | None = None  # starting weights; another number of classes resets the head
    resume: bool = False
    grad_checkpointing: bool = False
    workers: int | None = None  # data-loading processes per training process
    plot: bool = False  # OUTPUT/curves.png after each epoch
    progress: bool = True


@dataclass
class Plan:
    """What a checked request will do."""

    card: Card
    recipe: Recipe
    output: Path
    train: Dataset
    val: Dataset
    classes: list[str]  # folder names, in label order
    num_classes: int
    imagenet: bool  # labels are the sorted-synset indices: the weights evaluate on ImageNet-1k
    world: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def local_batch(self) -> int:
        return self.recipe.batch_size // self.world


def plan(opts: TrainOptions) -> tuple[Plan | None, list[S2MLPError]]:
    """The plan, or every problem with the request (each naming its argument)."""
    problems: list[S2MLPError] = []
    card = None
    try:
        card = get_card(opts.variant)
    except UnknownModelError as e:
        problems.append(S2MLPError(e.message, param="variants", next_step=e.next_step, advice=e.advice))
    output = Path(opts.output).expanduser()
    problems += _output_problems(output, opts.resume)
    if opts.resume and opts.init is not None:
        problems.append(
            S2MLPError(
                "a resumed run continues from its saved state; start a new run to use --init", param="init"
            )
        )
    if opts.init is not None and not Path(opts.init).expanduser().is_file():
        problems.append(S2MLPError(f"{opts.init}: no such file", param="init"))
    if (problem := amp_problem(opts.device, opts.amp)) is not None:
        problems.append(problem)
    if opts.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            problems.append(
                S2MLPError("drawing the curves needs matplotlib", param="plot", next_step="install_plot")
            )
    recipe = _recipe(opts, output, problems)
    data = _data_problems(opts, card, problems)
    if card is None or recipe is None or data is None:
        return None, problems
    train, val, classes, num_classes, imagenet = data
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    batch = recipe.batch_size
    if batch % world:
        problems.append(
            S2MLPError(f"the global batch {batch} does not split over {world} processes", param="overrides")
        )
    elif recipe.mixing() and (batch // world) % 2:
        problems.append(
            S2MLPError(
                f"Mixup/CutMix pair images within a batch: the per-process batch {batch // world} "
                "must be even",
                param="overrides",
            )
        )
    if len(train.samples) < batch:
        problems.append(
            S2MLPError(
                f"{train.root} holds {len(train.samples):,} images, fewer than one global batch of {batch}",
                param="overrides",
            )
        )
    if problems:
        return None, problems
    notes = list(recipe.notes) + list(train.notes) + list(val.notes)
    return Plan(card, recipe, output, train, val, classes, num_classes, imagenet, world, notes), problems


def _recipe(opts: TrainOptions, output: Path, problems: list[S2MLPError]) -> Recipe | None:
    """The recipe asked for; a resumed run's own (`OUTPUT/recipe.yaml`), which overrides may not change."""
    saved = output / "recipe.yaml"
    if not opts.resume or not saved.is_file():
        return recipes.load_problems(opts.recipe, list(opts.overrides), problems)
    if str(opts.recipe) != recipes.BUILT_IN:
        problems.append(S2MLPError("a resumed run keeps the recipe it started with", param="recipe"))
        return None
    kept = recipes.load_problems(saved, [], problems)
    asked = recipes.load_problems(saved, list(opts.overrides), problems)
    if kept is None or asked is None:
        return None
    changed = [k for k in kept.values if kept.values[k] != asked.values[k]]
    if changed:
        k = changed[0]
        problems.append(
            S2MLPError(
                f"a resumed run keeps its recipe: {k} is {kept.values[k]!r} in {saved}, "
                f"not {asked.values[k]!r}",
                param="overrides",
            )
        )
        return None
    return kept


def _output_problems(output: Path, resume: bool) -> list[S2MLPError]:
    if output.exists() and not output.is_dir():
        return [S2MLPError(f"{output} is a file; name a folder for the run", param="output")]
    if resume:
        if not (output / STATE).is_file():
            return [S2MLPError(f"{output}: no saved training state ({STATE}) to resume", param="output")]
        return []
    if output.is_dir():
        try:
            entries = [p.name for p in output.iterdir()]
        except OSError as e:
            return [S2MLPError(f"{output}: cannot read it ({e.strerror or e})", param="output")]
        if MARK not in entries and entries:
            return [
                S2MLPError(
                    f"{output} holds files s2mlp did not make; name a new or empty folder", param="output"
                )
            ]
        if STATE in entries:
            return [
                S2MLPError(
                    f"{output} already holds a run",
                    param="output",
                    next_step="resume",
                    advice="resume it, or name a new folder",
                )
            ]
    folder = next((p for p in [output, *output.parents] if p.exists()), Path("."))
    if not os.access(folder, os.W_OK | os.X_OK):
        return [S2MLPError(f"{output}: cannot write in {folder}", param="output")]
    return []


def _data_problems(
    opts: TrainOptions, card: Card | None, problems: list[S2MLPError]
) -> tuple[Dataset, Dataset, list[str], int, bool] | None:
    """The train and val sets, labelled; None (and problems) when they cannot be."""
    found = _train_folders(opts, problems)
    if found is None:
        return None
    root, train_root, folders = found
    names = [p.name for p in folders]
    labels = _labels(opts, train_root, names, problems)
    if labels is None:
        return None
    index, num_classes, layout, imagenet = labels
    if card is not None and imagenet and card.arch.get("num_classes", IMAGENET_CLASSES) != IMAGENET_CLASSES:
        problems.append(
            S2MLPError(
                f"{card.name} has {card.arch['num_classes']} classes; ImageNet-1k folders need "
                f"{IMAGENET_CLASSES} (or give the number of classes of your folders)",
                param="num_classes",
            )
        )
    try:
        train = class_folders(train_root, folders, index, layout)
    except S2MLPError as e:
        problems.append(S2MLPError(e.message, param="data"))
        return None
    counts = Counter(s.label for s in train.samples)
    empty = [n for n in names if not counts[index[n]]]
    if empty:
        more = f" (+{len(empty) - 3} more)" if len(empty) > 3 else ""
        problems.append(
            S2MLPError(
                f"{len(empty)} class folder(s) of {train_root} hold no images ({', '.join(IMAGE_EXTS)}): "
                + ", ".join(empty[:3])
                + more,
                param="data",
            )
        )
    val = _val(opts, root, index, imagenet, layout, problems)
    if val is None or empty:
        return None
    return train, val, names, num_classes, imagenet


def _train_folders(opts: TrainOptions, problems: list[S2MLPError]) -> tuple[Path, Path, list[Path]] | None:
    """DATA, DATA/train and its class folders (sorted by name); None (and a problem) when missing."""
    if opts.data is None:
        what = (
            "the data folder (it holds train/ and val/)"
            if opts.val is None
            else "the data folder that holds train/"
        )
        problems.append(S2MLPError(f"name {what}", param="data"))
        return None
    root = Path(opts.data).expanduser()
    train_root = root / "train"
    if not root.is_dir():
        problems.append(S2MLPError(f"{root}: no such folder", param="data"))
        return None
    if not train_root.is_dir():
        problems.append(
            S2MLPError(f"{root} has no train/ folder (DATA/train/<class>/<images>)", param="data")
        )
        return None
    try:
        folders = sorted((p for p in train_root.iterdir() if p.is_dir()), key=lambda p: p.name)
    except OSError as e:
        problems.append(S2MLPError(f"{train_root}: cannot read it ({e.strerror or e})", param="data"))
        return None
    if not folders:
        problems.append(S2MLPError(f"{train_root} holds no class folders", param="data"))
        return None
    return root, train_root, folders


def _labels(
    opts: TrainOptions, train_root: Path, names: list[str], problems: list[S2MLPError]
) -> tuple[dict[str, int], int, str, bool] | None:
    """Folder name -> label, the number of classes, the layout's words, and whether the labels are
    ImageNet-1k's sorted synsets (no --num-classes) or the folders' own sorted order."""
    if opts.num_classes is None:
        index = synset_index()
        if unknown := [n for n in names if n not in index]:
            problems.append(
                S2MLPError(
                    f"{train_root}: folder {unknown[0]!r} is not an ImageNet-1k synset ({len(unknown)} such)",
                    param="data",
                    next_step="num_classes",
                    advice="give num_classes to train on other class folders",
                )
            )
            return None
        return (
            index,
            IMAGENET_CLASSES,
            "class folders (label = wnid's index among the 1000 sorted synsets)",
            True,
        )
    if len(names) != opts.num_classes:
        problems.append(
            S2MLPError(
                f"{train_root} has {len(names)} class folders, not {opts.num_classes}", param="num_classes"
            )
        )
        return None
    layout = f"class folders (label = the folder's index among the {opts.num_classes} sorted names)"
    return {n: i for i, n in enumerate(names)}, opts.num_classes, layout, False


def _val(
    opts: TrainOptions,
    root: Path,
    index: dict[str, int],
    imagenet: bool,
    layout: str,
    problems: list[S2MLPError],
) -> Dataset | None:
    val_root = Path(opts.val).expanduser() if opts.val is not None else root / "val"
    param = "val" if opts.val is not None else "data"
    if not val_root.exists():
        what = f"{val_root}: no such folder" if opts.val is not None else f"{root} has no val/ folder"
        problems.append(S2MLPError(f"{what} (validation runs after every epoch)", param=param))
        return None
    try:
        if imagenet:
            return find_dataset(val_root)
        folders = sorted((p for p in val_root.iterdir() if p.is_dir()), key=lambda p: p.name)
        unknown = [p.name for p in folders if p.name not in index]
        if unknown or not folders:
            what = f"folder {unknown[0]!r} is not a class of train/" if unknown else "no class folders"
            problems.append(S2MLPError(f"{val_root}: {what}", param=param))
            return None
        return class_folders(val_root, folders, index, layout)
    except S2MLPError as e:
        problems.append(S2MLPError(e.message, param=param))
        return None
    except OSError as e:
        problems.append(S2MLPError(f"{val_root}: cannot read it ({e.strerror or e})", param=param))
        return None


def class_metadata(p: Plan) -> dict[str, str]:
    """What the weights say of their classes, in the safetensors metadata eval, predict, push and pull
    read (`s2mlp_cli.classes`): ImageNet-1k's sorted synsets, or the run's own folder names in label order."""
    from s2mlp_cli.classes import metadata

    return metadata(None if p.imagenet else p.classes, p.num_classes)
