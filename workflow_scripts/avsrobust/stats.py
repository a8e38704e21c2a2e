"""Statistics of scores, without torch: mean and spread over runs, G-metrics, JSON floats.

The summary job (tables) and the evaluation job both need these; keeping them out of
:mod:`avsrobust.metrics` (torch) lets the table job run in a light environment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: Version of the metric definitions (domain.md section 5), written into every metrics JSON.
#: 2: ``fscore`` is the published (per-batch) F at 4 videos per batch; v1 reported the
#: dataset variant as ``fscore`` and the published one as ``fscore_avsbench``.
METRICS_VERSION = "2"


def json_float(x: float | None) -> float | None:
    """``None`` for a missing or NaN value (JSON ``null``), else the float."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """(mean, sample std) of finite values; ``None`` for an empty or undefined result."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals or len(vals) != len(values):
        return None, None
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, None
    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1)
    return m, math.sqrt(var)


def _check_unit(name: str, x: float) -> float:
    x = float(x)
    if not (0.0 <= x <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {x}")
    return x


def g_metrics(
    miou_pos: float, f_pos: float | None, fpr_by_type: Mapping[str, float]
) -> dict[str, Any]:
    """G-mIoU and G-F from positive metrics and the FPR of each negative type.

    ``FPR_neg = mean(fpr_by_type.values())``; ``g_miou = sqrt(miou_pos * (1 - FPR_neg))``;
    ``g_f = sqrt(f_pos * (1 - FPR_neg))`` (``None`` when ``f_pos`` is ``None``);
    ``per_type[t]`` uses FPR of type t alone.
    """
    if not fpr_by_type:
        raise ValueError("fpr_by_type must name at least one negative type")
    m = _check_unit("miou_pos", miou_pos)
    f = None if f_pos is None else _check_unit("f_pos", f_pos)
    fprs = {str(t): _check_unit(f"fpr[{t}]", v) for t, v in fpr_by_type.items()}

    def pair(fpr: float) -> dict[str, Any]:
        keep = 1.0 - fpr
        return {
            "fpr": fpr,
            "g_miou": math.sqrt(m * keep),
            "g_f": None if f is None else math.sqrt(f * keep),
        }

    fpr_neg = sum(fprs.values()) / len(fprs)
    out = pair(fpr_neg)
    return {
        "g_miou": out["g_miou"],
        "g_f": out["g_f"],
        "fpr_negative": fpr_neg,
        "negative_types": sorted(fprs),
        "per_type": {t: pair(v) for t, v in sorted(fprs.items())},
    }
