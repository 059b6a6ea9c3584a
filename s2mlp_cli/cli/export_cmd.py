"""`s2mlp export`: a zoo model as a verified ONNX file."""

from __future__ import annotations

import click

from s2mlp_cli.cli._errors import to_click
from s2mlp_cli.cli._options import json_option
from s2mlp_cli.errors import ProblemsError


@click.command("export")
@click.option("--variant", required=True, help="The model (a zoo name or alias).")
@click.option("--weights", help="Weights file; default: the variant's pulled weights.")
@click.option("--output", required=True, help="The .onnx file to write (a .json sidecar goes beside it).")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset (14 to 21).")
@click.option("--batch-size", type=click.IntRange(1), help="A fixed batch size (default: dynamic).")
@click.option("--random", is_flag=True, help="Random weights: the architecture only (for speed tests).")
@json_option
def export_command(variant: str, output: str, as_json: bool, **options) -> None:
    """Export a model to ONNX with torch's exporter, verify it with onnxruntime on generated inputs
    (max |logit difference| against PyTorch within 1e-4 in fp32, printed), and only then write it,
    atomically, with OUTPUT.json beside it: the preprocessing to apply, the class names, the opset and
    the measured difference. The batch is dynamic unless --batch-size fixes it. Needs the optional
    extra: pip install 's2mlp[onnx]'.

    \b
    Examples:
      s2mlp export --variant small --weights runs/small/best.safetensors --output small.onnx
      s2mlp export --variant vip_s7 --random --output vip_s7.onnx --batch-size 8
    """
    from s2mlp_cli.export import ExportOptions, check

    opts = ExportOptions(variant=variant, output=output, **options)
    if problems := check(opts):  # before torch is imported: every problem at once
        raise to_click(ProblemsError(problems), "export")
    from s2mlp_cli.console import out, print_json
    from s2mlp_cli.export import run

    doc = run(opts)
    if as_json:
        print_json(doc)
        return
    r = doc["results"][0]
    out.print(
        f"wrote {r['file']} (opset {r['opset']}, batch {r['batch']}, input {r['input']}, {r['classes']} "
        f"classes) and {r['sidecar']}; onnxruntime agrees with PyTorch within {r['max_abs_diff']:.2e} "
        f"(tolerance {r['tolerance']:g})",
        highlight=False,
    )
