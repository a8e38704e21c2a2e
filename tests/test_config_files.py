"""The shipped configuration files are valid: the schema accepts them and the model
configs they name build (without weight files)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from avsrobust.models import build_model

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["config.yaml", "avsbench.yaml"])
def test_config_file_is_valid_and_its_model_builds(name):
    config = yaml.safe_load((REPO / "config" / name).read_text())
    validate(config, str(REPO / "config" / "schema.yaml"))  # also fills defaults
    assert config["training"]["seeds"] and config["evaluation"]["split"] == "test"
    model_cfg = {
        k: v
        for k, v in config["training"]["model"].items()
        if k not in ("resnet50_weights", "vggish_weights")
    }
    assert build_model(model_cfg) is not None


def test_schema_rejects_an_unknown_evaluation_key():
    config = {"evaluation": {"splitt": "test"}}
    with pytest.raises(Exception, match="splitt"):
        validate(config, str(REPO / "config" / "schema.yaml"))
