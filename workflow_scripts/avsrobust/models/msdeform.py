"""Multi-scale deformable attention (Deformable DETR) in plain PyTorch.

The published AVSegFormer calls a compiled CUDA extension and falls back to a ``grid_sample``
reference when it is missing. This module is that computation written with ``grid_sample``
alone, so the model runs on CPU and GPU with no compiled extension and no build step. No
maintained PyPI package offers the op without one (mmcv's needs its CUDA build for speed and
pulls in the OpenMMLab stack; torchvision has no such op).

Sampling: for query ``q`` with reference point ``r_l`` (normalised (x, y) in [0, 1]) on level
``l``, head ``m`` samples ``P`` points at ``r_l + offset / (W_l, H_l)`` bilinearly (zero
padding, ``align_corners=False``, as ``grid_sample`` with grid ``2 loc - 1``) and mixes them
with softmax weights over the ``L * P`` points of the head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def ms_deform_attn(
    value: Tensor,
    shapes: Sequence[tuple[int, int]],
    locations: Tensor,
    weights: Tensor,
) -> Tensor:
    """Core op: ``value`` [N, S, M, D] (levels flattened in order), ``shapes`` [(H_l, W_l)],
    ``locations`` [N, Lq, M, L, P, 2] in [0, 1], ``weights`` [N, Lq, M, L, P] -> [N, Lq, M*D].

    One ``grid_sample`` per level, accumulated level by level (no [.., L*P] stack in memory).
    """
    n, _, m, d = value.shape
    _, lq, _, _, p, _ = locations.shape
    grids = 2.0 * locations - 1.0
    out = None
    start = 0
    for lvl, (h, w) in enumerate(shapes):
        v = value[:, start : start + h * w].permute(0, 2, 3, 1).reshape(n * m, d, h, w)
        start += h * w
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(n * m, lq, p, 2)
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        wl = weights[:, :, :, lvl].transpose(1, 2).reshape(n * m, 1, lq, p)
        part = (sampled * wl).sum(-1)  # [N*M, D, Lq]
        out = part if out is None else out + part
    assert out is not None
    return out.reshape(n, m * d, lq).transpose(1, 2)


class MSDeformAttn(nn.Module):
    """Deformable attention over ``levels`` feature maps; parameter names as Deformable DETR's
    ``MSDeformAttn`` (``sampling_offsets``, ``attention_weights``, ``value_proj``,
    ``output_proj``), so published weights load unchanged."""

    def __init__(self, dim: int = 256, levels: int = 3, heads: int = 8, points: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.dim, self.levels, self.heads, self.points = dim, levels, heads, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's init: zero offsets weights, biases on a ring of 8 directions with
        radius 1..P, uniform attention, Xavier value/output projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.heads, 1, 1, 2).repeat(1, self.levels, self.points, 1)
        grid = grid * torch.arange(1, self.points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        value_in: Tensor,
        shapes: Sequence[tuple[int, int]],
    ) -> Tensor:
        """``query`` [N, Lq, C], ``reference_points`` [N or 1, Lq, L, 2], ``value_in``
        [N, S, C] with ``S = sum H_l W_l`` -> [N, Lq, C]."""
        n, lq, c = query.shape
        s = value_in.shape[1]
        if s != sum(h * w for h, w in shapes):
            raise ValueError(f"value has {s} positions, levels {list(shapes)} need a different sum")
        m, lv, p = self.heads, self.levels, self.points
        value = self.value_proj(value_in).view(n, s, m, c // m)
        offsets = self.sampling_offsets(query).view(n, lq, m, lv, p, 2)
        weights = self.attention_weights(query).view(n, lq, m, lv * p).softmax(-1)
        weights = weights.view(n, lq, m, lv, p)
        # offsets are in pixels of each level: normalise by (W_l, H_l) with Python scalars (no
        # host-to-device copy: the step stays capturable in a CUDA graph)
        ref = reference_points[:, :, None, :, None, :]  # [N, Lq, 1, L, 1, 2]
        locations = torch.stack(
            [
                ref[:, :, :, lvl]
                + torch.stack(
                    (offsets[:, :, :, lvl, :, 0] / w, offsets[:, :, :, lvl, :, 1] / h), -1
                )
                for lvl, (h, w) in enumerate(shapes)
            ],
            dim=3,
        )
        return self.output_proj(ms_deform_attn(value, shapes, locations, weights))
