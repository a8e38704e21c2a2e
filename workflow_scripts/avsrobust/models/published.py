"""Published checkpoints -> this project's checkpoint format.

A published checkpoint is a bare ``model.state_dict()`` (both codebases save
``model.module.state_dict()``: no ``module.`` prefix). :func:`convert_state_dict` renames and
reshapes it into the state dict of the equivalent :func:`~avsrobust.models.build_model` model
and :func:`import_checkpoint` writes ``{"model": state_dict, "cfg": {...}}`` -- what
``avsrobust.evaluate.load_checkpoint`` reads -- with the model config, the image size the
checkpoint was trained at, and where it came from.

Formats (:data:`FORMATS`):

``avsbench-tpavi-r50`` / ``avsbench-tpavi-pvt2``
    OpenNLPLab/AVSBench ``Pred_endecoder`` (``avs_scripts/avs_s4|avs_ms3``, ResNet-50 or
    PVT-v2-b5, ``--tpavi_va_flag``; the TPAVI stages are read from the keys). Trained at 224 px.
    VGGish lives outside that model: give its ``vggish-10086976.pth`` (torchvggish layout).
    Dropped by name: ``resnet.layer3_2.*``/``resnet.layer4_2.*`` (the second ResNet branch that
    ``B2_ResNet`` builds and the forward never runs) and ``path4.resConfUnit1.*`` (the top fusion
    block gets one input, so its lateral unit never runs).
``avsegformer-r50`` / ``avsegformer-pvt2``
    vvvb-github/AVSegFormer ``AVSegFormer`` (VGGish inside). Its released checkpoints were
    trained at 512 px (the dataloaders resize to 512 since commit b2f40e2, whatever the configs
    say). Dropped by name: ``backbone.layer3_2.*``/``backbone.layer4_2.*`` (R50, unused branch),
    ``head.fpn.*`` and ``head.attn_fc.*`` (built by ``AVSegHead`` but never called).
``avsbench-robust-avsegformer``
    jiali-home/AVSBench-Robust ``AVSegFormer_robust`` (PVT-v2-b5, plus ``cosine_sim.*``), 512 px.

Every key of the file must be used or dropped by name, and every key of the model must come
from the file: anything else is an :class:`~avsrobust.errors.InputError` that lists the keys and
names the format the file does fit, if any (a wrong ``--format`` is the usual mistake).
AVSegFormer's sizes (queries, width, layers, FFN) and TPAVI's width and stages are read from the
tensors, so checkpoints trained with other settings of the same code import too.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..atomic import atomic_path
from ..checkpoint_formats import FORMAT_NAMES, PUBLISHED_FORMATS
from ..errors import InputError
from ..manifest import sha256_file
from ..weights import pvt_original_to_timm, read_state_dict

IMPORT_VERSION = 1
_SHOW = 8  # keys listed per kind of problem in an error message

Transform = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Rule:
    """``pattern`` (a regex on the published key) -> ``target`` (``re.sub`` template, or a
    function of the match) with an optional tensor ``transform``; ``drop`` = a reason."""

    pattern: str
    target: str | Callable[[re.Match[str]], str] | None = None
    transform: Transform | None = None
    drop: str | None = None


@dataclass(frozen=True)
class Format:
    """One published checkpoint layout."""

    name: str
    source: str  # the code that saves it
    model: Mapping[str, Any]  # fixed model keys; the rest is read from the tensors
    image_size: int
    rules: tuple[Rule, ...]
    external_vggish: bool  # VGGish lives outside the published model
    infer: Callable[[Mapping[str, Tensor]], dict[str, Any]] = field(repr=False)


def _conv3d_as_conv2d(t: Tensor) -> Tensor:
    """A 1x1x1 ``Conv3d`` weight [O, I, 1, 1, 1] as the equal 1x1 ``Conv2d`` weight."""
    if t.ndim != 5 or tuple(t.shape[2:]) != (1, 1, 1):
        raise ValueError(f"expected a 1x1x1 Conv3d weight, got shape {tuple(t.shape)}")
    return t[:, :, 0]


def _conv3d_as_linear(t: Tensor) -> Tensor:
    """TPAVI's ``phi``: a 1x1x1 ``Conv3d`` on the H, W-broadcast audio = a ``Linear`` of it."""
    return _conv3d_as_conv2d(t)[:, :, 0, 0]


def _pvt(m: re.Match[str]) -> str:
    return "backbone." + pvt_original_to_timm(m.group(1))


