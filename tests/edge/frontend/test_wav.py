"""edgesense.frontend.wav: WAV formats, downmix, resampling, error messages."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesense.frontend.resample import ResampleOptions, StreamingResampler, resample
from edgesense.frontend.wav import probe_wav, read_wav, read_wav_native, write_wav

RATE = 16000
PCM, FLOAT, EXTENSIBLE = 1, 3, 0xFFFE


def _tone(freq_hz: float, rate: int, seconds: float = 0.25, amp: float = 0.5) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq_hz * np.arange(int(rate * seconds)) / rate)


def _encode(x: np.ndarray, fmt: int, bits: int) -> bytes:
    """Interleaved frames (n, channels) float in [-1, 1] -> little-endian sample bytes."""
    if fmt == FLOAT:
        return x.astype("<f4" if bits == 32 else "<f8").tobytes()
    if bits == 8:
        return np.clip(np.round(x * 128 + 128), 0, 255).astype(np.uint8).tobytes()
    full = np.clip(np.round(x * 2.0 ** (bits - 1)), -2 ** (bits - 1), 2 ** (bits - 1) - 1).astype(np.int64)
    if bits == 24:
        u = (full & 0xFFFFFF).astype("<u4").view(np.uint8).reshape(-1, 4)[:, :3]
        return u.tobytes()
    return full.astype("<i2" if bits == 16 else "<i4").tobytes()


def _wav_bytes(x: np.ndarray, *, rate: int, fmt: int = PCM, bits: int = 16, extensible: bool = False,
               before_data: bytes = b"", declared_data: int | None = None) -> bytes:
    frames = x[:, None] if x.ndim == 1 else x
    channels = frames.shape[1]
    data = _encode(frames, fmt, bits)
    block = channels * bits // 8
    if extensible:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt_body = struct.pack("<HHIIHHHHI", EXTENSIBLE, channels, rate, rate * block, block, bits, 22, bits, 0)
        fmt_body += struct.pack("<H", fmt) + guid_tail
    else:
        fmt_body = struct.pack("<HHIIHH", fmt, channels, rate, rate * block, block, bits)
    size = len(data) if declared_data is None else declared_data
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_body)) + fmt_body + before_data
    body += b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    "fmt,bits,extensible,tolerance",
    [(PCM, 8, False, 1 / 100), (PCM, 16, False, 1 / 30000), (PCM, 24, False, 1e-6), (PCM, 32, False, 1e-7),
     (FLOAT, 32, False, 1e-7), (FLOAT, 64, False, 1e-7), (PCM, 24, True, 1e-6), (FLOAT, 32, True, 1e-7)],
)
def test_reads_every_supported_format(tmp_path: Path, fmt: int, bits: int, extensible: bool, tolerance: float) -> None:
    x = _tone(440, RATE)
    path = tmp_path / "a.wav"
    path.write_bytes(_wav_bytes(x, rate=RATE, fmt=fmt, bits=bits, extensible=extensible))
    y = read_wav(path)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(y - x)) <= tolerance
    info = probe_wav(path)
    assert (info.format, info.bits_per_sample, info.num_frames) == ("float" if fmt == FLOAT else "pcm", bits, x.size)


def test_stdlib_wave_rejects_float_but_we_read_it(tmp_path: Path) -> None:
    path = tmp_path / "f.wav"
    path.write_bytes(_wav_bytes(_tone(300, RATE), rate=RATE, fmt=FLOAT, bits=32))
    with pytest.raises(wave.Error):
        wave.open(str(path)).close()
    assert np.max(np.abs(read_wav(path))) > 0.49


def test_float_samples_are_clipped_to_unit_range(tmp_path: Path) -> None:
    path = tmp_path / "loud.wav"
    path.write_bytes(_wav_bytes(np.array([2.0, -3.0, 0.5]), rate=RATE, fmt=FLOAT, bits=32))
    np.testing.assert_array_equal(read_wav(path), np.array([1.0, -1.0, 0.5], dtype=np.float32))


def test_a_float_wav_beyond_full_scale_is_said_to_be_clipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A float WAV written at 16-bit scale (speech peaking near 9830, not 0.3) was read as a square wave, 99.5 % of
    its samples at +-1, with nothing said: a warning names the file, its peak and the share clipped."""
    path = tmp_path / "scaled.wav"
    path.write_bytes(_wav_bytes(_tone(440, RATE, seconds=1.0, amp=0.3) * 32768, rate=RATE, fmt=FLOAT, bits=32))
    with caplog.at_level("WARNING", logger="edgesense.frontend.wav"):
        assert np.mean(np.abs(read_wav(path)) >= 1.0) > 0.99
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: expected float samples within the +-1 full scale, found a peak of 9830: 99.5% of the samples are "
        "clipped to +-1"]
    caplog.clear()
    path.write_bytes(_wav_bytes(_tone(440, RATE), rate=RATE, fmt=FLOAT, bits=32))
    with caplog.at_level("WARNING", logger="edgesense.frontend.wav"):
        read_wav(path)
    assert not caplog.records


