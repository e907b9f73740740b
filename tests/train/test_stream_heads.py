"""edgesense train-stream-heads: its training windows hold what they say, its file is the mean of
its heads in the real interpreter with metadata the device reads, the whole command runs on
stand-in data, and bad input is one line with exit code 2."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import require_speech_embedding

from edgesense.app.cli import main
from edgesense.frontend.wav import write_wav
from edgesense.runtime.second_opinion import HEADS_FORMAT_VERSION, HEADS_KIND, StreamHeads
from edgesense.runtime.speech_embedding import EMBEDDING_DIM
from edgesense.train.stream_heads import (
    FADE_IN_MS, SILENCE_DBFS, SPEED_RANGE, TALK_BEFORE_END_MS, TALK_WORD_MS, VOICE_SPEED_RANGE, StreamHeadsOptions,
    ensemble_model, hard_negative_clips, heads_tflite, mix, partial_word, place, seen_samples, speech_ends,
    talk_end_window, talk_word_window, training_material, training_windows, window_samples,
)
from edgesense.train.teachers.audio import AudioTeacherOptions, build_audio_head

SR = 16000


def _windows(clips, labels, talk, noise, **fields):
    """:func:`training_windows` with ``_unknown_`` 1, ``_silence_`` 0, seed 0 and the options' ``fields``."""
    return training_windows(clips, labels, talk, noise, StreamHeadsOptions(**{"seed": 0, **fields}), unknown=1,
                            silence=0)


def test_training_windows_place_whole_words_over_noise_and_background_at_its_level():
    rng = np.random.default_rng(1)
    word = np.zeros(SR, np.float32)
    word[6000:10000] = 0.3 * np.sin(2 * np.pi * 500 * np.arange(4000) / SR)
    clips = np.stack([word, word, rng.normal(scale=0.1, size=SR).astype(np.float32)])
    labels = np.array([2, 3, 0], np.int32)  # yes, no, and a _silence_ snippet (left to the background windows)
    noise = [rng.normal(scale=0.05, size=5 * SR).astype(np.float32)]
    talk = [rng.normal(scale=0.1, size=4 * SR).astype(np.float32)]
    length = window_samples(5)
    assert length == 18880 == StreamHeadsOptions().window_samples
    x, y = _windows(clips, labels, talk, noise, variants=2, talk_per_variant=3, silence_per_variant=4)
    assert x.shape == (2 * (2 + 3 + 4), length)
    assert np.bincount(y, minlength=4).tolist() == [8, 6, 2, 2]
    for row in x[y == 0]:
        level = 10 * np.log10(np.mean(np.square(row, dtype=np.float64)))
        assert SILENCE_DBFS[0] - 0.01 <= level <= SILENCE_DBFS[1] + 0.01
    for row in x[y >= 2]:  # the whole tone stands out of the noise (SNR >= 0 dB) wherever it was placed
        energy = np.convolve(np.square(row), np.ones(4000), "valid")
        assert energy.max() > 1.8 * np.median(energy)
    again, _ = _windows(clips, labels, talk, noise, variants=2, talk_per_variant=3, silence_per_variant=4)
    np.testing.assert_array_equal(x, again)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_mix_puts_the_spoken_part_over_the_noise_at_a_drawn_snr_within_the_range(snr_db):
    rng = np.random.default_rng(2)
    speech = np.zeros(SR, np.float32)
    speech[4000:12000] = 0.3 * np.sin(2 * np.pi * 300 * np.arange(8000) / SR)
    noise = [rng.normal(scale=0.1, size=3 * SR).astype(np.float32)]
    out = mix(speech, (4000, 12000), noise, rng, snr_db=(snr_db, snr_db)).astype(np.float64)
    background = np.mean(np.concatenate([out[:4000], out[12000:]]) ** 2)
    spoken = np.mean(out[4000:12000] ** 2) - background
    assert 10 * np.log10(spoken / background) == pytest.approx(snr_db, abs=0.5)


def test_with_every_lever_off_the_windows_are_those_the_bundled_heads_learned_from():
    """The levers (partial words, speed, talk ends, other voices) draw nothing when off: the figures are
    those of the windows before they existed (981139a's training_windows on the same input)."""
    rng = np.random.default_rng(7)
    word = np.zeros(SR, np.float32)
    word[5000:11000] = 0.3 * np.sin(2 * np.pi * 440 * np.arange(6000) / SR)
    clips = np.stack([word, 0.5 * word, rng.normal(scale=0.1, size=SR).astype(np.float32), word])
    noise = [rng.normal(scale=0.05, size=3 * SR).astype(np.float32)]
    talk = [rng.normal(scale=0.1, size=2 * SR).astype(np.float32)]
    x, y = _windows(clips, np.array([2, 3, 0, 1], np.int32), talk, noise, variants=2, talk_per_variant=2,
                    silence_per_variant=1, seed=3)
    assert x.shape == (12, window_samples(5)) and y.tolist() == [2, 3, 1, 1, 1, 0, 2, 3, 1, 1, 1, 0]
    assert float(np.abs(x.astype(np.float64)).sum()) == pytest.approx(5121.915106648317, rel=1e-6)
    assert float(x[:, ::997].astype(np.float64).sum()) == pytest.approx(-0.3346706959432595, abs=1e-4)


