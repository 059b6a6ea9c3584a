"""Library errors as the command line says them: parameters become flags, next steps become commands."""

from __future__ import annotations

import click

from s2mlp_cli.errors import ProblemsError, S2MLPError

FLAGS = {
    "variants": "--variant",
    "compare": "--compare",
    "data": "--data",
    "labels": "--labels",
    "devkit": "--devkit",
    "weights": "--weights",
    "mean": "--mean",
    "std": "--std",
    "amp": "--amp",
    "output": "--output",
    "save_predictions": "--save-predictions",
    "batch_sizes": "--batch-size",
    "repo": "--repo",
    "revision": "--revision",
    "eval_result": "--eval",
    "bench_result": "--bench",
    "decode": "--decode",
    "timeout": "--timeout",
    "img_size": "--img-size",
    "filename": "--filename",
    "names": "ENTRY",
}
STEPS = {
    "own_weights": "to use your own: s2mlp pull {v} --repo ORG/NAME, or s2mlp pull {v} --from FILE{weights}",
    "import": "then import it: s2mlp pull {v} --from FILE",
    "pull_online": "run `s2mlp pull {v}` while online first",
    "give_devkit": "pass --devkit DIR",
    "use_cpu": "use --device cpu",
}


def say(e: S2MLPError, command: str | None) -> str:
    """One problem in the command line's words."""
    if e.param:
        return f"{FLAGS.get(e.param, e.param)}: {e.message}"
    if e.next_step in STEPS:
        weights = ", or --weights FILE" if command in ("eval", "bench") else ""
        given = getattr(e, "pull_args", {})  # the Hub file the caller named, as pull's flags
        target = " ".join([e.variant or "VARIANT"] + [f"--{k} {v}" for k, v in given.items() if v])
        return f"{e.message}; {STEPS[e.next_step].format(v=target, weights=weights)}"
    return str(e)


def to_click(e: S2MLPError, command: str | None) -> click.ClickException:
    """Exit 2 when any problem is the user's argument, else 1; every problem in one message."""
    problems = e.problems if isinstance(e, ProblemsError) else [e]
    message = "; ".join(say(p, command) for p in problems)
    if any(p.param for p in problems):
        return click.UsageError(message)
    return click.ClickException(message)
