"""Embedded synthetic benchmark, written in the exact AVSBench layout.

Why it exists: the workflow must run end to end (CI, laptops, machines without
the real download) and must read synthetic and real data with the *same* code.
So this module writes real-format files (metadata CSVs, 16 kHz mono PCM_16 WAV,
RGB PNG frames, binary PNG masks) at the paths ``layout.py`` defines.

Why it is learnable and audio matters:
- every S4 category / MS3 object has a fixed look (colour, shape, texture) and a
  fixed voice (pitch, harmonic mix, on/off rhythm), derived from its index in
  the vocabulary (not from the RNG), so sound <-> object is a stable association;
- S4 clips often also show a *silent* distractor of another category, and MS3
  clips show 2-3 objects of which only 1-2 sound. The mask holds exactly the
  sounding objects (a label map is rendered first; image and mask both come
  from it), so a model that ignores the audio segments the distractor as well
  and scores measurably worse.

One job, in one module although it is long: index -> looks and voices -> scene -> pixels and
samples -> files, parts that change together whenever the benchmark's realism does.

Determinism: each clip draws from ``seeding.item_rng(seed, "synthetic",
dataset, split, video)``; video ids and categories depend only on (seed,
dataset, split, position in split). A clip's files therefore do not change
when other splits grow, and the same config gives a byte-identical tree.
"""

from __future__ import annotations

import argparse
import colorsys
import csv
import functools
import hashlib
import io
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .atomic import atomic_write_bytes, atomic_write_text
from .errors import ConfigError
from .groups import MS3_OBJECT_GROUP, MS3_OBJECTS, S4_CATEGORIES, S4_CATEGORY_GROUP
from .layout import (
    AVSS_META,
    DATASETS,
    META_FILES,
    N_FRAMES,
    SPLITS,
    Clip,
    annotated_frames,
    frame_png,
    mask_png,
    positive_wav,
)
from .png import png_bytes
from .seeding import item_rng, item_seed
from .wav import AudioFormat, write_wav

#: Shapes and textures of the looks; index i gets shape i % 6 and texture
#: (i // 6 + i) % 6, a pair that is unique for the first 36 indices.
SHAPES = ("circle", "square", "triangle", "ring", "diamond", "cross")
TEXTURES = ("solid", "hstripes", "vstripes", "diagonal", "dots", "checker")

#: "background" is an MS3 sound label, not a thing one can draw: never shown.
MS3_VISIBLE_OBJECTS: tuple[str, ...] = tuple(o for o in MS3_OBJECTS if o != "background")

#: AVSS ``a_obj`` of S4 (``v1s``) rows: one object name each, in the real file's
#: style (``helicopter``, ``woman``, ``horse``), most of them outside the MS3
#: vocabulary. Only ``v1m`` rows are read (metadata.read_avss_objects), so
#: these exist to make the default run meet what the real file holds.
S4_AVSS_OBJECT: dict[str, str] = {
    "playing_acoustic_guitar": "guitar",
    "playing_glockenspiel": "glockenspiel",
    "playing_piano": "piano",
    "playing_tabla": "tabla",
    "playing_ukulele": "ukulele",
    "playing_violin": "violin",
    "baby_laughter": "baby",
    "female_singing": "woman",
    "male_speech": "man",
    "cat_meowing": "cat",
    "coyote_howling": "coyote",
    "dog_barking": "dog",
    "horse_clip-clop": "horse",
    "lions_roaring": "lion",
    "mynah_bird_singing": "bird",
    "driving_buses": "bus",
    "helicopter": "helicopter",
    "race_car": "car",
    "ambulance_siren": "ambulance",
    "cap_gun_shooting": "gun",
    "chainsawing_trees": "chainsaw",
    "lawn_mowing": "lawn-mower",
    "typing_on_computer_keyboard": "keyboard",
}

#: AVSS-semantic (``v2``) objects, from its 70-class vocabulary: mostly outside
#: the 22 MS3 names, a few inside; ``v2`` a_obj values join one or two of them.
V2_AVSS_OBJECTS: tuple[str, ...] = (
    "girl",
    "boy",
    "accordion",
    "clock",
    "tiger",
    "cello",
    "trumpet",
    "saxophone",
    "flute",
    "harp",
    "cow",
    "sheep",
    "duck",
    "elephant",
    "airplane",
    "train",
    "tractor",
    "motorcycle",
    "off-the-screen",
    "guitar",
    "man",
    "dog",
)

_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"  # 64
_ID_FIRST = _ID_ALPHABET[:-1]  # no '-': a leading '-' is decided separately
_ID_TABLE = bytes(_ID_ALPHABET[b & 63].encode("ascii")[0] for b in range(256))

# Object radii (fraction of the image side). S4 sounding and distractor share a
# range so that size does not tell them apart.
_S4_RADII = (0.13, 0.24)
_MS3_RADII = (0.10, 0.18)
_MAX_DRIFT = 0.035  # per axis, over the 5 frames