_UNUSED_BRANCH = "B2_ResNet's second branch (layer3_2/layer4_2): the forward never runs it"
_TOP_LATERAL = "path4.resConfUnit1: the top fusion block gets one input, so it never runs"
_DEAD_HEAD = "AVSegHead's fpn/attn_fc: built but never called by its forward"


def _resnet_rules(src: str) -> tuple[Rule, ...]:
    p = re.escape(src)
    return (
        Rule(rf"^{p}layer[34]_2\.", drop=_UNUSED_BRANCH),
        Rule(rf"^{p}layer([34])_1\.(.*)$", r"backbone.layer\1.\2"),
        Rule(rf"^{p}((conv1|bn1|layer1|layer2)\..*)$", r"backbone.\1"),
    )


_VGGISH_RULES = (Rule(r"^((features|embeddings)\..*)$", r"audio_encoder.\1"),)

_TPAVI_RULES = (
    Rule(r"^conv([1-4])\.conv2d_list\.([0-3])\.(weight|bias)$", None),  # index shift below
    Rule(r"^path4\.resConfUnit1\.", drop=_TOP_LATERAL),
    Rule(r"^path([1-4])\.resConfUnit([12])\.(conv[12]\.(weight|bias))$", None),
    Rule(r"^output_conv\.0\.(weight|bias)$", r"decoder.head_in.\1"),
    Rule(r"^output_conv\.2\.(weight|bias)$", r"decoder.head_mid.\1"),
    Rule(r"^output_conv\.4\.(weight|bias)$", r"decoder.head_out.\1"),
    Rule(r"^tpavi_b([1-4])\.align_channel\.(weight|bias)$", None),
    Rule(r"^tpavi_b([1-4])\.(g|theta)\.weight$", None, _conv3d_as_conv2d),
    Rule(r"^tpavi_b([1-4])\.(g|theta|phi)\.bias$", None),
    Rule(r"^tpavi_b([1-4])\.phi\.weight$", None, _conv3d_as_linear),
    Rule(r"^tpavi_b([1-4])\.W_z\.0\.weight$", None, _conv3d_as_conv2d),
    Rule(r"^tpavi_b([1-4])\.W_z\.0\.bias$", None),
    Rule(r"^tpavi_b([1-4])\.W_z\.1\.(.*)$", None),
    Rule(r"^tpavi_b([1-4])\.norm_layer\.(weight|bias)$", None),
)


def _shift(m: re.Match[str], first: int = 1) -> str:
    return str(int(m.group(first)) - 1)


def _tpavi_target(m: re.Match[str]) -> str:
    """Targets of the TPAVI rules whose published index is 1-based."""
    key = m.string
    if key.startswith("conv"):
        return f"encoder_conv.{_shift(m)}.convs.{m.group(2)}.{m.group(3)}"
    if key.startswith("path"):
        part = "lateral" if m.group(2) == "1" else "out"
        return f"decoder.blocks.{_shift(m)}.{part}.{m.group(3)}"
    stage = _shift(m)
    rest = key.split(".", 1)[1]
    rest = rest.replace("align_channel.", "align.").replace("norm_layer.", "norm.")
    return f"tpavi.{stage}.{rest}"


