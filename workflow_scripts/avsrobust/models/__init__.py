"""Audio-visual segmentation models behind one interface.

Every model maps

* ``frames`` ``[B*T, 3, H, W]`` float, ImageNet-normalised, T frames per video
  stored consecutively (video 0 frames 0..T-1, video 1 frames 0..T-1, ...), and
* ``audio`` ``[B*T, 1, 96, 64]`` VGGish log-mel examples, one per frame
  (domain.md section 4),

to a dict:

* ``"logits"``: ``[B*T, 1, H, W]`` mask logits at the input resolution;
* ``"sounding"``: ``[B*T]`` logits of "is something sounding in this frame"
  (only when ``cfg["classifier"]`` is true): lets training put gradient on
  negative audio and lets inference gate masks;
* ``"av_pairs"``: list, one entry per audio-visual attention stage (in stage
  order), of ``(visual, audio)`` with ``visual`` the fused feature map
  ``[B*T, C, h, w]`` after attention and ``audio`` the audio embedding projected
  to the same width ``[B*T, C]``. This is what AVSBench's MS3 audio-visual
  matching (KL) loss consumes (its ``v_map_list`` / ``a_fea_list``). Empty list
  when a model has no attention stage.

Models (``build_model(cfg)``):

``tpavi``
    The published AVSBench ECCV'22 network (:mod:`.tpavi`): ResNet-50 or PVT-v2-b5 stages
    each projected to ``channels`` by the sum of four dilated 3x3 convs, a frozen VGGish
    (128-d), TPAVI attention at ``tpavi_stages``, the DPT-style decoder with its in-place-ReLU
    residual units. ``classifier`` adds this project's "is something sounding" head.
``avsegformer``
    AVSegFormer (AAAI'24, :mod:`.avsegformer`) on ResNet-50 or PVT-v2-b5; ``robust`` adds the
    AVSBench-Robust paper's cosine audio-visual classifier as the ``sounding`` output. Also
    returns ``"mask_feature"`` for its auxiliary loss.
``small``
    Same interface, trains in minutes on a laptop CPU at 64-112 px: a few strided
    convs (strides 4/8/16), a log-mel statistics MLP (64-d), FiLM audio modulation
    at every stage and a TPAVI block at the coarsest one. FiLM scales features
    multiplicatively, so the model can switch a visible object off when its
    audio is silent; with ``match`` (default) a per-location audio-visual match map
    gates the mask, so it can also leave the frame empty when the sound comes from
    nothing visible (off-screen) -- the robustness properties this project studies.

Published checkpoints convert to this project's format with :mod:`.published`
(``workflow_scripts/import_checkpoint.py``).

All modules avoid in-place ops on activations (autocast/bf16 safe) and only use
ops that accept ``channels_last`` inputs.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..weights import load_pvt_v2, load_resnet50, load_vggish
from .avsegformer import AVSEGFORMER_DEFAULTS, AVSegFormer
from .backbones import BACKBONES, PRETRAINED_DEFAULTS
from .blocks import AUDIO_SHAPE, TPAVI, VGGish, check_inputs, conv_bn_relu
from .resize import _DeterministicBilinear, resize_bilinear
from .small import SMALL_DEFAULTS, SmallModel
from .tpavi import TPAVI_DEFAULTS, TPAVIModel

__all__ = [
    "AUDIO_SHAPE",
    "MODEL_DEFAULTS",
    "MODEL_NAMES",
    "PRETRAINED_KEYS",
    "TPAVI",
    "AVSegFormer",
    "SmallModel",
    "TPAVIModel",
    "VGGish",
    "_DeterministicBilinear",
    "build_model",
    "check_inputs",
    "conv_bn_relu",
    "count_parameters",
    "resize_bilinear",
]

MODEL_NAMES = ("tpavi", "avsegformer", "small")
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "tpavi": TPAVI_DEFAULTS,
    "avsegformer": AVSEGFORMER_DEFAULTS,
    "small": SMALL_DEFAULTS,
}
#: Model keys that only name pretrained files for initialisation: a checkpoint's state dict
#: has the weights, so loading one builds the model without them (``load_pretrained=False``).
PRETRAINED_KEYS = tuple(PRETRAINED_DEFAULTS)

# ----------------------------------------------------------------------------- factory


def _validate(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``cfg`` over the model's defaults, rejecting unknown keys and bad values."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"model config must be a mapping, got {type(cfg).__name__}")
    # no default model here: the config's (config/schema.yaml, training.model) is the one
    name = cfg.get("name")
    if name not in MODEL_NAMES:
        raise ConfigError(
            f"model.name: unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}"
        )
    defaults = MODEL_DEFAULTS[name]
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise ConfigError(
            f"model: unknown key(s) {', '.join(map(repr, unknown))} for model {name!r}; "
            f"valid keys: {', '.join(sorted(defaults))}"
        )
    out = {**defaults, **cfg}

    def need(key: str, ok: bool, what: str) -> None:
        if not ok:
            raise ConfigError(f"model.{key} must be {what}, got {out[key]!r}")

    def positive(key: str) -> None:
        need(key, type(out[key]) is int and out[key] >= 1, "a positive integer")

    flags = {
        "tpavi": ("classifier", "freeze_audio"),
        "avsegformer": ("robust", "freeze_audio"),
        "small": ("classifier", "freeze_audio", "attention", "match"),
    }[name]
    for key in flags:
        need(key, isinstance(out[key], bool), "true or false")
    positive("num_frames")
    if name == "small":
        for key in ("channels", "audio_dim"):
            positive(key)
        widths = out["widths"]
        need(
            "widths",
            isinstance(widths, list | tuple)
            and len(widths) == 3
            and all(type(v) is int and v >= 1 for v in widths),
            "three positive integers",
        )
        return out
    need("backbone", out["backbone"] in BACKBONES, f"one of {', '.join(BACKBONES)}")
    for key in PRETRAINED_KEYS:
        if key.endswith("_weights"):
            need(key, out[key] is None or isinstance(out[key], str), "a path string or ''")
        else:
            need(key, out[key] is None or isinstance(out[key], str), "a hex string or null")
    if name == "tpavi":
        positive("channels")
        stages = out["tpavi_stages"]
        need(
            "tpavi_stages",
            isinstance(stages, list | tuple)
            and all(type(s) is int and 0 <= s <= 3 for s in stages)
            and len(set(stages)) == len(stages),
            "a list of distinct stage indices from 0..3 (may be empty)",
        )
    else:
        for key in ("num_queries", "layers", "ffn_dim"):
            positive(key)
        need(
            "embed_dim",
            type(out["embed_dim"]) is int and out["embed_dim"] >= 32 and out["embed_dim"] % 32 == 0,
            "a positive multiple of 32 (GroupNorm(32) and 8 attention heads)",
        )
        need(
            "freeze_backbone_epochs",
            type(out["freeze_backbone_epochs"]) is int and out["freeze_backbone_epochs"] >= 0,
            "an integer >= 0",
        )
    return out


def build_model(cfg: Mapping[str, Any], *, load_pretrained: bool = True) -> nn.Module:
    """Build the model named by ``cfg["name"]`` and load any configured weight files.

    Keys (defaults in ``MODEL_DEFAULTS[name]``): ``name`` ("tpavi" | "avsegformer" | "small"),
    ``num_frames`` (T), ``freeze_audio``;
    tpavi: ``backbone`` ("resnet50" | "pvt_v2_b5"), ``channels`` (decoder width),
    ``tpavi_stages`` (subset of 0..3), ``classifier``;
    avsegformer: ``backbone``, ``robust``, ``embed_dim``, ``num_queries``, ``layers``,
    ``ffn_dim``, ``freeze_backbone_epochs``;
    tpavi and avsegformer: ``resnet50_weights`` / ``pvt_v2_weights`` / ``vggish_weights``
    (path, "" = random init) and ``*_sha256`` (full digest or >= 8-hex prefix), read only when
    ``load_pretrained`` (a checkpoint being loaded has its weights already);
    small: ``channels``, ``widths`` (3 stage widths), ``audio_dim``, ``attention``,
    ``classifier``, ``match`` (per-location audio-visual match gating the mask, see
    :mod:`.small`).
    Unknown names or keys raise :class:`~avsrobust.errors.ConfigError` (a ValueError).
    """
    c = _validate(cfg)
    if c["name"] == "small":
        return SmallModel(
            channels=c["channels"],
            widths=c["widths"],
            audio_dim=c["audio_dim"],
            attention=c["attention"],
            classifier=c["classifier"],
            freeze_audio=c["freeze_audio"],
            num_frames=c["num_frames"],
            match=c["match"],
        )
    cls = TPAVIModel if c["name"] == "tpavi" else AVSegFormer
    # their config keys are their constructors' argument names
    args = inspect.signature(cls.__init__).parameters
    model = cls(**{k: c[k] for k in args if k != "self"})
    if load_pretrained:
        if c["backbone"] == "resnet50":
            load_resnet50(model.backbone, c["resnet50_weights"], c["resnet50_sha256"])
        else:
            load_pvt_v2(model.backbone, c["pvt_v2_weights"], c["pvt_v2_sha256"])
        load_vggish(model.audio_encoder, c["vggish_weights"], c["vggish_sha256"])
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
