"""Choose one off-screen donor per clip, as one reviewable table per dataset.

Rules (domain.md section 3): the donor comes from the same split, and none of
its sound groups may be the target's own groups or the groups excluded for
them (S4 by category, MS3 by the AVSS ``a_obj`` objects). The choice for a
clip is drawn from its own random stream, so it does not depend on the order
of the table or on which other clips exist in other splits.

An optional ``veto(target, donor)`` removes further donors. Real AVSBench gets none
(the published rules above, nothing more); the embedded synthetic benchmark knows
which silent objects each clip shows and vetoes donors that sound like one of them
(:func:`avsrobust.synthetic.visible_object_veto`): the empty target would be wrong.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_write_text
from .errors import InputError
from .groups import forbidden_donor_groups
from .layout import Clip
from .seeding import item_rng

POLICIES = ("fail", "skip")
#: ``veto(target, donor)`` -> True when ``donor`` may not give ``target`` its off-screen sound.
Veto = Callable[[Clip, Clip], bool]
PLAN_COLUMNS = ("split", "video", "category", "groups", "donor", "donor_category", "donor_groups")


@dataclass(frozen=True)
class PlanRow:
    target: Clip
    donor: Clip


class PlanError(InputError):
    """Clips that cannot get an off-screen donor under policy ``fail``."""


def _fmt_groups(groups: frozenset[str]) -> str:
    return "+".join(sorted(groups))


def problems(clips: list[Clip], veto: Veto | None = None) -> dict[str, str]:
    """video -> why it cannot get a donor (unmatched groups, or no valid donor)."""
    by_split: dict[str, list[Clip]] = defaultdict(list)
    for clip in clips:
        by_split[clip.split].append(clip)
    out: dict[str, str] = {}
    for split_clips in by_split.values():
        # Cache per distinct group set: thousands of clips share few group sets.
        cache: dict[frozenset[str], bool] = {}
        for clip in split_clips:
            if not clip.groups:
                out[clip.video] = "no sounding-object groups (id missing from AVSS metadata?)"
                continue
            if clip.groups not in cache:
                bad = forbidden_donor_groups(clip.dataset, clip.groups)
                cache[clip.groups] = any(d.groups and not (d.groups & bad) for d in split_clips)
            ok = cache[clip.groups]
            if ok and veto is not None:
                bad = forbidden_donor_groups(clip.dataset, clip.groups)
                ok = any(
                    d.groups and not (d.groups & bad) and not veto(clip, d) for d in split_clips
                )
            if not ok:
                out[clip.video] = (
                    f"no clip in split {clip.split!r} has sound groups disjoint from "
                    f"{_fmt_groups(forbidden_donor_groups(clip.dataset, clip.groups))}"
                )
    return out


def plannable(clips: list[Clip], policy: str, veto: Veto | None = None) -> list[Clip]:
    """Clips that get an off-screen negative: all (policy fail) or those without problems."""
    if policy not in POLICIES:
        raise ValueError(f"unknown offscreen policy {policy!r}; use one of {list(POLICIES)}")
    if policy == "fail":
        return list(clips)
    bad = problems(clips, veto)
    return [clip for clip in clips if clip.video not in bad]


def plan_donors(
    clips: list[Clip],
    seed: int,
    policy: str = "fail",
    where: str = "offscreen plan",
    veto: Veto | None = None,
) -> tuple[list[PlanRow], dict[str, str]]:
    """Pick a donor for each clip; return (rows, skipped video -> reason).

    Under ``fail`` any problem raises :class:`PlanError` listing every affected
    clip; under ``skip`` those clips are left out and reported. ``veto``: see the
    module docstring (None: the published rules only).
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown offscreen policy {policy!r}; use one of {list(POLICIES)}")
    issues = problems(clips, veto)
    if issues and policy == "fail":
        listing = "; ".join(f"{v}: {why}" for v, why in sorted(issues.items())[:20])
        more = "" if len(issues) <= 20 else f" (and {len(issues) - 20} more)"
        raise PlanError(
            where,
            f"{len(issues)} clip(s) cannot get an off-screen donor: {listing}{more}. "
            "Fix the metadata or set offscreen.on_missing: skip",
        )
    by_split: dict[str, list[Clip]] = defaultdict(list)
    for clip in clips:
        by_split[clip.split].append(clip)
    pools: dict[tuple[str, frozenset[str]], list[Clip]] = {}
    rows: list[PlanRow] = []
    for clip in clips:
        if clip.video in issues:
            continue
        pool_key = (clip.split, clip.groups)
        if pool_key not in pools:
            bad = forbidden_donor_groups(clip.dataset, clip.groups)
            pools[pool_key] = sorted(
                (d for d in by_split[clip.split] if d.groups and not (d.groups & bad)),
                key=lambda d: d.video,
            )
        candidates = pools[pool_key]
        rng = item_rng(seed, clip.dataset, clip.split, clip.video, "offscreen", "donor")
        donor = candidates[int(rng.integers(len(candidates)))]
        # a vetoed draw is redrawn from the same stream: every other clip keeps the
        # donor the published rules give it (problems() made sure one passes)
        while veto is not None and veto(clip, donor):
            donor = candidates[int(rng.integers(len(candidates)))]
        rows.append(PlanRow(clip, donor))
    return rows, issues


def format_plan(rows: list[PlanRow]) -> str:
    """The plan as TSV text (header + one row per target, input order)."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(PLAN_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                r.target.split,
                r.target.video,
                r.target.category,
                _fmt_groups(r.target.groups),
                r.donor.video,
                r.donor.category,
                _fmt_groups(r.donor.groups),
            ]
        )
    return buf.getvalue()


def write_plan(path: str | Path, rows: list[PlanRow]) -> None:
    atomic_write_text(path, format_plan(rows))


def read_plan(path: str | Path) -> dict[tuple[str, str], tuple[str, str]]:
    """(split, video) -> (donor video, donor category) from a plan TSV."""
    path = Path(path)
    out: dict[tuple[str, str], tuple[str, str]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        missing = [c for c in PLAN_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(path, f"missing column(s) {missing}")
        for row in reader:
            out[(row["split"], row["video"])] = (row["donor"], row["donor_category"])
    return out
