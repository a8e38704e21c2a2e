"""Loading the pretrained weight files users bring (ResNet-50, VGGish).

The build machines cannot download anything, so the files are local paths given
in the config. Every problem with such a file ends in one
:class:`~avsrobust.errors.InputError` naming the file and what is wrong (missing,
not a torch file, wrong checksum, wrong keys, wrong shapes), instead of a
``RuntimeError`` from deep inside ``load_state_dict``.

Files are always read with ``torch.load(..., weights_only=True)``: a weight file
is data, and a pickled Python object in it must be refused, never executed.

Accepted formats
----------------
* ResNet-50: the torchvision state dict (``resnet50-19c8e357.pth``), keys like
  ``conv1.weight``, ``layer1.0.conv1.weight``, ``fc.weight``. The ``fc.*``
  (ImageNet classifier) keys are ignored on both sides: segmentation does not
  use them. BatchNorm ``num_batches_tracked`` buffers may be absent (the
  original 2017 file predates them); they are then left as they are.
* PVT-v2-b5: ``pvt_v2_b5.pth`` in the original PVT release layout (``patch_embed1.proj.weight``,
  ``block3.17.mlp.dwconv.dwconv.weight``, ``norm4.weight``, ``head.weight``), renamed to timm's
  layout by :func:`pvt_original_to_timm`; a file already in timm's layout loads as it is. The
  ``head.*`` (ImageNet classifier) keys are ignored.
* VGGish: the torchvggish state dict (``vggish-10086976.pth``), keys
  ``features.{0,3,6,8,11,13}.{weight,bias}`` and ``embeddings.{0,2,4}.{weight,bias}``.
  The PCA parameters live in a separate torchvggish file and are not used
  (AVSBench does not post-process the embeddings).

A file holding ``{"state_dict": {...}}`` or ``{"model": {...}}``, or keys all
prefixed ``module.`` (saved from DataParallel), is unwrapped first.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from .errors import InputError
from .hashing import sha256_file

_SHOW = 5  # how many offending keys an error message lists


def _check_sha256(path: Path, expected: str) -> None:
    """Compare a file's digest with ``expected`` (full digest or a >= 8-hex prefix).

    A prefix is accepted because torchvision-style file names carry one
    (``resnet50-19c8e357.pth``) and that is often all a user has.
    """
    want = expected.strip().lower()
    if len(want) < 8 or len(want) > 64 or any(c not in "0123456789abcdef" for c in want):
        raise InputError(path, f"sha256 {expected!r} is not a hex digest (8 to 64 hex digits)")
    actual = sha256_file(path)
    if not actual.startswith(want):
        raise InputError(path, f"sha256 mismatch: expected {want}, actual {actual}")


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Turn a loaded object into a flat ``{name: tensor}`` dict, or explain why not."""
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and len(obj) <= 2:
                obj = inner
                break
    if not isinstance(obj, Mapping):
        raise InputError(
            path, f"expected a state dict (name -> tensor), found {type(obj).__name__}"
        )
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise InputError(
                path, f"entry {key!r} is a {type(value).__name__}, not a tensor: not a state dict"
            )
        state[key] = value
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def read_state_dict(path: str | Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict file safely (``weights_only=True``), checking the digest first.

    The digest is checked before unpickling so that a wrong or corrupted file is
    reported as such rather than as a confusing unpickling error.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            path, "weight file not found" + (" (is a directory)" if path.exists() else "")
        )
    if sha256:
        _check_sha256(path, sha256)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            path,
            "not a plain tensor file: it holds Python objects that weights_only=True loading "
            f"refuses to unpickle ({first})",
        ) from exc
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a torch file"
        raise InputError(path, f"not a readable torch file ({type(exc).__name__}: {exc})") from exc
    return _unwrap(obj, path)


def _few(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_SHOW])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _SHOW else "")


