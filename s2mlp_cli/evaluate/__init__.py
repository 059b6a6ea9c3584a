"""ImageNet evaluation: the request and its checks (`request`), the orchestration (`job.run`), the metric
loop (`loop`), how batches are fed (`feed`) and torchrun sharding (`shard`).

`run(EvalOptions(...))` is everything `s2mlp eval` does and returns the result document; `check(opts)`
finds every problem with a request without importing torch.
"""

from s2mlp_cli.evaluate.feed import Options
from s2mlp_cli.evaluate.job import chance_warning, run, write_predictions
from s2mlp_cli.evaluate.loop import Entry, evaluate
from s2mlp_cli.evaluate.request import EvalOptions, check
from s2mlp_cli.evaluate.shard import Shard

__all__ = [
    "EvalOptions",
    "Entry",
    "Options",
    "Shard",
    "chance_warning",
    "check",
    "evaluate",
    "run",
    "write_predictions",
]
