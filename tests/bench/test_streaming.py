"""edgesense.bench.streaming: which talk may choose a model's operating point; the streaming-cost breakdown and
the level envelope."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import TINY_HEADS_CONTEXT, _command_clip, require_speech_embedding
from operating_points import operating_point

from edgesense.app import cli
from edgesense.bench.report import _tuning_budgets_markdown
from edgesense.bench.scoring import SweepOptions
from edgesense.bench.streaming import (
    BREAKDOWN_OFFSETS_MS,
    ENVELOPE_LEVELS_DBFS,
    ENVELOPE_SNRS_DB,
    SEGMENT_S,
    TALK_PIECE_MAX_S,
    WindowDetector,
    cost_breakdown,
    learned_other_speech,
    level_envelope,
    other_speech_utterances,
    tuning_budgets,
)
from edgesense.bench.streams import StreamOptions, build_segments, utterance
from edgesense.frontend.audio import AudioFrontendOptions, log_mel_spectrogram
from edgesense.frontend.wav import write_wav
from edgesense.recognition.commands import CommandRecognizerOptions
from edgesense.runtime.model import EdgeModel
from edgesense.runtime.second_opinion import SecondOpinionOptions, StreamHeads
from edgesense.runtime.speech_embedding import SpeechEmbeddingStream, samples_for_embeddings
from edgesense.train.data import hash_percent
from edgesense.types import DEFAULT_COMMAND_LABELS, is_command_word

BUNDLED_MODEL = Path(__file__).resolve().parents[2] / "models" / "edgesense.tflite"


def test_a_model_that_learned_talk_is_told_apart_by_its_metadata(tiny_model_path):
    assert learned_other_speech(EdgeModel.load(BUNDLED_MODEL))  # v18 and v22c learned from 895 windows of talk
    assert not learned_other_speech(EdgeModel.load(tiny_model_path))
    assert learned_other_speech(SimpleNamespace(metadata={"data": {"other_speech_windows": 1276}}))
    assert not learned_other_speech(SimpleNamespace(metadata={"data": {"other_speech_windows": 0}}))
    assert not learned_other_speech(SimpleNamespace(metadata={}))


class _ConstantModel:
    """Scores every window the same: ``yes`` 0.9, ``no`` 0.1."""

    command_labels = ("_silence_", "_unknown_", "yes", "no")
    audio_frontend = AudioFrontendOptions()

    def __init__(self) -> None:
        self.windows = 0

    def encode_audio(self, features):
        assert features.shape == self.audio_frontend.feature_shape
        self.windows += 1
        return features

    def fuse(self, audio, image):
        assert image is None
        return np.array([0.0, 0.0, 0.9, 0.1], np.float32), None


def _tone_word(sr: int) -> np.ndarray:
    """One second holding a short tone, the "word" the fake models name."""
    tone = np.zeros(sr, np.float32)
    tone[4000:9000] = 0.3 * np.sin(np.arange(5000) * 0.2)
    return tone


def test_the_cost_breakdown_scores_every_word_at_every_offset_against_its_threshold():
    sr = AudioFrontendOptions().sample_rate_hz
    tone = _tone_word(sr)
    words = [utterance(tone, label, f"{label}{k}.wav", sr) for k, label in enumerate(["yes", "yes", "no", "go"])]
    model = _ConstantModel()
    rows = cost_breakdown(WindowDetector(model), words, StreamOptions(seed=1), noise=[],
                          recognizer=CommandRecognizerOptions(threshold=0.85, release_threshold=0.3))
    assert [r["offset_ms"] for r in rows] == list(BREAKDOWN_OFFSETS_MS)
    assert model.windows == 3 * len(BREAKDOWN_OFFSETS_MS)
    # "go" is not one of the model's words; "yes" is named right twice of three words, above 0.85 both times.
    assert all(r["words"] == 3 and r["accuracy"] == pytest.approx(2 / 3, abs=1e-4)
               and r["confident"] == pytest.approx(2 / 3, abs=1e-4) for r in rows)
    stricter = CommandRecognizerOptions(threshold=0.85, class_thresholds={"yes": 0.95}, release_threshold=0.3)
    assert all(r["confident"] == 0.0 for r in cost_breakdown(WindowDetector(model), words, StreamOptions(seed=1),
                                                               noise=[], recognizer=stricter))


def test_the_clip_accuracy_counts_the_command_words_named_right():
    sr = AudioFrontendOptions().sample_rate_hz
    clips = np.zeros((5, sr), np.float32)
    detector = WindowDetector(_ConstantModel())  # names "yes" every time
    assert detector.lead_samples == 0
    assert detector.clip_accuracy(clips, ["yes", "no", "yes", "_unknown_", "go"]) == pytest.approx(2 / 3, abs=1e-4)
    assert detector.clip_accuracy(clips[:1], ["_unknown_"]) is None


def test_with_a_second_opinion_each_window_is_scored_by_the_pair(tiny_model_path, tiny_heads_path):
    require_speech_embedding()
    model = EdgeModel.load(tiny_model_path)
    options = SecondOpinionOptions(heads_path=str(tiny_heads_path), student_weight=0.25)
    detector = WindowDetector(model, options)
    frontend = model.audio_frontend
    size = detector.lead_samples + detector.window_samples
    rng = np.random.default_rng(4)
    audio = (0.05 * rng.normal(size=(2, size))).astype(np.float32)
    audio[0, -9000:-4000] += _tone_word(frontend.sample_rate_hz)[4000:9000]
    embeddings = SpeechEmbeddingStream().push(audio[0])
    # the heads' newest embedding ends where the window ends; the audio is the least that holds the window and
    # their context
    count = len(embeddings)
    assert samples_for_embeddings(count) == size and count >= TINY_HEADS_CONTEXT
    assert count - 1 < TINY_HEADS_CONTEXT or samples_for_embeddings(count - 1) < detector.window_samples
    student, _ = model.fuse(model.encode_audio(log_mel_spectrogram(audio[0, detector.lead_samples:], frontend)), None)
    pair = 0.25 * student + 0.75 * StreamHeads(tiny_heads_path)(embeddings[-TINY_HEADS_CONTEXT:])
    scores = detector.scores(audio[[0, 1, 0]])
    np.testing.assert_allclose(scores[0], pair, atol=1e-5)
    np.testing.assert_allclose(scores[2], scores[0], atol=1e-6)  # each window alone: nothing heard before it
    assert not np.allclose(scores[1], scores[0], atol=1e-4)
    alone = WindowDetector(model).scores(audio[:1, detector.lead_samples:])[0]
    np.testing.assert_allclose(alone, student, atol=1e-6)


class _LoudnessModel(_ConstantModel):
    """Names ``yes`` (0.9) when the window's mean log-mel energy is above ``loud``, else ``no``."""

    def __init__(self, loud: float) -> None:
        super().__init__()
        self.loud = loud

    def encode_audio(self, features):
        return super().encode_audio(features).mean()

    def fuse(self, audio, image):
        assert image is None
        return (np.array([0.0, 0.0, 0.9, 0.1], np.float32) if audio > self.loud
                else np.array([0.0, 0.0, 0.1, 0.9], np.float32)), None


