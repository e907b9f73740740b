"""What the terminal shows while a long phase of a desktop command works: a line as it starts (what, how many), a bar
on a terminal only (``_progress``: tqdm, ``disable=None``) and a line as it ends (how long)."""

import logging

import numpy as np
import pytest

from edgesense.train import data

pytest.importorskip("tensorflow")

from datagen import make_speech_commands, write_train_yaml  # noqa: E402

from edgesense.train.config import load_train_config  # noqa: E402


def test_a_phase_says_its_start_and_its_end_with_how_long_and_nothing_more_when_it_fails(caplog):
    log = logging.getLogger("edgesense.test")
    with caplog.at_level(logging.INFO, logger="edgesense.test"), data.phase(log, "embedding %d clips", 3):
        pass
    assert [r.getMessage() for r in caplog.records][0] == "embedding 3 clips ..."
    assert caplog.records[1].getMessage().startswith("embedding 3 clips: done in ")
    caplog.clear()
    with pytest.raises(ValueError), caplog.at_level(logging.INFO, logger="edgesense.test"), \
            data.phase(log, "failing"):
        raise ValueError("no")
    assert [r.getMessage() for r in caplog.records] == ["failing ..."]


def test_the_progress_bar_is_drawn_on_a_terminal_only_and_counts_its_unit(capsys):
    bar = data._progress(range(3), 3, "speech embedding", unit="batch")
    assert list(bar) == [0, 1, 2] and bar.disable  # stderr is no terminal under pytest: no bar in a log


def test_the_example_bank_says_when_it_computes_a_variant_and_when_it_is_done(tmp_path, caplog):
    from edgesense.train.cache import ArrayCache
    from edgesense.train.trainer import load_dataset, make_bank

    speech = make_speech_commands(tmp_path / "speech", speakers=6, per_speaker=1)
    config = load_train_config(write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=None),
                               ["bank.variants=2"])
    ds = load_dataset(config)
    with caplog.at_level(logging.INFO, logger="edgesense.train.bank"):
        make_bank(ds, config, ArrayCache(tmp_path / "cache"))
    lines = [r.getMessage() for r in caplog.records if r.name == "edgesense.train.bank"]
    n = ds.audio_train.labels.size
    assert lines[0] == f"example bank: computing variant 1 of 2 ({n} clips; cached once done) ..."
    assert lines[1].startswith(f"example bank: computing variant 1 of 2 ({n} clips; cached once done): done in ")
    assert sum("computing variant 2 of 2" in line for line in lines) == 2
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgesense.train.bank"):
        make_bank(ds, config, ArrayCache(tmp_path / "cache"))  # from the cache: nothing computed, nothing said so
    assert not any("computing" in r.getMessage() for r in caplog.records)


def test_the_speech_embedding_shows_a_bar_of_its_batches(monkeypatch):
    from edgesense.train.teachers.speech_embedding import SpeechEmbedding, SpeechEmbeddingOptions

    bars = []

    def progress(iterable, total, what, *, unit="file"):
        bars.append((total, unit, what))
        return iterable

    monkeypatch.setattr(data, "_progress", progress)
    embedder = SpeechEmbedding.__new__(SpeechEmbedding)  # no model files: the batches' work stubbed
    embedder.options = SpeechEmbeddingOptions(batch_clips=4)
    monkeypatch.setattr(embedder, "mel", lambda clips: np.zeros((len(clips), 100, 32), np.float32))
    monkeypatch.setattr(embedder, "embed", lambda windows: np.zeros((*windows.shape[:2], 96), np.float32))
    out = embedder(np.zeros((10, 16000), np.float32))
    assert out.shape[0] == 10
    assert bars == [(3, "batch", "speech embedding (4 clips a batch)")]


def test_a_reference_s_training_says_each_epoch_as_it_ends(caplog):
    from edgesense.bench.reference_models import _EpochLines

    lines = _EpochLines("kws_dscnn", 40)
    with caplog.at_level(logging.INFO, logger="edgesense.bench.reference_models"):
        lines.on_epoch_begin(2)
        lines.on_epoch_end(2, {"loss": 0.5, "val_categorical_accuracy": 0.75, "categorical_accuracy": 0.8})
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("reference kws_dscnn: epoch 3/40, loss 0.5000, val_categorical_accuracy 0.7500, ")
