"""Images to uint8 crops: a bounded, allow-listed decode, then timm's own eval transform (shorter side to
floor(size / crop_pct) with the card's filter, centre crop), stopped before the float conversion, which
`normalize` does batched on the device with the same float32 values as timm's ToTensor + Normalize.
Workers ship uint8 crops; `decode_on_gpu` is the nvJPEG path for `--decode gpu`."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from s2mlp_cli.data.samples import Sample
from s2mlp_cli.errors import DataError
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
    return Normalizer(mean, std, batch.device)(batch)


class Normalizer:
    """`normalize` with mean and std made device tensors once: an eval pass builds one per model, so no
    batch waits on a copy of them from the host."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: Any) -> None:
        import torch

        self.mean = torch.tensor(mean, dtype=torch.float32, device=device)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32, device=device)[:, None, None]

    def __call__(self, batch):
        import torch

        return batch.to(torch.float32).div_(255).sub_(self.mean).div_(self.std)


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


# torchvision 0.29 deprecates its image decoders in favour of TorchCodec's and will remove them; until
# then nvJPEG through torchvision is what `--decode gpu` uses and has tested (the extra `s2mlp[gpu-decode]`
# pins torchvision below 0.31). Its warning, said on every call, is said once by `gpu_decoder` instead.
_TV_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"


def gpu_decoder():
    """torchvision's `decode_jpeg` (batched nvJPEG on a CUDA device), its deprecation warning silenced;
    a DataError when this torchvision no longer has it."""
    import warnings

    try:
        from torchvision.io import decode_jpeg as tv_decode_jpeg
    except ImportError as e:
        raise DataError(
            "--decode gpu needs torchvision's nvJPEG decoder, which this torchvision no longer has: "
            "pip install 's2mlp[gpu-decode]' (torchvision < 0.31), or use --decode cpu"
        ) from e

    def decode(data, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_TV_DEPRECATION, category=DeprecationWarning)
            return tv_decode_jpeg(data, **kwargs)

    return decode


def decode_on_gpu(batches, prep: Preprocess, device: str = "cuda"):
    """Raw-byte batches -> uint8 crops on the GPU: torchvision's batched nvJPEG decode of the batch's JPEGs,
    then the eval geometry with an antialiased resize, one resize per group of images of the same size.
    Close to, not bit-equal with, the PIL path (the default). Files that are not JPEGs (PNG, ...) and
    JPEGs nvJPEG refuses (CMYK, truncated) take the exact CPU path one by one; the rest of the batch does
    not. `device` is "cuda" (the CPU in tests, where torchvision decodes the same way)."""
    import torch
    from torchvision.io import ImageReadMode
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    mode = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}.get(
        prep.interpolation, InterpolationMode.NEAREST
    )
    transform = eval_transform(prep)
    size = prep.input_size
    decode_jpeg = gpu_decoder()
    for data, labels, idx, errors in batches:
        decoded: dict[int, Any] = {}
        jpegs = [k for k, raw in enumerate(data) if bytes(raw[:3].tolist()) == b"\xff\xd8\xff"]
        try:  # one batched call for the JPEGs; if nvJPEG refuses one, each is tried alone
            if jpegs:
                batch = decode_jpeg([data[k] for k in jpegs], mode=ImageReadMode.RGB, device=device)
                decoded.update(zip(jpegs, batch, strict=True))
        except RuntimeError:
            for k in jpegs:
                try:
                    decoded[k] = decode_jpeg(data[k], mode=ImageReadMode.RGB, device=device)
                except RuntimeError:
                    pass
        crops: list[Any] = [None] * len(data)
        by_shape: dict[tuple, list[int]] = {}
        for k, img in decoded.items():
            by_shape.setdefault(tuple(img.shape), []).append(k)
        for ks in by_shape.values():  # images of one size resize together: one kernel, not one per image
            out = TF.center_crop(
                TF.resize(
                    torch.stack([decoded[k] for k in ks]), [prep.resize], interpolation=mode, antialias=True
                ),
                [size, size],
            )
            for k, crop in zip(ks, out, strict=True):
                crops[k] = crop
        for k in (k for k in range(len(data)) if crops[k] is None):  # the exact CPU path
            try:
                crops[k] = transform(decode(data[k].numpy().tobytes())).to(device)
            except MemoryError:
                raise
            except Exception as e:
                crops[k] = torch.zeros(3, size, size, dtype=torch.uint8, device=device)
                errors[k] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        yield torch.stack(crops), labels, idx, errors
