"""`s2mlp train`: a zoo model trained with a recipe (the paper's by default), validated every epoch with
eval's pipeline, checkpointed atomically and resumable to the step; on a CPU or under torchrun.

`plan` checks a request without torch; `s2mlp_cli.train.loop.run` trains."""

from s2mlp_cli.train.recipe import KEYS, Recipe, load
from s2mlp_cli.train.request import Plan, TrainOptions, plan

__all__ = ["KEYS", "Plan", "Recipe", "TrainOptions", "load", "plan"]