def _resolve(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    return tuple(
        Rule(r.pattern, _tpavi_target, r.transform, r.drop)
        if r.target is None and r.drop is None
        else r
        for r in rules
    )


def _infer_tpavi(state: Mapping[str, Tensor]) -> dict[str, Any]:
    stages = sorted({int(k[len("tpavi_b")]) - 1 for k in state if re.match(r"^tpavi_b[1-4]\.", k)})
    w = state.get("conv1.conv2d_list.0.weight")
    out: dict[str, Any] = {"tpavi_stages": stages}
    if w is not None:
        out["channels"] = int(w.shape[0])
    return out


def _count(state: Mapping[str, Tensor], pattern: str) -> int:
    idx = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(idx) + 1 if idx else 0


def _infer_avsegformer(state: Mapping[str, Tensor]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "audio_proj.weight" in state:
        out["embed_dim"] = int(state["audio_proj.weight"].shape[0])
    if "head.learnable_query.weight" in state:
        out["num_queries"] = int(state["head.learnable_query.weight"].shape[0])
    if "head.transformer.encoder.layers.0.linear1.weight" in state:
        out["ffn_dim"] = int(state["head.transformer.encoder.layers.0.linear1.weight"].shape[0])
    counts = {
        part: _count(state, rf"^head\.{part}\.layers\.(\d+)\.")
        for part in ("query_generator", "transformer\\.encoder", "transformer\\.decoder")
    }
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{k.replace(chr(92), '')}: {v}" for k, v in counts.items())
        raise ValueError(f"layer counts differ ({detail}); this model needs them equal")
    if counts["query_generator"]:
        out["layers"] = counts["query_generator"]
    return out


_AVSEGFORMER_HEAD = (
    Rule(r"^head\.(fpn|attn_fc)\.", drop=_DEAD_HEAD),
    Rule(r"^head\.fc\.0\.(weight|bias)$", r"head.fc.conv_in.\1"),
    Rule(r"^head\.fc\.2\.(weight|bias)$", r"head.fc.conv_mid.\1"),
    Rule(r"^head\.fc\.4\.weight$", r"head.fc.conv_out.weight"),
    Rule(
        r"^head\.((level_embed|learnable_query|query_generator|transformer|in_proj|mlp|"
        r"fusion_block|lateral_conv|out_conv)(\..*)?)$",
        r"head.\1",
    ),
    Rule(r"^audio_proj\.(weight|bias)$", r"audio_proj.\1"),
    Rule(r"^vggish\.((features|embeddings)\..*)$", r"audio_encoder.\1"),
)


def _avsegformer_rules(backbone: str, robust: bool) -> tuple[Rule, ...]:
    bb = (
        _resnet_rules("backbone.") if backbone == "resnet50" else (Rule(r"^backbone\.(.*)$", _pvt),)
    )
    extra = (Rule(r"^cosine_sim\.audio_proj\.(weight|bias)$", r"classifier.audio_proj.\1"),)
    return bb + _AVSEGFORMER_HEAD + (extra if robust else ())


def _avsbench(name: str, backbone: str) -> Format:
    facts = PUBLISHED_FORMATS[name]
    bb = (
        _resnet_rules("resnet.")
        if backbone == "resnet50"
        else (Rule(r"^encoder_backbone\.(.*)$", _pvt),)
    )
    return Format(
        name,
        facts.source,
        {"name": "tpavi", "backbone": backbone, "classifier": False},
        facts.image_size,
        bb + _resolve(_TPAVI_RULES),
        facts.external_vggish,
        _infer_tpavi,
    )


def _avsegformer(name: str, backbone: str, robust: bool) -> Format:
    facts = PUBLISHED_FORMATS[name]
    return Format(
        name,
        facts.source,
        {"name": "avsegformer", "backbone": backbone, "robust": robust},
        facts.image_size,
        _avsegformer_rules(backbone, robust),
        facts.external_vggish,
        _infer_avsegformer,
    )


#: The rules of every format of :data:`~avsrobust.checkpoint_formats.PUBLISHED_FORMATS` (its
#: source, training size and VGGish placement are defined there: the workflow reads them
#: without torch).
FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        _avsbench("avsbench-tpavi-r50", "resnet50"),
        _avsbench("avsbench-tpavi-pvt2", "pvt_v2_b5"),
        _avsegformer("avsegformer-r50", "resnet50", False),
        _avsegformer("avsegformer-pvt2", "pvt_v2_b5", False),
        _avsegformer("avsbench-robust-avsegformer", "pvt_v2_b5", True),
    )
}


@dataclass
class Converted:
    """The result of :func:`convert_state_dict`."""

    format: str
    model_cfg: dict[str, Any]
    image_size: int
    state: dict[str, Tensor]
    dropped: dict[str, int]  # reason -> number of published keys dropped for it


class FormatMismatch(ValueError):
    """The keys do not fit the format: lists of ``unmatched``/``missing``/``shape`` problems."""

    def __init__(self, fmt: str, unmatched: list[str], missing: list[str], shapes: list[str]):
        self.format, self.unmatched, self.missing, self.shapes = fmt, unmatched, missing, shapes
        parts = []
        if unmatched:
            parts.append(f"{len(unmatched)} key(s) of the file fit no rule: {_few(unmatched)}")
        if missing:
            parts.append(f"{len(missing)} key(s) the model needs are missing: {_few(missing)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es): {_few(shapes)}")
        super().__init__(f"not a {fmt} checkpoint: " + "; ".join(parts))


def _few(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _SHOW else "")


