"""Losses and the training loop: gradient on empty targets, outputs that load with
weights_only=True, exact resume (also after SIGUSR1 preemption), baseline vs robust sampling."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import build_dataset, cache_dir, feature_paths

from avsrobust import frame_cache as FC
from avsrobust import train as train_module
from avsrobust.errors import ConfigError
from avsrobust.losses import av_matching_loss, mask_loss, sounding_loss, total_loss
from avsrobust.metadata import read_clips
from avsrobust.models import build_model
from avsrobust.resume import Preempted, request_preemption
from avsrobust.step import flatten_batch, gate_logits
from avsrobust.synthetic import SyntheticConfig, generate
from avsrobust.train import selection_score, train

S = 32
NEGATIVES = ("silence", "noise")
SMALL = {"name": "small", "classifier": True, "channels": 8, "widths": [8, 8, 16], "audio_dim": 16}
CFG = {
    "seed": 3,
    "epochs": 3,
    "batch_size": 2,
    "lr": 0.01,
    "lr_schedule": "constant",  # the resume tests change epochs; cosine has its own test
    "optimizer": "adamw",
    "weight_decay": 0.0001,
    "negative_ratios": {"silence": 0.5, "noise": 0.25},
    "workers": 0,
    "model": SMALL,
    "loss": {"iou_weight": 1.0, "av_weight": 0.5, "classifier_weight": 0.5},
    "amp": False,
    "channels_last": False,
    "gate_with_classifier": False,
    "cuda_graphs": False,  # the eager step; the graph tests switch it on
    "dataset": "s4",  # extra workflow keys are ignored
}

torch.set_num_threads(1)


def _write_features(results: Path, split: str, cond: str, clips, arr: np.ndarray) -> None:
    npy, index = feature_paths(results, "s4", split, cond)
    npy.parent.mkdir(parents=True, exist_ok=True)
    np.save(npy, arr.astype(np.float32))
    with open(index, "w", newline="", encoding="utf-8") as handle:
        w = csv.writer(handle, delimiter="\t", lineterminator="\n")
        w.writerow(["row", "video", "category", "path"])
        for row, c in enumerate(clips):
            w.writerow([row, c.video, c.category, f"{c.video}.wav"])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(train_ds, val_ds): synthetic S4 at 32 px, 4 train / 2 val videos, 3 conditions."""
    base = tmp_path_factory.mktemp("train_data")
    root, results = base / "avsbench", base / "results"
    generate(
        root,
        SyntheticConfig(seed=0, s4_videos={"train": 4, "val": 2}, image_size=S),
        datasets=("s4",),
    )
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        clips = [c for c in read_clips(root, "s4") if c.split == split]
        FC.build_cache(root, clips, cache_dir(results, "s4", split), S)
        n = len(clips)
        _write_features(results, split, "positive", clips, rng.normal(size=(n, 5, 1, 96, 64)))
        _write_features(results, split, "silence", clips, np.full((n, 5, 1, 96, 64), -4.6))
        _write_features(results, split, "noise", clips, rng.normal(2, 1, (n, 5, 1, 96, 64)))
    cfg = {"negatives": list(NEGATIVES)}
    return build_dataset(cfg, "s4", "train", results), build_dataset(cfg, "s4", "val", results)


def run(data, tmp: Path, name: str, **over):
    out, ckpt = tmp / name / "out", tmp / name / "ckpt"
    train_ds, val_ds = data
    on_batch = over.pop("on_batch", None)
    summary = train({**CFG, **over}, train_ds, val_ds, out, ckpt, "cpu", False, on_batch=on_batch)
    return summary, out, ckpt


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def full(data, tmp_path_factory):
    """One uninterrupted robust run of 3 epochs: the reference for the resume tests."""
    return run(data, tmp_path_factory.mktemp("runs"), "full")


# ------------------------------------------------------------------------- losses
def test_mask_loss_has_gradient_on_empty_targets():
    torch.manual_seed(0)
    target = torch.zeros(3, 1, 8, 8)
    valid = torch.ones(3, dtype=torch.bool)
    logits = torch.randn(3, 1, 8, 8, requires_grad=True)
    loss = mask_loss(logits, target, valid)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().min() > 0
    assert (logits.grad > 0).all()  # every pixel is pushed down
    values = [float(mask_loss(torch.full_like(target, v), target, valid)) for v in (5, 0, -5, -30)]
    assert values == sorted(values, reverse=True) and values[-1] < 1e-6
    # the IoU term alone also has gradient on empty targets (unlike Dice)
    logits.grad = None
    mask_loss(logits, target, valid, iou_weight=1.0).backward()
    bce_only = torch.randn(3, 1, 8, 8, requires_grad=True)
    (mask_loss(bce_only, target, valid) - mask_loss(bce_only, target, valid, kind="bce")).backward()
    assert bce_only.grad.abs().min() > 0


