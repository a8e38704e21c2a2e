"""The shipped configuration files are valid: the schema accepts them and the model
configs they name build (without weight files)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from snakemake.utils import update_config, validate

from avsrobust.models import PRETRAINED_KEYS, build_model
from avsrobust.run_config import training_settings
from avsrobust.train import resolve_config

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.name for p in (REPO / "config" / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("name", ["config.yaml", "avsbench.yaml"])
def test_config_file_is_valid_and_its_model_builds(name):
    config = yaml.safe_load((REPO / "config" / name).read_text())
    validate(config, str(REPO / "config" / "schema.yaml"))  # also fills defaults
    assert config["training"]["seeds"] and config["evaluation"]["split"] == "test"
    model_cfg = {k: v for k, v in config["training"]["model"].items() if k not in PRETRAINED_KEYS}
    with torch.device("meta"):
        assert build_model(model_cfg) is not None


def test_schema_rejects_an_unknown_evaluation_key():
    config = {"evaluation": {"splitt": "test"}}
    with pytest.raises(Exception, match="splitt"):
        validate(config, str(REPO / "config" / "schema.yaml"))


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_layer_over_avsbench_yaml_per_dataset(recipe):
    """As `--configfile config/avsbench.yaml config/recipes/<recipe>` merges them."""
    config = yaml.safe_load((REPO / "config" / "avsbench.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / "config" / "recipes" / recipe).read_text()))
    validate(config, str(REPO / "config" / "schema.yaml"))
    seen = {}
    for dataset in ("s4", "ms3"):
        cfg = resolve_config(training_settings(config["training"], dataset))
        model_cfg = {k: v for k, v in cfg["model"].items() if k not in PRETRAINED_KEYS}
        with torch.device("meta"):
            build_model(model_cfg, load_pretrained=False)
        seen[dataset] = cfg
    s4, ms3 = seen["s4"], seen["ms3"]
    assert ms3["epochs"] == 2 * s4["epochs"]
    if s4["model"]["name"] == "avsegformer":
        assert s4["loss"]["kind"] == "dice+mix" and config["training"]["image_size"] == 512
        assert (s4["model"]["freeze_backbone_epochs"], ms3["model"]["freeze_backbone_epochs"]) == (
            5,
            10,
        )
        assert ms3["loss"]["av_weight"] == 0.0 and s4["lr"] == 2e-5
    else:
        assert ms3["loss"]["av_weight"] == 0.5 and s4["lr"] == 1e-4


def test_by_dataset_merges_mappings_and_replaces_the_rest():
    training = {
        "epochs": 15,
        "seeds": [0],
        "model": {"name": "tpavi", "channels": 64},
        "loss": {"iou_weight": 1.0},
        "by_dataset": {"ms3": {"epochs": 30, "loss": {"av_weight": 0.5}}},
    }
    assert training_settings(training, "s4") == {
        "epochs": 15,
        "model": {"name": "tpavi", "channels": 64},
        "loss": {"iou_weight": 1.0},
    }
    ms3 = training_settings(training, "ms3")
    assert ms3["epochs"] == 30 and ms3["loss"] == {"iou_weight": 1.0, "av_weight": 0.5}
    assert training["loss"] == {"iou_weight": 1.0}  # the config itself is left alone
