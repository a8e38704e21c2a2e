"""Read and check AVSBench metadata (S4, MS3 and AVSS) into :class:`Clip` lists.

Every problem names the CSV and the row (1-based, header = row 1) so a user
can fix their copy: missing columns, unknown splits or categories, duplicate
ids, ids that are unsafe as file names.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import InputError, regular_file
from .groups import MS3_OBJECT_GROUP, S4_CATEGORY_GROUP, split_objects
from .layout import AVSS_META, META_FILES, SPLITS, Clip, check_id

#: AVSS ``label`` of the MS3 (AVSBench v1 multi-source) rows: the only rows read.
AVSS_MS3_LABEL = "v1m"


def read_csv_rows(path: str | Path, required: tuple[str, ...]) -> list[tuple[int, dict]]:
    """Rows of a CSV as (row number, dict), after checking the required columns."""
    path = regular_file(path, "metadata file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise InputError(path, f"missing column(s) {missing}; found {header}")
            reader.fieldnames = header
            return [
                (i, {k: (v or "").strip() for k, v in row.items() if k is not None})
                for i, row in enumerate(reader, start=2)
            ]
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise InputError(path, f"malformed CSV ({exc})") from None


def _check_split(value: str, path: Path, row: int) -> str:
    if value not in SPLITS:
        raise InputError(path, f"unknown split {value!r} (expected one of {list(SPLITS)})", row)
    return value


def read_s4(root: str | Path) -> list[Clip]:
    """S4 clips from ``Single-source/s4_meta_data.csv``."""
    path = Path(root) / META_FILES["s4"]
    clips: list[Clip] = []
    seen: dict[str, int] = {}
    for row_no, row in read_csv_rows(path, ("name", "category", "split")):
        name = check_id(row["name"], "video name", path, row_no)
        category = check_id(row["category"], "category", path, row_no)
        if category not in S4_CATEGORY_GROUP:
            raise InputError(path, f"unknown S4 category {category!r}", row_no)
        split = _check_split(row["split"], path, row_no)
        if name in seen:
            raise InputError(
                path, f"duplicate video name {name!r} (first on row {seen[name]})", row_no
            )
        seen[name] = row_no
        clips.append(Clip("s4", split, name, category, frozenset({S4_CATEGORY_GROUP[category]})))
    return clips


def read_avss_objects(path: str | Path) -> dict[str, frozenset[str]]:
    """AVSS ``vid`` -> sound groups of its ``a_obj`` objects, from the ``v1m`` rows only.

    The real ``AVSS/metadata.csv`` also holds ``v1s`` (S4, with typos such as
    ``h orse``) and ``v2`` rows (AVSS-semantic, 70-class vocabulary: ``girl``,
    ``clock``, ...). The published generator reads ``label == 'v1m'`` rows for MS3
    groups, and so do we: other rows are not validated (they may hold anything).
    An object outside the MS3 vocabulary in a ``v1m`` row is an error naming the row.
    """
    path = Path(path)
    by_vid: dict[str, set[str]] = {}
    for row_no, row in read_csv_rows(path, ("vid", "a_obj", "label")):
        if row["label"] != AVSS_MS3_LABEL:
            continue
        groups = by_vid.setdefault(row["vid"], set())
        for obj in split_objects(row["a_obj"]):
            if obj not in MS3_OBJECT_GROUP:
                raise InputError(
                    path,
                    f"unknown sounding object {obj!r} in a_obj {row['a_obj']!r} of a "
                    f"{AVSS_MS3_LABEL} row (MS3 objects: {', '.join(sorted(MS3_OBJECT_GROUP))})",
                    row_no,
                )
            groups.add(MS3_OBJECT_GROUP[obj])
    return {vid: frozenset(groups) for vid, groups in by_vid.items()}


def read_ms3(root: str | Path, avss: str | Path | None = None) -> list[Clip]:
    """MS3 clips from ``Multi-sources/ms3_meta_data.csv``; groups joined from AVSS.

    A clip whose id is not in the AVSS metadata gets no groups (empty set):
    the off-screen planner reports it (policy fail or skip).
    """
    root = Path(root)
    path = root / META_FILES["ms3"]
    avss_path = Path(avss) if avss else root / AVSS_META
    objects = read_avss_objects(avss_path) if avss_path.exists() else {}
    clips: list[Clip] = []
    seen: dict[str, int] = {}
    for row_no, row in read_csv_rows(path, ("video_id", "split")):
        video = check_id(row["video_id"], "video id", path, row_no)
        split = _check_split(row["split"], path, row_no)
        if video in seen:
            raise InputError(
                path, f"duplicate video id {video!r} (first on row {seen[video]})", row_no
            )
        seen[video] = row_no
        clips.append(Clip("ms3", split, video, "", objects.get(video, frozenset())))
    return clips


def read_clips(root: str | Path, dataset: str, avss: str | Path | None = None) -> list[Clip]:
    """Clips of one dataset, in metadata order."""
    if dataset == "s4":
        return read_s4(root)
    if dataset == "ms3":
        return read_ms3(root, avss)
    raise ValueError(f"unknown dataset {dataset!r}")


def check_split_sizes(
    dataset: str,
    clips: Sequence[Clip],
    splits: Sequence[str],
    needs: Mapping[str, str],
    source: str | Path,
) -> list[str]:
    """Warnings for empty splits; InputError for an empty split a later step needs.

    A header-only metadata CSV (or a split with no rows) would otherwise give
    empty manifests, feature files and frame caches, and training or scoring on
    nothing. ``needs`` maps split -> the step that needs clips in it (training:
    train and val; evaluation: the evaluated split); ``source`` is where the
    clips come from (the CSV, or the synthetic config key), named in messages.
    """
    counts = {sp: 0 for sp in splits}
    for clip in clips:
        if clip.split in counts:
            counts[clip.split] += 1
    empty = [sp for sp in splits if counts[sp] == 0]
    what = "holds no rows (header only?)" if not clips else "lists no clips in split"
    needed = [sp for sp in empty if sp in needs]
    if needed:
        steps = "; ".join(f"{needs[sp]} needs {sp!r}" for sp in needed)
        where = what if not clips else f"{what}(s) {needed}"
        raise InputError(
            source,
            f"{dataset}: {where}: {steps}. Add the clips, or leave {dataset} out of "
            "`datasets` (or the split out of `splits`)",
        )
    if not clips:
        return [f"{source}: {dataset}: {what}: its outputs will be empty"] if empty else []
    return [
        f"{source}: {dataset}: {what} {sp!r}: its negatives, features and frame cache will be empty"
        for sp in empty
    ]