def test_mask_loss_ignores_invalid_frames_and_fits_nonempty_targets():
    torch.manual_seed(1)
    target = torch.zeros(4, 1, 8, 8)
    target[0, 0, 2:5, 2:6] = 1
    valid = torch.tensor([True, False, True, False])
    logits = torch.randn(4, 1, 8, 8, requires_grad=True)
    base = mask_loss(logits, target, valid)
    other = logits.detach().clone()
    other[~valid] = torch.randn(2, 1, 8, 8) * 100
    assert torch.equal(mask_loss(other, target, valid), base.detach())
    base.backward()
    assert (logits.grad[~valid] == 0).all() and logits.grad[valid].abs().sum() > 0
    perfect = (target * 2 - 1) * 30
    assert float(mask_loss(perfect, target, valid)) < 1e-6
    none = mask_loss(logits, target, torch.zeros(4, dtype=torch.bool))
    assert float(none.detach()) == 0.0 and none.requires_grad


def test_av_matching_loss_formula():
    torch.manual_seed(2)
    v, a = torch.randn(2, 4, 3, 3), torch.randn(2, 4)
    masks = torch.zeros(2, 1, 6, 6)
    masks[:, :, :4, :4] = 1.0
    got = av_matching_loss([(v, a)], masks)
    m = torch.zeros(2, 1, 3, 3)
    m[:, :, :2, :2] = 1
    obj = torch.nn.functional.normalize((v * m).sum((2, 3)) / (m.sum((2, 3)) + 1e-6), dim=1)
    pa = torch.nn.functional.normalize(a, dim=1).softmax(1)
    want = (pa * (pa.log() - obj.softmax(1).log())).sum()
    assert torch.allclose(got, want, atol=1e-6)
    assert float(av_matching_loss([], masks)) == 0.0


def test_sounding_and_total_loss_parts(data):
    train_ds, _ = data
    torch.manual_seed(0)
    batch = torch.utils.data.default_collate([train_ds[0], train_ds[(1, "silence")]])
    x = flatten_batch(batch, torch.device("cpu"))
    assert x["frames"].shape == (10, 3, S, S) and x["sounding"].tolist() == [1.0] * 5 + [0.0] * 5
    out = build_model(SMALL)(x["frames"], x["audio"])
    loss, parts = total_loss(out, x, CFG)
    assert set(parts) == {"total", "bce", "iou", "av", "sounding", "match", "cross", "cross_gate"}
    assert all(float(parts[k]) > 0 for k in ("total", "bce", "iou", "av", "sounding", "match"))
    assert float(parts["cross"]) == 0.0  # cross_weight defaults to 0
    assert torch.allclose(parts["sounding"], sounding_loss(out["sounding"], x["sounding"]).detach())
    want = parts["bce"] + parts["iou"] + 0.5 * parts["av"] + 0.5 * parts["sounding"]
    want = want + parts["match"]
    assert torch.allclose(loss.detach(), want)
    loss.backward()
    _, off = total_loss(out, x, {"loss": {"iou_weight": 0.0, "classifier_weight": 0.0}})
    assert float(off["iou"]) == float(off["av"]) == float(off["sounding"]) == 0.0
    with pytest.raises(ConfigError, match="unknown"):
        total_loss(out, x, {"loss": {"dice_weight": 1.0}})
    gated = gate_logits(out["logits"].detach(), torch.tensor([1.0] * 5 + [-1.0] * 5))
    assert (gated[5:] < 0).all() and torch.equal(gated[:5], out["logits"].detach()[:5])


