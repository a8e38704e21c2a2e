"""Negative audio: format, levels, colours, determinism, order independence."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import tone
from hypothesis import given, settings
from hypothesis import strategies as st

from avsrobust.negatives import (
    NegativeSettings,
    coloured_gaussian,
    generate_negative,
    make_mixture,
    make_noise,
    make_offscreen,
    make_silence,
    rms_dbfs,
)
from avsrobust.seeding import item_rng, item_seed
from avsrobust.wav import AudioFormat, audio_format, read_wav, write_wav


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def spectral_slope(x: np.ndarray, rate: int = 16000) -> float:
    """Slope of log power vs log frequency over 50 Hz - 5 kHz (white 0, pink -1, brown -2)."""
    segments = x[: len(x) // 1024 * 1024].reshape(-1, 1024)
    power = np.mean(np.abs(np.fft.rfft(segments * np.hanning(1024), axis=1)) ** 2, axis=0)
    freqs = np.fft.rfftfreq(1024, 1 / rate)
    band = (freqs > 50) & (freqs < 5000)
    return float(np.polyfit(np.log(freqs[band]), np.log(power[band]), 1)[0])


def test_item_seed_depends_on_every_key_part():
    base = item_seed(0, "s4", "train", "vid", "noise")
    variants = [
        item_seed(1, "s4", "train", "vid", "noise"),
        item_seed(0, "ms3", "train", "vid", "noise"),
        item_seed(0, "s4", "test", "vid", "noise"),
        item_seed(0, "s4", "train", "vie", "noise"),
        item_seed(0, "s4", "train", "vid", "silence"),
    ]
    assert base == item_seed(0, "s4", "train", "vid", "noise")
    assert len({base, *variants}) == 6
    # key parts are separated: ("ab", "c") is not ("a", "bc")
    assert item_seed(0, "ab", "c") != item_seed(0, "a", "bc")


@pytest.mark.parametrize("colour, slope", [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_noise_colour_has_the_right_spectral_slope(colour, slope):
    x = coloured_gaussian(16000 * 5, colour, np.random.default_rng(1))
    assert abs(spectral_slope(x) - slope) < 0.2
    assert abs(np.sqrt(np.mean(x**2)) - 1.0) < 1e-9


@pytest.mark.parametrize("level", [-60.0, -30.0, -20.0])
@pytest.mark.parametrize("colour", ["white", "pink", "brown"])
def test_noise_level_is_the_configured_rms(level, colour):
    fmt = AudioFormat()
    x = make_noise(fmt, item_rng(0, "k"), colour, level)
    assert x.shape == (80000, 1)
    assert abs(rms_dbfs(x) - level) < 0.01


def test_noise_is_gaussian():
    x = make_noise(AudioFormat(), item_rng(3, "k"), "white", -30.0)[:, 0]
    z = (x - x.mean()) / x.std()
    assert abs(np.mean(z**3)) < 0.05  # skewness
    assert abs(np.mean(z**4) - 3.0) < 0.1  # kurtosis of a Gaussian


def test_too_loud_noise_raises_instead_of_clipping():
    with pytest.raises(ValueError, match="never clip"):
        make_noise(AudioFormat(), item_rng(0, "k"), "white", 0.0)


def test_silence_is_zeros_or_dither():
    fmt = AudioFormat(16000, 2, 1000)
    assert not make_silence(fmt, item_rng(0, "k")).any()
    dither = make_silence(fmt, item_rng(0, "k"), -80.0)
    assert dither.shape == (1000, 2)
    assert abs(rms_dbfs(dither) - -80.0) < 0.01


def test_offscreen_conforms_a_stereo_44k_donor(tmp_path):
    donor_fmt = AudioFormat(44100, 2, 44100 * 3)
    write_wav(tmp_path / "donor.wav", tone(donor_fmt, 500), donor_fmt)
    out = make_offscreen(tmp_path / "donor.wav", AudioFormat())
    assert out.shape == (80000, 1)
    assert not out[16000 * 3 + 100 :].any()  # 3 s donor zero-padded to 5 s
    peak_hz = np.argmax(np.abs(np.fft.rfft(out[:48000, 0]))) * 16000 / 48000
    assert abs(peak_hz - 500) < 2


@pytest.mark.parametrize("negtype", ["silence", "noise", "offscreen", "mixture"])
@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_negative_copies_the_positive_format(tmp_path, negtype, subtype):
    """Every linear PCM / float WAV subtype, positive written by libsndfile (not by us)."""
    fmt = AudioFormat(22050, 2, 22050 * 4, subtype)
    sf.write(str(tmp_path / "pos.wav"), tone(fmt), 22050, subtype=subtype, format="WAV")
    write_wav(tmp_path / "donor.wav", tone(AudioFormat(), 800), AudioFormat())
    out = tmp_path / "neg.wav"
    generate_negative(
        NegativeSettings(seed=5),
        "s4",
        "train",
        "vid",
        negtype,
        tmp_path / "pos.wav",
        out,
        tmp_path / "donor.wav",
    )
    assert audio_format(out) == fmt
    info = sf.info(str(out))  # libsndfile's view, not our reader's
    assert (info.subtype, info.channels, info.samplerate, info.frames) == (
        subtype,
        2,
        22050,
        22050 * 4,
    )


def test_offscreen_without_donor_is_an_error(tmp_path):
    write_wav(tmp_path / "pos.wav", tone(AudioFormat()), AudioFormat())
    with pytest.raises(ValueError, match="needs a donor"):
        generate_negative(
            NegativeSettings(),
            "s4",
            "train",
            "v",
            "offscreen",
            tmp_path / "pos.wav",
            tmp_path / "n.wav",
        )


def _generate_all(tmp_path: Path, order: list[int], settings: NegativeSettings) -> dict[str, str]:
    write_wav(tmp_path / "pos.wav", tone(AudioFormat()), AudioFormat())
    jobs = [(v, t) for v in ["-a", "b", "c_d"] for t in ["silence", "noise"]]
    out = {}
    for i in order:
        video, negtype = jobs[i]
        path = tmp_path / f"{video}.{negtype}.wav"
        generate_negative(settings, "s4", "train", video, negtype, tmp_path / "pos.wav", path)
        out[path.name] = _sha(path)
    return out


@settings(max_examples=15, deadline=None)
@given(order=st.permutations(list(range(6))))
def test_bytes_do_not_depend_on_generation_order(tmp_path_factory, order):
    s = NegativeSettings(seed=11, silence_dither_dbfs=-70.0)
    reference = _generate_all(tmp_path_factory.mktemp("ref"), list(range(6)), s)
    assert _generate_all(tmp_path_factory.mktemp("perm"), order, s) == reference


def test_regenerating_one_file_alone_gives_the_same_bytes(tmp_path):
    s = NegativeSettings(seed=2, noise_colour="pink")
    full = _generate_all(tmp_path / "full", list(range(6)), s)
    (tmp_path / "one").mkdir()
    write_wav(tmp_path / "one" / "pos.wav", tone(AudioFormat()), AudioFormat())
    out = tmp_path / "one" / "c_d.noise.wav"
    generate_negative(s, "s4", "train", "c_d", "noise", tmp_path / "one" / "pos.wav", out)
    assert _sha(out) == full["c_d.noise.wav"]
    # and a different seed changes it
    generate_negative(
        NegativeSettings(seed=3, noise_colour="pink"),
        "s4",
        "train",
        "c_d",
        "noise",
        tmp_path / "one" / "pos.wav",
        out,
    )
    assert _sha(out) != full["c_d.noise.wav"]


def test_noise_file_level_survives_int16_quantisation(tmp_path):
    write_wav(tmp_path / "pos.wav", tone(AudioFormat()), AudioFormat())
    generate_negative(
        NegativeSettings(noise_level_dbfs=-40.0),
        "ms3",
        "val",
        "v",
        "noise",
        tmp_path / "pos.wav",
        tmp_path / "n.wav",
    )
    samples, rate = read_wav(tmp_path / "n.wav")
    assert rate == 16000 and abs(rms_dbfs(samples) - -40.0) < 0.05


def test_relevant_settings_per_type():
    s = NegativeSettings(seed=4, noise_colour="pink", noise_level_dbfs=-25.0)
    assert s.relevant("noise") == {"seed": 4, "noise_colour": "pink", "noise_level_dbfs": -25.0}
    assert s.relevant("silence") == {"seed": 4, "silence_dither_dbfs": None}
    assert NegativeSettings(**s.relevant("noise")) == s


# ----------------------------------------------------------------------------- per-clip jobs
def test_in_process_jobs_write_the_clip_generate_negative_writes(tiny_root, tmp_path):
    """The bodies of the negative_audio / offscreen_audio run: blocks, named by wildcards."""
    from types import SimpleNamespace

    from avsrobust import layout
    from avsrobust.metadata import read_clips
    from avsrobust.offscreen_plan import plan_donors, write_plan
    from avsrobust.workflow_jobs import negative_job

    clips = read_clips(tiny_root, "s4")
    rows, _ = plan_donors(clips, seed=0)
    plan = tmp_path / "plan.tsv"
    write_plan(plan, rows)
    clip = next(c for c in clips if c.split == "train")
    wildcards = SimpleNamespace(data=layout.DATA_DIRS["s4"], split=clip.split, item=clip.item)
    settings = NegativeSettings(seed=5)
    for negtype, kwargs in (
        ("noise", {}),
        ("offscreen", {"plan": plan}),
        ("mixture", {"plan": plan}),
    ):
        out, log = tmp_path / f"{negtype}.wav", tmp_path / f"{negtype}.log"
        negative_job(settings, tiny_root, wildcards, negtype, out, log, **kwargs)
        donor = next(r.donor for r in rows if r.target.video == clip.video)
        want = tmp_path / f"want_{negtype}.wav"
        generate_negative(
            settings,
            "s4",
            clip.split,
            clip.video,
            negtype,
            layout.positive_wav(tiny_root, clip),
            want,
            layout.positive_wav(tiny_root, donor) if negtype != "noise" else None,
        )
        assert _sha(out) == _sha(want), negtype
        assert log.read_text().startswith(f"s4\t{clip.split}\t{clip.item}\t{negtype}\t")
    with pytest.raises(ValueError, match="plan"):
        negative_job(settings, tiny_root, wildcards, "offscreen", tmp_path / "x.wav", log)
    with pytest.raises(ValueError, match="plan"):
        negative_job(settings, tiny_root, wildcards, "noise", tmp_path / "x.wav", log, plan=plan)
    with pytest.raises(ValueError, match="plan"):
        negative_job(settings, tiny_root, wildcards, "mixture", tmp_path / "x.wav", log)


# ----------------------------------------------------------------------------- mixture
def _measured_snr_db(mixture: Path, own: Path, donor: Path) -> float:
    """SNR of a mixture WAV, measured from the files alone: least squares of the mixture
    on (own, donor conformed to its format) gives each part's gain; SNR = their powers."""
    mix, _ = read_wav(mixture)
    a, _ = read_wav(own)
    b = make_offscreen(donor, audio_format(mixture))
    basis = np.stack([a.ravel(), b.ravel()], axis=1).astype(np.float64)
    (ga, gb), *_ = np.linalg.lstsq(basis, mix.ravel().astype(np.float64), rcond=None)
    return float(10 * np.log10(np.sum((ga * a) ** 2) / np.sum((gb * b) ** 2)))


