"""Frame cache and training data: cache contents match the PNGs, items carry the right
targets per condition, the robust sampler's epochs are exact and reproducible, and the
DataLoader works at any batch size."""

from __future__ import annotations

import csv
import hashlib
import pickle
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import build_dataset, cache_dir, feature_paths
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from avsrobust import frame_cache as FC
from avsrobust.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AVSDataset,
    RobustSampler,
    build_loader,
)
from avsrobust.errors import ConfigError, InputError
from avsrobust.features import extract_features
from avsrobust.layout import frame_png, mask_png, negative_wav, positive_wav
from avsrobust.metadata import read_clips
from avsrobust.negatives import NegativeSettings, generate_negative
from avsrobust.synthetic import SyntheticConfig, generate

S = 32
SPLITS = (("s4", "train"), ("s4", "test"), ("ms3", "train"))
MISSING_OFFSCREEN = 1  # index of the s4/train video the off-screen planner "skipped"


def clips_of(root: Path, dataset: str, split: str):
    return [c for c in read_clips(root, dataset) if c.split == split]


def write_features(results: Path, dataset: str, split: str, cond: str, clips, arr) -> None:
    """Feature .npy + index TSV exactly as workflow_scripts/extract_features.py writes them."""
    npy, index = feature_paths(results, dataset, split, cond)
    npy.parent.mkdir(parents=True, exist_ok=True)
    np.save(npy, np.asarray(arr, dtype=np.float32))
    with open(index, "w", newline="", encoding="utf-8") as handle:
        w = csv.writer(handle, delimiter="\t", lineterminator="\n")
        w.writerow(["row", "video", "category", "path"])
        for row, c in enumerate(clips):
            w.writerow([row, c.video, c.category, f"{c.video}.wav"])


