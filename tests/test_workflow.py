"""The Snakemake workflow end to end, on tiny synthetic and real-layout trees."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from avsrobust import layout
from avsrobust.manifest import read_manifest
from avsrobust.metadata import read_clips
from avsrobust.png import png_bytes
from avsrobust.predictions import open_predictions

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(REPO / ".venv" / "bin" / "snakemake")

pytestmark = pytest.mark.workflow

TINY = {
    "seed": 3,
    "training": {"epochs": 1, "image_size": 32, "batch_size": 2, "seeds": [0, 1]},
    "synthetic": {
        "image_size": 32,
        "s4_videos": {"train": 4, "val": 2, "test": 3},
        "ms3_videos": {"train": 3, "val": 2, "test": 2},
    },
}


def snakemake(workdir: Path, config: dict, *args: str, check: bool = True):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [
        SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--cores",
        "2",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    table = output[output.index("Job stats:") :]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)}


def sha_tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("tiny")
    snakemake(work, TINY)
    return work


def test_dry_run_has_one_negative_job_per_video_and_type(tmp_path):
    config = {**TINY, "negatives": ["silence", "noise"], "datasets": ["s4", "ms3"]}
    proc = snakemake(tmp_path, config, "-n")
    counts = job_counts(proc.stdout + proc.stderr)
    videos = sum(TINY["synthetic"]["s4_videos"].values()) + sum(
        TINY["synthetic"]["ms3_videos"].values()
    )
    assert counts["negative_audio"] == videos * 2
    assert "offscreen_plan" not in counts
    assert counts["audio_features"] == 2 * 3 * 3  # datasets x splits x (positive + 2)
    assert counts["split_manifest"] == 6
    assert not (tmp_path / "results").exists()


def test_end_to_end_outputs(tiny_run):
    results = tiny_run / "results"
    n_s4 = sum(TINY["synthetic"]["s4_videos"].values())
    for split, n in TINY["synthetic"]["s4_videos"].items():
        rows = read_manifest(results / f"robust/s4/{split}.manifest.tsv")
        assert len(rows) == 4 * n
        assert {r["negtype"] for r in rows} == {"silence", "noise", "offscreen", "mixture"}
        for r in rows:
            path = tiny_run / r["path"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == r["sha256"]
            info = sf.info(str(path))
            assert (info.samplerate, info.channels, info.frames, info.subtype) == (
                16000,
                1,
                80000,
                "PCM_16",
            )
            assert path.parts[-3] == split and r["category"] == path.parts[-2]
            assert bool(r["donor"]) == (r["negtype"] in ("offscreen", "mixture"))
    plan = (results / "robust/s4/offscreen_plan.tsv").read_text().splitlines()
    assert len(plan) == n_s4 + 1 and plan[0].startswith("split\tvideo\tcategory\tgroups\tdonor")
    ms3 = read_manifest(results / "robust/ms3/test.manifest.tsv")
    assert all(Path(r["path"]).parent.name == "test" for r in ms3)
    for condition in ("positive", "silence", "noise", "offscreen", "mixture"):
        feats = np.load(results / f"features/s4/val/{condition}.npy", allow_pickle=False)
        assert feats.shape == (2, 5, 1, 96, 64) and feats.dtype == np.float32
    silence = np.load(results / "features/s4/val/silence.npy")
    assert np.allclose(silence, np.log(0.01), atol=1e-6)
    index = (results / "features/s4/val/positive.index.tsv").read_text().splitlines()
    assert index[0] == "row\tvideo\tcategory\tpath" and len(index) == 3
    logs = list((tiny_run / "logs/robust").rglob("*.log"))
    assert len(logs) >= 4 * n_s4
    # the mixture takes the off-screen clip's donor, and both are scored
    by_video = {}
    for r in read_manifest(results / "robust/s4/test.manifest.tsv"):
        by_video.setdefault(r["video"], {})[r["negtype"]] = r["donor"]
    assert all(d["mixture"] == d["offscreen"] != "" for d in by_video.values())
    summary = (results / "summary/summary.tsv").read_text().splitlines()
    head = summary[0].split("\t")
    assert "miou_mixture" in head and "fscore_mixture" in head and "fpr_mixture" not in head
    for line in summary[1:]:
        cells = dict(zip(head, line.split("\t"), strict=True))
        assert 0 <= float(cells["miou_mixture"]) <= 1


def test_second_run_has_nothing_to_do(tiny_run):
    proc = snakemake(tiny_run, TINY, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_regenerating_one_split_gives_identical_bytes(tiny_run):
    results = tiny_run / "results/robust"
    before = sha_tree(results)
    other = results / "Single-source/s4_data/audio_wav_noise/train"
    other_mtimes = {p: p.stat().st_mtime_ns for p in other.rglob("*.wav")}
    for negtype in ("silence", "noise", "offscreen", "mixture"):
        for wav in (results / f"Single-source/s4_data/audio_wav_{negtype}/test").rglob("*.wav"):
            wav.unlink()
    (results / "s4/test.manifest.tsv").unlink()
    proc = snakemake(tiny_run, TINY, "results/robust/s4/test.manifest.tsv")
    counts = job_counts(proc.stdout + proc.stderr)
    n_test = TINY["synthetic"]["s4_videos"]["test"]
    assert counts["negative_audio"] == 2 * n_test and counts["offscreen_audio"] == n_test
    assert counts["mixture_audio"] == n_test
    assert "audio_features" not in counts and "synthetic_avsbench" not in counts
    assert sha_tree(results) == before
    assert {p: p.stat().st_mtime_ns for p in other.rglob("*.wav")} == other_mtimes


def test_forced_regeneration_of_a_split_gives_identical_bytes(tiny_run):
    results = tiny_run / "results/robust"
    before = sha_tree(results)
    snakemake(
        tiny_run,
        TINY,
        "results/robust/ms3/val.manifest.tsv",
        "--forcerun",
        "negative_audio",
        "offscreen_audio",
        "mixture_audio",
        "split_manifest",
    )
    assert sha_tree(results) == before


def test_real_layout_tree_with_dash_ids(tiny_root, tmp_path):
    config = {"avsbench_root": str(tiny_root), "seed": 1}
    targets = [
        f"results/robust/{d}/{s}.manifest.tsv" for d in ("s4", "ms3") for s in ("train", "test")
    ]
    snakemake(tmp_path, config, *targets)
    rows = read_manifest(tmp_path / "results/robust/s4/train.manifest.tsv")
    videos = {r["video"] for r in rows}
    assert "-abcDEF_123" in videos
    wav = (
        tmp_path
        / "results/robust/Single-source/s4_data/audio_wav_noise/train/playing_piano/-abcDEF_123.wav"
    )
    assert wav.is_file()
    ms3 = read_manifest(tmp_path / "results/robust/ms3/train.manifest.tsv")
    donors = {r["video"]: r["donor"] for r in ms3 if r["negtype"] == "offscreen"}
    # man_piano (human+music) may only take animal/device donors: dog or car
    assert donors["-ms3aaaaaaa"] in {"ms3bbbbbbbb", "ms3cccccccc"}


def test_missing_positive_wav_is_named(tiny_root, tmp_path):
    victim = tiny_root / "Single-source/s4_data/audio_wav/test/race_car/fffffffffff.wav"
    victim.unlink()
    proc = snakemake(
        tmp_path,
        {"avsbench_root": str(tiny_root)},
        "results/robust/s4/test.manifest.tsv",
        check=False,
    )
    assert proc.returncode != 0
    assert "fffffffffff.wav" in proc.stdout + proc.stderr
    assert (
        not list((tmp_path / "results").rglob("*.tmp")) if (tmp_path / "results").exists() else True
    )


def test_corrupt_positive_wav_fails_with_its_name_and_leaves_nothing(tiny_root, tmp_path):
    victim = tiny_root / "Single-source/s4_data/audio_wav/test/race_car/fffffffffff.wav"
    victim.write_bytes(b"RIFF....WAVEnot really")
    proc = snakemake(
        tmp_path,
        {"avsbench_root": str(tiny_root), "negatives": ["noise"]},
        "results/robust/s4/test.manifest.tsv",
        check=False,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "fffffffffff.wav: not a readable audio file" in text
    out_dir = tmp_path / "results/robust/Single-source/s4_data/audio_wav_noise/test/race_car"
    assert not out_dir.exists() or not any(out_dir.iterdir())


@pytest.mark.parametrize(
    "config, message",
    [
        ({"negatives": ["thunder"]}, "thunder"),
        ({"datasets": ["s5"]}, "s5"),
        ({"negative_audio": {"noise_level_dbfs": 0}}, "noise_level_dbfs"),
        ({"seed": -1}, "seed"),
        ({"offscreen": {"on_missing": "ignore"}}, "ignore"),
        # misspelt keys anywhere name the key and where it is
        (
            {"experiments": {"robust": {"negative_ratio": {"noise": 0.1}}}},
            "experiments.robust: unknown key ('negative_ratio' was unexpected)",
        ),
        (
            {"training": {"model": {"name": "small", "nmae": "x"}}},
            "training.model: unknown key ('nmae' was unexpected)",
        ),
        (
            {"training": {"per_dataset": {"ms3": {"epoch": 30}}}},
            "training.per_dataset.ms3: unknown key ('epoch' was unexpected)",
        ),
    ],
)
def test_bad_config_is_rejected_with_the_key(tmp_path, config, message):
    proc = snakemake(tmp_path, config, "-n", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert "validat" in (proc.stdout + proc.stderr).lower()


def test_bad_metadata_is_reported_at_parse_time(tiny_root, tmp_path):
    meta = tiny_root / "Single-source/s4_meta_data.csv"
    meta.write_text(meta.read_text() + "x/../y,0,dog_barking,train\n")
    proc = snakemake(tmp_path, {"avsbench_root": str(tiny_root)}, "-n", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "s4_meta_data.csv, row 8" in text and "path separator" in text


def test_empty_splits_stop_the_dag_where_training_or_scoring_needs_them(tiny_root, tmp_path):
    """A header-only metadata CSV gave empty manifests, features and caches, then training
    and scoring on nothing; now the DAG stops, naming the file and the step, as soon as a
    requested job would train or score on an empty split (building negatives only warns)."""
    ms3 = tiny_root / "Multi-sources/ms3_meta_data.csv"
    ms3.write_text("video_id,split\n")
    config = {"avsbench_root": str(tiny_root), "datasets": ["ms3"]}
    proc = snakemake(tmp_path / "a", config, "-n", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"Empty split: {ms3}: ms3: holds no rows (header only?): training needs 'train'" in text
    # building only the robust audio: a warning, not an error
    proc = snakemake(tmp_path / "b", config, "-n", "results/robust/ms3/test.manifest.tsv")
    assert f"{ms3}: ms3: holds no rows (header only?): its outputs will be empty" in (
        proc.stdout + proc.stderr
    )
    # S4 of tiny_root has no val split: training could not validate
    s4 = tiny_root / "Single-source/s4_meta_data.csv"
    config = {"avsbench_root": str(tiny_root), "datasets": ["s4"]}
    proc = snakemake(tmp_path / "c", config, "-n", check=False)
    assert proc.returncode != 0
    assert f"{s4}: s4: lists no clips in split(s) ['val']: training (validation) needs" in (
        proc.stdout + proc.stderr
    )
    # a test split whose every clip was skipped for want of an off-screen donor (scored
    # through external predictions: training needs a val split tiny_root lacks)
    ms3.write_text("video_id,split\n-ms3aaaaaaa,train\nms3bbbbbbbb,train\nms3dddddddd,test\n")
    for clip in read_clips(tiny_root, "ms3"):  # the frames and masks the input checks declare
        for png in layout.clip_images(tiny_root, clip):
            png.parent.mkdir(parents=True, exist_ok=True)
            png.write_bytes(png_bytes(np.zeros((8, 8), np.uint8)))
    config = {
        "avsbench_root": str(tiny_root),
        "datasets": ["ms3"],
        "splits": ["train", "test"],
        "offscreen": {"on_missing": "skip"},
        "external_predictions": {"theirs": {"ms3": str(tmp_path)}},
    }
    proc = snakemake(tmp_path / "d", config, "-n", check=False)
    assert proc.returncode != 0
    assert "ms3 test: no clip has an off-screen donor" in proc.stdout + proc.stderr


def test_lint_passes():
    proc = subprocess.run(
        [SNAKEMAKE, "--lint", "--cores", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_changed_noise_level_reruns_only_noise_clips(tiny_run):
    config = {**TINY, "negative_audio": {"noise_level_dbfs": -40.0}}
    proc = snakemake(tiny_run, config, "-n")
    counts = job_counts(proc.stdout + proc.stderr)
    videos = sum(TINY["synthetic"]["s4_videos"].values()) + sum(
        TINY["synthetic"]["ms3_videos"].values()
    )
    assert counts["negative_audio"] == videos  # noise only; silence is untouched
    assert "offscreen_audio" not in counts and "synthetic_avsbench" not in counts
    assert counts["audio_features"] == 2 * 3  # the noise features of each split
    # one evaluate job per (dataset, experiment) scores every condition: a changed noise
    # input reruns each model's whole job (not 2 x 2 x 4 jobs, one per condition)
    assert counts["evaluate"] == 2 * 2 and counts["summary"] == 1


def test_training_outputs_of_the_default_experiments(tiny_run):
    import torch
    from snakemake.utils import update_config, validate

    from avsrobust.run_config import training_config

    # the config the tiny run trained with (TINY over config/config.yaml, as Snakemake merges
    # a --configfile): the default robust experiment sets its own epochs, per dataset too
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    update_config(config, copy.deepcopy(TINY))
    validate(config, str(REPO / "config" / "schema.yaml"))
    for dataset in ("s4", "ms3"):
        for experiment in ("baseline", "robust"):
            epochs = training_config(config, dataset, experiment, 1)["epochs"]
            folder = tiny_run / "results/models" / dataset / experiment / "seed1"
            for name in ("final.pt", "best.pt"):
                state = torch.load(folder / name, map_location="cpu", weights_only=True)
                assert state, f"{folder / name} is empty"
            rows = (folder / "metrics.tsv").read_text().splitlines()
            header = rows[0].split("\t")
            assert len(rows) == 1 + epochs, (dataset, experiment)
            assert {"val_miou", "val_fpr_noise", "train_items_noise"} <= set(header)
            counts = dict(zip(header, rows[1].split("\t"), strict=True))
            negatives = sum(
                int(counts[f"train_items_{t}"]) for t in ("silence", "noise", "offscreen")
            )
            if experiment == "baseline":
                assert negatives == 0
            else:
                assert negatives > 0
            assert torch.load(folder / "best.pt", weights_only=True)["cfg"]["seed"] == 1
            # a finished run keeps no resume state (tests/test_train_workflow.py)
            assert not (tiny_run / "results/checkpoints" / dataset / experiment / "seed1").exists()


CONDITIONS = ("positive", "silence", "noise", "offscreen", "mixture")


def test_evaluation_metrics_predictions_and_summary(tiny_run):
    results = tiny_run / "results"
    for ds, n_test in (("s4", 3), ("ms3", 2)):
        for exp in ("baseline", "robust"):
            for cond in CONDITIONS:
                doc = json.loads((results / f"metrics/{ds}/{exp}/{cond}.json").read_text())
                assert (doc["dataset"], doc["experiment"], doc["condition"]) == (ds, exp, cond)
                assert doc["split"] == "test" and set(doc["runs"]) == {"seed0", "seed1"}
                key = "fpr" if layout.is_negative(cond) else "miou"  # mixture: mIoU
                values = [r[key] for r in doc["runs"].values()]
                assert all(0.0 <= v <= 1.0 for v in values)
                assert doc["mean"][key] == pytest.approx(statistics.mean(values))
                assert doc["std"][key] == pytest.approx(statistics.stdev(values))
                for run in ("seed0", "seed1"):
                    preds = open_predictions(results / f"predictions/{ds}/{exp}/{cond}", run)
                    assert preds.probs.shape == (n_test, 5, 32, 32)
    lines = (results / "summary/summary.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
    assert [(r["dataset"], r["experiment"]) for r in rows] == [
        ("s4", "baseline"),
        ("s4", "robust"),
        ("ms3", "baseline"),
        ("ms3", "robust"),
    ]
    for r in rows:
        assert r["runs"] == "2" and r["g_miou_std"] != ""
        g = (float(r["miou"]) * (1 - float(r["fpr_mean"]))) ** 0.5
        assert abs(float(r["g_miou"]) - g) < 0.05  # mean of per-run values, near the value of means
    md = (results / "summary/summary.md").read_text()
    assert "G-mIoU" in md and "±" in md
    # how many videos each condition scored, of the split (no clip skipped here)
    for r in rows:
        n_test = {"s4": "3", "ms3": "2"}[r["dataset"]]
        assert r["videos_split"] == r["videos_offscreen"] == r["videos_positive"] == n_test
        assert r["offscreen_fallback"] == "0" and r["avsbench_batch_videos"] == "4"
    assert "- ms3: positive 2 of 2, silence 2 of 2, noise 2 of 2, offscreen 2 of 2, mixture 2" in md
    for name in ("fpr_by_type", "g_metrics", "qualitative_s4", "qualitative_ms3"):
        assert (results / f"summary/{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_report_bundles_the_table_and_figures(tiny_run, tmp_path):
    proc = snakemake(tiny_run, TINY, "--report", str(tmp_path / "report.html"))
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "False-positive rate per negative audio type" in html, proc.stderr[-2000:]
    assert "qualitative_ms3.png" in html and "summary.tsv" in html


def test_external_predictions_are_scored_like_the_model_that_made_them(tiny_run, tmp_path):
    """Export a model's masks as PNGs, feed them back through config: same numbers."""
    work = tmp_path / "work"
    shutil.copytree(tiny_run, work, symlinks=True)
    rel = "results/predictions_png/s4/baseline/seed0"
    pngs = work / rel
    snakemake(work, TINY, *(f"{rel}/{c}" for c in CONDITIONS))
    assert len(list((pngs / "noise").rglob("*.png"))) == 3 * 5
    config = {**TINY, "external_predictions": {"mine": {"s4": str(pngs)}}}
    snakemake(work, config)
    for cond in CONDITIONS:
        ours = json.loads((work / f"results/metrics/s4/baseline/{cond}.json").read_text())
        theirs = json.loads((work / f"results/metrics/s4/mine/{cond}.json").read_text())
        assert theirs["source"]["kind"] == "external"
        assert theirs["runs"]["external"] == ours["runs"]["seed0"]
    summary = (work / "results/summary/summary.tsv").read_text()
    assert "s4\tmine\texternal\t1\t" in summary and "ms3\tmine" not in summary
    bad = {**TINY, "external_predictions": {"theirs": {"s4": str(tmp_path / "nowhere")}}}
    proc = snakemake(work, bad, "-n", check=False)
    assert proc.returncode != 0
    assert f"external_predictions.theirs.s4: {tmp_path / 'nowhere'} is not a folder" in (
        proc.stdout + proc.stderr
    )


