"""Every example in README.md and docs/ is what the tool prints today, and every Python snippet runs.

The examples run once, in document order, in a sandbox of generated data (docs_examples.py); each one is
then checked on its own, so a failure names the file and line of the example that drifted."""

from __future__ import annotations

import pytest
from docs_examples import DOCS, ROOT, examples, make_sandbox, matches, run_console, run_python

pytestmark = pytest.mark.slow  # a real training step and a benchmark, in processes
EXAMPLES = examples()


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    cwd = tmp_path_factory.mktemp("docs")
    env = make_sandbox(cwd)
    assert not list(cwd.iterdir())  # a user's empty folder: the examples make what they use
    done: dict[str, object] = {}
    for ex in EXAMPLES:
        done[ex.where] = run_console(ex, cwd, env) if ex.kind == "console" else run_python(ex, cwd, env)
    return done


def test_the_docs_have_examples_and_the_readme_is_a_guide() -> None:
    readme = (ROOT / "README.md").read_text().splitlines()
    assert len(readme) <= 200, len(readme)
    kinds = {(ex.path.name, ex.kind) for ex in EXAMPLES}
    assert ("README.md", "console") in kinds and ("python.md", "python") in kinds
    for path in DOCS:  # every page links back to the README, every link points at a file that exists
        text = path.read_text()
        for target in (t.split(")")[0] for t in text.split("](")[1:]):
            if not target.startswith(("http", "#")):
                assert (path.parent / target).exists(), (path.name, target)
    commands = [c for ex in EXAMPLES if ex.kind == "console" for c, _ in ex.commands()]
    first = commands.index("s2mlp demo demo")  # the data the examples use, made by the tool before
    assert not [c for c in commands[:first] if "demo" in c]
    for command in ("s2mlp list", "s2mlp train", "s2mlp eval", "s2mlp bench", "s2mlp pull"):
        assert any(c.startswith(command) for c in commands), command


@pytest.mark.parametrize("example", EXAMPLES, ids=[ex.where for ex in EXAMPLES])
def test_example(example, ran) -> None:
    result = ran[example.where]
    if example.kind == "python":
        assert result.returncode == 0, f"{example.where}:\n{result.stderr}"
        return
    for command, shown, actual in result:
        assert shown, f"{example.where}: `{command}` shows no output"
        missing = matches(shown, actual)
        assert missing is None, (
            f"{example.where}: `{command}` no longer prints\n  {missing}\nit printed:\n{actual}"
        )


def test_masking_keeps_words_and_drops_numbers() -> None:
    from docs_examples import mask

    assert mask(" s2mlpv2_small     25.13   6.90  82.0%") == mask("s2mlpv2_small 3.1 12.00 81.9%")
    assert mask("────────") == mask("──")
    assert matches(["a 1", "c 3"], "a 2\nb\nc 4") is None and matches(["c", "a"], "a\nc") == "a"
