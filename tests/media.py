"""Media for device-loop tests, matched to the tiny int8 model of tests/conftest.py:
WAVs of tone "words" and really encoded videos of tinted scene frames."""

from __future__ import annotations

import time
import wave
from pathlib import Path

import cv2
import numpy as np

from edgesense.types import DEFAULT_COMMAND_LABELS

RATE = 16000
# The tiny model (tests/conftest.py) hears command k as a tone at 300 + 550 * (k - 1) Hz
# over Gaussian noise of 0.02, and sees scenes as tinted backgrounds.
TONE_BASE_HZ, TONE_STEP_HZ, NOISE_LEVEL = 300.0, 550.0, 0.02
TONE_AMPLITUDE, TONE_S = 0.4, 0.6
SCENE_BGR = {"indoor": (40, 60, 200), "outdoor": (60, 190, 60), "vehicle": (200, 90, 40)}
REQUIRED_KEYS = {"type", "label", "score", "t_ms", "wall_time", "latency_ms"}
#: "yes" is the tiny model's most confident word (about 0.75 averaged); others stay below 0.5.
TEST_THRESHOLD = 0.5
#: A recognised word fires within this much stream time after its end (averaging window).
DETECTION_SLACK_MS = 1500.0


# --------------------------------------------------------------------------- media


def tone_samples(words: list[tuple[str, float]], duration_s: float, *, seed: int = 0,
                 quiet_between: bool = False) -> np.ndarray:
    """Float samples: tone "words" (label, start s) over the training noise floor.

    ``quiet_between``: near-digital silence (-66 dBFS) except within 0.4 s of a word.
    """
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * RATE))
    t = np.arange(n) / RATE
    noise = rng.normal(0.0, NOISE_LEVEL, n)
    if quiet_between:
        mask = np.zeros(n)
        for _, start in words:
            a, b = int((start - 0.4) * RATE), int((start + TONE_S + 0.4) * RATE)
            mask[max(0, a):min(n, b)] = 1.0
        noise = noise * np.maximum(mask, 0.025)
    x = noise
    length = int(TONE_S * RATE)
    for word, start in words:
        k = DEFAULT_COMMAND_LABELS.index(word)
        freq = TONE_BASE_HZ + TONE_STEP_HZ * (k - 1)
        s = int(start * RATE)
        x[s:s + length] += TONE_AMPLITUDE * np.hanning(length) * np.sin(2 * np.pi * freq * t[:length])
    return np.clip(x, -1, 1)


def write_wav(path: Path, samples: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


def tone_wav(path: Path, words: list[tuple[str, float]], duration_s: float, **kwargs) -> Path:
    return write_wav(path, tone_samples(words, duration_s, **kwargs))


def scene_image(label: str, rng: np.random.Generator, size=(160, 120)) -> np.ndarray:
    w, h = size
    return np.clip(np.array(SCENE_BGR[label], float) + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def scene_video(path: Path, segments: list[tuple[str, float]], fps: float = 10.0, seed: int = 0,
                fourcc: str = "MJPG") -> Path:
    """A really encoded video: (label, seconds) segments of tinted frames."""
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (160, 120))
    assert writer.isOpened()
    for label, seconds in segments:
        for _ in range(int(round(seconds * fps))):
            writer.write(scene_image(label, rng))
    writer.release()
    return path


class GrabsByReading:
    """``grab()`` and ``retrieve()`` of a stand-in cv2.VideoCapture that says how its ``read()`` goes (a live
    camera's reader grabs every frame and decodes those the loop wants): a grab is a read (it blocks and fails as
    the read does), a retrieve hands that read's frame over, once."""

    def grab(self) -> bool:
        self._grabbed = self.read()
        return bool(self._grabbed[0])

    def retrieve(self, image=None, flag=0):
        grabbed, self._grabbed = getattr(self, "_grabbed", (False, None)), (False, None)
        return grabbed


class SmallCameraCapture(GrabsByReading):
    """What a cv2.VideoCapture of a 64x48 camera at 15 fps answers but for its reads (a stand-in at the device's
    edge: subclasses say how its ``read`` goes); ``opened`` until released."""

    WIDTH_PX, HEIGHT_PX, FPS = 64, 48, 15.0

    def __init__(self) -> None:
        self.reads, self.opened = 0, True

    def isOpened(self) -> bool:
        return self.opened

    def set(self, prop, value) -> bool:
        return True

    def get(self, prop) -> float:
        return {cv2.CAP_PROP_FRAME_WIDTH: self.WIDTH_PX, cv2.CAP_PROP_FRAME_HEIGHT: self.HEIGHT_PX,
                cv2.CAP_PROP_FPS: self.FPS}.get(prop, 0)

    def frame(self) -> np.ndarray:
        return np.zeros((self.HEIGHT_PX, self.WIDTH_PX, 3), np.uint8)

    def release(self) -> None:
        self.opened = False


class UnpluggedCapture(SmallCameraCapture):
    """cv2.VideoCapture of a camera index unplugged after it opened: its reads fail, and it never opens again."""

    opens = 0

    def __init__(self, source, *args) -> None:
        super().__init__()
        UnpluggedCapture.opens += 1
        self.opened = UnpluggedCapture.opens == 1

    def read(self):
        self.reads += 1
        return False, None


class CountingWebcam:
    """cv2.VideoCapture of a USB webcam at 30 fps delivering MJPEG (a stand-in at the device's edge): ``grab()``
    (and ``read()``) block until its next frame; a frame is decoded by ``retrieve()`` or ``read()``; each call is
    counted in the class's ``calls``, which a test resets. ``LABEL``: the scene its frames show."""

    FPS = 30.0
    LABEL = "indoor"
    calls: dict[str, int] = {}

    def __init__(self, source, *args) -> None:
        self._rng = np.random.default_rng(0)
        self._next_s = time.monotonic()

    def isOpened(self) -> bool:
        return True

    def set(self, prop, value) -> bool:
        return True

    def get(self, prop) -> float:
        return {cv2.CAP_PROP_FRAME_WIDTH: 160, cv2.CAP_PROP_FRAME_HEIGHT: 120, cv2.CAP_PROP_FPS: self.FPS}.get(prop, 0)

    def release(self) -> None:
        pass

    def _count(self, call: str) -> None:
        type(self).calls[call] = type(self).calls.get(call, 0) + 1

    def grab(self) -> bool:
        self._count("grab")
        self._next_s += 1 / self.FPS
        time.sleep(max(0.0, self._next_s - time.monotonic()))
        return True

    def retrieve(self, image=None, flag=0):
        self._count("retrieve")  # the JPEG decode: several ms of a Pi's core
        return True, scene_image(self.LABEL, self._rng)

    def read(self, image=None):
        self.grab()
        self._count("read")
        return self.retrieve()
