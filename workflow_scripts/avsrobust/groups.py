"""AVSBench category names, sound groups and the off-screen exclusion rules.

Source: domain.md section 2 (as published with AVSBench-Robust). An off-screen
donor must not sound like something that could be on screen: its group must
differ from the target's group and from the group excluded for it.
"""

from __future__ import annotations

S4_GROUPS: dict[str, tuple[str, ...]] = {
    "music": (
        "playing_acoustic_guitar",
        "playing_glockenspiel",
        "playing_piano",
        "playing_tabla",
        "playing_ukulele",
        "playing_violin",
    ),
    "human": ("baby_laughter", "female_singing", "male_speech"),
    "animal": (
        "cat_meowing",
        "coyote_howling",
        "dog_barking",
        "horse_clip-clop",
        "lions_roaring",
        "mynah_bird_singing",
    ),
    "device": (
        "driving_buses",
        "helicopter",
        "race_car",
        "ambulance_siren",
        "cap_gun_shooting",
        "chainsawing_trees",
        "lawn_mowing",
        "typing_on_computer_keyboard",
    ),
}

MS3_GROUPS: dict[str, tuple[str, ...]] = {
    "music": ("guitar", "tabla", "violin", "ukulele", "piano", "marimba"),
    "human": ("man", "woman", "baby"),
    "animal": ("dog", "cat", "lion", "bird", "wolf"),
    "device": (
        "mower",
        "background",
        "bus",
        "car",
        "gun",
        "saw",
        "emergency-car",
        "keyboard",
    ),
}

#: Groups that may not serve as off-screen sound for a target of the key's group.
S4_EXCLUDED: dict[str, frozenset[str]] = {
    "music": frozenset({"human"}),
    "human": frozenset({"music"}),
    "animal": frozenset({"human"}),
    "device": frozenset(),
}
MS3_EXCLUDED: dict[str, frozenset[str]] = {
    "music": frozenset({"human"}),
    "human": frozenset({"music"}),
    "animal": frozenset({"human"}),
    "device": frozenset({"music"}),
}

S4_CATEGORIES: tuple[str, ...] = tuple(c for cats in S4_GROUPS.values() for c in cats)
MS3_OBJECTS: tuple[str, ...] = tuple(o for objs in MS3_GROUPS.values() for o in objs)

S4_CATEGORY_GROUP: dict[str, str] = {c: g for g, cats in S4_GROUPS.items() for c in cats}
MS3_OBJECT_GROUP: dict[str, str] = {o: g for g, objs in MS3_GROUPS.items() for o in objs}

EXCLUDED = {"s4": S4_EXCLUDED, "ms3": MS3_EXCLUDED}


def forbidden_donor_groups(dataset: str, groups: frozenset[str]) -> frozenset[str]:
    """Groups a donor may not have for a target with ``groups`` (own + excluded)."""
    excluded = EXCLUDED[dataset]
    out = set(groups)
    for group in groups:
        out |= excluded[group]
    return frozenset(out)


def split_objects(a_obj: str) -> list[str]:
    """Split an AVSS ``a_obj`` value into object names.

    Objects are joined by ``_`` but one name (``emergency-car``) holds ``-``
    only, so a plain split on ``_`` is exact for the published vocabulary.
    """
    return [part for part in a_obj.strip().split("_") if part]
