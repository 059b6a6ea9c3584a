"""Benchmarks: params, GMACs, throughput, latency and peak memory of S²-MLPv2 and its peers.

`run(BenchOptions(...))` is everything `s2mlp bench` does and returns the result document (`runner`);
`check` finds every problem with a request without importing torch and `make_plan` says what will run
(`request`); `measure` times one model in this process (`measurement`), which is what each worker process
does (`worker`); `compare` puts rows against their reference; `plot` draws them.
"""

from s2mlp_cli.bench.compare import add_ratios, reference_for
from s2mlp_cli.bench.measurement import Row, Settings, Spec, measure, summarize
from s2mlp_cli.bench.plot import draw_plot
from s2mlp_cli.bench.request import BenchOptions, Plan, check, expand_models, make_plan
from s2mlp_cli.bench.runner import BenchInterrupted, run

__all__ = [
    "BenchInterrupted",
    "BenchOptions",
    "Plan",
    "Row",
    "Settings",
    "Spec",
    "add_ratios",
    "check",
    "draw_plot",
    "expand_models",
    "make_plan",
    "measure",
    "reference_for",
    "run",
    "summarize",
]
