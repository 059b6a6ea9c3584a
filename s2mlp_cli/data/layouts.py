"""ImageNet-1k validation data: every on-disk layout users have, each image labelled correctly.

Labels are always the sorted-synset index (`labels`). The layouts:
- A. class folders `n01440764/*.JPEG` (a subset of folders keeps the global indices);
- B. a flat folder of `ILSVRC2012_val_*.JPEG` plus the devkit, whose ground-truth IDs map through
  `meta.mat` (ILSVRC2012_ID is not the sorted index);
- C. Kaggle: `LOC_val_solution.csv` (first token of PredictionString is the wnid);
- D. Hugging Face parquet shards (`image.bytes`, `label` already the sorted index);
- E. WebDataset tar shards (`.jpg` + `.cls`, the sorted index);
- or any folder with `--labels FILE` naming each file's wnid or sorted index.
`find_dataset` detects which; one reader per layout below lists its samples.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

from s2mlp_cli.data.labels import GROUND_TRUTH, class_index, ground_truth, read_labels, synset_index
from s2mlp_cli.data.samples import Dataset, ImageFile, ParquetRow, Sample, TarMember
from s2mlp_cli.errors import DataError

IMAGE_EXTS = (".jpeg", ".jpg", ".png", ".webp", ".bmp")
_WNID = re.compile(r"^n\d{8}$")
_VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.[A-Za-z]+$")

LAYOUTS = (
    "accepted layouts: A. class folders (DIR/n01440764/*.JPEG); "
    "B. a flat folder of ILSVRC2012_val_*.JPEG with the devkit (given, or ILSVRC2012_devkit_t12 "
    "inside or beside it); C. Kaggle (the folder holding LOC_val_solution.csv, or that file as the labels "
    "file); D. Hugging Face imagenet-1k parquet shards; E. WebDataset .tar shards with "
    ".cls; or any image folder with a labels file (file name and wnid or sorted index per line)"
)


# --- finding the data --------------------------------------------------------------------------------


def find_dataset(
    data: str | Path,
    labels: str | Path | None = None,
    devkit: str | Path | None = None,
    classes: list[str] | None = None,
) -> Dataset:
    """Detect the layout of `data` and label every image; raise DataError naming the accepted layouts.
    A dataset root (train/ and val/, as `s2mlp train` takes it) means its val/. `classes`: class folders
    of a training run's own classes, labelled by their index among them."""
    root = Path(data).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such file or folder; {LAYOUTS}")
    if root.is_dir() and (root / "val").is_dir() and not _has_class_folders(root, classes):
        ds = find_dataset(root / "val", labels, devkit, classes)
        ds.notes.insert(0, f"{root} holds a dataset's splits: evaluating its val/ split")
        return ds
    if classes is not None:
        return _own_classes(root, classes)
    if labels is not None:
        return _with_labels_file(root, Path(labels).expanduser())
    if root.is_file():
        if root.suffix == ".parquet":
            return _parquet(root.parent, [root])
        if root.suffix == ".tar":
            return _webdataset(root.parent, [root])
        raise DataError(f"{root}: a single file must be a .parquet or .tar shard; {LAYOUTS}")
    if not root.is_dir():  # a device, a pipe, a socket
        raise DataError(f"{root}: neither a folder nor a shard file; {LAYOUTS}")
    if (root / "LOC_val_solution.csv").is_file():
        images = root / "ILSVRC" / "Data" / "CLS-LOC" / "val"
        return _kaggle(images if images.is_dir() else root, root / "LOC_val_solution.csv")
    entries = list(root.iterdir())
    class_dirs = [p for p in entries if p.is_dir() and _WNID.match(p.name)]
    if class_dirs:
        ds = _class_folders(root, class_dirs)
        beside = [p for p in entries if p.is_file() and p.suffix.lower() in (*IMAGE_EXTS, ".parquet", ".tar")]
        if beside:
            ds.notes.append(
                f"{len(beside)} image or shard file(s) beside the class folders were not read "
                f"(first: {beside[0].name}): only the class folders are the set"
            )
        return ds
    if parquet := _shards(root, "*.parquet"):
        return _parquet(root, parquet)
    if tars := _shards(root, "*.tar"):
        return _webdataset(root, tars)
    flat = [p for p in entries if p.is_file() and _VAL_NAME.match(p.name)]
    if flat:
        return _flat_devkit(root, flat, Path(devkit).expanduser() if devkit else None)
    if devkit:
        raise DataError(f"{root}: a devkit was given but no ILSVRC2012_val_*.JPEG files are here; {LAYOUTS}")
    images = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_EXTS]
    what = f"{len(images)} images but no labels" if images else "no images"
    raise DataError(f"{root}: {what} in a layout we recognise; {LAYOUTS}")


