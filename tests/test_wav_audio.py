"""WAV writing/reading and the documented normalisations (resample, remix, pad/crop)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avsrobust.audio_ops import conform, fit_length, remix, resample
from avsrobust.errors import InputError
from avsrobust.wav import AudioFormat, audio_format, encode_wav, read_wav, write_wav


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_written_wav_reads_back_with_libsndfile(tmp_path, subtype):
    fmt = AudioFormat(22050, 2, 1000, subtype)
    rng = np.random.default_rng(0)
    samples = rng.uniform(-0.5, 0.5, size=(1000, 2))
    write_wav(tmp_path / "x.wav", samples, fmt)
    info = sf.info(str(tmp_path / "x.wav"))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (22050, 2, 1000, subtype)
    back, rate = read_wav(tmp_path / "x.wav")
    tol = {
        "PCM_U8": 2**-7,
        "PCM_16": 2**-15,
        "PCM_24": 2**-23,
        "PCM_32": 2**-31,
        "FLOAT": 1e-7,
        "DOUBLE": 1e-7,  # read back as float32
    }[subtype]
    assert rate == 22050
    np.testing.assert_allclose(back, samples, atol=tol)
    assert audio_format(tmp_path / "x.wav") == fmt


def test_pcm16_reads_as_int16_over_32768(tmp_path):
    fmt = AudioFormat(16000, 1, 4)
    ints = np.array([-32768, -1, 0, 32767], dtype=np.int16)
    write_wav(tmp_path / "x.wav", ints / 32768.0, fmt)
    back, _ = read_wav(tmp_path / "x.wav")
    assert np.array_equal(back[:, 0], ints.astype(np.float32) / 32768)


def test_encoding_is_deterministic_and_refuses_to_clip():
    fmt = AudioFormat(16000, 1, 3)
    a = encode_wav(np.array([0.1, -0.2, 0.3]), fmt)
    assert a == encode_wav(np.array([0.1, -0.2, 0.3]), fmt)
    with pytest.raises(ValueError, match="full scale"):
        encode_wav(np.array([0.1, 1.0, 0.3]), fmt)
    with pytest.raises(ValueError, match="shape"):
        encode_wav(np.zeros(4), fmt)


def test_failed_write_leaves_nothing_behind(tmp_path):
    fmt = AudioFormat(16000, 1, 3)
    with pytest.raises(ValueError):
        write_wav(tmp_path / "x.wav", np.array([2.0, 0, 0]), fmt)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a WAV file"),
        (b"RIFF\x00\x00garbage" * 10, "not a WAV file"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt \xff\xff\x00\x00garbage", "not a readable audio file"),
    ],
)
def test_unreadable_audio_names_the_file(tmp_path, content, message):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        read_wav(bad)
    assert str(bad) in str(err.value)
    with pytest.raises(InputError, match=str(bad)):
        audio_format(bad)


def test_missing_audio_names_the_file(tmp_path):
    with pytest.raises(InputError, match="missing.wav"):
        audio_format(tmp_path / "missing.wav")


def test_empty_audio_is_rejected(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(str(path), np.zeros((0, 1)), 16000, subtype="PCM_16")
    with pytest.raises(InputError, match="no samples"):
        read_wav(path)


def test_resample_keeps_a_tone_and_length():
    rate_in, rate_out = 44100, 16000
    t = np.arange(rate_in) / rate_in
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)[:, None]
    y = resample(x, rate_in, rate_out)
    assert y.shape == (16000, 1)
    spectrum = np.abs(np.fft.rfft(y[:, 0]))
    assert abs(np.argmax(spectrum) * rate_out / len(y) - 1000) < 2
    assert abs(np.sqrt(np.mean(y[1000:-1000] ** 2)) - 0.5 / np.sqrt(2)) < 0.01


def test_remix_averages_to_mono_and_repeats_mono():
    stereo = np.array([[1.0, 0.0], [0.5, 0.5]], dtype=np.float32)
    assert np.allclose(remix(stereo, 1)[:, 0], [0.5, 0.5])
    assert remix(np.array([[0.25]], dtype=np.float32), 2).tolist() == [[0.25, 0.25]]


def test_fit_length_pads_and_crops_at_the_end():
    x = np.arange(5, dtype=np.float32)[:, None]
    assert fit_length(x, 3)[:, 0].tolist() == [0, 1, 2]
    assert fit_length(x, 7)[:, 0].tolist() == [0, 1, 2, 3, 4, 0, 0]


def test_conform_never_exceeds_full_scale():
    rate = 44100
    square = np.sign(np.sin(2 * np.pi * 3000 * np.arange(rate) / rate)).astype(np.float32) * 0.999
    out = conform(np.stack([square, square], axis=1), rate, AudioFormat())
    assert out.shape == (80000, 1)
    assert np.abs(out).max() <= 1.0
    encode_wav(out, AudioFormat())  # would raise if any sample clipped


def test_pcm_u8_is_unsigned_and_matches_libsndfile(tmp_path):
    fmt = AudioFormat(8000, 1, 4, "PCM_U8")
    write_wav(tmp_path / "ours.wav", np.array([-1.0, -0.5, 0.0, 0.5]), fmt)
    sf.write(str(tmp_path / "ref.wav"), np.array([-1.0, -0.5, 0.0, 0.5]), 8000, subtype="PCM_U8")
    ours, _ = sf.read(str(tmp_path / "ours.wav"), dtype="int16")
    ref, _ = sf.read(str(tmp_path / "ref.wav"), dtype="int16")
    assert ours.tolist() == ref.tolist()
    data = (tmp_path / "ours.wav").read_bytes()
    assert data[-4:] == bytes([0, 64, 128, 192])


def _other_container(tmp_path, fmt_name: str) -> Path:
    path = tmp_path / "clip.wav"
    ext = {"MP3": ".mp3", "FLAC": ".flac", "OGG": ".ogg"}[fmt_name]
    sf.write(str(tmp_path / f"x{ext}"), np.zeros(16000), 16000, format=fmt_name)
    (tmp_path / f"x{ext}").rename(path)
    return path


@pytest.mark.parametrize("fmt_name", ["MP3", "FLAC"])
def test_other_formats_renamed_wav_are_refused(tmp_path, fmt_name):
    """libsndfile decodes an MP3 or FLAC named .wav; it is not what the file claims."""
    path = _other_container(tmp_path, fmt_name)
    for read in (audio_format, read_wav):
        with pytest.raises(InputError, match="not a WAV file") as err:
            read(path)
        assert str(path) in str(err.value)


@pytest.mark.parametrize("subtype", ["ULAW", "ALAW", "IMA_ADPCM", "GSM610"])
def test_wav_formats_negatives_cannot_copy_are_refused(tmp_path, subtype):
    path = tmp_path / "clip.wav"
    sf.write(str(path), np.zeros(16000), 16000, subtype=subtype, format="WAV")
    with pytest.raises(InputError, match=f"WAV sample format {subtype}.*not supported"):
        audio_format(path)


def test_rf64_and_extensible_wavs_are_read(tmp_path):
    for container in ("RF64", "WAVEX"):
        path = tmp_path / f"{container}.wav"
        sf.write(str(path), np.zeros((800, 2)), 16000, subtype="PCM_16", format=container)
        assert audio_format(path) == AudioFormat(16000, 2, 800, "PCM_16")
        assert read_wav(path)[0].shape == (800, 2)


def test_a_wav_cut_short_is_reported_with_both_lengths(tmp_path):
    path = tmp_path / "cut.wav"
    write_wav(path, np.zeros(80000), AudioFormat())
    data = path.read_bytes()
    path.write_bytes(data[: 44 + 40000])  # 1.25 s of the declared 5 s
    for read in (audio_format, read_wav):
        with pytest.raises(InputError, match="cut short") as err:
            read(path)
        assert "160000 bytes" in str(err.value) and "1.250 s of 5.000 s" in str(err.value)
    # a streamed WAV (size unknown in the header) is not "cut short"
    stream = bytearray(data)
    stream[40:44] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(stream))
    assert audio_format(path).frames == 80000


def test_a_fifo_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    for read in (audio_format, read_wav):  # would block forever in open()
        with pytest.raises(InputError, match="is a FIFO, not a regular file"):
            read(fifo)
