"""`s2mlp train`: the paper's recipe in one command, resumable, straight to eval and push."""

from __future__ import annotations

import click

from s2mlp_cli.cli._errors import to_click
from s2mlp_cli.cli._options import json_option
from s2mlp_cli.errors import ProblemsError
from s2mlp_cli.runtime import AMP, DEVICES


@click.command("train")
@click.option("--variant", required=True, help="The model to train (a zoo name or alias).")
@click.option("--data", help="Folder holding train/<class>/<images> and val/ (any layout eval reads).")
@click.option("--val", help="The validation set, when it is not DATA/val.")
@click.option("--output", required=True, help="The run's folder: checkpoints, state, log, recipe.")
@click.option(
    "--recipe", default="paper", show_default=True, help="A shipped recipe's name, or a YAML file of yours."
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one recipe value (repeatable), e.g. --set mixup=0 --set auto_augment=none.",
)
@click.option("--epochs", type=click.IntRange(1), help="Same as --set epochs=N.")
@click.option("--batch-size", type=click.IntRange(1), help="Global batch (all processes); same as --set.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), help="Learning rate as is (no batch scaling).")
@click.option(
    "--num-classes", type=click.IntRange(2), help="Train on other class folders (label = sorted index)."
)
@click.option("--init", help="Start from these weights (another number of classes resets the head).")
@click.option("--resume", is_flag=True, help="Continue the run in --output where it stopped.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--amp", type=click.Choice(AMP), default="none", show_default=True)
@click.option("--channels-last", is_flag=True, help="Channels-last memory format for model and input.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the training step's model.")
@click.option("--grad-checkpointing", is_flag=True, help="Recompute activations: less memory, slower.")
@click.option("--tf32", is_flag=True, help="Allow TF32 matmuls on the GPU.")
@click.option("--workers", type=click.IntRange(0), help="Data-loading processes (default: cores, at most 8).")
@click.option(
    "--threads",
    type=click.IntRange(1, 1024),
    help="CPU intra-op threads (default: the cores per process less the loader workers, at least 1).",
)
@click.option("--plot", is_flag=True, help="Draw OUTPUT/curves.png (loss and top-1 by epoch).")
@json_option
def train_command(
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    overrides: tuple[str, ...],
    compile_: bool,
    as_json: bool,
    **options,
) -> None:
    """Train a zoo model with a recipe: the S²-MLPv2 paper's by default (every value and its source in
    s2mlp_cli/recipes/paper.yaml and in OUTPUT/recipe.yaml). The recipe's learning rate is for a global
    batch of 1024 and is scaled linearly for others (and said so).

    Data: DATA/train/<wnid>/<images> labelled as eval labels them (the index among the 1000 sorted
    ImageNet synsets), and DATA/val in any layout eval reads; other class folders with --num-classes N.
    Everything is checked before anything heavy starts. After every epoch the model and its EMA are
    validated with eval's pipeline; OUTPUT gets last.safetensors, best.safetensors (the EMA's when it
    validates better), state.pt (for --resume) and log.jsonl. Ctrl-C or SIGTERM saves a resumable state
    at the next step and exits 130 / 143. Under torchrun, each process takes its share of every batch.

    \b
    Examples:
      s2mlp train --variant small --data /imagenet --output runs/s2mlpv2-small
      torchrun --nproc-per-node 8 -m s2mlp_cli train --variant medium --data /imagenet --output runs/m
      s2mlp train --variant small --data /imagenet --output runs/s2mlpv2-small --resume
      s2mlp train --variant small --data /pets --num-classes 37 --init runs/s/best.safetensors --epochs 30 \\
        --output runs/pets
    """
    from s2mlp_cli.train import TrainOptions, plan

    given = [f"epochs={epochs}"] if epochs else []
    given += [f"batch_size={batch_size}"] if batch_size else []
    given += [f"lr={lr!r}"] if lr else []
    opts = TrainOptions(overrides=[*overrides, *given], compile=compile_, progress=not as_json, **options)
    planned, problems = plan(opts)  # before torch is imported: every problem at once
    if problems:
        raise to_click(ProblemsError(problems), "train")

    from s2mlp_cli.cli._options import show
    from s2mlp_cli.console import info, speaking
    from s2mlp_cli.report import train_tables
    from s2mlp_cli.train.loop import run

    doc = run(opts, planned=planned)
    if not speaking():  # under torchrun, the first process speaks for all
        return
    show(doc, as_json, train_tables)
    if not as_json and doc.get("next"):
        info("next: evaluate the best weights, then publish them with the evaluation as evidence:")
        for command in doc["next"]:
            info(f"  {command}")
