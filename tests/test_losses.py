"""The audio-visual match terms of the small model: match map, in-batch pairs, the gate."""

from __future__ import annotations

import math

import torch

from avsrobust.losses import cross_gate_loss, cross_match_loss, match_loss, total_loss
from avsrobust.models.small import and_logits

torch.set_num_threads(1)


def test_and_logits_is_the_product_of_probabilities_and_stays_finite():
    a = torch.tensor([-60.0, -3.0, 0.0, 2.0, 40.0, 40.0])
    b = torch.tensor([0.0, 1.0, 0.0, -2.0, -40.0, 40.0])
    got = torch.sigmoid(and_logits(a, b))
    assert torch.allclose(got, torch.sigmoid(a) * torch.sigmoid(b), atol=1e-5)
    a.requires_grad_(True)
    and_logits(a, b).sum().backward()
    assert torch.isfinite(a.grad).all()
    # either "no" wins: a confident silent gate empties a confident mask
    assert and_logits(torch.tensor(30.0), torch.tensor(-30.0)) < -25


def test_match_loss_targets_the_cells_the_mask_touches():
    masks = torch.zeros(2, 1, 16, 16)
    masks[0, :, :8, :8] = 1.0  # frame 0: the top-left cell of a 2x2 map, fully
    masks[0, :, 15, 0] = 1.0  # and one pixel of the bottom-left one
    want = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    logits = torch.zeros(2, 1, 2, 2, requires_grad=True)
    valid = torch.tensor([True, False])
    loss = match_loss(logits, masks, valid)
    loss.backward()
    # d BCE / d logit = sigmoid(logit) - target, over 4 cells of one valid frame
    assert torch.allclose(logits.grad[0, 0], (0.5 - want) / 4)
    assert torch.equal(logits.grad[1], torch.zeros(1, 2, 2))  # invalid frame: no gradient
    assert math.isclose(float(loss.detach()), math.log(2.0), rel_tol=1e-6)
    best = (want * 60.0 - 30.0).reshape(1, 1, 2, 2)
    assert float(match_loss(best, masks[:1])) < 1e-6
    assert float(match_loss(-best, masks[:1])) > 29  # the opposite map


def _audio(bands: list[int]) -> torch.Tensor:
    """One log-mel clip per video (5 frames each) whose spectrum peaks at ``bands[v]``."""
    out = torch.full((len(bands) * 5, 1, 96, 64), -4.0)
    for v, band in enumerate(bands):
        out[v * 5 : (v + 1) * 5, :, :, band] = 2.0
    return out


