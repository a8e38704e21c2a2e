"""Choose one off-screen donor per clip, as one reviewable table per dataset.

Rules (domain.md section 3): the donor comes from the same split, and none of
its sound groups may be the target's own groups or the groups excluded for
them (S4 by category, MS3 by the AVSS ``a_obj`` objects). The choice for a
clip is drawn from its own random stream, so it does not depend on the order
of the table or on which other clips exist in other splits.

A clip that has no legal donor in its split (on the real MS3 metadata, 11 of
424: their objects cover every group that is not excluded) is handled by
``offscreen.on_missing``: ``fail`` stops and lists them, ``skip`` leaves them
out of the off-screen condition, and ``fallback`` does what the published
generator does, a random other clip of the same split as donor, flagged
``fallback = 1`` in the plan. A clip without AVSS groups (its id is missing
from the metadata) is a metadata error under ``fail`` and ``fallback`` alike.

An optional ``veto(target, donor)`` avoids further donors where it can. Real AVSBench
gets none (the published rules above, nothing more); the embedded synthetic benchmark
knows which silent objects each clip shows and vetoes donors that sound like one of them
(:func:`avsrobust.synthetic.visible_object_veto`): the empty target would be wrong. The
veto only redraws: a clip whose every legal donor is vetoed (a split of two or three
clips) keeps the donor the published rules give it, so it never makes a clip unplannable.
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

POLICIES = ("fail", "skip", "fallback")
PLAN_COLUMNS = (
    "split",
    "video",
    "category",
    "groups",
    "donor",
    "donor_category",
    "donor_groups",
    "fallback",
)

#: ``veto(target, donor)`` -> True when ``donor`` may not give ``target`` its off-screen sound.
Veto = Callable[[Clip, Clip], bool]

#: problems() reason of a clip whose id has no AVSS groups (not a donor shortage).
NO_GROUPS = "no sounding-object groups (id missing from AVSS metadata?)"


@dataclass(frozen=True)
class PlanRow:
    target: Clip
    donor: Clip
    #: True when no legal donor exists and the ``fallback`` policy drew any other clip.
    fallback: bool = False


class PlanError(InputError):
    """Clips that cannot get an off-screen donor under policy ``fail``."""


def _fmt_groups(groups: frozenset[str]) -> str:
    return "+".join(sorted(groups))


def problems(clips: list[Clip]) -> dict[str, str]:
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
                out[clip.video] = NO_GROUPS
                continue
            if clip.groups not in cache:
                bad = forbidden_donor_groups(clip.dataset, clip.groups)
                cache[clip.groups] = any(d.groups and not (d.groups & bad) for d in split_clips)
            if not cache[clip.groups]:
                out[clip.video] = (
                    f"no clip in split {clip.split!r} has sound groups disjoint from "
                    f"{_fmt_groups(forbidden_donor_groups(clip.dataset, clip.groups))}"
                )
    return out


def _check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"unknown offscreen policy {policy!r}; use one of {list(POLICIES)}")


def plannable(clips: list[Clip], policy: str) -> list[Clip]:
    """Clips that get an off-screen negative: all (fail, fallback) or those without problems."""
    _check_policy(policy)
    if policy != "skip":
        return list(clips)
    bad = problems(clips)
    return [clip for clip in clips if clip.video not in bad]


def _plan_error(where: str, issues: dict[str, str], hint: str) -> PlanError:
    listing = "; ".join(f"{v}: {why}" for v, why in sorted(issues.items())[:20])
    more = "" if len(issues) <= 20 else f" (and {len(issues) - 20} more)"
    return PlanError(
        where, f"{len(issues)} clip(s) cannot get an off-screen donor: {listing}{more}. {hint}"
    )


def plan_donors(
    clips: list[Clip],
    seed: int,
    policy: str = "fail",
    where: str = "offscreen plan",
    veto: Veto | None = None,
) -> tuple[list[PlanRow], dict[str, str]]:
    """Pick a donor for each clip; return (rows, video -> reason for each problem clip).

    Under ``fail`` any problem raises :class:`PlanError` listing every affected
    clip; under ``skip`` those clips are left out; under ``fallback`` each clip
    without a legal donor gets a random other clip of its split, drawn from its
    own stream (``..., "offscreen", "fallback"``), and its row is flagged. The
    reasons are returned under ``skip`` and ``fallback`` (for the log). ``veto``: see
    the module docstring (None: the published rules only; a fallback donor ignores it).
    """
    _check_policy(policy)
    issues = problems(clips)
    if issues and policy == "fail":
        raise _plan_error(
            where,
            issues,
            "Fix the metadata, or set offscreen.on_missing: skip (leave them out) or fallback "
            "(a random other clip of the split, as the published generator does)",
        )
    by_split: dict[str, list[Clip]] = defaultdict(list)
    for clip in clips:
        by_split[clip.split].append(clip)
    if policy == "fallback":
        # A fallback stands in for a missing legal donor, not for missing metadata.
        unknown = {v: why for v, why in issues.items() if why == NO_GROUPS}
        alone = {
            c.video: f"no other clip in split {c.split!r} to fall back on"
            for c in clips
            if c.video in issues and len(by_split[c.split]) < 2
        }
        if unknown or alone:
            raise _plan_error(
                where,
                {**unknown, **alone},
                "A fallback donor needs the clip's AVSS groups and another clip in its split: "
                "fix the metadata or set offscreen.on_missing: skip",
            )
    pools: dict[tuple[str, frozenset[str]], list[Clip]] = {}
    rows: list[PlanRow] = []
    for clip in clips:
        if clip.video in issues:
            if policy == "fallback":
                others = sorted(
                    (d for d in by_split[clip.split] if d.video != clip.video),
                    key=lambda d: d.video,
                )
                rng = item_rng(seed, clip.dataset, clip.split, clip.video, "offscreen", "fallback")
                rows.append(PlanRow(clip, others[int(rng.integers(len(others)))], fallback=True))
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
        # a vetoed draw is redrawn from the same stream while an unvetoed legal donor
        # exists: every clip whose first draw passes keeps the published rules' donor
        if veto is not None and veto(clip, donor) and not all(veto(clip, d) for d in candidates):
            while veto(clip, donor):
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
                int(r.fallback),
            ]
        )
    return buf.getvalue()


def write_plan(path: str | Path, rows: list[PlanRow]) -> None:
    atomic_write_text(path, format_plan(rows))


def read_fallbacks(path: str | Path) -> set[tuple[str, str]]:
    """(split, video) of every clip whose donor is a fallback (column ``fallback`` = 1)."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if "fallback" not in (reader.fieldnames or []):
            raise InputError(path, "missing column(s) ['fallback']")
        return {(r["split"], r["video"]) for r in reader if r["fallback"] == "1"}


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