def test_word_placement_puts_the_spoken_part_anywhere_the_embeddings_see_it_clip_placement_near_the_centre():
    clip = np.zeros(SR, np.float32)
    clip[5000:11000] = np.linspace(0.1, 0.9, 6000, dtype=np.float32)  # a ramp: where each sample went is visible
    length, seen, rng = window_samples(5), seen_samples(5), np.random.default_rng(0)
    assert seen == 17280 < length
    ends = {}
    for placement in ("clip", "word"):
        ends[placement] = []
        for _ in range(300):
            window, (a, b) = place(clip, (5000, 11000), length, placement=placement, seen=seen, rng=rng)
            assert window.shape == (length,) and b - a == 6000
            np.testing.assert_array_equal(window[a:b], clip[5000:11000])  # the spoken part whole, in order
            assert np.count_nonzero(window) == 6000  # nothing else of the clip is audible here
            ends[placement].append(b)
    assert min(ends["clip"]) >= 11000 and max(ends["clip"]) <= 11000 + length - SR  # never near the window's end
    assert max(ends["word"]) <= seen and min(ends["word"]) >= 6000
    assert max(ends["word"]) > seen - 300 and min(ends["word"]) < 6300  # from the seen end back to the start
    long = np.ones(SR, np.float32)  # a spoken part longer than the seen part starts the window
    window, span = place(long, (0, SR), 8000, placement="word", seen=6000, rng=rng)
    assert span == (0, 8000) and np.all(window == 1.0)


def test_validation_windows_hold_each_clip_once_placed_as_in_training_with_nothing_added():
    options = StreamHeadsOptions(variants=6, partial_share=0.5, speed_share=0.5, talk_ends_share=0.5,
                                 talk_words_share=0.5, unknown_voices_share=1.0, placement="clip", seed=4)
    v = options.for_validation()
    assert (v.variants, v.talk_per_variant, v.silence_per_variant, v.seed, v.placement) == (1, 0, 0, 5, "clip")
    assert v.partial_share == v.speed_share == v.talk_ends_share == v.talk_words_share == 0.0
    assert v.unknown_voices_share == 0.0


def test_the_validation_options_of_the_last_valid_seed_are_valid():
    last = 2**32 - 1  # a valid --seed: the validation windows' seed wraps to 0, not 2**32
    assert StreamHeadsOptions(seed=last).for_validation().seed == 0


def test_a_partial_word_keeps_only_its_beginning_or_its_end_and_the_rest_is_silent():
    kept = StreamHeadsOptions().partial_kept
    clip = np.zeros(SR, np.float32)
    clip[4000:12000] = np.linspace(0.1, 0.9, 8000, dtype=np.float32)
    clip[:1000] = 0.05  # a breath before the word: gone from every partial
    rng = np.random.default_rng(0)
    sides = set()
    for _ in range(200):
        part, (a, b) = partial_word(clip, (4000, 12000), rng)
        assert kept[0] * 8000 - 1 <= b - a <= kept[1] * 8000
        assert a == 4000 or b == 12000
        sides.add("beginning" if a == 4000 else "end")
        np.testing.assert_array_equal(part[a:b], clip[a:b])
        assert np.count_nonzero(part) == b - a
    assert sides == {"beginning", "end"}
    for _ in range(50):  # only ends, most of the word: its onset cut
        part, (a, b) = partial_word(clip, (4000, 12000), rng, kept=(0.5, 0.8), end_share=1.0)
        assert b == 12000 and 4000 - 1 <= b - a <= 6400 and np.count_nonzero(part) == b - a