def test_the_level_envelope_scores_every_word_at_every_level_and_snr():
    sr = AudioFrontendOptions().sample_rate_hz
    tone = _tone_word(sr)
    words = [utterance(tone, "yes", f"yes{k}.wav", sr) for k in range(3)]
    quiet_floor = _LoudnessModel(loud=np.inf)
    rows = level_envelope(WindowDetector(quiet_floor), words, StreamOptions(seed=1), noise=[],
                          recognizer=CommandRecognizerOptions(threshold=0.85, release_threshold=0.3))
    assert [(r["level_dbfs"], r["snr_db"]) for r in rows] == [(level, snr) for level in ENVELOPE_LEVELS_DBFS
                                                              for snr in ENVELOPE_SNRS_DB]
    assert quiet_floor.windows == 3 * len(rows) and all(r["words"] == 3 for r in rows)
    assert all(r["accuracy"] == r["confident"] == 0.0 for r in rows)
    # A model that names the word only when it is loud: right above some level, wrong below it.
    clean = {r["level_dbfs"]: r["accuracy"] for r in level_envelope(
        WindowDetector(_LoudnessModel(loud=-12.8)), words, StreamOptions(seed=1), noise=[],
        recognizer=CommandRecognizerOptions(threshold=0.85, release_threshold=0.3)) if r["snr_db"] == 100.0}
    assert clean[min(ENVELOPE_LEVELS_DBFS)] == 0.0 and clean[max(ENVELOPE_LEVELS_DBFS)] == 1.0
    assert list(clean.values()) == sorted(clean.values())


