"""Reading AVSBench metadata: real layouts, '-' ids, and every bad-input case."""

from __future__ import annotations

import pytest
from helpers import write_csv

from avsrobust import layout
from avsrobust.errors import InputError
from avsrobust.metadata import check_split_sizes, read_clips, read_ms3, read_s4


def test_reads_s4_and_ms3_with_groups(tiny_root):
    s4 = read_s4(tiny_root)
    assert [c.video for c in s4][:2] == ["-abcDEF_123", "bbbbbbbbbbb"]
    assert s4[0].groups == {"music"} and s4[0].item == "playing_piano/-abcDEF_123"
    ms3 = {c.video: c for c in read_ms3(tiny_root)}
    assert ms3["-ms3aaaaaaa"].groups == {"human", "music"}
    assert ms3["ms3eeeeeeee"].groups == {"animal"}
    assert ms3["-ms3aaaaaaa"].category == ""


def test_unmatched_ms3_ids_get_no_groups(tiny_root):
    write_csv(
        tiny_root / layout.AVSS_META,
        ["vid", "uid", "a_obj", "split", "label"],
        [["ms3bbbbbbbb", "x", "dog", "train", "v1m"]],
    )
    ms3 = {c.video: c for c in read_ms3(tiny_root)}
    assert ms3["ms3bbbbbbbb"].groups == {"animal"}
    assert ms3["-ms3aaaaaaa"].groups == frozenset()


def _s4(tmp_path, rows, header=("name", "start", "category", "split")):
    write_csv(tmp_path / layout.META_FILES["s4"], list(header), rows)
    return tmp_path


@pytest.mark.parametrize(
    "rows, message, row",
    [
        ([["a", "0", "dog_barking", "train"], ["a", "0", "dog_barking", "val"]], "duplicate", 3),
        ([["a", "0", "unicorn_singing", "train"]], "unknown S4 category", 2),
        ([["a", "0", "dog_barking", "training"]], "unknown split", 2),
        ([["../etc", "0", "dog_barking", "train"]], "path separator", 2),
        ([["a/b", "0", "dog_barking", "train"]], "path separator", 2),
        ([["..", "0", "dog_barking", "train"]], "path separator", 2),
        ([["", "0", "dog_barking", "train"]], "empty video name", 2),
        ([["a b", "0", "dog_barking", "train"]], "characters other than", 2),
    ],
)
def test_bad_s4_rows_name_file_and_row(tmp_path, rows, message, row):
    root = _s4(tmp_path, rows)
    with pytest.raises(InputError, match=message) as err:
        read_s4(root)
    assert err.value.row == row
    assert "s4_meta_data.csv" in str(err.value) and f"row {row}" in str(err.value)


def test_missing_columns_are_listed(tmp_path):
    root = _s4(tmp_path, [["a", "0", "train"]], header=("name", "start", "split"))
    with pytest.raises(InputError, match=r"missing column\(s\) \['category'\]"):
        read_s4(root)


def test_missing_metadata_file(tmp_path):
    with pytest.raises(InputError, match="metadata file is missing"):
        read_clips(tmp_path, "ms3")


def test_unknown_avss_object_names_the_row(tiny_root):
    write_csv(
        tiny_root / layout.AVSS_META,
        ["vid", "uid", "a_obj", "split", "label"],
        [["x", "x", "man", "train", "v1m"], ["y", "y", "man_dragon", "train", "v1m"]],
    )
    with pytest.raises(InputError, match="unknown sounding object 'dragon'") as err:
        read_ms3(tiny_root)
    assert err.value.row == 3 and "metadata.csv" in err.value.where


def test_duplicate_ms3_ids(tiny_root):
    write_csv(
        tiny_root / layout.META_FILES["ms3"],
        ["video_id", "split"],
        [["-x", "train"], ["-x", "test"]],
    )
    with pytest.raises(InputError, match="duplicate video id '-x'"):
        read_ms3(tiny_root)


def test_non_utf8_csv(tmp_path):
    path = tmp_path / layout.META_FILES["s4"]
    path.parent.mkdir(parents=True)
    path.write_bytes(b"name,start,category,split\n\xff\xfe,0,dog_barking,train\n")
    with pytest.raises(InputError, match="not UTF-8"):
        read_s4(tmp_path)


def test_real_avss_rows_outside_v1m_are_not_read(tiny_root):
    """The real AVSS file holds v1s/v2 rows with any vocabulary; only v1m rows are read."""
    write_csv(
        tiny_root / layout.AVSS_META,
        ["vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"],
        [
            ["-ms3aaaaaaa", "-ms3aaaaaaa_0", "0", "0", "man_piano", "train", "v1m"],
            ["__GOGlHL23s", "__GOGlHL23s_0", "0", "10", "h orse", "train", "v1s"],
            ["_-2Juad6tOo", "_-2Juad6tOo_0", "1", "5", "girl_guitar", "train", "v2"],
            ["_-2Juad6tOo", "_-2Juad6tOo_1", "1", "15", "off-the-screen_clock", "val", "v2"],
            # a v2 row for an MS3 id must not add groups to it
            ["ms3eeeeeeee", "ms3eeeeeeee_7", "0", "0", "tiger", "test", "v2"],
        ],
    )
    ms3 = {c.video: c for c in read_ms3(tiny_root)}
    assert ms3["-ms3aaaaaaa"].groups == {"human", "music"}
    assert ms3["ms3eeeeeeee"].groups == frozenset()  # no v1m row: reported by the planner


def test_empty_splits_warn_and_fail_where_a_step_needs_them(tiny_root):
    path = tiny_root / layout.META_FILES["s4"]
    clips = read_s4(tiny_root)  # train and test, no val
    notes = check_split_sizes("s4", clips, ("train", "val", "test"), {}, path)
    assert notes == [
        f"{path}: s4: lists no clips in split 'val': its negatives, features and "
        "frame cache will be empty"
    ]
    needs = {"train": "training", "val": "training (validation)", "test": "evaluation"}
    with pytest.raises(InputError, match=r"split\(s\) \['val'\]: training \(validation\) needs"):
        check_split_sizes("s4", clips, ("train", "val", "test"), needs, path)
    # a header-only CSV: every split is empty
    write_csv(path, ["name", "start", "category", "split"], [])
    assert read_s4(tiny_root) == []
    assert "holds no rows (header only?)" in check_split_sizes("s4", [], ("test",), {}, path)[0]
    with pytest.raises(InputError, match="holds no rows .* evaluation needs 'test'") as err:
        check_split_sizes("s4", [], ("train", "test"), {"test": "evaluation"}, path)
    assert str(path) in str(err.value) and "leave s4 out of `datasets`" in str(err.value)
