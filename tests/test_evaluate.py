"""Evaluation: saved-prediction format, PNG import/export, scoring, checkpoints, the
summary table, plots and the bring-your-own-predictions CLI, on small real trees."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cache_dir, feature_paths
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from avsrobust import frame_cache as FC
from avsrobust import plots
from avsrobust.byo import load_ground_truth
from avsrobust.byo import main as byo_main
from avsrobust.data import AVSDataset
from avsrobust.errors import ConfigError, InputError
from avsrobust.evaluate import condition_document, load_checkpoint, predict, score
from avsrobust.metadata import read_clips
from avsrobust.metrics import fscore, g_metrics, thresholds
from avsrobust.models import build_model
from avsrobust.predictions import (
    PredictionWriter,
    export_png,
    logits_to_uint8,
    open_predictions,
    prediction_png,
    probs_to_uint8,
    read_png_tree,
    uint8_to_logits,
    write_index,
)
from avsrobust.summary import experiment_row, markdown_text, mean_std, run_row, tsv_text
from avsrobust.synthetic import SyntheticConfig, generate

REPO = Path(__file__).resolve().parents[1]
S = 32


# ----------------------------------------------------------------------------- quantisation
def test_uint8_logits_keep_the_foreground_threshold_exactly():
    q = torch.arange(256, dtype=torch.uint8)
    logits = uint8_to_logits(q)
    assert torch.equal(logits > 0, q >= 128)
    assert logits[0] == -math.inf and logits[255] == math.inf
    p = torch.sigmoid(logits.double())
    assert torch.allclose(p, q.double() / 255, atol=1e-7)


def test_probabilities_round_to_nearest_step():
    p = torch.tensor([0.0, 0.4 / 255, 0.499, 0.5, 0.501, 1.0, 1.2, -0.1])
    assert probs_to_uint8(p).tolist() == [0, 0, 127, 128, 128, 255, 255, 0]
    assert probs_to_uint8(p.numpy()).tolist() == [0, 0, 127, 128, 128, 255, 255, 0]
    assert logits_to_uint8(torch.tensor([-50.0, 0.0, 50.0])).tolist() == [0, 128, 255]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_fscore_of_uint8_predictions_equals_thresholding_q_over_255(seed):
    """No F-score threshold i/254 can fall on a q/255 level: float32 logits cannot flip one."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 256, (4, 8, 8), generator=g, dtype=torch.uint8)
    gt = torch.rand(4, 8, 8, generator=g) > 0.5
    gt[:, 0, 0] = True
    got = fscore(uint8_to_logits(q), gt)
    p = q.double() / 255
    th = thresholds().double()
    pred = p[None] >= th[:, None, None, None]  # [255, N, H, W]
    tp = (pred & gt).flatten(2).sum(-1).double()
    prec = tp / (pred.flatten(2).sum(-1) + 1e-20)
    rec = tp / (gt.flatten(1).sum(-1) + 1e-20)
    f = (1.3 * prec * rec / (0.3 * prec + rec)).nan_to_num(0.0)
    assert got == pytest.approx(float(f.mean(1).max()), abs=1e-12)