def test_tuning_budgets_with_a_latency_budget_also_give_the_figures_without_it():
    slow = operating_point(0.6, (520.0,) * 9, 1)  # the best sits 20 ms over the budget
    prompt = operating_point(0.8, (300.0,) * 5, 0)
    capped = tuning_budgets([slow, prompt], SweepOptions(), chosen_on="tuning")  # the default: the 500-ms target
    assert [row["hit_rate"] for row in capped["budgets"]] == [0.5] * 4 and capped["max_latency_p95_ms"] == 500.0
    uncapped = capped["uncapped"]
    assert [row["hit_rate"] for row in uncapped["budgets"]] == [0.5, 0.9, 0.9, 0.9]
    assert uncapped["mean_hit_rate"] == 0.8 and uncapped["budgets"][1]["latency_p95_ms"] == 520.0
    no_budget = SweepOptions(max_latency_p95_ms=None)
    assert "uncapped" not in tuning_budgets([slow, prompt], no_budget, chosen_on="tuning")
    markdown = "\n".join(_tuning_budgets_markdown({"tuning_budgets": capped}))
    assert "latency p95 at most 500 ms" in markdown and "| without the latency budget | 0.500 | 0.900 |" in markdown


def test_timely_budgets_count_a_word_detected_after_the_latency_budget_as_missed():
    # 9 words, 2 of them late: its p95 misses the budget, so the capped figures fall to the prompt 5 words
    mostly_prompt = operating_point(0.6, (300.0,) * 7 + (700.0,) * 2, 1)
    prompt = operating_point(0.8, (300.0,) * 5, 0)
    assert mostly_prompt.hit_rate_within(500.0) == 0.7 and mostly_prompt.hit_rate_within(700.0) == 0.9
    section = tuning_budgets([mostly_prompt, prompt], SweepOptions(max_latency_p95_ms=500.0), chosen_on="tuning")
    assert [row["hit_rate"] for row in section["budgets"]] == [0.5] * 4
    timely = section["timely"]
    assert [row["hit_rate"] for row in timely["budgets"]] == [0.5, 0.7, 0.7, 0.7] and timely["mean_hit_rate"] == 0.65
    assert timely["budgets"][1]["settings"]["threshold"] == 0.6 and timely["budgets"][1]["latency_p95_ms"] == 700.0
    no_budget = SweepOptions(max_latency_p95_ms=None)
    assert "timely" not in tuning_budgets([mostly_prompt, prompt], no_budget, chosen_on="tuning")
    # The rows are the same whichever rule the recommendation follows; the section names that rule.
    by_p95 = tuning_budgets([mostly_prompt, prompt], SweepOptions(max_latency_p95_ms=500.0, latency_rule="p95"),
                            chosen_on="tuning")
    assert section["latency_rule"] == "in-time" and by_p95 == {**section, "latency_rule": "p95"}
    markdown = "\n".join(_tuning_budgets_markdown({"tuning_budgets": section}))
    assert "| detected within 500 ms | 0.500 | 0.700 | 0.700 | 0.700 | 0.650 |" in markdown


def _own_words(root: Path, speakers: list[str], rng: np.random.Generator) -> tuple[Path, Path]:
    """(a Speech Commands folder in which each of ``speakers`` says each command word of the tiny model once, a
    folder of other speech with recordings in every pool)."""
    frontend = AudioFrontendOptions()
    speech, talk = root / "sc", root / "talk"
    for k, label in enumerate(DEFAULT_COMMAND_LABELS):
        for speaker in speakers if is_command_word(label) else ():
            (speech / label).mkdir(parents=True, exist_ok=True)
            write_wav(speech / label / f"{speaker}_nohash_0.wav", _command_clip(k, rng, frontend),
                      frontend.sample_rate_hz)
    talk.mkdir()
    for i in range(8):
        write_wav(talk / f"other_{i}.wav", _command_clip(DEFAULT_COMMAND_LABELS.index("_unknown_"), rng, frontend),
                  frontend.sample_rate_hz)
    return speech, talk


def _speakers_of_half(tuning_half: bool) -> list[str]:
    """Speaker names that --split all puts in the tuning half (or the evaluation half)."""
    return [s for s in (f"{k:08x}" for k in range(64)) if (hash_percent(s, "/stream-tuning") < 50.0) == tuning_half]