def test_multichannel_is_mixed_down_by_mean(tmp_path: Path) -> None:
    left = _tone(440, RATE)
    frames = np.stack([left, -0.5 * left, np.zeros_like(left)], axis=1)
    path = tmp_path / "three.wav"
    path.write_bytes(_wav_bytes(frames, rate=RATE, fmt=FLOAT, bits=32))
    np.testing.assert_allclose(read_wav(path), left * 0.5 / 3, atol=1e-6)
    assert probe_wav(path).channels == 3


def test_skips_unknown_and_odd_sized_chunks(tmp_path: Path) -> None:
    x = _tone(440, RATE)
    odd_chunk = b"LIST" + struct.pack("<I", 3) + b"abc" + b"\x00"  # padded to an even size
    path = tmp_path / "list.wav"
    path.write_bytes(_wav_bytes(x, rate=RATE, before_data=odd_chunk))
    assert np.max(np.abs(read_wav(path) - x)) < 1e-4


@pytest.mark.parametrize("after", [b"", b"id3 " + struct.pack("<I", 4) + b"tags"])
def test_an_odd_sized_chunk_written_without_its_pad_byte_is_read(tmp_path: Path, after: bytes) -> None:
    x = _tone(440, RATE)
    odd_chunk = b"LIST" + struct.pack("<I", 13) + b"INFOISFT\x05\x00\x00\x00L"  # no pad byte after it
    path = tmp_path / "unpadded.wav"
    path.write_bytes(_wav_bytes(x, rate=RATE, before_data=odd_chunk + after))
    assert np.max(np.abs(read_wav(path) - x)) < 1e-4


def test_write_then_read_round_trip_and_stdlib_agrees(tmp_path: Path) -> None:
    x = _tone(1000, RATE).astype(np.float32)
    path = write_wav(tmp_path / "w.wav", x, RATE)
    with wave.open(str(path)) as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()) == (1, 2, RATE, x.size)
    assert np.max(np.abs(read_wav(path) - x)) < 1e-4


def test_a_16_bit_file_read_and_written_back_is_unchanged(tmp_path: Path) -> None:
    pcm = np.array([32767, -32768, 20000, 100, -1, 0], dtype="<i2")
    original = tmp_path / "in.wav"
    with wave.open(str(original), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes(pcm.tobytes())
    copy = write_wav(tmp_path / "out.wav", read_wav(original), RATE)
    with wave.open(str(copy)) as f:
        assert np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").tolist() == pcm.tolist()
    full = write_wav(tmp_path / "full.wav", np.array([1.0, -1.0], np.float32), RATE)
    assert read_wav(full).ravel().tolist() == [32767 / 32768, -1.0]  # +1.0 clips to the largest code


def test_write_wav_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="samples"):
        write_wav(tmp_path / "x.wav", np.zeros((2, 2, 2)), RATE)
    with pytest.raises(ValueError, match="sample_rate_hz"):
        write_wav(tmp_path / "x.wav", np.zeros(4), 0)
    with pytest.raises(ValueError, match="finite"):
        write_wav(tmp_path / "x.wav", np.array([np.nan]), RATE)


def test_read_resamples_other_rates(tmp_path: Path) -> None:
    rate = 22050
    path = tmp_path / "r.wav"
    path.write_bytes(_wav_bytes(_tone(1000, rate, seconds=0.5), rate=rate, fmt=FLOAT, bits=32))
    y = read_wav(path, sample_rate_hz=RATE)
    expected = _tone(1000, RATE, seconds=0.5)
    assert y.size == expected.size
    edge = 200  # the ends see the zero padding
    assert np.max(np.abs(y[edge:-edge] - expected[edge:-edge])) < 1e-3
    native, native_rate = read_wav_native(path)
    assert native_rate == rate and native.size == int(rate * 0.5)


