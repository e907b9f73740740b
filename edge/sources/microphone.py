"""The microphone source: a sounddevice input stream whose callback only copies into a ring buffer."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from edgesense.frontend.resample import StreamingResampler
from edgesense.pacing import Paced
from edgesense.schema.validate import is_int, is_number, one_line, require
from edgesense.sources.base import (
    MAX_DEVICE_INDEX,
    MS_PER_S,
    AudioChunk,
    SourceReadError,
    _SourceBase,
    monotonic_ms,
    require_stall_timeout_ms,
)
from edgesense.sources.ringbuffer import AudioRingBuffer, RingBufferOptions

__all__ = ["MicrophoneOptions", "MicrophoneSource", "MicrophoneStallError", "list_input_devices"]

logger = logging.getLogger(__name__)


TARGET_SAMPLE_RATE_HZ = 16000
#: The highest rate a microphone is opened at (audio interfaces stop at 192 kHz); WAV files and frontends take up
#: to :data:`edgesense.frontend.audio.MAX_SAMPLE_RATE_HZ`.
MAX_DEVICE_SAMPLE_RATE_HZ = 192000
#: The longest ring buffer and read timeout a microphone takes (a minute): longer ones overflowed or failed to
#: allocate only when the device opened.
MAX_BUFFER_MS = 60_000.0
MAX_READ_TIMEOUT_MS = 60_000.0
#: ``stall_timeout_ms``'s default: far above a transient stall (a driver hiccup, a USB resume, a sound server that
#: restarts: seconds), short enough that a deaf microphone's service is restarted within a minute. The loop goes
#: round while the microphone is out (each read that times out is a round), so the service's watchdog never sees it.
MICROPHONE_STALL_TIMEOUT_MS = 30_000.0
#: How far the audio clock (the sample count since the first callback) may fall behind the monotonic clock
#: (a block's arrival) before it is re-anchored: well above callback jitter, so only a stall or audio lost in
#: the driver moves it.
CLOCK_RESYNC_TOLERANCE_MS = 100.0
#: How long (arrival time) the audio clock must stay behind by more than the tolerance before it is re-anchored:
#: a late callback whose samples waited in PortAudio's buffer is followed by the rest of them back to back, and
#: the lag is gone before this; after a stall the audio comes at its pace and the lag stays.
CLOCK_RESYNC_CONFIRM_MS = 50.0
#: Clock anchors kept (device sample index, stream time); the oldest ones are dropped, long read by then.
MAX_CLOCK_ANCHORS = 32
#: ``gain_db``'s range: down 20 dB (a microphone ten times too hot, whose capture gain cannot be lowered) to up
#: 40 dB (a hundred times too quiet: past that the make-up gain mostly raises the microphone's own noise).
MIN_GAIN_DB = -20.0
MAX_GAIN_DB = 40.0
#: A sample at or past this magnitude is at full scale: the largest positive 16-bit sample, 32767 / 32768, as float
#: (a 24- or 32-bit converter's largest is above it, and its negative full scale, -1.0, is past it too). Speech at a
#: good level peaks well below it (-6 to -3 dBFS); only a converter that clipped delivers it.
FULL_SCALE = 32767 / 32768
#: The audio over which the share at full scale is measured (seconds, as the microphone delivered it): a few
#: command words, and short enough that a user who just said some hears about it while they still stand there.
CLIPPING_WINDOW_S = 10.0
#: The share of a window at full scale that is said as clipping (a fraction: 0.001 is 10 ms in 10 s). A word whose
#: peaks are clipped by a few dB holds runs of a fraction of a millisecond at full scale at each of its loudest pitch
#: periods (a hundred or so in a word), milliseconds to tens of milliseconds in all, and a word clipped by 12 dB
#: (7 points of accuracy lost) hundreds; a click or a pop of the plug holds a millisecond or so, and a good level none.
CLIPPING_WARN_SHARE = 0.001
#: A microphone too quiet is said once, from the loudest second (RMS, after ``gain_db``: what the model hears) of
#: :data:`QUIET_CHECK_S` of audio: under :data:`QUIET_WARN_DBFS` it is at least about 20 dB under a good level (a
#: word said at a metre peaks at -30 to -20 dBFS in a one-second window; a quiet room's noise is -60 to -50), said
#: only when that second stood :data:`QUIET_HEARD_DB` or more above the quietest (something was heard above the
#: room: a word, or another sound, so the line says "if that was someone speaking"). A quiet room where nobody speaks
#: (seconds within a few dB of each other) says nothing: the next :data:`QUIET_CHECK_S` are checked, until a second
#: reaches :data:`QUIET_WARN_DBFS` or one is heard. Digital silence (every sample 0: capture switched off) is said.
QUIET_CHECK_S = 300.0
QUIET_LEVEL_WINDOW_S = 1.0
QUIET_WARN_DBFS = -45.0
QUIET_HEARD_DB = 10.0
LEVEL_FLOOR_DBFS = -120.0  # the level of digital silence (log10 of zero has none)
S_PER_MIN = 60.0
DB_PER_POWER_DECADE = 10.0  # dB = 10 log10(power ratio)
PERCENT = 100.0
DB_PER_AMPLITUDE_DECADE = 20.0  # dB = 20 log10(amplitude ratio)


# --------------------------------------------------------------------------- microphone


DeviceSpec = Union[int, str, None]


@dataclass(frozen=True, kw_only=True)
class MicrophoneOptions:
    """A live microphone read through PortAudio (sounddevice).

    ``device``: a PortAudio device index, a (sub)string of its name, or ``None``
    for the default input. ``buffer_ms``: ring-buffer length; when the loop falls
    further behind than that, the oldest audio is dropped and counted.
    ``read_timeout_ms``: how long :meth:`MicrophoneSource.read` waits for a chunk
    before it raises :class:`SourceReadError`. ``enabled``: whether the device loop opens
    the microphone (the ``audio:`` section of a device config).

    ``gain_db``: a make-up gain applied to the samples as they are read (after resampling, then clipped to full
    scale), in [:data:`MIN_GAIN_DB`, :data:`MAX_GAIN_DB`]: for a microphone too quiet whose capture gain
    (``alsamixer``) cannot be raised further. 0 leaves the samples as the microphone delivered them. It does not
    undo clipping: a microphone that clips needs its capture gain lowered.

    ``stall_timeout_ms``: a read that finds no audio, when none has come for this long (no callback delivered
    any since, or since the stream started) while PortAudio still reports the stream active (an ALSA driver or a
    USB microphone's firmware wedged, a sound server that suspended the source), raises
    :class:`MicrophoneStallError`, a ``RuntimeError``: the process exits and its service manager restarts it
    (PortAudio reads its devices afresh only in a new process). It is checked when a read times out, so the run
    ends within a ``read_timeout_ms`` after it (at the first timed-out read where it is shorter). ``None``: never
    (a deaf microphone is retried for ever).
    """

    enabled: bool = True
    device: DeviceSpec = None
    sample_rate_hz: int = TARGET_SAMPLE_RATE_HZ
    chunk_ms: float = 20.0
    buffer_ms: float = 2000.0
    read_timeout_ms: float = 1000.0
    stall_timeout_ms: float | None = MICROPHONE_STALL_TIMEOUT_MS
    gain_db: float = 0.0

    def __post_init__(self) -> None:
        require(isinstance(self.enabled, bool), "enabled", "true or false", self.enabled)
        require(self.device is None or (isinstance(self.device, str) and self.device.strip() != "")
                or (is_int(self.device) and 0 <= self.device <= MAX_DEVICE_INDEX), "device",
                f"null (the default input), a device index in [0, {MAX_DEVICE_INDEX}] or a device name", self.device)
        require(is_int(self.sample_rate_hz) and 0 < self.sample_rate_hz <= MAX_DEVICE_SAMPLE_RATE_HZ, "sample_rate_hz",
                 f"an integer in [1, {MAX_DEVICE_SAMPLE_RATE_HZ}]", self.sample_rate_hz)
        require(is_number(self.chunk_ms) and self.chunk_ms > 0, "chunk_ms", "a positive number", self.chunk_ms)
        require(is_number(self.buffer_ms) and 2 * self.chunk_ms <= self.buffer_ms <= MAX_BUFFER_MS, "buffer_ms",
                 f"a number in [2 * chunk_ms = {2 * self.chunk_ms:g}, {MAX_BUFFER_MS:g}]", self.buffer_ms)
        require(is_number(self.read_timeout_ms) and 0 < self.read_timeout_ms <= MAX_READ_TIMEOUT_MS, "read_timeout_ms",
                 f"a positive number up to {MAX_READ_TIMEOUT_MS:g}", self.read_timeout_ms)
        require_stall_timeout_ms(self.stall_timeout_ms)
        require(is_number(self.gain_db) and MIN_GAIN_DB <= self.gain_db <= MAX_GAIN_DB, "gain_db",
                f"a number of dB in [{MIN_GAIN_DB:g}, {MAX_GAIN_DB:g}]", self.gain_db)


class MicrophoneStallError(RuntimeError):
    """No audio has come from a live microphone for its ``stall_timeout_ms`` while PortAudio still reports the
    stream active: its driver or sound server stopped delivering, and only a new process reopens it afresh."""


def _full_scale(samples: np.ndarray) -> int:
    """How many of ``samples`` are at full scale (magnitude :data:`FULL_SCALE` or more)."""
    return int(np.count_nonzero(samples >= FULL_SCALE)) + int(np.count_nonzero(samples <= -FULL_SCALE))


def _import_sounddevice():
    try:
        import sounddevice
    except OSError as exc:  # the PortAudio shared library is missing
        raise RuntimeError(f"microphone: PortAudio is not available ({exc}); install libportaudio2") from exc
    return sounddevice


def list_input_devices() -> list[dict[str, Any]]:
    """PortAudio's input devices: ``[{"index", "name", "max_input_channels", "default_samplerate"}, ...]``."""
    sd = _import_sounddevice()
    try:
        devices = sd.query_devices()
    except sd.PortAudioError as exc:
        raise RuntimeError(f"microphone: cannot list audio devices: {exc}") from exc
    return [
        {"index": int(d.get("index", i)), "name": str(d["name"]),
         "max_input_channels": int(d["max_input_channels"]),
         "default_samplerate": float(d["default_samplerate"])}
        for i, d in enumerate(devices) if int(d["max_input_channels"]) > 0
    ]


def _describe_inputs(devices: list[dict[str, Any]]) -> str:
    if not devices:
        return "none (is a microphone connected, and is this user in the 'audio' group?)"
    return "; ".join(f"[{d['index']}] {d['name']} ({d['max_input_channels']} ch, {d['default_samplerate']:g} Hz)"
                     for d in devices)


class MicrophoneSource(_SourceBase[AudioChunk]):
    """Chunks of ``chunk_ms`` from a live microphone, at ``sample_rate_hz``.

    The PortAudio callback only copies into a preallocated :class:`AudioRingBuffer`
    and counts input overflows; :meth:`read` blocks (up to ``read_timeout_ms``) for
    the next chunk. If the device cannot record at ``sample_rate_hz`` (many USB
    microphones offer only 44.1 or 48 kHz) it is opened at its default rate and the
    audio is resampled by a :class:`edgesense.frontend.resample.StreamingResampler`:
    the samples are those of resampling the whole recording at once (no chunk edges; clipped to full scale, as
    ``read_wav`` reads a recording of them),
    about 2 ms late; chunks then hold about ``chunk_ms`` (a few samples more or less).
    When the ring buffer dropped audio, the resampler starts again where the audio resumes.

    Chunk timestamps count samples from the first callback. When the callbacks' arrival shows the count
    ``CLOCK_RESYNC_TOLERANCE_MS`` behind the monotonic clock for ``CLOCK_RESYNC_CONFIRM_MS`` (the driver
    stalled, or lost audio), the clock is re-anchored where the late audio starts: later chunks are on the
    monotonic clock again, one jump forward by the stall, counted in ``stats.clock_resyncs``.

    ``gain_db`` multiplies the samples as :meth:`read` returns them (after resampling, before the clip to full
    scale; at 0 dB nothing is multiplied). The samples the microphone delivered at full scale (its converter clipped:
    the capture gain is too high, or its AGC pumps) are counted in ``stats.clipped_samples``; when
    :data:`CLIPPING_WARN_SHARE` or more of :data:`CLIPPING_WINDOW_S` of audio is at full scale, a warning says so and
    what to do, at most once per :data:`edgesense.pacing.LOG_INTERVAL_S`; so does one whose make-up gain pushes
    that much past full scale. When no second of :data:`QUIET_CHECK_S` of audio reaches :data:`QUIET_WARN_DBFS`
    while one was heard above the room (:data:`QUIET_HEARD_DB`), or all of it is digital silence, one warning says
    the microphone may be too quiet (or its capture off); a quiet room where nobody speaks says nothing.

    Raises ``RuntimeError`` (listing the available input devices) when there is
    no such input device or it cannot be opened.
    """

    def __init__(self, options: MicrophoneOptions = MicrophoneOptions()) -> None:
        super().__init__()
        require(isinstance(options, MicrophoneOptions), "options", "MicrophoneOptions", options)
        self.options = options
        sd = _import_sounddevice()
        devices = list_input_devices()
        if not devices:
            raise RuntimeError(f"microphone: no audio input device found; available input devices: "
                               f"{_describe_inputs(devices)}")
        try:
            info = sd.query_devices(options.device, "input")
        except (ValueError, sd.PortAudioError) as exc:
            lines = str(exc).splitlines()
            if len(lines) > 1 and lines[0].startswith("Multiple"):  # sounddevice: the name is part of several
                raise RuntimeError(f"microphone: device {options.device!r} matches {len(lines) - 1} input devices "
                                   f"({'; '.join(line.strip() for line in lines[1:])}); expected one: give its "
                                   f"index or more of its name (audio.device in a config)") from exc
            raise RuntimeError(f"microphone: no input device {options.device!r} ({one_line(exc)}); available input "
                               f"devices: {_describe_inputs(devices)}") from exc
        self.device_name = str(info["name"])
        try:
            sd.check_input_settings(device=options.device, channels=1, dtype="float32",
                                    samplerate=options.sample_rate_hz)
            self.device_rate_hz = options.sample_rate_hz
        except (ValueError, sd.PortAudioError):
            self.device_rate_hz = int(round(float(info["default_samplerate"])))
            logger.info("microphone %r cannot record at %d Hz; opening it at %d Hz and resampling",
                        self.device_name, options.sample_rate_hz, self.device_rate_hz)
        self._resampler: StreamingResampler | None = None  # when the device rate is not the one asked for
        self._resampler_origin = 0  # device sample index where the resampler's input starts
        self._chunk_samples = max(1, int(round(self.device_rate_hz * options.chunk_ms / MS_PER_S)))
        capacity = max(2 * self._chunk_samples, int(round(self.device_rate_hz * options.buffer_ms / MS_PER_S)))
        self._ring = AudioRingBuffer(RingBufferOptions(capacity_samples=capacity))
        # The audio clock: (device sample index, stream time of that sample), newest last; set by the callback.
        self._anchors: tuple[tuple[int, float], ...] = ()
        self._samples_in = 0  # device samples delivered by the callbacks
        self._late_since_ms: float | None = None  # arrival of the first block of a lag over the tolerance
        self._late_index = 0  # that block's first sample
        self._late_min_lag_ms = 0.0  # the smallest lag since: what the clock is behind by
        self._resyncs_logged = 0
        self._resync_lines = Paced()  # a driver that loses audio every few seconds: a line at most every 10 min
        # ``gain_db`` as an amplitude factor (None at 0 dB: the samples are not touched)
        self._gain = None if options.gain_db == 0 else np.float32(10 ** (options.gain_db / DB_PER_AMPLITUDE_DECADE))
        # The clipping window: device samples read and those at full scale; output samples and those the make-up
        # gain took to full scale or past it.
        self._window_in = self._window_in_clipped = self._window_out = self._window_out_clipped = 0
        self._window_samples = max(1, int(round(CLIPPING_WINDOW_S * self.device_rate_hz)))
        self._clipping_lines = Paced()  # a microphone that clips at every word: a line at most every 10 min
        # The too-quiet check: the current second's sum of squares and samples, the loudest and quietest seconds of
        # the current QUIET_CHECK_S, the seconds measured in it (None once the check is done), those before it.
        self._level_sum_sq, self._level_samples = 0.0, 0
        self._loudest_dbfs, self._quietest_dbfs = LEVEL_FLOOR_DBFS, math.inf
        self._level_windows: int | None = 0
        self._level_windows_before = 0
        self._level_window_samples = max(1, int(round(QUIET_LEVEL_WINDOW_S * options.sample_rate_hz)))
        self._audio_at_ms = monotonic_ms()  # when a callback last delivered audio (the stream's start before one)
        stream = None
        try:
            stream = sd.InputStream(device=options.device, samplerate=self.device_rate_hz, channels=1,
                                    dtype="float32", callback=self._callback)
            stream.start()
        except (ValueError, sd.PortAudioError) as exc:
            if stream is not None:  # opened but not started: PortAudio would hold the device on
                stream.close()
            raise RuntimeError(f"microphone: cannot open input device {self.device_name!r} at "
                               f"{self.device_rate_hz} Hz: {exc}; available input devices: "
                               f"{_describe_inputs(devices)}") from exc
        self._stream = stream
        logger.info("microphone %r open at %d Hz (chunks of %d samples)", self.device_name, self.device_rate_hz,
                    self._chunk_samples)

    # Runs on PortAudio's thread: copy, count, nothing else.
    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status.input_overflow:
            self._overflows += 1
        if indata.shape[0]:
            self._audio_at_ms = arrival_ms = monotonic_ms()
            self._track_clock(arrival_ms, indata.shape[0])
        self._ring.write(indata[:, 0])

    def _track_clock(self, arrival_ms: float, frames: int) -> None:
        """Note a block of ``frames`` samples that arrived at ``arrival_ms`` (its last sample was just captured);
        re-anchor the audio clock when it has stayed behind by more than the tolerance. Callback thread; a few
        float operations (a new anchors tuple only on a resync, which readers pick up whole)."""
        start = self._samples_in
        self._samples_in = end = start + frames
        if not self._anchors:
            self._anchors = ((0, arrival_ms - frames * MS_PER_S / self.device_rate_hz),)
            return
        lag_ms = arrival_ms - self._time_ms(end)
        if lag_ms <= CLOCK_RESYNC_TOLERANCE_MS:
            self._late_since_ms = None
            return
        if self._late_since_ms is None:
            self._late_since_ms, self._late_index, self._late_min_lag_ms = arrival_ms, start, lag_ms
            return
        self._late_min_lag_ms = min(self._late_min_lag_ms, lag_ms)
        if arrival_ms - self._late_since_ms >= CLOCK_RESYNC_CONFIRM_MS:
            anchor = (self._late_index, self._time_ms(self._late_index) + self._late_min_lag_ms)
            self._anchors = (*self._anchors[-(MAX_CLOCK_ANCHORS - 1):], anchor)
            self._clock_resyncs += 1
            self._late_since_ms = None

    def _time_ms(self, index: float) -> float:
        """Stream time of device sample ``index`` (fractional for the resampler's outputs), on the newest
        anchor at or before it (the oldest kept one for older samples)."""
        anchors = self._anchors  # one read: the callback replaces it whole
        anchor_index, anchor_ms = anchors[0]
        for anchor_index, anchor_ms in reversed(anchors):
            if anchor_index <= index:
                break
        return anchor_ms + (index - anchor_index) * MS_PER_S / self.device_rate_hz

    def _dropped_samples(self) -> int:
        return self._ring.dropped_samples

    def _stream_stopped(self) -> bool:
        """PortAudio stopped the stream by itself (the device vanished or failed): it never restarts. A stream
        without ``active`` (a stand-in) counts as running."""
        return not getattr(self._stream, "active", True)

    def read(self, *, timeout_ms: float | None = None) -> AudioChunk | None:
        """The next ``chunk_ms`` of audio; ``None`` after :meth:`close`.

        Raises :class:`SourceReadError` when no audio arrives within ``timeout_ms`` (``None``: the options'
        ``read_timeout_ms``; a stall the loop retries), and ``RuntimeError`` when PortAudio has stopped the stream
        (the device was unplugged or failed: retrying would wait forever; exiting lets a service manager restart
        and reopen it), or, :class:`MicrophoneStallError`, when no audio has come for ``stall_timeout_ms`` though
        PortAudio still reports the stream active.
        """
        if timeout_ms is None:
            timeout_ms = self.options.read_timeout_ms
        require(is_number(timeout_ms) and 0 < timeout_ms <= MAX_READ_TIMEOUT_MS, "timeout_ms",
                f"None or a positive number up to {MAX_READ_TIMEOUT_MS:g}", timeout_ms)
        if self._closed:
            return None
        got = self._ring.read(self._chunk_samples, timeout_s=timeout_ms / MS_PER_S)
        if got is None:
            if self._ring.closed:
                return None
            if self._stream_stopped():
                raise RuntimeError(f"microphone {self.device_name!r}: the input stream stopped (device unplugged "
                                   f"or failed); no more audio will come from it")
            stall_ms = self.options.stall_timeout_ms
            silent_ms = monotonic_ms() - self._audio_at_ms
            if stall_ms is not None and silent_ms >= stall_ms:
                raise MicrophoneStallError(
                    f"microphone {self.device_name!r}: no audio for {silent_ms / MS_PER_S:.1f} s though PortAudio "
                    f"still reports its stream active (audio.stall_timeout_ms: {stall_ms:g}): its driver or the sound "
                    "server stopped delivering, and only a new process opens it afresh: the process exits, for its "
                    "service manager to restart it")
            self._read_failures += 1
            ends = ("" if stall_ms is None else f"; the run ends if none has come for {stall_ms / MS_PER_S:g} s "
                    "(audio.stall_timeout_ms)")
            raise SourceReadError(f"microphone {self.device_name!r}: no audio for "
                                  f"{timeout_ms:g} ms (device stalled or unplugged?){ends}")
        samples, first_index = got
        self._count_full_scale(samples)
        if self._clock_resyncs != self._resyncs_logged:
            self._resyncs_logged = self._clock_resyncs
            covered = self._resync_lines.due()
            log = logger.warning if covered else logger.debug
            log("microphone %r: audio stalled or was lost in the driver; its clock is re-anchored to the monotonic "
                "clock (%d time(s) so far%s)", self.device_name, self._resyncs_logged,
                f", {covered} since the last such line, said at most every "
                f"{self._resync_lines.effective_interval_s:g} s" if covered > 1 else "")
        t_ms = self._time_ms(first_index)  # the callback anchored the clock before its first write
        resampling = self.device_rate_hz != self.options.sample_rate_hz
        if resampling:
            samples, t_ms = self._resampled(samples, first_index)
            if samples.size == 0:
                return self.read(timeout_ms=timeout_ms)  # too little audio yet for one output sample (tiny chunks)
        if self._gain is not None:
            samples = samples * self._gain
            self._window_out_clipped += _full_scale(samples)
        self._window_out += samples.size
        if resampling or self._gain is not None:
            # full scale, as a recording of it holds it (read_wav clips after resampling): clipped speech resampled
            # overshoots 1, and so does speech that the make-up gain takes past it
            samples = np.clip(samples, -1.0, 1.0)
        self._say_clipping()
        if self._level_windows is not None:
            self._check_quiet(samples)
        self._items += 1
        return AudioChunk(samples=samples, t_ms=t_ms, sample_rate_hz=self.options.sample_rate_hz)

    def _count_full_scale(self, samples: np.ndarray) -> None:
        """Count the device samples read that are at full scale (in the stats and the clipping window)."""
        clipped = _full_scale(samples)
        self._clipped_samples += clipped
        self._window_in_clipped += clipped
        self._window_in += samples.size

    def _say_clipping(self) -> None:
        """At the end of each clipping window: a warning (paced) when a share of it was at full scale as the
        microphone delivered it, or else was taken there by the make-up gain; then the next window starts."""
        if self._window_in < self._window_samples:
            return
        window_s = self._window_in / self.device_rate_hz
        adc_share = self._window_in_clipped / self._window_in
        gain_share = self._window_out_clipped / self._window_out if self._window_out else 0.0
        self._window_in = self._window_in_clipped = self._window_out = self._window_out_clipped = 0
        if adc_share >= CLIPPING_WARN_SHARE:
            self._clipping_lines.say(
                logger, logging.WARNING, "microphone %r: %.1f %% of the last %g s of audio at full scale as it "
                "delivered it: it clips (loud words are distorted, and fewer are recognised); lower its capture gain "
                "(alsamixer: F4 for capture, or amixer) or turn its automatic gain control off", self.device_name,
                adc_share * PERCENT, round(window_s), what="such windows")
        elif gain_share >= CLIPPING_WARN_SHARE:
            self._clipping_lines.say(
                logger, logging.WARNING, "microphone %r: %.1f %% of the last %g s of audio taken to full scale by "
                "audio.gain_db (%+g dB): loud words are clipped; lower audio.gain_db", self.device_name,
                gain_share * PERCENT, round(window_s), self.options.gain_db, what="such windows")

    def _check_quiet(self, samples: np.ndarray) -> None:
        """Note the level of the chunk's samples. A second that reaches :data:`QUIET_WARN_DBFS` ends the check;
        once :data:`QUIET_CHECK_S` of audio is measured without one, a warning if a second of it was heard above the
        room (:data:`QUIET_HEARD_DB`) or all of it was digital silence, and the check is over; else (a quiet room,
        nobody speaking) the next :data:`QUIET_CHECK_S` are checked."""
        x = samples.astype(np.float64)
        self._level_sum_sq += float(np.dot(x, x))
        self._level_samples += x.size
        if self._level_samples < self._level_window_samples or self._level_windows is None:
            return
        power = self._level_sum_sq / self._level_samples
        level_dbfs = DB_PER_POWER_DECADE * math.log10(power) if power > 0 else LEVEL_FLOOR_DBFS
        self._level_sum_sq, self._level_samples = 0.0, 0
        if level_dbfs >= QUIET_WARN_DBFS:  # loud enough: the check is over
            self._level_windows = None
            return
        self._loudest_dbfs = max(self._loudest_dbfs, level_dbfs)
        self._quietest_dbfs = min(self._quietest_dbfs, level_dbfs)
        self._level_windows += 1
        if self._level_windows * QUIET_LEVEL_WINDOW_S < QUIET_CHECK_S:
            return
        silent = self._loudest_dbfs <= LEVEL_FLOOR_DBFS
        if not silent and self._loudest_dbfs - self._quietest_dbfs < QUIET_HEARD_DB:
            # nothing heard above the room: no telling a quiet microphone from a quiet room; the next minutes say
            self._level_windows_before += self._level_windows
            self._level_windows, self._loudest_dbfs, self._quietest_dbfs = 0, LEVEL_FLOOR_DBFS, math.inf
            return
        minutes = QUIET_CHECK_S / S_PER_MIN
        before = self._level_windows_before * QUIET_LEVEL_WINDOW_S / S_PER_MIN
        audio = f"its first {minutes:g} min of audio" if not before else \
            f"{minutes:g} min of its audio from minute {before:g} on"
        self._level_windows = None
        if silent:
            logger.warning("microphone %r: %s held no sound at all (digital silence): its capture may be switched "
                           "off (alsamixer: space on its capture control)", self.device_name, audio)
            return
        logger.warning(
            "microphone %r: the loudest second of %s was %.0f dBFS, %.0f dB above its quietest (audio.gain_db %+g): "
            "if that was someone speaking near it, it is too quiet (a word said at a metre reaches -30 to -20 dBFS; "
            "20 dB too quiet, fewer words are recognised): raise its capture gain (alsamixer: F4 for capture, or "
            "amixer), or audio.gain_db", self.device_name, audio, self._loudest_dbfs,
            self._loudest_dbfs - self._quietest_dbfs, self.options.gain_db)

    def _resampled(self, samples: np.ndarray, first_index: int) -> tuple[np.ndarray, float]:
        """(the output samples now complete, the stream time of the first)."""
        if self._resampler is None or first_index != self._resampler_origin + self._resampler.samples_in:
            self._resampler = StreamingResampler(self.device_rate_hz, self.options.sample_rate_hz)
            self._resampler_origin = first_index
        first_out = self._resampler.samples_out
        out = self._resampler.push(samples)  # not clipped yet: :meth:`read` clips after the make-up gain
        return out, self._time_ms(self._resampler_origin + first_out * self.device_rate_hz
                                  / self.options.sample_rate_hz)

    def close(self) -> None:
        if self._closed:
            return
        super().close()
        self._ring.close()
        stream = getattr(self, "_stream", None)
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception as exc:  # noqa: BLE001 - closing a dead device must not mask the caller's error
                logger.warning("microphone: error while closing %r: %s", self.device_name, exc)
