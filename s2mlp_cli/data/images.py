"""Images to uint8 crops: a bounded, allow-listed decode, then timm's own eval transform (shorter side to
floor(size / crop_pct) with the card's filter, centre crop), stopped before the float conversion, which
`normalize` does batched on the device with the same float32 values as timm's ToTensor + Normalize.
Workers ship uint8 crops; `decode_on_gpu` is the nvJPEG path for `--decode gpu`."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from s2mlp_cli.data.samples import Sample
from s2mlp_cli.zoo import Preprocess

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
                data = s.source.read(self._cache)
                return torch.frombuffer(bytearray(data), dtype=torch.uint8), s.label, i, ""
            img = decode(s.source.read(self._cache))
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
