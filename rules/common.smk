"""Config validation, the clip index and input helpers shared by all rules."""

import re
import shutil
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.settings.types import DeploymentMethod
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


def _validate_config():
    """config/schema.yaml checks every key (unknown ones are errors) and fills defaults;
    a failure names the key and where it is, in one line."""
    from jsonschema import ValidationError

    try:
        validate(config, "../config/schema.yaml")
    except WorkflowError as exc:
        err = (
            exc.__cause__ or exc.__context__
        )  # snakemake raised it from the schema error
        if not isinstance(err, ValidationError):
            raise
        where = ".".join(map(str, err.absolute_path)) or "the top level"
        message = err.message
        for jargon in ("Unevaluated properties", "Additional properties"):
            message = message.replace(f"{jargon} are not allowed", "unknown key")
        raise WorkflowError(
            f"Error validating config file: {where}: {message} (see config/schema.yaml)"
        ) from None


_validate_config()

sys.path.insert(0, str(Path(workflow.basedir) / "workflow_scripts"))

# `snakemake --profile profiles/slurm -n` inspects the DAG, also where conda is
# missing (a laptop, CI); the profile's conda deployment would stop it at
# `conda info`. Real runs keep conda and its own errors.
if (
    workflow.output_settings.dryrun
    and DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
    and shutil.which("conda") is None
):
    logger.warning("conda not found: dry-run without creating or checking conda envs")
    workflow.deployment_settings.deployment_method.discard(DeploymentMethod.CONDA)

from avsrobust import (
    active_run,
    layout,
    snakemake_dag,
    snakemake_scheduling,
)  # noqa: E402
from avsrobust.shutdown import forward_sigterm  # noqa: E402
from avsrobust.checkpoint_formats import PUBLISHED_FORMATS  # noqa: E402
from avsrobust.errors import InputError  # noqa: E402
from avsrobust.frame_cache import FRAMES_FILE, INDEX_FILE, MASKS_FILE  # noqa: E402
from avsrobust.metadata import check_split_sizes, read_clips  # noqa: E402
from avsrobust.negatives import NegativeSettings  # noqa: E402
from avsrobust.offscreen_plan import plan_donors, plannable  # noqa: E402
from avsrobust.run_config import training_config as run_training_config  # noqa: E402
from avsrobust.synthetic import SyntheticConfig, synthetic_index  # noqa: E402
from avsrobust.synthetic import visible_object_veto  # noqa: E402

# Result paths: each pattern once. Rules declare their outputs with these, input functions
# fill them in (str.format), and jobs read snakemake.input/output: the DAG and the code
# cannot disagree. (The per-clip audio paths mirror AVSBench's layout: layout.py.)
CHECK = "results/inputs/{dataset}/{split}.check.tsv"
PLAN = "results/robust/{dataset}/offscreen_plan.tsv"
MANIFEST = "results/robust/{dataset}/{split}.manifest.tsv"
FEATURES = "results/features/{dataset}/{split}/{condition}.npy"
FEATURE_INDEX = "results/features/{dataset}/{split}/{condition}.index.tsv"
# part: frame_cache.*_FILE; CACHE is at training.image_size, CACHE_AT at another size (an
# imported checkpoint is evaluated at the size it was trained at): cache_file() picks.
CACHE = "results/frame_cache/{dataset}/{split}/{part}"
CACHE_AT = "results/frame_cache/{dataset}/{split}/{size}px/{part}"
MODEL = "results/models/{dataset}/{experiment}/seed{seed}/{file}"
IMPORTED = "results/models/{dataset}/{experiment}/imported.pt"
CHECKPOINTS = "results/checkpoints/{dataset}/{experiment}/seed{seed}"
PREDICTIONS = "results/predictions/{dataset}/{experiment}/{condition}"
PREDICTIONS_PNG = "results/predictions_png/{dataset}/{experiment}/{run}/{condition}"
METRICS = "results/metrics/{dataset}/{experiment}/{condition}.json"
SUMMARY = "results/summary/{file}"


# A second run in a folder where another one works is told so before Snakemake's own
# advice for killed runs (--rerun-incomplete, --unlock) could mislead it (active_run.py).
_OTHER_RUN = active_run.other_run()
if _OTHER_RUN:
    logger.warning(
        f"{_OTHER_RUN}: if this run stops because files 'seem to be incomplete' or the "
        "'Directory cannot be locked', those are that run's files: wait for it or stop it "
        "(kill -TERM <pid>); --unlock and --rerun-incomplete are for a run that was killed"
    )