def sha_dir(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    """(AVSBench root, results) with caches and features of every condition."""
    base = tmp_path_factory.mktemp("data")
    root, results = base / "avsbench", base / "results"
    cfg = SyntheticConfig(
        seed=0,
        s4_videos={"train": 4, "val": 0, "test": 2},
        ms3_videos={"train": 2, "val": 0, "test": 1},
        image_size=S,
    )
    generate(root, cfg)
    for dataset, split in SPLITS:
        clips = clips_of(root, dataset, split)
        FC.build_cache(root, clips, cache_dir(results, dataset, split), S)
        npy, _ = feature_paths(results, dataset, split, "positive")
        extract_features([positive_wav(root, c) for c in clips], npy)
        write_features(results, dataset, split, "positive", clips, np.load(npy))
        # silence: the real pipeline (negative WAV -> same VGGish front end)
        wavs = []
        for c in clips:
            out = negative_wav(results, dataset, "silence", split, c.item)
            generate_negative(
                NegativeSettings(), dataset, split, c.video, "silence", positive_wav(root, c), out
            )
            wavs.append(out)
        npy, _ = feature_paths(results, dataset, split, "silence")
        extract_features(wavs, npy)
        write_features(results, dataset, split, "silence", clips, np.load(npy))
        n = len(clips)
        write_features(results, dataset, split, "noise", clips, np.full((n, 5, 1, 96, 64), 2.0))
        kept = [c for i, c in enumerate(clips) if not (split == "train" and i == MISSING_OFFSCREEN)]
        write_features(
            results, dataset, split, "offscreen", kept, np.full((len(kept), 5, 1, 96, 64), 3.0)
        )
        # the mixture has a donor where the off-screen audio has one
        write_features(
            results, dataset, split, "mixture", kept, np.full((len(kept), 5, 1, 96, 64), 4.0)
        )
    return root, results


def dataset_of(results: Path, dataset="s4", split="train", conditions=None) -> AVSDataset:
    cfg = {"negatives": ["silence", "noise", "offscreen"]}
    return build_dataset(cfg, dataset, split, results, conditions)


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


# ------------------------------------------------------------------------- frame cache
def test_cache_shapes_dtypes_and_annotated_frames(world):
    root, results = world
    for dataset, split in SPLITS:
        clips = clips_of(root, dataset, split)
        cache = FC.open_cache(cache_dir(results, dataset, split))
        n = len(clips)
        assert cache.frames.shape == (n, 5, S, S, 3) and cache.frames.dtype == np.uint8
        assert cache.masks.shape == (n, 5, S, S) and cache.masks.dtype == np.uint8
        assert isinstance(cache.frames, np.memmap) and not cache.frames.flags.writeable
        assert cache.videos == tuple(c.video for c in clips)
        assert cache.categories == tuple(c.category for c in clips)
        annotated = (1,) if (dataset, split) == ("s4", "train") else (1, 2, 3, 4, 5)
        for k in range(1, 6):
            m = np.asarray(cache.masks[:, k - 1])
            if k in annotated:
                assert set(np.unique(m)) <= {0, 1}
            else:
                assert (m == FC.IGNORE).all()
        rows = (cache_dir(results, dataset, split) / "index.tsv").read_text().splitlines()
        assert rows[0] == "row\tvideo\tcategory\tsplit" and len(rows) == n + 1
        assert rows[1] == f"0\t{clips[0].video}\t{clips[0].category}\t{split}"


def test_cache_equals_pngs_and_resized_pngs(world, tmp_path):
    root, results = world
    clips = clips_of(root, "s4", "test")
    cache = FC.open_cache(cache_dir(results, "s4", "test"))
    small_dir = tmp_path / "small"
    FC.build_cache(root, clips, small_dir, 16, workers=2)
    small = FC.open_cache(small_dir)
    for i, clip in enumerate(clips):
        for k in range(1, 6):
            frame, mask = png(frame_png(root, clip, k)), png(mask_png(root, clip, k))
            assert np.array_equal(cache.frames[i, k - 1], frame)
            assert np.array_equal(cache.masks[i, k - 1], (mask != 0).astype(np.uint8))
            img = Image.open(frame_png(root, clip, k)).convert("RGB")
            bil = np.asarray(img.resize((16, 16), Image.Resampling.BILINEAR))
            assert np.array_equal(small.frames[i, k - 1], bil)
            near = Image.fromarray((mask != 0).astype(np.uint8)).resize(
                (16, 16), Image.Resampling.NEAREST
            )
            assert np.array_equal(small.masks[i, k - 1], np.asarray(near))
    assert cache.masks[:, :].max() == 1  # the synthetic masks are not all empty


def test_mask_formats_any_nonzero_is_foreground(tmp_path):
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[2:5, 3:6] = 1
    labels[6, 6] = 2
    want = (labels != 0).astype(np.uint8)
    pal = Image.fromarray(labels, mode="P")
    pal.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    variants = {
        "grey.png": Image.fromarray(want * 255),
        "palette.png": pal,
        "rgba.png": Image.fromarray(
            np.dstack([want * 200, want * 0, want * 0, np.full_like(want, 255)])
        ),
        "bilevel.png": Image.fromarray(want * 255).convert("1"),
    }
    for name, img in variants.items():
        img.save(tmp_path / name)
        got = FC.load_mask(tmp_path / name, 8)
        assert got.dtype == np.uint8 and np.array_equal(got, want), name
    # nearest resize keeps it binary
    assert set(np.unique(FC.load_mask(tmp_path / "grey.png", 5))) <= {0, 1}


def test_cache_written_atomically_and_deterministically(world, tmp_path):
    root, _ = world
    clips = clips_of(root, "ms3", "train")
    out = tmp_path / "cache"
    FC.build_cache(root, clips, out, S)
    first = sha_dir(out)
    assert sorted(first) == ["frames.npy", "index.tsv", "masks.npy"]  # no temporaries
    FC.build_cache(root, clips, out, S, workers=2)
    assert sha_dir(out) == first
    # plain .npy, no pickle needed
    assert np.load(out / "frames.npy", allow_pickle=False).shape == (2, 5, S, S, 3)


def test_missing_or_broken_png_names_the_file_and_keeps_old_cache(world, tmp_path):
    root, _ = world
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    clips = clips_of(copy, "s4", "test")
    out = tmp_path / "cache"
    FC.build_cache(copy, clips, out, S)
    before = sha_dir(out)

    gone = frame_png(copy, clips[1], 3)
    gone.unlink()
    with pytest.raises(InputError) as err:
        FC.build_cache(copy, clips, out, S)
    assert str(gone) in str(err.value) and "missing" in str(err.value)
    assert sha_dir(out) == before  # old cache intact, no temporary left

    broken = mask_png(copy, clips[0], 2)
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InputError, match=str(broken).replace("\\", "\\\\")):
        FC.build_cache(copy, clips[:1], tmp_path / "other", S, workers=2)
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())


