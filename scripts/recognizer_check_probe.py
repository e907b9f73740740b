"""Could a pretrained speech recognizer check a detection? A feasibility probe for issue 14.

The pair fires on talk (10.5 false accepts an hour on the evaluation streams), half of it on other
words said by the test speakers ("two" for "go", "one" for "on"). A large-vocabulary recognizer
knows those words apart, so a second stage that decodes the second before each detection and keeps it
only when the word is there could cut such false accepts. One recognizer installable offline with its
model inside the wheel is PyPI ``pocketsphinx`` (5.x bundles CMU's US-English acoustic model, dictionary
and language model, about 30 MB; not a project dependency: ``pip install pocketsphinx`` into the venv).

This scores it on Speech Commands clips of the training and validation speakers (the written-down
split: salt ``edgesense``, 10 % validation, 20 % testing; the test speakers are never read), clean
and over the training pool's noise at ``--snr-db``:

* ``grammar``: decoding with a grammar of the ten commands alone, the share of command clips named
  right (what it knows of the words, at best);
* ``kept``: decoding with its language model, the share of command clips whose transcript holds their
  word (what a check would keep of true detections);
* ``unknown fires``: the share of ``_unknown_`` clips whose transcript holds a command word (what a
  check would still let through).

    .venv/bin/pip install pocketsphinx
    .venv/bin/python scripts/recognizer_check_probe.py --speech-commands ../shared/data/speech_commands \\
        --noise ../shared/data/noise --clips 200
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgesense.app.cli import OneLineArgumentParser, run_main
from edgesense.frontend.wav import read_wav
from edgesense.train.data import AudioItem, SplitSpec, load_speech_commands
from edgesense.train.pools import split_recordings, wav_recordings
from edgesense.types import DEFAULT_COMMAND_WORDS, UNKNOWN_LABEL

SAMPLE_RATE_HZ = 16000
INT16_FULL_SCALE = 32767
#: train/configs/shared_data.yaml's split (SplitSpec's percentages, its salt).
SPLIT = SplitSpec(speaker_salt="edgesense")
#: The parts read: never the test speakers'.
PARTS = ("training", "validation")
#: Silence either side of a one-second clip, as a detection's window holds some.
PAD_S = 0.25


def _clips(root: Path) -> list[AudioItem]:
    """The whole clips (no silence snippets) of the training and validation speakers."""
    parts = SPLIT.split_clips(load_speech_commands(root))
    return [item for part in PARTS for item in parts[part] if item.offset_ms is None]


def _mix(clip: np.ndarray, noise: np.ndarray, snr_db: float | None, rng: np.random.Generator) -> np.ndarray:
    pad = int(PAD_S * SAMPLE_RATE_HZ)
    clip = np.pad(clip, (pad, pad))
    if snr_db is not None:
        start = int(rng.integers(0, noise.size - clip.size))
        part = noise[start:start + clip.size]
        gain = np.sqrt(np.mean(clip ** 2) / (np.mean(part ** 2) + 1e-12) / 10 ** (snr_db / 10))
        clip = clip + gain * part
    return (np.clip(clip, -1.0, 1.0) * INT16_FULL_SCALE).astype(np.int16)


def main() -> None:
    parser = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speech-commands", type=Path, required=True)
    parser.add_argument("--noise", type=Path, required=True, help="noise folder; its training pool is used")
    parser.add_argument("--clips", type=int, default=200, help="command clips drawn (default 200)")
    parser.add_argument("--snr-db", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from pocketsphinx import Decoder

    rng = np.random.default_rng(args.seed)
    words = list(DEFAULT_COMMAND_WORDS)
    clips = sorted(_clips(args.speech_commands), key=lambda item: item.path)
    commands = [(word, item.path) for word in words for item in clips if item.label == word]
    commands = [commands[i] for i in rng.choice(len(commands), min(args.clips, len(commands)), replace=False)]
    unknown = [item.path for item in clips if item.label == UNKNOWN_LABEL]
    noise = np.concatenate([read_wav(p) for p in split_recordings(wav_recordings([args.noise]))["training"]])
    with tempfile.TemporaryDirectory() as tmp:
        grammar = Path(tmp) / "commands.gram"
        grammar.write_text(f"#JSGF V1.0;\ngrammar commands;\npublic <word> = {' | '.join(words)};\n")
        closed = Decoder(jsgf=str(grammar), samprate=SAMPLE_RATE_HZ, loglevel="FATAL")
    open_ = Decoder(samprate=SAMPLE_RATE_HZ, loglevel="FATAL")

    def decode(decoder, audio: np.ndarray) -> list[str]:
        decoder.start_utt()
        decoder.process_raw(audio.tobytes(), full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        return hypothesis.hypstr.split() if hypothesis else []

    print(f"{len(commands)} command clips, {len(unknown)} _unknown_ clips (training and validation speakers)")
    print("| audio | grammar | kept | unknown fires | ms a clip (language model) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for snr_db in (None, args.snr_db):
        audio = [(word, _mix(read_wav(path), noise, snr_db, rng)) for word, path in commands]
        named = np.mean([decode(closed, clip) == [word] for word, clip in audio])
        started = time.perf_counter()
        kept = np.mean([word in decode(open_, clip) for word, clip in audio])
        per_clip_ms = 1000 * (time.perf_counter() - started) / len(audio)
        fires = np.mean([bool(set(decode(open_, _mix(read_wav(p), noise, snr_db, rng))) & set(words))
                         for p in unknown])
        name = "clean" if snr_db is None else f"{snr_db:g} dB SNR"
        print(f"| {name} | {100 * named:.1f} % | {100 * kept:.1f} % | {100 * fires:.1f} % | {per_clip_ms:.0f} |")


if __name__ == "__main__":
    sys.exit(run_main(Path(__file__).name, main))