# ------------------------------------------------------------------------- training
def test_train_writes_metrics_and_checkpoints(full):
    summary, out, ckpt = full
    with open(out / "metrics.tsv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    for r in rows:
        assert 0.0 <= float(r["val_miou"]) <= 1.0 and int(r["val_frames"]) == 2 * 5
        for neg in NEGATIVES:
            assert 0.0 <= float(r[f"val_fpr_{neg}"]) <= 1.0
        assert int(r["train_items"]) == 4 + 2 + 1  # 4 positives, round(.5*4), round(.25*4)
        assert r["train_items_silence"] == "2" and r["train_items_noise"] == "1"
        assert math.isfinite(float(r["train_loss"])) and float(r["train_av"]) > 0
    assert (out / "metrics.json").is_file()
    for path in (out / "best.pt", out / "final.pt"):
        ck = torch.load(path, weights_only=True)
        assert "model" in ck and ck["cfg"]["seed"] == CFG["seed"]
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["score"] == max(float(r["val_miou"]) for r in rows)
    assert summary["best_epoch"] == best["epoch"] and summary["start_epoch"] == 0
    assert not list(out.glob(".*.tmp"))
    # a finished run keeps no resume state (a rerun of it is forced or changed: afresh)
    assert not ckpt.exists()
    model = build_model(SMALL)
    model.load_state_dict(weights(out / "final.pt"))


def test_a_finished_run_is_rerun_afresh(data, full, tmp_path):
    """`--forcerun train` after a finished run resumed its 'epochs done', wrote no best.pt
    and failed with MissingOutputException; a finished run now leaves nothing to resume."""
    _, ref, _ = full
    run(data, tmp_path, "again")
    out = tmp_path / "again" / "out"
    for name in ("best.pt", "final.pt", "metrics.tsv", "metrics.json"):
        (out / name).unlink()  # Snakemake removes a forced job's outputs first
    second, _, ckpt = run(data, tmp_path, "again")
    assert second["start_epoch"] == 0
    assert_same_weights(out / "final.pt", ref / "final.pt")
    assert_same_weights(out / "best.pt", ref / "best.pt")
    assert len((out / "metrics.tsv").read_text().splitlines()) == 1 + 3
    assert not ckpt.exists()


def preempt_at(epoch: int):
    """on_batch hook: request preemption at the first batch of ``epoch`` (0-based)."""

    def on_batch(e, index, parts):
        if (e, index) == (epoch, 0):
            request_preemption()

    return on_batch


def test_a_changed_config_or_rebuilt_input_starts_afresh(data, full, tmp_path):
    """A checkpoint of another config was refused with an error (the job failed on every
    rerun); one trained on other inputs (a fixed mask, new features) was resumed."""
    _, ref, _ = full
    said: list[str] = []
    train_ds, val_ds = data
    out, ckpt = tmp_path / "c" / "out", tmp_path / "c" / "ckpt"

    def go(**over):
        cfg = {**CFG, **over}
        return train(cfg, train_ds, val_ds, out, ckpt, "cpu", False, said.append, **hooks)

    hooks = {"on_batch": preempt_at(1)}
    with pytest.raises(Preempted):
        go()
    hooks = {}
    summary = go(lr=0.5)
    assert summary["start_epoch"] == 0
    why = f"{ckpt / 'last.pt'}: written with a different config (lr: 0.01 -> 0.5); starting afresh"
    assert why in said

    hooks = {"on_batch": preempt_at(1)}
    with pytest.raises(Preempted):
        go()
    noise = train_ds.files[-2]  # the train split's noise features, rebuilt
    os.utime(noise, ns=(noise.stat().st_atime_ns, noise.stat().st_mtime_ns + 10**9))
    hooks = {}
    summary = go()
    assert summary["start_epoch"] == 0
    assert (
        f"{ckpt / 'last.pt'}: trained on other input files ({noise} changed); starting afresh"
        in said
    )
    assert_same_weights(out / "final.pt", ref / "final.pt")
    # a checkpoint past the configured epochs is not resumed either
    hooks = {"on_batch": preempt_at(2)}
    with pytest.raises(Preempted):
        go()
    hooks = {}
    assert go(epochs=1)["start_epoch"] == 0
    assert (
        f"{ckpt / 'last.pt'}: holds 2 epochs, more than the 1 configured; starting afresh" in said
    )


def test_preempted_after_the_best_epoch_resumes_every_output(data, tmp_path, monkeypatch):
    """Snakemake deletes a failed job's outputs: the resumed run took `best` from last.pt,
    never wrote best.pt again and ended in MissingOutputException."""
    import avsrobust.train as T

    real = T.validation_scores
    scores = iter([0.9, 0.5, 0.2] * 3)

    def falling(*args, **kwargs):  # the best epoch is the first
        return {**real(*args, **kwargs), "val_miou": next(scores)}

    monkeypatch.setattr(T, "validation_scores", falling)
    ref, ref_out, _ = run(data, tmp_path, "ref")
    assert ref["best_epoch"] == 1
    with pytest.raises(Preempted) as err:
        run(data, tmp_path, "pre", on_batch=preempt_at(2))
    assert err.value.epoch == 2
    out, ckpt = tmp_path / "pre" / "out", tmp_path / "pre" / "ckpt"
    assert torch.load(ckpt / "best.pt", weights_only=True)["epoch"] == 1
    for name in ("best.pt", "metrics.tsv", "metrics.json"):
        (out / name).unlink(missing_ok=True)  # what Snakemake does to the failed job
    summary, _, _ = run(data, tmp_path, "pre")
    assert summary["start_epoch"] == 2 and summary["best_epoch"] == 1
    for name in ("best.pt", "final.pt"):
        assert_same_weights(out / name, ref_out / name)
    assert torch.load(out / "best.pt", weights_only=True)["epoch"] == 1
    assert len((out / "metrics.tsv").read_text().splitlines()) == 1 + 3
    assert (out / "metrics.json").is_file() and not ckpt.exists()


def test_a_half_committed_best_is_settled_on_resume(data, tmp_path):
    """A kill between writing best.next.pt and last.pt (or before its rename)."""
    from avsrobust.resume import Checkpoints

    with pytest.raises(Preempted):
        run(data, tmp_path, "half", on_batch=preempt_at(1))
    ckpts = Checkpoints(tmp_path / "half" / "ckpt")
    best = torch.load(ckpts.best, weights_only=True)
    # killed after last.pt named epoch 1 as best, before the rename: the rename is finished
    ckpts.best.rename(ckpts.pending)
    # ... and a stray pending best of an epoch last.pt never recorded is dropped
    summary, out, _ = run(data, tmp_path, "half", epochs=1)
    assert summary["start_epoch"] == 1
    restored = torch.load(out / "best.pt", weights_only=True)
    assert restored["epoch"] == best["epoch"] == 1
    assert all(torch.equal(restored["model"][k], v) for k, v in best["model"].items())
    with pytest.raises(Preempted):
        run(data, tmp_path, "stray", on_batch=preempt_at(1))
    ckpts = Checkpoints(tmp_path / "stray" / "ckpt")
    torch.save({**best, "epoch": 2}, ckpts.pending)
    said: list[str] = []
    train_ds, val_ds = data
    cfg = {**CFG, "epochs": 1}
    summary = train(
        cfg, train_ds, val_ds, tmp_path / "stray" / "out", ckpts.dir, "cpu", False, said.append
    )
    assert summary["start_epoch"] == 1 and not ckpts.dir.exists()


def test_cosine_schedule_sets_each_epochs_rate_and_resumes_exactly(data, tmp_path):
    """lr_schedule: cosine decays the rate epoch by epoch (a function of the epoch alone, so
    a preempted run resumes at the rate the uninterrupted one had)."""
    from avsrobust.optim import COSINE_FLOOR, epoch_lr

    ref, ref_out, _ = run(data, tmp_path, "cos", lr_schedule="cosine")
    with open(ref_out / "metrics.tsv", encoding="utf-8") as handle:
        lrs = [float(r["lr"]) for r in csv.DictReader(handle, delimiter="\t")]
    decay = [
        COSINE_FLOOR + (1 - COSINE_FLOOR) * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)
    ]
    assert lrs == pytest.approx([CFG["lr"] * d for d in decay], rel=1e-12)
    assert lrs[0] > lrs[1] > lrs[2] > COSINE_FLOOR * CFG["lr"]
    assert epoch_lr({**CFG, "lr_schedule": "constant"}, 2) == CFG["lr"]
    # the weights differ from a constant-rate run's, and a resumed run reaches the same
    _, const_out, _ = run(data, tmp_path, "const", lr_schedule="constant")
    assert not torch.equal(
        weights(ref_out / "final.pt")["film.0.weight"],
        weights(const_out / "final.pt")["film.0.weight"],
    )
    with pytest.raises(Preempted):
        run(data, tmp_path, "cos_pre", lr_schedule="cosine", on_batch=preempt_at(2))
    run(data, tmp_path, "cos_pre", lr_schedule="cosine")
    assert_same_weights(tmp_path / "cos_pre" / "out" / "final.pt", ref_out / "final.pt")
    # more epochs change the rates of the epochs done: a longer run starts afresh
    with pytest.raises(Preempted):
        run(data, tmp_path, "cos_longer", lr_schedule="cosine", on_batch=preempt_at(1))
    longer, _, _ = run(data, tmp_path, "cos_longer", lr_schedule="cosine", epochs=4)
    assert longer["start_epoch"] == 0
    with pytest.raises(ConfigError, match="lr_schedule"):
        run(data, tmp_path, "bad", lr_schedule="step")


