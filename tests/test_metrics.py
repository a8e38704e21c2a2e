"""Tests of avsrobust.metrics against hand-computed cases and a loop reference of the
published AVSBench definitions (``mask_iou``, ``Eval_Fmeasure`` / ``_eval_pr``)."""

from __future__ import annotations

import gc
import math
import weakref

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avsrobust import metrics as M

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _logits_from_mask(mask: torch.Tensor, pos: float = 5.0, neg: float = -5.0) -> torch.Tensor:
    return torch.where(mask.bool(), torch.tensor(pos), torch.tensor(neg))


def _random_case(seed: int, n: int, h: int = 6, w: int = 5, p_empty: float = 0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, h, w, generator=g) * 3.0
    gt = (torch.rand(n, h, w, generator=g) < 0.4).float()
    empty = torch.rand(n, generator=g) < p_empty
    gt[empty] = 0.0
    return logits, gt


# ----------------------------------------------------------------------- loop references
def ref_frame_iou(logits: np.ndarray, gt: np.ndarray) -> list[float]:
    """AVSBench IoU, frame by frame, in plain numpy (no eps)."""
    out = []
    for lg, g in zip(logits, gt, strict=True):
        p = lg > 0
        g = g > 0.5
        if g.sum() == 0:
            out.append(1.0 - p.sum() / p.size)
        else:
            out.append((p & g).sum() / (p | g).sum())
    return out


def ref_eval_fmeasure(pred_logits: torch.Tensor, gt: torch.Tensor, pr_num: int = 255) -> float:
    """Loop transcription of the published ``Eval_Fmeasure`` for one batch."""
    prob = torch.sigmoid(pred_logits.float()).numpy()  # float32, as published
    th = torch.linspace(0, 1 - 1e-10, pr_num).numpy()  # float32, as published
    gt = gt.numpy().astype(np.float64)
    beta2 = 0.3
    avg_f, img_num = np.zeros(pr_num), 0
    score = np.zeros(pr_num)
    for i in range(prob.shape[0]):
        if gt[i].mean() == 0.0:
            continue
        prec, recall = np.zeros(pr_num), np.zeros(pr_num)
        for t in range(pr_num):
            y_temp = (prob[i] >= th[t]).astype(np.float64)
            tp = float((y_temp * gt[i]).sum())
            prec[t] = tp / (float(y_temp.sum()) + 1e-20)
            recall[t] = tp / (float(gt[i].sum()) + 1e-20)
        with np.errstate(invalid="ignore", divide="ignore"):
            f = (1 + beta2) * prec * recall / (beta2 * prec + recall)
        f[np.isnan(f)] = 0.0
        avg_f = avg_f + f
        img_num += 1
        score = avg_f / img_num
    return float(score.max())


def ref_avsbench_fscore(logits: torch.Tensor, gt: torch.Tensor, batch_size: int) -> float:
    """Published test loop: mean over batches of Eval_Fmeasure."""
    vals = [
        ref_eval_fmeasure(logits[i : i + batch_size], gt[i : i + batch_size])
        for i in range(0, logits.shape[0], batch_size)
    ]
    return float(np.mean(vals))


# ------------------------------------------------------------------------ hand-computed
def test_perfect_prediction():
    gt = torch.zeros(3, 4, 4)
    gt[:, 1:3, 1:3] = 1
    lg = _logits_from_mask(gt)
    assert M.frame_iou(lg, gt).tolist() == [1.0, 1.0, 1.0]
    assert M.miou(lg, gt) == 1.0
    assert M.fscore(lg, gt) == pytest.approx(1.0, abs=1e-12)
    assert M.fscore(lg, gt, variant="avsbench", batch_size=2) == pytest.approx(1.0, abs=1e-12)


def test_empty_gt_empty_prediction():
    gt = torch.zeros(2, 4, 4)
    lg = torch.full((2, 4, 4), -3.0)
    assert M.frame_iou(lg, gt).tolist() == [1.0, 1.0]
    fpr = M.FPRMeter()
    fpr.update(lg)
    assert fpr.compute() == {"fpr": 0.0, "nonempty_rate": 0.0, "n_frames": 2}
    # empty-GT frames are skipped by the F-score: nothing to average
    assert M.fscore_curve(lg, gt).shape == (0, M.N_THRESHOLDS)
    assert math.isnan(M.fscore(lg, gt))


