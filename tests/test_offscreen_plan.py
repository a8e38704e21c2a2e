"""Off-screen donor planning: group rules, same split, policies, determinism."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avsrobust.groups import (
    MS3_OBJECT_GROUP,
    S4_CATEGORIES,
    S4_CATEGORY_GROUP,
    forbidden_donor_groups,
)
from avsrobust.layout import Clip
from avsrobust.offscreen_plan import (
    PlanError,
    format_plan,
    plan_donors,
    plannable,
    read_fallbacks,
    read_plan,
)


def s4(video, category, split="train"):
    return Clip("s4", split, video, category, frozenset({S4_CATEGORY_GROUP[category]}))


def ms3(video, objects, split="train"):
    return Clip("ms3", split, video, "", frozenset(MS3_OBJECT_GROUP[o] for o in objects))


def test_published_exclusions():
    assert forbidden_donor_groups("s4", frozenset({"music"})) == {"music", "human"}
    assert forbidden_donor_groups("s4", frozenset({"device"})) == {"device"}
    assert forbidden_donor_groups("ms3", frozenset({"device"})) == {"device", "music"}
    assert forbidden_donor_groups("ms3", frozenset({"animal", "human"})) == {
        "animal",
        "human",
        "music",
    }


clip_strategy = st.lists(
    st.tuples(st.sampled_from(S4_CATEGORIES), st.sampled_from(["train", "val", "test"])),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(specs=clip_strategy, seed=st.integers(0, 2**32))
def test_every_planned_donor_obeys_the_rules(specs, seed):
    clips = [s4(f"v{i:03d}", cat, split) for i, (cat, split) in enumerate(specs)]
    rows, skipped = plan_donors(clips, seed, policy="skip")
    assert {r.target.video for r in rows} | set(skipped) == {c.video for c in clips}
    for r in rows:
        assert r.donor.split == r.target.split
        assert r.donor.video != r.target.video
        assert not (r.donor.groups & forbidden_donor_groups("s4", r.target.groups))
    # a skipped clip truly has no valid donor in its split
    for video in skipped:
        target = next(c for c in clips if c.video == video)
        bad = forbidden_donor_groups("s4", target.groups)
        assert not any(c.split == target.split and not (c.groups & bad) for c in clips)
    assert [c.video for c in plannable(clips, "skip")] == [r.target.video for r in rows]


@settings(max_examples=30, deadline=None)
@given(specs=clip_strategy, data=st.data())
def test_choice_does_not_depend_on_order_or_other_splits(specs, data):
    clips = [s4(f"v{i:03d}", cat, split) for i, (cat, split) in enumerate(specs)]
    rows, _ = plan_donors(clips, 7, policy="skip")
    shuffled = data.draw(st.permutations(clips))
    rows2, _ = plan_donors(shuffled, 7, policy="skip")
    assert {r.target.video: r.donor.video for r in rows} == {
        r.target.video: r.donor.video for r in rows2
    }
    only_train = [c for c in clips if c.split == "train"]
    rows3, _ = plan_donors(only_train, 7, policy="skip")
    train = {r.target.video: r.donor.video for r in rows if r.target.split == "train"}
    assert {r.target.video: r.donor.video for r in rows3} == train


def test_ms3_groups_must_be_disjoint():
    clips = [
        ms3("a", ["man", "dog"]),  # human+animal: forbids human, animal, music
        ms3("b", ["guitar"]),  # music
        ms3("c", ["bus"]),  # device
        ms3("d", ["cat", "car"]),  # animal+device
    ]
    rows, skipped = plan_donors(clips, 0, policy="skip")
    donors = {r.target.video: r.donor.video for r in rows}
    assert donors["a"] == "c"  # the only clip with neither human, animal nor music
    assert donors["b"] in {"c", "d"}  # music excludes human only
    assert donors["c"] == "a"  # device excludes device and music
    assert set(skipped) == {"d"}  # animal+device forbids all four groups


def test_unmatched_and_unplannable_clips_fail_with_a_clear_message():
    clips = [ms3("a", ["man"]), Clip("ms3", "train", "-nogroups", "", frozenset())]
    with pytest.raises(PlanError) as err:
        plan_donors(clips, 0, policy="fail", where="ms3 metadata")
    text = str(err.value)
    assert "ms3 metadata" in text and "-nogroups" in text and "AVSS" in text
    assert "'a'" not in text and "a: no clip in split 'train'" in text
    rows, skipped = plan_donors(clips, 0, policy="skip")
    assert rows == [] and set(skipped) == {"a", "-nogroups"}


def test_plan_tsv_round_trip(tmp_path):
    clips = [s4("-x", "playing_piano"), s4("y", "dog_barking"), s4("z", "helicopter")]
    rows, _ = plan_donors(clips, 3)
    text = format_plan(rows)
    assert text.splitlines()[0].split("\t")[:5] == ["split", "video", "category", "groups", "donor"]
    (tmp_path / "plan.tsv").write_text(text)
    plan = read_plan(tmp_path / "plan.tsv")
    assert plan[("train", "-x")] == (rows[0].donor.video, rows[0].donor.category)
    assert format_plan(plan_donors(clips, 3)[0]) == text


def _real_ms3_like():
    """A split where 'full' covers every group that is not excluded (like the 11 real MS3
    clips, e.g. 28XJmUz906g_0: animal + device + human + music)."""
    return [
        ms3("full", ["dog", "bus", "man", "guitar"]),
        ms3("b", ["guitar"]),
        ms3("c", ["bus"]),
        ms3("d", ["cat", "car"]),
        ms3("g", ["wolf"]),
        ms3("e", ["man"], split="val"),
        ms3("f", ["dog"], split="val"),
        ms3("h", ["bus"], split="val"),
    ]


def test_fallback_draws_any_other_clip_of_the_split_and_flags_it(tmp_path):
    clips = _real_ms3_like()
    legal, skipped = plan_donors(clips, 0, policy="skip")
    rows, issues = plan_donors(clips, 0, policy="fallback")
    assert set(skipped) == set(issues) == {"full", "d"}
    assert plannable(clips, "fallback") == clips
    by_target = {r.target.video: r for r in rows}
    assert set(by_target) == {c.video for c in clips}
    for video in ("full", "d"):
        r = by_target[video]
        assert r.fallback and r.donor.split == "train" and r.donor.video != video
    # clips with a legal donor keep exactly the donor they get under skip
    assert [(r.target, r.donor) for r in rows if not r.fallback] == [
        (r.target, r.donor) for r in legal
    ]
    # the draw is the clip's own: same donor in any order, with any other split present
    again, _ = plan_donors(list(reversed(clips[:5])), 0, policy="fallback")
    assert {r.target.video: r.donor.video for r in again} == {
        v: r.donor.video for v, r in by_target.items() if r.target.split == "train"
    }
    # the plan flags it in its own column and keeps the donor columns
    path = tmp_path / "plan.tsv"
    path.write_text(format_plan(rows))
    header = path.read_text().splitlines()[0].split("\t")
    assert header[4:6] == ["donor", "donor_category"] and header[-1] == "fallback"
    assert read_fallbacks(path) == {("train", "full"), ("train", "d")}
    assert read_plan(path)[("train", "full")] == (by_target["full"].donor.video, "")


def test_fallback_uses_every_other_clip_over_seeds():
    clips = _real_ms3_like()[:5]
    donors = {
        next(
            r for r in plan_donors(clips, seed, "fallback")[0] if r.target.video == "full"
        ).donor.video
        for seed in range(60)
    }
    assert donors == {"b", "c", "d", "g"}


def test_fallback_still_stops_on_missing_metadata_and_lonely_clips():
    clips = [
        ms3("a", ["man"]),
        ms3("b", ["dog"]),
        Clip("ms3", "train", "-nogroups", "", frozenset()),
    ]
    with pytest.raises(PlanError, match="-nogroups: no sounding-object groups"):
        plan_donors(clips, 0, policy="fallback")
    with pytest.raises(PlanError, match="no other clip in split 'test'"):
        plan_donors([ms3("a", ["man"]), ms3("z", ["dog"], split="test")], 0, "fallback")


def test_fail_message_names_the_policies():
    with pytest.raises(PlanError, match="skip .* or fallback"):
        plan_donors(_real_ms3_like(), 0, policy="fail")
    with pytest.raises(ValueError, match="unknown offscreen policy"):
        plan_donors(_real_ms3_like(), 0, policy="random")


def test_schema_offers_every_policy():
    import yaml

    from avsrobust.offscreen_plan import POLICIES

    schema = yaml.safe_load((Path(__file__).parents[1] / "config/schema.yaml").read_text())
    on_missing = schema["properties"]["offscreen"]["properties"]["on_missing"]
    assert tuple(on_missing["enum"]) == POLICIES


def test_veto_redraws_only_vetoed_donors():
    """A veto removes donors; every clip whose first draw passes keeps it (same stream)."""
    clips = [s4(f"v{i}", cat) for i, cat in enumerate(S4_CATEGORIES)]
    plain, _ = plan_donors(clips, 11)
    banned = {r.target.video: r.donor.video for r in plain[::3]}  # veto every third draw
    rows, skipped = plan_donors(clips, 11, veto=lambda t, d: banned.get(t.video) == d.video)
    assert not skipped
    for before, after in zip(plain, rows, strict=True):
        if before.target.video in banned:
            assert after.donor.video != banned[before.target.video]
            assert not (after.donor.groups & forbidden_donor_groups("s4", after.target.groups))
        else:
            assert after.donor == before.donor


def test_a_veto_of_every_legal_donor_keeps_the_published_donor():
    """The veto only redraws: a clip it would leave without a donor keeps the published
    rules' draw (a tiny split), and no clip becomes a planning problem."""
    clips = [s4("a", "playing_piano"), s4("b", "dog_barking"), s4("c", "helicopter")]
    plain, _ = plan_donors(clips, 0)
    rows, issues = plan_donors(clips, 0, policy="fail", veto=lambda t, d: t.video == "a")
    assert not issues and [r.donor for r in rows] == [r.donor for r in plain]
    # one legal donor left unvetoed: it is the one drawn
    keep = next(c for c in clips if c.video != "a" and c != plain[0].donor)
    rows, _ = plan_donors(clips, 0, veto=lambda t, d: t.video == "a" and d != keep)
    assert rows[0].donor == keep and rows[1:] == plain[1:]
