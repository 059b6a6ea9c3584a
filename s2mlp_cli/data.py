"""ImageNet-1k validation data: every on-disk layout users have, correct labels, the published eval transform.

Labels are always the index of the image's WordNet id among the 1000 sorted synsets (timm's
`ImageNetInfo`), which is what every pretrained head predicts. The layouts users have:
- A. class folders `n01440764/*.JPEG` (a subset of folders keeps the global indices);
- B. a flat folder of `ILSVRC2012_val_*.JPEG` plus the devkit, whose ground-truth IDs map through
  `meta.mat` (ILSVRC2012_ID is not the sorted index);
- C. Kaggle: `LOC_val_solution.csv` (first token of PredictionString is the wnid);
- D. Hugging Face parquet shards (`image.bytes`, `label` already the sorted index);
- E. WebDataset tar shards (`.jpg` + `.cls`, the sorted index);
- or any folder with `--labels FILE` naming each file's wnid or sorted index.

The transform is timm's `create_transform(is_training=False, use_prefetcher=True)`: shorter side resized
to floor(size / crop_pct) with the card's filter, centre crop, uint8 out. Workers ship uint8 crops; the
float conversion and normalisation run batched on the device (`normalize`), which gives the same float32
values as timm's per-image ToTensor + Normalize.
"""

from __future__ import annotations

import csv
import io
import re
import tarfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from s2mlp_cli.errors import S2MLPError
from s2mlp_cli.zoo import Preprocess

IMAGE_EXTS = (".jpeg", ".jpg", ".png", ".webp", ".bmp")
FULL_SIZE, PER_CLASS = 50_000, 50
_WNID = re.compile(r"^n\d{8}$")
_VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.[A-Za-z]+$")
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"

LAYOUTS = (
    "accepted layouts: A. class folders (DIR/n01440764/*.JPEG); "
    "B. a flat folder of ILSVRC2012_val_*.JPEG with the devkit (given, or ILSVRC2012_devkit_t12 "
    "inside or beside it); C. Kaggle (the folder holding LOC_val_solution.csv, or that file as the labels "
    "file); D. Hugging Face imagenet-1k parquet shards; E. WebDataset .tar shards with "
    ".cls; or any image folder with a labels file (file name and wnid or sorted index per line)"
)


class DataError(S2MLPError):
    """A dataset that cannot be found, read or labelled."""


