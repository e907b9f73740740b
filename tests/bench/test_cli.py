"""``edgesense bench --quick`` on generated data with the tiny int8 model (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pytest
from cli_run import edgesense, error_line, only_line
from conftest import TINY_SCENE_LABELS, _command_clip, load_script, make_scene_images, require_speech_embedding
from datagen import make_speech_commands, write_stream_heads

from edgesense.app import cli
from edgesense.bench.accuracy import classification_report
from edgesense.bench.cli import BenchOptions
from edgesense.bench.latency import STAGES, device_rates, latency_summary
from edgesense.bench.references import compute_comparison
from edgesense.bench.scoring import Replay, evaluate
from edgesense.bench.streaming import cached_streams
from edgesense.frontend.audio import AudioFrontendOptions, fit_clip, log_mel_spectrogram
from edgesense.frontend.wav import read_wav, write_wav
from edgesense.loop.scheduler import SchedulerOptions
from edgesense.recognition.commands import CommandRecognizerOptions
from edgesense.runtime.model import EdgeModel
from edgesense.train.data import hash_percent
from edgesense.types import DEFAULT_COMMAND_LABELS

pytestmark = pytest.mark.slow  # builds the tiny model (a few seconds)
REPO = Path(__file__).resolve().parents[2]
#: A 240-s talk stream scored every 200 ms once its first 1-s window is full.
HOPS_OF_240_S_AT_200_MS = (240_000 - 1000) // 200 + 1


def _speech_folder(root: Path, per_class: int = 4, seed: int = 7) -> Path:
    """Speech Commands layout whose 'words' are the tones the tiny model was trained on."""
    rng = np.random.default_rng(seed)
    options = AudioFrontendOptions()
    for k, label in enumerate(DEFAULT_COMMAND_LABELS):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            name = f"{i}.wav" if label == "_silence_" else (
                f"other_{i:08x}_nohash_0.wav" if label == "_unknown_" else f"{i:08x}_nohash_{k}.wav")
            write_wav(folder / name, _command_clip(k, rng, options), options.sample_rate_hz)
    return root


def _model_named_right(model_path: Path | str, clips: Sequence[Path]) -> float:
    """The share of ``clips`` (``WORD/NAME.wav``) the model alone names right, each clip one window (4 places)."""
    model = EdgeModel.load(model_path)
    frontend = model.audio_frontend
    right = [int(np.argmax(model.fuse(model.encode_audio(log_mel_spectrogram(
        fit_clip(read_wav(p, sample_rate_hz=frontend.sample_rate_hz), frontend), frontend)), None)[0]))
        == model.command_labels.index(p.parent.name) for p in clips]
    return round(float(np.mean(right)), 4)


def _scene_folder(root: Path, per_class: int = 6, seed: int = 3) -> Path:
    images, labels = make_scene_images(per_class, np.random.default_rng(seed))
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / TINY_SCENE_LABELS[label]
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"img_{i:03d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return root


@pytest.fixture(scope="module")
def quick_report(tiny_model_path, tmp_path_factory):
    base = tmp_path_factory.mktemp("bench")
    speech, scenes, out = _speech_folder(base / "sc"), _scene_folder(base / "scenes"), base / "out"
    config = base / "device.yaml"
    # Both at a 200 ms command hop (the default is 100): the streams are scored at --config's hop, and
    # --write-config takes configs of that hop.
    config.write_text("device:\n  name: test\n# keep me\nscheduler:\n  command_hop_ms: 200\n"
                      "commands:\n  threshold: 0.7  # old\n  suppression_ms: 750\n")
    firmware = base / "pi-kitchen.yaml"
    firmware.write_text("device:\n  name: kitchen\nscheduler:\n  command_hop_ms: 200\n"
                        "commands:\n  threshold: 0.65\n  suppression_ms: 900\n")
    code = cli.main(["bench", "--model", str(tiny_model_path), "--speech-commands", str(speech), "--scenes",
                     str(scenes), "--out", str(out), "--quick", "--references", str(base / "no_refs"),
                     "--write-config", str(config), "--config", str(firmware)])
    assert code == 0
    return json.loads((out / "report.json").read_text()), out, config


def test_report_has_accuracy_per_class_and_latency_for_every_stage(quick_report):
    report, out, _ = quick_report
    assert report["command"]["count"] == 12 * 4
    assert set(report["command"]["per_class"]) == set(DEFAULT_COMMAND_LABELS)
    assert sum(c["count"] for c in report["command"]["per_class"].values()) == 48
    # The tiny model learned these tones: far above the 1/12 chance level.
    assert report["command"]["accuracy"] > 0.5
    assert report["scene"]["count"] == 18 and report["scene"]["accuracy"] > 0.8
    assert set(report["scene"]["per_class"]) == set(TINY_SCENE_LABELS)
    assert 0.0 <= report["scene_with_ambient_audio"]["accuracy"] <= 1.0
    for stage in STAGES:
        s = report["latency_ms"][stage]
        assert s["n"] > 0 and 0 < s["p50"] <= s["p95"] <= s["p99"]
    assert report["latency_ms"]["audio_encoder"]["n"] == 48 and report["latency_ms"]["image_encoder"]["n"] == 18
    assert report["latency_ms"]["fusion"]["n"] == 48 + 18
    assert report["model"]["bytes"] == Path(report["model"]["path"]).stat().st_size
    assert report["model"]["params"] > 0 and report["model"]["macs"] > 0
    for name in ("confusion_command.png", "confusion_scene.png", "confusion_scene_ambient_audio.png", "latency.png",
                 "streaming_det.png", "report.md"):
        assert (out / name).stat().st_size > 1000, name
    assert "references" not in report  # none built, none found


def test_each_figure_carries_its_95_percent_interval(quick_report):
    """Every accuracy (and per class) and each streaming operating point's hit rate and false-accept rates come with
    their interval, from their own counts; the figures themselves are the ones the report always had."""
    from edgesense.bench.uncertainty import poisson_interval, wilson_interval

    report, out, _ = quick_report
    assert report["uncertainty"]["level"] == 0.95 and "Wilson" in report["uncertainty"]["accuracy_interval"]
    for key in ("command", "scene", "scene_with_ambient_audio"):
        r = report[key]
        right = sum(row[i] for i, row in enumerate(r["confusion"]))
        assert r["accuracy"] == round(right / r["count"], 4)  # unchanged: right of scored
        assert r["accuracy_interval"] == pytest.approx(wilson_interval(right, r["count"]), abs=1e-4)
        assert r["accuracy_interval"][0] <= r["accuracy"] <= r["accuracy_interval"][1]
        for label, c in r["per_class"].items():
            interval = r["per_class_interval"][label]
            assert (interval is None) == (c["count"] == 0) and (c["accuracy"] is None) == (c["count"] == 0)
            assert interval is None or interval[0] <= c["accuracy"] <= interval[1]
    # the same photos with and without ambient sound, paired: the discordant photos are the accuracies' difference
    paired = report["scene_with_ambient_audio"]["vs_microphone_absent"]
    assert paired["items"] == report["scene"]["count"]
    difference = round((report["scene"]["accuracy"] - report["scene_with_ambient_audio"]["accuracy"]) * paired["items"])
    assert paired["model_right_other_wrong"] - paired["other_right_model_wrong"] == difference
    st = report["streaming"]
    for name, point in [("tuning", st["recommended"]["tuning"]), *st["evaluation"].items()]:
        c, t = point["commands_stream"], point["talk_stream"]
        assert point["hit_rate_interval"] == pytest.approx(wilson_interval(c["hits"], c["command_words"]), abs=1e-4)
        # over the talk's exact hours (--quick's 4 minutes), not the 0.067 its "hours" rounds them to
        hours = st[f"{'tuning' if name == 'tuning' else 'evaluation'}_streams"]["talk"]["duration_s"] / 3600
        assert t["hours_unrounded"] == pytest.approx(hours, rel=1e-12) and t["hours"] == round(hours, 3)
        low, high = poisson_interval(t["false_accepts"])
        assert point["false_accepts_per_hour_interval"] == pytest.approx([low / hours, high / hours], abs=1e-3), name
        # each word's hit rate: its counts beside it, and its interval from them
        counts, rates = c["per_word_counts"], c["per_word_hit_rate"]
        assert list(counts) == list(rates) == list(point["per_word_hit_rate_interval"]) and rates
        assert sum(n["hits"] for n in counts.values()) == c["hits"]
        assert sum(n["said"] for n in counts.values()) == c["command_words"]
        for word, n in counts.items():
            assert rates[word] == round(n["hits"] / n["said"], 4)
            interval = point["per_word_hit_rate_interval"][word]
            assert interval == pytest.approx(wilson_interval(n["hits"], n["said"]), abs=1e-4)
            assert interval[0] <= rates[word] <= interval[1], (name, word)
        for key in ("hit_rate", "false_accepts_per_hour", "false_accepts_per_100_words"):
            low, high = point[f"{key}_interval"]
            assert low <= point[key] <= high, (name, key)
    markdown = (out / "report.md").read_text()
    command = report["command"]
    assert (f"| commands (camera absent) | ours | {command['accuracy']:.3f} ({command['accuracy_interval'][0]:.3f}–"
            f"{command['accuracy_interval'][1]:.3f}) | 48 |") in markdown
    at = st["evaluation"]["recommended"]
    low, high = at["hit_rate_interval"]
    assert f"| recommended | {at['hit_rate']:.3f} ({low:.3f}–{high:.3f}) |" in markdown
    word, rate = next(iter(at["commands_stream"]["per_word_hit_rate"].items()))
    low, high = at["per_word_hit_rate_interval"][word]
    assert f"Hit rate per word (95 % intervals): {word} {rate:.2f} ({low:.2f}–{high:.2f})" in markdown


def test_streaming_section_recommends_and_writes_the_firmware_config(quick_report):
    report, out, config = quick_report
    st = report["streaming"]
    streams = st["evaluation_streams"]
    assert streams["commands"]["duration_s"] == 120.0 and streams["commands"]["command_words"] > 10
    assert streams["talk"]["duration_s"] == 240.0 and streams["talk"]["command_words"] == 0
    assert st["hop_ms"] == st["sweep_options"]["hop_ms"] == 200.0  # --config's scheduler.command_hop_ms
    assert "Every stream is scored every 200 ms of audio" in (out / "report.md").read_text()
    assert streams["talk"]["hops"] == HOPS_OF_240_S_AT_200_MS
    assert streams["words"]["other_utterances"] > 0 and set(st["tuning_streams"]) == {"commands", "talk", "words"}
    assert st["pools"]["tuning"]["pool"] == "training" and st["pools"]["evaluation"]["pool"] == "evaluation"
    # Talk that chooses the operating point is talk the model never learned (the tiny model learned none).
    assert st["pools"]["tuning"]["other_speech_pool"] == "training+tuning"
    assert st["pools"]["evaluation"]["other_speech_pool"] == "evaluation"
    rec = st["recommended"]
    assert rec["chosen_on"] == "tuning" and st["sweep_points"] == 2 * 3 * 2  # windows, thresholds, context rule
    at = st["evaluation"]["recommended"]
    assert 0 <= at["hit_rate"] <= 1 and at["false_accepts_per_hour"] >= 0 and at["false_accepts_per_100_words"] >= 0
    assert at["hit_rate"] + at["miss_rate"] == pytest.approx(1.0)
    assert at["commands_stream"]["command_words"] == streams["commands"]["command_words"]
    assert set(at["commands_stream"]["per_word_hit_rate"]) <= set(DEFAULT_COMMAND_LABELS[2:])
    assert st["streaming_cost_points"] == pytest.approx(100 * (st["clip_accuracy_commands"] - at["hit_rate"]), abs=0.01)
    # Without a second opinion the streams' detector is the model: its clip accuracy is the model's on the command
    # words of the evaluation streams' speakers (--split all: those the tuning half leaves).
    words = [p for w in DEFAULT_COMMAND_LABELS[2:] for p in sorted((out.parent / "sc" / w).glob("*.wav"))]
    evaluation = [p for p in words if hash_percent(p.name.split("_")[0], "/stream-tuning") >= 50.0]
    assert st["clip_accuracy_commands"] == _model_named_right(report["model"]["path"], evaluation)
    assert len(st["det"]["evaluation"]) > 10
    text = config.read_text()
    settings = rec["settings"]
    assert f"threshold: {settings['threshold']:g}" in text and f"average_window_ms: {settings['average_window_ms']:g}" \
        in text
    assert "# keep me" in text and text.count("commands:") == 1
    assert list((out / "cache").glob("posteriors-*.npz"))
    # False accepts on talk and other words, by the word fired and by the utterance fired on.
    talk = at["talk_stream"]
    assert sum(talk["false_accepts_by_word"].values()) == talk["false_accepts"]
    assert set(talk["false_accepts_by_word"]) <= set(DEFAULT_COMMAND_LABELS[2:])
    assert sum(talk["false_accepts_top_sources"].values()) <= talk["false_accepts"]
    assert talk["recordings_fired_on"] <= min(talk["false_accepts"], st["evaluation_streams"]["talk"]["unique_sources"])
    markdown = (out / "report.md").read_text()
    assert "Streaming commands" in markdown and "by the word fired:" in markdown
    assert f"in the pauses; from {talk['recordings_fired_on']} of the talk's" in markdown
    # The breakdown scores the evaluation streams' command words, the same words at every offset.
    breakdown = st["cost_breakdown"]
    assert [row["offset_ms"] for row in breakdown] == [0.0, 200.0, 400.0]
    assert len({row["words"] for row in breakdown}) == 1 and breakdown[0]["words"] > 10
    # Above a threshold of at least 0.5 a word's own score is its window's top score: confident means named right.
    assert rec["settings"]["threshold"] >= 0.5
    assert all(0 <= row["confident"] <= row["accuracy"] <= 1 for row in breakdown)
    assert "Where the streaming cost goes" in markdown and "| in the streams' noise, 200 ms off centre |" in markdown
    # The tuning streams' best hit rate within each budget grows with the budget; by default every row
    # keeps the 500-ms latency target (the main rows as a p95 cap, the timely ones counting a later word
    # as missed), and within the sweep's own budget (1 per hour) the timely row is the recommended setting.
    budgets = st["tuning_budgets"]
    assert budgets["max_latency_p95_ms"] == 500.0 and budgets["latency_rule"] == "in-time"
    rates = [row["hit_rate"] or 0.0 for row in budgets["budgets"]]
    assert [row["max_false_accepts_per_hour"] for row in budgets["budgets"]] == [0.5, 1.0, 2.0, 5.0]
    assert rates == sorted(rates) and budgets["mean_hit_rate"] == pytest.approx(np.mean(rates), abs=1e-4)
    at_one = budgets["budgets"][1]
    assert at_one["hit_rate"] is None or (at_one["false_accepts_per_hour"] <= 1.0 and at_one["latency_p95_ms"] <= 500)
    timely = budgets["timely"]["budgets"][1]
    within = rec["within_budget_on_tuning"]
    assert timely["settings"] == (rec["settings"] if within else None)
    # … with each best setting's latency beside it, since a setting that waits longer hears more.
    assert timely["latency_p95_ms"] == (rec["tuning"]["latency_ms"]["p95"] if within else None)
    assert all((row["latency_p95_ms"] is None) == (not row["hit_rate"]) for row in budgets["budgets"])
    assert "best setting within each budget" in markdown and "| ≤ 0.5 | ≤ 1 | ≤ 2 | ≤ 5 | mean |" in markdown
    assert "| latency p95 (ms) |" in markdown and "| detected within 500 ms |" in markdown
    # The level envelope scores the same words at every level and SNR.
    envelope = st["level_envelope"]
    assert len(envelope) == len({(row["level_dbfs"], row["snr_db"]) for row in envelope}) > 1
    assert {row["words"] for row in envelope} == {breakdown[0]["words"]}
    assert all(0 <= row["confident"] <= row["accuracy"] <= 1 for row in envelope)
    assert "Level envelope" in markdown and "| -8 dBFS |" in markdown and "| 5 dB SNR |" in markdown
    # … and on the tuning streams' words, for choosing without the test speakers.
    tuning_envelope = st["level_envelope_tuning"]
    assert [(r["level_dbfs"], r["snr_db"]) for r in tuning_envelope] == [(r["level_dbfs"], r["snr_db"])
                                                                         for r in envelope]
    assert len({r["words"] for r in tuning_envelope}) == 1 and tuning_envelope[0]["words"] > 0


def test_the_firmware_row_is_the_given_configs_setting(quick_report):
    report, out, _ = quick_report
    st = report["streaming"]
    assert st["firmware_config"] == {"file": "pi-kitchen.yaml", "title": "firmware pi-kitchen.yaml (0.65 / 900 ms)"}
    settings = st["evaluation"]["firmware_config"]["settings"]
    assert (settings["threshold"], settings["suppression_ms"]) == (0.65, 900.0)
    assert "| firmware pi-kitchen.yaml (0.65 / 900 ms) |" in (out / "report.md").read_text()


def test_a_splits_streams_replay_from_the_report_and_its_cache(quick_report, tmp_path):
    report, out, _ = quick_report
    st = report["streaming"]
    streams = cached_streams(out, "evaluation")
    assert set(streams) == set(st["evaluation_streams"]) == {"commands", "talk", "words"}
    for kind, posteriors in streams.items():
        summary = st["evaluation_streams"][kind]
        assert posteriors.times_ms.size == summary["hops"]
        assert len(posteriors.words) == summary["command_words"] + summary["other_utterances"]
    # Replayed without the model, the recommended setting scores what the report says.
    recommended = CommandRecognizerOptions(**st["recommended"]["settings"])
    point = evaluate({kind: Replay(p) for kind, p in streams.items()}, recommended)
    assert point.hit_rate == pytest.approx(st["evaluation"]["recommended"]["hit_rate"], abs=1e-4)
    assert point.false_accepts_per_hour == pytest.approx(st["evaluation"]["recommended"]["false_accepts_per_hour"],
                                                         abs=1e-3)
    with pytest.raises(ValueError, match="report.json: expected a bench report with tuning streams"):
        cached_streams(tmp_path)
    partial = Path(shutil.copytree(out, tmp_path / "partial"))
    (partial / "cache" / f"posteriors-{st['tuning_streams']['talk']['cache_keys'][0]}.npz").unlink()
    with pytest.raises(ValueError, match="cached posteriors of tuning talk"):
        cached_streams(partial)


def test_the_context_rule_study_scores_each_position_on_the_tuning_streams(quick_report, tmp_path, capsys):
    _, out, _ = quick_report
    assert _study().main([str(out), "--position", "800,1200"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| off") or
            line.startswith("| 800, 1200")]
    assert len(rows) == 4  # off and the position: the model's row and the mean of one model
    assert all(0 <= float(x) <= 100 for row in rows for x in row.split("|")[3:-1])
    assert _study().main([str(tmp_path)]) == 2
    assert "report.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad:
        _study().main([str(out), "--position", "3000"])
    assert bad.value.code == 2 and "--position: expected WINDOW_MS,OFFSET_MS" in capsys.readouterr().err


def _study():
    return load_script("context_rule_study")


def test_without_matplotlib_bench_says_which_extra_before_any_work(tmp_path):
    shim = tmp_path / "no_matplotlib" / "matplotlib"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'matplotlib'\", name='matplotlib')\n")
    out = tmp_path / "out"
    proc = edgesense("bench", "--model", REPO / "models" / "edgesense.tflite", "--scenes", tmp_path, "--out", out,
                     env={"PYTHONPATH": str(shim.parent)})
    line = only_line(proc)
    assert "matplotlib, which is not installed here" in line and "pip install -e '.[bench]'" in line
    assert not out.exists()  # nothing was done


def test_the_summary_leaves_out_stages_it_did_not_measure(tiny_model_path, tmp_path):
    speech = _speech_folder(tmp_path / "sc", per_class=2)
    proc = edgesense("bench", "--model", tiny_model_path, "--speech-commands", speech, "--out", tmp_path / "out",
                     "--quick", "--no-streaming", "--references", tmp_path / "no_refs")
    assert proc.returncode == 0, proc.stderr
    assert "latency audio_encoder" in proc.stdout
    assert "n/a" not in proc.stdout and "image_encoder" not in proc.stdout  # no --scenes: not measured


def test_the_default_references_are_the_checkouts_from_any_folder_and_their_absence_is_said(
        tiny_model_path, tmp_path, monkeypatch, caplog):
    from edgesense.bench import cli as bench_cli

    monkeypatch.chdir(tmp_path)  # models/references is no folder here
    checkout = (REPO / "models" / "references").resolve()
    speech = _speech_folder(tmp_path / "sc", per_class=2)
    argv = ["bench", "--model", str(tiny_model_path), "--speech-commands", str(speech), "--quick", "--no-streaming"]
    with caplog.at_level("WARNING"):
        assert cli.main([*argv, "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["references"]["kws_dscnn"]["model"]["path"] == str(checkout / "kws_dscnn.tflite")
    assert "--references" not in caplog.text
    assert bench_cli.references_argument(None, writes=True) == Path("models/references")  # built here, as before
    # --quick's tiny references go beside its report: they replaced the real ones in models/references here
    assert bench_cli.references_argument(None, writes=True, quick_out=tmp_path / "q") == tmp_path / "q" / "references"
    assert bench_cli.references_argument(tmp_path / "mine", writes=True, quick_out=tmp_path / "q") == tmp_path / "mine"
    assert bench_cli.references_argument(None, writes=False, quick_out=tmp_path / "q") == checkout  # reads: as before
    assert bench_cli.references_argument(tmp_path / "mine", writes=False) == tmp_path / "mine"  # as given
    monkeypatch.setattr(bench_cli, "DEFAULT_REFERENCES_DIR", Path("models/none"))  # as on a wheel: none anywhere
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert cli.main([*argv, "--out", str(tmp_path / "out2")]) == 0
    assert "references" not in json.loads((tmp_path / "out2" / "report.json").read_text())
    said = [r.getMessage() for r in caplog.records if "--references" in r.getMessage()]
    assert said == ["--references: no models/none here or in this installation, so no reference rows are scored "
                    "(--train-references trains them into it, or name a folder of them)"], said


def test_pure_helpers():
    r = classification_report(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), ["a", "b", "c"])
    assert r["accuracy"] == 0.75 and r["per_class"]["a"] == {"accuracy": 0.5, "count": 2}
    assert r["accuracy_interval"] == [0.3006, 0.9544] and r["per_class_interval"]["a"] == [0.0945, 0.9055]
    assert r["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    s = latency_summary(np.arange(1, 101, dtype=float))
    assert (s["p50"], s["n"], s["max"]) == (50.5, 100, 100.0)
    comp = compute_comparison(
        {"audio_encoder": 100, "image_encoder": 1000, "fusion_head": 10},
        {"audio_encoder": {"mean": 1.0}, "image_encoder": {"mean": 4.0}, "fusion": {"mean": 0.5},
         "audio_frontend": {"mean": 0.2}, "image_preprocess": {"mean": 0.1}},
        {"k": {"task": "command", "model": {"macs": 55}, "latency_ms": {"inference": {"mean": 0.75}}},
         "v": {"task": "scene", "model": {"macs": 505}, "latency_ms": {"inference": {"mean": 2.25}}}})
    assert comp["commands"]["ours_macs_per_s"] == 10 * 110 and comp["commands"]["macs_ratio"] == 2.0
    assert comp["scenes"]["ours_macs_per_s"] == 5 * 1010 and comp["scenes"]["macs_ratio"] == 2.0
    assert comp["commands"]["ms_ratio"] == 2.0 and comp["scenes"]["ours_ms_per_s"] == 22.5
    assert comp["total"]["ours_ms_per_s"] == 15.0 + 22.5
    assert comp["frontend_ms_per_s"] == 2.5 and comp["rates_per_s"] == {"command_hops": 10, "scene_frames": 5}
    jetson = compute_comparison({"audio_encoder": 100, "image_encoder": 1000, "fusion_head": 10},
                                {"audio_encoder": {"mean": 1.0}, "image_encoder": {"mean": 4.0}},
                                {"k": {"task": "command", "model": {"macs": 55}, "latency_ms": {"inference": {}}}},
                                command_hops_per_s=20, scene_frames_per_s=10)
    assert jetson["commands"]["ours_macs_per_s"] == 20 * 110 and jetson["commands"]["rate_per_s"] == 20
    assert jetson["rates_per_s"] == {"command_hops": 20, "scene_frames": 10}
    assert device_rates(SchedulerOptions(command_hop_ms=50.0, scene_rate_hz=10.0)) == (20, 10)
    assert device_rates(SchedulerOptions(command_hop_ms=30.0, scene_rate_hz=2.5)) == (pytest.approx(33.333, abs=1e-3),
                                                                                     2.5)


def test_testing_split_selects_held_out_speakers_only(tiny_model_path, tmp_path):
    speech = make_speech_commands(tmp_path / "sc", words=DEFAULT_COMMAND_LABELS[2:], speakers=10, per_speaker=1)
    from edgesense.bench.accuracy import select_command_items
    from edgesense.train.data import load_speech_commands

    options = BenchOptions(model_path=tiny_model_path, speech_commands=speech, split="testing", salt="edgesense")
    _, items, tune, _ = select_command_items(options)
    splits = load_speech_commands(speech).split(validation_percent=10, testing_percent=20, salt="edgesense")
    assert {it.path for it in items} == {it.path for it in splits["testing"]}
    assert not {it.speaker for it in items} & {it.speaker for it in tune}


def test_a_capped_split_all_keeps_the_tuning_speakers_out_of_the_evaluation_streams(tiny_model_path, tmp_path,
                                                                                    monkeypatch):
    """--split all: the tuning half of the speakers never speaks in the evaluation streams, also when
    --max-per-class (or --quick) caps the clips and the cap leaves some of a tuning speaker's out."""
    from edgesense.bench import cli as bench_cli
    from edgesense.train.data import hash_percent

    speech = make_speech_commands(tmp_path / "sc", words=DEFAULT_COMMAND_LABELS[2:], speakers=20, per_speaker=1)
    seen = {}

    def run_streaming(model, model_sha, options, *, evaluation, tuning, **kwargs):
        seen.update(evaluation={u.group for u in evaluation}, tuning={u.group for u in tuning})
        return {}

    monkeypatch.setattr(bench_cli, "run_streaming", run_streaming)
    assert cli.main(["bench", "--model", str(tiny_model_path), "--speech-commands", str(speech), "--out",
                     str(tmp_path / "out"), "--max-per-class", "3", "--references", str(tmp_path / "no_refs")]) == 0
    tuning_half = {f"{s:08x}" for s in range(20) if hash_percent(f"{s:08x}", "/stream-tuning") < 50.0}
    assert seen["evaluation"] and seen["tuning"] and tuning_half
    assert seen["tuning"] <= tuning_half
    assert not seen["evaluation"] & tuning_half