def load_into(
    module: nn.Module,
    path: str | Path,
    sha256: str | None = None,
    ignore_prefixes: tuple[str, ...] = (),
    state: Mapping[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Load a state dict file into ``module`` with strict, readable key/shape checks.

    Keys starting with any of ``ignore_prefixes`` are dropped from both the file
    and the module before comparing; ``num_batches_tracked`` buffers may be
    missing from the file. ``state``: the file's state dict, already read (and
    renamed) by the caller. Returns ``module`` (loaded in place).
    """
    path = Path(path)
    if state is None:
        state = read_state_dict(path, sha256)

    def kept(key: str) -> bool:
        return not key.startswith(ignore_prefixes) if ignore_prefixes else True

    file_state = {k: v for k, v in state.items() if kept(k)}
    model_state = {k: v for k, v in module.state_dict().items() if kept(k)}
    missing = [
        k for k in model_state if k not in file_state and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in file_state if k not in model_state]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_few(unexpected)}")
        raise InputError(path, "; ".join(parts) + f" (expected {type(module).__name__} layout)")
    for key, value in file_state.items():
        want = tuple(model_state[key].shape)
        if tuple(value.shape) != want:
            raise InputError(
                path,
                f"shape mismatch for {key}: file has {tuple(value.shape)}, model expects {want}",
            )
    with torch.no_grad():
        for key, value in file_state.items():
            model_state[key].copy_(value.to(model_state[key].dtype))
    return module


def load_resnet50(
    model_backbone: nn.Module, path: str | Path | None, sha256: str | None = None
) -> nn.Module:
    """Load a torchvision ResNet-50 state dict (``fc.*`` ignored) into a ResNet backbone.

    An empty ``path`` leaves the random initialisation (useful for tests and
    for training from scratch), mirroring the config convention ``""`` = none.
    """
    if path is None or path == "":
        return model_backbone
    return load_into(model_backbone, path, sha256, ignore_prefixes=("fc.",))


def load_vggish(
    audio_encoder: nn.Module, path: str | Path | None, sha256: str | None = None
) -> nn.Module:
    """Load a torchvggish ``vggish-10086976.pth`` state dict into a VGGish module.

    The module must use the torchvggish layout (``features`` / ``embeddings``
    Sequentials, see :class:`avsrobust.models.VGGish`). Empty ``path`` = random init.
    """
    if path is None or path == "":
        return audio_encoder
    return load_into(audio_encoder, path, sha256)


_PVT_ORIGINAL = re.compile(r"^(patch_embed|block|norm)([1-4])(\.|$)")


def pvt_original_to_timm(key: str) -> str:
    """A PVT-v2 key of the original release (and of AVSBench's/AVSegFormer's copies) in timm's
    layout: ``patch_embed1`` -> ``patch_embed``, ``patch_embed{k}`` -> ``stages.{k-1}.downsample``,
    ``block{k}.{j}`` -> ``stages.{k-1}.blocks.{j}``, ``norm{k}`` -> ``stages.{k-1}.norm``,
    ``mlp.dwconv.dwconv`` -> ``mlp.dwconv``. Other keys (``head.*``) come back unchanged.
    """
    m = _PVT_ORIGINAL.match(key)
    if m is None:
        return key
    kind, stage, rest = m.group(1), int(m.group(2)), key[m.end(2) :]
    if kind == "patch_embed":
        new = "patch_embed" if stage == 1 else f"stages.{stage - 1}.downsample"
    elif kind == "block":
        new = f"stages.{stage - 1}.blocks"
    else:
        new = f"stages.{stage - 1}.norm"
    return (new + rest).replace("mlp.dwconv.dwconv.", "mlp.dwconv.")


_PVT_TIMM = re.compile(r"^(patch_embed|stages\.([0-3])\.(downsample|blocks|norm))(\.|$)")


def pvt_timm_to_original(key: str) -> str:
    """Inverse of :func:`pvt_original_to_timm` (tests write original-layout files with it)."""
    m = _PVT_TIMM.match(key)
    if m is None:
        return key
    rest = key[m.end(1) :]
    if m.group(1) == "patch_embed":
        new = "patch_embed1"
    else:
        stage, part = int(m.group(2)) + 1, m.group(3)
        new = {"downsample": "patch_embed", "blocks": "block", "norm": "norm"}[part] + str(stage)
    return (new + rest).replace("mlp.dwconv.", "mlp.dwconv.dwconv.")


def load_pvt_v2(
    backbone: nn.Module, path: str | Path | None, sha256: str | None = None
) -> nn.Module:
    """Load ``pvt_v2_b5.pth`` (original release layout, or timm's) into a PVT backbone.

    ``head.*`` (the ImageNet classifier) is ignored; every other key must match after
    renaming. Empty ``path`` = random init.
    """
    if path is None or path == "":
        return backbone
    state = read_state_dict(path, sha256)
    if "patch_embed1.proj.weight" in state:
        state = {pvt_original_to_timm(k): v for k, v in state.items()}
    return load_into(backbone, path, sha256, ignore_prefixes=("head.",), state=state)
