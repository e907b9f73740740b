"""Ours vs the MLPerf Tiny references per second of stream: a figure that is missing stays missing
through every sum and ratio, and the report says so instead of printing 0 or a partial total."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgesense.bench.options import BenchOptions
from edgesense.bench.references import compute_comparison, reference_train_config
from edgesense.bench.report import render_markdown
from edgesense.runtime.model import EdgeModel
from edgesense.train.data import SplitSpec

LATENCY = {"audio_encoder": {"mean": 1.0}, "image_encoder": {"mean": 4.0}, "fusion": {"mean": 0.5},
           "audio_frontend": {"mean": 0.2}, "image_preprocess": {"mean": 0.1}}
KWS_MACS, VWW_MACS = 55, 505


def _references(kws_macs: int | None, vww_macs: int | None) -> dict:
    return {"kws": {"task": "command", "model": {"macs": kws_macs}, "latency_ms": {"inference": {"mean": 0.75}}},
            "vww": {"task": "scene", "model": {"macs": vww_macs}, "latency_ms": {"inference": {"mean": 2.25}}}}


def test_a_missing_mac_count_leaves_its_part_the_total_and_their_ratios_missing():
    ours_without_image_encoder = {"audio_encoder": 100, "fusion_head": 10}
    comp = compute_comparison(ours_without_image_encoder, LATENCY, _references(KWS_MACS, VWW_MACS))
    assert comp["commands"]["ours_macs_per_s"] == 10 * 110 and comp["commands"]["macs_ratio"] == 2.0
    assert comp["scenes"]["ours_macs_per_s"] is None and comp["scenes"]["macs_ratio"] is None
    assert comp["total"]["ours_macs_per_s"] is None and comp["total"]["macs_ratio"] is None
    assert comp["total"]["theirs_macs_per_s"] == 10 * KWS_MACS + 5 * VWW_MACS
    # the reference's count unknown: theirs missing, not 0
    comp = compute_comparison({"audio_encoder": 100, "image_encoder": 1000, "fusion_head": 10}, LATENCY,
                              _references(None, VWW_MACS))
    assert comp["commands"]["theirs_macs_per_s"] is None and comp["commands"]["macs_ratio"] is None
    assert comp["total"]["theirs_macs_per_s"] is None and comp["total"]["macs_ratio"] is None
    assert comp["scenes"]["macs_ratio"] == 2.0
    # no fusion head count: neither part has ours
    comp = compute_comparison({"audio_encoder": 100, "image_encoder": 1000}, LATENCY, _references(KWS_MACS, VWW_MACS))
    assert comp["commands"]["ours_macs_per_s"] is None and comp["scenes"]["ours_macs_per_s"] is None


def test_a_missing_latency_leaves_its_sums_missing_and_frontends_cover_the_parts_compared():
    partial = {k: v for k, v in LATENCY.items() if k != "fusion"}
    comp = compute_comparison({"audio_encoder": 100, "image_encoder": 1000, "fusion_head": 10}, partial,
                              _references(KWS_MACS, VWW_MACS))
    assert comp["commands"]["ours_ms_per_s"] is None and comp["total"]["ours_ms_per_s"] is None
    assert comp["total"]["theirs_ms_per_s"] == 10 * 0.75 + 5 * 2.25
    assert comp["frontend_ms_per_s"] == 10 * 0.2 + 5 * 0.1
    no_image_preprocess = {k: v for k, v in LATENCY.items() if k != "image_preprocess"}
    comp = compute_comparison({"audio_encoder": 100, "image_encoder": 1000, "fusion_head": 10}, no_image_preprocess,
                              _references(KWS_MACS, VWW_MACS))
    assert comp["frontend_ms_per_s"] is None  # not the audio frontend's alone
    commands_only = compute_comparison({"audio_encoder": 100, "fusion_head": 10}, no_image_preprocess,
                                       {"kws": _references(KWS_MACS, None)["kws"]})
    assert commands_only["frontend_ms_per_s"] == 10 * 0.2 and "scenes" not in commands_only


def test_the_report_shows_a_missing_figure_as_missing_not_zero():
    references = _references(None, VWW_MACS)
    for r in references.values():
        r.update(architecture_note="a reference", model={**r["model"], "bytes": 1000, "params": 10})
        r[r["task"]] = {"accuracy": 0.5, "count": 2}
        r["latency_ms"]["inference"].update(p50=1.0, p95=1.0, p99=1.0, n=3)
    comp = compute_comparison({"audio_encoder": 100, "fusion_head": 10}, LATENCY, references)
    report = {"model": {"path": "model.tflite", "bytes": 1000}, "settings": {}, "latency_ms": {},
              "references": references, "comparison_per_second": comp}
    compute_section = render_markdown(report).split("Compute per second")[1]
    rows = {cells[0]: cells[1:] for cells in (line.strip("| ").split(" | ") for line in compute_section.splitlines()
                                               if line.startswith(("| commands", "| scenes", "| total")))}
    # ours MACs/s, theirs MACs/s, their ratio
    assert rows["commands"][:3] == ["1100", "n/a", "n/a"]
    assert rows["scenes"][:3] == ["n/a", "2525", "n/a"]
    assert rows["total"][:3] == ["n/a", "n/a", "n/a"]
    assert "**kws**: a reference; 1000 bytes, 10 params, n/a MACs" in render_markdown(report)


def test_the_references_train_on_the_split_the_model_records_never_on_its_test_speakers(tmp_path):
    """``--split testing`` without ``--salt`` scores the test speakers of the model's recorded split
    (salt ``edgesense`` for the shipped model); the references learned from a split with salt ``""``,
    whose training part held test speakers of the rows they were scored on."""
    model_path = Path(__file__).resolve().parents[2] / "models" / "edgesense.tflite"
    model = EdgeModel.load(model_path)
    recorded = SplitSpec.from_metadata(model.metadata, None)
    assert recorded.speaker_salt == "edgesense"  # what the bench's --split testing evaluates
    for folder in ("sc", "scenes"):
        (tmp_path / folder).mkdir()
    options = BenchOptions(model_path=model_path, speech_commands=tmp_path / "sc", scenes=tmp_path / "scenes",
                           split="testing", train_references=True, references_dir=tmp_path / "refs",
                           out_dir=tmp_path / "out")
    data = reference_train_config(options, model).data
    assert (data.speaker_split_salt, data.validation_percent, data.testing_percent, data.image_validation_percent,
            data.image_testing_percent) == (recorded.speaker_salt, recorded.validation_percent,
                                            recorded.testing_percent, recorded.image_validation_percent,
                                            recorded.image_testing_percent)
    # --salt replaces the recorded salt for the references as for the rows they are scored on
    salted = reference_train_config(dataclasses.replace(options, salt="other"), model).data
    assert salted.speaker_split_salt == "other" == SplitSpec.from_metadata(model.metadata, "other").speaker_salt


def test_a_reference_is_never_scored_on_the_clips_it_trained_on(tmp_path):
    """References in ``--references`` were scored whatever they trained on: ``--split all`` on the real folder
    (the default) scored ``kws_dscnn`` at 93.8 % on 240 clips, 173 of them its own training clips (89.2 % on the
    test speakers alone), beside the model. The split its sidecar records says which clips it learned."""
    import json
    import shutil

    from datagen import make_speech_commands

    from edgesense.bench.cli import run_bench
    from edgesense.bench.references import rows_it_learned
    from edgesense.train.data import load_speech_commands
    from edgesense.types import DEFAULT_COMMAND_WORDS

    shipped = Path(__file__).resolve().parents[2] / "models"
    speech = make_speech_commands(tmp_path / "speech", words=DEFAULT_COMMAND_WORDS, speakers=12, per_speaker=1,
                                  unknown_words=("bed",))
    refs = tmp_path / "refs"
    refs.mkdir()
    shutil.copy(shipped / "references" / "kws_dscnn.tflite", refs)
    info = json.loads((shipped / "references" / "kws_dscnn.json").read_text())
    split = SplitSpec.from_metadata(EdgeModel.load(shipped / "edgesense.tflite").metadata, None)
    info["training"]["data"].update(speech_commands=[str(speech)], split=dataclasses.asdict(split))
    (refs / "kws_dscnn.json").write_text(json.dumps(info))
    index = load_speech_commands(speech)
    training = split.split_clips(index)["training"]
    assert rows_it_learned(info, speech, index, list(index.items)) == len(training) > 0
    assert rows_it_learned(info, speech, index, split.split_clips(index)["testing"]) == 0
    assert rows_it_learned(info, tmp_path / "elsewhere", index, list(index.items)) == 0  # other data: not compared
    options = {"model_path": shipped / "edgesense.tflite", "speech_commands": speech, "streaming": False,
               "references_dir": refs}
    every = run_bench(BenchOptions(**options, out_dir=tmp_path / "all"))
    assert "kws_dscnn" not in every.get("references", {})
    testing = run_bench(BenchOptions(**options, split="testing", out_dir=tmp_path / "testing"))
    assert testing["references"]["kws_dscnn"]["command"]["count"] == testing["command"]["count"] > 0


def test_a_reference_whose_name_is_a_path_is_skipped_with_a_line(tmp_path, caplog):
    """A reference's sidecar ``name`` names its files in the bench's ``--out`` (``confusion_NAME.png``): one shared
    by someone else named ``x/../../p`` failed the bench at its figures after the whole run, or wrote outside
    ``--out``. It is skipped, and a warning names the sidecar's field."""
    import json
    import logging
    import shutil

    from edgesense.bench.references import find_references
    from edgesense.runtime.interpreter import InterpreterOptions

    shipped = Path(__file__).resolve().parents[2] / "models" / "references"
    info = json.loads((shipped / "kws_dscnn.json").read_text())
    for i, name in enumerate(("x/../../p", "..", "a\\b", "C:p", "")):
        refs = tmp_path / f"refs{i}"
        refs.mkdir()
        shutil.copy(shipped / "kws_dscnn.tflite", refs)
        (refs / "kws_dscnn.json").write_text(json.dumps({**info, "name": name}))
        with caplog.at_level(logging.WARNING):
            assert find_references(refs, InterpreterOptions()) == [], name
        assert "kws_dscnn.json: name: expected a plain name" in caplog.text, caplog.text
        caplog.clear()
    refs = tmp_path / "plain"
    refs.mkdir()
    shutil.copy(shipped / "kws_dscnn.tflite", refs)
    (refs / "kws_dscnn.json").write_text(json.dumps({**info, "name": "kws dscnn (mine)"}))
    assert [r.name for r in find_references(refs, InterpreterOptions())] == ["kws dscnn (mine)"]
