"""What bench measures beside PyTorch, and a worker's own memory figure.

`OrtNet`: a model exported to ONNX (as `s2mlp export` writes it, checked against PyTorch) and run by
onnxruntime on the CPU. `peak_rss_kib`: a worker process's own peak resident set."""

from __future__ import annotations

from typing import Any


class OrtNet:
    """The model exported to ONNX (dynamic batch, as `s2mlp export` writes it, checked against PyTorch)
    and run by onnxruntime on the CPU with torch's thread count; called with a CPU tensor. The graph lives
    in a scratch folder only while the session is made."""

    def __init__(self, model: Any, img_size: int) -> None:
        import onnxruntime as ort
        import torch

        from s2mlp_cli.export import OPSET, to_onnx, verify
        from s2mlp_cli.files import scratch

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        with scratch("bench-onnx") as tmp:
            to_onnx(model, img_size, tmp / "model.onnx", OPSET, None, type(model).__name__)
            self.max_abs_diff = verify(model, tmp / "model.onnx", img_size, None)
            self.session = ort.InferenceSession(
                str(tmp / "model.onnx"), options, providers=["CPUExecutionProvider"]
            )

    def __call__(self, x: Any) -> Any:
        return self.session.run(None, {"x": x.numpy()})[0]


def peak_rss_kib() -> float:
    """This process's own peak resident set: Linux's VmHWM, which starts afresh at exec. getrusage's
    ru_maxrss does not: a worker started from a large parent would report the parent's peak as its own."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