def test_empty_gt_full_prediction():
    gt = torch.zeros(2, 4, 4)
    lg = torch.full((2, 4, 4), 3.0)
    assert M.frame_iou(lg, gt).tolist() == [0.0, 0.0]
    fpr = M.FPRMeter()
    fpr.update(lg, gt)
    assert fpr.compute() == {"fpr": 1.0, "nonempty_rate": 1.0, "n_frames": 2}


def test_empty_gt_partial_prediction_iou_is_one_minus_fraction():
    gt = torch.zeros(1, 4, 4)
    lg = torch.full((1, 4, 4), -1.0)
    lg[0, 0, :3] = 1.0  # 3 of 16 pixels
    assert M.frame_iou(lg, gt).item() == pytest.approx(1 - 3 / 16)
    fpr = M.FPRMeter()
    fpr.update(lg)
    assert fpr.compute()["fpr"] == pytest.approx(3 / 16)


def test_all_foreground_gt_half_predicted():
    gt = torch.ones(1, 4, 4)
    lg = torch.full((1, 4, 4), -2.0)
    lg[0, :2] = 2.0
    assert M.frame_iou(lg, gt).item() == 0.5
    # all-foreground GT: precision is 1 whenever anything is predicted; at low thresholds
    # everything is predicted (recall 1) -> max F = 1
    assert M.fscore(lg, gt) == pytest.approx(1.0, abs=1e-12)


def test_hand_computed_fscore():
    # GT: 8 of 16 pixels. Prediction: GT pixels and 4 background pixels at logit 2,
    # the other 4 background pixels at logit -10 (p = 4.5e-5 < 1/254).
    gt = torch.zeros(1, 4, 4)
    gt[0, :2] = 1
    lg = torch.full((1, 4, 4), -10.0)
    lg[0, :3] = 2.0
    curve = M.fscore_curve(lg, gt)[0]
    # t = 0: all 16 predicted: P = 1/2, R = 1
    assert curve[0].item() == pytest.approx(1.3 * 0.5 / (0.3 * 0.5 + 1), rel=1e-12)
    # 0 < t <= sigmoid(2): 12 predicted: P = 2/3, R = 1 -> F = 13/18
    assert curve[1].item() == pytest.approx(13 / 18, rel=1e-12)
    # t > sigmoid(2) = 0.8808: nothing predicted -> P = R = 0 -> nan -> 0
    assert curve[-1].item() == 0.0
    assert M.fscore(lg, gt) == pytest.approx(13 / 18, rel=1e-12)
    assert M.miou(lg, gt) == pytest.approx(8 / 12)


def test_threshold_edge_logit_zero_is_background():
    gt = torch.ones(1, 2, 2)
    lg = torch.zeros(1, 2, 2)  # probability exactly 0.5 -> NOT foreground
    assert M.frame_iou(lg, gt).item() == 0.0
    fpr = M.FPRMeter()
    fpr.update(lg)
    assert fpr.compute()["fpr"] == 0.0
    assert fpr.compute()["nonempty_rate"] == 0.0
    lg2 = lg.clone()
    lg2[0, 0, 0] = 1e-30  # any positive logit is foreground
    assert M.frame_iou(lg2, gt).item() == 0.25
    # F thresholds use p >= t: p = 0.5 passes t <= 0.5
    th = M.thresholds()
    assert (th <= 0.5).sum() == 128
    assert M.fscore_curve(lg, gt)[0, 127].item() == pytest.approx(1.0)
    assert M.fscore_curve(lg, gt)[0, 128].item() == 0.0


