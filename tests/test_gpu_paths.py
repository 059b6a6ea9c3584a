"""The GPU paths' logic, checked on the CPU: the side-stream prefetch's ordering with a stand-in for
torch.cuda, mean/std made device tensors once per pass (no host sync per batch), and a compiled model fed
full batches only."""

from __future__ import annotations

from pathlib import Path

import torch

from s2mlp_cli.evaluate import loop
from s2mlp_cli.evaluate.feed import to_device


class _Stream:
    def __init__(self, log: list, name: str) -> None:
        self.log, self.name = log, name

    def wait_stream(self, other: _Stream) -> None:
        self.log.append(("wait", self.name, other.name))


class _Cuda:
    """What `to_device` uses of torch.cuda, recording the order of stream operations."""

    def __init__(self) -> None:
        self.log: list = []
        self.main, self.side = _Stream(self.log, "main"), None
        self.current = "main"

    def Stream(self, device):  # noqa: N802 (torch's name)
        self.side = _Stream(self.log, "side")
        return self.side

    def stream(self, s: _Stream):
        cuda = self

        class _Ctx:
            def __enter__(self) -> None:
                cuda.current = s.name

            def __exit__(self, *exc: object) -> None:
                cuda.current = "main"

        return _Ctx()

    def current_stream(self, device) -> _Stream:
        return self.main


def test_the_prefetch_copies_ahead_on_a_side_stream_and_waits_before_use() -> None:
    cuda = _Cuda()
    device = type("Device", (), {"type": "cuda"})()

    class Moved:
        def __init__(self, name: str) -> None:
            self.name = name

        def record_stream(self, s: _Stream) -> None:
            cuda.log.append(("record", self.name, s.name))

    class Host:
        def __init__(self, name: str) -> None:
            self.name = name

        def to(self, dev, non_blocking: bool = False) -> Moved:
            assert dev is device and non_blocking
            cuda.log.append(("copy", self.name, cuda.current))
            return Moved(self.name)

    batches = [(Host(f"x{i}"), Host(f"y{i}"), i, []) for i in range(3)]
    seen = []
    for x, _, idx, _ in to_device(iter(batches), device, cuda=cuda):
        cuda.log.append(("compute", x.name, "main"))
        seen.append(idx)
    assert seen == [0, 1, 2]
    log = cuda.log
    assert all(stream == "side" for kind, _, stream in log if kind == "copy")  # copies on the side stream
    for i in range(3):  # batch i is waited for and recorded on the main stream before it is computed
        wait = log.index(("record", f"x{i}", "main")) - 1
        assert log[wait] == ("wait", "main", "side")
        assert log.index(("copy", f"x{i}", "side")) < wait < log.index(("compute", f"x{i}", "main"))
    # batch i+1's copy is queued before batch i computes: the copy overlaps the compute
    for i in range(2):
        assert log.index(("copy", f"x{i + 1}", "side")) < log.index(("compute", f"x{i}", "main"))


def test_mean_and_std_reach_the_device_once_per_pass(setup, tmp_path: Path, items, monkeypatch) -> None:
    import fakeimagenet as fi
    from helpers import check, run_eval

    weights, labels, expected = setup
    root = fi.class_folders(tmp_path / "val", items, labels)
    made = []

    class Counted(loop.Normalizer):
        def __init__(self, *args, **kwargs) -> None:
            made.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(loop, "Normalizer", Counted)
    code, doc, stderr = run_eval(weights, "--data", str(root), "--batch-size", "5", "--no-cache")  # 3 batches
    assert code == 0, stderr
    check(doc, expected)
    assert len(made) == 1  # one model, one pass: not once per batch