def _default_s4() -> dict[str, int]:
    return {"train": 72, "val": 23, "test": 46}


def _default_ms3() -> dict[str, int]:
    return {"train": 72, "val": 18, "test": 36}


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and seed of the synthetic benchmark (workflow config ``synthetic:``).

    ``s4_videos`` / ``ms3_videos`` map split -> number of videos; a split left
    out has 0 videos (the CLI instead keeps the default for splits not named).
    The defaults are config/schema.yaml's (tests/test_config_files.py checks them).
    """

    seed: int = 0
    s4_videos: dict[str, int] = field(default_factory=_default_s4)
    ms3_videos: dict[str, int] = field(default_factory=_default_ms3)
    image_size: int = 224
    sample_rate: int = 16000
    seconds: float = 5.0
    distractor_prob: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"synthetic.seed must be an integer, got {self.seed!r}")
        for name in ("s4_videos", "ms3_videos"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise ConfigError(f"synthetic.{name} must map split -> count, got {value!r}")
            unknown = sorted(set(value) - set(SPLITS))
            if unknown:
                raise ConfigError(f"synthetic.{name}: unknown split(s) {unknown}; use {SPLITS}")
            counts = {}
            for split in SPLITS:
                n = value.get(split, 0)
                if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                    raise ConfigError(
                        f"synthetic.{name}.{split} must be an integer >= 0, got {n!r}"
                    )
                counts[split] = n
            object.__setattr__(self, name, counts)  # own copy, every split present
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int):
            raise ConfigError(f"synthetic.image_size must be an integer, got {self.image_size!r}")
        if not 16 <= self.image_size <= 4096:
            raise ConfigError(f"synthetic.image_size must be in 16..4096, got {self.image_size}")
        if not isinstance(self.sample_rate, int) or not 4000 <= self.sample_rate <= 192000:
            raise ConfigError(
                f"synthetic.sample_rate must be 4000..192000, got {self.sample_rate!r}"
            )
        if not isinstance(self.seconds, int | float) or not 0.5 <= self.seconds <= 60:
            raise ConfigError(f"synthetic.seconds must be in 0.5..60, got {self.seconds!r}")
        p = self.distractor_prob
        if not isinstance(p, int | float) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
            raise ConfigError(f"synthetic.distractor_prob must be in [0, 1], got {p!r}")

    @classmethod
    def from_mapping(cls, m: Mapping | None) -> SyntheticConfig:
        """Build from the config's ``synthetic:`` section; unknown keys are errors (typos)."""
        m = dict(m or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(m) - names)
        if unknown:
            raise ConfigError(f"synthetic: unknown key(s) {unknown}; known: {sorted(names)}")
        return cls(**m)

    def __hash__(self) -> int:  # the dict fields would make the generated hash fail
        return hash(
            (
                self.seed,
                tuple(self.s4_videos.items()),
                tuple(self.ms3_videos.items()),
                self.image_size,
                self.sample_rate,
                self.seconds,
                self.distractor_prob,
            )
        )

    @property
    def audio_format(self) -> AudioFormat:
        """The positive clips' format: mono PCM_16 at ``sample_rate``, ``seconds`` long."""
        return AudioFormat(self.sample_rate, 1, round(self.seconds * self.sample_rate), "PCM_16")


# --------------------------------------------------------------------------- looks and voices


@dataclass(frozen=True)
class Look:
    """How one category/object is drawn: fixed per vocabulary index."""

    colour: tuple[int, int, int]
    texture_colour: tuple[int, int, int]  # drawn where the texture pattern is on
    shape: str
    texture: str


@dataclass(frozen=True)
class Voice:
    """How one category/object sounds: fixed per vocabulary index."""

    f0: float  # fundamental (Hz); the strongest partial, so the FFT peak
    harmonics: tuple[float, ...]  # weight of partial 1, 2, ... (first is 1.0)
    rate: float  # on/off cycles per second
    duty: float  # sounding share of each cycle; 1.0 = continuous


_HARMONIC_FAMILIES = (
    (1.0, 0.5, 0.33, 0.25),  # saw-like
    (1.0, 0.0, 0.4, 0.0, 0.25),  # odd partials only (clarinet/square-like)
    (1.0, 0.12),  # almost pure
    (1.0, 0.75, 0.6, 0.45, 0.3, 0.2),  # bright
)
_RATES = (1.25, 2.0, 3.0, 4.0, 6.0)
_DUTIES = (0.35, 0.6, 1.0)


def vocabulary(dataset: str) -> tuple[str, ...]:
    """Names whose looks/voices are defined: S4 categories or MS3 objects."""
    if dataset == "s4":
        return S4_CATEGORIES
    if dataset == "ms3":
        return MS3_OBJECTS
    raise ValueError(f"unknown dataset {dataset!r}")


def _vocab_index(dataset: str, name: str) -> tuple[int, int]:
    vocab = vocabulary(dataset)
    try:
        return vocab.index(name), len(vocab)
    except ValueError:
        raise ValueError(f"{name!r} is not in the {dataset} vocabulary") from None


