"""Config validation, the clip index and input helpers shared by all rules."""

import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "../config/schema.yaml")

sys.path.insert(0, str(Path(workflow.basedir) / "workflow_scripts"))

from avsrobust import layout  # noqa: E402
from avsrobust.errors import InputError  # noqa: E402
from avsrobust.metadata import read_clips  # noqa: E402
from avsrobust.negatives import NegativeSettings  # noqa: E402
from avsrobust.offscreen_plan import plannable  # noqa: E402
from avsrobust.run_config import training_settings  # noqa: E402
from avsrobust.synthetic import SyntheticConfig, synthetic_index  # noqa: E402

SYNTHETIC = not config["avsbench_root"]
DATA_ROOT = "results/synthetic_avsbench" if SYNTHETIC else config["avsbench_root"]
AVSS = config["avss_metadata"] or str(Path(DATA_ROOT) / layout.AVSS_META)
DATASETS = config["datasets"]
SPLITS = config["splits"]
NEGATIVES = config["negatives"]
CONDITIONS = ["positive", *NEGATIVES]
NEG_SETTINGS = NegativeSettings.from_config(config)
DATA_DIR_TO_DATASET = {v: k for k, v in layout.DATA_DIRS.items()}


def _load_clips():
    """dataset -> split -> clips; from the synthetic recipe or the user's metadata."""
    if SYNTHETIC:
        index = synthetic_index(SyntheticConfig.from_mapping(config["synthetic"]))
    else:
        try:
            index = {ds: read_clips(DATA_ROOT, ds, AVSS) for ds in DATASETS}
        except InputError as exc:
            raise WorkflowError(f"Bad AVSBench metadata: {exc}") from None
    return {
        ds: {sp: [c for c in index[ds] if c.split == sp] for sp in SPLITS}
        for ds in DATASETS
    }


CLIPS = _load_clips()
OFFSCREEN_CLIPS = {
    ds: {
        sp: plannable(CLIPS[ds][sp], config["offscreen"]["on_missing"]) for sp in SPLITS
    }
    for ds in DATASETS
}


wildcard_constraints:
    dataset="s4|ms3",
    split="train|val|test",
    negtype="silence|noise|offscreen",
    condition="positive|silence|noise|offscreen",
    experiment="[A-Za-z0-9_]+",
    seed="[0-9]+",
    run="seed[0-9]+|external",
    data="Single-source/s4_data|Multi-sources/ms3_data",
    item=r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*(/[A-Za-z0-9_\-][A-Za-z0-9_.\-]*)?",


def metadata_files(dataset):
    """The metadata a dataset's clip list comes from (the synthetic rule makes them)."""
    files = [str(Path(DATA_ROOT) / layout.META_FILES[dataset])]
    if dataset == "ms3" and (SYNTHETIC or Path(AVSS).is_file()):
        files.append(AVSS)
    return files


def clips_for(dataset, split, condition):
    """Clips that have audio under ``condition`` (off-screen may skip some)."""
    if condition == "offscreen":
        return OFFSCREEN_CLIPS[dataset][split]
    return CLIPS[dataset][split]


# Input of a per-clip negative job: its positive clip, as a pattern (no input
# function: evaluating one per job is a large share of a 16k-job DAG). The
# synthetic clips are not individual rule outputs; the AVSS metadata, written
# last by the synthetic rule, stands in for them.
POSITIVE_PATTERN = (
    f"{DATA_ROOT}/{layout.AVSS_META}"
    if SYNTHETIC
    else f"{DATA_ROOT}/{{data}}/audio_wav/{{split}}/{{item}}.wav"
)


def offscreen_plan_of(wildcards):
    return f"results/robust/{DATA_DIR_TO_DATASET[wildcards.data]}/offscreen_plan.tsv"


def condition_wavs(dataset, split, condition):
    """Every WAV of one (dataset, split, condition), in metadata order.

    Plain string formatting (same paths as layout.condition_wav): this runs
    for every clip when the DAG is built.
    """
    data = layout.DATA_DIRS[dataset]
    if condition == "positive":
        prefix = f"{DATA_ROOT}/{data}/audio_wav/{split}/"
    else:
        prefix = f"results/robust/{data}/audio_wav_{condition}/{split}/"
    return [f"{prefix}{clip.item}.wav" for clip in clips_for(dataset, split, condition)]


def split_negatives(wildcards):
    return [
        wav
        for negtype in NEGATIVES
        for wav in condition_wavs(wildcards.dataset, wildcards.split, negtype)
    ]


def feature_inputs(wildcards):
    if wildcards.condition == "positive" and SYNTHETIC:
        return metadata_files(wildcards.dataset)
    return condition_wavs(wildcards.dataset, wildcards.split, wildcards.condition)


EXPERIMENTS = config["experiments"]
# Training needs train and val splits; it is part of `all` when both are configured.
TRAINING = bool(EXPERIMENTS) and {"train", "val"} <= set(SPLITS)
TRAIN_CONDITIONS = ["positive", *NEGATIVES]


SEEDS = config["training"]["seeds"]
EXTERNAL = config["external_predictions"]
EVAL = config["evaluation"]
EVAL_SPLIT = EVAL["split"]
for _name, _ext in EXTERNAL.items():
    for _ds in DATASETS:
        if _ds in _ext and not Path(_ext[_ds]).is_dir():
            raise WorkflowError(
                f"external_predictions.{_name}.{_ds}: {_ext[_ds]} is not a folder (expected "
                f"<folder>/positive/{EVAL_SPLIT}/... PNGs in AVSBench's gt_masks layout)"
            )
