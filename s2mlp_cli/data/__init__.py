"""ImageNet-1k validation data: find and label it (`layouts`, `labels`), what it is made of (`samples`),
and images to uint8 crops with the published eval transform (`images`)."""

from s2mlp_cli.data.images import (
    EvalSet,
    Normalizer,
    collate_raw,
    decode,
    decode_on_gpu,
    eval_transform,
    normalize,
)
from s2mlp_cli.data.labels import devkit_wnids, imagenet_names, read_labels, synset_index, synsets
from s2mlp_cli.data.layouts import IMAGE_EXTS, LAYOUTS, find_dataset
from s2mlp_cli.data.samples import Dataset, ImageFile, ParquetRow, Sample, TarMember
from s2mlp_cli.errors import DataError
from s2mlp_cli.zoo import Preprocess

__all__ = [
    "IMAGE_EXTS",
    "LAYOUTS",
    "DataError",
    "Dataset",
    "EvalSet",
    "Normalizer",
    "ImageFile",
    "ParquetRow",
    "Preprocess",
    "Sample",
    "TarMember",
    "collate_raw",
    "decode",
    "decode_on_gpu",
    "devkit_wnids",
    "eval_transform",
    "find_dataset",
    "imagenet_names",
    "normalize",
    "read_labels",
    "synset_index",
    "synsets",
]
