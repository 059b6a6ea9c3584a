"""Labels: always the index of the image's WordNet id among the 1000 sorted synsets (timm's
`ImageNetInfo`), which is what every pretrained head predicts; the devkit's ILSVRC2012_IDs and labels
files map onto it here."""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path
from typing import Any

from s2mlp_cli.errors import DataError

GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"


def timm_info(name: str) -> str:
    """A class list timm ships (timm/data/_info), read without importing timm (and so torch): checks of
    a request stay instant."""
    import importlib.util

    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("timm is not installed: its ImageNet class lists are needed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "_info" / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"cannot read timm's {name} ({e.strerror or e})") from None


@cache
def synsets() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in sorted order: index i is class i of every pretrained head."""
    names = tuple(timm_info("imagenet_synsets.txt").split())
    if len(names) != 1000 or list(names) != sorted(names):
        raise DataError("timm's ImageNet-1k synset list is not the 1000 sorted wnids")
    return names


@cache
def imagenet_names() -> tuple[str, ...]:
    """ImageNet-1k's class names in label order: each synset's first lemma (timm's list; "tench")."""
    lemmas = dict(
        line.split("\t", 1) for line in timm_info("imagenet_synset_to_lemma.txt").splitlines() if "\t" in line
    )
    return tuple(lemmas.get(w, w).split(",")[0].strip() for w in synsets())


@cache
def synset_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(synsets())}


def devkit_wnids(devkit: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid from the devkit's meta.mat (leaf synsets, num_children == 0)."""
    meta = devkit / "data" / "meta.mat"
    try:
        from scipy.io import loadmat
    except ImportError as e:
        raise DataError("reading the devkit's meta.mat needs scipy: pip install scipy") from e
    try:
        synsets_ = loadmat(str(meta), squeeze_me=True)["synsets"]
        mapping = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets_ if int(s["num_children"]) == 0}
    except Exception as e:  # an empty or damaged file: scipy raises its own types, and numpy's
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{meta}: not a readable ILSVRC2012 devkit meta.mat ({detail})") from e
    if len(mapping) != 1000 or set(mapping.values()) != set(synsets()):
        raise DataError(f"{meta}: expected the 1000 ImageNet-1k leaf synsets, found {len(mapping)}")
    return mapping


def ground_truth(devkit: Path) -> list[int]:
    """The devkit's ILSVRC2012_ID per validation image (line n: image n), each checked against meta.mat;
    returned as sorted-synset indices."""
    truth = devkit / "data" / GROUND_TRUTH
    try:
        lines = truth.read_text(encoding="ascii").split()
    except (OSError, ValueError) as e:
        raise DataError(f"{truth}: not a readable ground-truth file ({e})") from e
    id_to_wnid, index = devkit_wnids(devkit), synset_index()
    labels = []
    for n, line in enumerate(lines, 1):
        if not (line.isdigit() and int(line) in id_to_wnid):
            raise DataError(f"{truth}:{n}: {line[:20]!r} is not an ILSVRC2012_ID (1-1000)")
        labels.append(index[id_to_wnid[int(line)]])
    return labels


def read_labels(path: Path) -> dict[str, int]:
    """name -> sorted index, from Kaggle's CSV or a generic `name,label` / `name label` file."""
    index = synset_index()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"{path}: cannot read labels ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not a UTF-8 text file (byte {e.start}); expected lines of file name and label"
        ) from e
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"{path}: empty labels file")
    kaggle = lines[0].replace(" ", "").lower().startswith("imageid,predictionstring")
    rows = csv.reader(lines) if "," in lines[0] else (ln.split() for ln in lines)
    labels: dict[str, int] = {}
    where: dict[str, int] = {}
    try:
        for n, row in enumerate(rows, 1):
            _label_row(path, n, row, kaggle, index, labels, where)
    except csv.Error as e:
        raise DataError(f"{path}: not a readable labels file ({e})") from e
    return labels


def _label_row(
    path: Path, n: int, row: list[str], kaggle: bool, index: dict[str, int], labels: dict, where: dict
) -> None:
    """One line of a labels file into `labels` (name -> sorted index); `where` remembers each name's line."""
    if len(row) < 2:
        raise DataError(f"{path}:{n}: expected a file name and a label, got {','.join(row)!r}")
    name, label = row[0].strip(), row[1].strip()
    if kaggle:
        label = label.split()[0] if label else ""
    number = label.isascii() and label.isdigit()  # "²" and "٣" are digits to str.isdigit
    if n == 1 and not any(c.isdigit() for c in label):
        return  # a header ("label", "class"): a first row with digits in its label is data, checked
    if label in index:
        value = index[label]
    elif number and int(label) < 1000:
        value = int(label)
    else:
        raise DataError(f"{path}:{n}: label {label!r} is neither a wnid nor an index 0-999")
    if name in labels and labels[name] != value:
        raise DataError(f"{path}:{n}: {name!r} is labelled again, differently (first on line {where[name]})")
    labels[name], where[name] = value, where.get(name, n)


def class_index(label: Any, where: str) -> int:
    """A label that must already be the sorted index (parquet, WebDataset): an integer 0-999, checked when
    the set is scanned rather than when a batch meets it mid-run."""
    if isinstance(label, str) and label.isascii() and label.lstrip("-").isdigit():
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < 1000:
        raise DataError(
            f"{where}: label {str(label)[:20]!r} is not an ImageNet-1k class index (0-999); these shards "
            "must hold the sorted-synset index"
        )
    return label
