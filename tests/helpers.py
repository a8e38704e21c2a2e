"""Helpers shared by tests (importable as ``helpers``)."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np

from avsrobust.wav import AudioFormat

REPO = Path(__file__).resolve().parents[1]
PYTHON_BIN = REPO / ".venv" / "bin"


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def tone(fmt: AudioFormat, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(fmt.frames) / fmt.sample_rate
    mono = amp * np.sin(2 * np.pi * freq * t)
    return np.repeat(mono[:, None], fmt.channels, axis=1)


# The workflow's result layout, as the tests lay out their temporary trees (the library
# takes explicit paths; only the rules in rules/*.smk define where results live).
def cache_dir(results: Path, dataset: str, split: str) -> Path:
    return Path(results) / "frame_cache" / dataset / split


def feature_paths(results: Path, dataset: str, split: str, condition: str) -> tuple[Path, Path]:
    base = Path(results) / "features" / dataset / split
    return base / f"{condition}.npy", base / f"{condition}.index.tsv"


def build_dataset(cfg: dict, dataset: str, split: str, results: Path, conditions=None):
    """An AVSDataset over a test tree laid out like the workflow's results."""
    from avsrobust.data import AVSDataset

    if conditions is None:
        conditions = ("positive", *cfg.get("negatives", ()))
    files = {c: feature_paths(results, dataset, split, c) for c in conditions}
    return AVSDataset(cache_dir(results, dataset, split), files, conditions)


#: Key names, shapes and dtypes of the state dicts the published AVS codebases save
#: (``data/published_state_dicts.json.gz``, recorded by ``benchmarks/published_parity.py
#: --facts``): format -> ``checkpoint`` (and ``vggish`` for the AVSBench formats).
PUBLISHED_FACTS = json.loads(
    gzip.decompress((Path(__file__).parent / "data" / "published_state_dicts.json.gz").read_bytes())
)["formats"]


def published_state(fmt: str, part: str = "checkpoint", scale: float = 1.0) -> dict:
    """A state dict in a published layout: tensor ``i`` of the recorded state dict = the
    constant ``(i + 1) * scale`` (stride 0: a full-size checkpoint in a few kilobytes; the
    VGGish file's count on from 10000, so no two tensors of a test share a value). With a
    ``scale`` below 1 (forward passes), BatchNorm variances are 1."""
    import torch

    state = {}
    first = 10_000 if part == "vggish" else 0
    for i, (key, shape, dtype) in enumerate(PUBLISHED_FACTS[fmt][part], start=first):
        value = (i + 1) * scale if key.endswith(("weight", "bias", "mean")) or scale == 1 else 1.0
        t = torch.full((), value if dtype != "int64" else i + 1, dtype=getattr(torch, dtype))
        state[key] = t.expand(shape)
    return state