def test_baseline_trains_on_positives_only(data, tmp_path):
    summary, out, _ = run(data, tmp_path, "baseline", epochs=1, negative_ratios={})
    row = summary["history"][0]
    assert row["train_items"] == row["train_items_positive"] == 4
    assert row["train_items_silence"] == row["train_items_noise"] == 0
    assert "val_fpr_silence" in row and "val_fpr_noise" in row  # still evaluated


def test_sigusr1_preempts_then_resumes_exactly(data, full, tmp_path):
    _, ref, _ = full
    seen = []

    def on_batch(epoch, index, parts):
        seen.append((epoch, index))
        if (epoch, index) == (1, 0):
            os.kill(os.getpid(), signal.SIGUSR1)

    with pytest.raises(Preempted) as err:
        run(data, tmp_path, "pre", on_batch=on_batch)
    assert err.value.epoch == 1 and err.value.exit_code == 143
    assert seen[-1] == (1, 0)  # stopped at the next batch boundary
    ckpt = tmp_path / "pre" / "ckpt" / "last.pt"
    assert err.value.checkpoint == ckpt
    last = torch.load(ckpt, weights_only=True)
    assert last["epoch"] == 1 and len(last["history"]) == 1 and "optimizer" in last
    assert last["rng"]["sampler_epoch"] == 1 and last["cfg"]["seed"] == CFG["seed"]
    assert torch.load(ckpt.with_name("best.pt"), weights_only=True)["epoch"] == 1
    assert signal.getsignal(signal.SIGUSR1) is not request_preemption  # handler restored
    summary, out, _ = run(data, tmp_path, "pre")
    assert summary["start_epoch"] == 1
    assert_same_weights(out / "final.pt", ref / "final.pt")
    assert_same_weights(out / "best.pt", ref / "best.pt")