def _mix(tmp_path: Path, name: str, settings: NegativeSettings, donor: str = "donor.wav") -> Path:
    out = tmp_path / name
    own = tmp_path / "own.wav"
    generate_negative(settings, "s4", "test", "v", "mixture", own, out, tmp_path / donor)
    return out


@pytest.mark.parametrize("snr_db", [-10.0, 0.0, 6.0, 20.0])
def test_mixture_has_the_configured_snr(tmp_path, snr_db):
    """Own 440 Hz tone (16 kHz mono) + a donor of another format (2 ch, 22.05 kHz, 3 s)."""
    own_fmt = AudioFormat()
    write_wav(tmp_path / "own.wav", tone(own_fmt, 440, 0.3), own_fmt)
    donor_fmt = AudioFormat(22050, 2, 22050 * 3, "PCM_16")
    write_wav(tmp_path / "donor.wav", tone(donor_fmt, 1300, 0.05), donor_fmt)
    out = _mix(tmp_path, "mix.wav", NegativeSettings(mixture_snr_db=snr_db))
    assert audio_format(out) == own_fmt
    got = _measured_snr_db(out, tmp_path / "own.wav", tmp_path / "donor.wav")
    assert abs(got - snr_db) < 0.05, got
    # the own sound is still there: at its own level, unless the sum had to be scaled
    # down to fit full scale (-10 dB: the donor peaks at 0.95, the sum would clip)
    mix, _ = read_wav(out)
    own, _ = read_wav(tmp_path / "own.wav")
    tail = slice(16000 * 3 + 100, None)  # after the 3 s donor: the own audio alone
    gain = float(np.dot(mix[tail, 0], own[tail, 0]) / np.dot(own[tail, 0], own[tail, 0]))
    assert np.allclose(mix[tail], gain * own[tail], atol=2**-14)
    if snr_db >= 0:
        assert gain == pytest.approx(1.0, abs=1e-4)
    else:
        assert gain < 0.9 and np.abs(mix).max() > 0.99
    assert not np.allclose(mix[:16000], own[:16000], atol=1e-3)


