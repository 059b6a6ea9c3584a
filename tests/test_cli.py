"""The CLI through click's runner and, for the installed entry point, subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from helpers import Runner, cli

from s2mlp_cli.cli import COMMANDS, main
from s2mlp_cli.zoo import zoo_dir


def test_help_imports_no_torch() -> None:
    # every command's --help in a fresh interpreter; torch, timm and torchvision must stay unimported
    code = textwrap.dedent(
        f"""
        import sys
        from click.testing import CliRunner
        from s2mlp_cli.cli import main
        for args in [["--help"]] + [[name, "--help"] for name in {list(COMMANDS)!r}]:
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 0, (args, result.output)
        heavy = sorted(m for m in ("torch", "timm", "torchvision") if m in sys.modules)
        print(",".join(heavy) or "none")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "none"


def test_list_table_and_json() -> None:
    result = cli("list")
    assert result.exit_code == 0
    assert "s2mlpv2_small" in result.stdout and "25.13" in result.stdout and "not published" in result.stdout
    rows = json.loads(cli("list", "--json").stdout)["results"]
    small = next(r for r in rows if r["name"] == "s2mlpv2_small")
    assert small == {
        "name": "s2mlpv2_small",
        "family": "s2mlpv2",
        "aliases": ["small", "s2mlpv2_s7"],
        "params_m": 25.13,
        "gmacs": 6.9,
        "input_size": 224,
        "paper_top1": 82.0,
        "weights": "not published",
    }
    assert [r["name"] for r in rows][:2] == ["s2mlpv2_small", "s2mlpv2_medium"]


def test_list_family_filter() -> None:
    rows = json.loads(cli("list", "--family", "s2mlpv2", "--json").stdout)["results"]
    assert {r["family"] for r in rows} == {"s2mlpv2"}
    result = cli("list", "--family", "nope")
    assert result.exit_code == 2 and "no cards of family 'nope'" in result.stderr


def test_info_shows_the_whole_card() -> None:
    result = cli("info", "medium")
    assert result.exit_code == 0
    for text in ("s2mlpv2_medium", "[medium, s2mlpv2_m7]", "bicubic", "55303976", "83.6", "not published"):
        assert text in result.stdout
    card = json.loads(cli("info", "medium", "--json").stdout)
    assert card["arch"]["layers"] == [4, 3, 14, 3] and card["weights"]["status"] == "not published"
    assert card["preprocess"] == {
        "input_size": 224,
        "crop_pct": 0.9,
        "interpolation": "bicubic",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }


def test_info_says_where_the_numbers_come_from() -> None:
    result = Runner().invoke(main, ["info", "vip_l7"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    lines: dict[str, str] = {}
    key = ""
    for line in (ln for ln in result.stdout.splitlines() if ln.count("│") >= 3):  # a long value folds
        key = line.split("│")[1].strip() or key
        lines[key] = lines.get(key, "") + line
    assert "2cab2ce" in lines["sources.preprocess"] and "5888c42" in lines["sources.preprocess"]
    assert "0.875" in lines["preprocess.crop_pct"]
    for key in ("sources.counts", "sources.paper", "sources.weights"):
        assert key in lines
    card = json.loads(cli("info", "mixer_b16_224", "--json").stdout)
    cited = card["sources"]["preprocess"]
    assert "timm 1.0.31's pretrained_cfg for mixer_b16_224.goog_in21k_ft_in1k" in cited


def test_unknown_variant_is_a_usage_error_with_suggestions() -> None:
    result = cli("info", "smal")
    assert result.exit_code == 2
    assert "unknown model 'smal'; did you mean small" in result.stderr
    assert result.stdout == ""


def test_broken_zoo_is_one_line_exit_1(tmp_path: Path) -> None:
    data = yaml.safe_load((zoo_dir() / "s2mlpv2_small.yaml").read_text())
    data["preprocess"]["crop_pct"] = 2
    (tmp_path / "s2mlpv2_small.yaml").write_text(yaml.safe_dump(data))
    result = cli("list", env={"S2MLP_ZOO": str(tmp_path)})
    assert result.exit_code == 1
    assert "field 'preprocess.crop_pct'" in result.stderr and "Traceback" not in result.output


def test_unexpected_errors_are_one_line_unless_debugging(monkeypatch: pytest.MonkeyPatch) -> None:
    import s2mlp_cli.cli.list_cmd as list_cmd

    def boom():
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(list_cmd, "cards", boom)
    result = cli("list")
    assert result.exit_code == 1
    assert "unexpected RuntimeError: disk on fire (set S2MLP_DEBUG=1" in result.stderr
    assert "second line" not in result.stderr
    with pytest.raises(RuntimeError, match="disk on fire"):  # the traceback, for a bug report
        cli("list", env={"S2MLP_DEBUG": "1"})


def test_installed_entry_point_and_module() -> None:
    exe = Path(sys.executable).with_name("s2mlp")
    done = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip().startswith("s2mlp, version ")
    done = subprocess.run(
        [sys.executable, "-m", "s2mlp_cli", "list", "--json"], capture_output=True, text=True, check=True
    )
    assert any(r["name"] == "s2mlpv2_medium" for r in json.loads(done.stdout)["results"])
    done = subprocess.run([str(exe), "info", "nope"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_list_shows_every_variant_with_its_counts() -> None:
    from s2mlp_cli.zoo import cards

    rows = {r["name"]: r for r in json.loads(cli("list", "--json").stdout)["results"]}
    assert set(rows) == set(cards())
    for name, card in cards().items():
        assert rows[name]["params_m"] == round(card.params / 1e6, 2) and rows[name]["gmacs"] == card.gmacs
    assert rows["vip_s7"]["weights"] == "manual download" and rows["mixer_b16_224"]["weights"] == "hub"
    assert rows["mixer_s16_224"]["weights"] == "not published"