def test_preemption_in_first_epoch_leaves_no_checkpoint(data, tmp_path):
    with pytest.raises(Preempted) as err:
        run(data, tmp_path, "early", epochs=1, on_batch=lambda *a: request_preemption())
    assert err.value.epoch == 0 and err.value.checkpoint is None
    assert not (tmp_path / "early" / "ckpt" / "last.pt").exists()


# ------------------------------------------------------------------------- speed settings
def test_speed_keys_are_checked():
    from avsrobust.train_config import resolve_config

    c = resolve_config({})  # the schema's defaults (tests/test_config_files.py)
    assert c["deterministic"] is True and c["cuda_graphs"] is True and c["compile"] is False
    for key in ("deterministic", "cuda_graphs", "compile"):
        with pytest.raises(ConfigError, match=key):
            resolve_config({key: "yes"})
    with pytest.raises(ConfigError, match="cannot both"):
        resolve_config({"cuda_graphs": True, "compile": True})
    # negative ratios are checked where they enter train(), not again in the sampler
    with pytest.raises(ConfigError, match=">= 0"):
        resolve_config({"negative_ratios": {"noise": -0.1}})
    with pytest.raises(ConfigError, match="unknown audio type"):
        resolve_config({"negative_ratios": {"static": 0.1}})
    # the mixture is drawn like a negative type (with its original masks: test_data.py)
    assert resolve_config({"negative_ratios": {"mixture": 0.25}})["negative_ratios"] == {
        "mixture": 0.25
    }


def test_determinism_settings_are_restored():
    from avsrobust.runtime import determinism

    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    with determinism(False):
        assert not torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.benchmark
    with determinism(True):
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.benchmark
        assert not torch.utils.deterministic.fill_uninitialized_memory
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == before