def test_partial_words_add_unknown_windows_for_their_share_of_the_command_clips_and_none_at_zero():
    rng = np.random.default_rng(1)
    word = np.zeros(SR, np.float32)
    word[6000:10000] = 0.3 * np.sin(2 * np.pi * 500 * np.arange(4000) / SR)
    clips = np.stack([word] * 40 + [word] * 10)
    labels = np.array([2] * 40 + [1] * 10, np.int32)  # 40 commands, 10 _unknown_ words (never cut)
    noise = [rng.normal(scale=0.05, size=5 * SR).astype(np.float32)]
    talk = [rng.normal(scale=0.1, size=4 * SR).astype(np.float32)]
    common = dict(variants=3, talk_per_variant=2, silence_per_variant=0)
    x0, y0 = _windows(clips, labels, talk, noise, **common)
    assert np.bincount(y0).tolist() == [0, 3 * (10 + 2), 3 * 40]
    x, y = _windows(clips, labels, talk, noise, **common, partial_share=1.0)
    assert np.bincount(y).tolist() == [0, 3 * (10 + 2 + 40), 3 * 40]
    half, _ = _windows(clips, labels, talk, noise, **common, partial_share=0.5)
    assert 3 * 40 * 0.25 < len(half) - len(x0) < 3 * 40 * 0.75
    silent = [np.zeros(5 * SR, np.float32)]  # no noise: what is audible is what was kept of the word
    x, y = _windows(clips, labels, talk, silent, **dict(common, talk_per_variant=0), partial_share=1.0)
    audible = np.count_nonzero(x, axis=1)
    assert np.all(audible[y == 2] > 0.9 * 4000)
    parts = (audible > 0) & (audible <= StreamHeadsOptions().partial_kept[1] * 4000)
    assert np.all(y[parts] == 1) and parts.sum() == 3 * 40  # the _unknown_ words themselves stay whole


def test_speed_plays_its_share_of_the_words_faster_or_slower_within_the_range():
    word = np.zeros(SR, np.float32)
    word[6000:10000] = 0.3 * np.sin(2 * np.pi * 500 * np.arange(4000) / SR)
    clips, labels = np.stack([word] * 60), np.full(60, 2, np.int32)
    silent = [np.zeros(5 * SR, np.float32)]  # no noise: a word's audible length is its length
    for share, changed in ((0.0, (0, 0)), (0.5, (30, 90)), (1.0, (100, 120))):
        x, _ = _windows(clips, labels, silent, silent, variants=2, talk_per_variant=0, silence_per_variant=0,
                        speed_share=share)
        span = np.array([np.flatnonzero(row)[-1] - np.flatnonzero(row)[0] + 1 for row in x])
        assert np.all((span >= 4000 / SPEED_RANGE[1] - 20) & (span <= 4000 / SPEED_RANGE[0] + 20))
        assert changed[0] <= np.count_nonzero(np.abs(span - 4000) > 20) <= changed[1], share


def test_unknown_voices_add_windows_of_the_other_words_at_another_speed_and_leave_the_commands_alone():
    word = np.zeros(SR, np.float32)
    word[6000:10000] = 0.3 * np.sin(2 * np.pi * 500 * np.arange(4000) / SR)
    clips, labels = np.stack([word] * 30), np.array([2] * 20 + [1] * 10, np.int32)  # 20 commands, 10 other words
    silent = [np.zeros(5 * SR, np.float32)]  # no noise: a word's audible length is its length
    x, y = _windows(clips, labels, silent, silent, variants=2, talk_per_variant=0, silence_per_variant=0,
                    unknown_voices_share=1.0)
    assert np.bincount(y).tolist() == [0, 2 * (10 + 10), 2 * 20]
    span = np.array([np.flatnonzero(row)[-1] - np.flatnonzero(row)[0] + 1 for row in x])
    assert np.all(np.abs(span[y == 2] - 4000) <= 20)  # the commands as they were
    low, high = 4000 / VOICE_SPEED_RANGE[1] - 20, 4000 / VOICE_SPEED_RANGE[0] + 20
    assert np.all((span[y == 1] >= low) & (span[y == 1] <= high))
    assert np.count_nonzero(np.abs(span[y == 1] - 4000) > 20) >= 15  # the extra windows, in other voices


def _talk_with_pauses() -> np.ndarray:
    """3 s: speech 0.2-0.8 s, a 50-ms gap (too short to be a pause), speech 0.85-1.4 s, then 1.9-2.95 s."""
    rng = np.random.default_rng(3)
    talk = (0.0005 * rng.normal(size=3 * SR)).astype(np.float32)
    for a, b in ((0.2, 0.8), (0.85, 1.4), (1.9, 2.95)):
        first, last = round(a * SR), round(b * SR)
        talk[first:last] += (0.3 * np.sin(2 * np.pi * 220 * np.arange(last - first) / SR)).astype(np.float32)
    return talk


def test_speech_ends_are_where_speech_stops_for_a_pause_or_the_recording_end():
    ends = speech_ends(_talk_with_pauses())
    np.testing.assert_allclose(ends / SR, [1.4, 2.95], atol=0.011)  # not at 0.8 s: 50 ms is no pause
    assert speech_ends(np.zeros(SR, np.float32)).size == 0 and speech_ends(np.zeros(5, np.float32)).size == 0


