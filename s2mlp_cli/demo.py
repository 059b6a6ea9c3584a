"""`s2mlp demo DIR`: the small generated data set every example in the README and docs uses, so that they
run as printed, in order, in an empty folder. No torch; a few seconds.

    DIR/train/<wnid>/*.JPEG     3 ImageNet classes, 4 images each (colours a tiny model can tell apart)
    DIR/val/<wnid>/ILSVRC2012_val_*.JPEG   2 each, named as the ILSVRC2012 val files are
    DIR/real.json               ImageNet-ReaL labels for those val files (one list left empty)
    DIR/v2/<class index>/*.jpeg the val images in ImageNet-V2's layout
    DIR/colours/{train,val}/{blue,green,red}/   the same images as your own 3 classes (--num-classes 3)

The folder is written beside its destination and moved into place; an earlier demo folder is replaced,
any other non-empty folder is refused.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from s2mlp_cli.errors import S2MLPError
from s2mlp_cli.files import umask

MARK = ".s2mlp-demo"
COLOURS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}
PER_SPLIT = {"train": 4, "val": 2}
SIZE = (80, 96)  # height, width


def check(target: str | Path) -> list[S2MLPError]:
    """Problems with the destination, found before anything is written."""
    path = Path(target).expanduser()
    if path.exists() and not path.is_dir():
        return [S2MLPError(f"{path} is a file; name a folder for the demo set", param="folder")]
    if path.is_dir() and any(path.iterdir()) and not (path / MARK).is_file():
        return [
            S2MLPError(
                f"{path} is not empty and not a demo folder; name a new folder (nothing was written)",
                param="folder",
            )
        ]
    return []


def write(target: str | Path) -> dict:
    """Generate the demo set into `target`; what it holds, as a result document's row."""
    import numpy as np
    from PIL import Image

    from s2mlp_cli.data.labels import synsets

    if problems := check(target):
        raise problems[0]
    path = Path(target).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    wnids = list(synsets()[:3])
    index = {w: i for i, w in enumerate(synsets())}
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    work.chmod(0o777 & ~umask())  # the folder a plain mkdir makes, not mkdtemp's private one
    try:
        real, number, counts = [], 0, {"train": 0, "val": 0}
        for split, per_class in PER_SPLIT.items():
            for (colour, rgb), wnid in zip(COLOURS.items(), wnids, strict=True):
                for i in range(per_class):
                    noise = rng.normal(0, 60, (*SIZE, 3))
                    image = Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype("uint8"))
                    if split == "val":
                        number += 1
                        name = f"ILSVRC2012_val_{number:08d}.JPEG"
                        real.append([] if number % 3 == 0 else [index[wnid]])
                        _save(image, work / "v2" / str(index[wnid]) / f"{number}.jpeg")
                    else:
                        name = f"{wnid}_{i}.JPEG"
                    _save(image, work / split / wnid / name)
                    _save(image, work / "colours" / split / colour / name)
                    counts[split] += 1
        (work / "real.json").write_text(json.dumps(real))
        (work / MARK).write_text(json.dumps({"format": "s2mlp-demo", "version": 1}) + "\n")
        _place(work, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "folder": str(path),
        "train_images": counts["train"],
        "val_images": counts["val"],
        "classes": len(COLOURS),
        "wnids": wnids,
        "own_classes": sorted(COLOURS),
    }


def _save(image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=90)


def _place(work: Path, path: Path) -> None:
    """`work` becomes `path`: an empty folder or an earlier demo is swapped out, then removed."""
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{work.name}")
        path.rename(old)
    try:
        work.rename(path)
    except OSError:
        if old is not None:
            old.rename(path)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
