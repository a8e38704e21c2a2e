"""Visual backbones of the published AVS models: ResNet-50 (torchvision) and PVT-v2-b5 (timm).

Both return the four stage outputs (strides 4, 8, 16, 32) that AVSBench's TPAVI and
AVSegFormer consume, and name their parameters as the library does, so the weight files users
bring load key for key:

* ``resnet50``: torchvision's ResNet-50 without ``fc`` (``resnet50-19c8e357.pth``; the
  published ``B2_ResNet`` is the same network, its ``layer3_1``/``layer4_1`` being torchvision's
  ``layer3``/``layer4``). Stage widths 256, 512, 1024, 2048.
* ``pvt_v2_b5``: timm's ``PyramidVisionTransformerV2`` with the ``pvt_v2_b5`` arguments and no
  classifier head. timm names parameters ``patch_embed``/``stages.{i}.downsample``/
  ``stages.{i}.blocks``/``stages.{i}.norm`` where the original PVT release (``pvt_v2_b5.pth``,
  and AVSBench's and AVSegFormer's copies of its code) says ``patch_embed{i+1}``/``block{i+1}``/
  ``norm{i+1}``: :func:`avsrobust.weights.pvt_original_to_timm` maps one to the other. Stage
  widths 64, 128, 320, 512. The constructor is called directly (not ``timm.create_model``) so
  that nothing registered under the same name elsewhere can stand in for it.
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision
from torch import Tensor, nn

#: Backbone name -> output channels of its four stages.
BACKBONE_CHANNELS: dict[str, tuple[int, int, int, int]] = {
    "resnet50": (256, 512, 1024, 2048),
    "pvt_v2_b5": (64, 128, 320, 512),
}
BACKBONES = tuple(BACKBONE_CHANNELS)
#: Model keys naming the pretrained files (local paths, "" = random init; optional sha256) of
#: the models built on these backbones and VGGish.
PRETRAINED_DEFAULTS: dict[str, Any] = {
    "resnet50_weights": "",
    "resnet50_sha256": None,
    "pvt_v2_weights": "",
    "pvt_v2_sha256": None,
    "vggish_weights": "",
    "vggish_sha256": None,
}

#: timm ``PyramidVisionTransformerV2`` arguments of PVT-v2-b5 (as the original release: MLP
#: ratio 4, qkv bias, LayerNorm eps 1e-6 in blocks; stochastic depth 0.1 as AVSBench and
#: AVSegFormer train it).
PVT_V2_B5_ARGS: dict[str, Any] = {
    "depths": (3, 6, 40, 3),
    "embed_dims": (64, 128, 320, 512),
    "num_heads": (1, 2, 5, 8),
    "mlp_ratios": (4, 4, 4, 4),
    "sr_ratios": (8, 4, 2, 1),
    "qkv_bias": True,
    "drop_path_rate": 0.1,
}


class ResNet50Features(nn.Module):
    """torchvision ResNet-50 stem and stages (no pooling, no ``fc``) -> four feature maps."""

    def __init__(self) -> None:
        super().__init__()
        net = torchvision.models.resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        self.channels = BACKBONE_CHANNELS["resnet50"]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats


def _pvt_class() -> type[nn.Module]:
    from timm.models.pvt_v2 import PyramidVisionTransformerV2

    return PyramidVisionTransformerV2


class PVTv2Features(nn.Module):
    """timm PVT-v2-b5 without its head -> the four stage outputs ``[N, C_i, H/s_i, W/s_i]``."""

    def __init__(self) -> None:
        super().__init__()
        net = _pvt_class()(num_classes=0, **PVT_V2_B5_ARGS)
        # keep the parameter names of timm's model: patch_embed.*, stages.{i}.*
        self.patch_embed = net.patch_embed
        self.stages = net.stages
        self.channels = BACKBONE_CHANNELS["pvt_v2_b5"]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.patch_embed(x)  # [N, H/4, W/4, C] (timm's stages take NHWC first)
        feats = []
        for stage in self.stages:
            x = stage(x)  # [N, C, h, w]
            feats.append(x)
        return feats


def build_backbone(name: str) -> nn.Module:
    """The backbone called ``name`` (one of :data:`BACKBONES`), randomly initialised."""
    if name == "resnet50":
        return ResNet50Features()
    if name == "pvt_v2_b5":
        return PVTv2Features()
    raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")


def stage_features(backbone: nn.Module, frames: Tensor, frozen: bool) -> list[Tensor]:
    """The backbone's four maps; without an autograd graph while ``frozen`` (less memory, and
    no gradient reaches it, as with the published ``requires_grad = False``)."""
    if frozen:
        with torch.no_grad():
            return backbone(frames)
    return backbone(frames)
