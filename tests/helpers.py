"""Helpers shared by tests (importable as ``helpers``)."""

from __future__ import annotations

import csv
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
