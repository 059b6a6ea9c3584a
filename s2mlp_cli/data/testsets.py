"""The ImageNet test sets papers report, each detected from its layout (or named, `NAME=PATH`):

- `val`: ImageNet-1k validation, any layout `find_dataset` reads; with ReaL labels (Beyer et al. 2020)
  each val image also carries its list of acceptable classes (`real`), scored from the same pass;
- `v2`: ImageNet-V2 (Recht et al. 2019), class folders `0` ... `999` (the folder name is the class);
- `a`, `r`: ImageNet-A and -R (Hendrycks et al. 2021), 200 wnid folders each; logits are restricted to
  the set's 200 classes (timm ships both lists, as its validate.py's `--valid-labels` uses them);
- `sketch`: ImageNet-Sketch (Wang et al. 2019), 1000 wnid folders of `sketch_*` files;
- `c`: ImageNet-C (Hendrycks and Dietterich 2019), `<corruption>/<severity>/<wnid>/`: one part per
  corruption and severity.
"""

from __future__ import annotations

import re
from pathlib import Path

from s2mlp_cli.data.labels import synset_index, timm_info
from s2mlp_cli.data.layouts import class_folders, find_dataset
from s2mlp_cli.data.samples import Dataset
from s2mlp_cli.errors import DataError, S2MLPError
from s2mlp_cli.schema import number, read_json

SETS = {
    "val": "ImageNet-1k val",
    "own": "the run's own classes",
    "real": "ImageNet-ReaL",
    "v2": "ImageNet-V2",
    "a": "ImageNet-A",
    "r": "ImageNet-R",
    "sketch": "ImageNet-Sketch",
    "c": "ImageNet-C",
}
# the 15 corruptions of the mCE, then the 4 held-out extras (evaluated, not in the mCE)
CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression",
)  # fmt: skip
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
_VAL_NUMBER = re.compile(r"ILSVRC2012_val_(\d{8})")
_HINTS = {
    "a": re.compile(r"imagenet[-_]?a$", re.I),
    "r": re.compile(r"imagenet[-_]?r$", re.I),
    "v2": re.compile(r"imagenet[-_]?v2", re.I),
    "sketch": re.compile(r"sketch", re.I),
}


def find_sets(
    data: str | Path,
    name: str | None = None,
    labels: str | Path | None = None,
    devkit: str | Path | None = None,
    real_labels: str | Path | None = None,
    classes: list[str] | None = None,
) -> list[Dataset]:
    """The test set at `data` (ImageNet-C: one Dataset per corruption and severity). `name`, when it is
    one of SETS, says which set this is instead of detecting it. `classes`: the weights were trained on
    these class folders (in label order), and the set is class folders among them."""
    root = Path(data).expanduser()
    if classes is not None:
        if real_labels is not None or (name in SETS and name != "own"):
            raise DataError(f"weights trained on their own {len(classes)} classes score only folders of them")
        return [find_dataset(root, labels, devkit, classes=classes)]
    kind = name if name in SETS else None
    if kind == "real" and real_labels is None:
        raise DataError("ImageNet-ReaL is the val set scored with real.json: give the ReaL labels file")
    if kind == "c" or (kind is None and root.is_dir() and _corruption_folders(root)):
        return _imagenet_c(root)
    if kind == "v2" or (kind is None and root.is_dir() and _numbered_folders(root)):
        return [_v2(root)]
    ds = find_dataset(root, labels, devkit)
    kind = kind or _detect(root, ds)
    if kind in ("a", "r"):
        ds.name, ds.valid = kind, _subset(kind)
        outside = sorted({s.label for s in ds.samples} - set(ds.valid))
        if outside:
            raise DataError(f"{root}: {len(outside)} class(es) are not among {SETS[kind]}'s 200")
        ds.notes.append(f"logits restricted to {SETS[kind]}'s 200 classes, as its paper scores it")
    elif kind == "sketch":
        ds.name = "sketch"
    if real_labels is not None:
        if kind not in (None, "val", "real"):
            raise DataError(f"ReaL labels belong to the val set, not {SETS[kind]}")
        attach_real(ds, Path(real_labels).expanduser())
    return [ds]


def _detect(root: Path, ds: Dataset) -> str:
    """Which set a class-folder layout is: named by the folder (imagenet-a, imagenet-r, sketch), or by
    its classes being exactly A's or R's 200, or by ImageNet-Sketch's file names."""
    for part in reversed(root.parts[-2:]):
        for kind, pattern in _HINTS.items():
            if pattern.search(part):
                return kind
    labels = {s.label for s in ds.samples}
    for kind in ("a", "r"):
        if labels == set(_subset(kind)):
            return kind
    names = [Path(s.key).name for s in ds.samples[:200]]
    if names and all(n.startswith("sketch_") for n in names):
        return "sketch"
    return "val"


