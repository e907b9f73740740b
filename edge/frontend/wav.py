"""WAV reading and writing for the device and training (numpy + stdlib only).

:func:`read_wav` parses the RIFF chunks itself, so it reads 8-bit unsigned, 16/24/32-bit
integer PCM (24-bit also in 32-bit slots, as ``arecord -f S24_LE`` writes it) and 32/64-bit
IEEE float WAVs (plain or ``WAVE_FORMAT_EXTENSIBLE``; RIFF, or RF64/BW64, the 64-bit WAV of long recordings,
whose ``ds64`` chunk holds the sizes), mixes any number of channels down to
mono and resamples with :func:`resample` (windowed-sinc, polyphase). Sample rates from 1 kHz
to 384 kHz are read (a header outside them lies: resampling from it would ask for gigabytes).
A WAV streamed to a pipe, whose writer could not go back to fill in the sizes (a data size of 0,
or ffmpeg's and arecord's placeholders), is read to the end of the file. An odd-sized chunk is read with
or without the pad byte that should follow it (some writers leave it out). Anything it cannot read
raises ``ValueError`` naming the file, what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesense.frontend.audio import MAX_SAMPLE_RATE_HZ
from edgesense.frontend.resample import resample
from edgesense.schema.validate import require

__all__ = ["WavInfo", "probe_wav", "read_wav", "read_wav_native", "write_wav"]

logger = logging.getLogger(__name__)


_FORMAT_PCM = 0x0001
_FORMAT_IEEE_FLOAT = 0x0003
_FORMAT_EXTENSIBLE = 0xFFFE
_FORMAT_NAMES = {_FORMAT_PCM: "pcm", _FORMAT_IEEE_FLOAT: "float"}
_PCM_BITS = (8, 16, 24, 32)
_FLOAT_BITS = (32, 64)
_RIFF_HEADER_BYTES = 12
_CHUNK_HEADER_BYTES = 8
_FMT_MIN_BYTES = 16
_FMT_EXTENSIBLE_MIN_BYTES = 40
#: Data sizes streaming writers put in the header when they cannot seek back: ffmpeg's 0xFFFFFFFF; arecord to a
#: pipe (``ssh pi arecord -f S16_LE -r 16000 > a.wav``) its 2 GiB cap 0x80000000 (0x7FFFFF00 in older versions).
_STREAMING_SIZES = (0xFFFFFFFF, 0x80000000, 0x7FFFFF00, 0x7FFFF000, 0x7FFFFFFF)
_MAX_CHANNELS = 64
#: The 64-bit WAV (EBU Tech 3306 RF64, ITU-R BS.2088 BW64): RIFF's layout, its 32-bit sizes 0xFFFFFFFF and the
#: real ones in a ``ds64`` chunk first (RIFF size, data size, sample count: 64-bit each).
_RF64_MAGICS = (b"RF64", b"BW64")
_DS64_MIN_BYTES = 24
_SIZE_IN_DS64 = 0xFFFFFFFF
_KEY_CHUNK_IDS = (b"fmt ", b"data")
_CHUNK_ID_BYTES = 4
_ID_BYTES = (0x20, 0x7E)  # chunk ids are four printable ASCII characters
#: 24-bit samples in 32-bit slots (block align 4 per channel) sit in the slot's low three bytes: ALSA's S24_LE, the
#: layout ``arecord -f S24_LE`` (I2S microphones on a Pi) writes and ``aplay`` reads back.
_SLOT_24_BYTES = 4
#: Below any audio rate in use (telephony's 8 kHz is the lowest common one): a header's 1 Hz resampled
#: to 16 kHz makes 16000 samples of each one. The highest is the frontend's own bound.
_MIN_SAMPLE_RATE_HZ = 1000
#: 16-bit PCM <-> float, both ways (read_wav and write_wav): a file read and written again is unchanged.
_INT16_SCALE = 32768.0
_INT16_MIN, _INT16_MAX = -32768, 32767


@dataclass(frozen=True, kw_only=True)
class WavInfo:
    """What a WAV file's header says."""

    path: Path
    format: str  # "pcm" or "float"
    sample_rate_hz: int
    channels: int
    bits_per_sample: int
    num_frames: int

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.sample_rate_hz

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["path"] = str(self.path)
        return out


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Parsed:
    info: WavInfo
    data: memoryview
    sample_bytes: int  # bytes a sample takes in the data: bits / 8, or 4 for 24-bit samples in 32-bit slots