def test_valid_mask_excludes_frames():
    gt = torch.ones(3, 4, 4)
    lg = torch.full((3, 4, 4), 4.0)
    lg[1] = -4.0  # a bad frame
    valid = torch.tensor([True, False, True])
    assert M.miou(lg, gt) == pytest.approx(2 / 3)
    assert M.miou(lg, gt, valid) == 1.0
    assert M.frame_iou(lg, gt, valid).shape == (2,)
    assert M.fscore(lg, gt, valid) == pytest.approx(1.0)
    fpr = M.FPRMeter()
    fpr.update(lg, valid=valid)
    assert fpr.compute()["n_frames"] == 2
    m = M.IoUMeter()
    m.update(lg, gt, torch.zeros(3, dtype=torch.bool))
    assert m.n_frames == 0 and math.isnan(m.compute())


def test_shapes_and_validation():
    gt = torch.zeros(2, 1, 3, 3)
    gt[:, :, 0] = 1
    lg = _logits_from_mask(gt)
    assert M.miou(lg, gt) == 1.0
    assert M.miou(lg[:, 0], gt) == 1.0
    with pytest.raises(ValueError):
        M.miou(lg, gt * 255)
    with pytest.raises(ValueError):
        M.miou(lg[:, 0, :2], gt)
    with pytest.raises(ValueError):
        M.FScoreMeter("per-image")
    assert M.miou(lg, gt.bool()) == 1.0


def test_iou_matches_loop_reference():
    lg, gt = _random_case(0, 12)
    ours = M.frame_iou(lg, gt).numpy()
    np.testing.assert_allclose(ours, ref_frame_iou(lg.numpy(), gt.numpy()), rtol=0, atol=1e-15)


# --------------------------------------------------------------- set mean vs batch means
def test_miou_over_set_is_not_mean_of_batch_means():
    gt = torch.ones(4, 2, 2)
    lg = torch.full((4, 2, 2), -1.0)
    lg[0] = 1.0  # frame 0 perfect (IoU 1), frames 1..3 IoU 0
    batches = [(lg[:1], gt[:1]), (lg[1:], gt[1:])]
    meter = M.IoUMeter()
    for b in batches:
        meter.update(*b)
    mean_of_batch_means = float(np.mean([M.miou(*b) for b in batches]))
    assert meter.compute() == 0.25
    assert mean_of_batch_means == 0.5
    assert meter.compute() != mean_of_batch_means


# ------------------------------------------------------------------------- F variants
@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 7])
def test_avsbench_variant_matches_published_reference(batch_size):
    lg, gt = _random_case(batch_size, 10, p_empty=0.25)
    lg[0] = 30.0  # saturated probabilities (p = 1.0 passes the last threshold)
    ref = ref_avsbench_fscore(lg, gt, batch_size)
    meter = M.FScoreMeter("avsbench")
    for i in range(0, lg.shape[0], batch_size):
        meter.update(lg[i : i + batch_size], gt[i : i + batch_size])
    assert meter.compute() == pytest.approx(ref, rel=0, abs=1e-12)
    assert meter.n_batches == math.ceil(10 / batch_size)
    assert M.fscore(lg, gt, variant="avsbench", batch_size=batch_size) == pytest.approx(
        ref, abs=1e-12
    )


def test_avsbench_batch_of_empty_gt_counts_zero_like_published():
    lg, gt = _random_case(3, 4, p_empty=0.0)
    gt[2:] = 0
    ref = ref_avsbench_fscore(lg, gt, 2)
    meter = M.FScoreMeter("avsbench")
    meter.update(lg[:2], gt[:2])
    meter.update(lg[2:], gt[2:])
    assert meter.compute() == pytest.approx(ref, abs=1e-12)
    assert meter.compute() == pytest.approx(M.fscore(lg[:2], gt[:2]) / 2, abs=1e-12)


def test_dataset_variant_is_mean_curve_then_max():
    lg, gt = _random_case(11, 9)
    curves = M.fscore_curve(lg, gt)
    assert M.fscore(lg, gt) == pytest.approx(float(curves.mean(0).max()), abs=1e-15)
    # and equals the published per-batch computation when the whole set is one batch
    assert M.fscore(lg, gt) == pytest.approx(ref_eval_fmeasure(lg, gt), abs=1e-12)


