"""Training batches that do not depend on how the work is split.

Each epoch's order is a permutation seeded by (seed, epoch); global step s takes images s*B ... s*B+B-1
of it, and process r of w takes every w-th of those. Each image's augmentation is seeded by (seed,
epoch, image), in whichever worker process decodes it. So one process with batch B and two with B/2
each see the same images with the same crops at every step, and a run resumed at step s continues
exactly as if it had never stopped."""

from __future__ import annotations

import hashlib
import random
from typing import Any

from s2mlp_cli.console import warn
from s2mlp_cli.data.images import decode
from s2mlp_cli.data.samples import Sample
from s2mlp_cli.train.recipe import Recipe
from s2mlp_cli.zoo import Preprocess

RETRIES = 8  # an unreadable image is replaced by the next one (and said), at most this many times


def seed_of(*parts: int) -> int:
    """A 63-bit seed from integers: different parts give unrelated seeds."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seed_all(seed: int) -> None:
    """Python's, NumPy's and torch's (every device's) generators, for whatever the next call draws."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_transform(recipe: Recipe, prep: Preprocess) -> Any:
    """timm's training transform with the recipe's augmentation, at the card's size and normalisation."""
    from timm.data import create_transform

    return create_transform(
        input_size=prep.input_size,
        is_training=True,
        scale=tuple(recipe.scale),
        ratio=tuple(recipe.ratio),
        hflip=recipe.hflip,
        color_jitter=recipe.color_jitter,
        auto_augment=recipe.auto_augment,
        interpolation=recipe.train_interpolation,
        mean=tuple(prep.mean),
        std=tuple(prep.std),
        re_prob=recipe.reprob,
        re_mode=recipe.remode,
        re_count=recipe.recount,
    )


class TrainSet:
    """dataset[(index, epoch)] -> (augmented image tensor, label), the augmentation seeded per image."""

    def __init__(self, samples: list[Sample], transform: Any, seed: int) -> None:
        self.samples, self.transform, self.seed = samples, transform, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, int]:
        index, epoch = key
        for attempt in range(RETRIES):
            sample = self.samples[(index + attempt) % len(self.samples)]
            try:
                image = decode(sample.source.read({}))
            except (OSError, ValueError, SyntaxError) as e:  # PIL raises all three for bad files
                warn(f"skipped {sample.key} ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
                continue
            seed_all(seed_of(self.seed, epoch, index))
            return self.transform(image), sample.label
        raise RuntimeError(f"{RETRIES} images in a row from {self.samples[index].key} could not be read")


def steps_per_epoch(images: int, batch: int) -> int:
    """Full global batches only: the last partial one is dropped, as every ImageNet recipe does."""
    return images // batch


def batches(images: int, batch: int, seed: int, epoch: int, start: int, rank: int, world: int) -> list:
    """This process's share of each global batch of `epoch` from step `start` on, as dataset keys."""
    import torch

    order = torch.randperm(images, generator=torch.Generator().manual_seed(seed_of(seed, epoch)))
    keys = []
    for step in range(start, steps_per_epoch(images, batch)):
        chunk = order[step * batch : (step + 1) * batch][rank::world].tolist()
        keys.append([(i, epoch) for i in chunk])
    return keys


def loader(dataset: TrainSet, keys: list, workers: int, pin: bool) -> Any:
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_sampler=keys, num_workers=workers, pin_memory=pin)
