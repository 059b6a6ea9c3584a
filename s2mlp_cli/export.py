"""`run(ExportOptions(...))`: a zoo model as ONNX, verified before it is placed. torch's ONNX exporter
(`torch.onnx.export(dynamo=True)`, which also carries GFNet's FFTs) writes the graph with a dynamic batch
by default; onnxruntime then runs it on generated inputs beside PyTorch, and the file is placed (with a
sidecar of the preprocessing and class names) only when every logit agrees within the tolerance.

onnx, onnxscript and onnxruntime are the optional extra `s2mlp[onnx]`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2mlp_cli import sources
from s2mlp_cli.errors import S2MLPError
from s2mlp_cli.zoo import get_card, requested_card

OPSET = 18  # what torch's exporter targets by default; onnxruntime runs it
TOLERANCE = 1e-4  # max |logit difference| against PyTorch, fp32
NEEDS = ("onnx", "onnxscript", "onnxruntime")


@dataclass
class ExportOptions:
    variant: str
    output: str | Path
    weights: str | Path | None = None
    opset: int = OPSET
    batch_size: int | None = None  # a fixed batch; None: dynamic
    random: bool = False  # export the variant's architecture with random weights (no weights needed)


def missing_packages() -> list[str]:
    return [name for name in NEEDS if importlib.util.find_spec(name) is None]


def check(opts: ExportOptions) -> list[S2MLPError]:
    """Every problem with the request, before torch is imported."""
    problems: list[S2MLPError] = []
    try:
        card = requested_card(opts.variant)
    except S2MLPError as e:
        return [e]
    out = Path(opts.output).expanduser()
    if out.suffix.lower() != ".onnx":
        problems.append(S2MLPError(f"{opts.output}: name a .onnx file", param="output"))
    elif out.is_dir():
        problems.append(S2MLPError(f"{opts.output} is a folder; name a .onnx file", param="output"))
    elif not os.access(next((p for p in [out.parent, *out.parents] if p.exists()), Path(".")), os.W_OK):
        problems.append(S2MLPError(f"{opts.output}: cannot write there", param="output"))
    if not 14 <= opts.opset <= 21:
        problems.append(S2MLPError(f"opset must be 14 to 21, got {opts.opset}", param="opset"))
    if not opts.random and (problem := sources.precheck(card, opts.weights)) is not None:
        problems.append(problem)
    return problems


def run(opts: ExportOptions) -> dict[str, Any]:
    """Export, verify, place; the document `{"env", "results": [row]}` with the file, its sidecar, the
    opset, the batch it takes and the largest logit difference measured."""
    if problems := check(opts):
        from s2mlp_cli.errors import ProblemsError

        raise ProblemsError(problems)
    if missing := missing_packages():
        raise S2MLPError(
            f"ONNX export needs {', '.join(missing)}: pip install 's2mlp[onnx]' (onnx, onnxscript and "
            "onnxruntime)"
        )
    import torch

    from s2mlp_cli import api, arch, report
    from s2mlp_cli.classes import of_file
    from s2mlp_cli.data import imagenet_names
    from s2mlp_cli.files import atomic_path, file_sha256, scratch
    from s2mlp_cli.runtime import environment

    card = get_card(opts.variant)
    size = card.preprocess.input_size
    if opts.random:
        model, source, own = arch.create(card), "random init", None
    else:
        pulled = sources.resolve(card, opts.weights, progress=False)
        own = of_file(pulled.path)
        model, source = api.build_for(card, pulled, own, size), pulled.source
    model = model.eval()
    with scratch("export") as tmp:
        graph = tmp / "model.onnx"
        to_onnx(model, size, graph, opts.opset, opts.batch_size, card.name)
        diff = verify(model, graph, size, opts.batch_size)
        out = Path(opts.output).expanduser()
        with atomic_path(out) as target:
            target.write_bytes(graph.read_bytes())
    names = list(own) if own else list(imagenet_names())
    row = {
        "model": card.name,
        "file": str(out),
        "sidecar": f"{out}.json",
        "sha256": file_sha256(out),
        "opset": opts.opset,
        "batch": opts.batch_size or "dynamic",
        "input": [opts.batch_size or "batch", 3, size, size],
        "max_abs_diff": diff,
        "tolerance": TOLERANCE,
        "weights": source,
        "classes": len(names),
    }
    sidecar = {
        **row,
        "preprocess": card.preprocess.to_dict(),
        "class_names": names,
        "torch": torch.__version__,
    }
    report.write_text_atomic(f"{out}.json", json.dumps(sidecar, indent=1) + "\n")
    return report.document(environment("cpu", "none", False), [row])


def to_onnx(model: Any, size: int, path: Path, opset: int, batch: int | None, name: str) -> None:
    """`model` as an ONNX graph at `path` (input `x`, output `logits`); a model the exporter cannot
    express is an S2MLPError naming the operator or reason."""
    import torch

    x = torch.randn(batch or 2, 3, size, size)
    shapes = None if batch else {"x": {0: torch.export.Dim("batch", min=1, max=4096)}}
    quiet = io.StringIO()
    try:
        with (
            torch.inference_mode(False),
            contextlib.redirect_stdout(quiet),
            contextlib.redirect_stderr(quiet),
        ):
            torch.onnx.export(
                model,
                (x,),
                str(path),
                input_names=["x"],
                output_names=["logits"],
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=shapes,
                external_data=False,
                verbose=False,
            )
    except Exception as e:  # the exporter's own errors are many classes; its first line says why
        why = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise S2MLPError(f"{name} cannot be exported to ONNX: {why[:300]}") from None


def verify(model: Any, path: Path, size: int, batch: int | None) -> float:
    """The largest |logit difference| between onnxruntime and PyTorch on generated inputs (batches 1 and
    3 for a dynamic batch); an S2MLPError past `TOLERANCE`."""
    import numpy as np
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for b in (batch,) if batch else (1, 3):
        x = torch.randn(b, 3, size, size, generator=g)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"x": x.numpy()})[0]
        if got.shape != expected.shape:
            raise S2MLPError(f"the ONNX graph gives logits of shape {got.shape}, PyTorch {expected.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    if not worst <= TOLERANCE:
        raise S2MLPError(
            f"the ONNX graph's logits differ from PyTorch's by up to {worst:.3g} (tolerance {TOLERANCE:g}); "
            "nothing was written"
        )
    return worst
