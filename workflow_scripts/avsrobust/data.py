"""Training/evaluation data: frame cache + audio features of every condition.

Why it looks like this (domain.md section 6): robust training mixes negative
audio (silence, noise, off-screen sound) with *empty* target masks into the
positives (and, when configured, the ``mixture`` audio with the original masks),
re-drawn every epoch and at any batch size (the published code used one fixed 5%
subset and batch size 1). So an item is a (video, condition) pair:
:class:`RobustSampler` decides which pairs an epoch holds, :class:`AVSDataset`
turns a pair into tensors, and any batch can mix conditions because every item
has the same keys and shapes.

Item keys: ``frames`` float32 [5, 3, S, S] (ImageNet-normalised), ``masks``
float32 [5, 1, S, S] (target), ``mask_valid`` bool [5] (frames whose target is
known), ``orig_masks`` / ``orig_mask_valid`` (the annotated mask whatever the
audio: the visual-bias diagnostic asks whether a model still segments it under
negative audio), ``audio`` float32 [5, 1, 96, 64], ``sounding`` float32 scalar,
``condition``, ``video``, ``category`` (str), ``index`` (int, video row).

This module imports torch; light workflow jobs must not import it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .errors import ConfigError, InputError
from .features import EXAMPLE_FRAMES, NUM_EXAMPLES, NUM_MEL_BINS
from .frame_cache import FRAMES_FILE, IGNORE, INDEX_FILE, MASKS_FILE, load_npy, open_cache
from .layout import CONDITIONS, DONOR_TYPES, GENERATED_TYPES, is_negative
from .row_index import FEATURE_COLUMNS, read_index
from .seeding import item_rng, item_seed

#: Conditions a cached video may lack (clips the off-screen planner skipped: no donor).
OPTIONAL_CONDITIONS = frozenset(DONOR_TYPES)
FEATURE_SHAPE = (NUM_EXAMPLES, 1, EXAMPLE_FRAMES, NUM_MEL_BINS)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

FeatureFiles = tuple[str | Path, str | Path]  # (features .npy, index .tsv)


def read_feature_index(path: str | Path) -> dict[str, tuple[int, str]]:
    """video -> (row, category) from a features index TSV, checked row by row."""
    rows = read_index(path, FEATURE_COLUMNS, "feature index is missing", unique_videos=True)
    return {row["video"]: (i, row["category"] or "") for i, row in enumerate(rows)}


def _preview(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(x) for x in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


class AVSDataset(Dataset):
    """Items are (video index, condition) pairs over one frame cache (one dataset/split).

    An int key means the positive condition. Features join the cache by video id;
    every cached video must have a row for every requested condition except
    ``offscreen`` (clips skipped by the planner are simply never drawn with it).
    """

    def __init__(
        self,
        cache_dir: str | Path,
        features: Mapping[str, FeatureFiles],
        conditions: Sequence[str] | None = None,
        *,
        normalize: bool = True,
    ):
        if conditions is None:
            conditions = [c for c in CONDITIONS if c in features]
        conditions = tuple(conditions)
        unknown = [c for c in conditions if c not in CONDITIONS]
        if unknown or not conditions or len(set(conditions)) != len(conditions):
            raise ConfigError(f"conditions must be distinct, from {CONDITIONS}; got {conditions}")
        absent = [c for c in conditions if c not in features]
        if absent:
            raise ConfigError(f"no feature files given for condition(s) {absent}")
        self.cache_dir = Path(cache_dir)
        self.conditions = conditions
        self.normalize = normalize
        self._files = {c: (Path(features[c][0]), Path(features[c][1])) for c in conditions}

        cache = open_cache(self.cache_dir)
        self.videos: tuple[str, ...] = cache.videos
        self.categories: tuple[str, ...] = cache.categories
        self.image_size = cache.image_size
        self._rows: dict[str, np.ndarray] = {}
        for cond in conditions:
            self._rows[cond] = self._join(cond, cache.categories)
        self._mm: dict[str, Any] | None = None  # opened lazily, once per process

    def _join(self, cond: str, categories: Sequence[str]) -> np.ndarray:
        """Feature row of every cached video (-1: none), after checking the files agree."""
        npy, index_path = self._files[cond]
        index = read_feature_index(index_path)
        feats = load_npy(npy, "feature file is missing")
        if feats.dtype != np.float32 or feats.shape != (len(index), *FEATURE_SHAPE):
            raise InputError(
                npy,
                f"expected float32 [{len(index)}, {', '.join(map(str, FEATURE_SHAPE))}] "
                f"(rows of {index_path.name}), got {feats.dtype} {list(feats.shape)}",
            )
        del feats
        rows = np.full(len(self.videos), -1, dtype=np.int64)
        missing: list[str] = []
        for i, (video, category) in enumerate(zip(self.videos, categories, strict=True)):
            hit = index.get(video)
            if hit is None:
                missing.append(video)
                continue
            if hit[1] != category:
                raise InputError(
                    index_path,
                    f"video {video!r} has category {hit[1]!r}, the frame cache says {category!r}",
                    hit[0] + 2,
                )
            rows[i] = hit[0]
        if missing and cond not in OPTIONAL_CONDITIONS:
            raise InputError(
                index_path,
                f"no {cond} feature row for {len(missing)} video(s) of the frame cache "
                f"{self.cache_dir}: {_preview(missing)}",
            )
        return rows

    # ------------------------------------------------------------ lazy memory maps
    def _maps(self) -> dict[str, Any]:
        """Memory maps, opened in the process that reads (workers open their own)."""
        if self._mm is None:
            cache = open_cache(self.cache_dir)
            mm: dict[str, Any] = {"frames": cache.frames, "masks": cache.masks}
            for cond, (npy, _) in self._files.items():
                mm[cond] = load_npy(npy, "feature file is missing")
            self._mm = mm
        return self._mm

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_mm"] = None  # never pickle the mapped data into spawned workers
        return state

    # ------------------------------------------------------------ queries
    @property
    def files(self) -> tuple[Path, ...]:
        """Every file the dataset reads: the frame cache's, then each condition's features
        and row index (a checkpoint records them: :func:`avsrobust.resume.input_fingerprint`)."""
        cache = tuple(self.cache_dir / name for name in (FRAMES_FILE, MASKS_FILE, INDEX_FILE))
        return cache + tuple(path for cond in self.conditions for path in self._files[cond])

    def __len__(self) -> int:
        return len(self.videos)

    def indices_with(self, condition: str) -> np.ndarray:
        """Video indices that have features for ``condition`` (sorted)."""
        if condition not in self._rows:
            raise KeyError(f"condition {condition!r} not loaded; have {self.conditions}")
        return np.flatnonzero(self._rows[condition] >= 0)

    def items(self, condition: str = "positive") -> list[tuple[int, str]]:
        """Every (index, condition) pair of one condition: a sampler for evaluation."""
        return [(int(i), condition) for i in self.indices_with(condition)]

    # ------------------------------------------------------------ items
    def _key(self, key: int | tuple[int, str]) -> tuple[int, str]:
        if isinstance(key, tuple | list) and len(key) == 2:
            index, cond = key
        else:
            index, cond = key, "positive"
        index = int(index)
        if cond not in self._rows:
            raise KeyError(f"condition {cond!r} not loaded; have {self.conditions}")
        if not 0 <= index < len(self.videos):
            raise IndexError(f"video index {index} out of range 0..{len(self.videos) - 1}")
        if self._rows[cond][index] < 0:
            raise KeyError(f"video {self.videos[index]!r} has no {cond} features (skipped clip)")
        return index, cond

    def __getitem__(self, key: int | tuple[int, str]) -> dict[str, Any]:
        index, cond = self._key(key)
        mm = self._maps()
        frames = torch.from_numpy(np.array(mm["frames"][index]))  # [5, S, S, 3] uint8, a copy
        frames = frames.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        if self.normalize:
            mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
            frames = frames.sub_(mean).div_(std)
        raw = torch.from_numpy(np.array(mm["masks"][index]))  # [5, S, S] uint8
        annotated = (raw != IGNORE).flatten(1).all(dim=1)
        orig = (raw == 1).to(torch.float32).unsqueeze(1)  # unannotated frames -> 0
        if not is_negative(cond):  # positive, mixture: the sounding object still sounds
            masks, valid, sounding = orig, annotated, 1.0
        else:  # negative audio: nothing sounds, so the empty target is known on every frame
            masks = torch.zeros_like(orig)
            valid = torch.ones_like(annotated)
            sounding = 0.0
        audio = torch.from_numpy(np.array(mm[cond][self._rows[cond][index]], dtype=np.float32))
        return {
            "frames": frames.contiguous(),
            "masks": masks,
            "mask_valid": valid,
            "orig_masks": orig,
            "orig_mask_valid": annotated,
            "audio": audio,
            "sounding": torch.tensor(sounding, dtype=torch.float32),
            "condition": cond,
            "video": self.videos[index],
            "category": self.categories[index],
            "index": index,
        }


class RobustSampler(Sampler):
    """Every positive once per epoch plus fresh negatives, shuffled together.

    For each generated type with a ratio (negative types; ``mixture`` too, whose items
    keep the original masks), ``round(ratio * N)`` videos (N = videos in the
    dataset; Python's round) are drawn without replacement from those that have
    that condition, anew every epoch (:meth:`set_epoch`, as DistributedSampler).
    Each type draws from ``item_rng(seed, "sampler", epoch, negtype)`` and the
    final shuffle from ``item_rng(seed, "sampler", epoch)``: an epoch depends
    only on (seed, epoch), and adding one type does not change another's draw.
    Yields (video index, condition) pairs; batch size is the DataLoader's affair.
    """

    def __init__(
        self,
        dataset: AVSDataset,
        negative_ratios: Mapping[str, float] | None = None,
        seed: int = 0,
    ):
        ratios = dict(negative_ratios or {})
        if "positive" not in dataset.conditions:
            raise ConfigError("RobustSampler needs a dataset with the positive condition")
        self.n = len(dataset)
        self.seed = int(seed)
        self.epoch = 0
        self._draws: list[tuple[str, np.ndarray, int]] = []
        # the ratios themselves are checked where they enter (the schema, resolve_config);
        # what only the data can tell is checked here
        for neg in (c for c in GENERATED_TYPES if c in ratios):
            ratio = ratios[neg]
            if neg not in dataset.conditions:
                raise ConfigError(f"negative ratio given for {neg}, but the dataset lacks it")
            pool = np.asarray(dataset.indices_with(neg), dtype=np.int64)
            count = round(ratio * self.n)
            if count > len(pool):
                raise ConfigError(
                    f"{neg}: ratio {ratio} asks for {count} of {self.n} videos per epoch, "
                    f"but only {len(pool)} have {neg} audio (negatives are drawn "
                    "without replacement)"
                )
            self._draws.append((neg, pool, count))
        unknown = sorted(set(ratios) - {neg for neg, _, _ in self._draws})
        if unknown:
            raise ConfigError(f"unknown audio type(s) {unknown}; use {GENERATED_TYPES}")

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose draw the next iteration yields."""
        self.epoch = int(epoch)

    def counts(self) -> dict[str, int]:
        """Items per condition in every epoch."""
        return {"positive": self.n, **{neg: count for neg, _, count in self._draws}}

    def __len__(self) -> int:
        return self.n + sum(count for _, _, count in self._draws)

    def epoch_items(self, epoch: int) -> list[tuple[int, str]]:
        """The (index, condition) pairs of ``epoch``, in yield order."""
        pairs = [(i, "positive") for i in range(self.n)]
        for neg, pool, count in self._draws:
            if count:
                rng = item_rng(self.seed, "sampler", str(epoch), neg)
                pairs += [(int(i), neg) for i in rng.choice(pool, size=count, replace=False)]
        order = item_rng(self.seed, "sampler", str(epoch)).permutation(len(pairs))
        return [pairs[j] for j in order]

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return iter(self.epoch_items(self.epoch))


def seed_worker(worker_id: int) -> None:
    """Seed numpy and random in a DataLoader worker from torch's per-worker seed,
    which derives from the loader's generator: augmentations become reproducible."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(
    dataset: AVSDataset,
    sampler: Sampler | Sequence[tuple[int, str]],
    batch_size: int,
    workers: int,
    device: str | torch.device | None = None,
    seed: int | None = None,
) -> DataLoader:
    """A DataLoader over ``sampler``'s pairs; reproducible for a given seed.

    ``pin_memory`` only when CUDA is available and the target device is not the
    CPU; persistent workers when ``workers`` > 0 (no re-fork every epoch). The
    seed defaults to the sampler's.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"workers must be an integer >= 0, got {workers!r}")
    if seed is None:
        seed = getattr(sampler, "seed", 0)
    generator = torch.Generator()
    generator.manual_seed(item_seed(int(seed), "loader") % 2**63)
    pin = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=workers > 0,
        worker_init_fn=seed_worker if workers > 0 else None,
        generator=generator,
    )