# one config name per published format; image_size 64 (not training.image_size, 32) takes
# the frame cache built at the checkpoint's own size
IMPORTS = {
    "tpavi_r50": ("avsbench-tpavi-r50", 32, ("s4", "ms3")),
    "tpavi_pvt2": ("avsbench-tpavi-pvt2", 32, ("s4",)),
    "seg_r50": ("avsegformer-r50", 64, ("s4",)),
    "seg_pvt2": ("avsegformer-pvt2", 64, ("s4",)),
    "robust_seg": ("avsbench-robust-avsegformer", 32, ("s4",)),
}


def _published_files(folder: Path, scale: float = 1e-6) -> dict:
    """external_checkpoints for IMPORTS: state dicts in each published layout (recorded key
    names and shapes, a constant per tensor: tests/helpers.published_state)."""
    import torch
    from helpers import published_state

    from avsrobust.checkpoint_formats import PUBLISHED_FORMATS

    folder.mkdir(parents=True, exist_ok=True)
    block = {}
    for name, (fmt, size, datasets) in IMPORTS.items():
        entry = {"format": fmt, "image_size": size}
        for ds in datasets:
            torch.save(published_state(fmt, scale=scale), folder / f"{name}_{ds}.pth")
            entry[ds] = str(folder / f"{name}_{ds}.pth")
        if PUBLISHED_FORMATS[fmt].external_vggish:
            torch.save(published_state(fmt, "vggish", scale=scale), folder / "vggish.pth")
            entry["vggish"] = str(folder / "vggish.pth")
        block[name] = entry
    return block