def look(dataset: str, name: str) -> Look:
    """The look of a category (S4) or object (MS3).

    Hues are evenly spaced and permuted (step 7, coprime to 22 and 23) so that
    neighbours in the vocabulary, often of the same group, differ strongly.
    """
    i, n = _vocab_index(dataset, name)
    hue = ((i * 7) % n) / n
    sat = 0.9 if i % 2 == 0 else 0.6
    val = 0.95 if (i // 2) % 2 == 0 else 0.75
    rgb = tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, sat, val))
    dark = tuple(round(0.5 * c) for c in rgb)
    return Look(rgb, dark, SHAPES[i % 6], TEXTURES[(i // 6 + i) % 6])  # type: ignore[arg-type]


def voice(dataset: str, name: str) -> Voice:
    """The voice of a category/object: pitches 1.5 semitones apart from 180 Hz."""
    i, _ = _vocab_index(dataset, name)
    return Voice(
        f0=180.0 * 2.0 ** (i * 1.5 / 12.0),
        harmonics=_HARMONIC_FAMILIES[i % 4],
        rate=_RATES[i % 5],
        duty=_DUTIES[i % 3],
    )


# --------------------------------------------------------------------------- index


@dataclass(frozen=True)
class SceneObject:
    """One visible object of a clip; ``sounding`` ones are in the mask and the audio."""

    name: str
    sounding: bool


def _video_id(seed: int, dataset: str, split: str, i: int, attempt: int) -> str:
    """11-char YouTube-like id, as real ones: letters, digits, ``_``, ``-``.

    Clip 0 of each split starts with ``-``, clip 1 with ``__`` and clip 2 with
    ``_-`` (real ids such as ``__GOGlHL23s``, ``_-2Juad6tOo``), and ~1 in 8
    others with ``-``: every split of >= 3 clips has each awkward start.
    SHA-256 of the key (not ``hash()``, which is salted per process); 11 chars
    need 66 bits, more than ``seeding.item_seed`` gives.
    """
    key = f"{int(seed)}\x1fsynthetic-id\x1f{dataset}\x1f{split}\x1f{i}\x1f{attempt}"
    d = hashlib.sha256(key.encode("utf-8")).digest()
    body = d[1:11].translate(_ID_TABLE).decode("ascii")
    if i in _FORCED_PREFIX:
        prefix = _FORCED_PREFIX[i]
        return prefix + body[len(prefix) - 1 :]
    first = "-" if d[12] % 8 == 0 else _ID_FIRST[d[0] % len(_ID_FIRST)]
    return first + body


#: Position in a split -> forced start of its id (see :func:`_video_id`).
_FORCED_PREFIX = {0: "-", 1: "__", 2: "_-"}


#: Group order for assigning clips by position: any two consecutive clips can
#: serve as each other's off-screen donor (music <-> animal, human -> animal,
#: device -> human/animal), so every split of >= 2 clips can be planned.
_GROUP_ORDER = ("music", "animal", "human", "device")


def _interleave_by_group(names: Sequence[str], group_of: Mapping[str, str]) -> tuple[str, ...]:
    """Round-robin over groups (in _GROUP_ORDER), keeping order within a group."""
    queues = [[n for n in names if group_of[n] == g] for g in _GROUP_ORDER]
    out: list[str] = []
    while any(queues):
        out += [q.pop(0) for q in queues if q]
    return tuple(out)


_S4_ORDER = _interleave_by_group(S4_CATEGORIES, S4_CATEGORY_GROUP)
_MS3_BY_GROUP = {
    g: tuple(o for o in MS3_VISIBLE_OBJECTS if MS3_OBJECT_GROUP[o] == g) for g in _GROUP_ORDER
}


def _s4_category(i: int) -> str:
    """Round-robin per split over groups, then categories: a split of >= 23 clips
    holds every category and any split holds the groups in _GROUP_ORDER's order."""
    return _S4_ORDER[i % len(_S4_ORDER)]


def _ms3_group(i: int) -> str:
    """Sound group of the i-th MS3 clip of a split (its sounding objects share it)."""
    return _GROUP_ORDER[i % len(_GROUP_ORDER)]


def _plan(
    cfg: SyntheticConfig, dataset: str, split: str, video: str, category: str
) -> tuple[tuple[SceneObject, ...], int]:
    """Visible objects of a clip (sounding ones first) and the clip's 64-bit seed.

    Uses the bits of the same 64-bit seed that seeds the clip's item_rng (which
    hashes it again through SeedSequence, so the two are independent). That keeps
    ``synthetic_index`` free of Generator construction: ~1 us per clip.
    """
    s = item_seed(cfg.seed, "synthetic", dataset, split, video)
    if dataset == "s4":
        objs = [SceneObject(category, True)]
        if (s & 0xFFFFFFFF) / 2.0**32 < cfg.distractor_prob:
            ci = S4_CATEGORIES.index(category)
            k = (s >> 32) % (len(S4_CATEGORIES) - 1)
            objs.append(SceneObject(S4_CATEGORIES[(ci + 1 + k) % len(S4_CATEGORIES)], False))
        return tuple(objs), s
    n_visible = 2 + (s & 1)
    n_sounding = 1 + ((s >> 1) & 1)
    rest = s >> 2
    # Sounding objects share one group (a mix of e.g. animal + device would
    # forbid every off-screen donor); silent ones may come from any group.
    sounding_pool = list(_MS3_BY_GROUP[category])
    names = []
    for _ in range(n_sounding):
        rest, k = divmod(rest, len(sounding_pool))
        names.append(sounding_pool.pop(k))
    pool = [o for o in MS3_VISIBLE_OBJECTS if o not in names]
    for _ in range(n_visible - n_sounding):
        rest, k = divmod(rest, len(pool))
        names.append(pool.pop(k))
    return tuple(SceneObject(n, j < n_sounding) for j, n in enumerate(names)), s


def clip_objects(cfg: SyntheticConfig, clip: Clip) -> tuple[SceneObject, ...]:
    """The visible objects of a synthetic clip (sounding ones first).

    For MS3 the clip's single sound group (from the index or the AVSS
    metadata) selects its sounding objects.
    """
    key = clip.category
    if clip.dataset == "ms3":
        if len(clip.groups) != 1:
            raise ValueError(f"synthetic MS3 clip {clip.video} needs one sound group")
        (key,) = clip.groups
    return _plan(cfg, clip.dataset, clip.split, clip.video, key)[0]


def visible_object_veto(cfg: SyntheticConfig) -> Callable[[Clip, Clip], bool]:
    """Off-screen veto for synthetic clips: ``(target, donor)`` -> True when one of the
    donor's sounding objects (S4: its category) is visible, silent, in the target.

    The group rules alone allow such a donor (a silent dog beside a sounding guitar, the
    donor a barking dog): the sound would then come from a visible object and the empty
    target would be wrong. Real data cannot be checked (nobody lists the silent objects),
    so only the synthetic benchmark's plan uses this (``offscreen_plan.plan_donors``).
    """

    @functools.cache
    def names(clip: Clip) -> tuple[frozenset[str], frozenset[str]]:
        objs = clip_objects(cfg, clip)
        return (
            frozenset(o.name for o in objs if o.sounding),
            frozenset(o.name for o in objs if not o.sounding),
        )

    def veto(target: Clip, donor: Clip) -> bool:
        return bool(names(donor)[0] & names(target)[1])

    return veto


def ms3_a_obj(objects: Sequence[SceneObject]) -> str:
    """AVSS ``a_obj``: the sounding objects joined by ``_`` (e.g. ``man_piano``)."""
    return "_".join(o.name for o in objects if o.sounding)


def synthetic_index(cfg: SyntheticConfig) -> dict[str, list[Clip]]:
    """``{'s4': [...], 'ms3': [...]}`` from seed and sizes alone, without disk.

    Equals ``metadata.read_clips`` on the generated tree (same order and values),
    so the workflow can plan jobs before (or without) generating the data.
    Ids are unique across both datasets, case-insensitively (MS3 frame folders
    have no split level and some file systems fold case); a rare collision is
    resolved by re-hashing in a fixed order.
    """
    seen: set[str] = set()
    out: dict[str, list[Clip]] = {}
    for dataset, sizes in (("s4", cfg.s4_videos), ("ms3", cfg.ms3_videos)):
        clips: list[Clip] = []
        for split in SPLITS:
            for i in range(sizes[split]):
                attempt = 0
                video = _video_id(cfg.seed, dataset, split, i, attempt)
                while video.lower() in seen:
                    attempt += 1
                    video = _video_id(cfg.seed, dataset, split, i, attempt)
                seen.add(video.lower())
                if dataset == "s4":
                    cat = _s4_category(i)
                    groups = frozenset({S4_CATEGORY_GROUP[cat]})
                else:
                    cat = ""
                    objs, _ = _plan(cfg, dataset, split, video, _ms3_group(i))
                    groups = frozenset(MS3_OBJECT_GROUP[o.name] for o in objs if o.sounding)
                clips.append(Clip(dataset, split, video, cat, groups))
        out[dataset] = clips
    return out


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True, eq=False)
class RenderedClip:
    """Everything one clip's files hold, before encoding."""

    objects: tuple[SceneObject, ...]
    labels: np.ndarray  # [5, S, S] int8: 0 background, k -> objects[k - 1]
    frames: np.ndarray  # [5, S, S, 3] uint8
    masks: np.ndarray  # [5, S, S] uint8 in {0, 255}; every frame (writer keeps annotated)
    audio: np.ndarray  # [n_samples] float64, peak <= 0.9


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Inside-test in object coordinates (radius 1), broadcasting [h,1] x [1,w]."""
    if shape == "circle":
        return dx * dx + dy * dy <= 1.0
    if shape == "square":
        return (np.abs(dx) <= 0.85) & (np.abs(dy) <= 0.85)
    if shape == "triangle":  # apex up, base at dy = 0.75
        return (dy <= 0.75) & (np.abs(dx) <= (dy + 0.95) * (1.0 / 1.7))
    if shape == "ring":
        r2 = dx * dx + dy * dy
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.0
    if shape == "cross":
        ax, ay = np.abs(dx), np.abs(dy)
        return ((ax <= 0.33) & (ay <= 1.0)) | ((ay <= 0.33) & (ax <= 1.0))
    raise ValueError(f"unknown shape {shape!r}")


def _texture(texture: str, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Where the texture colour replaces the base colour (moves with the object)."""
    if texture == "solid":
        return np.zeros(np.broadcast_shapes(dx.shape, dy.shape), dtype=bool)
    if texture == "hstripes":
        return np.floor(dy / 0.4) % 2 == 1
    if texture == "vstripes":
        return np.floor(dx / 0.4) % 2 == 1
    if texture == "diagonal":
        return np.floor((dx + dy) / 0.5) % 2 == 1
    if texture == "dots":
        px, py = dx % 0.5 - 0.25, dy % 0.5 - 0.25
        return px * px + py * py <= 0.12**2
    if texture == "checker":
        return (np.floor(dx / 0.5) + np.floor(dy / 0.5)) % 2 == 1
    raise ValueError(f"unknown texture {texture!r}")


def _place(n: int, radii_range: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Per object [c0x, c0y, c1x, c1y, r0, r1]: start/end centre and radius.

    Centres are spread apart (32 candidates; first that clears the others, else
    the best) and drift little, so no object hides another; everything stays in
    frame. Always the same number of draws, so the stream stays aligned.
    """
    radii = rng.uniform(*radii_range, size=n)
    cand = rng.uniform(0.0, 1.0, size=(n, 32, 2))
    drift = rng.uniform(-_MAX_DRIFT, _MAX_DRIFT, size=(n, 2))
    scale = rng.uniform(0.95, 1.05, size=n)
    out = np.empty((n, 6))
    for j in range(n):
        r0 = radii[j]
        c = r0 + cand[j] * (1.0 - 2.0 * r0)
        if j:
            d = np.linalg.norm(c[:, None, :] - out[None, :j, 0:2], axis=2)
            margin = (d - (r0 + radii[:j] + 0.02)).min(axis=1)
            ok = np.flatnonzero(margin >= 0)
            pick = int(ok[0]) if ok.size else int(np.argmax(margin))
        else:
            pick = 0
        r1 = r0 * scale[j]
        c1 = np.clip(c[pick] + drift[j], r1, 1.0 - r1)
        out[j] = (*c[pick], *c1, r0, r1)
    return out


def _tiles(rng: np.random.Generator, canvas: int, tile: int, std, channels: int) -> np.ndarray:
    """Random piecewise-constant tiles of ``tile`` px (nearest-neighbour upsampling)."""
    n = -(-canvas // tile)
    small = rng.standard_normal((n, n, channels)) * std
    return np.repeat(np.repeat(small, tile, axis=0), tile, axis=1)[:canvas, :canvas]


def _bands(rng: np.random.Generator, canvas: int) -> np.ndarray:
    """Smooth 1-D profile (two sinusoids, +-10 max) quantised to steps of 3."""
    u = np.arange(canvas) / canvas
    amp = rng.uniform(2.0, 5.0, size=2)
    freq = rng.uniform(1.0, 6.0, size=2)
    phase = rng.uniform(0.0, 2.0 * np.pi, size=2)
    wave = (amp[:, None] * np.sin(2.0 * np.pi * freq[:, None] * u + phase[:, None])).sum(0)
    return np.round(wave / 3.0) * 3.0


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """[5, S, S, 3] uint8 low-contrast random texture that pans a little (camera motion).

    Coarse colour tiles + fine grey tiles + banded gradients: random enough that
    objects are not found by "anything not flat", and piecewise constant on
    purpose: smooth gradients and per-pixel noise make PNG level 6 3-8x slower
    (measured at 224 px), which matters for the 4,932-clip S4-sized tree.
    """
    pad = max(4, size // 12)
    canvas = size + pad
    base = rng.uniform(85.0, 165.0) + rng.uniform(-12.0, 12.0, size=3)
    tint = 1.0 + rng.uniform(-0.3, 0.3, size=3)
    coarse = _tiles(
        rng, canvas, max(1, round(size / rng.uniform(20.0, 36.0))), rng.uniform(3.0, 6.0, 3), 3
    )
    fine = _tiles(
        rng, canvas, max(1, round(size / rng.uniform(36.0, 48.0))), rng.uniform(2.0, 4.0), 1
    )
    bands = (_bands(rng, canvas)[None, :] + _bands(rng, canvas)[:, None])[:, :, None] * tint
    canvas_img = np.clip(np.rint(base + coarse + fine + bands), 0, 255).astype(np.uint8)
    start = rng.integers(0, pad + 1, size=2)
    end = rng.integers(0, pad + 1, size=2)
    out = np.empty((N_FRAMES, size, size, 3), dtype=np.uint8)
    for k in range(N_FRAMES):
        ox, oy = np.rint(start + (end - start) * (k / (N_FRAMES - 1))).astype(int)
        out[k] = canvas_img[oy : oy + size, ox : ox + size]
    return out


def _draw_frame(
    size: int,
    objects: Sequence[SceneObject],
    dataset: str,
    geom: np.ndarray,
    order: Sequence[int],
    t: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Label map and texture map of one frame (objects drawn in ``order``)."""
    labels = np.zeros((size, size), dtype=np.int8)
    tex = np.zeros((size, size), dtype=bool)
    for j in order:
        c0x, c0y, c1x, c1y, r0, r1 = geom[j]
        cx, cy, r = c0x + (c1x - c0x) * t, c0y + (c1y - c0y) * t, r0 + (r1 - r0) * t
        x0, x1 = max(0, math.floor((cx - r) * size)), min(size, math.ceil((cx + r) * size) + 1)
        y0, y1 = max(0, math.floor((cy - r) * size)), min(size, math.ceil((cy + r) * size) + 1)
        dx = ((np.arange(x0, x1) + 0.5) / size - cx)[None, :] / r
        dy = ((np.arange(y0, y1) + 0.5) / size - cy)[:, None] / r
        lk = look(dataset, objects[j].name)
        inside = _shape_mask(lk.shape, dx, dy)
        pattern = np.broadcast_to(_texture(lk.texture, dx, dy), inside.shape)
        labels[y0:y1, x0:x1][inside] = j + 1
        tex[y0:y1, x0:x1][inside] = pattern[inside]
    return labels, tex


_TABLE_SIZE = 4096  # wavetable points per period; linear-interpolation error < -95 dB


def _frac(x: np.ndarray) -> np.ndarray:
    """x mod 1 for x >= 0 (``np.floor`` is several times faster than float ``%``)."""
    return x - np.floor(x)


def _voice_wave(v: Voice, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """One object's sound, peak 1: detuned a little, random phases and rhythm offset.

    Wavetable synthesis (one period with all partials, read with linear
    interpolation) costs the same for any number of partials: about 4x faster
    than one ``np.sin`` per partial over 80,000 samples.
    """
    f0 = v.f0 * (1.0 + rng.uniform(-0.01, 0.01))
    phases = rng.uniform(0.0, 2.0 * np.pi, size=len(v.harmonics))
    offset = rng.uniform()
    x = np.arange(_TABLE_SIZE + 1) * (2.0 * np.pi / _TABLE_SIZE)
    table = np.zeros(_TABLE_SIZE + 1)
    for h, (w, ph) in enumerate(zip(v.harmonics, phases, strict=True), start=1):
        if w and f0 * h < 0.45 * rate:  # stay well below Nyquist: no aliasing
            table += w * np.sin(h * x + ph)
    t = np.arange(n, dtype=np.float64) / rate
    pos = _frac(f0 * t) * _TABLE_SIZE
    i = pos.astype(np.intp)
    lo = table[i]
    wave = lo + (pos - i) * (table[i + 1] - lo)
    if v.duty < 1.0:  # on/off gate with 10 ms linear ramps (no clicks)
        cyc = _frac(t * v.rate + offset)
        ramp = min(0.01 * v.rate, v.duty / 2.0)
        wave *= np.clip(np.minimum(cyc, v.duty - cyc) * (1.0 / ramp), 0.0, 1.0)
    peak = np.abs(wave).max()
    return wave / peak if peak > 0 else wave


def render_audio(
    cfg: SyntheticConfig, clip: Clip, objects: Sequence[SceneObject] | None = None
) -> np.ndarray:
    """The clip's audio: the mix of its sounding objects' voices plus faint noise.

    Drawn from its own stream (key + "audio"), so the audio does not depend on
    the image size and can be rendered without the frames.
    """
    objects = clip_objects(cfg, clip) if objects is None else objects
    rng = item_rng(cfg.seed, "synthetic", clip.dataset, clip.split, clip.video, "audio")
    fmt = cfg.audio_format
    mix = np.zeros(fmt.frames)
    for o in objects:
        if o.sounding:
            gain = rng.uniform(0.6, 1.0)
            mix += gain * _voice_wave(voice(clip.dataset, o.name), fmt.frames, fmt.sample_rate, rng)
    mix *= rng.uniform(0.45, 0.8) / np.abs(mix).max()
    mix += rng.standard_normal(fmt.frames) * 10.0 ** (rng.uniform(-54.0, -46.0) / 20.0)
    peak = np.abs(mix).max()
    if peak > 0.9:
        mix *= 0.9 / peak
    return mix


def render_clip(cfg: SyntheticConfig, clip: Clip) -> RenderedClip:
    """Frames, masks, label maps and audio of one clip, all from its own RNG."""
    objects = clip_objects(cfg, clip)
    rng = item_rng(cfg.seed, "synthetic", clip.dataset, clip.split, clip.video)
    size = cfg.image_size
    n = len(objects)
    geom = _place(n, _S4_RADII if clip.dataset == "s4" else _MS3_RADII, rng)
    order = [int(j) for j in rng.permutation(n)]
    background = _background(size, rng)
    sounding = [j for j, o in enumerate(objects) if o.sounding]

    def draw(order: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        maps = [
            _draw_frame(size, objects, clip.dataset, geom, order, k / (N_FRAMES - 1))
            for k in range(N_FRAMES)
        ]
        return np.stack([m[0] for m in maps]), np.stack([m[1] for m in maps])

    labels, tex = draw(order)
    if not all((labels == j + 1).any(axis=(1, 2)).all() for j in sounding):
        # Placement keeps objects apart, so this is a safety net only: a hidden
        # sounding object would make the mask wrong, so draw sounding ones on top.
        labels, tex = draw([j for j in order if j not in sounding] + sounding)

    palette = np.zeros((n + 1, 2, 3), dtype=np.uint8)
    for j, o in enumerate(objects):
        lk = look(clip.dataset, o.name)
        palette[j + 1, 0], palette[j + 1, 1] = lk.colour, lk.texture_colour
    frames = background  # drawn over in place: only object pixels are looked up
    on = labels > 0
    frames[on] = palette.reshape(-1, 3)[labels[on].astype(np.intp) * 2 + tex[on]]
    masks = np.isin(labels, np.asarray(sounding, dtype=np.int8) + 1).astype(np.uint8) * 255

    mix = render_audio(cfg, clip, objects)
    return RenderedClip(objects, labels, frames, masks, mix)


# --------------------------------------------------------------------------- writing


def clip_files(root: str | Path, clip: Clip) -> list[Path]:
    """Every file ``generate`` writes for one clip (WAV, 5 frames, annotated masks)."""
    return [
        positive_wav(root, clip),
        *(frame_png(root, clip, k) for k in range(1, N_FRAMES + 1)),
        *(mask_png(root, clip, k) for k in annotated_frames(clip)),
    ]


def write_clip(
    root: str | Path, cfg: SyntheticConfig, clip: Clip, audio_only: bool = False
) -> None:
    """Render one clip and write its files atomically (rerunnable alone).

    ``audio_only`` writes just the WAV (benchmarks of the audio pipeline at
    S4 scale); the WAV is the same bytes either way.
    """
    if audio_only:
        write_wav(positive_wav(root, clip), render_audio(cfg, clip), cfg.audio_format)
        return
    r = render_clip(cfg, clip)
    write_wav(positive_wav(root, clip), r.audio, cfg.audio_format)
    for k in range(1, N_FRAMES + 1):
        atomic_write_bytes(frame_png(root, clip, k), png_bytes(r.frames[k - 1]))
    for k in annotated_frames(clip):
        atomic_write_bytes(mask_png(root, clip, k), png_bytes(r.masks[k - 1]))


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _write_metadata(
    root: Path, cfg: SyntheticConfig, index: dict[str, list[Clip]], datasets: Sequence[str]
) -> None:
    if "s4" in datasets:
        rows = [(c.video, 0, c.category, c.split) for c in index["s4"]]
        atomic_write_text(
            root / META_FILES["s4"], _csv_text(("name", "start", "category", "split"), rows)
        )
    if "ms3" in datasets:
        rows = [(c.video, c.split) for c in index["ms3"]]
        atomic_write_text(root / META_FILES["ms3"], _csv_text(("video_id", "split"), rows))
    # AVSS always lists both datasets (from the index, no rendering), so generating
    # S4 and MS3 in separate calls gives the same tree as one call.
    atomic_write_text(root / AVSS_META, _csv_text(AVSS_COLUMNS, avss_rows(cfg, index)))


#: Columns of the real ``AVSS/metadata.csv`` (AVSBench-semantic), in its order.
AVSS_COLUMNS = ("vid", "uid", "s_min", "s_sec", "a_obj", "split", "label")


def _v2_rows(cfg: SyntheticConfig, n_videos: int, taken: set[str]) -> list[tuple]:
    """AVSS-semantic (``v2``) rows: objects of the 70-class vocabulary, some videos
    with two rows (different ``uid`` and start), as in the real file. Never read
    by the workflow; present so the reader meets them on every default run."""
    rows: list[tuple] = []
    for i in range(n_videos):
        attempt = 0
        vid = _video_id(cfg.seed, "avss-v2", "", i, attempt)
        while vid.lower() in taken:
            attempt += 1
            vid = _video_id(cfg.seed, "avss-v2", "", i, attempt)
        taken.add(vid.lower())
        split = SPLITS[(0, 0, 0, 1, 2)[i % 5]]
        for k in range(2 if i % 4 == 1 else 1):
            s = item_seed(cfg.seed, "synthetic", "avss-v2", vid, str(k))
            n = len(V2_AVSS_OBJECTS)
            names = [V2_AVSS_OBJECTS[s % n]]
            if (s >> 16) & 1 and V2_AVSS_OBJECTS[(s >> 8) % n] not in names:
                names.append(V2_AVSS_OBJECTS[(s >> 8) % n])
            # the very first row is the real file's own example of a joined a_obj
            a_obj = "girl_guitar" if i == k == 0 else "_".join(names)
            rows.append((vid, f"{vid}_{k}", k, (s >> 24) % 60, a_obj, split, "v2"))
    return rows


def avss_rows(cfg: SyntheticConfig, index: Mapping[str, Sequence[Clip]]) -> list[tuple]:
    """Rows of the synthetic ``AVSS/metadata.csv``, shaped like the real file.

    ``v1s`` rows (one per S4 clip, one object name each, one of them malformed as
    the real ``h orse``), ``v1m`` rows (one per MS3 clip: its sounding objects,
    the only rows the workflow reads) and ``v2`` rows (objects outside the MS3
    vocabulary, videos with several rows); sorted by ``vid`` then ``uid`` so the
    labels are interleaved.
    """
    s4 = list(index.get("s4", ()))
    v1s = [[c.video, f"{c.video}_0", 0, 0, S4_AVSS_OBJECT[c.category], c.split, "v1s"] for c in s4]
    if v1s:  # the real file holds typos such as 'h orse': the first horse clip, else the first
        j = next((i for i, c in enumerate(s4) if c.category == "horse_clip-clop"), 0)
        name = v1s[j][4]
        v1s[j][4] = f"{name[0]} {name[1:]}"
    v1m = [
        (c.video, f"{c.video}_0", 0, 0, ms3_a_obj(clip_objects(cfg, c)), c.split, "v1m")
        for c in index.get("ms3", ())
    ]
    taken = {c.video.lower() for clips in index.values() for c in clips}
    n_v2 = max(4, (len(v1s) + len(v1m)) // 2)
    rows = [tuple(r) for r in v1s] + v1m + _v2_rows(cfg, n_v2, taken)
    return sorted(rows, key=lambda r: (r[0], r[1]))


def generate(
    root: str | Path,
    cfg: SyntheticConfig,
    datasets: Sequence[str] = ("s4", "ms3"),
    progress: bool = False,
    workers: int = 1,
    audio_only: bool = False,
) -> None:
    """Write the synthetic benchmark under ``root`` in the AVSBench layout.

    Every file is written atomically; metadata CSVs come last, so a tree whose
    metadata exists is complete. ``workers`` > 1 renders clips in processes
    (output is identical: each clip depends only on its own key).
    """
    root = Path(root)
    datasets = tuple(datasets)
    bad = [d for d in datasets if d not in DATASETS]
    if bad:
        raise ValueError(f"unknown dataset(s) {bad}; use {DATASETS}")
    index = synthetic_index(cfg)
    todo = [clip for d in DATASETS if d in datasets for clip in index[d]]
    work = partial(write_clip, root, cfg, audio_only=audio_only)
    with tqdm(total=len(todo), disable=not progress, unit="clip", desc="synthetic") as bar:
        if workers > 1 and len(todo) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(work, todo, chunksize=8):
                    bar.update()
        else:
            for clip in todo:
                work(clip)
                bar.update()
    _write_metadata(root, cfg, index, datasets)


# --------------------------------------------------------------------------- CLI


def _parse_sizes(text: str) -> dict[str, int]:
    """``train=24,val=8,test=8`` -> dict (splits not named keep their defaults)."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        split, sep, value = part.partition("=")
        if not sep or split.strip() not in SPLITS:
            raise argparse.ArgumentTypeError(
                f"expected split=N with split in {SPLITS}, got {part!r}"
            )
        try:
            out[split.strip()] = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer count: {part!r}") from None
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m avsrobust.synthetic --root DIR ...``: write a synthetic tree."""
    ap = argparse.ArgumentParser(
        prog="python -m avsrobust.synthetic", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--root", required=True, type=Path, help="output AVSBench root")
    ap.add_argument("--seed", type=int, default=SyntheticConfig.seed)
    ap.add_argument("--s4", type=_parse_sizes, default={}, help="e.g. train=24,val=8,test=8")
    ap.add_argument("--ms3", type=_parse_sizes, default={}, help="e.g. train=12,val=6,test=6")
    ap.add_argument("--image-size", type=int, default=SyntheticConfig.image_size)
    ap.add_argument("--distractor-prob", type=float, default=SyntheticConfig.distractor_prob)
    ap.add_argument("--datasets", default="s4,ms3", help="comma list of s4, ms3")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--progress", action="store_true", help="show a progress bar")
    args = ap.parse_args(argv)
    try:
        cfg = SyntheticConfig(
            seed=args.seed,
            s4_videos={**_default_s4(), **args.s4},
            ms3_videos={**_default_ms3(), **args.ms3},
            image_size=args.image_size,
            distractor_prob=args.distractor_prob,
        )
        datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
        generate(args.root, cfg, datasets, progress=args.progress, workers=args.workers)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