@pytest.mark.parametrize("from_hz,to_hz", [(44100, 16000), (8000, 16000), (48000, 16000), (16000, 22050)])
def test_resample_preserves_in_band_tones(from_hz: int, to_hz: int) -> None:
    x = _tone(1000, from_hz, seconds=0.3)
    y = resample(x, from_hz, to_hz)
    expected = _tone(1000, to_hz, seconds=0.3)
    assert y.dtype == np.float32 and y.size == expected.size
    edge = 300
    assert np.max(np.abs(y[edge:-edge] - expected[edge:-edge])) < 1e-3


def test_resample_removes_content_above_the_new_nyquist() -> None:
    x = _tone(10000, 44100, seconds=0.3)  # above 8 kHz: must not alias into the 16 kHz output
    y = resample(x, 44100, RATE)
    edge = 300
    rms_db = 20 * np.log10(np.sqrt(np.mean(y[edge:-edge] ** 2)) / np.sqrt(np.mean(x ** 2)))
    assert rms_db < -60


def test_resample_same_rate_is_identity_and_dc_is_kept() -> None:
    x = np.linspace(-0.5, 0.5, 101)
    np.testing.assert_array_equal(resample(x, RATE, RATE), x.astype(np.float32))
    y = resample(np.full(4000, 0.25), 48000, RATE)
    np.testing.assert_allclose(y[100:-100], 0.25, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 500), from_hz=st.sampled_from([8000, 11025, 22050, 44100, 48000]),
       to_hz=st.sampled_from([8000, 16000, 22050]))
def test_resample_length(n: int, from_hz: int, to_hz: int) -> None:
    y = resample(np.ones(n), from_hz, to_hz)
    assert y.size == -(-n * to_hz // from_hz)


@pytest.mark.parametrize("rates,name", [((True, 16000), "from_hz"), ((16000, True), "to_hz"),
                                        ((16000.0, 8000), "from_hz"), ((16000, 0), "to_hz")])
def test_a_rate_that_is_no_positive_integer_is_refused_naming_it(rates, name) -> None:
    """``True`` passed as a rate of 1 Hz (a bool is an int to isinstance): 10 samples became 160000."""
    with pytest.raises(ValueError, match=name):
        resample(np.zeros(10), *rates)
    with pytest.raises(ValueError, match=name):
        StreamingResampler(*rates)


def _chirp(rate: int, seconds: float = 1.0) -> np.ndarray:
    """A sine sweep from 50 Hz to just below the lower Nyquist frequency of the tests."""
    t = np.arange(int(rate * seconds)) / rate
    return 0.5 * np.sin(2 * np.pi * (50 * t + 3700 * t ** 2 / seconds))


def _chunked(x: np.ndarray, sizes, from_hz: int, to_hz: int) -> np.ndarray:
    r = StreamingResampler(from_hz, to_hz)
    out, start, k = [], 0, 0
    while start < x.size:
        size = sizes[k % len(sizes)]
        out.append(r.push(x[start:start + size]))
        start, k = start + size, k + 1
    out.append(r.flush())
    assert r.samples_in == x.size and r.samples_out == sum(o.size for o in out)
    return np.concatenate(out)


@pytest.mark.parametrize("chunk", [1, 7, 160, 441, 4096])
@pytest.mark.parametrize("from_hz,to_hz", [(44100, 16000), (48000, 16000), (8000, 16000), (22050, 16000)])
def test_streaming_resampler_equals_one_pass_on_a_chunked_sweep(chunk: int, from_hz: int, to_hz: int) -> None:
    x = _chirp(from_hz)
    y = _chunked(x, [chunk], from_hz, to_hz)
    reference = resample(x, from_hz, to_hz)
    assert y.dtype == np.float32 and y.size == reference.size
    np.testing.assert_allclose(y, reference, atol=1e-3)


@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(0, 4096), min_size=1, max_size=8).filter(any),
       from_hz=st.sampled_from([11025, 44100, 48000]))
def test_streaming_resampler_any_chunking(sizes, from_hz: int) -> None:
    x = _chirp(from_hz, seconds=0.4)
    np.testing.assert_allclose(_chunked(x, sizes, from_hz, RATE), resample(x, from_hz, RATE), atol=1e-3)