def test_talk_end_windows_put_a_place_where_talk_stops_within_what_the_embeddings_see():
    said = np.zeros(3 * SR, np.float32)  # one stretch of speech, 0.2-1.4 s: one place where it stops
    said[int(0.2 * SR):int(1.4 * SR)] = 0.3 * np.sin(2 * np.pi * 220 * np.arange(int(1.2 * SR)) / SR)
    length, seen, rng = window_samples(5), seen_samples(5), np.random.default_rng(0)
    stops = []
    for _ in range(300):
        window = talk_end_window([(said, speech_ends(said))], length, seen, rng)
        assert window.shape == (length,) and np.abs(window).max() > 0.1
        stops.append(np.flatnonzero(np.abs(window) > 0.05)[-1] + 1)
    assert min(stops) >= TALK_BEFORE_END_MS / 1000 * SR - 200 and max(stops) <= seen + 200
    assert min(stops) < TALK_BEFORE_END_MS / 1000 * SR + 1000 and max(stops) > seen - 300  # anywhere between
    talk = [said, np.zeros(2 * SR, np.float32)]  # a recording without speech is never drawn
    x, y = _windows(np.zeros((0, SR), np.float32), np.zeros(0, np.int32), talk, [np.zeros(SR, np.float32)],
                    variants=1, talk_per_variant=40, silence_per_variant=0, talk_ends_share=1.0)
    assert np.all(y == 1) and len(x) == 40 and np.all(np.abs(x).max(axis=1) > 0)  # no noise: all of it talk


