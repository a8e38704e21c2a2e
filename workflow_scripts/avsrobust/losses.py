"""Training losses: masks (BCE + soft IoU), AVSBench's A-V matching loss, sounding classifier.

Why it looks like this (domain.md section 6): robust training feeds negative audio with
*empty* target masks, so the mask loss must push predictions towards "nothing" when the
target is empty. Dice (or the usual soft IoU ``1 - sum(p g) / sum(p + g - p g)``) cannot: with
``g = 0`` its numerator is 0 for every prediction, so the loss is constant (Dice: ``1`` or
``0/0``) and its gradient is zero or undefined. Here the soft-IoU term follows the metric's
own AVSBench semantics (domain.md section 5): for an empty target the frame IoU is
``1 - predicted foreground fraction``, so its soft loss is the mean predicted probability
``mean(sigmoid(logits))`` -- gradient ``p (1 - p) / (H W) > 0`` on every pixel, minimised by
very negative logits. BCE has gradient on empty targets anyway; the IoU term adds a
frame-level (area-normalised) signal that does not vanish for small objects.

``loss.kind: dice+mix`` is AVSegFormer's published loss instead (:func:`dice_loss`,
:func:`mix_loss`): Dice of the masks plus ``mix_weight`` (0.1) x Dice of the channel-mean
mask feature. As explained above its Dice term has no gradient on empty targets: negative
audio then only trains through the classifier term (as in the AVSBench-Robust recipe).

Every loss is computed in float32 whatever the autocast dtype of its inputs (bf16 logits
make BCE and ratio terms too coarse).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ConfigError

MASK_LOSS_KINDS = ("bce", "bce+iou")
#: ``loss.kind``: this project's BCE + soft IoU, or AVSegFormer's Dice + mix loss.
LOSS_KINDS = ("bce+iou", "dice+mix")
#: ``loss:`` keys of the training config and their defaults (config/schema.yaml).
LOSS_DEFAULTS: dict[str, Any] = {
    "kind": "bce+iou",
    "iou_weight": 1.0,
    "mix_weight": 0.1,
    "av_weight": 0.0,
    "classifier_weight": 0.5,
    "match_weight": 1.0,
    "cross_weight": 0.0,
    "cross_gate_weight": 0.0,
}
DICE_SMOOTH = 0.001  # AVSegFormer's F1_Dice_loss / F5_Dice_loss


def _zero(like: Tensor) -> Tensor:
    """A float32 zero that stays attached to the graph of ``like`` (backward() works)."""
    return like.float().sum() * 0.0


def _frames_valid(logits: Tensor, target: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
    """(float32 logits, float32 target, bool valid [N]) after checking the shapes."""
    if logits.ndim != 4 or logits.shape[1] != 1:
        raise ValueError(f"logits must be [N, 1, H, W], got {tuple(logits.shape)}")
    if target.shape != logits.shape:
        raise ValueError(
            f"target shape {tuple(target.shape)} != logits shape {tuple(logits.shape)}"
        )
    if valid is None:
        valid = torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
    valid = valid.to(device=logits.device, dtype=torch.bool).reshape(-1)
    if valid.shape[0] != logits.shape[0]:
        raise ValueError(f"valid must be [N] = [{logits.shape[0]}], got {tuple(valid.shape)}")
    return logits.float(), target.to(device=logits.device, dtype=torch.float32), valid


def _mean_over_valid(per_frame: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``per_frame`` [N] over the valid frames; 0 (with a graph) when none is valid.

    Selects with ``where`` rather than boolean indexing, so the number of valid frames is
    never read back to the host: no device sync per batch, and the step can be captured
    in a CUDA graph. Invalid frames get exactly zero value and gradient.
    """
    total = torch.where(valid, per_frame, torch.zeros_like(per_frame)).sum()
    return total / valid.sum().clamp_min(1).to(total.dtype)


