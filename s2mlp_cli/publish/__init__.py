"""Publishing weights: the request and its evidence (`request`), the config and model card (`card`), and
the one Hub commit (`commit.push`)."""

from s2mlp_cli.publish.card import WEIGHTS_FILE, config_json, model_card
from s2mlp_cli.publish.commit import push
from s2mlp_cli.publish.request import Evidence, PushOptions, check

__all__ = ["WEIGHTS_FILE", "Evidence", "PushOptions", "check", "config_json", "model_card", "push"]