_clash = sorted(set(EXTERNAL) & set(EXPERIMENTS))
if _clash:
    raise WorkflowError(
        f"external_predictions {_clash} share a name with experiments; rename one of them"
    )


def training_config(dataset, experiment, seed):
    """The science of one training run: shared settings, their per-dataset overrides
    (`training.by_dataset`), then the experiment's overrides."""
    cfg = training_settings(config["training"], dataset)
    cfg.update(EXPERIMENTS[experiment])
    # Negative types left out of `negatives` are not generated: their ratios drop
    # out (with a warning) so the default experiments work with any subset.
    ratios = dict(cfg.get("negative_ratios", {}))
    dropped = sorted(set(ratios) - set(NEGATIVES))
    if dropped:
        logger.warning(
            f"experiments.{experiment}: no {dropped} audio is configured (negatives: "
            f"{NEGATIVES}); training {dataset}/{experiment} without those ratios"
        )
    cfg["negative_ratios"] = {k: v for k, v in ratios.items() if k in NEGATIVES}
    cfg["seed"] = int(seed)
    cfg["negatives"] = NEGATIVES
    cfg["dataset"] = dataset
    return cfg


def training_inputs(wildcards):
    """Frame caches and features of the train and val splits."""
    files = {}
    for split in ("train", "val"):
        for name in ("frames", "masks", "index"):
            ext = "tsv" if name == "index" else "npy"
            files[f"{split}_{name}"] = (
                f"results/frame_cache/{wildcards.dataset}/{split}/{name}.{ext}"
            )
        for cond in TRAIN_CONDITIONS:
            files[f"{split}_{cond}"] = (
                f"results/features/{wildcards.dataset}/{split}/{cond}.npy"
            )
    return files


# Evaluation needs the evaluated split and, for trained experiments, training.
EVALUATION = EVAL_SPLIT in SPLITS and (TRAINING or bool(EXTERNAL))


def evaluated(dataset):
    """Experiments and external prediction sets scored on ``dataset`` (table order)."""
    names = list(EXPERIMENTS) if TRAINING else []
    return names + [n for n, e in EXTERNAL.items() if dataset in e]


def evaluation_inputs(wildcards):
    """Ground truth (frame cache), the condition's clip list, and the models or PNG folder."""
    ds, split = wildcards.dataset, EVAL_SPLIT
    files = {
        "cache": f"results/frame_cache/{ds}/{split}/index.tsv",
        "frames": f"results/frame_cache/{ds}/{split}/frames.npy",
        "masks": f"results/frame_cache/{ds}/{split}/masks.npy",
        "clips": f"results/features/{ds}/{split}/{wildcards.condition}.index.tsv",
    }
    if wildcards.experiment in EXTERNAL:
        ext = EXTERNAL[wildcards.experiment]
        if ds not in ext:
            raise WorkflowError(
                f"external_predictions.{wildcards.experiment} has no {ds} folder"
            )
        files["external"] = ext[ds]
    else:
        files["features"] = f"results/features/{ds}/{split}/{wildcards.condition}.npy"
        ck = EVAL["checkpoint"]
        files["models"] = [
            f"results/models/{ds}/{wildcards.experiment}/seed{s}/{ck}.pt" for s in SEEDS
        ]
    return files


def runs_of(name):
    """Runs scored for an experiment (one per training seed) or an external set."""
    return ["external"] if name in EXTERNAL else [f"seed{s}" for s in SEEDS]


def evaluation_params(wildcards):
    """What the evaluation job needs beyond its files (one dict: easy to log)."""
    ext = EXTERNAL.get(wildcards.experiment)
    return {
        "dataset": wildcards.dataset,
        "experiment": wildcards.experiment,
        "condition": wildcards.condition,
        "split": EVAL_SPLIT,
        "runs": runs_of(wildcards.experiment),
        "format": ext.get("format", "auto") if ext else None,
        "batch_size": EVAL["batch_size"],
        "avsbench_batch_videos": EVAL["avsbench_batch_videos"],
    }


def summary_inputs(wildcards):
    files = {"metrics": [], "predictions": [], "caches": []}
    for ds in DATASETS:
        for name in evaluated(ds):
            for cond in CONDITIONS:
                files["metrics"].append(f"results/metrics/{ds}/{name}/{cond}.json")
                files["predictions"].append(f"results/predictions/{ds}/{name}/{cond}")
        files["caches"].append(f"results/frame_cache/{ds}/{EVAL_SPLIT}/index.tsv")
    return files


def all_targets():
    targets = [f"results/inputs/{ds}.check.tsv" for ds in DATASETS]
    for ds in DATASETS:
        for sp in SPLITS:
            if NEGATIVES:
                targets.append(f"results/robust/{ds}/{sp}.manifest.tsv")
            targets += [f"results/features/{ds}/{sp}/{c}.npy" for c in CONDITIONS]
        if TRAINING:
            targets += [
                f"results/models/{ds}/{e}/seed{s}/final.pt"
                for e in EXPERIMENTS
                for s in SEEDS
            ]
        if EVALUATION and EVAL["save_png"]:
            targets += [
                f"results/predictions_png/{ds}/{n}/{r}/{c}"
                for n in evaluated(ds)
                for r in runs_of(n)
                for c in CONDITIONS
            ]
    if EVALUATION and NEGATIVES and any(evaluated(ds) for ds in DATASETS):
        targets += ["results/summary/summary.tsv", "results/summary/fpr_by_type.png"]
        targets += [
            f"results/summary/qualitative_{ds}.png" for ds in DATASETS if evaluated(ds)
        ]
    return targets