onstart:
    active_run.mark()
    # SIGTERM to Snakemake stops the running jobs too (training keeps its last epoch):
    # Snakemake alone waits for them, then says they "did not complete" (shutdown.py).
    if workflow.local_exec:
        forward_sigterm(logger.warning)


onsuccess:
    active_run.unmark()


onerror:
    active_run.unmark()


def wild(pattern, **fixed):
    """``pattern`` with some fields filled and the others left as wildcards."""
    names = re.findall(r"{(\w+)}", pattern)
    return pattern.format(**{n: fixed.get(n, f"{{{n}}}") for n in names})


CACHE_PARTS = {"frames": FRAMES_FILE, "masks": MASKS_FILE, "index": INDEX_FILE}
# Thousands of per-clip jobs are ready at once: without this Snakemake stats all their inputs
# and starts a timer thread on every scheduling pass (avsrobust/snakemake_scheduling.py).
snakemake_scheduling.install()
# ~16,000 jobs: without this every job asks inspect.signature again, the garbage collector
# rescans the growing DAG thousands of times, and exit waits for one more full collection
# (avsrobust/snakemake_dag.py).
snakemake_dag.install()

SYNTHETIC = not config["avsbench_root"]
DATA_ROOT = "results/synthetic_avsbench" if SYNTHETIC else config["avsbench_root"]
AVSS = config["avss_metadata"] or str(Path(DATA_ROOT) / layout.AVSS_META)
DATASETS = config["datasets"]
SPLITS = config["splits"]
# the generated audio types (negative types and mixture; how each is scored:
# layout.CONDITION_KIND) and the configured audio conditions (layout.CONDITIONS: all)
NEGATIVES = config["negatives"]
# the configured types built from the off-screen plan's donors (they need the plan)
DONOR_NEGATIVES = [t for t in NEGATIVES if t in layout.DONOR_TYPES]
CONDITIONS = ["positive", *NEGATIVES]
NEG_SETTINGS = NegativeSettings.from_config(config)


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
# Synthetic clips: donors that sound like a visible silent object are vetoed (the
# offscreen_plan job does the same); real data follows the published rules only.
DONOR_VETO = (
    visible_object_veto(SyntheticConfig.from_mapping(config["synthetic"]))
    if SYNTHETIC
    else None
)
OFFSCREEN_CLIPS = {
    ds: {
        sp: plannable(CLIPS[ds][sp], config["offscreen"]["on_missing"]) for sp in SPLITS
    }
    for ds in DATASETS
}


wildcard_constraints:
    dataset="|".join(layout.DATASETS),
    split="|".join(layout.SPLITS),
    negtype="|".join(layout.GENERATED_TYPES),
    condition="|".join(layout.CONDITIONS),
    experiment="[A-Za-z0-9_]+",
    seed="[0-9]+",
    run="seed[0-9]+|external",
    size="[0-9]+",
    data="|".join(layout.DATA_DIRS.values()),
    item=r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*(/[A-Za-z0-9_\-][A-Za-z0-9_.\-]*)?",


def metadata_files(dataset):
    """The metadata a dataset's clip list comes from (the synthetic rule makes them)."""
    files = [str(Path(DATA_ROOT) / layout.META_FILES[dataset])]
    if dataset == "ms3" and (SYNTHETIC or Path(AVSS).is_file()):
        files.append(AVSS)
    return files


def clips_for(dataset, split, condition):
    """Clips that have audio under ``condition`` (the donor types may skip some)."""
    if condition in layout.DONOR_TYPES:
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
    return PLAN.format(dataset=layout.DATASET_OF_DATA_DIR[wildcards.data])


_DONOR_WAVS = {}


def offscreen_donor_wav(wildcards):
    """The positive WAV an off-screen clip is made from: its planned donor's.

    The plan is computed here as the offscreen_plan job computes it (same clips,
    seed and policy), once per dataset, so replacing a donor's WAV reruns the
    clips built from it. One dict lookup per job: this runs for every clip.
    """
    dataset = layout.DATASET_OF_DATA_DIR[wildcards.data]
    if dataset not in _DONOR_WAVS:
        clips = [c for sp in SPLITS for c in CLIPS[dataset][sp]]
        try:
            rows, _ = plan_donors(
                clips,
                config["seed"],
                config["offscreen"]["on_missing"],
                where=f"{dataset} metadata",
                veto=DONOR_VETO,
            )
        except InputError as exc:
            raise WorkflowError(f"Bad AVSBench metadata: {exc}") from None
        _DONOR_WAVS[dataset] = {
            (r.target.split, r.target.item): str(
                layout.positive_wav(DATA_ROOT, r.donor)
            )
            for r in rows
        }
    return _DONOR_WAVS[dataset][(wildcards.split, wildcards.item)]


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