@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 12),
    cuts=st.lists(st.integers(0, 12), max_size=5),
)
def test_dataset_variant_independent_of_batching(seed, n, cuts):
    lg, gt = _random_case(seed, n, h=4, w=4)
    one = M.FScoreMeter()
    one.update(lg, gt)
    bounds = sorted({0, n, *[c for c in cuts if c <= n]})
    split = M.FScoreMeter()
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        split.update(lg[a:b], gt[a:b])
    x, y = one.compute(), split.compute()
    assert (math.isnan(x) and math.isnan(y)) or abs(x - y) <= 1e-9


def test_avsbench_variant_depends_on_batch_size():
    # frame 1 is perfect for thresholds in (0.0067, 0.269], frame 2 for (0.731, 0.9933]
    gt = torch.zeros(2, 2, 2)
    gt[:, 0] = 1
    lg = torch.empty(2, 2, 2)
    lg[0, 0], lg[0, 1] = -1.0, -5.0
    lg[1, 0], lg[1, 1] = 5.0, 1.0
    f1 = M.fscore(lg, gt, variant="avsbench", batch_size=1)
    f2 = M.fscore(lg, gt, variant="avsbench", batch_size=2)
    assert f1 == pytest.approx(1.0)
    assert f2 < 0.95
    assert f2 == pytest.approx(M.fscore(lg, gt))  # one batch == dataset variant
    assert f1 == pytest.approx(ref_avsbench_fscore(lg, gt, 1), abs=1e-12)
    assert f2 == pytest.approx(ref_avsbench_fscore(lg, gt, 2), abs=1e-12)


# ------------------------------------------------------------------ bounds / invariances
masks = st.integers(1, 6).flatmap(
    lambda n: st.lists(st.lists(st.booleans(), min_size=12, max_size=12), min_size=n, max_size=n)
)


def _t(m):
    return torch.tensor(m, dtype=torch.bool).view(len(m), 3, 4)


@SETTINGS
@given(seed=st.integers(0, 10_000), n=st.integers(1, 8), scale=st.floats(0.01, 50))
def test_metrics_in_unit_interval(seed, n, scale):
    lg, gt = _random_case(seed, n, h=3, w=4)
    lg = lg * scale
    iou = M.frame_iou(lg, gt)
    assert bool(((iou >= 0) & (iou <= 1)).all())
    curve = M.fscore_curve(lg, gt)
    assert bool(((curve >= 0) & (curve <= 1 + 1e-12)).all())
    for variant in M.F_VARIANTS:
        f = M.fscore(lg, gt, variant=variant, batch_size=2)
        assert math.isnan(f) or 0 <= f <= 1 + 1e-12
    r = M.FPRMeter()
    r.update(lg)
    assert 0 <= r.compute()["fpr"] <= r.compute()["nonempty_rate"] <= 1


@SETTINGS
@given(p=masks, g=masks)
def test_iou_symmetric_for_nonempty_masks(p, g):
    n = min(len(p), len(g))
    P, G = _t(p[:n]), _t(g[:n])
    keep = P.flatten(1).any(1) & G.flatten(1).any(1)
    P, G = P[keep], G[keep]
    a = M.frame_iou(_logits_from_mask(P), G)
    b = M.frame_iou(_logits_from_mask(G), P)
    assert torch.equal(a, b)


@SETTINGS
@given(p=masks, extra=st.lists(st.booleans(), min_size=72, max_size=72))
def test_fpr_monotone_in_predicted_pixels(p, extra):
    P = _t(p)
    more = P | torch.tensor(extra[: P.numel()]).view_as(P)
    a, b = M.FPRMeter(), M.FPRMeter()
    a.update(_logits_from_mask(P))
    b.update(_logits_from_mask(more))
    ra, rb = a.compute(), b.compute()
    assert rb["fpr"] >= ra["fpr"]
    assert rb["nonempty_rate"] >= ra["nonempty_rate"]


