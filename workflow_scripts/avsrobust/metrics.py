"""Segmentation metrics for AVSBench and AVSBench-Robust (docs/domain.md section 5).

This module is the single definition of every number the workflow reports. All functions
are pure and vectorised torch code that runs on the device of their inputs; the meters
accumulate in float64 on that device, never keep a reference to an input, and so can stream
over a whole dataset batch by batch.

Conventions (shared by every function here)
-------------------------------------------
* ``logits``: float tensor ``[N, H, W]`` or ``[N, 1, H, W]`` (raw model output).
* A pixel is **foreground** when ``sigmoid(logit) > 0.5``, computed exactly as ``logit > 0``.
  A logit of exactly 0 (probability 0.5) is background. (Float32 ``sigmoid`` rounds to 0.5 for
  ``|logit| < ~6e-8``; the comparison on the logit is the exact form of the definition.)
* ``gt``: ground-truth masks ``[N, H, W]`` or ``[N, 1, H, W]``, values 0/1 (bool, integer or
  float); any other value is rejected with ``ValueError``.
* ``valid``: optional bool ``[N]``; only frames with ``valid[i]`` are annotated and counted.

Definitions (their version, ``METRICS_VERSION``, is written into every metrics JSON)
------------------------------------------------------------------------------------
* **IoU** of a frame with prediction P and ground truth G (AVSBench semantics):
  ``|P & G| / |P | G|`` when G is non-empty; when G is empty ``1 - |P| / (H * W)``
  (so empty G and empty P give 1, empty G and full P give 0). The published code adds
  ``1e-7`` to the union; this module divides exactly (difference < 1e-7).
* **mIoU** = mean of the frame IoUs over all annotated frames of the whole set (not a mean
  of per-batch means). The published test loop averages per-batch means (``mask_iou`` per
  batch, then ``AverageMeter``); the two are equal whenever every batch has the same number
  of annotated frames, i.e. when the batch divides the set (the real test splits: 740 S4 and
  64 MS3 videos at 4 per batch). The same holds for the FPR below.
* **F-score** (beta^2 = 0.3, AVSBench ``Eval_Fmeasure`` / ``_eval_pr``): probabilities
  ``p = sigmoid(logit)`` in float32 and thresholds ``torch.linspace(0, 1 - 1e-10, 255)``
  (float32, so the last threshold is 1.0), a pixel is predicted at threshold t when
  ``p >= t``. Frames whose ground truth is empty are skipped. For a frame and threshold:
  ``precision = TP / (TP + FP + 1e-20)``, ``recall = TP / (TP + FN + 1e-20)`` (the published
  epsilons), ``F = (1 + b2) P R / (b2 P + R)`` with ``nan -> 0``. Counts are exact integers and
  P, R, F are computed in float64.

  - ``avsbench`` variant, the headline (``fscore`` in every table and JSON; the published
    ``Eval_Fmeasure`` averaged by ``test.py``, what papers report): for each batch (one
    ``update`` call) the mean F curve over the batch's non-empty-GT frames and its max over
    thresholds; the result is the mean of these maxima over batches. It depends on the batch
    size, which the meter records; the evaluation uses :data:`AVSBENCH_BATCH_VIDEOS` videos
    per batch, AVSBench's ``test.sh --test_batch_size 4``. As in the published code, a batch
    whose annotated frames all have empty ground truth contributes 0 (its score curve stays
    at zeros); a batch with no annotated frame at all is not a batch and is ignored.
    Checked against the published function on the same inputs (README, "Evaluation").
  - ``dataset`` variant (ours, ``fscore_dataset``; the meter's default): mean F curve over ALL
    non-empty-GT annotated frames of the set, then the max over thresholds. Independent of
    batching, reported by no paper.
* **FPR** (one negative audio type, correct answer = empty mask) = mean over frames of the
  predicted-foreground pixel fraction ``|P| / (H * W)``. **Non-empty rate** = share of frames
  whose predicted mask has at least one foreground pixel.
* **G-metrics**: ``FPR_neg`` = mean of the FPRs of the negative types given;
  ``G-mIoU = sqrt(mIoU_pos * (1 - FPR_neg))``, ``G-F = sqrt(F_pos * (1 - FPR_neg))``; the same
  with each type's own FPR gives the per-type values (:func:`avsrobust.stats.g_metrics`,
  torch-free, re-exported here). (The paper's exact formula is not public; this is the
  project's definition.)
* **Visual-bias diagnostic**: mIoU of the predictions under negative audio against the
  ORIGINAL (positive) masks; high = the model segments the visible object anyway. It is the
  ordinary mIoU with the original masks (:func:`visual_bias_miou`).

Empty meters return ``nan`` (written as JSON ``null`` by :func:`avsrobust.stats.json_float`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .stats import METRICS_VERSION, g_metrics

__all__ = [
    "AVSBENCH_BATCH_VIDEOS",
    "BETA2",
    "F_VARIANTS",
    "METRICS_VERSION",
    "N_THRESHOLDS",
    "PR_EPS",
    "FPRMeter",
    "FScoreMeter",
    "IoUMeter",
    "fg_fraction",
    "frame_iou",
    "fscore",
    "fscore_curve",
    "fscore_from_curve",
    "g_metrics",
    "miou",
    "thresholds",
    "visual_bias_miou",
]

#: Videos per batch of the published F-score: AVSBench's ``test.sh`` (S4, MS3, AVSS) passes
#: ``--test_batch_size 4``; the schema's ``evaluation.avsbench_batch_videos`` default equals it.
AVSBENCH_BATCH_VIDEOS = 4
BETA2 = 0.3
N_THRESHOLDS = 255
PR_EPS = 1e-20
F_VARIANTS = ("dataset", "avsbench")


# --------------------------------------------------------------------------- input handling
def _frames(x: torch.Tensor, name: str) -> torch.Tensor:
    """``[N, H, W]`` view of ``[N, H, W]`` or ``[N, 1, H, W]``."""
    if x.dim() == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() != 3:
        raise ValueError(f"{name} must be [N, H, W] or [N, 1, H, W], got {tuple(x.shape)}")
    return x


def _gt_bool(gt: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    gt = _frames(gt, "gt")
    if gt.shape != shape:
        raise ValueError(f"gt shape {tuple(gt.shape)} != logits shape {tuple(shape)}")
    if gt.dtype == torch.bool:
        return gt
    if bool(((gt != 0) & (gt != 1)).any()):
        raise ValueError("gt must be binary (0/1)")
    return gt != 0


def _valid_bool(valid: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor | None:
    if valid is None:
        return None
    valid = torch.as_tensor(valid, device=device)
    if valid.shape != (n,):
        raise ValueError(f"valid must have shape [{n}], got {tuple(valid.shape)}")
    return valid.to(torch.bool)


def _select(
    logits: torch.Tensor, gt: torch.Tensor | None, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Frames view of logits (and bool gt), restricted to the valid frames."""
    logits = _frames(logits, "logits")
    g = None if gt is None else _gt_bool(gt, logits.shape)
    v = _valid_bool(valid, logits.shape[0], logits.device)
    if v is not None:
        logits = logits[v]
        g = None if g is None else g[v]
    return logits, g