def split_images(dataset, split):
    """Every frame and annotated mask of one split (layout.clip_images), as paths.

    Real trees only: the synthetic clips are not individual rule outputs (their
    metadata, written last by the synthetic rule, stands in, as for the WAVs).
    """
    if SYNTHETIC:
        return []
    return [
        str(png)
        for clip in CLIPS[dataset][split]
        for png in layout.clip_images(DATA_ROOT, clip)
    ]


def check_inputs_files(wildcards):
    """What check_inputs reads of one split: metadata, positive WAVs, frames, masks.

    All declared, so a fixed file reruns the check of its split (S4 train: ~28k
    files). The check report is then rewritten, and it is what frame_cache
    declares for the same PNGs: declaring them twice cost 3x the DAG time of
    declaring them once (README, Performance).
    """
    ds, split = wildcards.dataset, wildcards.split
    return {
        "meta": metadata_files(ds),
        "wavs": [] if SYNTHETIC else condition_wavs(ds, split, "positive"),
        "images": split_images(ds, split),
    }


def frame_cache_files(wildcards):
    """What frame_cache reads: the metadata, and the split's frames and masks through
    the split's check report, which is rewritten whenever one of them changes."""
    ds, split = wildcards.dataset, wildcards.split
    return {
        "meta": metadata_files(ds),
        "checked": CHECK.format(dataset=ds, split=split),
    }


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


def _split_source(dataset):
    if SYNTHETIC:
        return f"synthetic.{dataset}_videos"
    return Path(DATA_ROOT) / layout.META_FILES[dataset]


# Empty splits (a header-only CSV, a split without rows) give empty outputs: warn
# once here; the train and evaluate input functions stop the DAG when asked to
# train or score on none (so a run that only builds negatives is not blocked).
for _ds in DATASETS:
    for _note in check_split_sizes(
        _ds,
        [c for sp in SPLITS for c in CLIPS[_ds][sp]],
        SPLITS,
        {},
        _split_source(_ds),
    ):
        logger.warning(_note)


def require_clips(dataset, needs, condition="positive"):
    """Stop the DAG (naming the metadata and the step) when a needed split is empty."""
    clips = [c for sp in SPLITS for c in CLIPS[dataset][sp]]
    try:
        check_split_sizes(dataset, clips, SPLITS, needs, _split_source(dataset))
    except InputError as exc:
        raise WorkflowError(f"Empty split: {exc}") from None
    for split in needs if condition in layout.DONOR_TYPES else []:
        if not OFFSCREEN_CLIPS[dataset][split]:
            raise WorkflowError(
                f"{dataset} {split}: no clip has an off-screen donor (offscreen.on_missing: "
                f"skip left them all out), so the {condition} condition would score nothing; "
                f"use on_missing: fallback or leave {condition} out of `negatives`"
            )


EXPERIMENTS = config["experiments"]
# Training needs train and val splits; it is part of `all` when both are configured.
TRAINING = bool(EXPERIMENTS) and {"train", "val"} <= set(SPLITS)


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

TRAIN_SIZE = config["training"]["image_size"]
# Published checkpoints, imported (rule import_checkpoint) and evaluated with no training.
CHECKPOINTS_IN = config["external_checkpoints"]


def _check_external_checkpoints():
    """Stop at parse time, naming the key, for what would otherwise fail in a job."""
    for name, ext in CHECKPOINTS_IN.items():
        where = f"external_checkpoints.{name}"
        for other, names in (
            ("an experiment", EXPERIMENTS),
            ("external_predictions", EXTERNAL),
        ):
            if name in names:
                raise WorkflowError(
                    f"{where}: {name!r} is also the name of {other}; rename one of them"
                )
        if not any(ds in ext for ds in layout.DATASETS):
            raise WorkflowError(
                f"{where}: gives no checkpoint (s4: <file> and/or ms3: <file>)"
            )
        if not any(ds in ext for ds in DATASETS):
            continue  # only for datasets this run leaves out
        fmt = ext["format"]
        for ds in DATASETS:
            if ds in ext and not Path(ext[ds]).is_file():
                raise WorkflowError(
                    f"{where}.{ds}: {ext[ds]} is not a file (expected the {fmt} "
                    "checkpoint that the published code saved)"
                )
        vggish = ext.get("vggish")
        if PUBLISHED_FORMATS[fmt].external_vggish and vggish is None:
            raise WorkflowError(
                f"{where}: format {fmt} keeps VGGish outside its checkpoint; give "
                "vggish: <the torchvggish vggish-10086976.pth it was trained with>"
            )
        if not PUBLISHED_FORMATS[fmt].external_vggish and vggish is not None:
            raise WorkflowError(
                f"{where}.vggish: a {fmt} checkpoint holds its own VGGish weights; "
                "leave vggish out"
            )
        if vggish is not None and not Path(vggish).is_file():
            raise WorkflowError(
                f"{where}.vggish: {vggish} is not a file (expected vggish-10086976.pth)"
            )