def test_cuda_graphs_key_trains_eagerly_on_cpu(data, full, tmp_path):
    """cuda_graphs is a speed setting: on the CPU it is ignored, same weights as without."""
    _, ref, _ = full
    _, out, _ = run(data, tmp_path, "graphs_cpu", cuda_graphs=True, deterministic=False)
    assert_same_weights(out / "final.pt", ref / "final.pt")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_step_matches_eager_cuda(data):
    """The captured step replays the eager step's maths on every batch, any shape."""
    from avsrobust.cuda_graphs import GraphedTrainStep
    from avsrobust.optim import build_optimizer
    from avsrobust.runtime import determinism
    from avsrobust.step import train_step
    from avsrobust.train import prepare_model
    from avsrobust.train_config import resolve_config

    dev = torch.device("cuda")
    train_ds, _ = data
    items = [train_ds[i] for i in range(4)] + [train_ds[(0, "silence")], train_ds[(1, "noise")]]
    sizes = [2, 2, 2, 2, 1, 2, 2]  # a smaller batch between replays takes the eager path
    batches, k = [], 0
    for n in sizes:
        batches.append([items[(k + j) % len(items)] for j in range(n)])
        k += n
    results = {}
    for graphs in (False, True):
        # float32: bf16 rounding would amplify the atomics of upsampling's backward
        c = resolve_config({**CFG, "channels_last": True, "cuda_graphs": graphs})
        with determinism(True):
            torch.manual_seed(0)
            model = prepare_model(c, dev)
            opt = build_optimizer(model, c, dev)
            graphed = GraphedTrainStep(model, opt, c, dev, warmup=2) if graphs else None
            losses = []
            for b in batches:
                x = flatten_batch(torch.utils.data.default_collate(b), dev, True)
                parts = graphed(x) if graphed else train_step(model, opt, x, c, dev)
                losses.append(float(parts["total"]))
        results[graphs] = (
            losses,
            {k: v.detach().float().cpu() for k, v in model.state_dict().items()},
        )
        if graphed:
            assert graphed.replays == 4 and graphed.eager_steps == 3
    (le, we), (lg, wg) = results[False], results[True]
    np.testing.assert_allclose(lg, le, rtol=1e-3, atol=1e-5)
    assert we.keys() == wg.keys()
    for key in we:
        torch.testing.assert_close(wg[key], we[key], rtol=1e-3, atol=1e-4, msg=key)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_cuda_graphs_and_resume_cuda(data, tmp_path):
    """train() with cuda_graphs: same weights as eager CUDA training; resumes across the switch."""
    train_ds, val_ds = data
    cfg = {**CFG, "channels_last": True}
    runs = {}
    # workers > 0: the pin-memory thread runs CUDA calls while the step is captured
    for name, over in (("eager", {}), ("graphs", {"cuda_graphs": True, "workers": 2})):
        out, ckpt = tmp_path / name / "out", tmp_path / name / "ckpt"
        runs[name] = train({**cfg, **over}, train_ds, val_ds, out, ckpt, "cuda", False), out
    we, wg = weights(runs["eager"][1] / "final.pt"), weights(runs["graphs"][1] / "final.pt")
    for key in we:
        torch.testing.assert_close(wg[key].float(), we[key].float(), rtol=1e-3, atol=1e-4, msg=key)
    # an eager (non-capturable) checkpoint resumed with graphs on, and the other way round
    out, ckpt = tmp_path / "mixed" / "out", tmp_path / "mixed" / "ckpt"
    said: list[str] = []
    with pytest.raises(Preempted):
        train(cfg, train_ds, val_ds, out, ckpt, "cuda", False, on_batch=preempt_at(1))
    with pytest.raises(Preempted) as err:
        graphs = {**cfg, "cuda_graphs": True}
        train(
            graphs, train_ds, val_ds, out, ckpt, "cuda", False, said.append, on_batch=preempt_at(2)
        )
    assert err.value.epoch == 2 and f"resuming from {ckpt / 'last.pt'}: 1 epoch(s) done" in said
    summary = train(cfg, train_ds, val_ds, out, ckpt, "cuda", False)
    assert summary["start_epoch"] == 2 and math.isfinite(summary["final_val_miou"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_failed_capture_falls_back_to_eager_cuda(data, monkeypatch):
    """A step that cannot be captured (a host sync inside) is trained eagerly instead."""
    import avsrobust.cuda_graphs as G
    from avsrobust.optim import build_optimizer
    from avsrobust.runtime import determinism
    from avsrobust.train import prepare_model
    from avsrobust.train_config import resolve_config

    dev = torch.device("cuda")
    c = resolve_config({**CFG, "cuda_graphs": True})
    real = G.train_step

    def syncing_step(*args, **kwargs):
        parts = real(*args, **kwargs)
        float(parts["total"])  # host sync: illegal while capturing
        return parts

    monkeypatch.setattr(G, "train_step", syncing_step)
    train_ds, _ = data
    batch = torch.utils.data.default_collate([train_ds[0], train_ds[1]])
    with determinism(True):
        model = prepare_model(c, dev)
        opt = build_optimizer(model, c, dev)
        step = G.GraphedTrainStep(model, opt, c, dev, warmup=1)
        losses = [float(step(flatten_batch(batch, dev))["total"]) for _ in range(4)]
    assert step.graph is None and step.capture_error and step.replays == 0
    assert step.eager_steps == 4 and all(math.isfinite(v) for v in losses)
    assert losses[-1] != losses[0]  # it trained
    assert torch.randn(4, device="cuda").isfinite().all()  # the CUDA RNG still works


# ------------------------------------------------------------------------- best epoch
def test_selection_score_by_miou_and_by_robustness():
    from avsrobust.train_config import resolve_config

    row = {"val_miou": 0.6, "val_frames": 10, "val_nonempty_silence": 0.0}
    row |= {"val_nonempty_noise": 0.2, "val_nonempty_offscreen": 0.7, "val_fpr_noise": 0.5}
    assert selection_score(row, "val_miou") == 0.6
    # (0.6 + 1 - mean(0, 0.2, 0.7)) / 2: the FPR columns and val_frames are not part of it
    assert selection_score(row, "val_robust") == pytest.approx((0.6 + 1 - 0.3) / 2)
    assert math.isnan(selection_score({**row, "val_miou": math.nan}, "val_robust"))
    with pytest.raises(ConfigError, match="negative audio"):
        selection_score({"val_miou": 0.6}, "val_robust")
    with pytest.raises(ConfigError, match="val_miou, val_robust"):
        selection_score(row, "val_fpr")
    with pytest.raises(ConfigError, match="training.select_by must be one of val_miou"):
        resolve_config({"select_by": "robust"})


#: Scripted validation rows: epoch 2 has the best mIoU, epoch 3 the best robust score
#: ((0.5 + 0.1) / 2, (0.7 + 0.2) / 2, (0.6 + 0.9) / 2).
SCRIPTED = [(0.5, 0.9, 0.9), (0.7, 0.8, 0.8), (0.6, 0.0, 0.2)]


@pytest.mark.parametrize(
    "select_by, epoch, miou, score", [("val_miou", 2, 0.7, 0.7), ("val_robust", 3, 0.6, 0.75)]
)
def test_best_epoch_follows_select_by(data, tmp_path, monkeypatch, select_by, epoch, miou, score):
    rows = iter(SCRIPTED)
    seen: list[dict[str, torch.Tensor]] = []

    def scripted(model, *args, **kwargs):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        m, silence, noise = next(rows)
        row = {"val_miou": m, "val_frames": 10, "val_fpr_silence": 0.1, "val_fpr_noise": 0.1}
        return row | {"val_nonempty_silence": silence, "val_nonempty_noise": noise}

    monkeypatch.setattr(train_module, "validation_scores", scripted)
    summary, out, _ = run(data, tmp_path, select_by, select_by=select_by)
    assert (summary["best_epoch"], summary["best_val_miou"]) == (epoch, miou)
    assert summary["best_val_score"] == pytest.approx(score)
    assert summary["final_val_miou"] == 0.6
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["epoch"] == epoch and best["score"] == pytest.approx(score)
    with open(out / "metrics.tsv", newline="") as handle:
        tsv = list(csv.DictReader(handle, delimiter="\t"))
    expected = [m if select_by == "val_miou" else (m + 1 - (s + n) / 2) / 2 for m, s, n in SCRIPTED]
    assert [float(r["val_score"]) for r in tsv] == pytest.approx(expected)
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["best"]["select_by"] == select_by and doc["best"]["best_epoch"] == epoch
    assert doc["best"]["best_val_miou"] == miou
    # best.pt holds the weights validated at that epoch
    for key, value in weights(out / "best.pt").items():
        assert torch.equal(value, seen[epoch - 1][key]), key
