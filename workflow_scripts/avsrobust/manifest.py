"""Per-split manifests: what was generated, where, its SHA-256 and its donor.

A manifest is the receipt of a split: two runs agree byte for byte exactly
when their manifests are identical, which is how regeneration is checked.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .atomic import atomic_write_text
from .hashing import sha256_file
from .layout import DONOR_TYPES

MANIFEST_COLUMNS = ("negtype", "video", "category", "path", "sha256", "donor")


def parse_negative_path(path: str | Path) -> tuple[str, str, str]:
    """(negtype, video, category) of ``audio_wav_{negtype}/{split}/[{category}/]{video}.wav``."""
    parts = Path(path).parts
    for i, part in enumerate(parts):
        if part.startswith("audio_wav_"):
            rest = parts[i + 2 :]
            category = rest[0] if len(rest) == 2 else ""
            return part[len("audio_wav_") :], Path(rest[-1]).stem, category
    raise ValueError(f"{path}: not a negative-audio path (no audio_wav_<type> folder)")


def manifest_text(wavs: list[str | Path], donors: dict[str, str] | None = None) -> str:
    """TSV text for ``wavs`` (sorted by negtype, then input order)."""
    donors = donors or {}
    rows = []
    for wav in wavs:
        negtype, video, category = parse_negative_path(wav)
        donor = donors.get(video, "") if negtype in DONOR_TYPES else ""
        rows.append((negtype, video, category, str(wav), sha256_file(wav), donor))
    rows.sort(key=lambda r: r[0])  # stable: keeps metadata order within a type
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    writer.writerows(rows)
    return buf.getvalue()


def write_manifest(path: str | Path, wavs: list[str | Path], donors: dict[str, str] | None = None):
    atomic_write_text(path, manifest_text(wavs, donors))


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))