_check_external_checkpoints()


def cache_file(dataset, split, part, size=TRAIN_SIZE):
    """A frame cache file of (dataset, split) at ``size`` px: the training size's cache is
    the one training builds; another size is a cache of its own (no cache is rebuilt because
    another size is needed too)."""
    if size == TRAIN_SIZE:
        return CACHE.format(dataset=dataset, split=split, part=part)
    return CACHE_AT.format(dataset=dataset, split=split, size=size, part=part)


def cache_size(wildcards):
    """The size a frame cache job decodes at: its ``size`` wildcard (CACHE_AT), else
    training.image_size (CACHE)."""
    return int(wildcards.get("size", TRAIN_SIZE))


def eval_size(dataset, name):
    """The frame size ``name`` is evaluated at: an imported checkpoint's training size
    (``image_size`` or its format's), else training.image_size (trained models; PNG
    predictions are resized to it)."""
    ext = CHECKPOINTS_IN.get(name)
    if ext is None:
        return TRAIN_SIZE
    return ext.get("image_size") or PUBLISHED_FORMATS[ext["format"]].image_size


def import_inputs(wildcards):
    """The published checkpoint (and VGGish file) an imported model is made from."""
    ext = CHECKPOINTS_IN[wildcards.experiment]
    files = {"checkpoint": ext[wildcards.dataset]}
    if ext.get("vggish") is not None:
        files["vggish"] = ext["vggish"]
    return files


def import_params(wildcards):
    ext = CHECKPOINTS_IN[wildcards.experiment]
    return {
        "format": ext["format"],
        "image_size": eval_size(wildcards.dataset, wildcards.experiment),
    }


def training_config(dataset, experiment, seed):
    """The science of one training run (merge order: avsrobust/run_config.py, README)."""
    return run_training_config(config, dataset, experiment, seed, warn=logger.warning)


def training_inputs(wildcards):
    """Frame caches and features (arrays and row indexes) of the train and val splits."""
    ds = wildcards.dataset
    require_clips(ds, {"train": "training", "val": "training (validation)"})
    files = {}
    for split in ("train", "val"):
        for name, part in CACHE_PARTS.items():
            files[f"{split}_{name}"] = CACHE.format(dataset=ds, split=split, part=part)
        for cond in CONDITIONS:
            where = {"dataset": ds, "split": split, "condition": cond}
            files[f"{split}_{cond}"] = FEATURES.format(**where)
            files[f"{split}_{cond}_index"] = FEATURE_INDEX.format(**where)
    return files


# Evaluation needs the evaluated split and, for trained experiments, training.
EVALUATION = EVAL_SPLIT in SPLITS and (
    TRAINING or bool(EXTERNAL) or bool(CHECKPOINTS_IN)
)


def evaluated(dataset):
    """Experiments, external prediction sets and imported checkpoints scored on
    ``dataset`` (table order)."""
    names = list(EXPERIMENTS) if TRAINING else []
    names += [n for n, e in EXTERNAL.items() if dataset in e]
    return names + [n for n, e in CHECKPOINTS_IN.items() if dataset in e]


def evaluation_inputs(wildcards):
    """Ground truth (the frame cache at the model's size), every condition's clip list (and
    features), and the models or the PNG folder: one job scores every condition."""
    ds, name, split = wildcards.dataset, wildcards.experiment, EVAL_SPLIT
    for cond in CONDITIONS:
        require_clips(ds, {split: "evaluation"}, cond)
    size = eval_size(ds, name)
    where = [{"dataset": ds, "split": split, "condition": c} for c in CONDITIONS]
    files = {
        "cache": cache_file(ds, split, INDEX_FILE, size),
        "frames": cache_file(ds, split, FRAMES_FILE, size),
        "masks": cache_file(ds, split, MASKS_FILE, size),
        "clips": [FEATURE_INDEX.format(**w) for w in where],  # in CONDITIONS order
    }
    if name in EXTERNAL:
        if ds not in EXTERNAL[name]:
            raise WorkflowError(f"external_predictions.{name} has no {ds} folder")
        files["external"] = EXTERNAL[name][ds]
        return files
    files["features"] = [FEATURES.format(**w) for w in where]
    if name in CHECKPOINTS_IN:
        if ds not in CHECKPOINTS_IN[name]:
            raise WorkflowError(f"external_checkpoints.{name} has no {ds} checkpoint")
        files["models"] = [IMPORTED.format(dataset=ds, experiment=name)]
    else:
        ck = EVAL["checkpoint"]
        files["models"] = [
            MODEL.format(dataset=ds, experiment=name, seed=s, file=f"{ck}.pt")
            for s in SEEDS
        ]
    return files


