"""The published checkpoint formats: the facts the workflow needs when it builds the DAG.

Snakemake must know, before any job runs, which VGGish file an imported checkpoint needs
and at which size its evaluated split's frame cache is built (a checkpoint is evaluated at the
size it was trained at). Those facts live here, torch-free, so Snakemake's process can read them
without importing torch; :mod:`avsrobust.models.published` builds its key-renaming rules on
them (one definition of each format).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FormatFacts:
    """What a published checkpoint layout is, apart from its keys."""

    name: str
    source: str  # the code that saves it
    image_size: int  # the frame size its released checkpoints were trained at
    external_vggish: bool  # VGGish lives outside the published model (give its weights too)


_AVSBENCH = "OpenNLPLab/AVSBench avs_scripts/avs_s4|avs_ms3 Pred_endecoder"
_SEG = "vvvb-github/AVSegFormer AVSegFormer"
_ROBUST = "jiali-home/AVSBench-Robust training_evaluation/code/AVSegFormer AVSegFormer_robust"

#: name -> facts. AVSBench trains at 224 px; AVSegFormer's released checkpoints at 512 px (its
#: dataloaders resize to 512 since commit b2f40e2, whatever its configs say).
PUBLISHED_FORMATS: dict[str, FormatFacts] = {
    f.name: f
    for f in (
        FormatFacts("avsbench-tpavi-r50", f"{_AVSBENCH} (ResNet-50)", 224, True),
        FormatFacts("avsbench-tpavi-pvt2", f"{_AVSBENCH} (PVT-v2-b5)", 224, True),
        FormatFacts("avsegformer-r50", f"{_SEG} (ResNet-50)", 512, False),
        FormatFacts("avsegformer-pvt2", f"{_SEG} (PVT-v2-b5)", 512, False),
        FormatFacts("avsbench-robust-avsegformer", _ROBUST, 512, False),
    )
}
FORMAT_NAMES = tuple(PUBLISHED_FORMATS)
