"""Training batches that do not depend on how the work is split.

Each epoch's order is a permutation seeded by (seed, epoch); global step s takes images s*B ... s*B+B-1
of it, and process r of w takes every w-th of those. Each image's augmentation is seeded by (seed,
epoch, image), in whichever worker process decodes it, and each batch's Mixup/CutMix by (seed, epoch,
step, process). So one process with batch B and two with B/2
each see the same images with the same crops at every step, and a run resumed at step s continues
exactly as if it had never stopped."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
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


def seed_all(seed: int, devices: bool = True) -> None:
    """Python's, NumPy's and torch's generators, for whatever the next call draws: every device's, or
    (`devices=False`, what a loader worker needs) the CPU's only, with the same result on the CPU and a
    tenth of the cost (torch.manual_seed also queues each accelerator's seeding)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    if devices:
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


class TrainTransform:
    """timm's training transform with the recipe's augmentation, at the card's size and normalisation, in
    two parts: `image` (crop, flip, auto-augment or colour jitter: a PIL image in, a uint8 HWC tensor out)
    runs on each image; `batch` (to float in [0, 1], normalise, random erasing) runs on the stacked
    batch, each image's erasing seeded by that image's seed. The same values as timm's one-piece
    transform: to_tensor's x / 255 then Normalize's (x - mean) / std, done batched."""

    def __init__(self, recipe: Recipe, prep: Preprocess) -> None:
        import torch
        from timm.data import create_transform
        from timm.data.random_erasing import RandomErasing
        from torchvision.transforms import Compose

        primary, secondary, final = create_transform(
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
            separate=True,
        )
        self.images = zero_bit_posterize(Compose([*primary.transforms, *secondary.transforms]))
        self.erasing = next((t for t in final.transforms if isinstance(t, RandomErasing)), None)
        self.mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(prep.std).view(1, 3, 1, 1)

    def image(self, img: Any) -> Any:
        """The augmented image as a uint8 HWC tensor."""
        import numpy as np
        import torch

        return torch.from_numpy(np.array(self.images(img), dtype=np.uint8))

    def batch(self, images: Any, seeds: list[int]) -> Any:
        """Stacked HWC images -> the float NCHW batch (contiguous, as ToTensor's images stack)."""
        x = images.permute(0, 3, 1, 2).contiguous().float().div_(255).sub_(self.mean).div_(self.std)
        if self.erasing is not None:
            for i, seed in enumerate(seeds):
                seed_all(seed, devices=False)
                self.erasing(x[i])  # in place, on the image's own slice
        return x


def posterize(img: Any, bits: int, **_: Any) -> Any:
    """timm's posterize op with Pillow's pre-13 meaning kept: 0 bits kept is a black image. RandAugment's
    increasing posterize keeps 0 bits at magnitude 10 (reached by m9 with mstd 0.5) and AutoAugment's v0
    policy asks for 0 bits; Pillow 13 raises ValueError for both, which stopped a run in a worker."""
    from PIL import ImageOps

    if bits >= 8:
        return img
    if bits >= 1:
        return ImageOps.posterize(img, bits)
    return img.point([0] * 256 * len(img.getbands()))


def zero_bit_posterize(transform: Any) -> Any:
    """`transform` with every timm posterize op of its auto-augmentation using `posterize` (this
    transform's ops only: timm's own tables are left as they are)."""
    from timm.data import auto_augment

    for step in getattr(transform, "transforms", []):
        ops = getattr(step, "ops", None) or [op for sub in getattr(step, "policy", []) for op in sub]
        for op in ops:
            if getattr(op, "aug_fn", None) is auto_augment.posterize:
                op.aug_fn = posterize
    return transform


class TrainSet:
    """dataset[(index, epoch)] -> (augmented uint8 image tensor, label, the seed of its erasing), the
    augmentation seeded per image."""

    def __init__(self, samples: list[Sample], transform: TrainTransform, seed: int) -> None:
        self.samples, self.transform, self.seed = samples, transform, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int] | StepSeed) -> tuple[Any, int, int] | StepSeed:
        if isinstance(key, StepSeed):  # a batch's first key: passed on to `Collate`
            return key
        index, epoch = key
        for attempt in range(RETRIES):
            sample = self.samples[(index + attempt) % len(self.samples)]
            try:
                image = decode(sample.source.read({}))
            except (OSError, ValueError, SyntaxError) as e:  # PIL raises all three for bad files
                warn(f"skipped {sample.key} ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
                continue
            seed = seed_of(self.seed, epoch, index)
            seed_all(seed, devices=False)
            return self.transform.image(image), sample.label, seed_of(seed, 1)
        raise RuntimeError(f"{RETRIES} images in a row from {self.samples[index].key} could not be read")


@dataclass(frozen=True)
class StepSeed:
    """The seed of one step's batch on one process, sent ahead of its images (for Mixup/CutMix)."""

    seed: int


class Collate:
    """Images and labels into the batch the step takes, in the loader worker: stacked, normalised and
    erased (`TrainTransform.batch`) and, when the recipe mixes, Mixup/CutMix applied, its draws seeded by
    the batch's `StepSeed` (so the main process only runs the model, and the batch is the same whichever
    worker makes it)."""

    def __init__(self, transform: TrainTransform, mixup: Any) -> None:
        self.transform, self.mixup = transform, mixup

    def __call__(self, items: list) -> tuple[Any, Any]:
        import torch

        head, *rest = items
        images, labels, seeds = zip(*rest, strict=True)
        x = self.transform.batch(torch.stack(images), list(seeds))
        y = torch.tensor(labels)
        if self.mixup is not None:
            seed_all(head.seed, devices=False)
            x, y = self.mixup(x, y)
        return x, y


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
        keys.append([StepSeed(step_seed(seed, epoch, step, rank)), *((i, epoch) for i in chunk)])
    return keys


def step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """What a step draws from, on each process: Mixup/CutMix in the worker, drop path in the step."""
    return seed_of(seed, epoch, step, rank)


class Feed:
    """The run's training batches: one DataLoader whose worker processes live for the whole run (started
    once, not every epoch), handed each epoch's keys as its batch sampler is iterated."""

    def __init__(self, dataset: TrainSet, collate: Collate, workers: int, pin: bool) -> None:
        from torch.utils.data import DataLoader

        self.keys: list = []
        self.loader = DataLoader(
            dataset,
            batch_sampler=self,
            collate_fn=collate,
            num_workers=workers,
            pin_memory=pin,
            persistent_workers=workers > 0,
        )

    @classmethod
    def of(
        cls, samples: list[Sample], recipe: Recipe, prep: Preprocess, mixup: Any, workers: int, pin: bool
    ) -> Feed:
        """A run's feed: the recipe's augmentation at the card's size, Mixup/CutMix in the workers."""
        transform = TrainTransform(recipe, prep)
        return cls(TrainSet(samples, transform, recipe.seed), Collate(transform, mixup), workers, pin)

    def __iter__(self) -> Any:  # the batch sampler: the current epoch's keys
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def epoch(self, keys: list) -> Any:
        """An iterator over the (mixed) batches of `keys` (from `batches`)."""
        self.keys = keys
        return iter(self.loader)