def _map_keys(
    fmt: Format, state: Mapping[str, Tensor]
) -> tuple[dict[str, Tensor], dict[str, int], list[str]]:
    compiled = [(re.compile(r.pattern), r) for r in fmt.rules]
    out: dict[str, Tensor] = {}
    dropped: dict[str, int] = {}
    unmatched: list[str] = []
    for key, value in state.items():
        for rx, rule in compiled:
            m = rx.match(key)
            if m is None:
                continue
            if rule.drop is not None:
                dropped[rule.drop] = dropped.get(rule.drop, 0) + 1
            else:
                assert rule.target is not None
                target = rule.target(m) if callable(rule.target) else m.expand(rule.target)
                out[target] = rule.transform(value) if rule.transform else value
            break
        else:
            unmatched.append(key)
    return out, dropped, unmatched


def _expected(model_cfg: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Key -> (shape, dtype) of the project model for ``model_cfg`` (do not modify)."""
    return _expected_cached(json.dumps(dict(model_cfg), sort_keys=True))


@functools.lru_cache(maxsize=16)
def _expected_cached(cfg_json: str) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Built on the meta device (no memory, no init cost beyond Python), once per config."""
    from . import build_model

    with torch.device("meta"):
        model = build_model(json.loads(cfg_json), load_pretrained=False)
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def _problems(
    f: Format, state: Mapping[str, Tensor], vggish: Mapping[str, Tensor] | None
) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, int], FormatMismatch | None]:
    """(model cfg, mapped state, dropped counts, mismatch or None). Without ``vggish`` an
    external-VGGish format is checked on the published keys alone."""
    try:
        model_cfg = {**dict(f.model), **f.infer(state), "num_frames": 5}
        expected = _expected(model_cfg)
    except ValueError as exc:  # inconsistent sizes in the file, or an unbuildable model
        return {}, {}, {}, FormatMismatch(f.name, [str(exc)], [], [])
    out, dropped, unmatched = _map_keys(f, state)
    if vggish is not None:
        mapped, _, bad = _map_keys(Format(f.name, "", {}, 0, _VGGISH_RULES, False, dict), vggish)
        out.update(mapped)
        unmatched += [f"(vggish file) {k}" for k in bad]
    elif f.external_vggish:
        expected = {k: v for k, v in expected.items() if not k.startswith("audio_encoder.")}
    missing = [k for k in expected if k not in out and not k.endswith("num_batches_tracked")]
    extra = [f"(mapped to) {k}" for k in out if k not in expected]
    shapes = [
        f"{k}: file {tuple(v.shape)}, model {expected[k][0]}"
        for k, v in out.items()
        if k in expected and tuple(v.shape) != expected[k][0]
    ]
    bad = FormatMismatch(f.name, unmatched + extra, missing, shapes)
    if not (unmatched or extra or missing or shapes):
        bad = None
        for k, (_, dtype) in expected.items():  # buffers an old file may lack: defaults
            if k not in out:
                out[k] = torch.zeros((), dtype=dtype)
        out = {k: out[k] for k in expected}  # the model's key order
    return model_cfg, out, dropped, bad


