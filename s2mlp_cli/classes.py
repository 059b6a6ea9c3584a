"""The classes a weights file scores, carried in its safetensors metadata from `s2mlp train` to eval,
predict, push and pull: ImageNet-1k's 1000 sorted synsets (labels "imagenet-1k"), or a run's own class
folders, named in label order (labels "folders"). Read without torch, so every command checks them first.
"""

from __future__ import annotations

import json
from pathlib import Path

from s2mlp_cli.errors import WeightsError
from s2mlp_cli.files import safetensors_metadata

LABELS = "s2mlp.labels"
CLASSES = "s2mlp.classes"
NUM_CLASSES = "num_classes"
MAX_NAME = 255  # a folder name


def metadata(classes: list[str] | None, num_classes: int) -> dict[str, str]:
    """The metadata entries for weights trained on `classes` (None: ImageNet-1k's synsets)."""
    if classes is None:
        return {LABELS: "imagenet-1k", NUM_CLASSES: str(num_classes)}
    return {LABELS: "folders", NUM_CLASSES: str(len(classes)), CLASSES: json.dumps(list(classes))}


def of_file(path: str | Path) -> list[str] | None:
    """The run's own class names (label order) a weights file carries; None when it carries none or says
    ImageNet-1k. Names that do not make sense (not a list of distinct folder names, another count than
    the file says) are a WeightsError: the file, not the user, is wrong."""
    meta = safetensors_metadata(path)
    if meta.get(LABELS) != "folders":
        return None
    where = f"{path}: its metadata's {CLASSES}"
    try:
        names = json.loads(meta.get(CLASSES, ""))
    except ValueError:
        raise WeightsError(f"{where} is not JSON") from None
    if not isinstance(names, list) or not names:
        raise WeightsError(f"{where} is not a list of class names")
    bad = [
        n
        for n in names
        if not isinstance(n, str) or not n or len(n) > MAX_NAME or "/" in n or n in (".", "..")
    ]
    if bad:
        raise WeightsError(
            f"{where} holds {len(bad)} name(s) that are not folder names (first: {str(bad[0])[:40]!r})"
        )
    if len(set(names)) != len(names):
        raise WeightsError(f"{where} names a class twice")
    if meta.get(NUM_CLASSES) not in (None, str(len(names))):
        raise WeightsError(
            f"{where} names {len(names)} classes but num_classes says {meta[NUM_CLASSES][:20]}"
        )
    return names
