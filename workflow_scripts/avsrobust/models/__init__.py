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
    The AVSBench ECCV'22 ResNet-50 baseline, reimplemented: ResNet-50 stages
    (strides 4/8/16/32) each projected to ``channels`` by conv+BN+ReLU, a frozen
    VGGish (128-d), TPAVI attention at ``tpavi_stages``, FPN-style decoder.
``small``
    Same interface, trains in minutes on a laptop CPU at 64-112 px: a few strided
    convs (strides 4/8/16), a log-mel statistics MLP (64-d), FiLM audio modulation
    at every stage and a TPAVI block at the coarsest one. FiLM scales features
    multiplicatively, so the model can switch a visible object off when its
    audio is silent -- the robustness property this project studies.

All modules avoid in-place ops on activations (autocast/bf16 safe) and only use
ops that accept ``channels_last`` inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..weights import load_resnet50, load_vggish
from .blocks import AUDIO_SHAPE, TPAVI, VGGish, check_inputs, conv_bn_relu
from .resize import _DeterministicBilinear, resize_bilinear
from .small import SMALL_DEFAULTS, SmallModel
from .tpavi import TPAVI_DEFAULTS, TPAVIModel

__all__ = [
    "AUDIO_SHAPE",
    "MODEL_NAMES",
    "TPAVI",
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

MODEL_NAMES = ("tpavi", "small")

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
    defaults = TPAVI_DEFAULTS if name == "tpavi" else SMALL_DEFAULTS
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

    for key in ("classifier", "freeze_audio") + (("attention",) if name == "small" else ()):
        need(key, isinstance(out[key], bool), "true or false")
    for key in ("channels", "num_frames") + (("audio_dim",) if name == "small" else ()):
        need(key, type(out[key]) is int and out[key] >= 1, "a positive integer")
    if name == "tpavi":
        stages = out["tpavi_stages"]
        need(
            "tpavi_stages",
            isinstance(stages, list | tuple)
            and all(type(s) is int and 0 <= s <= 3 for s in stages)
            and len(set(stages)) == len(stages),
            "a list of distinct stage indices from 0..3 (may be empty)",
        )
        for key in ("resnet50_weights", "vggish_weights"):
            need(key, out[key] is None or isinstance(out[key], str), "a path string or ''")
        for key in ("resnet50_sha256", "vggish_sha256"):
            need(key, out[key] is None or isinstance(out[key], str), "a hex string or null")
    else:
        widths = out["widths"]
        need(
            "widths",
            isinstance(widths, list | tuple)
            and len(widths) == 3
            and all(type(v) is int and v >= 1 for v in widths),
            "three positive integers",
        )
    return out


def build_model(cfg: Mapping[str, Any]) -> nn.Module:
    """Build the model named by ``cfg["name"]`` and load any configured weight files.

    Keys (defaults in ``TPAVI_DEFAULTS`` / ``SMALL_DEFAULTS``):
    ``name`` ("tpavi" | "small"), ``classifier``, ``num_frames`` (T), ``channels``
    (decoder width), ``freeze_audio``; tpavi only: ``tpavi_stages`` (subset of
    0..3), ``resnet50_weights`` / ``vggish_weights`` (path, "" = random init),
    ``resnet50_sha256`` / ``vggish_sha256`` (full digest or >= 8-hex prefix);
    small only: ``widths`` (3 stage widths), ``audio_dim``, ``attention``.
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
        )
    model = TPAVIModel(
        channels=c["channels"],
        tpavi_stages=c["tpavi_stages"],
        classifier=c["classifier"],
        freeze_audio=c["freeze_audio"],
        num_frames=c["num_frames"],
    )
    load_resnet50(model.backbone, c["resnet50_weights"], c["resnet50_sha256"])
    load_vggish(model.audio_encoder, c["vggish_weights"], c["vggish_sha256"])
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
