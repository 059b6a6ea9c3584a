"""Zoo cards: the shipped ones load and agree with the built models; bad cards fail naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from s2mlp_cli.errors import CardError, UnknownModelError
from s2mlp_cli.zoo import cards, get_card, load_cards, zoo_dir


def _write(directory: Path, name: str, **changes) -> Path:
    data = yaml.safe_load((zoo_dir() / "s2mlpv2_small.yaml").read_text())
    data["name"] = name
    data["aliases"] = []
    data["peers"] = []
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = data
        for p in parents:
            node = node[p]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


_DELETE = object()


def test_shipped_cards_load() -> None:
    zoo = cards()
    assert {"s2mlpv2_small", "s2mlpv2_medium"} <= set(zoo)
    small = zoo["s2mlpv2_small"]
    assert small.preprocess.crop_pct == 0.9 and small.preprocess.interpolation == "bicubic"
    assert small.paper["top1"] == 82.0 and zoo["s2mlpv2_medium"].paper["top1"] == 83.6


def test_s2mlpv2_cards_do_not_pretend_weights_exist() -> None:
    for name in ("s2mlpv2_small", "s2mlpv2_medium"):
        w = get_card(name).weights
        assert w.published is False and w.status == "not published"
        assert w.repo and w.sha256 is None and w.revision is None


def test_names_aliases_and_suggestions() -> None:
    assert get_card("small").name == "s2mlpv2_small"
    assert get_card("MEDIUM").name == "s2mlpv2_medium"
    with pytest.raises(UnknownModelError, match="did you mean .*medium"):
        get_card("mediun")
    with pytest.raises(UnknownModelError, match="s2mlp list"):
        get_card("zzzzzz")


def test_a_valid_copy_loads(tmp_path: Path) -> None:
    _write(tmp_path, "mine")
    assert load_cards(tmp_path)["mine"].params == 25133416


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": "red"}, "unknown field 'colour'"),
        ({"preprocess__crop": 0.9}, "unknown field 'preprocess.crop'"),
        ({"preprocess__crop_pct": "0.9"}, "field 'preprocess.crop_pct': expected a number in \\(0, 1\\]"),
        ({"preprocess__interpolation": "lanczos"}, "field 'preprocess.interpolation': expected one of"),
        ({"preprocess__mean": [0.5, 0.5]}, "field 'preprocess.mean': expected a list of 3 numbers"),
        ({"counts__params": "25M"}, "field 'counts.params': expected an integer"),
        ({"weights__published": "no"}, "field 'weights.published': expected true or false"),
        ({"weights__sha256": "abc"}, "field 'weights.sha256': expected a 64-hex sha256"),
        ({"family": "resnet"}, "field 'family': expected one of"),
        ({"arch": [1, 2]}, "field 'arch': expected a mapping"),
        ({"paper__title": _DELETE}, "missing field 'paper.title'"),
        ({"peers": ["vip_zz"]}, "field 'peers': 'vip_zz' is not a card"),
    ],
)
def test_bad_cards_name_file_and_field(tmp_path: Path, changes: dict, message: str) -> None:
    path = _write(tmp_path, "broken", **changes)
    with pytest.raises(CardError, match=message) as info:
        load_cards(tmp_path)
    assert str(path) in str(info.value)


def test_name_must_match_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "one")
    path.rename(tmp_path / "two.yaml")
    with pytest.raises(CardError, match="file is named 'two'"):
        load_cards(tmp_path)


def test_bad_yaml_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(CardError, match="no zoo cards"):
        load_cards(tmp_path)
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(CardError, match="bad.yaml: not valid YAML"):
        load_cards(tmp_path)


def test_alias_clash(tmp_path: Path) -> None:
    _write(tmp_path, "a", aliases=["x"])
    _write(tmp_path, "b", aliases=["x"])
    with pytest.raises(CardError, match="alias 'x' is already taken by 'a'"):
        load_cards(tmp_path)