def test_loud_mixture_is_scaled_not_clipped_and_keeps_its_snr(tmp_path):
    fmt = AudioFormat()
    write_wav(tmp_path / "own.wav", tone(fmt, 440, 0.95), fmt)
    write_wav(tmp_path / "donor.wav", tone(fmt, 700, 0.9), fmt)
    out = _mix(tmp_path, "mix.wav", NegativeSettings())
    mix, _ = read_wav(out)
    assert 0.99 < np.abs(mix).max() <= 1.0 - 2.0**-15  # scaled to full scale, not clipped
    assert abs(_measured_snr_db(out, tmp_path / "own.wav", tmp_path / "donor.wav")) < 0.05


def test_mixture_with_a_silent_part_is_the_own_audio(tmp_path):
    fmt = AudioFormat()
    write_wav(tmp_path / "own.wav", tone(fmt, 440, 0.3), fmt)
    write_wav(tmp_path / "silent.wav", np.zeros((fmt.frames, 1)), fmt)
    own, _ = read_wav(tmp_path / "own.wav")
    assert np.array_equal(make_mixture(tmp_path / "own.wav", tmp_path / "silent.wav", fmt), own)
    assert not make_mixture(tmp_path / "silent.wav", tmp_path / "own.wav", fmt).any()


def test_mixture_regenerates_byte_identical_and_follows_its_settings(tmp_path):
    fmt = AudioFormat()
    write_wav(tmp_path / "own.wav", tone(fmt, 440, 0.3), fmt)
    write_wav(tmp_path / "donor.wav", tone(fmt, 900, 0.2), fmt)
    first = _sha(_mix(tmp_path, "a.wav", NegativeSettings(seed=1)))
    assert _sha(_mix(tmp_path, "b.wav", NegativeSettings(seed=1))) == first
    # nothing random: the donor comes from the (seeded) plan
    assert _sha(_mix(tmp_path, "c.wav", NegativeSettings(seed=7))) == first
    assert _sha(_mix(tmp_path, "d.wav", NegativeSettings(mixture_snr_db=3.0))) != first
    s = NegativeSettings(mixture_snr_db=-3.0)
    assert s.relevant("mixture") == {"mixture_snr_db": -3.0}
    assert NegativeSettings(**s.relevant("mixture")).mixture_snr_db == -3.0
    with pytest.raises(ValueError, match="needs a donor"):
        generate_negative(s, "s4", "test", "v", "mixture", tmp_path / "own.wav", tmp_path / "x")