def convert_state_dict(
    fmt: str,
    state: Mapping[str, Tensor],
    vggish: Mapping[str, Tensor] | None = None,
    image_size: int | None = None,
) -> Converted:
    """Convert a published ``state`` (and, for AVSBench formats, the torchvggish ``vggish``
    state) into the project model's state dict. Raises :class:`FormatMismatch` when keys or
    shapes do not fit, ``ValueError`` for a bad ``fmt`` or a missing/extra VGGish."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMAT_NAMES)}")
    f = FORMATS[fmt]
    model_cfg, out, dropped, bad = _problems(f, state, vggish)
    if bad is not None:
        raise bad
    if f.external_vggish and vggish is None:
        raise ValueError(
            f"{fmt}: the published model keeps VGGish outside its checkpoint; "
            "give the torchvggish weights (vggish-10086976.pth) too"
        )
    if not f.external_vggish and vggish is not None:
        raise ValueError(f"{fmt}: the checkpoint holds its own VGGish weights; give no VGGish")
    return Converted(fmt, model_cfg, image_size or f.image_size, out, dropped)


def fitting_formats(state: Mapping[str, Tensor]) -> list[str]:
    """The formats whose published keys ``state`` fits (VGGish aside): for error messages."""
    return [name for name, f in FORMATS.items() if _problems(f, state, None)[3] is None]


def import_checkpoint(
    fmt: str,
    checkpoint: str | Path,
    out: str | Path,
    vggish: str | Path | None = None,
    image_size: int | None = None,
) -> dict[str, Any]:
    """Convert the published ``checkpoint`` file (+ ``vggish`` for the AVSBench formats) and
    write ``out`` = ``{"model": state_dict, "cfg": {...}}`` atomically; returns the cfg.

    ``cfg``: ``model`` (for ``build_model``), ``image_size`` (the size the checkpoint was
    trained at: evaluate it at that size; ``image_size`` overrides the format's), ``amp``
    false (the published code runs fp32), ``channels_last``, ``gate_with_classifier`` false
    (the published models do not gate), and ``imported`` (format, files, digests, dropped keys).
    Problems raise :class:`~avsrobust.errors.InputError` naming the file.
    """
    checkpoint = Path(checkpoint)
    if fmt not in FORMATS:
        raise InputError(checkpoint, f"unknown --format {fmt!r}; valid: {', '.join(FORMAT_NAMES)}")
    if image_size is not None and (type(image_size) is not int or not 16 <= image_size <= 4096):
        raise InputError(
            checkpoint, f"image size must be an integer in 16..4096, got {image_size!r}"
        )
    state = read_state_dict(checkpoint)
    vgg_state = read_state_dict(vggish) if vggish is not None else None
    try:
        conv = convert_state_dict(fmt, state, vgg_state, image_size)
    except FormatMismatch as exc:
        vgg_only = (
            vggish is not None
            and not exc.shapes
            and all(k.startswith("(vggish file)") for k in exc.unmatched)
            and all(k.startswith("audio_encoder.") for k in exc.missing)
        )
        if vgg_only:
            raise InputError(
                vggish, f"not a torchvggish VGGish state dict (vggish-10086976.pth): {exc}"
            ) from None
        fits = [f for f in fitting_formats(state) if f != fmt]
        hint = (
            f"; the file fits --format {' or '.join(fits)}"
            if fits
            else "; it fits none of the known formats "
            f"({', '.join(FORMAT_NAMES)}): is it a published checkpoint?"
        )
        raise InputError(
            checkpoint, f"{exc} (a wrong --format is the usual mistake{hint})"
        ) from None
    except ValueError as exc:
        raise InputError(vggish if "give no VGGish" in str(exc) else checkpoint, str(exc)) from None
    cfg = {
        "model": conv.model_cfg,
        "image_size": conv.image_size,
        "amp": False,
        "channels_last": True,
        "gate_with_classifier": False,
        "imported": {
            "version": IMPORT_VERSION,
            "format": fmt,
            "source": FORMATS[fmt].source,
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": sha256_file(checkpoint),
            "vggish": str(vggish) if vggish is not None else None,
            "vggish_sha256": sha256_file(vggish) if vggish is not None else None,
            "dropped": dict(sorted(conv.dropped.items())),
        },
    }
    cfg = json.loads(json.dumps(cfg))  # plain types only: loadable with weights_only=True
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save({"model": conv.state, "cfg": cfg}, tmp)
    return cfg


def main(argv: list[str] | None = None) -> int:
    """``import_checkpoint.py`` command line; exit 1 with one readable line on bad input."""
    import argparse

    ap = argparse.ArgumentParser(
        description="Convert a published AVS checkpoint into this project's format "
        "({'model': state_dict, 'cfg': {...}}, loadable with torch.load(weights_only=True)).",
    )
    ap.add_argument("--format", required=True, choices=FORMAT_NAMES, help="published layout")
    ap.add_argument("--checkpoint", required=True, type=Path, help="the published .pth file")
    ap.add_argument(
        "--vggish",
        type=Path,
        default=None,
        help="torchvggish vggish-10086976.pth (AVSBench formats only: VGGish is outside them)",
    )
    ap.add_argument("--out", required=True, type=Path, help="the project checkpoint to write")
    ap.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="size the checkpoint was trained at (default: the format's: AVSBench 224, "
        "AVSegFormer 512)",
    )
    args = ap.parse_args(argv)
    try:
        cfg = import_checkpoint(
            args.format, args.checkpoint, args.out, args.vggish, args.image_size
        )
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    dropped = ", ".join(f"{n} ({why})" for why, n in cfg["imported"]["dropped"].items())
    print(
        f"{args.out}: {cfg['model']['name']} {cfg['model']['backbone']} at "
        f"{cfg['image_size']} px from {args.format}" + (f"; dropped {dropped}" if dropped else "")
    )
    return 0
