"""AVSegFormer (AAAI'24) and the AVSBench-Robust paper's robust variant.

The network of vvvb-github/AVSegFormer (``model/AVSegFormer.py``, ``head/AVSegHead.py``,
``utils/*``), reimplemented and checked against it (``benchmarks/published_parity.py``):

* backbone (ResNet-50 or PVT-v2-b5, :mod:`.backbones`) -> four maps; frozen VGGish (128-d) ->
  ``audio_proj`` (Linear 128 -> ``embed_dim``);
* head: 1x1 conv + GroupNorm(32) per level (``in_proj``); the stride 8/16/32 maps, with sine
  positions plus a learned level embedding, go through ``layers`` deformable-attention encoder
  layers (:class:`~.msdeform.MSDeformAttn`, post-norm, GELU FFN of ``ffn_dim``);
* ``num_queries`` learned queries cross-attend to the audio (the *query generator*: ``layers``
  self/cross-attention layers), plus a second set of learned queries, and run ``layers``
  decoder layers (self-attention, cross-attention to the encoder memory, FFN);
* mask feature: encoder memory of the stride-8 level, upsampled onto the projected stride-4
  map, a 3x3 conv + GN + ReLU, then the *CrossModalMixer* (audio query over the map, sigmoid
  channel gates); the last decoder queries' dot products with it go through a 1x1-conv MLP
  (``num_queries -> ffn_dim -> ffn_dim -> embed_dim``), are added back and the ``fc`` head
  (3x3 conv, x4 bilinear, 3x3 conv, ReLU, 1x1 conv) gives the mask logits.

Every frame is processed on its own (T only matters for the input check). The model returns
``mask_feature`` too, for AVSegFormer's auxiliary "mix" loss (:func:`avsrobust.losses.total_loss`
with ``loss.kind: dice+mix``).

``robust``: the AVSBench-Robust ``AVSegFormer_robust`` (jiali-home/AVSBench-Robust,
``training_evaluation/code/AVSegFormer/model/AVSegFormer_robust.py``) adds ``CosineModule``:
the cosine similarity of ``Linear(embed_dim -> C4)`` of the projected audio and the pooled
last backbone map. It is trained with BCE of ``sigmoid(similarity)`` against aligned / not
aligned, so it is returned as the ``sounding`` logit (gating masks where it is <= 0 is this
project's use of it; the published test script only prints it).

``freeze_backbone_epochs``: AVSegFormer trains with the backbone frozen for the first epochs
(5 for S4, 10 for MS3). The model starts frozen when it is > 0 and :meth:`AVSegFormer.set_epoch`
thaws it; frozen, the backbone runs without an autograd graph, so its parameters get no
gradient (and AdamW leaves them alone, as the published ``requires_grad = False`` does).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import PRETRAINED_DEFAULTS, build_backbone, stage_features
from .blocks import COMMON_DEFAULTS, FrozenAudioMixin, VGGish, check_inputs
from .msdeform import MSDeformAttn
from .resize import resize_bilinear

AVSEGFORMER_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in COMMON_DEFAULTS.items() if k != "classifier"},
    "name": "avsegformer",
    "backbone": "pvt_v2_b5",
    "robust": False,
    "embed_dim": 256,
    "num_queries": 300,
    "layers": 6,
    "ffn_dim": 2048,
    "freeze_backbone_epochs": 0,
    "freeze_audio": True,
    **PRETRAINED_DEFAULTS,
}
HEADS = 8
POINTS = 4
DROPOUT = 0.1
POS_FEATS_TEMPERATURE = 10000.0


@functools.lru_cache(maxsize=32)
def _sine_positions(h: int, w: int, dim: int, device: torch.device) -> Tensor:
    """DETR's sine encoding of an unpadded ``h x w`` map (``normalize=False``) -> [dim, h, w].

    Channels ``[0, dim/2)`` encode y, ``[dim/2, dim)`` x; within each half sin/cos alternate
    with wavelengths ``temperature ** (2 floor(i / 2) / (dim / 2))``, positions 1..h / 1..w.
    """
    feats = dim // 2
    i = torch.arange(feats, dtype=torch.float32, device=device)
    dim_t = POS_FEATS_TEMPERATURE ** (2 * torch.div(i, 2, rounding_mode="floor") / feats)
    y = torch.arange(1, h + 1, dtype=torch.float32, device=device)[:, None, None] / dim_t
    x = torch.arange(1, w + 1, dtype=torch.float32, device=device)[:, None] / dim_t
    y = torch.stack((y[..., 0::2].sin(), y[..., 1::2].cos()), dim=-1).flatten(-2)  # [h, 1, f]
    x = torch.stack((x[..., 0::2].sin(), x[..., 1::2].cos()), dim=-1).flatten(-2)  # [w, f]
    pos = torch.cat((y.expand(h, w, feats), x[None].expand(h, w, feats)), dim=-1)
    return pos.permute(2, 0, 1).contiguous()


@functools.lru_cache(maxsize=32)
def _reference_points(shapes: tuple[tuple[int, int], ...], device: torch.device) -> Tensor:
    """Pixel centres of every level, normalised to [0, 1], as (x, y) -> [1, S, L, 2]."""
    refs = []
    for h, w in shapes:
        ry, rx = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device) / h,
            torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device) / w,
            indexing="ij",
        )
        refs.append(torch.stack((rx.reshape(-1), ry.reshape(-1)), -1))
    ref = torch.cat(refs, 0)  # [S, 2]
    return ref[None, :, None, :].expand(1, ref.shape[0], len(shapes), 2).contiguous()


class _FFNLayer(nn.Module):
    """Post-norm GELU FFN shared by the encoder and decoder layers (``linear1``, ``linear2``;
    one dropout module: dropout has no parameters, each call draws its own mask)."""

    def _init_ffn(self, dim: int, ffn_dim: int) -> None:
        self.dropout = nn.Dropout(DROPOUT)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)

    def _ffn(self, x: Tensor, norm: nn.Module) -> Tensor:
        y = self.linear2(self.dropout(F.gelu(self.linear1(x))))
        return norm(x + self.dropout(y))


class EncoderLayer(_FFNLayer):
    """Deformable self-attention + FFN, post-norm (AVSegFormer's ``AVSTransformerEncoderLayer``)."""

    def __init__(self, dim: int, ffn_dim: int, levels: int) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(dim, levels, HEADS, POINTS)
        self.norm1 = nn.LayerNorm(dim)
        self._init_ffn(dim, ffn_dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(
        self, src: Tensor, pos: Tensor, ref: Tensor, shapes: Sequence[tuple[int, int]]
    ) -> Tensor:
        src = self.norm1(src + self.dropout(self.self_attn(src + pos, ref, src, shapes)))
        return self._ffn(src, self.norm2)


class DecoderLayer(_FFNLayer):
    """Query self-attention, cross-attention to the memory, FFN; post-norm."""

    def __init__(self, dim: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, HEADS, dropout=DROPOUT, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, HEADS, dropout=DROPOUT, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self._init_ffn(dim, ffn_dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, q: Tensor, memory: Tensor) -> Tensor:
        q = self.norm1(q + self.dropout(self.self_attn(q, q, q, need_weights=False)[0]))
        attn = self.cross_attn(q, memory, memory, need_weights=False)[0]
        q = self.norm2(q + self.dropout(attn))
        return self._ffn(q, self.norm3)


class Transformer(nn.Module):
    """``layers`` encoder layers over the flattened levels, then ``layers`` decoder layers."""

    def __init__(self, dim: int, ffn_dim: int, layers: int, levels: int) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(
            EncoderLayer(dim, ffn_dim, levels) for _ in range(layers)
        )
        self.decoder = nn.Module()
        self.decoder.layers = nn.ModuleList(DecoderLayer(dim, ffn_dim) for _ in range(layers))

    def forward(
        self, query: Tensor, src: Tensor, pos: Tensor, shapes: Sequence[tuple[int, int]]
    ) -> tuple[Tensor, Tensor]:
        """-> (memory [N, S, C], last decoder output [N, Q, C])."""
        ref = _reference_points(tuple(shapes), src.device).to(src.dtype)
        memory = src
        for layer in self.encoder.layers:
            memory = layer(memory, pos, ref, shapes)
        q = query
        for layer in self.decoder.layers:
            q = layer(q, memory)
        return memory, q


class AudioQueryLayer(nn.Module):
    """One layer of the query generator: query self-attention, cross-attention to audio, FFN."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, HEADS, bias=False, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, HEADS, bias=False, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, q: Tensor, audio: Tensor) -> Tensor:
        q = self.norm1(q + self.self_attn(q, q, q, need_weights=False)[0])
        q = self.norm2(q + self.cross_attn(q, audio, audio, need_weights=False)[0])
        return self.norm3(q + self.ffn(q))


class QueryGenerator(nn.Module):
    """AVSegFormer's ``AttentionGenerator``: learned queries conditioned on the frame's audio."""

    def __init__(self, dim: int, num_queries: int, layers: int) -> None:
        super().__init__()
        self.query = nn.Embedding(num_queries, dim)
        self.layers = nn.ModuleList(AudioQueryLayer(dim, 4 * dim) for _ in range(layers))

    def forward(self, audio: Tensor) -> Tensor:
        q = self.query.weight[None].expand(audio.shape[0], -1, -1)
        for layer in self.layers:
            q = layer(q, audio)
        return q


class CrossModalMixer(nn.Module):
    """Audio-queried attention over the map -> sigmoid channel gates on the map."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.heads = HEADS
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.kv_proj = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, fmap: Tensor, audio: Tensor) -> Tensor:
        n, c, h, w = fmap.shape
        m = self.heads
        flat = fmap.flatten(2).transpose(1, 2)  # [N, HW, C]
        q = self.q_proj(audio).reshape(n, 1, m, c // m).transpose(1, 2)  # [N, M, 1, D]
        k, v = self.kv_proj(flat).reshape(n, h * w, 2, m, c // m).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)  # [N, M, 1, D], scale 1/sqrt(D)
        gates = self.proj(x.transpose(1, 2).reshape(n, c)).sigmoid()
        return fmap * gates[:, :, None, None]


class MaskMLP(nn.Module):
    """1x1-conv MLP over the per-query similarity maps: ``Q -> hidden -> hidden -> C``."""

    def __init__(self, cin: int, hidden: int, cout: int) -> None:
        super().__init__()
        pairs = ((cin, hidden), (hidden, hidden), (hidden, cout))
        self.layers = nn.ModuleList(nn.Conv2d(a, b, 1) for a, b in pairs)

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MaskHead(nn.Module):
    """3x3 conv to 128, bilinear x4 (to the input size), 3x3 conv to 32, ReLU, 1x1 conv."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(dim, 128, 3, padding=1)
        self.conv_mid = nn.Conv2d(128, 32, 3, padding=1)
        self.conv_out = nn.Conv2d(32, 1, 1, bias=False)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        x = resize_bilinear(self.conv_in(x), size)
        return self.conv_out(F.relu(self.conv_mid(x)))


def _conv_gn(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.GroupNorm(32, cout))


class AVSegHead(nn.Module):
    """Everything between the backbone maps and the mask logits (see the module docstring)."""

    def __init__(
        self, in_channels: Sequence[int], dim: int, num_queries: int, layers: int, ffn_dim: int
    ) -> None:
        super().__init__()
        if dim % 32:
            raise ValueError(f"embed_dim must be a multiple of 32 (GroupNorm(32)), got {dim}")
        levels = len(in_channels) - 1
        self.dim = dim
        self.level_embed = nn.Parameter(torch.empty(levels, dim))
        self.learnable_query = nn.Embedding(num_queries, dim)
        self.query_generator = QueryGenerator(dim, num_queries, layers)
        self.transformer = Transformer(dim, ffn_dim, layers, levels)
        self.in_proj = nn.ModuleList(_conv_gn(c, dim, 1) for c in in_channels)
        self.mlp = MaskMLP(num_queries, ffn_dim, dim)
        self.fusion_block = CrossModalMixer(dim)
        self.lateral_conv = _conv_gn(dim, dim, 1)
        self.out_conv = nn.Sequential(*_conv_gn(dim, dim, 3), nn.ReLU())
        self.fc = MaskHead(dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """AVSegFormer's init: Xavier for every matrix, Deformable DETR's for its attention,
        N(0, 1) level embeddings."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(
        self, feats: Sequence[Tensor], audio: Tensor, size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """``feats`` four maps, ``audio`` [N, 1, C] -> (logits [N, 1, *size], mask feature)."""
        fine = self.in_proj[0](feats[0])
        srcs = [proj(f) for proj, f in zip(self.in_proj[1:], feats[1:], strict=True)]
        shapes = [(s.shape[-2], s.shape[-1]) for s in srcs]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)  # [N, S, C]
        pos = torch.cat(
            [
                _sine_positions(h, w, self.dim, src.device).to(src.dtype).flatten(1).t()
                + self.level_embed[lvl]
                for lvl, (h, w) in enumerate(shapes)
            ],
            0,
        )[None]  # [1, S, C]
        query = self.query_generator(audio) + self.learnable_query.weight[None]
        memory, q = self.transformer(query, src, pos, shapes)
        h8, w8 = shapes[0]
        coarse = memory[:, : h8 * w8].transpose(1, 2).reshape(-1, self.dim, h8, w8)
        mask_feature = self.lateral_conv(fine) + resize_bilinear(coarse, fine.shape[-2:])
        mask_feature = self.fusion_block(self.out_conv(mask_feature), audio)
        pred = mask_feature + self.mlp(torch.einsum("bqc,bchw->bqhw", q, mask_feature))
        return self.fc(pred, size), mask_feature


class CosineClassifier(nn.Module):
    """AVSBench-Robust's ``CosineModule``: cos(Linear(audio), avgpool(last visual map))."""

    def __init__(self, audio_dim: int, visual_dim: int) -> None:
        super().__init__()
        self.audio_proj = nn.Linear(audio_dim, visual_dim)

    def forward(self, audio: Tensor, visual: Tensor) -> Tensor:
        return F.cosine_similarity(self.audio_proj(audio), visual.mean(dim=(2, 3)), dim=1)


class AVSegFormer(FrozenAudioMixin, nn.Module):
    """AVSegFormer / its robust variant behind the project's model interface."""

    def __init__(
        self,
        backbone: str = "pvt_v2_b5",
        robust: bool = False,
        embed_dim: int = 256,
        num_queries: int = 300,
        layers: int = 6,
        ffn_dim: int = 2048,
        freeze_backbone_epochs: int = 0,
        freeze_audio: bool = True,
        num_frames: int = 5,
    ) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.freeze_audio = freeze_audio
        self.freeze_backbone_epochs = freeze_backbone_epochs
        self.backbone_frozen = freeze_backbone_epochs > 0
        self.backbone = build_backbone(backbone)
        self.audio_encoder = VGGish()
        if freeze_audio:
            self.audio_encoder.requires_grad_(False)
        self.audio_proj = nn.Linear(128, embed_dim)
        self.head = AVSegHead(self.backbone.channels, embed_dim, num_queries, layers, ffn_dim)
        self.classifier = CosineClassifier(embed_dim, self.backbone.channels[3]) if robust else None

    def freeze_backbone(self, freeze: bool) -> None:
        """Run the backbone without gradient (``True``) or train it (``False``)."""
        self.backbone_frozen = bool(freeze)

    def set_epoch(self, epoch: int) -> None:
        """Called by the training loop before each epoch (0-based): the backbone is frozen for
        the first ``freeze_backbone_epochs`` epochs, as AVSegFormer's ``freeze_epochs``."""
        self.freeze_backbone(epoch < self.freeze_backbone_epochs)

    def forward(self, frames: Tensor, audio: Tensor) -> dict[str, Any]:
        check_inputs(frames, audio, self.num_frames)
        a = self.audio_proj(self.encode_audio(audio))[:, None]  # [N, 1, C]
        feats = stage_features(self.backbone, frames, self.backbone_frozen)
        logits, mask_feature = self.head(feats, a, (frames.shape[-2], frames.shape[-1]))
        out: dict[str, Any] = {"logits": logits, "mask_feature": mask_feature, "av_pairs": []}
        if self.classifier is not None:
            out["sounding"] = self.classifier(a[:, 0], feats[3])
        return out