def test_talk_words_are_a_piece_of_talk_up_to_where_it_stops_said_alone_where_a_word_is_placed():
    said = np.zeros(4 * SR, np.float32)  # talk from 0.2 s that stops at 2.5 s: one place where it stops
    said[int(0.2 * SR):int(2.5 * SR)] = 0.3 * np.sin(2 * np.pi * 220 * np.arange(int(2.3 * SR)) / SR)
    length, seen, rng = window_samples(5), seen_samples(5), np.random.default_rng(0)
    sizes, ends = [], []
    for _ in range(300):
        window, (a, b) = talk_word_window([(said, speech_ends(said))], length, seen, rng)
        assert window.shape == (length,) and not window[:a].any() and not window[b:].any()  # quiet around it
        sizes.append((b - a) / SR * 1000)
        ends.append(b)
        fade = int(FADE_IN_MS / 1000 * SR)
        assert np.abs(window[a:a + fade // 2]).max() < 0.16 and np.abs(window[a + fade:b]).max() > 0.29  # faded in
    assert TALK_WORD_MS[0] - 1 <= min(sizes) < TALK_WORD_MS[0] + 50 and TALK_WORD_MS[1] - 50 < max(sizes) <= 800
    assert max(ends) <= seen and max(ends) > seen - 300 and min(ends) < 0.4 * seen  # anywhere the embeddings see
    x, y = _windows(np.zeros((0, SR), np.float32), np.zeros(0, np.int32), [said], [np.zeros(SR, np.float32)],
                    variants=1, talk_per_variant=200, silence_per_variant=0, talk_words_share=0.5)
    alone = np.abs(x[:, :2000]).max(axis=1) == 0  # a piece said alone starts after some quiet more often than not
    assert np.all(y == 1) and 50 < np.count_nonzero(alone) < 150


def test_the_file_is_the_mean_of_the_heads_with_metadata_the_device_reads(tmp_path):
    import keras

    heads = []
    for seed in (3, 4, 5):
        keras.utils.set_random_seed(seed)
        heads.append(build_audio_head(4, EMBEDDING_DIM, 12, AudioTeacherOptions(conv_channels=16, dense_units=16)))
    labels = [f"w{i}" for i in range(12)]
    path = tmp_path / "heads.tflite"
    path.write_bytes(heads_tflite(ensemble_model(heads, 4), {"kind": HEADS_KIND, "format_version": HEADS_FORMAT_VERSION,
                                                           "labels": labels, "context_embeddings": 4, "heads": 3}))
    device = StreamHeads(path)
    assert device.labels == tuple(labels) and device.context == 4 and device.metadata["heads"] == 3
    x = np.random.default_rng(0).normal(size=(8, 4, EMBEDDING_DIM)).astype(np.float32)
    mean = np.mean([h.predict(x, verbose=0) for h in heads], axis=0)
    got = np.stack([device(row) for row in x])
    np.testing.assert_allclose(got, mean, atol=0.02)  # int8 weights, float activations
    assert np.array_equal(got.argmax(1), mean.argmax(1))


def test_hard_negatives_are_every_wav_under_the_folders_as_one_second_clips(tmp_path):
    (tmp_path / "on").mkdir()
    (tmp_path / "right").mkdir()
    write_wav(tmp_path / "on" / "a.wav", np.full(SR // 2, 0.1, np.float32), SR)
    write_wav(tmp_path / "right" / "b.wav", np.full(2 * SR, 0.2, np.float32), SR)
    clips = hard_negative_clips([tmp_path])
    assert clips.shape == (2, SR) and clips.dtype == np.float32
    assert np.count_nonzero(clips[0]) == SR // 2 and np.allclose(clips[1], 0.2, atol=1e-3)  # padded, trimmed
    assert hard_negative_clips([]).shape == (0, SR)


@pytest.mark.parametrize("kwargs, field", [({"heads": 0}, "heads"), ({"context_embeddings": 0}, "context_embeddings"),
                                           ({"talk_per_variant": -1}, "talk_per_variant"),
                                           ({"unknown_weight": 0.0}, "unknown_weight"),
                                           ({"placement": "centre"}, "placement"),
                                           ({"partial_share": 1.5}, "partial_share"),
                                           ({"speed_share": -0.1}, "speed_share"),
                                           ({"partial_kept": (0.6, 0.3)}, "partial_kept"),
                                           ({"partial_end_share": 2.0}, "partial_end_share"),
                                           ({"talk_ends_share": 1.1}, "talk_ends_share"),
                                           ({"talk_words_share": 1.5}, "talk_words_share"),
                                           ({"unknown_voices_share": -1.0}, "unknown_voices_share"),
                                           ({"snr_db": (20.0, 10.0)}, "snr_db"),
                                           ({"seed": -1}, r"seed: expected an integer in \[0, 2\*\*32\)"),
                                           ({"seed": 2**32}, r"seed: expected an integer in \[0, 2\*\*32\)")])
def test_options_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        StreamHeadsOptions(**kwargs)


def test_bad_input_is_one_line_and_exit_code_2(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "heads.tflite"
    out.write_bytes(b"mine")
    for argv, needle in (([], "--out"), (["--force", "--model", str(tmp_path / "none.tflite")], "none.tflite"),
                         (["--force", "--model", str(tiny_model_path), "--speech-commands", str(tmp_path / "x")],
                          "--speech-commands"),
                         (["--model", str(tiny_model_path)], "exists; pass --force")):
        if argv == []:
            with pytest.raises(SystemExit) as info:
                main(["train-stream-heads"])
            assert info.value.code == 2 and "--out" in capsys.readouterr().err
            continue
        assert main(["train-stream-heads", "--out", str(out), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and needle in err, err
    assert out.read_bytes() == b"mine"  # never overwritten unasked
    assert main(["train-stream-heads", "--out", str(tmp_path / "h.tflite"), "--model", str(tiny_model_path),
                 "--speech-commands", str(tmp_path), "--negatives", str(tmp_path), "--noise", str(tmp_path),
                 "--heads", "0"]) == 2
    assert "--heads: expected an integer in [1, 2**63), got 0" in capsys.readouterr().err
    assert main(["train-stream-heads", "--out", str(tmp_path / "h.tflite"), "--model", str(tiny_model_path),
                 "--speech-commands", str(tmp_path), "--negatives", str(tmp_path), "--noise", str(tmp_path),
                 "--talk", str(tmp_path / "no-talk")]) == 2
    assert "--talk: expected a folder" in capsys.readouterr().err
    assert main(["train-stream-heads", "--out", str(tmp_path / "h.tflite"), "--model", str(tiny_model_path),
                 "--speech-commands", str(tmp_path), "--negatives", str(tmp_path), "--noise", str(tmp_path),
                 "--partial-words", "2"]) == 2
    assert "--partial-words: expected a share in [0, 1], got 2" in capsys.readouterr().err
    assert main(["train-stream-heads", "--out", str(tmp_path / "h.tflite"), "--model", str(tiny_model_path),
                 "--speech-commands", str(tmp_path), "--negatives", str(tmp_path), "--noise", str(tmp_path),
                 "--seed", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "edgesense: error: --seed: expected an integer in [0, 2**32), got -1"
    assert main(["train-stream-heads", "--out", str(tmp_path / "h.tflite"), "--model", str(tiny_model_path),
                 "--speech-commands", str(tmp_path), "--negatives", str(tmp_path), "--noise", str(tmp_path),
                 "--heads", "9" * 400]) == 2  # shortened, not printed whole
    assert capsys.readouterr().err.strip() == ("edgesense: error: --heads: expected an integer in [1, 2**63), "
                                               "got 999999...9999 (400 digits)")


def test_the_default_model_is_the_shipped_one_from_any_folder_as_bench_finds_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # models/edgesense.tflite is no file here: the shipped model is the default
    assert main(["train-stream-heads", "--out", str(tmp_path / "h.tflite"), "--speech-commands",
                 str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgesense: error: --speech-commands: expected a folder"), err  # past --model
    assert main(["train-stream-heads", "--out", str(tmp_path / "h.tflite"), "--model", "models/nope.tflite"]) == 2
    assert capsys.readouterr().err.strip() == "edgesense: error: --model models/nope.tflite: no such file"


@pytest.mark.slow
def test_the_command_trains_heads_the_device_loads(tiny_model_path, tmp_path, capsys):
    require_speech_embedding()
    from datagen import make_speech_commands, speech_clip

    from edgesense.runtime.model import EdgeModel

    model = EdgeModel.load(tiny_model_path)
    rng = np.random.default_rng(5)
    speech = make_speech_commands(tmp_path / "speech", words=[w for w in model.command_labels if not w.startswith("_")],
                                  speakers=24, per_speaker=1)
    talk = tmp_path / "negatives" / "read_speech"
    talk.mkdir(parents=True)
    for i in range(6):  # 'talk': runs of tones no command word has, as long as a window
        reading = np.concatenate([speech_clip(6 + (i + k) % 3, rng) for k in range(4)])
        write_wav(talk / f"reader{i:02d}.wav", reading, SR)
    noise = tmp_path / "noise"
    noise.mkdir()
    for i in range(4):
        write_wav(noise / f"fan{i}.wav", rng.normal(scale=0.05, size=3 * SR).astype(np.float32), SR)
    mined = tmp_path / "mined" / "yes"  # edgesense mine's layout: WORD/*.wav
    mined.mkdir(parents=True)
    for i in range(3):
        write_wav(mined / f"talk00_{i:08d}ms.wav", speech_clip(7, rng), SR)
    synthesized = tmp_path / "synth-talk" / "voice-a"  # edgesense synth-talk's layout: VOICE/*.wav, all of it learned
    synthesized.mkdir(parents=True)
    for i in range(2):
        write_wav(synthesized / f"s{i}.wav", np.concatenate([speech_clip(6 + k % 3, rng) for k in range(3)]), SR)
    options = StreamHeadsOptions(variants=1, talk_per_variant=4, silence_per_variant=1)
    pools = [training_material(model, speech, [noise], talk.parent, options, talk=extra)
             for extra in ([], [synthesized.parent])]
    assert len(pools[1].talk) == len(pools[0].talk) + 2
    out = tmp_path / "heads.tflite"
    assert main(["train-stream-heads", "--out", str(out), "--model", str(tiny_model_path), "--speech-commands",
                 str(speech), "--negatives", str(talk.parent), "--noise", str(noise), "--variants", "1",
                 "--talk-per-variant", "20", "--silence-per-variant", "5", "--epochs", "2", "--heads", "2",
                 "--hard-negatives", str(mined.parent), "--talk", str(synthesized.parent), "--placement", "clip",
                 "--partial-words", "0.5", "--speed", "0.5", "--partial-kept", "0.5", "0.8",
                 "--partial-end-share", "1", "--talk-ends", "0.5", "--talk-words", "0.5",
                 "--unknown-voices", "1"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    heads = StreamHeads(out)
    assert heads.labels == tuple(model.command_labels) and heads.context == 5
    meta = heads.metadata
    assert meta["heads"] == 2 and meta["options"]["epochs"] == 2 and meta["training_windows"] > 0
    assert meta["options"]["placement"] == "clip" and meta["options"]["partial_share"] == 0.5
    assert meta["options"]["speed_share"] == 0.5 and meta["options"]["partial_kept"] == [0.5, 0.8]
    assert meta["options"]["partial_end_share"] == 1.0 and meta["options"]["talk_ends_share"] == 0.5
    assert meta["options"]["unknown_voices_share"] == 1.0 and meta["options"]["talk_words_share"] == 0.5
    assert meta["hard_negatives"] == {"folders": [str(mined.parent)], "windows": 3}
    assert meta["talk"] == [str(synthesized.parent)]
    assert json.loads(json.dumps(meta)) == meta and 0.0 <= meta["validation_window_accuracy"] <= 1.0
    # the split the heads trained on (the student's, of this folder): a reader can check they never heard its
    # held-out speakers (bench and mine compare it with theirs)
    from edgesense.train.data import SplitSpec

    assert meta["data"]["speech_commands"] == [str(speech.resolve())]
    assert meta["data"]["split"] == dataclasses.asdict(SplitSpec.from_metadata(model.metadata, None))
    assert meta["data"]["noise"] == [str(noise)] and meta["data"]["negatives"] == str(talk.parent)


def test_a_student_of_its_own_words_learns_them_and_the_folders_other_words_as_unknown(tmp_path):
    from types import SimpleNamespace

    from datagen import make_speech_commands, speech_clip

    from edgesense.types import DEFAULT_COMMAND_WORDS

    # a Speech Commands folder of all ten words; the student knows four of them (data.words: [yes, no, up, down])
    speech = make_speech_commands(tmp_path / "speech", words=DEFAULT_COMMAND_WORDS, unknown_words=(), speakers=12,
                                  per_speaker=1)
    labels = ("_silence_", "_unknown_", *DEFAULT_COMMAND_WORDS[:4])
    student = SimpleNamespace(command_labels=labels, metadata={})
    rng = np.random.default_rng(3)
    talk = tmp_path / "negatives" / "read_speech"
    talk.mkdir(parents=True)
    for i in range(4):
        write_wav(talk / f"reader{i}.wav", np.concatenate([speech_clip(None, rng) for _ in range(3)]), SR)
    options = StreamHeadsOptions(variants=1, talk_per_variant=2, silence_per_variant=1)
    material = training_material(student, speech, [], talk.parent, options)
    assert material.labels == labels
    clips = {label: int(np.sum(material.vy == k) + np.sum(material.y == k)) for k, label in enumerate(labels)}
    assert all(clips[word] > 0 for word in DEFAULT_COMMAND_WORDS[:4])
    assert clips["_unknown_"] > 6 * 12 * 0.5  # the six other words' clips (most speakers train), and the talk


def _two_word_material(tmp_path, *, readers: int):
    """(a Speech Commands folder of two words and 8 speakers, a student of those words, a folder of ``readers``
    recordings of read talk, the random generator that made them) for ``training_material``."""
    from types import SimpleNamespace

    from datagen import make_speech_commands, speech_clip

    from edgesense.types import DEFAULT_COMMAND_WORDS

    speech = make_speech_commands(tmp_path / "speech", words=DEFAULT_COMMAND_WORDS[:2], unknown_words=(), speakers=8,
                                  per_speaker=1)
    student = SimpleNamespace(command_labels=("_silence_", "_unknown_", *DEFAULT_COMMAND_WORDS[:2]), metadata={})
    rng = np.random.default_rng(3)
    negatives = tmp_path / "negatives" / "read_speech"
    negatives.mkdir(parents=True)
    for i in range(readers):
        write_wav(negatives / f"reader{i}.wav", np.concatenate([speech_clip(None, rng) for _ in range(3)]), SR)
    return speech, student, negatives, rng


def test_talk_shorter_than_a_window_is_said_never_silently_left_out(tmp_path, caplog):
    """``--talk`` of recordings shorter than a training window (words said alone, 1-s clips) trained on
    nothing of them, silently: the log said they took part and the windows were those without them."""
    from datagen import speech_clip

    speech, student, negatives, rng = _two_word_material(tmp_path, readers=4)
    words, mixed = tmp_path / "words" / "voice", tmp_path / "mixed" / "voice"
    words.mkdir(parents=True)
    mixed.mkdir(parents=True)
    for i in range(3):  # one second each: shorter than a window (1.18 s)
        write_wav(words / f"w{i}.wav", speech_clip(6, rng), SR)
        write_wav(mixed / f"w{i}.wav", speech_clip(6, rng), SR)
    write_wav(mixed / "sentence.wav", np.concatenate([speech_clip(6 + k, rng) for k in range(3)]), SR)
    options = StreamHeadsOptions(variants=1, talk_per_variant=2, silence_per_variant=1)
    with pytest.raises(ValueError, match=r"^--talk: expected recordings of at least 1\.18 s \(a training window\), "
                                         r"got 3 recordings, all shorter$"):
        training_material(student, speech, [], negatives.parent, options, talk=[words.parent])
    alone = training_material(student, speech, [], negatives.parent, options)
    caplog.clear()
    with caplog.at_level("INFO", logger="edgesense.train.stream_heads"):
        material = training_material(student, speech, [], negatives.parent, options, talk=[mixed.parent])
    assert len(material.talk) == len(alone.talk) + 1  # the sentence
    assert "--talk: 3 of its 4 recordings are shorter than a training window (1.18 s) and are left out" in caplog.text
    assert "(training pools; 1 of --talk)" in caplog.text


def test_talk_that_is_negatives_recordings_is_refused_its_evaluation_pool_never_learned(tmp_path):
    """All of ``--talk`` is learned, so ``--talk`` naming (part of) ``--negatives`` taught the heads the
    tuning and evaluation pools of that talk, the benchmark's, silently."""
    from datagen import speech_clip

    from edgesense.train.pools import speech_negative_pools, wav_recordings

    speech, student, negatives, rng = _two_word_material(tmp_path, readers=10)
    assert speech_negative_pools(wav_recordings([negatives]))["evaluation"]
    options = StreamHeadsOptions(variants=1, talk_per_variant=2, silence_per_variant=1)
    (tmp_path / "link").symlink_to(negatives.parent)  # the same recordings by another name
    for folder in (negatives, negatives.parent, tmp_path / "link"):
        with pytest.raises(ValueError, match=r"^--talk: expected talk apart from --negatives .* got .*reader0\.wav "
                                             r"and 9 more, recordings of --negatives"):
            training_material(student, speech, [], negatives.parent, options, talk=[folder])
    own = tmp_path / "own_talk" / "voice"  # talk of one's own: all of it, as before
    own.mkdir(parents=True)
    write_wav(own / "s.wav", np.concatenate([speech_clip(None, rng) for _ in range(3)]), SR)
    with_own = training_material(student, speech, [], negatives.parent, options, talk=[own.parent])
    assert len(with_own.talk) == len(training_material(student, speech, [], negatives.parent, options).talk) + 1


def _speakers_of(speech, words, part):
    """The speakers of ``part`` (``training``, ``validation``) in ``speech``, split as a student that records no
    split was trained."""
    from edgesense.train.data import SplitSpec, load_speech_commands

    split = SplitSpec.from_metadata({}, None).split_clips(load_speech_commands(speech, words=words))
    return {item.speaker for item in split[part] if item.label in words}


def test_a_word_no_training_speaker_says_is_refused_never_heads_that_never_learned_it(tmp_path):
    """A folder whose training speakers never say a word of the student (one's own words recorded by a
    speaker or two, all held out for validation) wrote heads that had never heard it, silently."""
    speech, student, negatives, _ = _two_word_material(tmp_path, readers=4)
    words = list(student.command_labels[2:])
    for speaker in _speakers_of(speech, words, "training"):
        for clip in (speech / words[1]).glob(f"{speaker}_nohash_*.wav"):
            clip.unlink()
    options = StreamHeadsOptions(variants=1, talk_per_variant=2, silence_per_variant=1)
    with pytest.raises(ValueError, match=rf"^--speech-commands: expected clips of every word of --model by its "
                                         rf"training speakers .*, got none of {words[1]} in {speech}; "):
        training_material(student, speech, [], negatives.parent, options)


def test_no_validation_speakers_train_without_a_validation_figure(tmp_path, caplog):
    """A folder of training speakers only (no validation speaker) failed with 'need at least one array to
    stack', a line naming nothing."""
    speech, student, negatives, _ = _two_word_material(tmp_path, readers=4)
    words = list(student.command_labels[2:])
    for speaker in _speakers_of(speech, words, "validation"):
        for clip in speech.glob(f"*/{speaker}_nohash_*.wav"):
            clip.unlink()
    options = StreamHeadsOptions(variants=1, talk_per_variant=2, silence_per_variant=1)
    with caplog.at_level("WARNING", logger="edgesense.train.stream_heads"):
        material = training_material(student, speech, [], negatives.parent, options)
    assert material.vx.shape == (0, options.window_samples) and material.vy.shape == (0,)
    assert set(material.y.tolist()) >= {2, 3}
    assert "no clips of validation speakers" in caplog.text


def test_a_noise_folder_without_recordings_is_refused_never_silently_left_out(tmp_path):
    """``--noise`` naming a folder with no WAV in it trained on the other noise alone, saying nothing."""
    speech, student, negatives, _ = _two_word_material(tmp_path, readers=4)
    empty = tmp_path / "my_noise"
    empty.mkdir()
    (empty / "notes.txt").write_text("the fan, recorded tomorrow")
    options = StreamHeadsOptions(variants=1, talk_per_variant=2, silence_per_variant=1)
    with pytest.raises(ValueError, match=r"^--noise: expected folders with \.wav recordings, got \[.*my_noise'\]$"):
        training_material(student, speech, [empty], negatives.parent, options)


@pytest.mark.slow
def test_the_command_trains_heads_without_validation_speakers(tiny_model_path, tmp_path, capsys):
    require_speech_embedding()
    from datagen import make_speech_commands

    from edgesense.runtime.model import EdgeModel

    model = EdgeModel.load(tiny_model_path)
    words = [w for w in model.command_labels if not w.startswith("_")]
    speech = make_speech_commands(tmp_path / "speech", words=words, speakers=6, per_speaker=1)
    for speaker in _speakers_of(speech, words, "validation"):
        for clip in speech.glob(f"*/{speaker}_nohash_*.wav"):
            clip.unlink()
    _, _, negatives, _ = _two_word_material(tmp_path / "talk", readers=4)
    out = tmp_path / "heads.tflite"
    assert main(["train-stream-heads", "--out", str(out), "--model", str(tiny_model_path), "--speech-commands",
                 str(speech), "--negatives", str(negatives.parent), "--noise", str(speech / "_background_noise_"),
                 "--variants", "1", "--talk-per-variant", "4", "--silence-per-variant", "2", "--epochs", "1",
                 "--heads", "1"]) == 0
    assert "validation windows None" in capsys.readouterr().out
    assert StreamHeads(out).metadata["validation_window_accuracy"] is None
