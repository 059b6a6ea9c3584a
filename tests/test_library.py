"""The library under the CLI: layers that import only downward, one weights resolver, the same numbers
from Python as from the command line."""

from __future__ import annotations

import ast
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import fakeimagenet as fi
import pytest
import torch
import yaml
from fakehub import FakeHub
from helpers import Runner
from safetensors.torch import save

import s2mlp_cli
from s2mlp_cli.cli import main
from s2mlp_cli.errors import CardError
from s2mlp_cli.zoo import load_cards, zoo_dir

PACKAGE = Path(s2mlp_cli.__file__).parent
# Each module's layer; a module imports only from its own layer or below, by statement or by name
# (importlib, "module:attr" strings, `python -m` module names). Same-layer imports are allowed.
LAYERS = {
    "version": 0,
    "errors": 0,
    "files": 0,
    "schema": 0,
    "families": 1,
    "classes": 1,
    "report": 1,
    "console": 2,
    "zoo": 2,
    "runtime": 2,
    "weights": 3,
    "arch": 3,
    "sources": 3,
    "data": 3,
    "distributed": 3,
    "api": 5,
    "models": 6,
    "evaluate": 7,
    "bench": 7,
    "publish": 7,
    "pull": 7,
    "demo": 7,
    "predict": 7,
    "export": 7,
    "__init__": 8,
    "timm_train": 8,
    "train": 8,
    "cli": 9,
    "__main__": 10,
}
_NAMED = re.compile(r"^s2mlp_cli(\.[a-z_]+)*(:[A-Za-z_]+)?$")


def _layer(module: str) -> int:
    return LAYERS[module.removeprefix("s2mlp_cli").lstrip(".").split(".")[0] or "__init__"]


def _is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").exists() or path.is_dir()