@cache
def synsets() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in sorted order: index i is class i of every pretrained head."""
    from timm.data import ImageNetInfo

    names = tuple(ImageNetInfo("imagenet-1k").label_names())
    if len(names) != 1000 or list(names) != sorted(names):
        raise DataError("timm's ImageNet-1k synset list is not the 1000 sorted wnids")
    return names


@cache
def synset_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(synsets())}


@dataclass(frozen=True)
class Sample:
    key: str  # what a user recognises: relative path, or shard:member
    label: int
    source: tuple  # ("file", path) | ("tar", shard, offset, size) | ("parquet", file, row_group, row)


@dataclass
class Dataset:
    layout: str
    root: str
    samples: list[Sample]
    notes: list[str] = field(default_factory=list)

    def shape(self) -> str:
        """Whether this is the full validation set, and if not, what it is."""
        counts = Counter(s.label for s in self.samples)
        n, k = len(self.samples), len(counts)
        if n == FULL_SIZE and k == 1000 and set(counts.values()) == {PER_CLASS}:
            return "the full validation set: 50,000 images, 50 per class"
        per = sorted(set(counts.values()))
        spread = f"{per[0]}" if len(per) == 1 else f"{per[0]}–{per[-1]}"
        return f"a subset: {n:,} images in {k} classes ({spread} per class), not the full 50,000"


# --- finding the data --------------------------------------------------------------------------------


def find_dataset(
    data: str | Path, labels: str | Path | None = None, devkit: str | Path | None = None
) -> Dataset:
    """Detect the layout of `data` and label every image; raise DataError naming the accepted layouts."""
    root = Path(data).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such file or folder; {LAYOUTS}")
    if labels is not None:
        return _with_labels_file(root, Path(labels).expanduser())
    if root.is_file():
        if root.suffix == ".parquet":
            return _parquet(root.parent, [root])
        if root.suffix == ".tar":
            return _webdataset(root.parent, [root])
        raise DataError(f"{root}: a single file must be a .parquet or .tar shard; {LAYOUTS}")
    if (root / "LOC_val_solution.csv").is_file():
        images = root / "ILSVRC" / "Data" / "CLS-LOC" / "val"
        return _kaggle(images if images.is_dir() else root, root / "LOC_val_solution.csv")
    entries = list(root.iterdir())
    class_dirs = [p for p in entries if p.is_dir() and _WNID.match(p.name)]
    if class_dirs:
        return _class_folders(root, class_dirs)
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


def _shards(root: Path, pattern: str) -> list[Path]:
    found = sorted(root.glob(pattern)) or sorted(root.glob(f"*/{pattern}"))
    val = [p for p in found if re.search(r"(^|[-_/.])(validation|val)([-_.]|$)", p.name)]
    return val or found


def _class_folders(root: Path, class_dirs: list[Path]) -> Dataset:
    index = synset_index()
    unknown = sorted(p.name for p in class_dirs if p.name not in index)
    if unknown:
        raise DataError(f"{root}: folder {unknown[0]} is not an ImageNet-1k synset ({len(unknown)} such)")
    samples, unreadable = [], []
    for folder in sorted(class_dirs, key=lambda p: p.name):
        label = index[folder.name]
        try:
            paths = sorted(folder.iterdir())
        except OSError as e:  # no permission, a stale mount: the other classes still count
            unreadable.append(f"{folder.name} ({e.strerror or e})")
            continue
        for path in paths:
            if path.is_file() and path.suffix.lower() in IMAGE_EXTS:
                samples.append(Sample(f"{folder.name}/{path.name}", label, ("file", str(path))))
    if not samples:
        what = f"; {len(unreadable)} could not be read (first: {unreadable[0]})" if unreadable else ""
        raise DataError(f"{root}: class folders with no images in them{what}")
    notes = []
    if unreadable:
        notes.append(
            f"{len(unreadable)} class folder(s) could not be read and were left out: "
            + ", ".join(unreadable[:3])
        )
    return Dataset(
        "A. class folders (label = wnid's index among the 1000 sorted synsets)", str(root), samples, notes
    )


def _find_devkit(root: Path) -> Path | None:
    candidates = [root, root / "ILSVRC2012_devkit_t12", root.parent / "ILSVRC2012_devkit_t12", root.parent]
    candidates += sorted(root.parent.glob("*devkit*")) + sorted(root.glob("*devkit*"))
    for c in candidates:
        if (c / "data" / GROUND_TRUTH).is_file() and (c / "data" / "meta.mat").is_file():
            return c
    return None


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


def _flat_devkit(root: Path, files: list[Path], devkit: Path | None) -> Dataset:
    devkit = devkit or _find_devkit(root)
    if devkit is None:
        raise DataError(
            f"{root}: a flat folder of ILSVRC2012_val_*.JPEG needs the devkit's labels: the extracted "
            f"ILSVRC2012_devkit_t12 with data/meta.mat and data/{GROUND_TRUTH}, given, or inside or beside "
            "the images",
            next_step="give_devkit",
        )
    truth = devkit / "data" / GROUND_TRUTH
    try:
        lines = truth.read_text(encoding="ascii").split()
    except (OSError, ValueError) as e:
        raise DataError(f"{truth}: not a readable ground-truth file ({e})") from e
    id_to_wnid, index = devkit_wnids(devkit), synset_index()
    ids = []
    for n, line in enumerate(lines, 1):
        if not (line.isdigit() and int(line) in id_to_wnid):
            raise DataError(f"{truth}:{n}: {line[:20]!r} is not an ILSVRC2012_ID (1-1000)")
        ids.append(int(line))
    samples = []
    for path in sorted(files):
        number = int(_VAL_NAME.match(path.name)[1])  # ILSVRC2012_val_00000001 is line 1
        if not 1 <= number <= len(ids):
            raise DataError(f"{path.name}: no line {number} in {truth} ({len(ids)} lines)")
        samples.append(Sample(path.name, index[id_to_wnid[ids[number - 1]]], ("file", str(path))))
    layout = "B. flat ILSVRC2012_val_* + devkit (ground-truth ID -> meta.mat wnid -> sorted index)"
    return Dataset(layout, str(root), samples, [f"devkit: {devkit}"])


def _kaggle(images: Path, solution: Path) -> Dataset:
    ds = _with_labels_file(images, solution)
    ds.layout = "C. Kaggle LOC_val_solution.csv (first wnid of PredictionString -> sorted index)"
    return ds


def _read_labels(path: Path) -> dict[str, int]:
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
    for n, row in enumerate(rows, 1):
        if len(row) < 2:
            raise DataError(f"{path}:{n}: expected a file name and a label, got {','.join(row)!r}")
        name, label = row[0].strip(), row[1].strip()
        if kaggle:
            label = label.split()[0] if label else ""
        number = label.isascii() and label.isdigit()  # "²" and "٣" are digits to str.isdigit
        if n == 1 and not (label in index or number):
            continue  # a header
        if label in index:
            labels[name] = index[label]
        elif number and int(label) < 1000:
            labels[name] = int(label)
        else:
            raise DataError(f"{path}:{n}: label {label!r} is neither a wnid nor an index 0-999")
    return labels


def _with_labels_file(root: Path, labels_path: Path) -> Dataset:
    if not root.is_dir():
        raise DataError(f"{root}: with a labels file, the data must be a folder of images", param="data")
    labels = _read_labels(labels_path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    samples, unlabelled = [], []
    for path in files:
        rel = path.relative_to(root).as_posix()
        for name in (rel, path.name, path.stem):
            if name in labels:
                samples.append(Sample(rel, labels[name], ("file", str(path))))
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
                    samples.append(Sample(key, _class_index(label, key), ("parquet", str(f), rg, row)))
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
                        labels[key] = _class_index(text, f"{shard.name}:{key}.cls")
        except DataError:
            raise
        except (tarfile.TarError, OSError, ValueError) as e:
            raise DataError(f"{shard}: not a readable WebDataset shard ({e})") from e
        for key in sorted(images, key=lambda k: images[k][0]):
            if key not in labels:
                raise DataError(f"{shard}: sample {key} has an image but no .cls label")
            offset, size = images[key]
            samples.append(Sample(f"{shard.name}:{key}", labels[key], ("tar", str(shard), offset, size)))
    if not samples:
        raise DataError(f"{root}: the .tar shards hold no image samples")
    return Dataset("E. WebDataset shards (.cls is the sorted index)", str(root), samples)


def _class_index(label: Any, where: str) -> int:
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


def _split_key(name: str) -> tuple[str, str]:
    """WebDataset's rule: the key is the path up to the first dot of the file name; the rest is the type."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), "." + ext.lower()