def _bad(path: Path, expected: str, found: str) -> ValueError:
    return ValueError(f"{path}: not a readable WAV file: expected {expected}, found {found}")


def _chunk_id_like(raw: bytes, pos: int) -> bool:
    ident = raw[pos:pos + 4]
    return len(ident) == _CHUNK_ID_BYTES and all(_ID_BYTES[0] <= b <= _ID_BYTES[1] for b in ident)


def _pad_left_out(raw: bytes, pos: int) -> bool:
    """Whether the odd-sized chunk before ``pos`` (the padded position of the next chunk) was written without its
    pad byte, as some writers do: the next chunk's id starts one byte earlier, and where the pad would end there
    is no id."""
    if raw[pos:pos + 4] in _KEY_CHUNK_IDS:
        return False
    return raw[pos - 1:pos + 3] in _KEY_CHUNK_IDS or (not _chunk_id_like(raw, pos) and _chunk_id_like(raw, pos - 1))


def _parse(path: Path, raw: bytes) -> _Parsed:
    if len(raw) == 0:
        raise _bad(path, "a RIFF/WAVE file", "an empty file (0 bytes)")
    if len(raw) < _RIFF_HEADER_BYTES:
        raise _bad(path, f"a {_RIFF_HEADER_BYTES}-byte RIFF header", f"only {len(raw)} bytes")
    magic, riff_size, kind = struct.unpack_from("<4sI4s", raw, 0)
    if magic not in (b"RIFF", *_RF64_MAGICS) or kind != b"WAVE":
        raise _bad(path, "'RIFF'....'WAVE' (little-endian WAV)", f"{magic!r}....{kind!r}")
    view = memoryview(raw)
    pos = _RIFF_HEADER_BYTES
    ds64_data_size: int | None = None  # an RF64 file's data size
    if magic in _RF64_MAGICS:
        chunk_id, size = struct.unpack_from("<4sI", raw, pos) if len(raw) >= pos + 8 else (b"", 0)
        if chunk_id != b"ds64" or size < _DS64_MIN_BYTES or len(raw) < pos + _CHUNK_HEADER_BYTES + _DS64_MIN_BYTES:
            raise _bad(path, f"a 'ds64' chunk of >= {_DS64_MIN_BYTES} bytes first (a {magic.decode()} file)",
                       f"{chunk_id!r} of {size} bytes" if chunk_id else "none (truncated file)")
        riff_size, ds64_data_size = struct.unpack_from("<QQ", raw, pos + _CHUNK_HEADER_BYTES)
        pos += _CHUNK_HEADER_BYTES + size + (size & 1)
    fmt: tuple[int, int, int, int, int] | None = None  # tag, channels, rate, block_align, bits
    data: memoryview | None = None
    while pos + _CHUNK_HEADER_BYTES <= len(raw):
        chunk_id, size = struct.unpack_from("<4sI", raw, pos)
        body = pos + _CHUNK_HEADER_BYTES
        available = len(raw) - body
        if chunk_id == b"fmt ":
            if size < _FMT_MIN_BYTES or available < _FMT_MIN_BYTES:
                raise _bad(path, f"a fmt chunk of >= {_FMT_MIN_BYTES} bytes", f"{min(size, available)} bytes")
            tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", raw, body)
            if tag == _FORMAT_EXTENSIBLE:
                if size < _FMT_EXTENSIBLE_MIN_BYTES or available < _FMT_EXTENSIBLE_MIN_BYTES:
                    raise _bad(path, f"an extensible fmt chunk of {_FMT_EXTENSIBLE_MIN_BYTES} bytes",
                               f"{min(size, available)} bytes")
                tag = struct.unpack_from("<H", raw, body + 24)[0]  # first two bytes of the SubFormat GUID
            fmt = (tag, channels, rate, block_align, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise _bad(path, "a 'fmt ' chunk before the 'data' chunk", "'data' first")
            if ds64_data_size is not None and size == _SIZE_IN_DS64:
                size = ds64_data_size  # 0 where the writer never filled ds64 in: read to the end, as below
            if size == 0 and available > 0 and _CHUNK_HEADER_BYTES + riff_size <= body:
                # Neither size was filled in (the RIFF chunk ends at this header): a writer that streamed
                # to a pipe (GStreamer's wavenc) or died before it could go back; the audio is the rest.
                size = available
            if size > available:
                if size in _STREAMING_SIZES:
                    size = available  # written by a streaming writer that never fixed up the header
                else:
                    raise _bad(path, f"{size} bytes of audio data (as the header declares)",
                               f"only {available} bytes (truncated file)")
            data = view[body:body + size]
            break
        pos = body + size + (size & 1)  # chunks are padded to even sizes
        if size & 1 and _pad_left_out(raw, pos):
            pos -= 1
    if fmt is None:
        raise _bad(path, "a 'fmt ' chunk", "none (truncated or not a WAV file)")
    if data is None:
        raise _bad(path, "a 'data' chunk", "none (truncated file)")
    tag, channels, rate, block_align, bits = fmt
    if tag not in _FORMAT_NAMES:
        raise _bad(path, "PCM (1) or IEEE float (3) sample format", f"format tag {tag:#06x}")
    allowed = _PCM_BITS if tag == _FORMAT_PCM else _FLOAT_BITS
    if bits not in allowed:
        raise _bad(path, f"{_FORMAT_NAMES[tag]} samples of {'/'.join(map(str, allowed))} bits", f"{bits} bits")
    if not 1 <= channels <= _MAX_CHANNELS:
        raise _bad(path, f"1..{_MAX_CHANNELS} channels", f"{channels}")
    if not _MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
        raise _bad(path, f"a sample rate of {_MIN_SAMPLE_RATE_HZ}..{MAX_SAMPLE_RATE_HZ} Hz", f"{rate} Hz")
    sample_bytes = bits // 8
    if bits == 24 and block_align == _SLOT_24_BYTES * channels:  # ALSA's S24_LE, as arecord -f S24_LE writes it
        sample_bytes = _SLOT_24_BYTES
    frame_bytes = channels * sample_bytes
    if block_align != frame_bytes:
        raise _bad(path, f"block align {frame_bytes} for {channels} x {bits}-bit", f"{block_align}")
    num_frames = len(data) // frame_bytes
    if len(data) % frame_bytes:
        logger.warning("%s: data chunk ends with a partial frame (%d bytes); ignoring it",
                       path, len(data) % frame_bytes)
        data = data[:num_frames * frame_bytes]
    info = WavInfo(path=path, format=_FORMAT_NAMES[tag], sample_rate_hz=rate, channels=channels,
                   bits_per_sample=bits, num_frames=num_frames)
    return _Parsed(info=info, data=data, sample_bytes=sample_bytes)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except IsADirectoryError as exc:
        raise ValueError(f"{path}: expected a WAV file, found a directory") from exc
    except FileNotFoundError as exc:
        raise ValueError(f"{path}: expected a WAV file, found nothing (no such file)") from exc


def _beyond_full_scale(x: np.ndarray) -> tuple[float, int]:
    """``(peak, samples beyond +-1)`` of float samples."""
    return (float(np.max(np.abs(x))) if x.size else 0.0), int(np.count_nonzero(np.abs(x) > 1.0))


def _say_clipped(path: Path, peak: float, clipped: int, samples: int) -> None:
    """The warning for a float WAV beyond full scale (at 16-bit scale, peaks near 32767, it becomes a square wave of
    +-1), once per file: ``peak`` and ``clipped`` of its ``samples``."""
    if peak > 1.0:
        logger.warning("%s: expected float samples within the +-1 full scale, found a peak of %.4g: %.1f%% of the "
                       "samples are clipped to +-1", path, peak, 100.0 * clipped / max(1, samples))


def _float_samples(parsed: _Parsed, data: memoryview) -> np.ndarray:
    """``data`` (whole samples of the float WAV ``parsed``) as the file holds them: float32 or float64."""
    return np.frombuffer(data, dtype="<f4" if parsed.info.bits_per_sample == 32 else "<f8")


def _checked_floats(path: Path, samples: np.ndarray) -> tuple[float, int]:
    """``(peak, samples beyond +-1)`` of a float WAV's own samples (:func:`_float_samples`); ValueError naming
    ``path`` for a NaN or an infinity, or a float64 too large for the float32 it is decoded to."""
    peak, clipped = _beyond_full_scale(samples)
    with np.errstate(over="ignore"):
        if not np.isfinite(np.float32(peak)):  # a NaN anywhere is the peak's too
            raise _bad(path, "finite float samples", "NaN or infinity")
    return peak, clipped


def _decode(parsed: _Parsed, *, say_clipped: bool = True) -> np.ndarray:
    """Samples as float32 (frames, channels) in [-1, 1]. ``say_clipped``: float samples beyond +-1 are said
    (:func:`_say_clipped`); a caller that decodes a file a block at a time says it once itself."""
    info, data = parsed.info, parsed.data
    bits = info.bits_per_sample
    if info.format == "float":
        samples = _float_samples(parsed, data)
        peak, clipped = _checked_floats(info.path, samples)
        if say_clipped:
            _say_clipped(info.path, peak, clipped, samples.size)
        x = np.clip(samples.astype(np.float32), -1.0, 1.0)
    elif bits == 8:
        x = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif bits == 16:
        x = np.frombuffer(data, dtype="<i2").astype(np.float32) / _INT16_SCALE
    elif bits == 24 and parsed.sample_bytes == _SLOT_24_BYTES:  # the low three bytes of each 32-bit slot
        slots = np.frombuffer(data, dtype="<u4") << np.uint32(32 - bits)  # to the top of an int32
        x = (slots.view(np.int32).astype(np.float64) / 2.0 ** 31).astype(np.float32)
    elif bits == 24:
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3)
        wide = np.zeros((b.shape[0], 4), dtype=np.uint8)
        wide[:, 1:] = b  # little-endian: the 24 bits become the top of an int32
        x = (wide.view("<i4")[:, 0].astype(np.float64) / 2.0 ** 31).astype(np.float32)
    else:
        x = (np.frombuffer(data, dtype="<i4").astype(np.float64) / 2.0 ** 31).astype(np.float32)
    return x.reshape(-1, info.channels)


