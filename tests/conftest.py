"""Shared fixtures: tiny AVSBench-layout trees with real WAV/CSV files."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import tone, write_csv

from avsrobust import layout
from avsrobust.wav import AudioFormat, write_wav

S4_ROWS = [
    # name, category, split
    ["-abcDEF_123", "playing_piano", "train"],
    ["bbbbbbbbbbb", "male_speech", "train"],
    ["ccccccccccc", "dog_barking", "train"],
    ["ddddddddddd", "helicopter", "train"],
    ["-eeeeeeeeee", "horse_clip-clop", "test"],
    ["fffffffffff", "race_car", "test"],
]
MS3_ROWS = [
    # video_id, split, a_obj
    ["-ms3aaaaaaa", "train", "man_piano"],
    ["ms3bbbbbbbb", "train", "dog"],
    ["ms3cccccccc", "train", "car"],
    ["ms3dddddddd", "test", "guitar"],
    ["ms3eeeeeeee", "test", "dog_cat"],
]


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    """A small real AVSBench-layout tree (audio + metadata) with '-' ids."""
    root = tmp_path / "avsbench"
    fmt = AudioFormat()
    write_csv(
        root / layout.META_FILES["s4"],
        ["name", "start", "category", "split"],
        [[n, "0", c, s] for n, c, s in S4_ROWS],
    )
    write_csv(
        root / layout.META_FILES["ms3"], ["video_id", "split"], [[v, s] for v, s, _ in MS3_ROWS]
    )
    write_csv(
        root / layout.AVSS_META,
        ["vid", "uid", "a_obj", "split", "label"],
        [[v, f"{v}_0", a, s, "v1m"] for v, s, a in MS3_ROWS],
    )
    for i, (name, cat, split) in enumerate(S4_ROWS):
        clip = layout.Clip("s4", split, name, cat, frozenset())
        write_wav(layout.positive_wav(root, clip), tone(fmt, 200 + 50 * i), fmt)
    for i, (vid, split, _) in enumerate(MS3_ROWS):
        clip = layout.Clip("ms3", split, vid, "", frozenset())
        write_wav(layout.positive_wav(root, clip), tone(fmt, 300 + 70 * i), fmt)
    return root


@pytest.fixture
def few_threads():
    """One torch thread, seed 0: the test machine has two cores shared with other jobs."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(old)