def _subset(kind: str) -> tuple[int, ...]:
    """The sorted-synset indices of ImageNet-A's or -R's 200 classes, from timm's class lists."""
    index = synset_index()
    wnids = timm_info(f"imagenet_{kind}_synsets.txt").split()
    return tuple(sorted(index[w] for w in wnids))


def _numbered_folders(root: Path) -> list[Path]:
    dirs = [p for p in root.iterdir() if p.is_dir()]
    return dirs if dirs and all(p.name.isdigit() and int(p.name) < 1000 for p in dirs) else []


def _v2(root: Path) -> Dataset:
    dirs = _numbered_folders(root)
    if not dirs:
        raise DataError(f"{root}: ImageNet-V2 is class folders named 0 ... 999")
    ds = class_folders(
        root,
        dirs,
        {p.name: int(p.name) for p in dirs},
        "ImageNet-V2 class folders (folder name = class index)",
    )
    ds.name = "v2"
    return ds


def _corruption_folders(root: Path) -> list[Path]:
    known = set(CORRUPTIONS) | set(EXTRA_CORRUPTIONS)
    dirs = [p for p in root.iterdir() if p.is_dir()]
    found = [p for p in dirs if p.name in known]
    return found if found and len(found) == len(dirs) else []


def _imagenet_c(root: Path) -> list[Dataset]:
    corruptions = _corruption_folders(root)
    if not corruptions:
        raise DataError(f"{root}: ImageNet-C is <corruption>/<severity 1-5>/<wnid>/ folders")
    index = synset_index()
    order = {c: i for i, c in enumerate(CORRUPTIONS + EXTRA_CORRUPTIONS)}
    parts = []
    for folder in sorted(corruptions, key=lambda p: order[p.name]):
        severities = sorted(
            (p for p in folder.iterdir() if p.is_dir() and p.name in ("1", "2", "3", "4", "5")),
            key=lambda p: p.name,
        )
        if not severities:
            raise DataError(f"{folder}: no severity folders 1 ... 5")
        for sev in severities:
            dirs = [p for p in sev.iterdir() if p.is_dir() and p.name in index]
            if not dirs:
                raise DataError(f"{sev}: no wnid class folders")
            ds = class_folders(sev, dirs, index, "ImageNet-C <corruption>/<severity>/<wnid>/")
            ds.name, ds.part = "c", (folder.name, int(sev.name))
            parts.append(ds)
    return parts


REAL_MAX_BYTES = 64 * 2**20  # ReaL's real.json is 1.5 MB


def read_real(path: Path) -> list[list[int]]:
    """ReaL's labels: a JSON list with one list of class indices (0-999) per val image, checked whole."""
    try:
        real = read_json(path, "ReaL labels", REAL_MAX_BYTES, param="real_labels")
    except S2MLPError as e:
        raise DataError(e.message, param="real_labels") from None
    if not isinstance(real, list) or not all(isinstance(r, list) for r in real):
        raise DataError(f"{path}: ReaL labels are a JSON list of label lists", param="real_labels")
    for n, labels in enumerate(real, 1):
        for label in labels:
            try:
                number(label, f"{path}: entry {n}", lo=0, hi=999, integer=True, param="real_labels")
            except S2MLPError as e:
                raise DataError(f"{e.message} (a class index, 0-999)", param="real_labels") from None
    return [[int(c) for c in labels] for labels in real]


def attach_real(ds: Dataset, path: Path) -> None:
    """Each val image's ReaL labels, by its ILSVRC2012_val number (image 1 is the list's first)."""
    real = read_real(path)
    lists = []
    for s in ds.samples:
        m = _VAL_NUMBER.search(s.key)
        if m is None:
            raise DataError(
                f"{s.key}: ReaL labels follow the val file names (ILSVRC2012_val_NNNNNNNN), and this image "
                "has none",
                param="real_labels",
            )
        number = int(m[1])
        if not 1 <= number <= len(real):
            raise DataError(
                f"{s.key}: no entry {number} in {path.name} ({len(real)} entries)", param="real_labels"
            )
        lists.append(tuple(int(c) for c in real[number - 1]))
    ds.real = lists
    empty = sum(1 for r in lists if not r)
    ds.notes.append(f"ReaL labels: {path} ({empty:,} image(s) with no label are left out of ReaL)")
