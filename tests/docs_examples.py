"""The examples in README.md and docs/*.md, run as written in a sandbox of generated data.

A ```console block is commands (`$ ...`) each followed by the output it prints. The sandbox is an empty
folder with an S2MLP_HOME and Hugging Face cache of its own, no network (HF_HUB_OFFLINE=1) and 100
columns: what the examples use they make with the commands they show (`s2mlp demo demo` first). Blocks
run in document order (README first), so a later example may use what an earlier one made.

An example matches when every line it shows appears in the output, in order, with numbers (which vary
between machines and runs), runs of spaces and table rules masked. ```python blocks are run as written.

    python tests/docs_examples.py [FILE...]           prints what each example prints now
    python tests/docs_examples.py --write [FILE...]   and puts that into the examples, for a change on purpose
                                                      (whole outputs: trim what the page need not show)
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Example:
    path: Path
    line: int
    kind: str  # console or python
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def commands(self) -> list[tuple[str, list[str]]]:
        """(command, the output lines shown for it)."""
        out: list[tuple[str, list[str]]] = []
        for line in self.text.splitlines():
            if line.startswith("$ "):
                out.append((line[2:], []))
            elif out:
                out[-1][1].append(line)
        return out


def examples(paths: list[Path] | None = None) -> list[Example]:
    found = []
    for path in paths or DOCS:
        kind, start, body = None, 0, []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            m = FENCE.match(line)
            if m and kind is None:
                kind, start, body = m[1] or "text", n, []
            elif m and not m[1]:
                if kind in ("console", "python"):
                    found.append(Example(path, start, kind, "\n".join(body)))
                kind = None
            elif kind is not None:
                body.append(line)
    return found


def mask(line: str) -> str:
    line = re.sub(r"\b[0-9a-f]{12,}\b", "#", line)  # hashes: cache entries, commits
    line = re.sub(r"\d+(?:[.,]\d+)*", "#", line)
    line = re.sub(r"[─━]+", "─", line)
    return re.sub(r"\s+", " ", line).strip()


def matches(shown: list[str], actual: str) -> str | None:
    """None when every shown line is in the output in order (masked); else the first one missing."""
    lines = [mask(a) for a in actual.splitlines()]
    at = 0
    for want in (mask(s) for s in shown):
        if not want:
            continue
        while at < len(lines) and lines[at] != want:
            at += 1
        if at == len(lines):
            return want
        at += 1
    return None


def make_sandbox(root: Path) -> dict[str, str]:
    """The environment the examples run in: an empty folder (the README's first example makes `demo/`
    with `s2mlp demo`, as a user would), its own homes and caches, no network."""
    beside = root.with_name(f"{root.name}-env")  # shims and homes beside the folder, not in it
    bin_dir = beside / "bin"
    bin_dir.mkdir(parents=True)
    for name, target in (("s2mlp", f'"{sys.executable}" -m s2mlp_cli'), ("python", f'"{sys.executable}"')):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {target} "$@"\n')
        shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "S2MLP_"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
        S2MLP_HOME=str(beside / "home"),
        HF_HOME=str(beside / "hf"),
        HF_HUB_OFFLINE="1",
        COLUMNS="100",
        PYTHONUNBUFFERED="1",
        PYTHONWARNINGS="ignore",
    )
    return env


IN_PROCESS = ("train", "eval", "bench", "list", "info", "pull", "demo", "predict", "export")
# No HF_* variable in this process: huggingface_hub reads them once, when it is first imported, and an
# example run first would fix them for every test after it (none of these commands reaches the Hub).
IN_PROCESS_ENV = ("S2MLP_HOME", "COLUMNS", "PYTHONWARNINGS")


def run_console(example: Example, cwd: Path, env: dict[str, str]) -> list[tuple[str, list[str], str]]:
    """Each command with what the example shows and what it printed (stdout and stderr, in order).

    A plain `s2mlp train|eval|bench|list|info|pull ...` runs in this process (what the terminal would show:
    click's runner interleaves stdout and stderr), which spares each one the seconds of importing torch;
    anything else (pipes, environment prefixes, other commands) runs in bash as written."""
    done = []
    for command, shown in example.commands():
        words = shlex.split(command)
        plain = (
            not set("|&;<>$`") & set(command)
            and words[:1] == ["s2mlp"]
            and words[1:2] in ([c] for c in IN_PROCESS)
        )
        if plain:
            text = _in_process(words[1:], cwd, env)
        else:
            proc = subprocess.run(
                ["bash", "-c", command],
                cwd=cwd,
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            text = proc.stdout
        text = text.replace(env["S2MLP_HOME"], "$S2MLP_HOME").replace(env["HF_HOME"], "$HF_HOME")
        text = text.replace(str(cwd), ".")
        done.append((command, shown, text))
    return done


def _in_process(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    from click.testing import CliRunner

    from s2mlp_cli.cli import main as cli

    here = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli, args, env={k: env[k] for k in IN_PROCESS_ENV}, prog_name="s2mlp")
    finally:
        os.chdir(here)
    return result.output


def run_python(example: Example, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The snippet run as written, in this process (torch is imported once for all of them), in the
    sandbox's folder and environment; its output and any traceback captured."""
    import contextlib
    import io
    import traceback

    out, err = io.StringIO(), io.StringIO()
    here, saved = Path.cwd(), dict(os.environ)
    os.chdir(cwd)
    os.environ.update({k: env[k] for k in IN_PROCESS_ENV})
    code = 0
    if "s2mlp_cli.models" in sys.modules:  # imported earlier under another test's zoo: the shipped cards too
        sys.modules["s2mlp_cli.models"].register()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            exec(compile(example.text, example.where, "exec"), {"__name__": "__main__"})
    except Exception:
        code = 1
        err.write(traceback.format_exc())
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess([example.where], code, out.getvalue(), err.getvalue())


def main(argv: list[str]) -> None:
    import tempfile

    write = "--write" in argv
    paths = [Path(a).resolve() for a in argv if a != "--write"] or None
    new_text: dict[tuple[Path, int], str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        env = make_sandbox(cwd)
        for ex in examples(None):  # every block runs, in order: later ones use what earlier ones made
            if ex.kind == "console":
                done = run_console(ex, cwd, env)
                body = "".join(f"$ {c}\n" + "\n".join(ln.rstrip() for ln in a.rstrip().splitlines()) + "\n"
                               for c, _, a in done)  # fmt: skip
                new_text[(ex.path, ex.line)] = body
                if paths is None or ex.path in paths:
                    print(f"--- {ex.where}\n{body}", end="")
            elif paths is None or ex.path in paths:
                proc = run_python(ex, cwd, env)
                print(f"--- {ex.where} (python): exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
    if write:
        for path in paths or DOCS:
            lines = path.read_text(encoding="utf-8").splitlines()
            for (p, start), body in sorted(new_text.items(), key=lambda kv: -kv[0][1]):
                if p != path:
                    continue
                end = next(i for i in range(start, len(lines)) if lines[i].startswith("```"))
                lines[start:end] = body.rstrip("\n").splitlines()
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