def _has_class_folders(root: Path, classes: list[str] | None) -> bool:
    try:
        names = [p.name for p in root.iterdir() if p.is_dir()]
    except OSError:
        return False
    return any(n in classes for n in names) if classes is not None else any(_WNID.match(n) for n in names)


def _own_classes(root: Path, classes: list[str]) -> Dataset:
    if not root.is_dir():
        raise DataError(f"{root}: weights trained on their own classes score class folders, not a file")
    folders = [p for p in root.iterdir() if p.is_dir()]
    unknown = sorted(p.name for p in folders if p.name not in classes)
    if unknown:
        raise DataError(
            f"{root}: folder {unknown[0][:60]!r} is not one of the {len(classes)} classes the weights were "
            f"trained on ({', '.join(classes[:4])}{', ...' if len(classes) > 4 else ''})"
        )
    if not folders:
        raise DataError(f"{root}: no class folders of the weights' {len(classes)} classes here")
    index = {name: i for i, name in enumerate(classes)}
    layout = f"class folders of the run's {len(classes)} classes (label = the class's index in the run)"
    ds = class_folders(root, folders, index, layout)
    ds.name, ds.classes = "own", tuple(classes)
    return ds


def _shards(root: Path, pattern: str) -> list[Path]:
    found = sorted(root.glob(pattern)) or sorted(root.glob(f"*/{pattern}"))
    val = [p for p in found if re.search(r"(^|[-_/.])(validation|val)([-_.]|$)", p.name)]
    return val or found


def _class_folders(root: Path, class_dirs: list[Path]) -> Dataset:
    index = synset_index()
    unknown = sorted(p.name for p in class_dirs if p.name not in index)
    if unknown:
        raise DataError(f"{root}: folder {unknown[0]} is not an ImageNet-1k synset ({len(unknown)} such)")
    return class_folders(
        root, class_dirs, index, "A. class folders (label = wnid's index among the 1000 sorted synsets)"
    )


def class_folders(root: Path, class_dirs: list[Path], index: dict[str, int], layout: str) -> Dataset:
    """The images of each class folder, labelled `index[folder name]`; unreadable folders and broken
    links are left out and said in the notes."""
    samples, unreadable, broken = [], [], []
    for folder in sorted(class_dirs, key=lambda p: p.name):
        label = index[folder.name]
        try:
            paths = sorted(folder.iterdir())
        except OSError as e:  # no permission, a stale mount: the other classes still count
            unreadable.append(f"{folder.name} ({e.strerror or e})")
            continue
        for path in paths:
            if path.suffix.lower() not in IMAGE_EXTS:
                continue
            if path.is_file():
                samples.append(Sample(f"{folder.name}/{path.name}", label, ImageFile(str(path))))
            elif path.is_symlink():  # broken, or a loop: said, not silently dropped
                broken.append(f"{folder.name}/{path.name}")
    if not samples:
        what = f"; {len(unreadable)} could not be read (first: {unreadable[0]})" if unreadable else ""
        raise DataError(f"{root}: class folders with no images in them{what}")
    notes = []
    if unreadable:
        notes.append(
            f"{len(unreadable)} class folder(s) could not be read and were left out: "
            + ", ".join(unreadable[:3])
        )
    if broken:
        notes.append(
            f"{len(broken)} image link(s) lead nowhere (broken or looping) and were left out: {broken[0]}"
        )
    return Dataset(layout, str(root), samples, notes)


def _find_devkit(root: Path) -> Path | None:
    candidates = [root, root / "ILSVRC2012_devkit_t12", root.parent / "ILSVRC2012_devkit_t12", root.parent]
    candidates += sorted(root.parent.glob("*devkit*")) + sorted(root.glob("*devkit*"))
    for c in candidates:
        if (c / "data" / GROUND_TRUTH).is_file() and (c / "data" / "meta.mat").is_file():
            return c
    return None