def thresholds(device: torch.device | str | None = None) -> torch.Tensor:
    """The published 255 thresholds ``torch.linspace(0, 1 - 1e-10, 255)`` in float32."""
    th = torch.linspace(0, 1 - 1e-10, N_THRESHOLDS, dtype=torch.float32)
    return th if device is None else th.to(device)


# ----------------------------------------------------------------------------- per frame
def fg_fraction(logits: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Predicted-foreground pixel fraction ``|P| / (H * W)`` per (valid) frame, float64 ``[N]``."""
    lg, _ = _select(logits, None, valid)
    pred = (lg > 0).flatten(1)
    return pred.sum(1, dtype=torch.float64) / float(max(pred.shape[1], 1))


def frame_iou(
    logits: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """AVSBench IoU of each (valid) frame, float64 ``[N]``.

    ``|P & G| / |P | G|`` with ``P = logit > 0``; for an empty G the IoU is
    ``1 - |P| / (H * W)`` (empty G and empty P -> 1).
    """
    lg, g = _select(logits, gt, valid)
    pred = (lg > 0).flatten(1)
    g = g.flatten(1)
    n_pix = float(pred.shape[1])
    inter = (pred & g).sum(1, dtype=torch.float64)
    union = (pred | g).sum(1, dtype=torch.float64)
    gt_count = g.sum(1, dtype=torch.float64)
    pred_count = pred.sum(1, dtype=torch.float64)
    empty = gt_count == 0
    # union >= |G| >= 1 for non-empty G, so the division is safe where it is used.
    iou = inter / union.clamp_min(1.0)
    return torch.where(empty, 1.0 - pred_count / n_pix, iou)


def _pr_counts(
    lg: torch.Tensor, g: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per frame and threshold: predicted count, TP (float64 ``[N, 255]``) and |G| (``[N, 1]``).

    Uses a histogram of "how many thresholds each pixel passes" instead of 255 masks, so the
    memory is O(N * H * W) whatever the number of thresholds; counts are exact.
    """
    n = lg.shape[0]
    prob = torch.sigmoid(lg.to(torch.float32)).flatten(1).contiguous()
    th = thresholds(lg.device)
    # k = #{i : th[i] <= p}: the pixel is predicted at thresholds 0..k-1.
    k = torch.searchsorted(th, prob, right=True)  # [N, HW] in 0..255
    nb = N_THRESHOLDS + 1
    idx = (k + nb * torch.arange(n, device=lg.device).unsqueeze(1)).flatten()
    gflat = g.flatten(1)
    hist_all = torch.bincount(idx, minlength=n * nb).view(n, nb).to(torch.float64)
    hist_tp = (
        torch.bincount(idx, weights=gflat.flatten().to(torch.float64), minlength=n * nb)
        .view(n, nb)
        .to(torch.float64)
    )
    # count at threshold i = #{pixels with k > i} = reverse cumulative sum from k = i + 1.
    pred_count = hist_all.flip(1).cumsum(1).flip(1)[:, 1:]
    tp = hist_tp.flip(1).cumsum(1).flip(1)[:, 1:]
    gt_count = gflat.sum(1, dtype=torch.float64).unsqueeze(1)
    return pred_count, tp, gt_count


def fscore_curve(
    logits: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """F-measure curve of each annotated frame with NON-EMPTY ground truth, ``[N_nonempty, 255]``.

    ``precision = TP / (|P_t| + 1e-20)``, ``recall = TP / (|G| + 1e-20)``,
    ``F = 1.3 P R / (0.3 P + R)``, ``nan -> 0``; ``P_t = sigmoid(logit) >= t`` for the 255
    thresholds of :func:`thresholds`. float64, on the input's device.
    """
    lg, g = _select(logits, gt, valid)
    keep = g.flatten(1).any(1)
    lg, g = lg[keep], g[keep]
    if lg.shape[0] == 0:
        return torch.zeros(0, N_THRESHOLDS, dtype=torch.float64, device=lg.device)
    pred_count, tp, gt_count = _pr_counts(lg, g)
    prec = tp / (pred_count + PR_EPS)
    rec = tp / (gt_count + PR_EPS)
    f = (1 + BETA2) * prec * rec / (BETA2 * prec + rec)
    return torch.nan_to_num(f, nan=0.0)


def fscore_from_curve(curve_sum: torch.Tensor, count: float | torch.Tensor) -> float:
    """Max over thresholds of the mean curve ``curve_sum / count`` (``nan`` when count is 0)."""
    count = float(count)
    if count == 0:
        return math.nan
    return float((curve_sum / count).max())


# ------------------------------------------------------------------------------- meters
class IoUMeter:
    """Streaming mIoU: sum of frame IoUs and number of annotated frames (float64).

    ``compute()`` = mean frame IoU over every annotated frame seen (``nan`` if none).
    """

    def __init__(self) -> None:
        self._sum: torch.Tensor | None = None
        self._count: torch.Tensor | None = None

    def update(
        self, logits: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None
    ) -> None:
        with torch.no_grad():
            iou = frame_iou(logits.detach(), gt.detach(), valid)
            s, c = iou.sum(), torch.tensor(iou.shape[0], dtype=torch.float64, device=iou.device)
        if self._sum is None:
            self._sum, self._count = s, c
        else:
            self._sum, self._count = self._sum + s, self._count + c

    @property
    def n_frames(self) -> int:
        return 0 if self._count is None else int(self._count)

    def compute(self) -> float:
        if self._count is None or float(self._count) == 0:
            return math.nan
        return float(self._sum / self._count)


class FScoreMeter:
    """Streaming F-score (beta^2 = 0.3, 255 thresholds) in the ``dataset`` or ``avsbench`` variant.

    ``dataset``: keeps the sum of frame curves and the frame count; result = max over
    thresholds of the dataset-mean curve (independent of batching).
    ``avsbench``: each ``update`` call is one batch; keeps the sum of per-batch maxima and the
    number of batches, and records the batch sizes (annotated frames per call). See the module
    docstring for the empty-batch rule.
    """

    def __init__(self, variant: str = "dataset") -> None:
        if variant not in F_VARIANTS:
            raise ValueError(f"variant must be one of {F_VARIANTS}, got {variant!r}")
        self.variant = variant
        self._curve_sum: torch.Tensor | None = None
        self._count: torch.Tensor | None = None  # frames (dataset) / batches (avsbench)
        self._max_sum: torch.Tensor | None = None
        self.batch_sizes: list[int] = []
        self.n_frames_nonempty = 0

    def update(
        self, logits: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None
    ) -> None:
        with torch.no_grad():
            lg = _frames(logits.detach(), "logits")
            n_annotated = (
                lg.shape[0] if valid is None else int(torch.as_tensor(valid).to(torch.bool).sum())
            )
            curve = fscore_curve(lg, gt.detach(), valid)
            dev = curve.device
            self.n_frames_nonempty += curve.shape[0]
            if self.variant == "dataset":
                s = curve.sum(0)
                c = torch.tensor(curve.shape[0], dtype=torch.float64, device=dev)
                if self._curve_sum is None:
                    self._curve_sum, self._count = s, c
                else:
                    self._curve_sum, self._count = self._curve_sum + s, self._count + c
                self.batch_sizes.append(n_annotated)
                return
            if n_annotated == 0:
                return
            if curve.shape[0] == 0:
                m = torch.zeros((), dtype=torch.float64, device=dev)  # published: zeros curve
            else:
                m = curve.mean(0).max()
            one = torch.ones((), dtype=torch.float64, device=dev)
            if self._max_sum is None:
                self._max_sum, self._count = m, one
            else:
                self._max_sum, self._count = self._max_sum + m, self._count + one
            self.batch_sizes.append(n_annotated)

    @property
    def n_batches(self) -> int:
        return len(self.batch_sizes)

    def compute(self) -> float:
        if self._count is None or float(self._count) == 0:
            return math.nan
        if self.variant == "dataset":
            return fscore_from_curve(self._curve_sum, self._count)
        return float(self._max_sum / self._count)


class FPRMeter:
    """Streaming false-positive rate under one negative audio type (correct mask: empty).

    ``compute()`` -> ``{"fpr": mean predicted-foreground pixel fraction over frames,
    "nonempty_rate": share of frames with any predicted foreground, "n_frames": int}``.
    ``gt`` is accepted for a uniform signature and ignored (the target is empty by definition).
    """

    def __init__(self) -> None:
        self._frac_sum: torch.Tensor | None = None
        self._nonempty: torch.Tensor | None = None
        self._count: torch.Tensor | None = None

    def update(
        self,
        logits: torch.Tensor,
        gt: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> None:
        del gt
        with torch.no_grad():
            frac = fg_fraction(logits.detach(), valid)
            f = frac.sum()
            ne = (frac > 0).sum(dtype=torch.float64)
            c = torch.tensor(frac.shape[0], dtype=torch.float64, device=frac.device)
        if self._count is None:
            self._frac_sum, self._nonempty, self._count = f, ne, c
        else:
            self._frac_sum = self._frac_sum + f
            self._nonempty = self._nonempty + ne
            self._count = self._count + c

    @property
    def n_frames(self) -> int:
        return 0 if self._count is None else int(self._count)

    def compute(self) -> dict[str, Any]:
        n = self.n_frames
        if n == 0:
            return {"fpr": math.nan, "nonempty_rate": math.nan, "n_frames": 0}
        return {
            "fpr": float(self._frac_sum / self._count),
            "nonempty_rate": float(self._nonempty / self._count),
            "n_frames": n,
        }


# ---------------------------------------------------------------------------- one-shot
def miou(logits: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None) -> float:
    """mIoU of one tensor of frames (see :class:`IoUMeter` for streaming)."""
    m = IoUMeter()
    m.update(logits, gt, valid)
    return m.compute()


def fscore(
    logits: torch.Tensor,
    gt: torch.Tensor,
    valid: torch.Tensor | None = None,
    variant: str = "dataset",
    batch_size: int | None = None,
) -> float:
    """F-score of one tensor of frames; ``avsbench`` splits it into batches of ``batch_size``."""
    m = FScoreMeter(variant)
    n = _frames(logits, "logits").shape[0]
    step = n if (batch_size is None or variant == "dataset") else int(batch_size)
    lg, g = _frames(logits, "logits"), _frames(gt, "gt")
    for i in range(0, n, max(step, 1)):
        v = None if valid is None else torch.as_tensor(valid)[i : i + step]
        m.update(lg[i : i + step], g[i : i + step], v)
    return m.compute()


def visual_bias_miou(
    logits_negative: torch.Tensor,
    original_gt: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> float:
    """Visual-bias diagnostic: mIoU of predictions made under NEGATIVE audio, scored against
    the ORIGINAL (positive-audio) masks of the same frames.

    It is exactly :func:`miou` with the original masks (stream with :class:`IoUMeter` the
    same way). High values mean the model segments the visible object although it is silent.
    """
    return miou(logits_negative, original_gt, valid)