def test_a_compiled_model_sees_full_batches_only(setup, tmp_path: Path, items) -> None:
    import fakeimagenet as fi

    from s2mlp_cli import create_model
    from s2mlp_cli.data import find_dataset
    from s2mlp_cli.evaluate import Entry, Options, evaluate
    from s2mlp_cli.zoo import get_card

    weights, labels, expected = setup
    dataset = find_dataset(fi.class_folders(tmp_path / "val", items, labels))
    model = create_model("evaltiny", pretrained=True, weights=weights).eval()
    sizes = []
    model.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    prep = get_card("evaltiny").preprocess
    results = {}
    for compiled in (False, True):
        sizes.clear()
        opts = Options(device="cpu", batch_size=5, workers=0, compile=compiled)
        (r,), _, _ = evaluate(dataset, [Entry("evaltiny", model, prep, "w")], opts, progress=False)
        results[compiled] = {k: r[k] for k in ("top1", "top5", "loss", "images")}
        assert sizes == ([5, 5, 5] if compiled else [5, 5, len(items) - 10]), sizes
    assert results[True] == results[False] and results[False]["images"] == expected["images"]


def test_gpu_decode_batches_the_jpegs_and_sends_only_the_others_to_the_cpu_path(items) -> None:
    """`decode_on_gpu` on the CPU (torchvision decodes there the same way): the JPEGs are decoded in one
    call and resized one group per size, equal to resizing each alone; the PNG, the CMYK JPEG and a
    truncated file take the exact CPU path one by one, without dragging the rest of the batch with them."""
    import warnings

    import fakeimagenet as fi
    from torchvision.io import ImageReadMode
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    from s2mlp_cli.data import collate_raw, decode, decode_on_gpu, eval_transform
    from s2mlp_cli.data.images import gpu_decoder
    from s2mlp_cli.zoo import Preprocess

    decode_jpeg = gpu_decoder()

    prep = Preprocess(56, 0.875, "bicubic", (0.5,) * 3, (0.5,) * 3)
    raws = [data for _, data in items] + [fi.truncated(items[0][1])]
    batch = collate_raw(
        [(torch.frombuffer(bytearray(r), dtype=torch.uint8), 0, k, "") for k, r in enumerate(raws)]
    )
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        ((crops, _, _, errors),) = list(decode_on_gpu([batch], prep, device="cpu"))
    assert not [
        w for w in said if issubclass(w.category, DeprecationWarning)
    ]  # torchvision's, said once in docs
    assert crops.shape == (len(raws), 3, 56, 56) and crops.dtype == torch.uint8
    exact = eval_transform(prep)
    for k, raw in enumerate(raws):
        kind = decode(raw).format if k < len(items) else "truncated"
        if k == len(raws) - 1:
            assert errors[k] and not crops[k].any()  # skipped with its reason, not fatal
        elif raw[:3] == b"\xff\xd8\xff" and decode(raw).mode != "CMYK" and kind != "PNG":
            img = decode_jpeg(torch.frombuffer(bytearray(raw), dtype=torch.uint8), mode=ImageReadMode.RGB)
            alone = TF.center_crop(
                TF.resize(img, [prep.resize], InterpolationMode.BICUBIC, antialias=True), [56, 56]
            )
            assert torch.equal(crops[k], alone), k
        else:
            assert torch.equal(crops[k], exact(decode(raw))), k  # the exact CPU path


def test_compiled_bench_reports_both_graphs_and_autocast_is_said(zoo: Path, monkeypatch) -> None:
    import functools

    from s2mlp_cli import report
    from s2mlp_cli.bench import Settings, Spec, measure

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    r = measure(Spec("tiny", 2, Settings(compile=True, iters=2, warmup=0), bs1_iters=2))
    assert r.status == "ok" and r.compile_s > 0 and r.extra["compile_bs1_s"] > 0
    note = report.bench_note(r.to_dict())
    assert note == f"compile {r.compile_s:.1f} s (+{r.extra['compile_bs1_s']:.1f} s for batch 1)"
    doc = {"env": {"device": "cpu", "dtype": "bfloat16 (autocast)"}, "results": [r.to_dict()]}
    assert "autocast casts the weights on every call" in report.bench_conditions(doc)
    doc["env"]["dtype"] = "float32"
    assert "autocast" not in report.bench_conditions(doc)