def test_open_cache_reports_missing_files(tmp_path):
    with pytest.raises(InputError, match="index.tsv"):
        FC.open_cache(tmp_path)


# ------------------------------------------------------------------------- items
def test_positive_items(world):
    root, results = world
    ds = dataset_of(results)
    clips = clips_of(root, "s4", "train")
    pos = np.load(feature_paths(results, "s4", "train", "positive")[0])
    assert len(ds) == 4 and ds.conditions == ("positive", "silence", "noise", "offscreen")
    item = ds[2]
    assert item["condition"] == "positive" and item["video"] == clips[2].video
    assert item["index"] == 2 and item["category"] == clips[2].category
    assert item["frames"].shape == (5, 3, S, S) and item["frames"].dtype == torch.float32
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    raw = np.stack([png(frame_png(root, clips[2], k)) for k in range(1, 6)])
    back = (item["frames"] * std + mean).permute(0, 2, 3, 1).numpy()
    assert np.allclose(back, raw / 255.0, atol=1e-5)
    assert item["masks"].shape == (5, 1, S, S) and item["masks"].dtype == torch.float32
    assert item["mask_valid"].tolist() == [True, False, False, False, False]
    want = (png(mask_png(root, clips[2], 1)) != 0).astype(np.float32)
    assert np.array_equal(item["masks"][0, 0].numpy(), want)
    assert item["masks"][1:].sum() == 0 and torch.equal(item["masks"], item["orig_masks"])
    assert item["sounding"].shape == () and item["sounding"].item() == 1.0
    assert item["audio"].shape == (5, 1, 96, 64) and np.array_equal(item["audio"].numpy(), pos[2])
    assert ds[(2, "positive")]["video"] == item["video"]
    test_item = dataset_of(results, split="test")[0]
    assert test_item["mask_valid"].all()


def test_negative_items_have_empty_known_targets(world):
    root, results = world
    ds = dataset_of(results)
    for cond, value in (("silence", None), ("noise", 2.0), ("offscreen", 3.0)):
        item = ds[(0, cond)]
        assert item["condition"] == cond and item["sounding"].item() == 0.0
        assert item["masks"].shape == (5, 1, S, S) and item["masks"].sum() == 0
        assert item["mask_valid"].all()
        assert item["orig_mask_valid"].tolist() == [True, False, False, False, False]
        assert torch.equal(item["orig_masks"], ds[0]["masks"]) and item["orig_masks"].sum() > 0
        if value is None:  # digital silence through the VGGish front end: log(0.01)
            assert torch.allclose(item["audio"], torch.full_like(item["audio"], np.log(0.01)))
        else:
            assert (item["audio"] == value).all()


def test_mixture_items_keep_the_original_masks_and_sound(world):
    """Own audio plus a donor's: the sounding object still sounds, the target is its mask."""
    _, results = world
    ds = dataset_of(results, conditions=("positive", "mixture"))
    assert MISSING_OFFSCREEN not in ds.indices_with("mixture")  # no donor, no mixture
    item = ds[(0, "mixture")]
    assert item["condition"] == "mixture" and item["sounding"].item() == 1.0
    assert torch.equal(item["masks"], ds[0]["masks"]) and item["masks"].sum() > 0
    assert torch.equal(item["mask_valid"], ds[0]["mask_valid"])
    assert (item["audio"] == 4.0).all()
    sampler = RobustSampler(ds, {"mixture": 0.5}, seed=0)
    assert sampler.counts() == {"positive": 4, "mixture": 2}
    drawn = [i for i, c in sampler.epoch_items(0) if c == "mixture"]
    assert len(drawn) == 2 and MISSING_OFFSCREEN not in drawn


