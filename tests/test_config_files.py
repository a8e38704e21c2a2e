"""The configuration: the shipped files are valid, the schema is strict (a misspelt key
anywhere is an error naming it) and it is the one source of defaults (every default the
code keeps for direct use equals the schema's), and the per-dataset recipes resolve."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from snakemake.utils import update_config, validate

from avsrobust import byo, evaluate, features
from avsrobust.checkpoint_formats import FORMAT_NAMES, PUBLISHED_FORMATS
from avsrobust.losses import LOSS_DEFAULTS
from avsrobust.models import PRETRAINED_KEYS, build_model
from avsrobust.models.avsegformer import AVSEGFORMER_DEFAULTS
from avsrobust.models.small import SMALL_DEFAULTS
from avsrobust.models.tpavi import TPAVI_DEFAULTS
from avsrobust.negatives import NegativeSettings
from avsrobust.run_config import merge, training_config
from avsrobust.synthetic import SyntheticConfig
from avsrobust.train_config import TRAIN_DEFAULTS, resolve_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "config" / "schema.yaml")
RECIPES = sorted(p.name for p in (REPO / "config" / "recipes").glob("*.yaml"))


def validated(config: dict) -> dict:
    config = copy.deepcopy(config)
    validate(config, SCHEMA)  # fills defaults
    return config


def shipped(name: str) -> dict:
    return validated(yaml.safe_load((REPO / "config" / name).read_text()))


DEFAULTS = validated({})


@pytest.mark.parametrize("name", ["config.yaml", "avsbench.yaml"])
def test_config_file_is_valid_and_its_model_builds(name):
    config = shipped(name)
    assert config["training"]["seeds"] and config["evaluation"]["split"] == "test"
    for ds in config["datasets"]:
        for exp in config["experiments"]:
            model_cfg = {
                k: v
                for k, v in training_config(config, ds, exp, 0)["model"].items()
                if k not in PRETRAINED_KEYS
            }
            with torch.device("meta"):
                assert build_model(model_cfg) is not None


def test_config_yaml_states_the_schema_defaults():
    """config/config.yaml documents every default; it must not drift from the schema."""
    assert shipped("config.yaml") == DEFAULTS


# ----------------------------------------------------------------------------- strict schema
@pytest.mark.parametrize(
    "config, key",
    [
        ({"evaluation": {"splitt": "test"}}, "splitt"),
        ({"experiments": {"robust": {"negative_ratio": {"noise": 0.1}}}}, "negative_ratio"),
        ({"training": {"model": {"name": "small", "nmae": "x"}}}, "nmae"),
        ({"training": {"model": {"name": "tpavi", "widths": [8, 8, 8]}}}, "widths"),
        ({"training": {"epoch": 3}}, "epoch"),
        ({"training": {"loss": {"av_wieght": 0.5}}}, "av_wieght"),
        ({"training": {"per_dataset": {"ms3": {"epochz": 30}}}}, "epochz"),
        ({"training": {"per_dataset": {"avss": {"epochs": 30}}}}, "avss"),
        ({"training": {"per_dataset": {"ms3": {"seeds": [1]}}}}, "seeds"),
        ({"experiments": {"r": {"per_dataset": {"s4": {"negative_ratio": {}}}}}}, "negative_ratio"),
        ({"experiments": {"r": {"image_size": 128}}}, "image_size"),
        ({"synthetic": {"s4_video": {"train": 1}}}, "s4_video"),
        ({"negative_audio": {"noise_color": "pink"}}, "noise_color"),
    ],
)
def test_schema_rejects_an_unknown_key_anywhere(config, key):
    with pytest.raises(Exception, match=key):
        validated(config)


def test_schema_fills_no_default_into_overrides():
    """Experiments reuse the training keys ($ref) but receive none of training's defaults:
    a default there would override the training block."""
    config = validated({"experiments": {"e": {"per_dataset": {"ms3": {}}}}})
    assert config["experiments"] == {"e": {"per_dataset": {"ms3": {}}}}
    config = validated({"training": {"per_dataset": {"ms3": {"loss": {}}}}})
    assert config["training"]["per_dataset"] == {"ms3": {"loss": {}}}


def test_every_training_default_has_its_type_in_the_shared_recipe():
    """training lists the recipe keys' defaults; their types live once, in $defs/recipe
    (training may only narrow one with ``not``: epochs, whose null means something in an
    override only)."""
    schema = yaml.safe_load(Path(SCHEMA).read_text())
    training = schema["properties"]["training"]["properties"]
    own = {"image_size", "seeds", "gpus", "per_dataset"}
    recipe = schema["$defs"]["recipe"]["properties"]
    assert set(training) - own == set(recipe)
    for key in set(training) - own:
        assert set(training[key]) <= {"default", "required", "properties", "not"}, key
    assert set(training["loss"]["properties"]) == set(recipe["loss"]["properties"])


def test_schema_model_keys_are_the_models_keys():
    schema = yaml.safe_load(Path(SCHEMA).read_text())
    model = schema["$defs"]["model"]
    per_name = {
        branch["if"]["properties"]["name"]["const"]: set(branch["then"]["propertyNames"]["enum"])
        for branch in model["allOf"]
    }
    assert per_name == {
        "small": set(SMALL_DEFAULTS),
        "tpavi": set(TPAVI_DEFAULTS),
        "avsegformer": set(AVSEGFORMER_DEFAULTS),
    }
    assert set(model["properties"]) == set().union(*per_name.values())
    assert set(model["properties"]["name"]["enum"]) == set(per_name)


# ----------------------------------------------------------------------------- one source
def test_training_defaults_are_the_schemas():
    training = DEFAULTS["training"]
    run_keys = set(training) - {"image_size", "seeds", "gpus"}
    assert run_keys == set(TRAIN_DEFAULTS) - {"seed", "negative_ratios"}
    for key in run_keys:
        assert TRAIN_DEFAULTS[key] == training[key], key
    assert training["loss"] == LOSS_DEFAULTS
    assert TRAIN_DEFAULTS["seed"] == training["seeds"][0]
    assert (
        TRAIN_DEFAULTS["negative_ratios"] == DEFAULTS["experiments"]["baseline"]["negative_ratios"]
    )


def test_negative_audio_defaults_are_the_schemas():
    na = DEFAULTS["negative_audio"]
    assert NegativeSettings() == NegativeSettings.from_config(DEFAULTS)
    assert NegativeSettings().noise_level_dbfs == na["noise_level_dbfs"]


def test_synthetic_defaults_are_the_schemas():
    cfg = SyntheticConfig()
    assert SyntheticConfig.from_mapping(DEFAULTS["synthetic"]) == cfg
    schema_keys = set(DEFAULTS["synthetic"])
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    assert {k: fields[k] for k in schema_keys} == DEFAULTS["synthetic"]


def test_feature_and_evaluation_defaults_are_the_schemas():
    f = DEFAULTS["features"]
    assert (
        f["batch_size"],
        f["seconds"],
        f["device"],
    ) == (features.BATCH_SIZE, features.SECONDS, features.DEVICE)
    e = DEFAULTS["evaluation"]
    assert e["batch_size"] == evaluate.BATCH_SIZE
    assert e["avsbench_batch_videos"] == evaluate.AVSBENCH_BATCH_VIDEOS
    args = byo._parser().parse_args(
        ["--avsbench-root", "r", "--dataset", "s4", "--predictions", "p"]
    )
    assert args.avsbench_batch_videos == e["avsbench_batch_videos"]


def test_external_checkpoint_formats_are_the_importers():
    """The schema's format names are avsrobust.checkpoint_formats' (and the importer's), the
    block is closed, and a format's training size is AVSBench's 224 or AVSegFormer's 512."""
    from avsrobust.models.published import FORMATS

    schema = yaml.safe_load(Path(SCHEMA).read_text())
    block = schema["properties"]["external_checkpoints"]["additionalProperties"]
    assert tuple(block["properties"]["format"]["enum"]) == FORMAT_NAMES == tuple(FORMATS)
    assert block["additionalProperties"] is False
    assert {n: f.image_size for n, f in PUBLISHED_FORMATS.items()} == {
        n: 224 if n.startswith("avsbench-tpavi") else 512 for n in FORMAT_NAMES
    }
    with pytest.raises(Exception, match="s5"):
        validated({"external_checkpoints": {"x": {"format": "avsegformer-r50", "s5": "f"}}})
    with pytest.raises(Exception, match="avsegformer-r101"):
        validated({"external_checkpoints": {"x": {"format": "avsegformer-r101", "s4": "f"}}})
    with pytest.raises(Exception, match="format"):
        validated({"external_checkpoints": {"x": {"s4": "f"}}})


# ----------------------------------------------------------------------------- per dataset
def test_merge_order_and_rules():
    config = validated(
        {
            "training": {
                "epochs": 5,
                "loss": {"iou_weight": 0.5},
                "per_dataset": {"ms3": {"epochs": 7, "loss": {"av_weight": 0.5}}},
            },
            "experiments": {
                "r": {
                    "lr": 0.01,
                    "negative_ratios": {"noise": 0.1, "silence": 0.2},
                    "per_dataset": {"ms3": {"lr": 0.02, "negative_ratios": {"noise": 0.3}}},
                },
                "m": {"model": {"name": "tpavi", "tpavi_stages": [3]}},
            },
        }
    )
    s4 = training_config(config, "s4", "r", 1)
    ms3 = training_config(config, "ms3", "r", 1)
    assert (s4["epochs"], s4["lr"], s4["loss"]["av_weight"]) == (5, 0.01, 0.0)
    assert (ms3["epochs"], ms3["lr"], ms3["loss"]) == (
        7,
        0.02,
        {**LOSS_DEFAULTS, "iou_weight": 0.5, "av_weight": 0.5},
    )
    assert s4["negative_ratios"] == {"noise": 0.1, "silence": 0.2}
    assert ms3["negative_ratios"] == {"noise": 0.3, "silence": 0.2}  # merged key by key
    assert (ms3["seed"], ms3["dataset"], ms3["negatives"]) == (1, "ms3", config["negatives"])
    assert not {"seeds", "gpus", "per_dataset"} & set(ms3)
    # another model replaces the model settings; the same model merges them
    assert training_config(config, "s4", "m", 0)["model"] == {"name": "tpavi", "tpavi_stages": [3]}
    assert merge({"model": {"name": "small", "channels": 8}}, {"model": {"widths": [1, 2, 3]}}) == {
        "model": {"name": "small", "channels": 8, "widths": [1, 2, 3]}
    }
    assert config["training"]["per_dataset"]["ms3"] == {"epochs": 7, "loss": {"av_weight": 0.5}}


def test_dropped_negative_types_warn():
    config = validated({"negatives": ["silence"]})
    told = []
    cfg = training_config(config, "s4", "robust", 0, warn=told.append)
    assert cfg["negative_ratios"] == {"silence": 0.125}
    assert told and "noise" in told[0] and "offscreen" in told[0]


def test_avsbench_yaml_holds_both_published_recipes():
    """domain.md section 6: Adam 1e-4, batch 4, 224 px; S4 15 epochs, BCE (first frame only:
    the S4 train masks); MS3 30 epochs, BCE on all frames + 0.5 x the A-V matching loss."""
    config = shipped("avsbench.yaml")
    assert set(config["experiments"]) == {"baseline", "robust"}
    for exp in config["experiments"]:
        for ds, epochs, av in (("s4", 15, 0.0), ("ms3", 30, 0.5)):
            c = training_config(config, ds, exp, 0)
            assert c["model"]["name"] == "tpavi", (ds, exp)
            assert (c["optimizer"], c["lr"], c["weight_decay"]) == ("adam", 0.0001, 0.0), (ds, exp)
            assert c["lr_schedule"] == "constant", (ds, exp)  # the small model's cosine is not
            assert c["batch_size"] == 4, (ds, exp)
            assert c["image_size"] == 224 and c["epochs"] == epochs, (ds, exp)
            assert c["loss"]["iou_weight"] == 0.0 and c["loss"]["av_weight"] == av, (ds, exp)
            ratios = c["negative_ratios"]
            assert (ratios == {}) == (exp == "baseline"), (ds, exp)


def layered(*names: str, over_default: bool = True) -> dict:
    """The config ``snakemake --configfile <names>`` runs with: each file merged key by key
    (``update_config``) over config/config.yaml, the Snakefile's ``configfile``, then the
    schema's checks and defaults (``over_default=False``: the files alone)."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text()) if over_default else {}
    for name in names:
        update_config(config, yaml.safe_load((REPO / "config" / name).read_text()))
    return validated(config)


#: The published files and their (S4, MS3) epochs (domain.md section 6, README "Training").
PUBLISHED_EPOCHS = {
    ("avsbench.yaml",): (15, 30),
    **{
        ("avsbench.yaml", f"recipes/{r}"): (30, 60) if r.startswith("avsegformer") else (15, 30)
        for r in RECIPES
    },
}


@pytest.mark.parametrize("files", list(PUBLISHED_EPOCHS), ids="+".join)
def test_published_recipes_take_nothing_from_the_embedded_default(files):
    """config/config.yaml tunes the robust experiment for the small model (more epochs,
    best.pt by val_robust, in-batch off-screen terms); Snakemake merges every --configfile
    over it, so those keys must not reach a published recipe's runs."""
    merged, alone = layered(*files), layered(*files, over_default=False)
    assert set(merged["experiments"]) == set(alone["experiments"]) == {"baseline", "robust"}
    for exp in alone["experiments"]:
        for dataset, epochs in zip(("s4", "ms3"), PUBLISHED_EPOCHS[files], strict=True):
            cfg = resolve_config(training_config(merged, dataset, exp, 0))
            assert cfg == resolve_config(training_config(alone, dataset, exp, 0)), (exp, dataset)
            assert (cfg["epochs"], cfg["select_by"]) == (epochs, "val_miou"), (exp, dataset)


def test_epochs_null_in_an_override_keeps_the_layers_below():
    config = validated(
        {
            "training": {"epochs": 5, "per_dataset": {"ms3": {"epochs": 7}}},
            "experiments": {"r": {"epochs": None, "per_dataset": {"s4": {"epochs": None}}}},
        }
    )
    assert [training_config(config, ds, "r", 0)["epochs"] for ds in ("s4", "ms3")] == [5, 7]
    with pytest.raises(Exception, match="epochs"):
        validated({"training": {"epochs": None}})  # the recipe itself needs a number


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_layer_over_avsbench_yaml_per_dataset(recipe):
    """As `--configfile config/avsbench.yaml config/recipes/<recipe>` merges them."""
    config = yaml.safe_load((REPO / "config" / "avsbench.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / "config" / "recipes" / recipe).read_text()))
    config = validated(config)
    for exp in config["experiments"]:
        seen = {}
        for dataset in ("s4", "ms3"):
            cfg = resolve_config(training_config(config, dataset, exp, 0))
            model_cfg = {k: v for k, v in cfg["model"].items() if k not in PRETRAINED_KEYS}
            with torch.device("meta"):
                build_model(model_cfg, load_pretrained=False)
            seen[dataset] = cfg
        s4, ms3 = seen["s4"], seen["ms3"]
        assert ms3["epochs"] == 2 * s4["epochs"]
        if s4["model"]["name"] == "avsegformer":
            assert s4["loss"]["kind"] == "dice+mix" and config["training"]["image_size"] == 512
            assert (
                s4["model"]["freeze_backbone_epochs"],
                ms3["model"]["freeze_backbone_epochs"],
            ) == (5, 10)
            assert ms3["loss"]["av_weight"] == 0.0 and s4["lr"] == 2e-5
            assert s4["model"].get("robust", False) == (
                recipe == "avsegformer_robust.yaml" and exp == "robust"
            )
        else:
            assert ms3["loss"]["av_weight"] == 0.5 and s4["lr"] == 1e-4
