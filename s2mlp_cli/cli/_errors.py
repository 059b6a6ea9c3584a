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
    "crop_pct": "--crop-pct",
    "filename": "--filename",
    "names": "ENTRY",
    "recipe": "--recipe",
    "overrides": "--set",
    "num_classes": "--num-classes",
    "init": "--init",
    "val": "--val",
    "plot": "--plot",
    "real_labels": "--real-labels",
    "compare_with": "--compare-with",
    "folder": "FOLDER",
    "paths": "PATH",
    "topk": "--topk",
    "opset": "--opset",
    "runtimes": "--runtime",
}
# the library's next steps (`S2MLPError.next_step`) as the commands and flags that take them
STEPS = {
    "own_weights": "to use your own: s2mlp pull {v} --repo ORG/NAME, or s2mlp pull {v} --from FILE{weights}",
    "import": "then import it: s2mlp pull {v} --from FILE",
    "pull_online": "run `s2mlp pull {v}` while online first",
    "give_devkit": "pass --devkit DIR",
    "use_cpu": "use --device cpu",
    "smaller_batch": "lower --batch-size or --workers, or free memory",
    "list_models": "`s2mlp list` shows them all",
    "cache_list": "see `s2mlp cache list`",
    "json_result": "write it with --output FILE.json",
    "eval_pushed": "evaluate the file you push (`s2mlp eval --weights FILE --output X.json`)",
    "resume": "continue it with --resume (the same command), or name a new --output",
    "num_classes": "pass --num-classes N to train on other class folders",
    "install_plot": "pip install matplotlib (from a checkout: pip install '.[plot]')",
}
# next steps that only some commands can word; elsewhere the library's advice stands
COMMAND_STEPS = {
    ("other_classes", "eval"): (
        "s2mlp eval scores ImageNet-1k's 1000 classes; evaluate a model trained on all of them"
    ),
}


def say(e: S2MLPError, command: str | None) -> str:
    """One problem in the command line's words: its flag first, then what went wrong, then the command
    that is the next step."""
    text = f"{FLAGS.get(e.param, e.param)}: {e.message}" if e.param else e.message
    if (step := COMMAND_STEPS.get((e.next_step, command))) is not None:
        return f"{text}; {step}"
    if e.next_step in STEPS:
        weights = ", or --weights FILE" if command in ("eval", "bench") else ""
        given = e.step_args  # e.g. the Hub file the caller named, as pull's flags
        target = " ".join([e.variant or "VARIANT"] + [f"--{k} {v}" for k, v in given.items() if v])
        return f"{text}; {STEPS[e.next_step].format(v=target, weights=weights)}"
    if e.advice:
        return f"{text}; {e.advice}"
    return text


def to_click(e: S2MLPError, command: str | None) -> click.ClickException:
    """Exit 2 when any problem is the user's argument, else 1; every problem in one message: one line
    for one problem, a short list (one per line, under the one "Error:" line) for several."""
    problems = e.problems if isinstance(e, ProblemsError) else [e]
    said = list(dict.fromkeys(say(p, command) for p in problems))
    message = said[0] if len(said) == 1 else f"{len(said)} problems:\n" + "\n".join(f"  - {s}" for s in said)
    if any(p.param for p in problems):
        return click.UsageError(message)
    return click.ClickException(message)
