"""ImageNet evaluation: the request and its checks (`request`), the orchestration (`job.run`), the metric
loop (`loop`) and how batches are fed (`feed`); torchrun sharding is `s2mlp_cli.distributed`.

`run(EvalOptions(...))` is everything `s2mlp eval` does and returns the result document; `check(opts)`
finds every problem with a request without importing torch.
"""

from s2mlp_cli.evaluate.feed import Options
from s2mlp_cli.evaluate.job import chance_warning, run, write_predictions
from s2mlp_cli.evaluate.loop import Entry, evaluate
from s2mlp_cli.evaluate.request import EvalOptions, check

__all__ = [
    "EvalOptions",
    "Entry",
    "Options",
    "chance_warning",
    "check",
    "evaluate",
    "run",
    "write_predictions",
]