def test_join_offscreen_may_miss_positive_may_not(world, tmp_path):
    root, results = world
    ds = dataset_of(results)
    assert ds.indices_with("offscreen").tolist() == [0, 2, 3]
    assert (MISSING_OFFSCREEN, "offscreen") not in ds.items("offscreen")
    with pytest.raises(KeyError, match="offscreen"):
        ds[(MISSING_OFFSCREEN, "offscreen")]

    clips = clips_of(root, "s4", "train")
    res2 = tmp_path / "results"
    shutil.copytree(results / "frame_cache", res2 / "frame_cache")
    shutil.copytree(results / "features", res2 / "features")
    pos = np.load(feature_paths(results, "s4", "train", "positive")[0])
    write_features(res2, "s4", "train", "positive", clips[:3], pos[:3])
    with pytest.raises(InputError) as err:
        dataset_of(res2, conditions=["positive"])
    msg = str(err.value)
    assert "positive.index.tsv" in msg and clips[3].video in msg and "no positive" in msg
    # noise is not optional either
    write_features(res2, "s4", "train", "positive", clips, pos)
    write_features(res2, "s4", "train", "noise", clips[1:], np.zeros((3, 5, 1, 96, 64)))
    with pytest.raises(InputError, match="no noise feature row"):
        dataset_of(res2, conditions=["positive", "noise"])
    # rows of the .npy and the index must agree
    write_features(res2, "s4", "train", "noise", clips, np.zeros((3, 5, 1, 96, 64)))
    with pytest.raises(InputError, match=r"noise\.npy"):
        dataset_of(res2, conditions=["positive", "noise"])
    with pytest.raises(ConfigError):
        AVSDataset(cache_dir(res2, "s4", "train"), {}, ["positive"])


def test_dataset_pickles_without_mapped_data(world):
    _, results = world
    ds = dataset_of(results)
    a = ds[(3, "noise")]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._mm is None
    b = clone[(3, "noise")]
    assert all(torch.equal(a[k], b[k]) for k in ("frames", "masks", "audio", "orig_masks"))


# ------------------------------------------------------------------------- sampler
class StubDataset:
    """Just what RobustSampler reads, to explore many sizes without building caches."""

    def __init__(self, n: int, offscreen_missing: int = 0):
        self.n = n
        self.conditions = ("positive", "silence", "noise", "offscreen")
        self.missing = offscreen_missing

    def __len__(self) -> int:
        return self.n

    def indices_with(self, cond: str) -> np.ndarray:
        return np.arange(self.missing if cond == "offscreen" else 0, self.n)


def check_epoch(items, n: int, counts: dict[str, int], ds) -> None:
    by_cond = Counter(c for _, c in items)
    assert by_cond["positive"] == n and sorted(i for i, c in items if c == "positive") == list(
        range(n)
    )
    for neg, k in counts.items():
        chosen = [i for i, c in items if c == neg]
        assert len(chosen) == k and len(set(chosen)) == k  # without replacement
        assert set(chosen) <= set(ds.indices_with(neg).tolist())


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    ratios=st.fixed_dictionaries(
        {}, optional={neg: st.floats(0.0, 1.0) for neg in ("silence", "noise", "offscreen")}
    ),
    seed=st.integers(0, 2**31),
    epoch=st.integers(0, 1000),
)
def test_sampler_epoch_is_exact_and_reproducible(n, ratios, seed, epoch):
    ds = StubDataset(n)
    sampler = RobustSampler(ds, ratios, seed=seed)
    counts = {neg: round(r * n) for neg, r in ratios.items()}
    assert len(sampler) == n + sum(counts.values())
    sampler.set_epoch(epoch)
    items = list(sampler)
    assert len(items) == len(sampler)
    check_epoch(items, n, counts, ds)
    again = RobustSampler(ds, dict(reversed(list(ratios.items()))), seed=seed)
    again.set_epoch(epoch)
    assert list(again) == items == list(sampler)  # same (seed, epoch): same epoch
    if len(items) >= 3:  # something to shuffle: epochs are drawn anew
        assert len({tuple(sampler.epoch_items(e)) for e in range(20)}) > 1


