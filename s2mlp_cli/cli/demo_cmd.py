"""`s2mlp demo DIR`: the generated data set every example in the README and docs uses."""

from __future__ import annotations

import click

from s2mlp_cli.cli._errors import to_click
from s2mlp_cli.cli._options import json_option
from s2mlp_cli.errors import ProblemsError


@click.command("demo")
@click.argument("folder")
@json_option
def demo_command(folder: str, as_json: bool) -> None:
    """Write a small generated data set into FOLDER, the one every example in the README and docs uses:
    train/ and val/ class folders of 3 ImageNet classes (val files named as ILSVRC2012 names them),
    real.json (ReaL labels), v2/ (ImageNet-V2's layout) and colours/ (the same images as 3 classes of
    your own). A few seconds, no network; an earlier demo folder is replaced, any other is refused.

    \b
    Examples:
      s2mlp demo demo
      s2mlp train --variant small --data demo --output runs/small --epochs 1
    """
    from s2mlp_cli import demo

    if problems := demo.check(folder):
        raise to_click(ProblemsError(problems), "demo")
    row = demo.write(folder)
    if as_json:
        from s2mlp_cli.console import print_json

        print_json({"results": [row]})
        return
    from s2mlp_cli.console import out

    out.print(
        f"wrote {folder}/: {row['train_images']} train and {row['val_images']} val images of "
        f"{row['classes']} ImageNet classes, real.json (ReaL labels), v2/ (ImageNet-V2's layout) and "
        f"colours/ (the same images as your own classes: {', '.join(row['own_classes'])})",
        highlight=False,
    )
