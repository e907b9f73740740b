"""scripts/teacher_stream_study.py: the head scores every hop on the audio before it (1.4 s for
nine embeddings, 1.1 s for five: the embeddings a training window cut there gives, across the
30 s pieces a stream is embedded in), a two-model
detector averages the two on their common hops, the cost probe times both audio paths, the whole
study on small stand-in data (tones for words and talk) trains its heads and leaves the bench's
report of the tuning streams and its own summary, and bad input is one line with exit code 2. The
models need the ``[teacher]`` extra (skipped without it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import installed_speech_embedding, load_script

from edgesense.bench.streams import stream_posteriors
from edgesense.frontend.wav import write_wav
from edgesense.runtime.model import EdgeModel
from edgesense.train.stream_heads import SPARE_FRAMES, window_samples
from edgesense.train.teachers import speech_embedding as se
from edgesense.train.teachers.audio import AudioTeacherOptions, build_audio_head

SR = 16000
LABELS = ("_silence_", "_unknown_", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


@pytest.fixture(scope="module")
def study():
    return load_script("teacher_stream_study")


@pytest.fixture(scope="module")
def embedder():
    return installed_speech_embedding(pad_ms=0.0)


def _stream(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    tone = 0.2 * np.sin(2 * np.pi * (300 + 200 * np.sin(0.5 * t)) * t) * (np.sin(1.3 * t) > 0)
    return (tone + rng.normal(scale=0.02, size=t.size)).astype(np.float32)


@pytest.mark.parametrize("context", [9, 5])
def test_every_hop_is_scored_on_the_window_that_ends_there_across_pieces(study, embedder, context):
    import keras

    keras.utils.set_random_seed(0)
    head = build_audio_head(context, se.EMBEDDING_DIM, len(LABELS), AudioTeacherOptions(enabled=True, pad_ms=0))
    x = _stream(70.0)  # more than two of the 30 s pieces the stream's mel is computed in
    scorer = study.StreamHead(embedder, head, LABELS, context=context)
    posts = scorer.posteriors(None, x, hop_ms=100.0)
    assert posts.labels == LABELS and posts.posteriors.shape == (posts.times_ms.size, len(LABELS))
    length = window_samples(context)
    assert length == (24000 if context == 9 else 18880)
    assert posts.times_ms[0] == pytest.approx(100.0 * np.ceil((length - SPARE_FRAMES * 160) / 1600))
    # hops on the 80 ms embedding grid: a training-length window ending there holds exactly those embeddings
    for end_ms in (3900.0, 32300.0, 64300.0):
        end = int(end_ms * SR / 1000)
        window = embedder(x[None, end - length:end])
        assert window.shape[1] == context
        expected = head.predict(window, verbose=0)[0]
        row = int(np.flatnonzero(posts.times_ms == end_ms)[0])
        np.testing.assert_allclose(posts.posteriors[row], expected, atol=1e-5)


def test_with_the_student_each_hop_is_the_weighted_mean_of_both_on_their_common_hops(study, embedder, tiny_model_path):
    model = EdgeModel.load(tiny_model_path)
    labels = tuple(model.command_labels)
    import keras

    keras.utils.set_random_seed(0)
    tiny_head = build_audio_head(9, se.EMBEDDING_DIM, len(labels), AudioTeacherOptions(enabled=True, pad_ms=0))
    x = _stream(6.0, seed=2)
    alone = study.StreamHead(embedder, tiny_head, labels).posteriors(model, x, hop_ms=100.0)
    student = stream_posteriors(model, x, hop_ms=100.0, progress=False)
    both = study.StreamHead(embedder, tiny_head, labels, student=stream_posteriors).posteriors(model, x, hop_ms=100.0)
    common = np.intersect1d(alone.times_ms, student.times_ms)
    np.testing.assert_array_equal(both.times_ms, common)
    a = alone.posteriors[np.isin(alone.times_ms, common)]
    s = student.posteriors[np.isin(student.times_ms, common)]
    np.testing.assert_allclose(both.posteriors, 0.5 * (a + s), atol=1e-6)
    leaning = study.StreamHead(embedder, tiny_head, labels, student=stream_posteriors, student_weight=0.25)
    np.testing.assert_allclose(leaning.posteriors(model, x, hop_ms=100.0).posteriors, 0.75 * a + 0.25 * s, atol=1e-6)
    with pytest.raises(ValueError, match="student_weight"):
        study.StreamHead(embedder, tiny_head, labels, student_weight=1.5)


def test_bad_input_is_one_line_and_exit_code_2(study, tmp_path, capsys):
    missing = tmp_path / "no_such_folder"
    assert study.main(["--out", str(tmp_path / "out"), "--model", str(missing / "m.tflite")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "m.tflite" in err
    assert not (tmp_path / "out" / "study.json").exists()
    with pytest.raises(SystemExit) as info:  # refused before anything is read or trained
        study.main(["--out", str(tmp_path / "out"), "--heads", "0"])
    assert info.value.code == 2 and "--heads: expected at least 1, got 0" in capsys.readouterr().err


def test_cost_times_both_audio_paths_per_second_of_audio(study, embedder, tiny_model_path):
    cost = study.cost(tiny_model_path, repeats=3)
    per_s = cost["ms_per_s_of_audio"]
    assert cost["files_bytes"] > 1_000_000 and cost["mel_step_ms"] > 0 and cost["embedding_ms"] > 0
    assert per_s["speech_embedding"] == pytest.approx(12.5 * (cost["mel_step_ms"] + cost["embedding_ms"]), rel=0.01)
    assert per_s["student"] == pytest.approx(10 * cost["student_hop_ms"], rel=0.01)
    assert cost["ratio"] == pytest.approx(per_s["speech_embedding"] / per_s["student"], rel=0.02)


def _talk_folder(root: Path, rng: np.random.Generator, *, recordings: int, seconds: float) -> Path:
    """Recordings of 'talk': runs of other tones, as long as the study's windows need."""
    from datagen import speech_clip

    root.mkdir(parents=True)
    for i in range(recordings):
        clips = [speech_clip(6 + (i + k) % 3, rng) for k in range(int(seconds))]  # pitches no command word has
        write_wav(root / f"reader{i:02d}.wav", np.concatenate(clips), SR)
    return root