def test_sampler_redraws_negatives_each_epoch():
    ds = StubDataset(50, offscreen_missing=10)
    sampler = RobustSampler(ds, {"silence": 0.05, "offscreen": 0.05}, seed=7)
    assert len(sampler) == 50 + 2 + 2 and sampler.counts() == {
        "positive": 50,
        "silence": 2,
        "offscreen": 2,
    }
    draws = []
    for e in range(10):
        sampler.set_epoch(e)
        items = list(sampler)
        check_epoch(items, 50, {"silence": 2, "offscreen": 2}, ds)
        draws.append(frozenset((i, c) for i, c in items if c != "positive"))
    assert len(set(draws)) > 5  # a fresh subset, not one fixed 5% as published
    assert list(RobustSampler(ds, {"silence": 0.05}, seed=8)) != list(
        RobustSampler(ds, {"silence": 0.05}, seed=7)
    )


def test_sampler_rejects_impossible_requests(world):
    _, results = world
    ds = dataset_of(results)
    with pytest.raises(ConfigError, match="only 3 have offscreen"):
        RobustSampler(ds, {"offscreen": 1.0})
    with pytest.raises(ConfigError, match="unknown audio type"):
        RobustSampler(ds, {"static": 0.1})
    with pytest.raises(ConfigError, match="lacks"):
        RobustSampler(dataset_of(results, conditions=["positive"]), {"noise": 0.5})


# ------------------------------------------------------------------------- loader
def collect(loader) -> list[dict]:
    return list(loader)


def test_loader_batch_size_3(world):
    _, results = world
    ds = dataset_of(results)
    sampler = RobustSampler(ds, {"silence": 0.5, "noise": 0.25, "offscreen": 0.5}, seed=1)
    assert len(sampler) == 4 + 2 + 1 + 2
    loader = build_loader(ds, sampler, batch_size=3, workers=0, device="cpu")
    assert not loader.pin_memory and loader.num_workers == 0
    sampler.set_epoch(3)
    batches = collect(loader)
    assert [b["frames"].shape[0] for b in batches] == [3, 3, 3]
    expected = sampler.epoch_items(3)
    got = [(int(i), c) for b in batches for i, c in zip(b["index"], b["condition"], strict=True)]
    assert got == expected
    for b in batches:
        k = b["frames"].shape[0]
        assert b["frames"].shape == (k, 5, 3, S, S) and b["masks"].shape == (k, 5, 1, S, S)
        assert b["orig_masks"].shape == (k, 5, 1, S, S) and b["mask_valid"].shape == (k, 5)
        assert b["audio"].shape == (k, 5, 1, 96, 64) and b["sounding"].shape == (k,)
        positive = torch.tensor([c == "positive" for c in b["condition"]])
        assert torch.equal(b["sounding"].bool(), positive)
        assert (b["masks"][~positive] == 0).all() and b["mask_valid"][~positive].all()
    sampler.set_epoch(4)
    assert [
        (int(i), c) for b in loader for i, c in zip(b["index"], b["condition"], strict=True)
    ] != got


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch_size=st.integers(1, 12), ratio=st.floats(0.0, 1.0))
def test_loader_any_batch_size(world, batch_size, ratio):
    _, results = world
    ds = dataset_of(results, conditions=["positive", "silence"])
    sampler = RobustSampler(ds, {"silence": ratio}, seed=0)
    batches = collect(build_loader(ds, sampler, batch_size, workers=0))
    sizes = [b["audio"].shape[0] for b in batches]
    assert sum(sizes) == len(sampler) and all(s == batch_size for s in sizes[:-1])


def test_loader_with_workers_matches_single_process(world):
    _, results = world
    ds = dataset_of(results, split="test")
    sampler = RobustSampler(ds, {"noise": 1.0}, seed=5)
    one = collect(build_loader(ds, sampler, 2, workers=0))
    loader = build_loader(ds, sampler, 2, workers=2)
    assert loader.persistent_workers
    two = collect(loader)
    assert len(one) == len(two)
    for a, b in zip(one, two, strict=True):
        assert a["condition"] == b["condition"] and torch.equal(a["frames"], b["frames"])
        assert torch.equal(a["audio"], b["audio"]) and torch.equal(a["masks"], b["masks"])
    evaluation = collect(build_loader(ds, ds.items("positive"), 4, workers=0))
    assert evaluation[0]["video"] == list(ds.videos)
