"""A fuzz test of the command line: random option combinations over every command.

Every invocation must end in exit 0 (done), 1 (a failure, said in one line) or 2 (a usage error), with no
traceback and no "unexpected ... (set S2MLP_DEBUG=1 ...)" error (our catch-all for an exception nobody
meant). The options and their types are read from the click commands themselves, so a new option is
fuzzed without touching this file.

Found by it so far: `pull VARIANT --revision R` for a card with no Hub repository (an AttributeError).

The run is a fixed number of command lines (S2MLP_FUZZ_RUNS, default 200) from a fixed seed
(S2MLP_FUZZ_SEED, default 0), so every run tries the same ones; a failure prints the seed, the run's
number and the exact command line to reproduce it.
"""

from __future__ import annotations

import os
import random
import shlex
from pathlib import Path

import click
import pytest
from fakehub import FakeHub
from helpers import Runner, tiny_weights

from s2mlp_cli.cli import COMMANDS, main

RUNS = int(os.environ.get("S2MLP_FUZZ_RUNS", "200"))
SEED = int(os.environ.get("S2MLP_FUZZ_SEED", "0"))

NUMBERS = [
    "0",
    "1",
    "2",
    "-1",
    "17",
    "224",
    "1e308",
    "nan",
    "inf",
    "-inf",
    "0.5",
    "3.7",
    "99999999999",
    "x",
    "",
]
WORDS = ["", " ", "a/b/c", "../..", "/", "nameonly", "me/model", "²", "ü" * 300, "x" * 5000, "-", "--json"]
NAMES = ["tiny", "hubtiny", "vip_tiny", "evaltiny", "s2mlpv2_tiny", "nope", "", "medium", "tiny,vip_tiny"]


def _pools(tmp: Path) -> dict[str, list[str]]:
    """Paths a user might pass: missing, a folder, an empty file, a text file, a non-UTF-8 name, a file in a
    read-only folder, a symlink loop."""
    (tmp / "dir").mkdir()
    (tmp / "empty.pth").write_bytes(b"")
    (tmp / "text.safetensors").write_text("hello\n")
    (tmp / "results.json").write_text('{"results": []}')
    (tmp / "loop").symlink_to(tmp / "loop")
    odd = os.fsdecode(os.fsencode(str(tmp)) + b"/\xff\xfe.json")
    paths = [str(tmp / "missing"), str(tmp / "dir"), str(tmp / "empty.pth"), str(tmp / "text.safetensors")]
    paths += [str(tmp / "results.json"), str(tmp / "loop"), odd, str(tmp / "out.md"), str(tmp / "out.csv")]
    paths += ["/proc/self/status", "/dev/null", str(tmp / "dir" / "r.json")]
    return {"path": paths, "number": NUMBERS, "word": WORDS + NAMES, "name": NAMES}


def _value(param: click.Parameter, pools: dict[str, list[str]], rng: random.Random) -> str:
    kind = param.type
    if isinstance(kind, click.Choice):
        return rng.choice([*kind.choices, "bogus", ""])
    if isinstance(kind, click.types.IntParamType | click.types.FloatParamType):
        return rng.choice(pools["number"])
    name = (param.name or "").lower()
    if isinstance(kind, click.Path) or any(
        k in name for k in ("data", "weights", "output", "labels", "from")
    ):
        return rng.choice(pools["path"] + pools["word"][:4])
    if any(k in name for k in ("variant", "compare")):
        return rng.choice(pools["name"])
    if any(k in name for k in ("mean", "std")):
        return rng.choice(["0.5,0.5,0.5", "0,0,0", "nan,1,1", "1,2", "a,b,c", ""])
    if "batch" in name:
        return rng.choice(["1", "2", "1,2", "0", "-3", "1,,2", "x", ""])
    return rng.choice(pools["word"] + pools["number"][:4])


def _args(cmd: click.Command, pools: dict[str, list[str]], rng: random.Random, prefix=()) -> list[str]:
    args = list(prefix)
    options = [p for p in cmd.params if isinstance(p, click.Option) and p.name != "help"]
    for param in rng.sample(options, k=rng.randint(0, min(len(options), 6))):
        flag = rng.choice(param.opts)
        if param.is_flag:
            args.append(flag)
        else:
            args += [flag, _value(param, pools, rng)]
    for param in (p for p in cmd.params if isinstance(p, click.Argument)):
        for _ in range(rng.choice([0, 1, 1, 2]) if param.nargs == -1 else 1):
            args.append(rng.choice(pools["name"]) if rng.random() < 0.8 else _value(param, pools, rng))
    if rng.random() < 0.1:
        args.append(rng.choice(["--no-such-option", "extra", "-h"]))
    return args


@pytest.fixture
def offline_world(zoo: Path, monkeypatch: pytest.MonkeyPatch):
    """The tiny zoo, a fake Hub that holds one repository, no token, and quick bench and eval defaults."""
    with FakeHub() as hub:
        hub.add("testorg/hubtiny", {"model.safetensors": tiny_weights()[0]})
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield hub


@pytest.mark.slow  # processes
def test_random_command_lines_exit_0_1_or_2_without_a_traceback(
    offline_world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = (
        tmp_path / "cwd"
    )  # commands that write (demo, export, predict --output) write here, not in the repo
    work.mkdir()
    monkeypatch.chdir(work)
    rng = random.Random(SEED)
    pools = _pools(tmp_path)
    runner = Runner()
    commands = {name: main.get_command(click.Context(main), name) for name in COMMANDS}
    codes = {0: 0, 1: 0, 2: 0}
    for runs in range(1, RUNS + 1):
        name = rng.choice(sorted(commands))
        cmd = commands[name]
        if isinstance(cmd, click.Group):
            sub = rng.choice(sorted(cmd.commands))
            argv = [name, *_args(cmd.commands[sub], pools, rng, prefix=[sub])]
        else:
            argv = [name, *_args(cmd, pools, rng)]
        if name in ("eval", "bench") and "--device" not in argv:
            argv += ["--device", "cpu"]
        if name == "bench":  # kept quick: later flags win, and torch.compile takes ~30 s per model on a CPU
            argv = [a for a in argv if a != "--compile"] + [
                "--iters",
                "2",
                "--warmup",
                "0",
                "--timeout",
                "60",
            ]
        result = runner.invoke(main, argv, catch_exceptions=True)  # to print the command line that failed
        shown = f"seed {SEED}, run {runs}: s2mlp {shlex.join(argv)}"
        output = (result.stdout or "") + (result.stderr or "")
        assert result.exit_code in (0, 1, 2), f"{shown}\nexit {result.exit_code}\n{output}"
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            f"{shown}\n{result.exception!r}"
        )
        assert "Traceback" not in output and "S2MLP_DEBUG" not in output, f"{shown}\n{output}"
        if result.exit_code:
            errors = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
            assert len(errors) == 1, f"{shown}\n{result.stderr}"
        codes[result.exit_code] += 1
    print(f"fuzz: {RUNS} command lines, exit codes {codes}")
    assert codes[2] > 0 and codes[0] + codes[1] > 0