@pytest.mark.slow
def test_the_study_trains_the_head_and_the_bench_scores_its_tuning_streams(study, embedder, tiny_model_path,
                                                                        tmp_path, capsys):
    from datagen import make_speech_commands

    model = EdgeModel.load(tiny_model_path)
    words = [w for w in model.command_labels if not w.startswith("_")]
    rng = np.random.default_rng(5)
    speech = make_speech_commands(tmp_path / "speech", words=words, speakers=24, per_speaker=1)
    talk = _talk_folder(tmp_path / "negatives" / "read_speech", rng, recordings=6, seconds=4.0)
    noise = tmp_path / "noise"
    noise.mkdir()
    for i in range(4):
        write_wav(noise / f"fan{i}.wav", rng.normal(scale=0.05, size=3 * SR).astype(np.float32), SR)
    tuning_noise = tmp_path / "tuning_noise"
    tuning_noise.mkdir()
    write_wav(tuning_noise / "wind.wav", rng.normal(scale=0.05, size=3 * SR).astype(np.float32), SR)
    out = tmp_path / "study"
    rc = study.main(["--out", str(out), "--model", str(tiny_model_path), "--speech-commands", str(speech),
                     "--negatives", str(talk.parent), "--noise", str(noise), "--tuning-noise", str(tuning_noise),
                     "--variants", "1", "--talk-per-variant", "20", "--silence-per-variant", "5", "--epochs", "2",
                     "--heads", "2", "--context", "5", "--quick"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "study.json").read_text())
    assert summary["options"]["heads"] == 2 and summary["options"]["context"] == 5
    assert [b["max_false_accepts_per_hour"] for b in summary["tuning_budgets"]["budgets"]] == [0.5, 1.0, 2.0, 5.0]
    assert summary["det_tuning"] and 0.0 <= summary["validation_window_accuracy"] <= 1.0
    report = json.loads((out / "bench" / "report.json").read_text())
    assert "evaluation_streams" not in report["streaming"]  # the tuning streams only
    assert "tuning streams, hit rate within 0.5, 1, 2, 5 false accepts per hour" in capsys.readouterr().out
    # the bench's own scorer is back for whatever runs next in this process
    assert study.bench_streams.stream_posteriors is stream_posteriors


def test_a_second_study_into_the_same_folder_scores_its_own_heads_not_the_cache_of_the_first(study, tmp_path):
    """The bench caches posteriors by model, stream and hop; the study swaps its own scorer in, so a second study
    into the same --out (other --context, --student-weight, heads) was scored from the first one's cache."""
    cache = tmp_path / "study" / "bench" / "cache"
    cache.mkdir(parents=True)
    (cache / "posteriors-0123.npz").write_bytes(b"the first study's scores")
    (cache.parent / "report.json").write_text("{}")
    assert study.fresh_bench_folder(tmp_path / "study") == cache.parent
    assert not cache.exists() and (cache.parent / "report.json").is_file()
    assert study.fresh_bench_folder(tmp_path / "new") == tmp_path / "new" / "bench"  # nothing there yet: fine