# ----------------------------------------------------------------------------- a small world
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A synthetic AVSBench tree and the S4/MS3 test caches at S px."""
    base = tmp_path_factory.mktemp("eval")
    root, results = base / "avsbench", base / "results"
    cfg = SyntheticConfig(seed=1, s4_videos={"test": 3}, ms3_videos={"test": 2}, image_size=S)
    generate(root, cfg)
    for ds in ("s4", "ms3"):
        clips = [c for c in read_clips(root, ds) if c.split == "test"]
        FC.build_cache(root, clips, cache_dir(results, ds, "test"), S)
    return root, results


def _write_preds(folder: Path, run: str, cache: FC.FrameCache, q: np.ndarray) -> None:
    with PredictionWriter(folder / f"{run}.npy", len(cache), S) as w:
        w.write(0, q)
    write_index(folder / "index.tsv", cache.videos, cache.categories)


def _s4_test(world) -> tuple[FC.FrameCache, np.ndarray]:
    """The S4 test cache of the world and its foreground masks."""
    cache = FC.open_cache(cache_dir(world[1], "s4", "test"))
    return cache, np.asarray(cache.masks) == 1


def _noisy(gt: np.ndarray, seed: int, lift: int) -> np.ndarray:
    """uint8 predictions: uniform noise, ``lift`` higher on the foreground."""
    rng = np.random.default_rng(seed)
    return np.clip(gt * lift + rng.integers(0, 256 - lift, gt.shape), 0, 255).astype(np.uint8)


def test_perfect_and_empty_predictions_score_as_defined(world, tmp_path):
    _, results = world
    cache = FC.open_cache(cache_dir(results, "s4", "test"))
    gt = np.asarray(cache.masks) == 1
    _write_preds(tmp_path, "perfect", cache, np.where(gt, 255, 0).astype(np.uint8))
    perfect = score(open_predictions(tmp_path, "perfect"), cache, "positive")
    assert perfect["miou"] == 1.0 and perfect["fscore"] == pytest.approx(1.0)
    assert perfect["n_videos"] == 3 and perfect["n_frames"] == 15
    # under negative audio the same masks are all false positives, and fully "visually biased"
    neg = score(open_predictions(tmp_path, "perfect"), cache, "noise")
    assert neg["fpr"] == pytest.approx(gt.mean())
    assert neg["nonempty_rate"] == 1.0 and neg["visual_bias_miou"] == 1.0
    _write_preds(tmp_path, "empty", cache, np.zeros(gt.shape, np.uint8))
    empty = score(open_predictions(tmp_path, "empty"), cache, "silence")
    assert empty["fpr"] == 0.0 and empty["nonempty_rate"] == 0.0
    assert score(open_predictions(tmp_path, "empty"), cache, "positive")["miou"] == 0.0
    # all foreground: FPR 1
    _write_preds(tmp_path, "full", cache, np.full(gt.shape, 200, np.uint8))
    assert score(open_predictions(tmp_path, "full"), cache, "offscreen")["fpr"] == 1.0


def test_headline_fscore_is_the_published_per_batch_f_at_four_videos(world, tmp_path):
    """`fscore` = the published Eval_Fmeasure averaged over batches of 4 videos (AVSBench's
    test.sh); `fscore_dataset` = ours (one curve over the split); G-F uses `fscore`."""
    cache, gt = _s4_test(world)
    q = _noisy(gt, 0, 70)
    _write_preds(tmp_path, "r", cache, q)
    preds = open_predictions(tmp_path, "r")
    got = score(preds, cache, "positive")
    assert got["avsbench_batch_videos"] == 4
    logits = uint8_to_logits(torch.from_numpy(q)).flatten(0, 1)
    g = torch.from_numpy(gt).flatten(0, 1)
    # 3 videos < 4: one batch of 15 frames, i.e. the batch mean curve's max
    assert got["fscore"] == pytest.approx(
        fscore(logits, g, variant="avsbench", batch_size=20), abs=1e-12
    )
    assert got["fscore_dataset"] == pytest.approx(fscore(logits, g), abs=1e-12)
    two = score(preds, cache, "positive", avsbench_batch_videos=2)  # batches of 2 + 1 videos
    assert two["fscore"] == pytest.approx(
        fscore(logits, g, variant="avsbench", batch_size=10), abs=1e-12
    )
    assert two["fscore"] != pytest.approx(got["fscore"], abs=1e-6)
    assert two["fscore_dataset"] == got["fscore_dataset"] and two["miou"] == got["miou"]
    pos = {"seed0": got}
    noise = {"seed0": {"fpr": 0.1, "n_videos": 3}}
    docs = {"positive": _doc("positive", pos), "noise": _doc("noise", noise)}
    row = experiment_row(docs, ["noise"])
    assert row["g_f"] == pytest.approx(math.sqrt(got["fscore"] * 0.9))
    assert row["fscore_dataset"] == got["fscore_dataset"]


def test_default_batch_of_the_published_f_is_the_schema_default():
    import inspect

    import yaml

    from avsrobust.byo import score_tree
    from avsrobust.evaluate import evaluate_runs
    from avsrobust.metrics import AVSBENCH_BATCH_VIDEOS

    schema = yaml.safe_load((REPO / "config/schema.yaml").read_text())
    default = schema["properties"]["evaluation"]["properties"]["avsbench_batch_videos"]["default"]
    assert default == AVSBENCH_BATCH_VIDEOS == 4
    for fn in (score, evaluate_runs, score_tree):
        assert inspect.signature(fn).parameters["avsbench_batch_videos"].default == default
    assert (
        yaml.safe_load((REPO / "config/config.yaml").read_text())["evaluation"][
            "avsbench_batch_videos"
        ]
        == default
    )


def test_scoring_rejects_predictions_of_another_split_or_size(world, tmp_path):
    _, results = world
    cache = FC.open_cache(cache_dir(results, "s4", "test"))
    other = FC.open_cache(cache_dir(results, "ms3", "test"))
    _write_preds(tmp_path / "a", "r", other, np.zeros((len(other), 5, S, S), np.uint8))
    with pytest.raises(InputError, match="is not in the evaluated split"):
        score(open_predictions(tmp_path / "a", "r"), cache, "positive")
    with PredictionWriter(tmp_path / "b" / "r.npy", len(cache), S // 2) as w:
        w.write(0, np.zeros((len(cache), 5, S // 2, S // 2), np.uint8))
    write_index(tmp_path / "b" / "index.tsv", cache.videos, cache.categories)
    with pytest.raises(InputError, match="px"):
        score(open_predictions(tmp_path / "b", "r"), cache, "positive")
    (tmp_path / "b" / "index.tsv").write_text("row\tvideo\tcategory\n5\tx\ty\n")
    with pytest.raises(InputError, match="row 2"):
        open_predictions(tmp_path / "b", "r")


def test_a_failed_writer_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError), PredictionWriter(tmp_path / "r.npy", 2, S):
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- PNG trees
def test_png_export_then_import_round_trips_exactly(world, tmp_path):
    _, results = world
    cache = FC.open_cache(cache_dir(results, "s4", "test"))
    q = np.random.default_rng(0).integers(0, 256, (3, 5, S, S), dtype=np.uint8)
    _write_preds(tmp_path / "p", "seed0", cache, q)
    n = export_png(
        open_predictions(tmp_path / "p", "seed0"), tmp_path / "png", "s4", "test", "noise"
    )
    assert n == 15
    v, c = cache.videos[0], cache.categories[0]
    path = tmp_path / "png" / "noise" / "test" / c / v / f"{v}_1.png"
    assert path.is_file() and path == prediction_png(
        tmp_path / "png", "s4", "test", "noise", v, c, 1
    )
    read_png_tree(
        tmp_path / "png",
        "s4",
        "test",
        "noise",
        cache.videos,
        cache.categories,
        S,
        tmp_path / "x.npy",
    )
    assert np.array_equal(np.load(tmp_path / "x.npy"), q)


def _tree(root: Path, arrays: dict[tuple[str, int], np.ndarray], mode: str = "L") -> None:
    for (video, k), arr in arrays.items():
        path = prediction_png(root, "ms3", "test", "positive", video, "", k)
        path.parent.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(arr)
        (img.convert(mode) if mode != "L" else img).save(path)


def test_png_import_reads_01_masks_palettes_colours_and_resizes(tmp_path):
    m = np.zeros((16, 16), np.uint8)
    m[4:12, 4:12] = 1
    _tree(tmp_path / "a", {("v", k): m for k in range(1, 6)})
    info = read_png_tree(
        tmp_path / "a", "ms3", "test", "positive", ["v"], [""], 8, tmp_path / "a.npy"
    )
    got = np.load(tmp_path / "a.npy")
    assert info["binary_01"] and set(np.unique(got)) == {0, 255}
    assert got[0, 0, 2:6, 2:6].min() == 255 and got[0, 0, 0, 0] == 0  # nearest resize
    # a colour mask: any coloured pixel is foreground
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[0, 0] = (200, 0, 0)
    _tree(tmp_path / "b", {("v", k): rgb for k in range(1, 6)})
    read_png_tree(tmp_path / "b", "ms3", "test", "positive", ["v"], [""], 8, tmp_path / "b.npy")
    b = np.load(tmp_path / "b.npy")
    assert b[0, 0, 0, 0] == 255 and b[0, 0].sum() == 255
    # probability maps are kept; "mask" turns any nonzero value into foreground
    p = np.full((8, 8), 7, np.uint8)
    _tree(tmp_path / "c", {("v", k): p for k in range(1, 6)})
    read_png_tree(tmp_path / "c", "ms3", "test", "positive", ["v"], [""], 8, tmp_path / "c.npy")
    assert (np.load(tmp_path / "c.npy") == 7).all()
    read_png_tree(
        tmp_path / "c", "ms3", "test", "positive", ["v"], [""], 8, tmp_path / "d.npy", "mask"
    )
    assert (np.load(tmp_path / "d.npy") == 255).all()


def test_png_import_names_the_missing_or_broken_file_and_writes_nothing(tmp_path):
    m = np.zeros((8, 8), np.uint8)
    _tree(tmp_path, {("v", k): m for k in range(1, 5)})  # frame 5 missing
    with pytest.raises(InputError, match=r"v_5\.png: prediction PNG is missing"):
        read_png_tree(tmp_path, "ms3", "test", "positive", ["v"], [""], 8, tmp_path / "o.npy")
    prediction_png(tmp_path, "ms3", "test", "positive", "v", "", 5).write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"v_5\.png: unreadable prediction PNG"):
        read_png_tree(tmp_path, "ms3", "test", "positive", ["v"], [""], 8, tmp_path / "o.npy")
    assert not (tmp_path / "o.npy").exists()
    assert not list(tmp_path.glob(".o.npy*"))
    with pytest.raises(InputError, match="no silence prediction folder"):
        read_png_tree(tmp_path, "ms3", "test", "silence", ["v"], [""], 8, tmp_path / "o.npy")
    with pytest.raises(ConfigError, match="format"):
        read_png_tree(tmp_path, "ms3", "test", "positive", ["v"], [""], 8, tmp_path / "o.npy", "x")


# ----------------------------------------------------------------------------- models
def _features(results: Path, root: Path, ds: str, cond: str, value: float) -> dict:
    cache = FC.open_cache(cache_dir(results, ds, "test"))
    npy, index = feature_paths(results, ds, "test", cond)
    npy.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.save(npy, (value + rng.standard_normal((len(cache), 5, 1, 96, 64))).astype(np.float32))
    lines = ["row\tvideo\tcategory\tpath"]
    lines += [
        f"{i}\t{v}\t{c}\tx.wav"
        for i, (v, c) in enumerate(zip(cache.videos, cache.categories, strict=True))
    ]
    index.write_text("\n".join(lines) + "\n")
    return {cond: (npy, index)}


def test_checkpoint_predictions_are_deterministic_and_gating_empties_masks(world, tmp_path):
    root, results = world
    torch.manual_seed(0)
    cfg = {"name": "small", "classifier": True, "match": False}  # the classifier head's gate
    model = build_model(cfg)
    ck = tmp_path / "best.pt"
    torch.save({"model": model.state_dict(), "cfg": {"model": cfg}, "epoch": 1}, ck)
    loaded, saved_cfg = load_checkpoint(ck, torch.device("cpu"))
    assert saved_cfg["model"] == cfg
    ds = AVSDataset(
        cache_dir(results, "s4", "test"),
        _features(results, root, "s4", "noise", -4.6),
        ["noise"],
    )
    a = predict(loaded, ds, "noise", tmp_path / "a", "seed0", torch.device("cpu"), batch_size=2)
    predict(loaded, ds, "noise", tmp_path / "b", "seed0", torch.device("cpu"), batch_size=3)
    sha = [
        hashlib.sha256((p / "seed0.npy").read_bytes()).hexdigest()
        for p in (tmp_path / "a", tmp_path / "b")
    ]
    assert sha[0] == sha[1] and a.videos == ds.videos and a.probs.shape == (3, 5, S, S)
    # the classifier gate: a head that always says "silent" must empty every mask
    with torch.no_grad():
        loaded.sounding.mlp[-1].weight.zero_()
        loaded.sounding.mlp[-1].bias.fill_(-5.0)
    assert (
        int(
            np.asarray(
                predict(loaded, ds, "noise", tmp_path / "u", "seed0", torch.device("cpu")).probs
            ).max()
        )
        > 0
    )
    g = predict(loaded, ds, "noise", tmp_path / "g", "seed0", torch.device("cpu"), gate=True)
    assert int(np.asarray(g.probs).max()) == 0


def test_bad_checkpoints_are_named(tmp_path):
    with pytest.raises(InputError, match="checkpoint is missing"):
        load_checkpoint(tmp_path / "nope.pt", torch.device("cpu"))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(InputError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt", torch.device("cpu"))
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a training checkpoint"):
        load_checkpoint(tmp_path / "other.pt", torch.device("cpu"))
    small = build_model({"name": "small"})
    torch.save(
        {"model": small.state_dict(), "cfg": {"model": {"name": "small", "channels": 8}}},
        tmp_path / "m.pt",
    )
    with pytest.raises(InputError, match="weights do not fit"):
        load_checkpoint(tmp_path / "m.pt", torch.device("cpu"))


def test_one_job_loads_each_model_once_and_scores_every_condition(world, tmp_path, monkeypatch):
    """evaluate_model (the workflow's evaluate job): each run's checkpoint is loaded once
    and predicts every condition; each condition gets its own metrics file and predictions
    folder, equal to what predict and score give for that condition alone."""
    from avsrobust import evaluate as ev

    root, results = world
    conds = ["positive", "silence", "noise"]
    files = {}
    for value, cond in zip((0.0, -4.6, 1.5), conds, strict=True):
        files.update(_features(results, root, "s4", cond, value))
    ckpts = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        cfg = {"name": "small"}
        ckpts.append(tmp_path / f"seed{seed}.pt")
        torch.save({"model": build_model(cfg).state_dict(), "cfg": {"model": cfg}}, ckpts[-1])
    loads = []
    real_load = ev.load_checkpoint
    monkeypatch.setattr(ev, "load_checkpoint", lambda *a: loads.append(a[0]) or real_load(*a))
    p = {
        "dataset": "s4",
        "experiment": "exp",
        "split": "test",
        "runs": ["seed0", "seed1"],
        "conditions": conds,
        "source": "model",
        "format": None,
        "batch_size": 2,
        "avsbench_batch_videos": 4,
    }
    cache = cache_dir(results, "s4", "test")
    kw = {
        "cache_index": cache / FC.INDEX_FILE,
        "clips": [files[c][1] for c in conds],
        "features": [files[c][0] for c in conds],
        "metrics": [tmp_path / f"metrics/{c}.json" for c in conds],
        "predictions": [tmp_path / f"pred/{c}" for c in conds],
        "models": ckpts,
    }
    docs = ev.evaluate_model(p, **kw)
    assert loads == ckpts  # once per run, not once per (run, condition)
    gt = FC.open_cache(cache)
    for cond in conds:
        doc = json.loads((tmp_path / f"metrics/{cond}.json").read_text())
        assert doc == json.loads(json.dumps(docs[cond]))
        assert doc["condition"] == cond and set(doc["runs"]) == {"seed0", "seed1"}
        alone = AVSDataset(cache, {cond: files[cond]}, [cond])
        for run, ck in zip(p["runs"], ckpts, strict=True):
            model, _ = real_load(ck, torch.device("cpu"))
            ref = predict(model, alone, cond, tmp_path / "ref" / cond, run, torch.device("cpu"))
            got = tmp_path / f"pred/{cond}/{run}.npy"
            assert got.read_bytes() == (tmp_path / "ref" / cond / f"{run}.npy").read_bytes()
            assert doc["runs"][run] == score(ref, gt, cond)
    # the conditions' predictions differ (each saw its own audio)
    assert (tmp_path / "pred/positive/seed0.npy").read_bytes() != (
        tmp_path / "pred/noise/seed0.npy"
    ).read_bytes()
    # a model trained at another size than the cache's is refused, naming the checkpoint
    small = torch.load(ckpts[0], weights_only=True)
    small["cfg"]["image_size"] = 2 * S
    torch.save(small, tmp_path / "big.pt")
    with pytest.raises(InputError, match=f"big.pt: trained at {2 * S} px, but the frame cache"):
        ev.evaluate_model({**p, "runs": ["seed0"]}, **{**kw, "models": [tmp_path / "big.pt"]})
    with pytest.raises(ConfigError, match="2 metrics for 3 conditions"):
        ev.evaluate_model(p, **{**kw, "metrics": kw["metrics"][:2]})
    with pytest.raises(ConfigError, match="give the feature files"):
        ev.evaluate_model(p, **{**kw, "features": None})
    with pytest.raises(ConfigError, match="either the models or an external"):
        ev.evaluate_model(p, **{**kw, "external": tmp_path})


# ----------------------------------------------------------------------------- summary
def test_mean_and_sample_std_over_runs():
    assert mean_std([0.5]) == (0.5, None)
    m, s = mean_std([0.2, 0.4, 0.9])
    assert m == pytest.approx(0.5) and s == pytest.approx(math.sqrt((0.09 + 0.01 + 0.16) / 2))
    assert mean_std([0.2, None]) == (None, None)
    assert mean_std([]) == (None, None)


def _doc(cond: str, runs: dict) -> dict:
    return condition_document("s4", "robust", cond, "test", runs, {"kind": "model"})


def test_g_metrics_are_computed_per_run_then_averaged():
    pos = {"seed0": {"miou": 0.81, "fscore": 0.64}, "seed1": {"miou": 0.49, "fscore": 0.36}}
    neg = {
        "silence": {"seed0": {"fpr": 0.0}, "seed1": {"fpr": 0.2}},
        "noise": {"seed0": {"fpr": 0.0}, "seed1": {"fpr": 0.0}},
    }
    docs = {"positive": _doc("positive", pos)} | {t: _doc(t, r) for t, r in neg.items()}
    row = experiment_row(docs, ["silence", "noise"])
    g0 = g_metrics(0.81, 0.64, {"silence": 0.0, "noise": 0.0})["g_miou"]
    g1 = g_metrics(0.49, 0.36, {"silence": 0.2, "noise": 0.0})["g_miou"]
    assert row["runs"] == 2 and row["g_miou"] == pytest.approx((g0 + g1) / 2)
    assert row["g_miou_std"] == pytest.approx(abs(g0 - g1) / math.sqrt(2))
    assert row["miou"] == pytest.approx(0.65) and row["fpr_mean"] == pytest.approx(0.05)
    assert row["per_run"]["seed0"]["g_miou"] == pytest.approx(0.9)
    md = markdown_text([row], ["silence", "noise"])
    assert "| s4 | robust | 2 | 0.650 ± 0.226 |" in md
    tsv = tsv_text([row], ["silence", "noise"]).splitlines()
    head, values = tsv[0].split("\t"), tsv[1].split("\t")
    assert float(values[head.index("g_miou")]) == pytest.approx((g0 + g1) / 2, abs=1e-6)
    # a run missing under one condition is left out, not mixed in
    docs["noise"]["runs"].pop("seed1")
    assert experiment_row(docs, ["silence", "noise"])["runs"] == 1


def test_summary_says_how_many_videos_each_condition_scored():
    """With offscreen.on_missing: skip the off-screen set is smaller than the split's; with
    fallback some donors are not legal: the table says so (e.g. MS3 off-screen 413 of 424)."""
    negatives = ["silence", "offscreen"]
    runs = {
        "positive": {"seed0": {"miou": 0.5, "fscore": 0.6, "n_videos": 64}},
        "silence": {"seed0": {"fpr": 0.1, "n_videos": 64}},
        "offscreen": {"seed0": {"fpr": 0.2, "n_videos": 62}},
    }
    docs = {c: _doc(c, r) for c, r in runs.items()}
    row = experiment_row(docs, negatives, videos_split=64, offscreen_fallback=0)
    assert (row["videos_split"], row["videos_positive"], row["videos_offscreen"]) == (64, 64, 62)
    md = markdown_text([row, {**row, "experiment": "baseline"}], negatives, "test")
    assert "Videos scored per audio condition (test split):" in md
    assert md.count("- s4: positive 64 of 64, silence 64 of 64, offscreen 62 of 64") == 1
    head, values = (line.split("\t") for line in tsv_text([row], negatives).splitlines())
    assert values[head.index("videos_offscreen")] == "62"
    assert values[head.index("videos_split")] == "64"
    fell_back = experiment_row(docs, negatives, videos_split=64, offscreen_fallback=3)
    other = {**fell_back, "experiment": "external"}
    md = markdown_text([row, other], negatives)
    assert "- s4/robust: positive 64 of 64, silence 64 of 64, offscreen 62 of 64\n" in md
    assert "offscreen 62 of 64 (3 with a fallback donor)" in md


def test_run_row_without_a_negative_score_has_no_g_metrics():
    row = run_row({"positive": {"miou": 0.5, "fscore": 0.5}, "noise": {"fpr": None}}, ["noise"])
    assert row["g_miou"] is None and row["miou"] == 0.5


def test_plots_are_written_and_reproducible(world, tmp_path):
    _, results = world
    rows = [
        {
            "dataset": "s4",
            "experiment": e,
            "miou": 0.7,
            "fscore": 0.8,
            "g_miou": 0.8,
            "g_f": 0.85,
            "fpr_noise": f,
            "fpr_noise_std": 0.01,
            "miou_std": None,
        }
        for e, f in (("baseline", 0.1), ("robust", 0.0))
    ]
    for name in ("a", "b"):
        plots.fpr_by_type(rows, ["noise"], tmp_path / f"fpr_{name}.png")
        plots.g_metrics(rows, tmp_path / f"g_{name}.png")
    assert (tmp_path / "fpr_a.png").read_bytes() == (tmp_path / "fpr_b.png").read_bytes()
    assert Image.open(tmp_path / "g_a.png").size[0] > 300
    cache = FC.open_cache(cache_dir(results, "s4", "test"))
    _write_preds(tmp_path / "p", "seed0", cache, np.zeros((3, 5, S, S), np.uint8))
    preds = open_predictions(tmp_path / "p", "seed0")
    plots.qualitative(
        cache,
        {"baseline": {"positive": preds, "noise": preds}},
        ["positive", "noise", "silence"],
        tmp_path / "q.png",
        n_videos=2,
    )
    w, h = Image.open(tmp_path / "q.png").size
    assert w > h / 2 > 50  # 2 rows x 4 columns


# ----------------------------------------------------------------------------- BYO CLI
def _byo_tree(root: Path, clips, out: Path, *, perfect: bool) -> None:
    for c in clips:
        for k in range(1, 6):
            for cond in ("positive", "silence"):
                if cond == "positive":
                    m = (
                        FC.load_mask(FC.mask_png(root, c, k), S)
                        if perfect
                        else np.zeros((S, S), np.uint8)
                    )
                    arr = (m * 255).astype(np.uint8)
                else:
                    arr = np.zeros((S, S), np.uint8)
                path = prediction_png(out, c.dataset, c.split, cond, c.video, c.category, k)
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(path)


def test_byo_cli_scores_a_perfect_model(world, tmp_path, capsys):
    root, _ = world
    clips = [c for c in read_clips(root, "s4") if c.split == "test"]
    _byo_tree(root, clips, tmp_path / "mine", perfect=True)
    code = byo_main(
        [
            "--avsbench-root",
            str(root),
            "--dataset",
            "s4",
            "--predictions",
            str(tmp_path / "mine"),
            "--size",
            str(S),
            "--out",
            str(tmp_path / "s.json"),
        ]
    )
    assert code == 0
    doc = json.loads((tmp_path / "s.json").read_text())
    assert list(doc["conditions"]) == ["positive", "silence"]
    assert doc["conditions"]["positive"]["miou"] == 1.0
    assert doc["conditions"]["silence"]["fpr"] == 0.0
    assert doc["summary"]["g_miou"] == pytest.approx(1.0)
    assert "| s4 | mine | 1 | 1.000 |" in capsys.readouterr().out
    gt = load_ground_truth(root, clips, S)
    assert gt.masks.shape == (3, 5, S, S)


def test_byo_cli_names_a_missing_png(world, tmp_path):
    root, _ = world
    clips = [c for c in read_clips(root, "s4") if c.split == "test"]
    _byo_tree(root, clips, tmp_path / "mine", perfect=False)
    gone = prediction_png(
        tmp_path / "mine", "s4", "test", "silence", clips[1].video, clips[1].category, 3
    )
    gone.unlink()
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "workflow_scripts" / "score_predictions.py"),
            "--avsbench-root",
            str(root),
            "--dataset",
            "s4",
            "--predictions",
            str(tmp_path / "mine"),
            "--size",
            str(S),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert f"{gone}: prediction PNG is missing" in proc.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_predict_and_score_on_cuda_agree_with_cpu(world, tmp_path):
    root, results = world
    torch.manual_seed(0)
    model = build_model({"name": "small", "classifier": True})
    feats = _features(results, root, "s4", "positive", 0.0)
    ds = AVSDataset(cache_dir(results, "s4", "test"), feats, ["positive"])
    cache = FC.open_cache(cache_dir(results, "s4", "test"))
    cpu = predict(model, ds, "positive", tmp_path / "cpu", "seed0", torch.device("cpu"))
    gpu = predict(
        model.to("cuda"), ds, "positive", tmp_path / "gpu", "seed0", torch.device("cuda"), amp=True
    )
    assert gpu.videos == cpu.videos
    diff = np.abs(np.asarray(gpu.probs, np.int16) - np.asarray(cpu.probs, np.int16))
    assert diff.mean() < 3  # bf16 autocast: close, not bit-equal
    on_cpu = score(cpu, cache, "positive", device="cpu")
    on_gpu = score(cpu, cache, "positive", device="cuda")
    for key in ("miou", "fscore", "fscore_dataset"):
        assert on_gpu[key] == pytest.approx(on_cpu[key], abs=1e-9)


# ----------------------------------------------------------------------------- mixture
def test_mixture_is_scored_with_miou_and_f_against_the_original_masks(world, tmp_path):
    """The mixture's sounding object still sounds: its answer is the original mask, so the
    perfect masks score mIoU 1 there (and no FPR), and empty masks score 0."""
    cache, gt = _s4_test(world)
    _write_preds(tmp_path, "noisy", cache, _noisy(gt, 3, 90))
    _write_preds(tmp_path, "perfect", cache, np.where(gt, 255, 0).astype(np.uint8))
    _write_preds(tmp_path, "empty", cache, np.zeros(gt.shape, np.uint8))
    mixed = score(open_predictions(tmp_path, "noisy"), cache, "mixture")
    positive = score(open_predictions(tmp_path, "noisy"), cache, "positive")
    assert mixed == positive and "fpr" not in mixed  # the same masks, the same metrics
    assert 0 < mixed["miou"] < 1
    assert score(open_predictions(tmp_path, "perfect"), cache, "mixture")["miou"] == 1.0
    assert score(open_predictions(tmp_path, "empty"), cache, "mixture")["miou"] == 0.0


def test_summary_has_mixture_columns_outside_the_g_metrics():
    negatives = ["silence", "mixture"]
    runs = {
        "positive": {"seed0": {"miou": 0.64, "fscore": 0.7, "n_videos": 4}},
        "silence": {"seed0": {"fpr": 0.19, "n_videos": 4}},
        "mixture": {"seed0": {"miou": 0.5, "fscore": 0.55, "n_videos": 3}},
    }
    docs = {c: _doc(c, r) for c, r in runs.items()}
    row = experiment_row(docs, negatives, videos_split=4, offscreen_fallback=1)
    assert row["miou_mixture"] == 0.5 and row["fscore_mixture"] == 0.55
    assert "fpr_mixture" not in row and row["fpr_mean"] == pytest.approx(0.19)
    assert row["g_miou"] == pytest.approx(math.sqrt(0.64 * 0.81))  # mixture left out
    md = markdown_text([row], negatives, "test")
    head = md.splitlines()[0]
    assert "mIoU mixture ↑ | F mixture ↑ | FPR silence ↓ | FPR mean ↓" in head
    assert "| 0.500 | 0.550 | 0.190 |" in md
    assert "mixture 3 of 4 (1 with a fallback donor)" in md
    head, values = (line.split("\t") for line in tsv_text([row], negatives).splitlines())
    assert values[head.index("miou_mixture")] == "0.500000"
    assert "fpr_mixture" not in head


def test_plots_show_the_mixture_beside_the_positive_audio(tmp_path):
    row = {"dataset": "s4", "experiment": "robust", "miou": 0.7, "fscore": 0.8, "g_miou": 0.8}
    plots.g_metrics([row], tmp_path / "g.png")
    plots.g_metrics([{**row, "miou_mixture": 0.6, "fscore_mixture": 0.7}], tmp_path / "gm.png")
    assert Image.open(tmp_path / "gm.png").size[0] > Image.open(tmp_path / "g.png").size[0]
    # the FPR panel has no mixture bar (it has no FPR): same figure with or without it
    row["fpr_noise"] = 0.1
    plots.fpr_by_type([row], ["noise"], tmp_path / "f.png")
    plots.fpr_by_type([row], ["noise", "mixture"], tmp_path / "fm.png")
    assert (tmp_path / "f.png").read_bytes() == (tmp_path / "fm.png").read_bytes()