def runs_of(name):
    """Runs scored for an experiment (one per training seed) or an external set or
    checkpoint."""
    if name in EXTERNAL or name in CHECKPOINTS_IN:
        return ["external"]
    return [f"seed{s}" for s in SEEDS]


def evaluation_params(wildcards):
    """What the evaluation job needs beyond its files (one dict: easy to log)."""
    name = wildcards.experiment
    ext = EXTERNAL.get(name)
    ckpt = CHECKPOINTS_IN.get(name)
    params = {
        "dataset": wildcards.dataset,
        "experiment": name,
        "conditions": CONDITIONS,
        "split": EVAL_SPLIT,
        "runs": runs_of(name),
        "source": "external" if ext else ("checkpoint" if ckpt else "model"),
        "format": ext["format"] if ext else None,
        "batch_size": EVAL["batch_size"],
        "avsbench_batch_videos": EVAL["avsbench_batch_videos"],
    }
    if ckpt:
        params["checkpoint_format"] = ckpt["format"]
        params["image_size"] = eval_size(wildcards.dataset, name)
    return params


def summary_metrics():
    """The scores of every evaluated (dataset, experiment, condition), in table order."""
    return [
        METRICS.format(dataset=ds, experiment=name, condition=cond)
        for ds in DATASETS
        for name in evaluated(ds)
        for cond in CONDITIONS
    ]


def summary_predictions():
    """(dataset, experiment, condition, folder) of the predictions the figures show."""
    return [
        (
            ds,
            name,
            cond,
            PREDICTIONS.format(dataset=ds, experiment=name, condition=cond),
        )
        for ds in DATASETS
        for name in evaluated(ds)
        for cond in CONDITIONS
    ]


def summary_sizes():
    """dataset -> evaluated name -> the frame size it was evaluated at."""
    return {ds: {n: eval_size(ds, n) for n in evaluated(ds)} for ds in DATASETS}


def summary_caches():
    """(dataset, size, part, file) of the evaluated split's frame cache at every evaluated
    size, for the figures (each model's masks are drawn over the frames it saw)."""
    sizes = summary_sizes()
    return [
        (ds, size, name, cache_file(ds, EVAL_SPLIT, part, size))
        for ds in DATASETS
        for size in dict.fromkeys(sizes[ds].values())
        for name, part in CACHE_PARTS.items()
    ]


def summary_plans():
    """The off-screen plans: the summary counts the fallback donors of the evaluated split."""
    return [PLAN.format(dataset=ds) for ds in DATASETS] if DONOR_NEGATIVES else []


def all_targets():
    targets = [CHECK.format(dataset=ds, split=sp) for ds in DATASETS for sp in SPLITS]
    for ds in DATASETS:
        for sp in SPLITS:
            if NEGATIVES:
                targets.append(MANIFEST.format(dataset=ds, split=sp))
            targets += [
                FEATURES.format(dataset=ds, split=sp, condition=c) for c in CONDITIONS
            ]
        if TRAINING:
            targets += [
                MODEL.format(dataset=ds, experiment=e, seed=s, file="final.pt")
                for e in EXPERIMENTS
                for s in SEEDS
            ]
        if EVALUATION and EVAL["save_png"]:
            targets += [
                PREDICTIONS_PNG.format(dataset=ds, experiment=n, run=r, condition=c)
                for n in evaluated(ds)
                for r in runs_of(n)
                for c in CONDITIONS
            ]
    if EVALUATION and NEGATIVES and any(evaluated(ds) for ds in DATASETS):
        targets += [
            SUMMARY.format(file="summary.tsv"),
            SUMMARY.format(file="fpr_by_type.png"),
        ]
        targets += [
            SUMMARY.format(file=f"qualitative_{ds}.png")
            for ds in DATASETS
            if evaluated(ds)
        ]
    return targets