@SETTINGS
@given(
    m=st.floats(0, 1),
    f=st.floats(0, 1),
    fprs=st.dictionaries(
        st.sampled_from(["silence", "noise", "offscreen"]), st.floats(0, 1), min_size=1
    ),
)
def test_g_metrics_formula(m, f, fprs):
    out = M.g_metrics(m, f, fprs)
    fpr_neg = sum(fprs.values()) / len(fprs)
    assert out["fpr_negative"] == pytest.approx(fpr_neg)
    assert out["g_miou"] == pytest.approx(math.sqrt(m * (1 - fpr_neg)))
    assert out["g_f"] == pytest.approx(math.sqrt(f * (1 - fpr_neg)))
    for t, v in fprs.items():
        assert out["per_type"][t]["g_miou"] == pytest.approx(math.sqrt(m * (1 - v)))
        assert out["per_type"][t]["g_f"] == pytest.approx(math.sqrt(f * (1 - v)))
    assert 0 <= out["g_miou"] <= 1 and 0 <= out["g_f"] <= 1


def test_g_metrics_zero_when_fpr_one_and_validation():
    out = M.g_metrics(0.8, 0.9, {"silence": 1.0, "noise": 1.0})
    assert out["g_miou"] == 0.0 and out["g_f"] == 0.0
    assert out["per_type"]["noise"]["g_miou"] == 0.0
    assert M.g_metrics(0.81, None, {"silence": 0.0})["g_miou"] == pytest.approx(0.9)
    assert M.g_metrics(0.81, None, {"silence": 0.0})["g_f"] is None
    with pytest.raises(ValueError):
        M.g_metrics(0.5, 0.5, {})
    with pytest.raises(ValueError):
        M.g_metrics(1.5, 0.5, {"noise": 0.1})


def test_visual_bias_is_miou_with_original_masks():
    lg, gt = _random_case(5, 6, p_empty=0.0)
    assert M.visual_bias_miou(lg, gt) == M.miou(lg, gt)


# ---------------------------------------------------------------------------- streaming
@pytest.mark.parametrize("chunk", [1, 3, 4])
def test_streaming_equals_one_shot(chunk):
    lg, gt = _random_case(42, 10)
    valid = torch.tensor([True, True, False, True, True, True, False, True, True, True])
    meters = [M.IoUMeter(), M.FScoreMeter(), M.FPRMeter()]
    whole = [M.IoUMeter(), M.FScoreMeter(), M.FPRMeter()]
    for m in whole:
        m.update(lg, gt, valid)
    for i in range(0, 10, chunk):
        for m in meters:
            m.update(lg[i : i + chunk], gt[i : i + chunk], valid[i : i + chunk])
    assert meters[0].compute() == pytest.approx(whole[0].compute(), abs=1e-12)
    assert meters[1].compute() == pytest.approx(whole[1].compute(), abs=1e-12)
    assert meters[2].compute() == pytest.approx(whole[2].compute(), abs=1e-12)
    assert meters[0].n_frames == 8


def test_update_holds_no_reference_to_inputs_and_accumulates_float64():
    meters = [M.IoUMeter(), M.FScoreMeter(), M.FScoreMeter("avsbench"), M.FPRMeter()]
    lg, gt = _random_case(1, 4, p_empty=0.0)
    lg.requires_grad_(True)
    refs = [weakref.ref(lg), weakref.ref(gt)]
    for m in meters:
        m.update(lg, gt)
    assert meters[0]._sum.dtype == torch.float64
    assert meters[1]._curve_sum.dtype == torch.float64
    assert not meters[0]._sum.requires_grad
    del lg, gt
    gc.collect()
    assert all(r() is None for r in refs)


def test_avsbench_fscore_meter_records_its_batches():
    lg, gt = _random_case(8, 6, p_empty=0.0)
    f = M.FScoreMeter("avsbench")
    f.update(lg[:3], gt[:3])
    f.update(lg[3:], gt[3:])
    assert f.n_batches == 2 and sorted(set(f.batch_sizes)) == [3]
    assert f.compute() == pytest.approx((M.fscore(lg[:3], gt[:3]) + M.fscore(lg[3:], gt[3:])) / 2)