def test_external_checkpoints_of_every_format_are_scored_under_every_condition(tiny_run, tmp_path):
    """A checkpoint of each published format, saved in its published layout, imports and is
    scored under every condition with no training, at its own size, in the same summary,
    figures and report; replacing one file re-imports and re-scores that model alone."""
    import torch

    from avsrobust.data import AVSDataset
    from avsrobust.evaluate import load_checkpoint, predict

    work = tmp_path / "work"
    shutil.copytree(tiny_run, work, symlinks=True)
    block = _published_files(tmp_path / "published")
    config = {**TINY, "external_checkpoints": block}
    proc = snakemake(work, config)
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["import_checkpoint"] == 6 and counts["evaluate"] == 6
    assert counts["frame_cache_at_size"] == 1  # s4 test at 64 px, shared by both 64-px models
    assert "train" not in counts and "frame_cache" not in counts
    results = work / "results"
    for name, (fmt, size, datasets) in IMPORTS.items():
        for ds in datasets:
            imported = torch.load(
                results / f"models/{ds}/{name}/imported.pt", map_location="cpu", weights_only=True
            )["cfg"]
            assert imported["image_size"] == size and imported["imported"]["format"] == fmt
            assert imported["imported"]["checkpoint"] == block[name][ds]
            for cond in CONDITIONS:
                doc = json.loads((results / f"metrics/{ds}/{name}/{cond}.json").read_text())
                assert doc["condition"] == cond and list(doc["runs"]) == ["external"]
                assert doc["source"]["kind"] == "checkpoint" and doc["source"]["format"] == fmt
                assert doc["source"]["image_size"] == size
                preds = open_predictions(results / f"predictions/{ds}/{name}/{cond}", "external")
                assert preds.probs.shape == (3 if ds == "s4" else 2, 5, size, size)
    assert (results / "frame_cache/s4/test/64px/index.tsv").is_file()
    # the workflow's predictions are the imported model's on the frames at its size
    model, cfg = load_checkpoint(results / "models/s4/seg_r50/imported.pt", torch.device("cpu"))
    feats = results / "features/s4/test"
    ds = AVSDataset(
        results / "frame_cache/s4/test/64px",
        {"noise": (feats / "noise.npy", feats / "noise.index.tsv")},
        ["noise"],
    )
    predict(model, ds, "noise", tmp_path / "ref", "external", torch.device("cpu"), amp=cfg["amp"])
    assert (tmp_path / "ref/external.npy").read_bytes() == (
        results / "predictions/s4/seg_r50/noise/external.npy"
    ).read_bytes()
    lines = (results / "summary/summary.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
    got = [(r["dataset"], r["experiment"], r["source"]) for r in rows]
    assert got == [
        *[("s4", e, "model") for e in ("baseline", "robust")],
        *[("s4", n, "checkpoint") for n in sorted(IMPORTS)],  # config order (yaml sorts)
        *[("ms3", e, "model") for e in ("baseline", "robust")],
        ("ms3", "tpavi_r50", "checkpoint"),
    ]
    for r in rows:
        assert all(r[f"fpr_{t}"] != "" for t in ("silence", "noise", "offscreen")), r
        assert r["miou"] != "" and r["g_miou"] != ""
    html = tmp_path / "report.html"
    snakemake(work, config, "--report", str(html))
    assert "seg_pvt2" in (results / "summary/summary.md").read_text() and html.stat().st_size
    # a new checkpoint file: that model alone is imported and scored again
    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(snakemake(work, config, "-n"))
    other = _published_files(tmp_path / "other", scale=2e-6)["seg_r50"]["s4"]
    shutil.copyfile(other, block["seg_r50"]["s4"])
    counts = job_counts((lambda p: p.stdout + p.stderr)(snakemake(work, config, "-n")))
    assert counts == {
        "import_checkpoint": 1,
        "evaluate": 1,
        "summary": 1,
        "figures": 1,
        "all": 1,
        "total": 5,
    }
    # a rerun of one model's job rewrites every condition's predictions and scores with the
    # same bytes (so rerunning the whole job when one condition's input changed is exact)
    scored = {
        c: sha_tree(results / d / "s4/robust_seg")
        for c, d in (("m", "metrics"), ("p", "predictions"))
    }
    proc = snakemake(work, config, "--force", "results/metrics/s4/robust_seg/noise.json")
    assert job_counts(proc.stdout + proc.stderr)["evaluate"] == 1
    assert {
        c: sha_tree(results / d / "s4/robust_seg")
        for c, d in (("m", "metrics"), ("p", "predictions"))
    } == scored


def test_external_checkpoint_errors_name_the_key_or_file(tmp_path):
    """Missing files and VGGish mix-ups stop the DAG naming the key; a checkpoint of another
    format fails its import job naming the file and the format it fits; the format's own
    training size (AVSegFormer: 512 px) is the default evaluation size."""
    block = _published_files(tmp_path / "published")
    r50, seg = block["tpavi_r50"], block["seg_r50"]
    bad = {
        "x": ({"s4": r50["s4"], "format": r50["format"]}, "keeps VGGish outside its checkpoint"),
        "y": ({**seg, "vggish": r50["vggish"]}, "external_checkpoints.y.vggish: a avsegformer"),
        "z": (
            {"s4": str(tmp_path / "nope.pth"), "format": seg["format"]},
            "nope.pth is not a file",
        ),
        "baseline": (seg, "'baseline' is also the name of an experiment"),
    }
    for name, (entry, message) in bad.items():
        proc = snakemake(
            tmp_path / name, {**TINY, "external_checkpoints": {name: entry}}, "-n", check=False
        )
        assert proc.returncode != 0 and message in proc.stdout + proc.stderr, name
    # AVSegFormer's default size: the evaluated split's frame cache is built at 512 px
    entry = {"s4": seg["s4"], "format": seg["format"]}
    config = {**TINY, "external_checkpoints": {"seg": entry}}
    proc = snakemake(tmp_path / "dry", config, "-n", "results/metrics/s4/seg/noise.json")
    assert "results/frame_cache/s4/test/512px/frames.npy" in proc.stdout + proc.stderr
    # an AVSegFormer file declared as TPAVI: the import job fails naming file and format
    work = tmp_path / "wrong"
    wrong = {"s4": seg["s4"], "format": "avsbench-tpavi-r50", "vggish": r50["vggish"]}
    proc = snakemake(
        work,
        {**TINY, "external_checkpoints": {"w": wrong}},
        "results/models/s4/w/imported.pt",
        check=False,
    )
    log = (work / "logs/import_checkpoint/s4/w.log").read_text()
    assert proc.returncode != 0 and seg["s4"] in log and "fits --format avsegformer-r50" in log
    assert not (work / "results/models/s4/w/imported.pt").exists()