def test_streaming_resampler_emits_as_soon_as_the_input_is_there() -> None:
    r = StreamingResampler(48000, RATE)
    assert r.lookahead_samples > 0 and r.push(np.zeros(r.lookahead_samples)).size == 0  # not yet
    assert r.push(np.zeros(3)).size == 1  # inputs 0..lookahead+2: output 0 (at input 0) is complete
    assert r.samples_out == 1
    r.flush()
    with pytest.raises(ValueError, match="flushed"):
        r.push(np.zeros(3))
    same = StreamingResampler(RATE, RATE)
    np.testing.assert_array_equal(same.push(np.arange(5.0)), np.arange(5.0, dtype=np.float32))
    assert same.lookahead_samples == 0 and same.flush().size == 0


@pytest.mark.parametrize("from_hz,to_hz", [(8000, 16000), (11025, 16000), (44100, 16000), (48000, 16000),
                                           (16000, 44100)])
def test_streaming_resampler_returns_every_output_whose_input_is_there(from_hz: int, to_hz: int) -> None:
    r = StreamingResampler(from_hz, to_hz)
    for _ in range(3 * r.up // r.down + r.lookahead_samples + 5):
        r.push(np.zeros(1))
        # Output n needs the input up to floor(n * from_hz / to_hz) + lookahead_samples.
        complete = [n for n in range(r.samples_out + 3 * r.up)
                    if (n * r.down) // r.up + r.lookahead_samples <= r.samples_in - 1]
        assert r.samples_out == len(complete), (r.samples_in, r.samples_out, len(complete))


def test_resample_options_validated() -> None:
    with pytest.raises(ValueError, match="rolloff"):
        ResampleOptions(rolloff=1.5)
    # Of the wrong type, or endless: one ValueError naming the field, not a TypeError from a comparison (or an
    # OverflowError when the filter is built).
    for field, bad in (("zero_crossings", "32"), ("zero_crossings", float("inf")), ("zero_crossings", True),
                       ("kaiser_beta", None), ("kaiser_beta", float("nan")), ("rolloff", "0.9")):
        with pytest.raises(ValueError, match=f"^{field}: expected"):
            ResampleOptions(**{field: bad})
    with pytest.raises(ValueError, match="from_hz"):
        resample(np.ones(4), 0, RATE)
    with pytest.raises(ValueError, match="1-D"):
        resample(np.ones((2, 2)), 8000, RATE)


@pytest.mark.parametrize(
    "name,content,found",
    [
        ("empty.wav", b"", "empty file"),
        ("short.wav", b"RIFF", "only 4 bytes"),
        ("text.wav", b"hello, this is not audio at all", "b'hell'"),
        ("truncated.wav", None, "truncated"),
        ("adpcm.wav", None, "format tag 0x0002"),
        ("bits12.wav", None, "12 bits"),
        ("nodata.wav", None, "'data' chunk"),
        ("zero.wav", None, "at least one audio frame"),
    ],
)
def test_unreadable_files_raise_value_error_naming_file(tmp_path: Path, name: str, content: bytes | None,
                                                        found: str) -> None:
    x = _tone(440, RATE)
    good = _wav_bytes(x, rate=RATE)
    if name == "truncated.wav":
        content = good[: len(good) // 2]
    elif name == "adpcm.wav":
        content = good[:20] + struct.pack("<H", 2) + good[22:]
    elif name == "bits12.wav":
        content = good[:34] + struct.pack("<H", 12) + good[36:]
    elif name == "nodata.wav":
        content = good[:36]
    elif name == "zero.wav":
        content = _wav_bytes(np.zeros(0), rate=RATE)
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        read_wav(path)
    message = str(info.value)
    assert str(path) in message and "expected" in message and found in message


def test_missing_file_and_directory_raise_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        read_wav(tmp_path / "nope.wav")
    with pytest.raises(ValueError, match="directory"):
        read_wav(tmp_path)


@pytest.mark.parametrize("riff_size", [0, 8, 36])  # libsndfile to a pipe: 8; GStreamer's wavenc: the header's 36
def test_a_wav_streamed_with_both_sizes_left_at_zero_is_read_to_the_end(tmp_path: Path, riff_size: int) -> None:
    x = _tone(440, RATE)
    streamed = bytearray(_wav_bytes(x, rate=RATE, declared_data=0))
    streamed[4:8] = struct.pack("<I", riff_size)
    path = tmp_path / "pipe.wav"
    path.write_bytes(bytes(streamed))  # was "expected at least one audio frame, found an empty data chunk"
    assert np.max(np.abs(read_wav(path) - x)) < 1e-4
    assert probe_wav(path).num_frames == x.size


def test_an_empty_data_chunk_the_riff_size_accounts_for_stays_empty(tmp_path: Path) -> None:
    """A data size of 0 inside a RIFF chunk that goes on past it (a LIST after it) is a real empty chunk."""
    trailer = b"LIST" + struct.pack("<I", 4) + b"INFO"
    good = _wav_bytes(np.zeros(0), rate=RATE)
    riff = good[8:] + trailer
    path = tmp_path / "empty.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)
    with pytest.raises(ValueError, match="at least one audio frame"):
        read_wav(path)


@pytest.mark.parametrize("rate_hz", [0xFFFFFFFF, 2_000_000, 1, 999])
def test_a_header_with_an_absurd_sample_rate_is_refused_before_resampling(tmp_path: Path, rate_hz: int) -> None:
    """4294967295 Hz asked numpy for 433 GiB (a MemoryError: the CLI said "out of memory ... a smaller
    batch_size", training died instead of skipping the file); 1 Hz made 64 million samples of a 0.25 s file."""
    lying = bytearray(_wav_bytes(_tone(440, RATE), rate=RATE))
    lying[24:28] = struct.pack("<I", rate_hz)
    path = tmp_path / "liar.wav"
    path.write_bytes(bytes(lying))
    for read in (read_wav, probe_wav):
        with pytest.raises(ValueError) as info:
            read(path)
        assert str(info.value) == (f"{path}: not a readable WAV file: expected a sample rate of 1000..384000 Hz, "
                                   f"found {rate_hz} Hz")


@pytest.mark.parametrize("rate_hz", [8000, 44100, 48000, 384000])
def test_every_real_sample_rate_is_still_read(tmp_path: Path, rate_hz: int) -> None:
    path = tmp_path / "r.wav"
    path.write_bytes(_wav_bytes(_tone(440, rate_hz, seconds=0.05), rate=rate_hz))
    assert read_wav(path).size == int(RATE * 0.05)


@pytest.mark.parametrize("placeholder", [0x80000000, 0x7FFFFF00])
def test_arecord_piped_to_a_file_is_read_to_the_end(tmp_path: Path, placeholder: int) -> None:
    """``ssh pi arecord -f S16_LE -r 16000 > a.wav`` stopped with Ctrl-C: arecord cannot seek back on the pipe, so
    its header keeps the sizes it wrote first (data: its 2 GiB cap; RIFF: that + 36). Was refused as truncated."""
    x = _tone(440, RATE)
    piped = bytearray(_wav_bytes(x, rate=RATE, declared_data=placeholder))
    piped[4:8] = struct.pack("<I", (placeholder + 36) & 0xFFFFFFFF)
    path = tmp_path / "arecord.wav"
    path.write_bytes(bytes(piped))
    assert np.max(np.abs(read_wav(path) - x)) < 1e-4
    assert probe_wav(path).num_frames == x.size


def _rf64(riff: bytes, *, magic: bytes = b"RF64", data_size: int | None = None) -> bytes:
    """``riff`` (a RIFF WAV of _wav_bytes) as the 64-bit WAV writes it (libsndfile's SF_FORMAT_RF64, ``ffmpeg -rf64
    always``): 'RF64', both 32-bit sizes 0xFFFFFFFF, the real ones in a 'ds64' chunk first."""
    data_at = riff.index(b"data")
    size = struct.unpack_from("<I", riff, data_at + 4)[0] if data_size is None else data_size
    frames = size // 4  # 16-bit stereo in the tests below
    ds64 = b"ds64" + struct.pack("<IQQQI", 28, len(riff) + 36 - 8, size, frames, 0)
    return (magic + b"\xff\xff\xff\xff" + b"WAVE" + ds64 + riff[12:data_at] + b"data" + b"\xff\xff\xff\xff"
            + riff[data_at + 8:])


@pytest.mark.parametrize("magic", [b"RF64", b"BW64"])
def test_an_rf64_wav_is_read_with_the_sizes_its_ds64_chunk_holds(tmp_path: Path, magic: bytes) -> None:
    """The 64-bit WAV that recorders (Zoom, Sound Devices) and libsndfile write for long recordings was refused:
    "expected 'RIFF'....'WAVE' (little-endian WAV), found b'RF64'....b'WAVE'" (libsndfile 1.2.0's files too)."""
    x = np.stack([_tone(440, RATE), _tone(660, RATE, amp=0.25)], axis=1)
    path = tmp_path / "long.wav"
    path.write_bytes(_rf64(_wav_bytes(x, rate=RATE) + b"LIST" + struct.pack("<I", 4) + b"INFO", magic=magic))
    info = probe_wav(path)
    assert (info.format, info.channels, info.bits_per_sample, info.num_frames) == ("pcm", 2, 16, x.shape[0])
    assert np.max(np.abs(read_wav(path) - x.mean(axis=1))) < 1e-4
    cut = tmp_path / "cut.wav"
    cut.write_bytes(_rf64(_wav_bytes(x, rate=RATE), data_size=x.size * 2 + 400))
    with pytest.raises(ValueError, match=rf"^{cut}: not a readable WAV file: expected {x.size * 2 + 400} bytes of "
                                         r"audio data \(as the header declares\), found only \d+ bytes"):
        read_wav(cut)
    no_ds64 = tmp_path / "no_ds64.wav"
    no_ds64.write_bytes(b"RF64" + _wav_bytes(x, rate=RATE)[4:])
    with pytest.raises(ValueError, match=rf"^{no_ds64}: not a readable WAV file: expected a 'ds64' chunk of >= 24 "
                                         r"bytes first \(a RF64 file\), found b'fmt ' of 16 bytes$"):
        read_wav(no_ds64)


def test_24_bit_samples_in_32_bit_slots_are_read_as_arecord_writes_them(tmp_path: Path) -> None:
    """``arecord -f S24_LE`` (I2S microphones on a Pi) writes 24 bits per sample in 4-byte blocks, the sample in
    the slot's low three bytes (ALSA's S24_LE; the top byte its sign or zero): it was refused ("expected block
    align 3 for 1 x 24-bit, found 4")."""
    ints = np.array([0, 2 ** 22, -2 ** 22, 2 ** 23 - 1, -2 ** 23, 1, -1], dtype=np.int64)
    for top in ("sign", "zero"):  # drivers fill the top byte either way
        data = (ints if top == "sign" else ints & 0xFFFFFF).astype("<i4").tobytes()
        fmt_body = struct.pack("<HHIIHH", PCM, 1, 16000, 16000 * 4, 4, 24)
        body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_body)) + fmt_body
        body += b"data" + struct.pack("<I", len(data)) + data
        path = tmp_path / f"i2s-{top}.wav"
        path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
        info = probe_wav(path)
        assert (info.bits_per_sample, info.channels, info.num_frames) == (24, 1, len(ints))
        samples, rate = read_wav_native(path)
        assert rate == 16000
        np.testing.assert_array_equal(samples, (ints / 2.0 ** 23).astype(np.float32))


def test_8_bit_samples_are_scaled_by_128(tmp_path: Path) -> None:
    # Unsigned 8-bit: 0 is -1.0, 128 silence, 255 the largest code below +1.0 (as 16-bit's 32767 / 32768).
    fmt_body = struct.pack("<HHIIHH", PCM, 1, RATE, RATE, 1, 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_body)) + fmt_body
    body += b"data" + struct.pack("<I", 4) + bytes([0, 128, 255, 64])
    path = tmp_path / "u8.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert read_wav(path).tolist() == [-1.0, 0.0, 127 / 128, -0.5]


def test_write_wav_rounds_floats_to_the_nearest_code(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "r.wav", np.array([1.6, -1.6, 0.4, -0.4]) / 32768, RATE)
    with wave.open(str(path)) as f:
        assert np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").tolist() == [2, -2, 0, 0]


def test_a_file_resampled_on_reading_stays_in_full_scale(tmp_path: Path) -> None:
    # A clipped 44.1 kHz tone: the resampler's ringing overshoots full scale (to 1.03 here); read_wav clips it.
    clipped = np.clip(4.0 * _tone(440, 44100, seconds=1.0), -1.0, 1.0)
    path = write_wav(tmp_path / "hot.wav", clipped, 44100)
    assert np.abs(resample(read_wav_native(path)[0], 44100, RATE)).max() > 1.01
    assert np.abs(read_wav(path)).max() <= 1.0