# --- reading and transforming ---------------------------------------------------------------------------


def read_bytes(source: tuple, cache_: dict[str, Any] | None = None) -> bytes:
    kind = source[0]
    if kind == "file":
        return Path(source[1]).read_bytes()
    if kind == "tar":
        _, shard, offset, size = source
        with open(shard, "rb") as f:
            f.seek(offset)
            return f.read(size)
    _, path, rg, row = source  # parquet: keep the last row group decoded (samples come in order)
    cache_ = cache_ if cache_ is not None else {}
    if cache_.get("key") != (path, rg):
        import pyarrow.parquet as pq

        cache_["key"] = (path, rg)
        cache_["images"] = pq.ParquetFile(path).read_row_group(rg, columns=["image"]).column("image")
    return cache_["images"][row].as_py()["bytes"]


# The decoders a dataset file may reach (PIL sniffs content, so a .JPEG name proves nothing): never EPS
# (Ghostscript) or the other formats PIL can open.
DECODERS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")  # JPEG covers MPO (camera JPEGs)
MAX_PIXELS = 100_000_000  # decoded; ImageNet's largest validation image is under 10 MP
MAX_ASPECT = 32  # the eval resize scales the shorter side up to ~256: 200000x1 would become 50 Gpx


def decode(data: bytes):
    """Any image as RGB: grayscale, CMYK, palette, and PNGs saved under a .JPEG name (PIL sniffs content).
    The size is checked from the header before anything is decoded."""
    from PIL import Image

    Image.init()  # register every plugin, so each name of the allow-list resolves
    try:
        img = Image.open(io.BytesIO(data), formats=DECODERS)
    except Image.DecompressionBombError as e:  # PIL's own bound (179 MP), also from the header
        raise ValueError(f"refusing to decode: {e}") from e
    w, h = img.size
    if w * h > MAX_PIXELS or max(w, h) > MAX_ASPECT * max(1, min(w, h)):
        raise ValueError(
            f"image is {w}x{h}: refusing to decode (over {MAX_PIXELS // 10**6} MP or an aspect ratio over "
            f"{MAX_ASPECT}:1)"
        )
    img.load()  # a truncated file fails here, not later
    return img if img.mode == "RGB" else img.convert("RGB")