def _flat_devkit(root: Path, files: list[Path], devkit: Path | None) -> Dataset:
    devkit = devkit or _find_devkit(root)
    if devkit is None:
        raise DataError(
            f"{root}: a flat folder of ILSVRC2012_val_*.JPEG needs the devkit's labels: the extracted "
            f"ILSVRC2012_devkit_t12 with data/meta.mat and data/{GROUND_TRUTH}, given, or inside or beside "
            "the images",
            next_step="give_devkit",
        )
    labels = ground_truth(devkit)
    samples = []
    for path in sorted(files):
        number = int(_VAL_NAME.match(path.name)[1])  # ILSVRC2012_val_00000001 is line 1
        if not 1 <= number <= len(labels):
            truth = devkit / "data" / GROUND_TRUTH
            raise DataError(f"{path.name}: no line {number} in {truth} ({len(labels)} lines)")
        samples.append(Sample(path.name, labels[number - 1], ImageFile(str(path))))
    layout = "B. flat ILSVRC2012_val_* + devkit (ground-truth ID -> meta.mat wnid -> sorted index)"
    return Dataset(layout, str(root), samples, [f"devkit: {devkit}"])


def _kaggle(images: Path, solution: Path) -> Dataset:
    ds = _with_labels_file(images, solution)
    ds.layout = "C. Kaggle LOC_val_solution.csv (first wnid of PredictionString -> sorted index)"
    return ds


def _with_labels_file(root: Path, labels_path: Path) -> Dataset:
    if not root.is_dir():
        raise DataError(f"{root}: with a labels file, the data must be a folder of images", param="data")
    labels = read_labels(labels_path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    samples, unlabelled = [], []
    for path in files:
        rel = path.relative_to(root).as_posix()
        for name in (rel, path.name, path.stem):
            if name in labels:
                samples.append(Sample(rel, labels[name], ImageFile(str(path))))
                break
        else:
            unlabelled.append(rel)
    if not samples:
        raise DataError(f"{root}: none of its {len(files)} images is named in {labels_path}")
    notes = [f"labels: {labels_path}"]
    if unlabelled:
        notes.append(
            f"{len(unlabelled)} images have no label in {labels_path.name} and were left out "
            f"(first: {unlabelled[0]})"
        )
    missing = len(labels) - len(samples)
    if missing > 0:
        notes.append(f"{missing} labelled names have no image here")
    return Dataset(
        f"labels file {labels_path.name} (wnid or sorted index per file)", str(root), samples, notes
    )


def _parquet(root: Path, files: list[Path]) -> Dataset:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise DataError("reading parquet shards needs pyarrow: pip install pyarrow") from e
    samples = []
    for f in files:
        try:
            pf = pq.ParquetFile(f)
            if {"image", "label"} - set(pf.schema_arrow.names):
                raise DataError(
                    f"{f}: expected columns image and label, found {', '.join(pf.schema_arrow.names)}"
                )
            for rg in range(pf.num_row_groups):
                labels = pf.read_row_group(rg, columns=["label"]).column("label").to_pylist()
                for row, label in enumerate(labels):
                    key = f"{f.name}:{rg}:{row}"
                    samples.append(Sample(key, class_index(label, key), ParquetRow(str(f), rg, row)))
        except DataError:
            raise
        except Exception as e:  # pyarrow raises its own types for a damaged file
            raise DataError(f"{f}: not a readable parquet shard ({e})") from e
    if not samples:
        raise DataError(f"{root}: the parquet shards hold no rows")
    return Dataset("D. Hugging Face parquet shards (label column is the sorted index)", str(root), samples)


def _webdataset(root: Path, shards: list[Path]) -> Dataset:
    samples = []
    for shard in shards:
        images: dict[str, tuple[int, int]] = {}
        labels: dict[str, int] = {}
        try:
            with tarfile.open(shard, "r:") as tar:
                for m in tar:
                    if not m.isfile():
                        continue
                    key, ext = _split_key(m.name)
                    if ext in IMAGE_EXTS:
                        images[key] = (m.offset_data, m.size)
                    elif ext == ".cls":
                        text = tar.extractfile(m).read(64).decode("ascii", "replace").strip()
                        labels[key] = class_index(text, f"{shard.name}:{key}.cls")
        except DataError:
            raise
        except (tarfile.TarError, OSError, ValueError) as e:
            raise DataError(f"{shard}: not a readable WebDataset shard ({e})") from e
        for key in sorted(images, key=lambda k: images[k][0]):
            if key not in labels:
                raise DataError(f"{shard}: sample {key} has an image but no .cls label")
            offset, size = images[key]
            samples.append(Sample(f"{shard.name}:{key}", labels[key], TarMember(str(shard), offset, size)))
    if not samples:
        raise DataError(f"{root}: the .tar shards hold no image samples")
    return Dataset("E. WebDataset shards (.cls is the sorted index)", str(root), samples)


def _split_key(name: str) -> tuple[str, str]:
    """WebDataset's rule: the key is the path up to the first dot of the file name; the rest is the type."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), "." + ext.lower()