@pytest.mark.parametrize("empty_split", ["tuning", "evaluation"])
def test_a_split_whose_speakers_say_no_command_word_is_refused_before_its_streams(tiny_model_path, tmp_path, capsys,
                                                                                 empty_split):
    """One's own words of one speaker (--split all halves the speakers by hash): in the evaluation half alone, the
    operating point was chosen on the evaluation streams (the figures chosen on what they report, the console's
    "tuning streams" line theirs) and --write-config wrote it; in the tuning half alone, no figure was measured and
    --write-config was left out, exit 0. Either is one line naming the flag, exit 2, before any stream."""
    speaker = _speakers_of_half(tuning_half=empty_split == "evaluation")[0]
    speech, talk = _own_words(tmp_path, [speaker], np.random.default_rng(3))
    config = tmp_path / "device.yaml"
    config.write_text("device: {name: a}\ncommands: {threshold: 0.7}\n")
    out = tmp_path / "out"
    assert cli.main(["bench", "--model", str(tiny_model_path), "--speech-commands", str(speech), "--out", str(out),
                     "--negatives", str(talk), "--quick", "--references", str(tmp_path / "no_refs"), "--config",
                     str(config), "--write-config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"edgesense: error: --speech-commands: expected command words of the {empty_split} "
                          f"speakers for the {empty_split} streams ("), err
    assert err.endswith(f"got none (the command words' 1 speaker(s): {speaker}); add speakers, or --no-streaming to "
                        "score clips only"), err
    assert config.read_text() == "device: {name: a}\ncommands: {threshold: 0.7}\n"
    assert not list(out.glob("cache/posteriors-*.npz"))


@pytest.mark.parametrize("flag", ["--tuning-negatives", "--tuning-noise", "--noise", "--negatives"])
def test_a_recording_flag_that_names_no_wav_recording_is_refused_not_left_out(tiny_model_path, tmp_path, capsys,
                                                                              flag):
    """One's own talk or noise as phone recordings (.m4a): --tuning-negatives was ignored (the report still named
    its pool, tuning+tuning-negatives), --tuning-noise gave the tuning streams pink noise in place of the training
    pool's, --noise and --negatives added nothing; exit 0, a warning at most. Now one line naming the flag."""
    speech, talk = _own_words(tmp_path, [*_speakers_of_half(True)[:1], *_speakers_of_half(False)[:1]],
                              np.random.default_rng(5))
    phone = tmp_path / "phone"
    phone.mkdir()
    (phone / "kitchen.m4a").write_bytes(b"\0" * 64)
    given = phone if flag.startswith("--tuning") else phone / "kitchen.m4a"  # a folder without any, or a file of none
    out = tmp_path / "out"
    assert cli.main(["bench", "--model", str(tiny_model_path), "--speech-commands", str(speech), "--out", str(out),
                     "--negatives", str(talk), flag, str(given), "--quick", "--references",
                     str(tmp_path / "no_refs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    expected = (f"expected WAV recordings (NAME.wav) in {phone}, got none; convert other formats first (e.g. ffmpeg "
                "-i NAME.m4a NAME.wav)" if given == phone else f"expected a WAV recording (NAME.wav), got {given}")
    assert err == f"edgesense: error: {flag}: {expected}", err
    assert not list(out.glob("cache/posteriors-*.npz"))


def test_ones_own_talk_recorded_in_one_go_is_said_in_the_talk_stream(tmp_path):
    """A negatives recording longer than a stream piece (a 70-s recording with --talk-minutes 1, or one over 10 minutes
    by default) was one utterance that never fitted: the talk stream was background alone, its false accepts per
    hour measured on no talk. It is said in pieces of at most TALK_PIECE_MAX_S, named by the recording."""
    sr = 16000
    rng = np.random.default_rng(11)
    folder = tmp_path / "talk"
    folder.mkdir()
    write_wav(folder / "living_room.wav", (0.1 * rng.standard_normal(70 * sr)).astype(np.float32), sr)
    write_wav(folder / "sentence.wav", (0.1 * rng.standard_normal(5 * sr)).astype(np.float32), sr)
    words, sentences = other_speech_utterances([folder / "living_room.wav", folder / "sentence.wav"], sr)
    assert not words
    pieces = [u for u in sentences if u.source == "talk/living_room.wav"]
    spoken_s = [(u.end - u.first) / sr for u in pieces]
    assert len(pieces) == 3 and all(s <= TALK_PIECE_MAX_S for s in spoken_s), spoken_s
    assert sum(spoken_s) == pytest.approx(70.0, abs=0.1)
    assert [(u.end - u.first) / sr for u in sentences if u.source == "talk/sentence.wav"] == [5.0]  # as it was
    talk = build_segments(StreamOptions(kind="talk", duration_s=60.0), SEGMENT_S, others=pieces)
    placed = [w for stream in talk for w in stream.words]
    assert placed and {w.source for w in placed} == {"talk/living_room.wav"}
