"""VGGish log-mel front end: agreement with torchvggish's NumPy definition, known
signals, normalisation of odd clips, and atomic, deterministic .npy output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avsrobust import features as F
from avsrobust.errors import InputError
from avsrobust.wav import AudioFormat, write_wav

SR = 16000
N5 = 5 * SR
SHAPE5 = (5, 1, 96, 64)


# ---------------------------------------------------------------- NumPy reference
# Written from torchvggish mel_features.py / vggish_input.waveform_to_examples,
# independently of the module under test.
def ref_frame(data: np.ndarray, window: int, hop: int) -> np.ndarray:
    n = 1 + (data.shape[0] - window) // hop
    shape = (n, window) + data.shape[1:]
    strides = (data.strides[0] * hop,) + data.strides
    return np.lib.stride_tricks.as_strided(data, shape=shape, strides=strides)


def ref_hz_to_mel(f):
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def ref_mel_matrix(n_mel=64, n_spec=257, sr=16000, lo=125.0, hi=7500.0) -> np.ndarray:
    bins_mel = ref_hz_to_mel(np.linspace(0.0, sr / 2.0, n_spec))
    edges = np.linspace(ref_hz_to_mel(lo), ref_hz_to_mel(hi), n_mel + 2)
    w = np.empty((n_spec, n_mel))
    for i in range(n_mel):
        lower, center, upper = edges[i : i + 3]
        lower_slope = (bins_mel - lower) / (center - lower)
        upper_slope = (upper - bins_mel) / (upper - center)
        w[:, i] = np.maximum(0.0, np.minimum(lower_slope, upper_slope))
    w[0, :] = 0.0
    return w


def ref_examples(x: np.ndarray) -> np.ndarray:
    """[N] float -> [n_examples, 96, 64] float64 (no padding/cropping to 5)."""
    frames = ref_frame(np.asarray(x, np.float64), 400, 160)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi / 400 * np.arange(400))  # periodic
    spec = np.abs(np.fft.rfft(frames * hann, 512))
    logmel = np.log(spec @ ref_mel_matrix() + 0.01)
    return ref_frame(logmel, 96, 96)


def sine(freq: float, n: int = N5, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / SR)).astype(np.float32)


def noise(seed: int, n: int = N5, amp: float = 0.3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-amp, amp, n).astype(np.float32)


def as_pcm16(x: np.ndarray) -> np.ndarray:
    """Quantise as a PCM_16 WAV would store it, so file and array inputs agree."""
    return (np.rint(np.asarray(x, np.float64) * 32768) / 32768).astype(np.float32)


def logmel(*clips: np.ndarray, num_examples: int = 5) -> np.ndarray:
    return F.vggish_logmel(torch.from_numpy(np.stack(clips)), num_examples).numpy()


def write(path, samples: np.ndarray, rate: int = SR) -> None:
    samples = np.asarray(samples)
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    write_wav(path, samples, AudioFormat(rate, channels, samples.shape[0], "PCM_16"))


# ---------------------------------------------------------------- shapes, pad, crop
def test_shape_and_dtype_for_5s_clips():
    out = F.vggish_logmel(torch.from_numpy(np.stack([noise(0), sine(440), noise(1)])))
    assert out.shape == (3, *SHAPE5)
    assert out.dtype == torch.float32


def test_short_clip_repeats_last_example():
    x = noise(2, n=2 * SR)  # 198 frames -> 2 examples
    out = logmel(x)[0]
    assert out.shape == SHAPE5
    np.testing.assert_array_equal(out[:2], logmel(x, num_examples=2)[0])
    for k in (2, 3, 4):
        np.testing.assert_array_equal(out[k], out[1])
    assert not np.array_equal(out[0], out[1])


def test_long_clip_keeps_first_examples():
    x = noise(3, n=7 * SR)
    np.testing.assert_allclose(logmel(x), logmel(x[:N5]), rtol=0, atol=1e-6)


def test_too_short_for_one_example_raises():
    with pytest.raises(ValueError, match="at least 15600 samples"):
        F.vggish_logmel(torch.zeros(1, 15599))
    assert F.vggish_logmel(torch.zeros(1, 15600)).shape == (1, *SHAPE5)


# ---------------------------------------------------------------- reference agreement
@pytest.mark.parametrize("signal", [noise(4, amp=0.9), sine(1000.0), sine(3217.0, amp=0.01)])
def test_matches_numpy_torchvggish_reference(signal):
    ref = ref_examples(signal)
    assert ref.shape == (5, 96, 64)
    got = logmel(signal)[0, :, 0]
    assert np.abs(got - ref).max() < 1e-3


def test_mel_matrix_matches_reference_and_properties():
    m = F.spectrogram_to_mel_matrix()
    assert m.shape == (257, 64)
    np.testing.assert_allclose(m, ref_mel_matrix(), rtol=0, atol=1e-12)
    assert np.all(m[0] == 0.0)
    assert np.all(m.max(axis=0) > 0.0)
    peaks = m.argmax(axis=0)
    assert np.all(np.diff(peaks) >= 0) and peaks[-1] > peaks[0]
    # Triangles in mel, not in Hz: differs from a Hz-interpolated filterbank.
    assert np.all((m >= 0.0) & (m <= 1.0))


# ---------------------------------------------------------------- known signals
def test_sine_peaks_in_band_nearest_1khz():
    edges_mel = np.linspace(ref_hz_to_mel(125.0), ref_hz_to_mel(7500.0), 66)
    centres_hz = 700.0 * (np.exp(edges_mel[1:-1] / 1127.0) - 1.0)
    nearest = int(np.argmin(np.abs(centres_hz - 1000.0)))
    out = logmel(sine(1000.0))[0, :, 0]  # [5, 96, 64]
    assert np.all(out.argmax(axis=-1) == nearest)


def test_silence_is_log_offset_everywhere():
    out = logmel(np.zeros(N5, np.float32))
    np.testing.assert_allclose(out, np.log(0.01), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- clip loading
def test_load_clip_normalises_stereo_44k(tmp_path):
    mono = as_pcm16(sine(700.0, amp=0.4) + noise(5, amp=0.1))
    write(tmp_path / "mono.wav", mono)
    t = np.arange(int(5 * 44100)) / 44100
    sig = 0.4 * np.sin(2 * np.pi * 700.0 * t)
    stereo = np.stack([sig, sig], axis=1)
    write(tmp_path / "stereo.wav", stereo, rate=44100)

    a = F.load_clip(tmp_path / "mono.wav")
    b = F.load_clip(tmp_path / "stereo.wav")
    assert a.shape == b.shape == (N5,) and a.dtype == b.dtype == np.float32
    np.testing.assert_array_equal(a, mono)  # PCM_16 read back as int16/32768
    pure = as_pcm16(sine(700.0, amp=0.4))
    fa, fb = logmel(pure, b)
    loud = fa > np.log(0.1)  # bins carrying the tone; skip the log floor
    assert np.abs(fa - fb)[loud].max() < 0.05


def test_load_clip_pads_and_crops(tmp_path):
    short, long = noise(6, n=2 * SR), noise(7, n=7 * SR)
    write(tmp_path / "short.wav", short)
    write(tmp_path / "long.wav", long)
    s = F.load_clip(tmp_path / "short.wav")
    lg = F.load_clip(tmp_path / "long.wav")
    assert s.shape == lg.shape == (N5,)
    np.testing.assert_array_equal(s[: 2 * SR], as_pcm16(short))
    assert not s[2 * SR :].any()
    np.testing.assert_array_equal(lg, as_pcm16(long)[:N5])
    assert F.load_clip(tmp_path / "long.wav", seconds=7.0).shape == (7 * SR,)


# ---------------------------------------------------------------- extract_features
@pytest.fixture
def clips(tmp_path):
    rng = np.random.default_rng(8)
    paths, arrays = [], []
    for i in range(5):
        x = as_pcm16(rng.uniform(-0.5, 0.5, N5) * (i + 1) / 5)
        p = tmp_path / "wav" / f"c{i}.wav"
        p.parent.mkdir(exist_ok=True)
        write(p, x)
        paths.append(p)
        arrays.append(x)
    return paths, np.stack(arrays)


def test_extract_features_writes_npy_deterministically(tmp_path, clips):
    paths, arrays = clips
    out = tmp_path / "out" / "feats.npy"
    F.extract_features(paths, out, batch_size=2)
    arr = np.load(out, allow_pickle=False)
    assert arr.shape == (5, *SHAPE5) and arr.dtype == np.float32
    for start in range(0, 5, 2):  # same batches as the writer: equal bytes
        np.testing.assert_array_equal(arr[start : start + 2], logmel(*arrays[start : start + 2]))
    np.testing.assert_allclose(arr, logmel(*arrays), rtol=0, atol=1e-5)  # any batching

    first = out.read_bytes()
    F.extract_features(paths, out, batch_size=2)
    assert out.read_bytes() == first
    np.save(tmp_path / "plain.npy", arr)
    assert (tmp_path / "plain.npy").read_bytes() == first  # np.save-compatible header
    assert sorted(p.name for p in out.parent.iterdir()) == ["feats.npy"]


def test_extract_features_empty_list(tmp_path):
    out = tmp_path / "empty.npy"
    F.extract_features([], out)
    arr = np.load(out, allow_pickle=False)
    assert arr.shape == (0, *SHAPE5) and arr.dtype == np.float32


def test_extract_features_bad_wav_leaves_no_output(tmp_path, clips):
    paths, _ = clips
    bad = tmp_path / "wav" / "bad.wav"
    bad.write_bytes(b"RIFF\x00garbage, not audio" * 10)
    out = tmp_path / "out" / "feats.npy"
    with pytest.raises(InputError, match="bad.wav") as info:
        F.extract_features([*paths[:3], bad, *paths[3:]], out, batch_size=2)
    assert info.value.where == str(bad)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_extract_features_failure_keeps_previous_output(tmp_path, clips):
    paths, _ = clips
    out = tmp_path / "feats.npy"
    F.extract_features(paths, out)
    before = out.read_bytes()
    with pytest.raises(InputError):
        F.extract_features([*paths, tmp_path / "missing.wav"], out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.npy", "wav"]


def test_cli(tmp_path, clips, capsys):
    paths, arrays = clips
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(p) for p in paths[2:]) + "\n", encoding="utf-8")
    out = tmp_path / "cli.npy"
    assert (
        F.main(
            ["--out", str(out), "--batch-size", "3", "--list", str(listing), *map(str, paths[:2])]
        )
        == 0
    )
    np.testing.assert_allclose(np.load(out), logmel(*arrays), rtol=0, atol=1e-5)

    assert F.main(["--out", str(tmp_path / "x.npy"), str(tmp_path / "nope.wav")]) == 1
    assert "nope.wav" in capsys.readouterr().err
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_reference():
    x = np.stack([noise(9, amp=0.9), sine(1000.0)])
    gpu = F.vggish_logmel(torch.from_numpy(x).cuda())
    assert gpu.device.type == "cuda" and gpu.shape == (2, *SHAPE5)
    for got, clip in zip(gpu.cpu().numpy(), x, strict=True):
        assert np.abs(got[:, 0] - ref_examples(clip)).max() < 1e-3