def probe_wav(path: str | Path) -> WavInfo:
    """Read a WAV file's header (format, rate, channels, length); ``ValueError`` if unreadable."""
    path = Path(path)
    return _parse(path, _read_bytes(path)).info


def read_wav_native(path: str | Path) -> tuple[np.ndarray, int]:
    """A WAV file as float32 mono samples in [-1, 1] at its own rate, and that rate in Hz."""
    path = Path(path)
    parsed = _parse(path, _read_bytes(path))
    if parsed.info.num_frames == 0:
        raise _bad(path, "at least one audio frame", "an empty data chunk")
    frames = _decode(parsed)
    mono = frames[:, 0] if frames.shape[1] == 1 else frames.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32), parsed.info.sample_rate_hz


def read_wav(path: str | Path, *, sample_rate_hz: int = 16000) -> np.ndarray:
    """A WAV file as float32 mono samples in [-1, 1], resampled to ``sample_rate_hz``."""
    require(isinstance(sample_rate_hz, int) and sample_rate_hz > 0, "sample_rate_hz",
             "a positive integer", sample_rate_hz)
    samples, rate = read_wav_native(path)
    if rate != sample_rate_hz:
        samples = np.clip(resample(samples, rate, sample_rate_hz), -1.0, 1.0)
    return samples