def test_cross_match_loss_pairs_sounding_frames_with_other_sounding_videos():
    b, t = 3, 5
    cross = torch.randn(b * t, b, 2, 2, requires_grad=True)
    sounding = torch.tensor([1.0] * 10 + [0.0] * 5)  # videos 0 and 1 sound, video 2 is silent
    loss = cross_match_loss(cross, sounding, _audio([3, 30, 50]))
    loss.backward()
    grad = cross.grad.abs().sum((2, 3))
    used = torch.zeros(b * t, b, dtype=torch.bool)
    used[:5, 1] = used[5:10, 0] = True  # only frame-of-0 x audio-of-1 and the reverse
    assert (grad[used] > 0).all() and (grad[~used] == 0).all()
    # the pair logit is the own-match-weighted mean of the cross map, its target 0
    own = cross.detach()[torch.arange(15), torch.arange(15) // t].flatten(1)
    weight = torch.sigmoid(own) / torch.sigmoid(own).sum(1, keepdim=True)
    pair = (cross.detach().flatten(2) * weight[:, None]).sum(2)
    want = torch.nn.functional.softplus(pair[used]).mean()
    assert torch.allclose(loss.detach(), want, atol=1e-6)


def test_cross_match_loss_skips_clips_that_sound_alike():
    cross = torch.randn(10, 2, 2, 2, requires_grad=True)
    same = cross_match_loss(cross, torch.ones(10), _audio([7, 7]))  # one kind of source
    assert float(same.detach()) == 0.0
    same.backward()
    assert torch.equal(cross.grad, torch.zeros_like(cross))
    assert float(cross_match_loss(cross, torch.ones(10), _audio([7, 40])).detach()) > 0


def test_cross_gate_loss_trains_the_best_matching_cell_of_the_same_pairs():
    b, t = 3, 5
    cross = torch.randn(b * t, b, 2, 2, requires_grad=True)
    sounding = torch.tensor([1.0] * 10 + [0.0] * 5)
    loss = cross_gate_loss(cross, sounding, _audio([3, 30, 50]))
    loss.backward()
    used = torch.zeros(b * t, b, dtype=torch.bool)
    used[:5, 1] = used[5:10, 0] = True
    # the pair logit is the gate's statistic, the cross map's maximum: only that cell learns
    best = cross.detach().flatten(2).argmax(2)
    onehot = torch.nn.functional.one_hot(best, 4).bool()
    grad = cross.grad.flatten(2)
    assert (grad[used][onehot[used]] > 0).all()
    assert (grad[used][~onehot[used]] == 0).all() and (grad[~used] == 0).all()
    want = torch.nn.functional.softplus(cross.detach().flatten(2).amax(2)[used]).mean()
    assert torch.allclose(loss.detach(), want, atol=1e-6)
    same = cross_gate_loss(cross, torch.ones(10 + 5), _audio([7, 7, 7]))  # alike: no pair
    assert float(same.detach()) == 0.0


def test_total_loss_adds_the_cross_gate_term_by_its_weight():
    torch.manual_seed(0)
    cross = torch.randn(10, 2, 2, 2)
    out = {
        "logits": torch.randn(10, 1, 8, 8),
        "match": cross[torch.arange(10), torch.arange(10) // 5][:, None],
        "match_cross": cross,
        "av_pairs": [],
    }
    batch = {
        "masks": torch.zeros(10, 1, 8, 8),
        "mask_valid": torch.ones(10, dtype=torch.bool),
        "sounding": torch.ones(10),
        "audio": _audio([3, 30]),
    }
    off, parts_off = total_loss(out, batch, {"loss": {}})
    on, parts_on = total_loss(out, batch, {"loss": {"cross_gate_weight": 0.4}})
    assert float(parts_off["cross_gate"]) == 0.0  # off by default
    term = cross_gate_loss(cross, batch["sounding"], batch["audio"])
    assert float(term) > 0 and torch.isclose(parts_on["cross_gate"], term)
    assert torch.isclose(on - off, 0.4 * term, atol=1e-6)


def test_total_loss_trains_the_gate_not_the_segmenter_on_silent_frames():
    torch.manual_seed(0)
    seg = torch.randn(10, 1, 8, 8, requires_grad=True)
    gate = torch.randn(10, requires_grad=True)
    out = {
        "logits": and_logits(seg, gate[:, None, None, None]),
        "gate_logits": and_logits(seg.detach(), gate[:, None, None, None]),
        "sounding": gate,
        "av_pairs": [],
    }
    masks = torch.zeros(10, 1, 8, 8)
    masks[:5, :, 2:6, 2:6] = 1.0
    batch = {
        "masks": masks,
        "mask_valid": torch.ones(10, dtype=torch.bool),
        "sounding": torch.tensor([1.0] * 5 + [0.0] * 5),
        "audio": _audio([3, 30]),
    }
    loss, parts = total_loss(out, batch, {"loss": {}})
    assert set(parts) == {"total", "bce", "iou", "av", "sounding", "match", "cross", "cross_gate"}
    loss.backward()
    assert (seg.grad[:5].abs().sum((1, 2, 3)) > 0).all()  # positives shape the mask
    assert torch.equal(seg.grad[5:], torch.zeros_like(seg.grad[5:]))  # negatives do not
    assert (gate.grad[5:] > 0).all()  # they push the gate towards "nothing sounds"
