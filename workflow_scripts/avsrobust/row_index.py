"""The row-index TSV: which video each row of a ``.npy`` array holds.

Three arrays carry one: the frame cache (``index.tsv``), the audio features
(``{condition}.index.tsv``) and saved predictions (``index.tsv``). Each has its own
columns (below); all share one format, written by :func:`index_text` and read by
:func:`read_index`: tab-separated, a header, then one line per array row whose first
column ``row`` counts 0, 1, 2, ... (a gap or a shuffled file is an error, so a row
can never be joined to the wrong video).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from .atomic import atomic_write_text
from .errors import InputError

#: ``frame_cache/{dataset}/{split}/index.tsv``
FRAME_CACHE_COLUMNS = ("row", "video", "category", "split")
#: ``features/{dataset}/{split}/{condition}.index.tsv`` (``path``: the WAV the row came from)
FEATURE_COLUMNS = ("row", "video", "category", "path")
#: ``predictions/{dataset}/{experiment}/{condition}/index.tsv``
PREDICTION_COLUMNS = ("row", "video", "category")


def index_text(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """TSV text of ``rows`` (the values after ``row``, which is numbered here)."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(columns)
    for i, values in enumerate(rows):
        values = list(values)
        if len(values) != len(columns) - 1:
            raise ValueError(f"index row {i}: {len(values)} values for columns {columns[1:]}")
        writer.writerow([i, *values])
    return buf.getvalue()


def write_index(path: str | Path, columns: Sequence[str], rows: Iterable[Sequence[object]]):
    """Write a row index atomically."""
    atomic_write_text(path, index_text(columns, rows))


def read_index(
    path: str | Path, columns: Sequence[str], missing: str, *, unique_videos: bool = False
) -> list[dict[str, str]]:
    """Rows of a row index with exactly ``columns``, checked: consecutive 0-based ``row``
    numbers and (``unique_videos``) no video twice. A missing file, other columns, a gap
    or a duplicate raise InputError naming the file (and the line)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, missing)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if tuple(reader.fieldnames or ()) != tuple(columns):
            raise InputError(path, f"expected columns {list(columns)}, got {reader.fieldnames}")
        rows = list(reader)
    seen: set[str] = set()
    for i, row in enumerate(rows):
        if row["row"] != str(i):
            raise InputError(path, f"row number {row['row']!r}, expected {i}", i + 2)
        if unique_videos:
            if row["video"] in seen:
                raise InputError(path, f"duplicate video {row['video']!r}", i + 2)
            seen.add(row["video"])
    return rows