# --------------------------------------------------------------------------- writing


def write_wav(path: str | Path, samples: np.ndarray, sample_rate_hz: int) -> Path:
    """Write float samples in [-1, 1] (or int16) as 16-bit PCM; (n,) mono or (n, channels). Floats are scaled
    as :func:`read_wav` reads them (by 32768, +1.0 clipped to 32767), so a file read and written back is unchanged."""
    require(isinstance(sample_rate_hz, int) and sample_rate_hz > 0, "sample_rate_hz",
             "a positive integer", sample_rate_hz)
    x = np.asarray(samples)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or not 1 <= x.shape[1] <= _MAX_CHANNELS:
        raise ValueError(f"samples: expected shape (n,) or (n, channels), got {np.shape(samples)}")
    if x.dtype == np.int16:
        pcm = x
    elif np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)):
            raise ValueError("samples: expected finite values, got NaN or infinity")
        pcm = np.clip(np.round(x * _INT16_SCALE), _INT16_MIN, _INT16_MAX).astype(np.int16)
    else:
        raise ValueError(f"samples: expected float in [-1, 1] or int16, got dtype {x.dtype}")
    path = Path(path)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(pcm.shape[1])
        f.setsampwidth(2)
        f.setframerate(sample_rate_hz)
        f.writeframes(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
    return path