def test_an_out_that_is_a_file_is_one_line_naming_the_flag(tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("keep")
    model = REPO / "models" / "edgesense.tflite"
    for out, inside in ((file, ""), (file / "a" / "b", f", inside {file}")):
        assert cli.main(["bench", "--model", str(model), "--scenes", str(tmp_path), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == f"edgesense: error: --out: expected a folder, got {out}{inside}, which is a file\n", err
    assert file.read_text() == "keep"


@pytest.mark.parametrize("flag, minutes", [("--stream-minutes", "0.1"), ("--talk-minutes", "0.3"),
                                           ("--stream-minutes", "nan"), ("--talk-minutes", "-1")])
def test_too_short_minutes_are_one_line_in_minutes(tmp_path, capsys, flag, minutes):
    model = REPO / "models" / "edgesense.tflite"
    assert cli.main(["bench", "--model", str(model), "--speech-commands", str(tmp_path), flag, minutes,
                     "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"edgesense: error: {flag}: expected a number of minutes >= 1/3 (20 s), "
                                       f"got {float(minutes):g}\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--stream-minutes", "--talk-minutes"])
def test_minutes_past_a_week_are_one_line_in_minutes_before_anything_is_scored(tmp_path, capsys, flag):
    """Taken, they were refused as StreamOptions' duration_s once the accuracy section and the tuning streams ran."""
    model = REPO / "models" / "edgesense.tflite"
    assert cli.main(["bench", "--model", str(model), "--speech-commands", str(tmp_path), flag, "10081",
                     "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"edgesense: error: {flag}: expected a number of minutes in [1/3, 10080] "
                                       "(20 s to a week), got 10081\n")
    assert not (tmp_path / "out").exists()


def test_options_are_validated_with_field_names(tiny_model_path, tmp_path):
    with pytest.raises(ValueError, match="threads"):
        BenchOptions(model_path=tiny_model_path, scenes=tmp_path, threads=0)
    with pytest.raises(ValueError, match="split"):
        BenchOptions(model_path=tiny_model_path, scenes=tmp_path, split="train")
    with pytest.raises(ValueError, match="speech_commands"):
        BenchOptions(model_path=tiny_model_path)
    assert cli.main(["bench", "--model", str(tiny_model_path), "--scenes", str(tmp_path / "missing")]) == 2
    with pytest.raises(ValueError, match="max_false_accepts_per_hour"):
        BenchOptions(model_path=tiny_model_path, scenes=tmp_path, max_false_accepts_per_hour=-1.0)


def test_with_a_second_opinion_the_streams_and_the_clip_figures_are_the_pairs(tiny_model_path, tiny_heads_path,
                                                                              tmp_path, capsys):
    require_speech_embedding()
    config = tmp_path / "pair.yaml"  # the heads alone (untrained: they name one word whatever they hear)
    config.write_text(f"device: {{name: pair}}\nscheduler: {{command_hop_ms: 200}}\n"
                      f"second_opinion: {{heads_path: {tiny_heads_path}, student_weight: 0.0}}\n")
    speech, out = _speech_folder(tmp_path / "sc", per_class=4), tmp_path / "out"
    assert cli.main(["bench", "--model", str(tiny_model_path), "--speech-commands", str(speech), "--config",
                     str(config), "--out", str(out), "--quick", "--references", str(tmp_path / "no_refs")]) == 0
    report = json.loads((out / "report.json").read_text())
    st = report["streaming"]
    assert st["second_opinion"]["heads_path"] == str(tiny_heads_path)
    words = [c for label, c in report["command"]["per_class"].items() if label in DEFAULT_COMMAND_LABELS[2:]]
    model_named_right = sum(c["accuracy"] * c["count"] for c in words) / sum(c["count"] for c in words)
    # the tiny model names most of its words; the heads it is scored through here do not
    assert model_named_right > 0.5 and st["clip_accuracy_commands"] <= 0.3
    assert all(row["accuracy"] <= 0.3 for row in st["cost_breakdown"] + st["level_envelope"])
    assert "score that blend too" in (out / "report.md").read_text()
    # the console says so too: its streaming line is the pair's, not the model's (report.md says it, it did not)
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  streaming")]
    assert printed and printed[0].startswith(f"  streaming, the model blended with the second opinion "
                                             f"{tiny_heads_path.name} (0 x the model's) ("), printed


def test_model_alone_leaves_the_configs_second_opinion_out(tiny_model_path, tiny_heads_path, tmp_path, capsys):
    config = tmp_path / "pair.yaml"  # the heads alone, as above: scored, they would name few words
    config.write_text(f"device: {{name: pair}}\nscheduler: {{command_hop_ms: 200}}\n"
                      f"second_opinion: {{heads_path: {tiny_heads_path}, student_weight: 0.0}}\n")
    speech, out = _speech_folder(tmp_path / "sc", per_class=4), tmp_path / "out"
    assert cli.main(["bench", "--model", str(tiny_model_path), "--speech-commands", str(speech), "--config",
                     str(config), "--model-alone", "--out", str(out), "--quick", "--references",
                     str(tmp_path / "no_refs")]) == 0
    report = json.loads((out / "report.json").read_text())
    st = report["streaming"]
    assert st["model_alone"] and st["second_opinion"]["heads_path"] is None and st["hop_ms"] == 200
    # the model's own accuracy on the evaluation streams' speakers' words (--split all: not the tuning half's)
    words = [p for w in DEFAULT_COMMAND_LABELS[2:] for p in sorted((speech / w).glob("*.wav"))]
    evaluation = [p for p in words if hash_percent(p.name.split("_")[0], "/stream-tuning") >= 50.0]
    assert st["clip_accuracy_commands"] == _model_named_right(tiny_model_path, evaluation)
    text = (out / "report.md").read_text()
    assert "The model alone (`--model-alone`)" in text and "firmware pair.yaml, the model alone" in text
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  streaming")]
    assert printed and printed[0].startswith("  streaming, the model alone ("), printed


def test_a_config_naming_missing_heads_is_one_line_before_any_stream(tiny_model_path, tmp_path, capsys):
    config = tmp_path / "pair.yaml"
    config.write_text("device: {name: a}\nsecond_opinion: {heads_path: gone.tflite}\n")
    speech = _speech_folder(tmp_path / "sc", per_class=1)
    assert cli.main(["bench", "--model", str(tiny_model_path), "--speech-commands", str(speech), "--config",
                     str(config), "--out", str(tmp_path / "out"), "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "second_opinion.heads_path" in err[0] and "gone.tflite does not exist" in err[0]
    assert not (tmp_path / "out" / "report.json").exists()


def test_streams_without_any_other_speech_are_refused_not_scored_at_no_false_accepts(tiny_model_path, tmp_path,
                                                                                      capsys):
    """A speech folder of the command words alone (no _unknown_) and no --negatives: no talk and no other words
    to fire on, so every setting read 0 false accepts, the loosest was recommended "within budget" and
    --write-config would have written it."""
    speech = _speech_folder(tmp_path / "sc", per_class=2)
    shutil.rmtree(speech / "_unknown_")
    config = tmp_path / "device.yaml"
    config.write_text("device: {name: a}\ncommands: {threshold: 0.7}\n")
    assert cli.main(["bench", "--model", str(tiny_model_path), "--speech-commands", str(speech), "--out",
                     str(tmp_path / "out"), "--quick", "--references", str(tmp_path / "no_refs"),
                     "--config", str(config), "--write-config", str(config)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "edgesense: error: --negatives: expected other speech for the tuning streams' false accepts (talk or other "
        "words: a folder of them, or _unknown_ clips of the tuning speakers in --speech-commands), got none; pass "
        "--negatives DIR, or --no-streaming to score clips only")
    assert config.read_text() == "device: {name: a}\ncommands: {threshold: 0.7}\n"


def test_a_tighter_false_accept_budget_reaches_the_sweep_and_the_rest_keeps_its_default(tiny_model_path, tmp_path,
                                                                                         capsys):
    from edgesense.bench.scoring import SweepOptions
    from edgesense.bench.streaming import StreamingPlan

    for quick in (False, True):
        plan = StreamingPlan.for_options(BenchOptions(model_path=tiny_model_path, speech_commands=tmp_path, quick=quick,
                                                      max_false_accepts_per_hour=0.5))
        assert plan.sweep.max_false_accepts_per_hour == 0.5
        assert plan.sweep.max_false_accepts_per_100_words == SweepOptions.max_false_accepts_per_100_words
    plan = StreamingPlan.for_options(BenchOptions(model_path=tiny_model_path, speech_commands=tmp_path,
                                                  max_false_accepts_per_100_words=0.0))
    assert (plan.sweep.max_false_accepts_per_hour, plan.sweep.max_false_accepts_per_100_words) == (
        SweepOptions.max_false_accepts_per_hour, 0.0)
    assert cli.main(["bench", "--model", str(tiny_model_path), "--scenes", str(tmp_path),
                     "--max-false-accepts-per-100-words", "-2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgesense: error: --max-false-accepts-per-100-words"), err


def test_a_latency_budget_reaches_the_sweep_and_zero_switches_it_off(tiny_model_path, tmp_path, capsys):
    from edgesense.bench.scoring import SweepOptions
    from edgesense.bench.streaming import StreamingPlan

    def budget(**kwargs):
        return StreamingPlan.for_options(BenchOptions(model_path=tiny_model_path, speech_commands=tmp_path,
                                                      **kwargs)).sweep.max_latency_p95_ms

    assert budget() == SweepOptions.max_latency_p95_ms
    assert budget(max_latency_p95_ms=450.0) == 450.0 and budget(max_latency_p95_ms=450.0, quick=True) == 450.0
    assert budget(max_latency_p95_ms=0.0) is None
    assert cli.main(["bench", "--model", str(tiny_model_path), "--scenes", str(tmp_path),
                     "--max-latency-p95-ms", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgesense: error: --max-latency-p95-ms"), err

    def rule(**kwargs):
        return StreamingPlan.for_options(BenchOptions(model_path=tiny_model_path, speech_commands=tmp_path,
                                                      **kwargs)).sweep.latency_rule

    assert rule() == SweepOptions.latency_rule == "in-time" and rule(latency_rule="p95", quick=True) == "p95"
    with pytest.raises(ValueError, match="latency_rule: expected one of in-time, p95"):
        BenchOptions(model_path=tiny_model_path, scenes=tmp_path, latency_rule="p50")
    with pytest.raises(SystemExit) as exited:
        cli.main(["bench", "--model", str(tiny_model_path), "--scenes", str(tmp_path), "--latency-rule", "p50"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == ("edgesense bench: error: --latency-rule: expected one of 'in-time', 'p95', "
                                       "got 'p50'\n")


def test_the_report_says_when_the_latency_budget_was_missed(quick_report):
    import copy

    from edgesense.bench.report import render_markdown

    report = copy.deepcopy(quick_report[0])
    st = report["streaming"]
    assert st["sweep_options"]["latency_rule"] == "in-time"  # and the 500-ms target by default
    assert "the most words detected within 500 ms of their end with at most" in render_markdown(report)
    st["sweep_options"]["max_latency_p95_ms"] = None  # --max-latency-p95-ms 0: no latency budget
    assert "the highest hit rate with at most" in render_markdown(report)
    assert "within 500 ms" not in render_markdown(report).split("**Recommended**")[1].split("\n")[0]
    st["sweep_options"]["max_latency_p95_ms"] = 450.0
    assert "the most words detected within 450 ms of their end with at most" in render_markdown(report)
    assert "latency p95 at most 450 ms):" not in render_markdown(report)
    st["sweep_options"]["latency_rule"] = "p95"
    assert "the highest hit rate with at most" in render_markdown(report)
    assert "latency p95 at most 450 ms):" in render_markdown(report)
    assert st["recommended"]["budget_missed"] is None  # the quick sweep's recommendation is within its budget
    st["recommended"]["within_budget_on_tuning"] = False
    st["recommended"]["budget_missed"] = "latency"
    assert "none within the false-accept budget was within the latency budget, so the best of them" \
        in render_markdown(report)
    st["recommended"]["budget_missed"] = "false_accepts"
    assert "none was within that budget, so the quietest" in render_markdown(report)


def _bench_with_recordings(model: Path, tmp_path: Path, folder: str, names: tuple[str, ...]):
    """A folder of noise recordings ``names``, the bench's output folder, and a quick bench's
    arguments whose last three (``--no-streaming --references DIR``) a test may cut to stream."""
    speech = _speech_folder(tmp_path / "sc", per_class=3)
    recordings = tmp_path / folder
    recordings.mkdir()
    rng = np.random.default_rng(5)
    for name in names:
        write_wav(recordings / name, (0.05 * rng.normal(size=16000 * 5)).astype(np.float32), 16000)
    out = tmp_path / "out"
    args = ["bench", "--model", str(model), "--speech-commands", str(speech), "--out", str(out), "--quick",
            "--no-streaming", "--references", str(tmp_path / "no_refs")]
    return recordings, out, args


def test_tuning_noise_is_the_tuning_streams_background_and_the_evaluation_keeps_its_pool(tiny_model_path, tmp_path,
                                                                                         capsys):
    unheard, out, args = _bench_with_recordings(tiny_model_path, tmp_path, "unheard", ("wind.wav", "waves.wav"))
    assert cli.main([*args[:-3], "--tuning-noise", str(unheard), *args[-2:]]) == 0
    pools = json.loads((out / "report.json").read_text())["streaming"]["pools"]
    assert pools["tuning"]["pool"] == "tuning-noise"
    assert sorted(pools["tuning"]["noise"]) == sorted(str(unheard / n) for n in ("waves.wav", "wind.wav"))
    assert pools["evaluation"]["pool"] == "evaluation" and not set(pools["evaluation"]["noise"]) & set(
        pools["tuning"]["noise"])
    assert cli.main([*args, "--tuning-noise", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgesense: error: --tuning-noise"), err


def test_tuning_negatives_join_the_tuning_streams_talk_only(tiny_model_path, tmp_path, capsys):
    talk, out, args = _bench_with_recordings(tiny_model_path, tmp_path, "synth_talk", ("s0.wav", "s1.wav"))
    word = np.zeros(16000, np.float32)  # a word said alone (e.g. synth-commands' other words): the words stream's too
    word[4000:12000] = 0.2 * np.sin(2 * np.pi * 300 * np.arange(8000) / 16000)
    write_wav(talk / "w0.wav", word, 16000)
    assert cli.main([*args[:-3], "--tuning-negatives", str(talk), *args[-2:]]) == 0  # with the (quick) streams
    pools = json.loads((out / "report.json").read_text())["streaming"]["pools"]
    assert pools["tuning"]["other_speech_pool"] == "tuning+tuning-negatives" and pools["tuning"]["other_speech"] == 3
    streams = cached_streams(out)
    assert "synth_talk/w0.wav" in {w.source for w in streams["words"].words}
    assert pools["evaluation"]["other_speech"] == 0  # the evaluation streams never hear it
    assert pools["tuning"]["talk_shares"] == {"training+tuning": 0.5, "tuning-negatives": 0.5}
    assert "tuning+tuning-negatives (50 % training+tuning, 50 % tuning-negatives) | talk |" in (
        out / "report.md").read_text()
    # the talk stream: the pool's own talk (here its speakers' other words), then as long of the added talk
    stream = streams["talk"]
    own = [w for w in stream.words if not w.source.startswith("synth_talk/")]
    added = [w for w in stream.words if w.source.startswith("synth_talk/")]
    assert own and added and max(w.end_ms for w in own) <= stream.duration_ms / 2 <= min(w.start_ms for w in added)
    assert cli.main([*args, "--tuning-negatives", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[-1].startswith("edgesense: error: --tuning-negatives"), err


def test_references_side_by_side_with_the_same_data_and_interpreter(tiny_model_path, tmp_path):
    """--train-references --quick builds both references on the bench's data and reports them next to ours."""
    # 16 speakers: with salt "edgesense" one of them lands in validation (the references need one).
    speech, scenes = _speech_folder(tmp_path / "sc", per_class=16), _scene_folder(tmp_path / "scenes", per_class=10)
    out, refs = tmp_path / "out", tmp_path / "refs"
    code = cli.main(["bench", "--model", str(tiny_model_path), "--speech-commands", str(speech), "--scenes",
                     str(scenes), "--out", str(out), "--quick", "--no-streaming", "--train-references",
                     "--references", str(refs), "--split", "testing", "--salt", "edgesense", "--threads", "2"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["references"]) == {"kws_dscnn", "vww_mobilenet_v1"}
    kws, vww = report["references"]["kws_dscnn"], report["references"]["vww_mobilenet_v1"]
    assert kws["command"]["count"] == report["command"]["count"]  # the same clips
    assert vww["scene"]["count"] == report["scene"]["count"]  # the same photos
    assert set(kws["command"]["per_class"]) == set(report["command"]["per_class"])
    for ref in (kws, vww):
        assert ref["model"]["bytes"] > 0 and ref["model"]["params"] > 0 and ref["model"]["macs"] > 1e6
        s = ref["latency_ms"]["inference"]
        assert 0 < s["p50"] <= s["p95"] <= s["p99"]
    assert report["settings"]["threads"] == 2
    comp = report["comparison_per_second"]
    assert comp["commands"]["theirs_macs_per_s"] == 10 * kws["model"]["macs"]
    assert comp["scenes"]["theirs_macs_per_s"] == 5 * vww["model"]["macs"]
    assert comp["total"]["macs_ratio"] == pytest.approx(
        comp["total"]["ours_macs_per_s"] / comp["total"]["theirs_macs_per_s"], rel=1e-3)
    # Each reference against ours on the same items (exact McNemar): the items only one of them named right are
    # what their accuracies differ by.
    for ref, ours in ((kws, report["command"]), (vww, report["scene"])):
        paired = ref["vs_model"]
        theirs = ref[ref["task"]]
        assert paired["items"] == ours["count"] == theirs["count"]
        difference = round((ours["accuracy"] - theirs["accuracy"]) * paired["items"])
        assert paired["model_right_other_wrong"] - paired["other_right_model_wrong"] == difference
        assert paired["discordant"] == paired["model_right_other_wrong"] + paired["other_right_model_wrong"]
        assert 0 < paired["p_value"] <= 1 and paired["differs_at_level"] == (paired["p_value"] < 0.05)
        assert theirs["accuracy_interval"][0] <= theirs["accuracy"] <= theirs["accuracy_interval"][1]
    assert f"({kws['vs_model']['discordant']} discordant: ours " in (out / "report.md").read_text()
    assert (out / "confusion_kws_dscnn.png").is_file() and (out / "confusion_vww_mobilenet_v1.png").is_file()
    assert "kws_dscnn" in (out / "report.md").read_text()
    assert "(10 command hops/s, 5 scene frames/s, the rates of `--config`;" in (out / "report.md").read_text()
    # A device of other rates (Jetson Orin: 50 ms hops, 10 scene frames/s) is compared at its own.
    orin = tmp_path / "orin"
    assert cli.main(["bench", "--model", str(tiny_model_path), "--speech-commands", str(speech), "--scenes",
                     str(scenes), "--out", str(orin), "--quick", "--no-streaming", "--references", str(refs),
                     "--split", "testing", "--salt", "edgesense",
                     "--config", str(REPO / "firmware_configs" / "jetson-orin.yaml")]) == 0
    comp = json.loads((orin / "report.json").read_text())["comparison_per_second"]
    assert comp["rates_per_s"] == {"command_hops": 20, "scene_frames": 10}
    assert comp["commands"]["theirs_macs_per_s"] == 20 * kws["model"]["macs"]
    assert comp["scenes"]["theirs_macs_per_s"] == 10 * vww["model"]["macs"]
    assert "(20 command hops/s, 10 scene frames/s" in (orin / "report.md").read_text()


def test_a_reference_of_another_input_size_sees_the_photos_at_its_own(tiny_builders, tmp_path):
    """A camera path at 128 px beside the 96-px VWW reference: each gets the photos at its input size."""
    from edgesense.frontend.image import ImageFrontendOptions
    from edgesense.quantize.convert import QuantizeOptions, convert_run

    speech, scenes = _speech_folder(tmp_path / "sc", per_class=16), _scene_folder(tmp_path / "scenes", per_class=10)
    big = tmp_path / "tiny128.tflite"
    convert_run(tiny_builders.write_tiny_run(tmp_path / "run128", image_options=ImageFrontendOptions(
        height_px=128, width_px=128)), big, QuantizeOptions(mode="int8", calibration_samples=32))
    out, refs = tmp_path / "out", tmp_path / "refs"
    assert cli.main(["bench", "--model", str(big), "--speech-commands", str(speech), "--scenes", str(scenes),
                     "--out", str(out), "--quick", "--no-streaming", "--train-references", "--references",
                     str(refs), "--split", "testing", "--salt", "edgesense"]) == 0
    report = json.loads((out / "report.json").read_text())
    vww = report["references"]["vww_mobilenet_v1"]
    assert vww["scene"]["count"] == report["scene"]["count"] > 0  # the same photos, each model at its own size
    assert vww["vs_model"]["items"] == report["scene"]["count"]  # paired photo by photo, read again at 96 px


def test_the_teachers_get_the_runs_photos_after_the_references_are_compared(tiny_model_path, tmp_path, monkeypatch):
    """The teachers (extras not needed here: their scoring is replaced) see the same clips and photos as ours."""
    from edgesense.bench import cli as bench_cli

    speech, scenes = _speech_folder(tmp_path / "sc", per_class=16), _scene_folder(tmp_path / "scenes", per_class=10)
    seen = {}

    def score_teachers(options, model, clips, clip_labels, frames, frame_labels, model_right):
        seen.update(clips=len(clips), frames=len(frames), frame_labels=list(frame_labels))
        seen.update(right={task: len(right) for task, (_, right) in model_right.items()})
        return {}

    monkeypatch.setattr(bench_cli, "_score_teachers", score_teachers)
    monkeypatch.chdir(tmp_path)  # where models/references would be: --quick's tiny ones replaced the real ones
    out = tmp_path / "out"
    assert cli.main(["bench", "--model", str(tiny_model_path), "--speech-commands", str(speech), "--scenes",
                     str(scenes), "--out", str(out), "--quick", "--no-streaming", "--train-references",
                     "--split", "testing", "--salt", "edgesense", "--teachers"]) == 0
    assert (out / "references" / "kws_dscnn.tflite").is_file() and not (tmp_path / "models").exists()
    report = json.loads((out / "report.json").read_text())
    assert "comparison_per_second" in report  # the references were compared before the teachers ran
    assert seen["frames"] == report["scene"]["count"] == len(seen["frame_labels"]) > 0
    assert seen["clips"] == report["command"]["count"]
    assert seen["right"] == {"command": seen["clips"], "scene": seen["frames"]}  # for the paired test


def test_a_teacher_is_compared_with_the_model_on_the_same_items(monkeypatch, tmp_path):
    """A teacher's row carries the paired test against the model on the clips both named (its right/wrong per
    clip, in the model's order): the model right on clips 0-2, the teacher on 0 and 3."""
    from edgesense.bench import cli as bench_cli
    from edgesense.bench import teachers

    monkeypatch.setattr(teachers, "build_teachers", lambda config, folder: {"t": tmp_path / "t.keras"})
    monkeypatch.setattr(teachers, "teacher_sidecar", lambda path: {"task": "scene", "labels": ["a", "b"]})
    monkeypatch.setattr(bench_cli, "reference_train_config", lambda options, model: None)
    row = {"task": "scene", "scene": {"accuracy": 0.5}}
    monkeypatch.setattr(teachers, "score_teacher", lambda path, **kw: (dict(row), np.array([1, 0, 0, 1], bool)))
    options = BenchOptions(model_path=tmp_path / "m.tflite", out_dir=tmp_path / "out", teachers=True, scenes=tmp_path)
    keys = ["p0", "p1", "p2", "p3"]
    scored = bench_cli._score_teachers(options, None, None, None, [np.zeros(1)] * 4, ["a", "b", "a", "b"],
                                       {"scene": (keys, np.array([1, 1, 1, 0], bool))})
    vs = scored["t"]["vs_model"]
    assert (vs["items"], vs["model_right_other_wrong"], vs["other_right_model_wrong"]) == (4, 2, 1), vs


def test_tuning_only_reads_the_validation_part_and_the_tuning_streams_only(tiny_model_path, tmp_path, monkeypatch):
    from edgesense.bench import accuracy, streaming
    from edgesense.train import data
    from edgesense.train.data import load_speech_commands, split_image_items
    from edgesense.train.pools import split_recordings

    speech = make_speech_commands(tmp_path / "sc", words=DEFAULT_COMMAND_LABELS[2:], speakers=20, per_speaker=1)
    scenes = _scene_folder(tmp_path / "scenes")
    noise = tmp_path / "noise"
    noise.mkdir()
    rng = np.random.default_rng(2)
    for i in range(6):
        write_wav(noise / f"hum_{i}.wav", (0.02 * rng.normal(size=16000 * 3)).astype(np.float32), 16000)
    read: list[Path] = []
    for module, name in ((data, "load_clips"), (accuracy, "_read_bgr"), (streaming, "read_recordings")):
        own = getattr(module, name)

        def spy(first, *args, _own=own, _name=name, **kwargs):
            paths = [first] if _name == "_read_bgr" else [p if isinstance(p, Path) else p.path for p in first]
            read.extend(Path(p) for p in paths)
            return _own(first, *args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    out = tmp_path / "out"
    args = ["bench", "--model", str(tiny_model_path), "--speech-commands", str(speech), "--scenes", str(scenes),
            "--noise", str(noise), "--out", str(out), "--quick", "--references", str(tmp_path / "no_refs"),
            "--split", "testing", "--salt", "edgesense"]
    assert cli.main([*args, "--tuning-only"]) == 0
    report = json.loads((out / "report.json").read_text())

    clips = load_speech_commands(speech).split(validation_percent=10, testing_percent=20, salt="edgesense")
    photos = split_image_items(data.load_image_folder(scenes).items, validation_percent=10, testing_percent=20)
    all_noise = sorted(noise.glob("*.wav")) + sorted((speech / "_background_noise_").glob("*.wav"))
    evaluation_noise = set(split_recordings(all_noise)["evaluation"])
    assert clips["validation"] and clips["testing"] and photos["validation"] and evaluation_noise
    allowed = ({it.path for it in clips["validation"]} | {it.path for it in photos["validation"]}
               | (set(all_noise) - evaluation_noise))
    assert read and set(read) <= allowed
    assert not set(read) & ({it.path for it in clips["testing"]} | {it.path for it in photos["testing"]}
                            | evaluation_noise)
    assert report["command"]["selection"].startswith("validation split")
    assert report["command"]["count"] == len(clips["validation"])
    assert report["scene"]["count"] == len(photos["validation"])
    # The camera path on those photos, clean and degraded; clean is the scene row's own figure.
    degraded = report["scene_degraded"]
    assert degraded["count"] == len(photos["validation"]) and degraded["conditions"][0] == "clean"
    assert degraded["image_only"]["clean"] == report["scene"]["accuracy"]
    assert set(degraded["image_only"]) == set(degraded["conditions"]) and len(degraded["conditions"]) > 1
    assert all(0 <= v <= 1 for v in degraded["image_only"].values())
    st = report["streaming"]
    assert list(st["pools"]) == ["tuning"] and list(st["det"]) == ["tuning"]
    assert "evaluation" not in st and "evaluation_streams" not in st and "tuning_streams" in st
    assert st["recommended"]["chosen_on"] == "tuning" and st["tuning_budgets"]["streams"] == "tuning"
    assert st["level_envelope_tuning"]
    markdown = (out / "report.md").read_text()
    assert "Tuning streams only" in markdown and "Level envelope: the tuning streams' words" in markdown
    assert "## Scenes, camera clean and degraded (image only)" in markdown
    assert "Evaluation streams" not in markdown

    assert cli.main([*args[:-4], "--tuning-only"]) == 2  # the validation part of which split?
    with pytest.raises(ValueError, match=r"tuning_only: expected --split testing"):
        BenchOptions(model_path=tiny_model_path, scenes=scenes, tuning_only=True)
    with pytest.raises(ValueError, match=r"tuning_only: expected no --scene-ambient or --av .*got '--av'"):
        BenchOptions(model_path=tiny_model_path, scenes=scenes, av=scenes, split="testing", tuning_only=True)


def wavs_the_ambient_figure_reads(monkeypatch) -> list[Path]:
    """The WAV files ``edgesense.bench.accuracy`` reads from now on (the "ambient audio" figure's recordings), in
    the order it reads them: a list that fills as the bench runs."""
    from edgesense.bench import accuracy

    read: list[Path] = []
    own = accuracy.read_wav

    def read_wav(path, *args, **kwargs):
        read.append(Path(path))
        return own(path, *args, **kwargs)

    monkeypatch.setattr(accuracy, "read_wav", read_wav)
    return read


def test_tuning_only_reads_no_evaluation_pool_noise_for_the_ambient_figure(tiny_model_path, tmp_path, monkeypatch):
    """The scenes' "ambient audio" figure hears --noise too: with --tuning-only, its training pool only."""
    from edgesense.train.pools import split_recordings

    scenes, noise = _scene_folder(tmp_path / "scenes"), tmp_path / "noise"
    noise.mkdir()
    rng = np.random.default_rng(5)
    for i in range(6):
        write_wav(noise / f"hum_{i}.wav", (0.02 * rng.normal(size=16000 * 2)).astype(np.float32), 16000)
    evaluation_pool = set(split_recordings(sorted(noise.glob("*.wav")))["evaluation"])
    read = wavs_the_ambient_figure_reads(monkeypatch)
    assert cli.main(["bench", "--model", str(tiny_model_path), "--scenes", str(scenes), "--noise", str(noise),
                     "--out", str(tmp_path / "out"), "--quick", "--references", str(tmp_path / "no_refs"),
                     "--split", "testing", "--salt", "edgesense", "--tuning-only"]) == 0
    assert evaluation_pool and read
    assert not set(read) & evaluation_pool


def test_the_ambient_figure_hears_the_same_noise_whatever_the_order_of_the_noise_flags(tiny_model_path, tmp_path,
                                                                                       monkeypatch):
    """The "ambient audio" figure read --noise folders in the flags' order (other snippets drawn, so another
    figure: 0.93 against 0.96 on the shared data's noise/ and ambient/), each named time over, and only a folder's
    own *.wav: scene_ambient/CLASS/*.wav gave none and the figure was pink noise, the report naming the folder."""

    scenes, flat, nested = _scene_folder(tmp_path / "scenes"), tmp_path / "flat", tmp_path / "places"
    rng = np.random.default_rng(5)
    for path in (flat / "hum.wav", flat / "fan.wav", nested / "forest" / "birds.wav", nested / "sea" / "waves.wav"):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, (0.02 * rng.normal(size=16000 * 2)).astype(np.float32), 16000)
    read = wavs_the_ambient_figure_reads(monkeypatch)
    heard, figures = [], []
    for flags in ([flat, nested], [nested, flat], [nested, flat, nested]):
        read.clear()
        out = tmp_path / f"out{len(heard)}"
        assert cli.main(["bench", "--model", str(tiny_model_path), "--scenes", str(scenes), "--out", str(out),
                         "--quick", "--references", str(tmp_path / "no_refs"),
                         *[part for folder in flags for part in ("--noise", str(folder))]]) == 0
        heard.append(list(read))
        figures.append(json.loads((out / "report.json").read_text())["scene_with_ambient_audio"])
    assert heard[0] == heard[1] == heard[2] == sorted(flat.glob("*.wav")) + sorted(nested.glob("*/*.wav"))
    assert figures[0] == figures[1] == figures[2]


def test_a_reference_of_other_words_or_places_is_skipped_not_scored():
    from types import SimpleNamespace

    from edgesense.bench.cli import _labels_it_lacks

    kws = SimpleNamespace(task="command", info={"labels": ["_silence_", "_unknown_", "yes", "no"]})
    assert _labels_it_lacks(kws, ["yes", "up", "no"], ["forest"]) == ["up"]  # then skipped: it cannot name "up"
    assert _labels_it_lacks(kws, ["yes", "no"], None) == [] and _labels_it_lacks(kws, None, ["forest"]) == []
    vww = SimpleNamespace(task="scene", info={"labels": ["forest", "sea"]})
    assert _labels_it_lacks(vww, ["up"], ["forest", "street"]) == ["street"]


@pytest.mark.parametrize("trained, flag", [("scenes", "--speech-commands"), ("speech", "--scenes")])
def test_a_head_the_model_never_trained_is_refused_not_scored(run_dir_copy, tmp_path, capsys, trained, flag):
    """A scenes-only (speech-only) recipe's command (scene) head was scored as if it meant something, and its
    streaming recommendation could be written into a device's config."""
    from edgesense.quantize.convert import QuantizeOptions, convert_run

    calibration = dict(np.load(run_dir_copy / "calibration.npz"))
    untrained = "audio_features" if trained == "scenes" else "image"
    calibration[untrained] = calibration[untrained][:0]
    np.savez(run_dir_copy / "calibration.npz", **calibration)
    model = tmp_path / f"{trained}_only.tflite"
    convert_run(run_dir_copy, model, QuantizeOptions(mode="int8", calibration_samples=16))
    capsys.readouterr()
    data = {"--speech-commands": _speech_folder(tmp_path / "sc", per_class=1), "--scenes": _scene_folder(
        tmp_path / "scenes", per_class=1)}
    out = tmp_path / "out"
    assert cli.main(["bench", "--model", str(model), flag, str(data[flag]), "--out", str(out), "--no-streaming",
                     "--references", str(tmp_path / "no_refs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"edgesense: error: {flag}: expected a model whose "), err
    assert f"{trained}-only recipe; leave {flag} out" in err[0] and not out.exists()
    other = next(f for f in data if f != flag)  # the head it trained is scored
    assert cli.main(["bench", "--model", str(model), other, str(data[other]), "--out", str(out), "--no-streaming",
                     "--references", str(tmp_path / "no_refs")]) == 0


def test_an_out_reused_keeps_no_figure_of_the_earlier_run_that_this_one_did_not_draw(tiny_model_path, tmp_path,
                                                                                       caplog):
    """A second run into the same --out with other data: the earlier run's command confusion figure stayed beside
    a report of scenes only, read as this model's. Only the files the earlier report lists go; the rest stays."""
    speech, scenes = _speech_folder(tmp_path / "sc", per_class=2), _scene_folder(tmp_path / "scenes")
    out = tmp_path / "out"
    argv = ["bench", "--model", str(tiny_model_path), "--out", str(out), "--no-streaming", "--references",
            str(tmp_path / "no_refs")]
    assert cli.main([*argv, "--speech-commands", str(speech), "--scenes", str(scenes)]) == 0
    assert (out / "confusion_command.png").is_file()
    (out / "confusion_mine.png").write_bytes(b"a user's own")  # not the bench's: no report lists it
    (out / "cache").mkdir(exist_ok=True)
    (out / "cache" / "posteriors-0123456789abcdef.npz").write_bytes(b"kept")
    with caplog.at_level("INFO"):
        assert cli.main([*argv, "--scenes", str(scenes)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "command" not in report and not (out / "confusion_command.png").exists()
    assert {p.name for p in out.glob("*.png")} == {*report["figures"].values(), "confusion_mine.png"}
    assert (out / "confusion_mine.png").read_bytes() == b"a user's own"
    assert (out / "cache" / "posteriors-0123456789abcdef.npz").read_bytes() == b"kept"
    assert "confusion_command.png" not in (out / "report.md").read_text()
    assert f"removed {out / 'confusion_command.png'}: an earlier run's, this run drew none" in caplog.text


def test_a_run_interrupted_by_ctrl_c_leaves_the_earlier_run_in_out_as_it_was(tiny_model_path, tmp_path):
    """Ctrl-C during the streams left this run's figures (latency.png, confusion_command.png) in --out beside the
    earlier run's report, which read as that run's; with no earlier run, figures without any report, which the next
    complete run kept (no report listed them). The figures are written with the report, at the end."""
    speech, scenes = _speech_folder(tmp_path / "sc"), _scene_folder(tmp_path / "scenes", per_class=2)
    out = tmp_path / "out"
    argv = ["bench", "--model", str(tiny_model_path), "--out", str(out), "--references", str(tmp_path / "no_refs")]
    assert cli.main([*argv, "--scenes", str(scenes), "--no-streaming"]) == 0
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = subprocess.Popen([sys.executable, "-m", "edgesense.app.cli", *argv, "--speech-commands", str(speech),
                             "--quick"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # the clips are scored, their figures drawn: the streams are being mixed
        lines.append(line)
        if "stream:" in line:
            os.killpg(proc.pid, signal.SIGINT)
            break
    err = "".join(lines) + proc.stderr.read()
    assert proc.wait(timeout=120) == 130 and "Traceback" not in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == earlier, err


def _edgesense_on_a_full_disk(max_file_bytes: int, *args: object) -> subprocess.CompletedProcess:
    """``edgesense ARGS`` in a process whose files may grow to ``max_file_bytes`` (RLIMIT_FSIZE: a write past it
    fails with EFBIG, as one on a full disk fails with ENOSPC; Python ignores SIGXFSZ)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run([sys.executable, "-m", "edgesense.app.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, preexec_fn=limit, timeout=300,
                          check=False)


def test_a_full_disk_while_the_figures_are_drawn_is_one_line_and_keeps_the_earlier_run_whole(tiny_model_path,
                                                                                               tmp_path):
    """A figure that did not fit was left cut short in --out (the earlier run's report.md showing it), and the
    line said '[Errno 27] File too large', naming no file."""
    scenes, out = _scene_folder(tmp_path / "scenes", per_class=2), tmp_path / "out"
    argv = ["bench", "--model", tiny_model_path, "--scenes", scenes, "--out", out, "--no-streaming", "--references",
            tmp_path / "no_refs"]
    assert cli.main(list(map(str, argv))) == 0
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = _edgesense_on_a_full_disk(4096, *argv, "--seed", "1")
    figure = out / "confusion_scene.png"
    assert error_line(proc) == f"edgesense: error: cannot write the figure {figure}: File too large"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier  # whole, as they were; no partial file


def test_the_report_pair_is_written_whole_or_not_at_all(tmp_path):
    """report.json was written over the earlier one before report.md: a full disk left it cut short (or this run's
    report.json beside the earlier run's report.md), and the line named no file."""
    md, js = tmp_path / "report.md", tmp_path / "report.json"
    md.write_text("# the earlier run\n")
    js.write_text('{"earlier": true}\n')
    code = (f"import resource\nfrom pathlib import Path\nfrom edgesense.bench.report import write_outputs\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))\n"
            f"try:\n    write_outputs({{Path({str(md)!r}): b'm' * 100, Path({str(js)!r}): b'j' * 100_000}}, "
            f"what='the report')\nexcept OSError as exc:\n    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.stdout.strip() == f"cannot write the report {js}: File too large", proc.stderr
    assert md.read_text() == "# the earlier run\n" and js.read_text() == '{"earlier": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report.md"]  # no partial file


def test_scene_folders_of_other_places_than_the_models_are_refused_before_the_run(tiny_model_path, tmp_path,
                                                                                  capsys):
    """A --scenes class the model has no label for was refused only after every clip of --speech-commands was
    scored (and the references trained), its confusion figure left in --out."""
    speech, scenes = _speech_folder(tmp_path / "sc", per_class=1), _scene_folder(tmp_path / "scenes", per_class=1)
    shutil.copytree(scenes / TINY_SCENE_LABELS[0], scenes / "kitchen")
    out = tmp_path / "out"
    capsys.readouterr()
    assert cli.main(["bench", "--model", str(tiny_model_path), "--speech-commands", str(speech), "--scenes",
                     str(scenes), "--out", str(out), "--no-streaming", "--references", str(tmp_path / "no_refs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"edgesense: error: --scenes: expected class folders named like the model's scene labels "
                   f"{list(TINY_SCENE_LABELS)}, got ['kitchen']"], err
    assert not out.exists()  # nothing was scored, nothing written


def test_a_second_opinion_of_other_words_is_one_line_before_any_clip_is_scored(tiny_model_path, tmp_path, capsys):
    """A model of the user's own words beside the shipped config's heads (the ten words): the accuracy section
    ran, then the streams stopped on the heads file's labels, with no word of --model-alone."""
    words = list(DEFAULT_COMMAND_LABELS[:5])
    heads = write_stream_heads(tmp_path / "heads.tflite", words)
    config = tmp_path / "pair.yaml"
    config.write_text(f"device: {{name: pair}}\nsecond_opinion: {{heads_path: {heads}}}\n")
    speech, out = _speech_folder(tmp_path / "sc", per_class=1), tmp_path / "out"
    capsys.readouterr()
    assert cli.main(["bench", "--model", str(tiny_model_path), "--speech-commands", str(speech), "--config",
                     str(config), "--out", str(out), "--quick", "--references", str(tmp_path / "no_refs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgesense: error: --config: expected a second opinion of the "
                                               f"model's labels {list(DEFAULT_COMMAND_LABELS)}"), err
    assert "--model-alone" in err[0] and f"got {config}'s heads.tflite of {words}" in err[0]
    assert not out.exists()


def test_references_too_small_to_train_are_said_naming_the_flag_before_our_figures(tiny_model_path, tmp_path,
                                                                                 capsys):
    speech, out = _speech_folder(tmp_path / "sc", per_class=1), tmp_path / "out"
    assert cli.main(["bench", "--model", str(tiny_model_path), "--speech-commands", str(speech), "--out", str(out),
                     "--quick", "--no-streaming", "--train-references", "--references", str(tmp_path / "refs"),
                     "--salt", "edgesense"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("edgesense: error: --train-references: the references' data (--speech-commands): "
                              "data.validation_percent:"), err
    assert not (out / "confusion_command.png").exists()  # said before any of ours was scored


def test_references_of_the_models_own_words_and_frontend(tiny_builders, tmp_path, monkeypatch):
    """A model of three words on a 32-band log-mel: the references were trained on the ten words and 40 bands,
    then scoring stopped on 'cannot reshape array of size 1568 into shape (1,49,40)'; a reference of the ten
    words would have been scored wrong on every clip of a word the model calls _unknown_."""
    import functools

    from edgesense.frontend.audio import AudioFrontendOptions
    from edgesense.quantize.convert import QuantizeOptions, convert_run

    labels = DEFAULT_COMMAND_LABELS[:5]
    builders = tiny_builders.write_tiny_run.__globals__  # the tiny run's labels and frontend, for this test
    monkeypatch.setitem(builders, "DEFAULT_COMMAND_LABELS", labels)
    monkeypatch.setitem(builders, "AudioFrontendOptions", functools.partial(AudioFrontendOptions, num_mel_bins=32))
    model = tmp_path / "own.tflite"
    convert_run(tiny_builders.write_tiny_run(tmp_path / "run"), model, QuantizeOptions(mode="int8",
                                                                                      calibration_samples=16))
    speech, out, refs = _speech_folder(tmp_path / "sc", per_class=16), tmp_path / "out", tmp_path / "refs"
    assert cli.main(["bench", "--model", str(model), "--speech-commands", str(speech), "--out", str(out), "--quick",
                     "--no-streaming", "--train-references", "--references", str(refs), "--split", "testing",
                     "--salt", "edgesense"]) == 0
    report = json.loads((out / "report.json").read_text())
    kws = report["references"]["kws_dscnn"]
    assert kws["command"]["labels"] == list(labels) and kws["command"]["count"] == report["command"]["count"]
    assert json.loads((refs / "kws_dscnn.json").read_text())["input"]["shape"] == [1, 49, 32]


def test_a_reference_of_other_words_or_frontend_than_the_models_is_skipped():
    from types import SimpleNamespace

    from edgesense.bench.cli import _unlike_the_model
    from edgesense.frontend.audio import AudioFrontendOptions

    model = SimpleNamespace(command_labels=("_silence_", "_unknown_", "yes"), audio_frontend=AudioFrontendOptions())
    own = {"task": "command", "labels": ["_silence_", "_unknown_", "yes"],
           "frontend": AudioFrontendOptions(num_mel_bins=32).to_dict()}
    assert _unlike_the_model(own, model) == ""  # its own 32 bands: scored on them
    ten = {**own, "labels": ["_silence_", "_unknown_", "yes", "no"]}  # "no" is _unknown_ to the model
    assert _unlike_the_model(ten, model).startswith("trained on the labels ['_silence_', '_unknown_', 'yes', 'no']")
    at_8k = {**own, "frontend": AudioFrontendOptions(sample_rate_hz=8000, upper_edge_hz=3800).to_dict()}
    assert _unlike_the_model(at_8k, model) == "its audio frontend is at 8000 Hz, the model's clips at 16000 Hz"


def test_the_fusion_study_takes_its_place_sounds_from_the_noise_folder_holding_them(tiny_model_path, tmp_path):
    """The shared data's order (``--noise noise --noise ambient``): the study's cafe and traffic are in the second
    folder, and its photos are paired with them, not with the first folder's dishes and cat."""
    rng = np.random.default_rng(9)
    folders = {"noise": ("doing_the_dishes.wav", "dude_miaowing.wav"), "ambient": ("cafe.wav", "traffic.wav")}
    for folder, names in folders.items():
        (tmp_path / folder).mkdir()
        for name in names:
            write_wav(tmp_path / folder / name, (0.05 * rng.normal(size=16000 * 3)).astype(np.float32), 16000)
    scenes, out = _scene_folder(tmp_path / "scenes", per_class=4), tmp_path / "out"
    assert cli.main(["bench", "--model", str(tiny_model_path), "--scenes", str(scenes), "--out", str(out),
                     "--quick", "--references", str(tmp_path / "no_refs"), "--fusion-study",
                     "--noise", str(tmp_path / "noise"), "--noise", str(tmp_path / "ambient")]) == 0
    pairing = json.loads((out / "av_synthetic" / "README.json").read_text())
    assert pairing["real_recordings"] == ["cafe", "traffic"]
    assert set(pairing["sound_for_scene"].values()) >= {"cafe", "traffic"}


def test_the_streaming_cost_is_measured_from_the_evaluation_speakers_clips(tiny_model_path, tmp_path):
    """--split all: the streaming cost (and the breakdown's clean-clip row) compare the evaluation
    streams' hit rate with the clip accuracy of the same speakers' words, not of every clip scored
    (the tuning half's too, whose words the evaluation streams never say)."""
    options, rng = AudioFrontendOptions(), np.random.default_rng(5)
    speakers = [f"{s:08x}" for s in range(8)]
    tuning = {s for s in speakers if hash_percent(s, "/stream-tuning") < 50.0}
    assert tuning and set(speakers) - tuning
    speech = tmp_path / "sc"
    for k, label in enumerate(DEFAULT_COMMAND_LABELS):
        (speech / label).mkdir(parents=True)
        for s in speakers:
            name = f"other_{s}_nohash_0.wav" if label == "_unknown_" else f"{s}_nohash_0.wav"
            # the tuning half's command words are hiss the tiny model does not name: its clips fall
            tone = 0 if label in DEFAULT_COMMAND_LABELS[2:] and s in tuning else k
            write_wav(speech / label / name, _command_clip(tone, rng, options), options.sample_rate_hz)
    config = tmp_path / "device.yaml"
    config.write_text("device: {name: test}\nscheduler: {command_hop_ms: 200}\n")
    out = tmp_path / "out"
    assert cli.main(["bench", "--model", str(tiny_model_path), "--speech-commands", str(speech), "--split", "all",
                     "--config", str(config), "--out", str(out), "--quick", "--references",
                     str(tmp_path / "no_refs")]) == 0
    st = json.loads((out / "report.json").read_text())["streaming"]

    def named_right(clips: list[Path]) -> float:
        return _model_named_right(tiny_model_path, clips)

    words = [p for w in DEFAULT_COMMAND_LABELS[2:] for p in sorted((speech / w).glob("*.wav"))]
    evaluation = [p for p in words if p.name.split("_")[0] not in tuning]
    assert named_right(evaluation) > named_right(words)  # the two differ: the test tells them apart
    assert st["clip_accuracy_commands"] == named_right(evaluation)
    assert st["streaming_cost_points"] == round(100 * (named_right(evaluation)
                                                       - st["evaluation"]["recommended"]["hit_rate"]), 2)
    assert st["cost_breakdown"][0]["words"] == len(evaluation)


def test_without_other_words_said_alone_their_false_accepts_are_not_measured_not_zero(tiny_model_path, tmp_path):
    """A folder of the command words alone and other speech of sentences only: no words stream in either
    split, so the false accepts per 100 other words are n/a (null), not 0.00 at every setting."""
    options, rng = AudioFrontendOptions(), np.random.default_rng(9)
    speech, talk = tmp_path / "sc", tmp_path / "talk"
    for k, label in enumerate(DEFAULT_COMMAND_LABELS):
        if label in DEFAULT_COMMAND_LABELS[2:]:
            (speech / label).mkdir(parents=True)
            for s in range(6):
                write_wav(speech / label / f"{s:08x}_nohash_0.wav", _command_clip(k, rng, options),
                          options.sample_rate_hz)
    talk.mkdir()
    t = np.arange(4 * options.sample_rate_hz) / options.sample_rate_hz
    for i in range(12):  # 4-s "sentences": talk only
        write_wav(talk / f"sentence_{i:02d}.wav", (0.3 * np.sin(2 * np.pi * (300 + 40 * i) * t)).astype(np.float32),
                  options.sample_rate_hz)
    config = tmp_path / "device.yaml"
    config.write_text("device: {name: test}\nscheduler: {command_hop_ms: 200}\n")
    out = tmp_path / "out"
    proc = edgesense("bench", "--model", tiny_model_path, "--speech-commands", speech, "--negatives", talk,
                     "--config", config, "--out", out, "--quick", "--references", tmp_path / "no_refs")
    assert proc.returncode == 0, proc.stderr
    st = json.loads((out / "report.json").read_text())["streaming"]
    assert "words" not in st["evaluation_streams"] and "words" not in st["tuning_streams"]
    assert st["recommended"]["tuning"]["false_accepts_per_100_words"] is None
    assert all(point["false_accepts_per_100_words"] is None for point in st["evaluation"].values())
    assert all(point["false_accepts_per_100_words"] is None for curve in st["det"].values() for point in curve)
    assert "n/a FA/100 other words" in proc.stdout
    md = (out / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| recommended |"))
    assert row.split(" | ")[3] == "n/a", row
    assert "that budget was not measured" in md and "2 per 100 other words" not in md


def test_a_scene_photo_whose_name_is_not_utf8_is_scored_not_a_crash(tmp_path):
    """``bench --scenes`` read each photo with ``cv2.imread``, which crashes the process (a segmentation fault, exit
    139, the whole run lost) on a name that is not UTF-8 (a Latin-1 ``Straße.jpg`` from an old archive): the photo
    is read by Python and decoded by OpenCV, as training reads it."""
    photo = tmp_path / os.fsdecode(b"Stra\xdfe.jpg")
    ok, encoded = cv2.imencode(".jpg", np.full((20, 30, 3), (10, 200, 30), np.uint8))
    assert ok
    photo.write_bytes(encoded.tobytes())
    script = ("import os, sys; from pathlib import Path; from edgesense.bench.accuracy import _read_bgr; "
              "image = _read_bgr(Path(os.fsdecode(sys.argv[1]))); print(image.shape, image[10, 15].tolist())")
    proc = subprocess.run([sys.executable, "-c", script, os.fsencode(photo)], capture_output=True, text=True,
                          check=False, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    shape, pixel = proc.stdout.strip().split(") ")
    assert shape == "(20, 30, 3" and abs(json.loads(pixel)[1] - 200) <= 3


def test_a_scene_photo_declaring_gigabytes_of_pixels_is_skipped_before_it_is_decoded(tmp_path, caplog):
    """``bench --scenes`` decoded a photo whatever its header declared: a 389-KB PNG of 20000 x 20000 pixels took
    2.4 GB before it was shrunk to the model's input. It is skipped with a warning naming it, as training skips it."""
    import logging
    import struct
    import zlib

    from edgesense.bench.accuracy import _read_bgr

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(bytes(8 * 20001))) + chunk(b"IEND", b""))
    with caplog.at_level(logging.WARNING, logger="edgesense.bench.accuracy"):
        assert _read_bgr(bomb) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"skipping unreadable image {bomb}: expected an image of at most 268 megapixels (16384 x 16384), found "
        "20000 x 20000 (400 megapixels) in its header: decoding it would take gigabytes; shrink it first"]
    fine = tmp_path / "fine.png"
    fine.write_bytes(cv2.imencode(".png", np.full((20, 30, 3), 7, np.uint8))[1].tobytes())
    assert _read_bgr(fine).shape == (20, 30, 3)


def test_a_second_opinion_that_trained_on_the_test_speakers_is_refused_before_the_run(tiny_model_path, tmp_path,
                                                                                     capsys, caplog):
    """Heads record the split they trained on (``train-stream-heads`` writes ``data``): heads of another split of
    the same folder (another salt: trained beside another student) learned clips of the model's test speakers, and
    ``--split testing`` tuned and scored the pair on words its heads knew, with nothing said."""
    import dataclasses

    from edgesense.train.data import SplitSpec, load_speech_commands

    speech, out = _speech_folder(tmp_path / "sc", per_class=2), tmp_path / "out"
    model = EdgeModel.load(tiny_model_path)
    ours = SplitSpec.from_metadata(model.metadata, "edgesense")
    configs = {}
    for name, salt in (("same", "edgesense"), ("other", "other")):
        split = dataclasses.asdict(dataclasses.replace(ours, speaker_salt=salt))
        heads = write_stream_heads(tmp_path / f"{name}.tflite", list(model.command_labels),
                                   data={"speech_commands": [str(speech.resolve())], "split": split})
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(f"device: {{name: pair}}\nsecond_opinion: {{heads_path: {heads}}}\n")
    index = load_speech_commands(speech)
    other = dataclasses.replace(ours, speaker_salt="other")
    learned = {(it.path, it.offset_ms) for it in other.split_clips(index)["training"]}
    tested = ours.split_clips(index)
    assert any((it.path, it.offset_ms) in learned for it in [*tested["testing"], *tested["validation"]])
    capsys.readouterr()
    args = ["bench", "--model", str(tiny_model_path), "--speech-commands", str(speech), "--out", str(out), "--quick",
            "--references", str(tmp_path / "no_refs"), "--split", "testing", "--salt", "edgesense", "--config"]
    assert cli.main([*args, str(configs["other"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgesense: error: --config: expected a second opinion whose heads "
                                               "never trained on the clips the streams say"), err
    assert "(split with salt 'other') that trained on" in err[0] and str(speech) in err[0]
    assert not out.exists()
    from edgesense.bench.cli import _refuse_heads_that_learned

    same = {"data": {"speech_commands": [str(speech)], "split": dataclasses.asdict(ours)}}
    options = BenchOptions(model_path=tiny_model_path, speech_commands=speech, split="testing", salt="edgesense",
                           out_dir=out)
    _refuse_heads_that_learned(same, options, model)  # the model's own split: its test speakers never trained them
    with caplog.at_level("WARNING", logger="edgesense.bench.cli"):  # --split all: said, as the model's is
        _refuse_heads_that_learned(same, dataclasses.replace(options, split="all"), model)
    assert any("--split all: the second opinion's heads" in r.getMessage() for r in caplog.records)


def test_a_scene_photo_cut_short_is_skipped_and_named_as_training_skips_it(tmp_path, caplog, monkeypatch):
    """``bench --scenes`` (and ``--av``) left a JPEG cut short (a copy or download stopped halfway) to OpenCV:
    OpenCV 4 (pyproject allows >= 4.5) decodes it without an error, its missing part made up, and the bench scored
    that photo; training skips it with a line (``load_images``). The bench skips it too, naming it, whatever the
    decoder does with it."""
    import logging

    from edgesense.bench.accuracy import _read_bgr
    from edgesense.train.data import load_images

    whole = tmp_path / "whole.jpg"
    whole.write_bytes(cv2.imencode(".jpg", np.full((100, 100, 3), 90, np.uint8))[1].tobytes())
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[:len(whole.read_bytes()) // 2])
    decode = cv2.imdecode
    # OpenCV 4's reading of a cut JPEG (5.x refuses it): the photo, its missing rows grey
    monkeypatch.setattr(cv2, "imdecode", lambda buf, flags: decode(buf, flags) if buf[-2:].tobytes() == b"\xff\xd9"
                        else np.full((100, 100, 3), 128, np.uint8))
    _, report = load_images([whole, cut])
    assert report.kept == (0,)  # training's reading
    with caplog.at_level(logging.WARNING, logger="edgesense.bench.accuracy"):
        assert _read_bgr(cut) is None
        assert _read_bgr(whole).shape == (100, 100, 3)
    assert [r.getMessage() for r in caplog.records if r.name == "edgesense.bench.accuracy"] == [
        f"skipping unreadable image {cut}: a JPEG cut short (no end-of-image marker): the decoder would fill its "
        "missing part with grey"]