def eval_transform(prep: Preprocess):
    """PIL image -> (3, size, size) uint8 tensor: timm's own eval transform (shorter side to
    floor(size / crop_pct) with the card's filter, centre crop) stopped before the float conversion,
    which `normalize` does batched on the device."""
    from timm.data import create_transform

    return create_transform(
        input_size=prep.input_size,
        crop_pct=prep.crop_pct,
        interpolation=prep.interpolation,
        is_training=False,
        use_prefetcher=True,  # uint8 out: timm's prefetcher normalises on the device, as we do
    )


def normalize(batch, mean: Sequence[float], std: Sequence[float]):
    """(B, 3, H, W) uint8 -> float32 exactly as ToTensor + Normalize: x / 255, then (x - mean) / std."""
    import torch

    x = batch.to(torch.float32).div_(255)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32, device=x.device)[:, None, None]
    return x.sub_(m).div_(s)


class EvalSet:
    """torch Dataset of uint8 crops; an unreadable image yields a blank crop and its error instead.

    `raw=True` (GPU decoding) yields each file's bytes instead, to be decoded by `decode_on_gpu`."""

    def __init__(self, samples: list[Sample], prep: Preprocess, raw: bool = False) -> None:
        self.samples = samples
        self.img_size = prep.input_size
        self.transform = eval_transform(prep)
        self.raw = raw
        self._cache: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        import torch

        s = self.samples[i]
        try:
            if self.raw:
                data = read_bytes(s.source, self._cache)
                return torch.frombuffer(bytearray(data), dtype=torch.uint8), s.label, i, ""
            img = decode(read_bytes(s.source, self._cache))
            x, error = self.transform(img), ""
        except MemoryError:  # the machine, not the file: fatal, never a quietly skipped image
            raise
        except Exception as e:  # a damaged file is reported and skipped, never fatal
            x = torch.zeros(3, self.img_size, self.img_size, dtype=torch.uint8)
            error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return x, s.label, i, error


def collate_raw(items: list) -> tuple:
    import torch

    data, labels, idx, errors = zip(*items, strict=True)
    return list(data), torch.tensor(labels), torch.tensor(idx), list(errors)


def decode_on_gpu(batches, prep: Preprocess):
    """Raw-byte batches -> uint8 crops on the GPU: torchvision's batched nvJPEG decode, then the eval
    geometry with an antialiased resize. Close to, not bit-equal with, the PIL path (the default);
    non-JPEG files and files nvJPEG refuses go through the PIL path one by one."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    mode = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}.get(
        prep.interpolation, InterpolationMode.NEAREST
    )
    transform = eval_transform(prep)
    size = prep.input_size
    for data, labels, idx, errors in batches:
        try:
            images = decode_jpeg(data, mode=ImageReadMode.RGB, device="cuda")
        except RuntimeError:
            images = [None] * len(data)
        crops = []
        for k, (raw, img) in enumerate(zip(data, images, strict=True)):
            try:
                if img is None:
                    img = decode_jpeg(raw, mode=ImageReadMode.RGB, device="cuda")
                img = TF.resize(img, [prep.resize], interpolation=mode, antialias=True)
                crops.append(TF.center_crop(img, [size, size]))
            except RuntimeError:
                try:  # not a JPEG nvJPEG can read: the exact CPU path for this one
                    crops.append(transform(decode(raw.numpy().tobytes())).cuda())
                except MemoryError:
                    raise
                except Exception as e:
                    crops.append(torch.zeros(3, size, size, dtype=torch.uint8, device="cuda"))
                    errors[k] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        yield torch.stack(crops), labels, idx, errors
