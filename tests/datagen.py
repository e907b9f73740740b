"""Small, generated stand-ins for the real data sets, so tests run on a fresh clone.

Each command word is a tone at its own pitch (with a little noise), each scene class a
colour with texture: easy enough that a few training steps beat chance clearly.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edgesense.frontend.wav import write_wav
from edgesense.types import DEFAULT_COMMAND_WORDS

SAMPLE_RATE_HZ = 16000
SCENE_COLOURS_BGR = {"beach": (200, 180, 60), "forest": (40, 140, 30), "street": (120, 120, 120)}


def word_tone_hz(word_index: int) -> float:
    return 300.0 + 350.0 * word_index


def speech_clip(word_index: int | None, rng: np.random.Generator, *, duration_s: float = 1.0) -> np.ndarray:
    """A 'spoken word' as a 0.5 s tone burst at the word's pitch; None gives noise only."""
    n = int(SAMPLE_RATE_HZ * duration_s)
    clip = rng.normal(scale=0.003, size=n)
    if word_index is not None:
        t = np.arange(n // 2) / SAMPLE_RATE_HZ
        start = int(rng.integers(n // 8, n // 3))
        envelope = np.hanning(t.size)
        clip[start:start + t.size] += 0.3 * envelope * np.sin(2 * np.pi * word_tone_hz(word_index) * t)
    return clip.astype(np.float32)


def make_speech_commands(root: Path, *, words=DEFAULT_COMMAND_WORDS[:4], speakers: int = 6, per_speaker: int = 2,
                         unknown_words=("bed", "cat"), seed: int = 0) -> Path:
    """A Speech Commands v2 layout: WORD/SPEAKER_nohash_N.wav, other words, _background_noise_/."""
    rng = np.random.default_rng(seed)
    all_words = list(words) + list(unknown_words)
    for w, word in enumerate(all_words):
        folder = root / word
        folder.mkdir(parents=True, exist_ok=True)
        for s in range(speakers):
            for k in range(per_speaker):
                write_wav(folder / f"{s:08x}_nohash_{k}.wav", speech_clip(w, rng), SAMPLE_RATE_HZ)
    noise = root / "_background_noise_"
    noise.mkdir(parents=True, exist_ok=True)
    write_wav(noise / "hum.wav", (rng.normal(scale=0.05, size=SAMPLE_RATE_HZ * 5)).astype(np.float32),
              SAMPLE_RATE_HZ)
    return root


#: Each scene class's sound: noise around its own frequency.
SCENE_SOUND_HZ = {"beach": 300.0, "forest": 2500.0, "street": 800.0, "kitchen": 1500.0}


def speakers_layout(root: Path, split, *, speakers: int = 60) -> set[str]:
    """A Speech Commands layout in which each of ``speakers`` speakers says "yes" and "bed" (an
    ``_unknown_`` word), every other command word one speaker; returns the speakers ``split`` (a
    :class:`~edgesense.train.data.SplitSpec`) keeps out of its testing part."""
    from edgesense.train.data import which_set
    from edgesense.types import UNKNOWN_LABEL

    clip = np.zeros(160, np.float32)
    names = [f"{k:08x}" for k in range(speakers)]
    for folder in (*DEFAULT_COMMAND_WORDS, UNKNOWN_LABEL):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for speaker in names:
        write_wav(root / "yes" / f"{speaker}_nohash_0.wav", clip, SAMPLE_RATE_HZ)
        write_wav(root / UNKNOWN_LABEL / f"bed_{speaker}_nohash_0.wav", clip, SAMPLE_RATE_HZ)
    for word in DEFAULT_COMMAND_WORDS[1:]:  # every command word needs its folder
        write_wav(root / word / f"{names[0]}_nohash_0.wav", clip, SAMPLE_RATE_HZ)
    kept = {s for s in names
            if which_set(s, split.validation_percent, split.testing_percent, salt=split.speaker_salt) != "testing"}
    assert 0 < len(kept) < speakers  # the split does hold test speakers here
    return kept


def assert_no_test_speaker_is_read(clips_of, split, root: Path) -> None:
    """``clips_of(root)`` (a script's clip reader) on :func:`speakers_layout` reads "yes" and
    ``_unknown_`` clips of every speaker ``split`` keeps out of its testing part, and of no other
    (speakers told by the file names, :func:`edgesense.train.data.speaker_of`)."""
    from edgesense.train.data import speaker_of
    from edgesense.types import UNKNOWN_LABEL

    kept = speakers_layout(root, split)
    clips = clips_of(root)
    for label in ("yes", UNKNOWN_LABEL):
        read = {speaker_of(item.path, unknown_layout=label == UNKNOWN_LABEL) for item in clips if item.label == label}
        assert read == kept, label


def scene_image(label: str, rng: np.random.Generator, size_px: int = 100, colour_bgr=None) -> np.ndarray:
    base = np.array(colour_bgr if colour_bgr is not None else SCENE_COLOURS_BGR[label], np.float32)
    img = base + rng.normal(scale=20.0, size=(size_px, size_px, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_scenes(root: Path, *, per_class: int = 20, seed: int = 0) -> Path:
    """An image-folder layout: CLASS/NAME.jpg."""
    rng = np.random.default_rng(seed)
    for label in SCENE_COLOURS_BGR:
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(str(folder / f"{label}_{i:03d}.jpg"), scene_image(label, rng))
    return root


def write_train_yaml(path: Path, *, speech: Path | None, scenes: Path | None, epochs: int = 2,
                     steps_per_epoch: int = 6, extra: str = "") -> Path:
    lines = ["name: tiny", "seed: 1", "data:"]
    if speech is not None:
        lines.append(f"  speech_commands: [{speech}]")
        lines.append("  words: [yes, no, up, down]")
        lines.append("  validation_percent: 20")
        lines.append("  testing_percent: 20")
    if scenes is not None:
        lines.append(f"  scenes: {scenes}")
        lines.append("  image_validation_percent: 20")
        lines.append("  image_testing_percent: 20")
    lines += [
        "  calibration_per_class: 4",
        "model:",
        "  audio_channels: 16",
        "  audio_blocks: 1",
        "  image_channels: [8, 16, 16]",
        "  image_strides: [2, 2, 2]",
        "  embedding_dim: 16",
        # a short run: batch statistics that settle within its few steps
        "  batchnorm_momentum: 0.9",
        "train:",
        f"  epochs: {epochs}",
        f"  steps_per_epoch: {steps_per_epoch}",
        "  batch_size: 16",
        "  learning_rate: 0.01",
    ]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def scene_sound(label: str, rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A class's sound: a tone at its frequency under a little noise."""
    t = np.arange(int(SAMPLE_RATE_HZ * seconds)) / SAMPLE_RATE_HZ
    x = 0.2 * np.sin(2 * np.pi * SCENE_SOUND_HZ[label] * t) + 0.02 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def make_scene_sounds(root: Path, *, labels=tuple(SCENE_COLOURS_BGR), per_class: int = 3, seconds: float = 3.0,
                      seed: int = 0) -> Path:
    """A ``scene_ambient`` layout: CLASS/NAME.wav recordings of each class's sound."""
    rng = np.random.default_rng(seed)
    for label in labels:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            write_wav(root / label / f"{label}_rec{i}.wav", scene_sound(label, rng, seconds), SAMPLE_RATE_HZ)
    return root


def make_av_folder(root: Path, colours_bgr: dict, *, per_class: int = 8, seed: int = 0) -> Path:
    """A paired folder as ``edgesense record`` writes it: CLASS/NAME.jpg + CLASS/NAME.wav (1 s)."""
    rng = np.random.default_rng(seed)
    for label, colour in colours_bgr.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(str(folder / f"{label}-{i:04d}.jpg"), scene_image(label, rng, colour_bgr=colour))
            write_wav(folder / f"{label}-{i:04d}.wav", scene_sound(label, rng, 1.0), SAMPLE_RATE_HZ)
    return root


def recorded_session(label: str, side: str, validation_percent: float, testing_percent: float, *,
                     after: str = "") -> str:
    """A session name ``LABEL-YYYYmmdd-HHMMSS`` (as ``edgesense record`` writes them) later than ``after``
    whose first block of pairs the split at these percentages puts on ``side``."""
    from edgesense.train.data import which_set

    for second in range(3600):
        session = f"{label}-20260102-{9 + second // 3600:02d}{second // 60 % 60:02d}{second % 60:02d}"
        if session > after and which_set(f"{session}/0", validation_percent, testing_percent) == side:
            return session
    raise AssertionError(side)


def write_recorded_pairs(root: Path, session: str, pairs: int, colour_bgr, *, tone_hz: float, seed: int = 0) -> Path:
    """``pairs`` pairs of one recorded session under ``root``: CLASS/SESSION-NNNN.jpg + .wav (a tone)."""
    rng = np.random.default_rng(seed)
    folder = root / session.rsplit("-", 2)[0]
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(16000) / 16000
    for i in range(1, pairs + 1):
        cv2.imwrite(str(folder / f"{session}-{i:04d}.jpg"), scene_image(folder.name, rng, colour_bgr=colour_bgr))
        sound = 0.1 * np.sin(2 * np.pi * tone_hz * t + rng.uniform(0, 6)) + rng.normal(scale=0.01, size=t.size)
        write_wav(folder / f"{session}-{i:04d}.wav", sound.astype(np.float32), 16000)
    return root


def write_stream_heads(path: Path, words, **metadata) -> Path:
    """A one-head second-opinion file (untrained, tiny) whose heads know ``words``: beside a model of other
    words, the case of a user's own model run with a shipped config; ``metadata`` adds fields (``data``: the split
    they trained on). Needs TensorFlow."""
    from edgesense.runtime.second_opinion import HEADS_FORMAT_VERSION, HEADS_KIND
    from edgesense.train.stream_heads import ensemble_model, heads_tflite
    from edgesense.train.teachers.audio import AudioTeacherOptions, build_audio_head

    context = 2
    head = build_audio_head(context, 96, len(words), AudioTeacherOptions(conv_channels=8, dense_units=8))
    path.write_bytes(heads_tflite(ensemble_model([head], context), {
        "kind": HEADS_KIND, "format_version": HEADS_FORMAT_VERSION, "labels": list(words),
        "context_embeddings": context, "heads": 1, **metadata}))
    return path
