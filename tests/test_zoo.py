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
        assert w.repo is None and w.sha256 is None and w.revision is None  # no placeholder to squat on


def test_names_aliases_and_suggestions() -> None:
    assert get_card("small").name == "s2mlpv2_small"
    assert get_card("MEDIUM").name == "s2mlpv2_medium"
    with pytest.raises(UnknownModelError, match="did you mean .*medium"):
        get_card("mediun")
    with pytest.raises(UnknownModelError, match=r"zoo.cards\(\) lists them all") as e:
        get_card("zzzzzz")
    assert e.value.next_step == "list_models"  # the CLI names its command: `s2mlp list` shows them all


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
        ({"sources__preprocess": _DELETE}, "missing field 'sources.preprocess'"),
        ({"sources": _DELETE}, "missing field 'sources'"),
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


# Every shipped card's eval transform, pinned to the source its `sources.preprocess` cites. A new card must
# be added here; a changed number must change here too, with its source.
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_VIP = "Andrew-Qibin/VisionPermutator at HEAD 2cab2ce"  # models/vip.py default_cfg, run by eval.sh
_GFNET = "raoyongming/GFNet infer.py"
PREPROCESS_PINS = {
    # S²-MLPv2: not in the paper; ViP-S/7 and ViP-M/7's transform (the skeleton it reuses)
    "s2mlpv2_small": (0.9, _IMAGENET, "2cab2ce"),
    "s2mlpv2_medium": (0.9, _IMAGENET, "2cab2ce"),
    "vip_s7": (0.9, _IMAGENET, _VIP),
    "vip_m7": (0.9, _IMAGENET, _VIP),
    "vip_l7": (0.875, _IMAGENET, _VIP),
    **{f"gfnet_{v}": (0.875, _IMAGENET, _GFNET) for v in ("ti", "xs", "s", "b", "h_ti", "h_s", "h_b")},
    # S²-MLP v1: not in the paper; DeiT's transform
    "s2mlp_deep": (0.875, _IMAGENET, "DeiT"),
    "s2mlp_wide": (0.875, _IMAGENET, "DeiT"),
}
# timm-built baselines: the card must equal timm's own pretrained cfg for the tag it cites
TIMM_TAGS = {
    "mixer_b16_224": "mixer_b16_224.goog_in21k_ft_in1k",
    "mixer_l16_224": "mixer_l16_224.goog_in21k_ft_in1k",
    "mixer_s16_224": "mixer_s16_224",
    "resmlp_24_224": "resmlp_24_224.fb_in1k",
    "gmlp_s16_224": "gmlp_s16_224.ra3_in1k",
}


def test_every_card_is_pinned_to_its_stated_preprocessing_source() -> None:
    zoo = load_cards()
    assert set(zoo) == set(PREPROCESS_PINS) | set(TIMM_TAGS), "a card without a preprocessing pin"
    for name, (crop_pct, (mean, std), cited) in PREPROCESS_PINS.items():
        p = zoo[name].preprocess
        assert (p.input_size, p.crop_pct, p.interpolation) == (224, crop_pct, "bicubic"), name
        assert (p.mean, p.std) == (mean, std), name
        assert cited in zoo[name].sources["preprocess"], name


def test_timm_baselines_match_timms_pretrained_cfg() -> None:
    from timm.models import get_pretrained_cfg

    zoo = load_cards()
    for name, tag in TIMM_TAGS.items():
        cfg = get_pretrained_cfg(tag)
        p = zoo[name].preprocess
        assert (3, p.input_size, p.input_size) == cfg.input_size, name
        assert (p.crop_pct, p.interpolation, p.mean, p.std) == (
            cfg.crop_pct,
            cfg.interpolation,
            cfg.mean,
            cfg.std,
        )
        assert tag.split(" ")[0] in zoo[name].sources["preprocess"], name
        if cfg.hf_hub_id:  # the card fetches the weights the cfg describes
            assert zoo[name].weights.repo == cfg.hf_hub_id, name


def test_vip_crops_follow_the_official_head_not_its_first_commit() -> None:
    # 29c2d36 had S/7 0.875 and L/7 0.9; a day later 5888c42 swapped them, and that is what HEAD runs
    crops = {n: get_card(n).preprocess.crop_pct for n in ("vip_s7", "vip_m7", "vip_l7")}
    assert crops == {"vip_s7": 0.9, "vip_m7": 0.9, "vip_l7": 0.875}
    assert get_card("vip_s7").preprocess.resize == 248 and get_card("vip_l7").preprocess.resize == 256