def _imports(source: str) -> list[tuple[int, str]]:
    """Every `s2mlp_cli` module a file reaches: import statements (function-level ones too), and names
    in strings ("s2mlp_cli.x", "s2mlp_cli.x:attr", as importlib and `python -m` take them)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("s2mlp_cli")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("s2mlp_cli"):
            for a in node.names:  # `from s2mlp_cli import api` imports the module s2mlp_cli.api
                sub = f"{node.module}.{a.name}"
                found.append((node.lineno, sub if _is_module(sub) else node.module))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _NAMED.match(node.value):
            module = node.value.partition(":")[0]
            if _is_module(module):
                found.append((node.lineno, module))
    return found


def test_layers_import_only_downward() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("").as_posix().replace("/", ".")
        mine = _layer(rel)
        for line, target in _imports(path.read_text()):
            if target != "s2mlp_cli" and _layer(target) > mine:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} reaches {target}")
    assert not wrong, wrong


def test_every_module_has_a_layer_and_the_layering_test_sees_names() -> None:
    modules = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")}
    modules.discard("zoo")  # the cards' folder inside an installed wheel, no module
    assert modules <= set(LAYERS), modules - set(LAYERS)
    # an upward crossing written as a name is seen: a model file that would call the api by name
    probe = 'import importlib\nimportlib.import_module("s2mlp_cli.api").load_pretrained\n'
    assert _imports(probe) == [(2, "s2mlp_cli.api")]
    assert _imports('COMMANDS = {"list": "s2mlp_cli.cli.list_cmd:list_command"}') == [
        (1, "s2mlp_cli.cli.list_cmd")
    ]
    runner = (PACKAGE / "bench" / "runner.py").read_text()
    assert "s2mlp_cli.bench.worker" in [t for _, t in _imports(runner)]  # the worker, run as `python -m`


def test_no_module_is_longer_than_400_lines() -> None:
    long = {p.relative_to(PACKAGE).as_posix(): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}  # fmt: skip
    assert not long, long


def test_no_function_is_60_lines_or_longer() -> None:
    """Docstring included: a function a reader cannot see whole is split where a part wants a name."""
    import ast

    long = {
        f"{p.relative_to(PACKAGE).as_posix()}:{node.name}": n
        for p in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (n := node.end_lineno - node.lineno + 1) >= 60
    }
    assert not long, long


def test_models_import_registers_with_timm_without_the_cli() -> None:
    code = "import sys, timm, s2mlp_cli.models; print(timm.is_model('s2mlpv2_small'), "
    code += "sorted(m for m in sys.modules if m.startswith('s2mlp_cli.cli')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "[]"]


def test_timm_pretrained_goes_through_the_resolver() -> None:
    import timm

    import s2mlp_cli.models  # noqa: F401  (registers the zoo with timm)

    # the library's own words: no command-line flags
    with pytest.raises(s2mlp_cli.S2MLPError, match="published for s2mlpv2_small.*use your own: a Hub") as e:
        timm.create_model("s2mlpv2_small", pretrained=True)
    assert "--" not in str(e.value) and e.value.next_step == "own_weights"


def test_pull_then_eval_uses_the_pulled_source(zoo: Path, tmp_path: Path, monkeypatch) -> None:
    """`s2mlp pull evaltiny --repo me/evaltiny`, then `s2mlp eval --variant evaltiny` with no --weights."""
    from s2mlp_cli.evaluate import EvalOptions, run

    torch.manual_seed(0)
    model = s2mlp_cli.create_model("evaltiny")
    items = fi.make_images()[:6]
    root = fi.class_folders(tmp_path / "val", items, [0, 1, 2, 3, 4, 5])
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        hub.add("me/evaltiny", {"model.safetensors": save(model.state_dict())})
        before = Runner().invoke(main, ["eval", "--variant", "evaltiny", "--data", str(root)])
        assert before.exit_code == 1 and "no pretrained weights are published for evaltiny" in before.stderr
        assert "s2mlp pull evaltiny --repo ORG/NAME" in before.stderr and "--weights FILE" in before.stderr

        pulled = Runner().invoke(main, ["pull", "evaltiny", "--repo", "me/evaltiny"])
        assert pulled.exit_code == 0, pulled.stderr
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # from here on, the cache alone

    args = ["eval", "--variant", "evaltiny", "--data", str(root), *"--device cpu --workers 0 --json".split()]
    result = Runner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    (cli_row,) = json.loads(result.stdout)["results"]
    assert (
        cli_row["weights"] == "me/evaltiny@main/model.safetensors" and cli_row["weights_origin"] == "pulled"
    )

    # a notebook gets the same numbers from the library
    doc = run(EvalOptions(variants=["evaltiny"], data=root, device="cpu", workers=0, progress=False))
    (lib_row,) = doc["results"]
    for key in ("top1", "top5", "loss", "images", "weights", "weights_origin"):
        assert lib_row[key] == cli_row[key], key
    rows = json.loads(Runner().invoke(main, ["list", "--json"]).stdout)["results"]
    assert {r["name"]: r["weights"] for r in rows}["evaltiny"] == "pulled (me/evaltiny)"


def test_a_weights_file_beats_the_pulled_source(zoo: Path, tmp_path: Path) -> None:
    from s2mlp_cli import api, sources
    from s2mlp_cli.zoo import get_card

    card = get_card("evaltiny")
    path = tmp_path / "mine.safetensors"
    path.write_bytes(save(s2mlp_cli.create_model("evaltiny").state_dict()))
    choice = sources.choose(card, path)
    assert (choice.kind, choice.origin, choice.path) == ("file", "given", path)
    pulled = api.pull(card, weights=path)
    assert pulled.origin == "given" and pulled.verified == "strict load"


def test_cards_hold_the_input_size_once(tmp_path: Path) -> None:
    data = yaml.safe_load((zoo_dir() / "gfnet_s.yaml").read_text())
    data["arch"]["img_size"] = 224
    (tmp_path / "gfnet_s.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(CardError, match="arch.img_size'.*preprocess.input_size only"):
        load_cards(tmp_path)
    model = s2mlp_cli.create_model("gfnet_ti", img_size=384)
    assert model.pretrained_cfg["input_size"] == (3, 384, 384)  # the data config follows the override


def test_result_files_respect_the_umask(tmp_path: Path) -> None:
    from s2mlp_cli.files import write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "r.json", "{}")
        assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
        os.umask(0o077)
        write_text_atomic(tmp_path / "s.json", "{}")
        assert stat.S_IMODE((tmp_path / "s.json").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_run_settings_are_declared_once() -> None:
    """device, amp, channels-last, compile, tf32 and threads: declared in runtime.RunSettings only; every
    request and what a job hands down is one (a resolved device may change the default, nothing else)."""
    import ast

    from s2mlp_cli.bench import BenchOptions
    from s2mlp_cli.bench.measurement import Settings
    from s2mlp_cli.evaluate import EvalOptions
    from s2mlp_cli.evaluate.feed import Options
    from s2mlp_cli.predict import PredictOptions
    from s2mlp_cli.runtime import RunSettings
    from s2mlp_cli.train import TrainOptions

    for cls in (EvalOptions, TrainOptions, BenchOptions, PredictOptions, Settings, Options):
        assert issubclass(cls, RunSettings), cls
    names = {"amp", "channels_last", "compile", "tf32", "threads"}
    homes = {
        f"{p.relative_to(PACKAGE).as_posix()}:{node.name}"
        for p in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.ClassDef)
        and any(isinstance(a, ast.AnnAssign) and getattr(a.target, "id", None) in names for a in node.body)
    }
    assert homes == {"runtime.py:RunSettings", "bench/measurement.py:Row"}, homes  # Row: what a row ran with
    want = {"device": "cuda", "amp": "bf16", "channels_last": False, "compile": False, "tf32": False}
    got = EvalOptions(["small"], "/data", amp="bf16").run_settings(device="cuda")
    assert got == {**want, "threads": None}