def bce_loss(logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Binary cross-entropy with logits, mean over the pixels of the valid frames (0 if none).

    Every frame has H*W pixels, so this is the mean over valid frames of each frame's
    pixel mean.
    """
    lg, tg, ok = _frames_valid(logits, target, valid)
    per_pixel = F.binary_cross_entropy_with_logits(lg, tg, reduction="none")
    return _mean_over_valid(per_pixel.flatten(1).mean(1), ok)


def soft_iou_loss(logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean over valid frames of ``1 - soft IoU`` with AVSBench's empty-target rule.

    With ``p = sigmoid(logits)`` and ``g`` the 0/1 target of one frame:
    non-empty ``g``: ``1 - sum(p g) / sum(p + g - p g)``;
    empty ``g``: ``mean(p)`` (= 1 - the soft version of ``1 - foreground fraction``).
    Both are in [0, 1], 0 exactly at the perfect prediction, and both have gradient
    (see the module docstring for why plain soft IoU / Dice would not on empty targets).
    """
    lg, tg, ok = _frames_valid(logits, target, valid)
    p, g = torch.sigmoid(lg).flatten(1), tg.flatten(1)
    inter = (p * g).sum(1)
    union = (p + g - p * g).sum(1)
    nonempty = g.sum(1) > 0
    iou_loss = 1.0 - inter / union.clamp_min(1e-6)
    empty_loss = p.mean(1)
    return _mean_over_valid(torch.where(nonempty, iou_loss, empty_loss), ok)


def mask_loss(
    logits: Tensor,
    target: Tensor,
    valid: Tensor | None = None,
    kind: str = "bce+iou",
    iou_weight: float = 1.0,
) -> Tensor:
    """Mask loss over the valid frames: ``bce`` or ``bce + iou_weight * soft IoU loss``.

    ``logits``/``target`` ``[N, 1, H, W]``, ``valid`` bool ``[N]``: frames with ``False``
    (unannotated) contribute nothing -- neither value nor gradient. No valid frame -> 0.
    """
    if kind not in MASK_LOSS_KINDS:
        raise ConfigError(f"mask loss kind must be one of {MASK_LOSS_KINDS}, got {kind!r}")
    loss = bce_loss(logits, target, valid)
    if kind == "bce+iou":
        loss = loss + iou_weight * soft_iou_loss(logits, target, valid)
    return loss


def dice_loss(logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """AVSegFormer's Dice loss, mean over the valid frames (0 if none).

    Per frame, with ``p = sigmoid(logits)``: ``1 - 2 sum(p g) / (sum(p^2) + sum(g^2) + 0.002)``
    (its ``F1_Dice_loss``: first frames only in S4 -- the only valid ones -- all in MS3).
    Constant 1 for an empty target: no gradient there (see the module docstring).
    """
    lg, tg, ok = _frames_valid(logits, target, valid)
    p, g = torch.sigmoid(lg).flatten(1), tg.flatten(1)
    inter = (p * g).sum(1)
    denom = (p * p).sum(1) + DICE_SMOOTH + (g * g).sum(1) + DICE_SMOOTH
    return _mean_over_valid(1.0 - 2.0 * inter / denom, ok)


def mix_loss(mask_feature: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """AVSegFormer's auxiliary loss: :func:`dice_loss` of the channel mean of the mask feature
    ``[N, C, h, w]``, resized bilinearly to the target's size."""
    m = mask_feature.float().mean(dim=1, keepdim=True)
    m = F.interpolate(m, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return dice_loss(m, target, valid)


def av_matching_loss(
    av_pairs: Sequence[tuple[Tensor, Tensor]], masks: Tensor, reduction: str = "sum"
) -> Tensor:
    """AVSBench's MS3 audio-visual matching loss (``A_MaskedV_SimmLoss``), averaged over stages.

    For each stage with fused visual map ``v`` ``[N, C, h, w]`` and aligned audio ``a``
    ``[N, C]``:

    1. ``m = (adaptive_avg_pool(masks, (h, w)) > 0.5)`` -- the mask brought to the map's
       size and binarised. AVSBench passes the model's own predicted probabilities
       ``sigmoid(logits)`` here (as :func:`total_loss` does); the threshold makes it a
       constant, so no gradient flows through ``masks``.
    2. object feature ``o = sum_hw(m v) / (sum_hw(m) + 1e-6)`` ``[N, C]`` (masked mean).
    3. ``o`` and ``a`` are L2-normalised over C, then
       ``KL(softmax(a) || softmax(o)) = sum_c softmax(a)_c (log softmax(a)_c - log softmax(o)_c)``
       (``F.kl_div(log_softmax(o), softmax(a))``).

    ``reduction="sum"`` sums over frames as the published code does (so the value grows with
    the batch size; the recipe weight is 0.5 at batch 4 x 5 frames); ``"mean"`` averages
    over frames. Returns 0 (attached to ``masks``' graph) when there is no stage.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    if not av_pairs:
        return _zero(masks)
    total = None
    for visual, audio in av_pairs:
        v = visual.float()
        h, w = v.shape[-2:]
        m = (F.adaptive_avg_pool2d(masks.detach().float(), (h, w)) > 0.5).float()
        obj = (m * v).sum(dim=(2, 3)) / (m.sum(dim=(2, 3)) + 1e-6)
        obj = F.normalize(obj, dim=-1)
        a = F.normalize(audio.float().reshape(-1, v.shape[1]), dim=-1)
        kl = F.kl_div(obj.log_softmax(dim=-1), a.softmax(dim=-1), reduction="none").sum(-1)
        stage = kl.sum() if reduction == "sum" else kl.mean()
        total = stage if total is None else total + stage
    assert total is not None
    return total / len(av_pairs)


def match_loss(match: Tensor, masks: Tensor, valid: Tensor | None = None) -> Tensor:
    """BCE of a per-location audio-visual match map against where the target mask is.

    ``match`` ``[N, 1, h, w]`` logits of "this cell shows what makes the frame's sound";
    ``masks`` ``[N, 1, H, W]`` targets, max-pooled to ``h x w``: a cell is a match when any
    of its pixels is in the mask (the segmenter draws the exact outline; the match only has
    to find the object). An empty target (negative audio) teaches "nothing here makes this
    sound". Mean over the cells of the valid frames (0 when none is valid).
    """
    m = match.float()
    target = F.adaptive_max_pool2d(masks.float().to(m.device), m.shape[-2:])
    ok = torch.ones(m.shape[0], dtype=torch.bool, device=m.device) if valid is None else valid
    per = F.binary_cross_entropy_with_logits(m, target, reduction="none").flatten(1).mean(1)
    return _mean_over_valid(per, ok.to(m.device).reshape(-1))


#: In-batch pairs whose clips' spectra correlate this much are not used as negatives.
CROSS_MAX_CORR = 0.5


def _cross_pairs(cross: Tensor, sounding: Tensor, audio: Tensor, max_corr: float) -> Tensor:
    """Bool ``[N, B]``: in-batch pairs (sounding frame i, another sounding video j) whose
    time-averaged, mean-removed log-mel spectra correlate below ``max_corr``
    (:func:`total_loss` selects them once for both pair losses)."""
    n, b = cross.shape[:2]
    t = n // b
    dev = cross.device
    own_video = torch.arange(n, device=dev) // t
    spec = audio.float().to(dev)[:, 0].mean(1)  # [N, mel]: time-averaged spectrum
    spec = F.normalize(spec - spec.mean(1, keepdim=True), dim=1).reshape(b, t, -1)
    corr = torch.einsum("btc,jtc->btj", spec, spec).reshape(n, b)
    snd = sounding.to(dev).float().reshape(b, t) > 0.5
    other = own_video[:, None] != torch.arange(b, device=dev)[None, :]
    return snd.reshape(n)[:, None] & snd.any(1)[None, :] & other & (corr < max_corr)


def _pairs_bce(pair: Tensor, sel: Tensor) -> Tensor:
    """BCE of pair logits against 0, mean over the selected pairs (0 when none)."""
    per = F.binary_cross_entropy_with_logits(pair, torch.zeros_like(pair), reduction="none")
    total = torch.where(sel, per, torch.zeros_like(per)).sum()
    return total / sel.sum().clamp_min(1).to(total.dtype)


def cross_match_loss(
    cross: Tensor, sounding: Tensor, audio: Tensor, max_corr: float = CROSS_MAX_CORR
) -> Tensor:
    """In-batch mismatched pairs: where a frame's own sound comes from, another's does not.

    ``cross`` ``[N, B, h, w]`` match logits of frame i (of video i // T, T = N / B) against
    the audio of video j at the same time index; the blocks j = i's own video are the
    frame's own match map. For a sounding frame i and another sounding video j, the pair's
    logit is the mean of ``cross[i, j]`` over the region where the frame's own audio
    matches (weights ``sigmoid(own map)``, detached), with target 0: the object that makes
    this frame's sound does not make video j's sound. That gives B - 1 off-screen-like
    negatives per frame for free. Two kinds of pairs would be false negatives and are
    avoided: video j's source may be a *silent* object elsewhere in frame i (hence the
    own-sound region, not the whole frame), and the two clips may have the same kind of
    source (hence pairs whose time-averaged, mean-removed log-mel spectra correlate by
    ``max_corr`` or more are left out; ``audio`` ``[N, 1, 96, 64]``). On the synthetic
    training splits that leaves 2% (S4) and 11% (MS3) of the pairs wrong, instead of 5%
    and 18% for every other clip's audio over the whole frame. BCE, mean over the pairs
    used (0 when there are none). Selection by ``where``: no host sync, graph-capturable.
    """
    return _pairs_bce(_region_pair_logits(cross), _cross_pairs(cross, sounding, audio, max_corr))


def _region_pair_logits(cross: Tensor) -> Tensor:
    """``[N, B]``: ``cross[i, j]`` averaged over the region where frame i's own audio
    matches (:func:`cross_match_loss`)."""
    n = cross.shape[0]
    t = n // cross.shape[1]
    dev = cross.device
    logits = cross.float()
    own = logits[torch.arange(n, device=dev), torch.arange(n, device=dev) // t]  # [N, h, w]
    weight = torch.sigmoid(own.detach()).flatten(1)
    weight = weight / weight.sum(1, keepdim=True).clamp_min(1e-6)
    return torch.einsum("njk,nk->nj", logits.flatten(2), weight)


def cross_gate_loss(
    cross: Tensor, sounding: Tensor, audio: Tensor, max_corr: float = CROSS_MAX_CORR
) -> Tensor:
    """The in-batch pairs of :func:`cross_match_loss` at the level of the gate: the maximum
    of ``cross[i, j]`` over the whole frame (what the model's gate computes: "does any
    region match video j's sound?") with target 0.

    Why both: :func:`cross_match_loss` only teaches that the frame's *own* source does not
    make another sound; the gate, though, fires on *any* cell, and under off-screen sound
    it fired on 41% of the training clips' frames (S4, constant learning rate) -- the
    cells that decide are the maxima, which the region mean hardly trains. This term
    trains exactly the statistic the gate thresholds. Its cost: pairs whose source is a
    silent distractor visible in frame i are false negatives (5% of the S4 pairs over the
    whole frame, before the spectrum filter), which pushes the gate down on some true
    positives too -- hence a weight below 1 (README "Results on the embedded default").
    """
    return _pairs_bce(_gate_pair_logits(cross), _cross_pairs(cross, sounding, audio, max_corr))


def _gate_pair_logits(cross: Tensor) -> Tensor:
    """``[N, B]``: the maximum of ``cross[i, j]`` over the frame (:func:`cross_gate_loss`)."""
    return cross.float().flatten(2).amax(2)


def sounding_loss(logits: Tensor, sounding: Tensor) -> Tensor:
    """BCE with logits of the "is something sounding" head ``[N]`` against 0/1 ``[N]``."""
    return F.binary_cross_entropy_with_logits(
        logits.float().reshape(-1), sounding.to(logits.device).float().reshape(-1)
    )


def loss_weights(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The ``loss:`` settings of a training config (or of the ``loss`` mapping itself):
    ``kind`` (one of :data:`LOSS_KINDS`) and the float weights."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"training config must be a mapping, got {cfg!r}")
    if "loss" in cfg:
        raw = cfg["loss"] if cfg["loss"] is not None else {}
    elif set(cfg) <= set(LOSS_DEFAULTS):
        raw = cfg  # the loss mapping itself
    else:
        raw = {}  # a training config without a loss section: defaults
    if not isinstance(raw, Mapping):
        raise ConfigError(f"loss must be a mapping, got {raw!r}")
    unknown = sorted(set(raw) - set(LOSS_DEFAULTS))
    if unknown:
        raise ConfigError(f"loss: unknown key(s) {unknown}; valid keys: {sorted(LOSS_DEFAULTS)}")
    out = {**LOSS_DEFAULTS, **raw}
    if out["kind"] not in LOSS_KINDS:
        raise ConfigError(f"loss.kind must be one of {', '.join(LOSS_KINDS)}, got {out['kind']!r}")
    for key, value in out.items():
        if key == "kind":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise ConfigError(f"loss.{key} must be a number >= 0, got {value!r}")
        out[key] = float(value)
    return out


def total_loss(
    out: Mapping[str, Any], batch: Mapping[str, Tensor], cfg: Mapping[str, Any]
) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of the loss terms for one flattened batch.

    ``out``: the model's dict (``logits`` ``[N, 1, H, W]``, optional ``sounding`` ``[N]``,
    ``av_pairs``, and from a gated model ``gate_logits``, ``match``, ``match_cross``);
    ``batch``: ``masks`` ``[N, 1, H, W]``, ``mask_valid`` ``[N]``, ``sounding`` ``[N]`` and
    (for the in-batch pairs) ``audio`` -- frame level, N = B*T. ``cfg``: a training config
    with a ``loss:`` mapping (``iou_weight``, ``av_weight``, ``classifier_weight``,
    ``match_weight``, ``cross_weight``, ``cross_gate_weight``; defaults in
    :data:`LOSS_DEFAULTS`) or that mapping.

    ``loss = bce + iou_weight * iou + av_weight * av + classifier_weight * sounding
    + match_weight * match + cross_weight * cross + cross_gate_weight * cross_gate``; ``av``
    only when ``av_weight > 0`` and the model has attention stages, ``sounding`` only with a
    classifier head, ``match`` (:func:`match_loss`), ``cross`` (:func:`cross_match_loss`) and
    ``cross_gate`` (:func:`cross_gate_loss`) only for a model with a match map. For a gated
    model the mask terms of frames where nothing sounds (``sounding`` 0) use ``gate_logits``
    (the segmenter's gradient stopped): negative audio trains the gate, positives train both.

    ``kind: dice+mix`` (AVSegFormer): ``iou_weight * dice + mix_weight * mix + av + sounding``
    (:func:`dice_loss`; :func:`mix_loss` of ``out["mask_feature"]``, 0 for models without one);
    no BCE term. The AVSBench-Robust recipe is this with ``classifier_weight: 1``.

    Returns ``(loss, parts)`` with detached float32 scalars ``total``, ``bce``, ``iou`` (the
    overlap term: soft IoU, or Dice under ``dice+mix``), ``av``, ``sounding``, ``match``,
    ``cross``, ``cross_gate`` (0 when a term is off) and, under ``dice+mix`` only, ``mix``,
    so callers can accumulate without a device sync per batch.
    """
    w = loss_weights(cfg)
    logits = out["logits"]
    masks, valid = batch["masks"], batch["mask_valid"]
    if out.get("gate_logits") is not None:
        # a gated model: frames where nothing sounds train the gate, not the segmenter
        # under it (its mask of the visible object stays what positives taught it)
        silent = (batch["sounding"].to(logits.device) < 0.5).reshape(-1, 1, 1, 1)
        logits = torch.where(silent, out["gate_logits"].to(logits.dtype), logits)
    mix = _zero(logits)
    if w["kind"] == "dice+mix":
        bce = _zero(logits)
        iou = dice_loss(logits, masks, valid) if w["iou_weight"] > 0 else _zero(logits)
        loss = w["iou_weight"] * iou
        if w["mix_weight"] > 0 and out.get("mask_feature") is not None:
            mix = mix_loss(out["mask_feature"], masks, valid)
            loss = loss + w["mix_weight"] * mix
    else:
        bce = bce_loss(logits, masks, valid)
        iou = soft_iou_loss(logits, masks, valid) if w["iou_weight"] > 0 else _zero(logits)
        loss = bce + w["iou_weight"] * iou
    av = _zero(logits)
    if w["av_weight"] > 0 and out.get("av_pairs"):
        av = av_matching_loss(out["av_pairs"], torch.sigmoid(logits.detach().float()))
        loss = loss + w["av_weight"] * av
    snd = _zero(logits)
    if out.get("sounding") is not None and w["classifier_weight"] > 0:
        snd = sounding_loss(out["sounding"], batch["sounding"])
        loss = loss + w["classifier_weight"] * snd
    match = _zero(logits)
    if out.get("match") is not None and w["match_weight"] > 0:
        match = match_loss(out["match"], masks, valid)
        loss = loss + w["match_weight"] * match
    cross, cross_gate = _zero(logits), _zero(logits)
    mc = out.get("match_cross")
    if mc is not None and (w["cross_weight"] > 0 or w["cross_gate_weight"] > 0):
        # both terms score the same in-batch pairs: selected once
        pairs = _cross_pairs(mc, batch["sounding"], batch["audio"], CROSS_MAX_CORR)
        if w["cross_weight"] > 0:  # cross_match_loss
            cross = _pairs_bce(_region_pair_logits(mc), pairs)
            loss = loss + w["cross_weight"] * cross
        if w["cross_gate_weight"] > 0:  # cross_gate_loss
            cross_gate = _pairs_bce(_gate_pair_logits(mc), pairs)
            loss = loss + w["cross_gate_weight"] * cross_gate
    parts = {
        "total": loss.detach(),
        "bce": bce.detach(),
        "iou": iou.detach(),
        "av": av.detach(),
        "sounding": snd.detach(),
        "match": match.detach(),
        "cross": cross.detach(),
        "cross_gate": cross_gate.detach(),
    }
    if w["kind"] == "dice+mix":
        parts["mix"] = mix.detach()
    return loss, parts
