"""``BenchOptions``: checked when built."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgesense.bench.options import STREAMING_ONLY, BenchOptions
from edgesense.train.config import SEED_EXPECTED, SEED_LIMIT


@pytest.mark.parametrize("seed", [-1, SEED_LIMIT, True])
def test_a_seed_numpy_refuses_is_refused_naming_the_field(tmp_path, seed):
    with pytest.raises(ValueError) as info:
        BenchOptions(model_path=tmp_path / "m.tflite", speech_commands=tmp_path, seed=seed)
    assert str(info.value) == f"seed: expected {SEED_EXPECTED}, got {seed!r}"


def test_the_edge_seeds_are_taken(tmp_path):
    for seed in (0, SEED_LIMIT - 1):
        assert BenchOptions(model_path=tmp_path / "m.tflite", speech_commands=tmp_path, seed=seed).seed == seed


@pytest.mark.parametrize("name", ["stream_s", "talk_s"])
def test_an_endless_stream_is_refused_when_built(tmp_path, name):
    """Not after the accuracy section, as a StreamOptions' duration_s the user never typed."""
    with pytest.raises(ValueError, match=rf"^{name}: expected None or a number in \[20, 604800\] \(s\), got inf$"):
        BenchOptions(model_path=tmp_path / "m.tflite", speech_commands=tmp_path, **{name: float("inf")})


@pytest.mark.parametrize("name", ["stream_s", "talk_s"])
def test_a_stream_longer_than_the_streams_take_is_refused_when_built(tmp_path, name):
    """A stream past a week (StreamOptions' MAX_STREAM_S) was taken here and refused by StreamOptions after the
    accuracy section and the tuning streams (days of posteriors), as a duration_s the user never typed."""
    from edgesense.bench.streams import MAX_STREAM_S

    with pytest.raises(ValueError, match=rf"^{name}: expected None or a number in \[20, 604800\] \(s\), got 1e\+30$"):
        BenchOptions(model_path=tmp_path / "m.tflite", speech_commands=tmp_path, **{name: 1e30})
    with pytest.raises(ValueError, match=rf"^{name}: "):
        BenchOptions(model_path=tmp_path / "m.tflite", speech_commands=tmp_path, **{name: MAX_STREAM_S + 60})
    built = BenchOptions(model_path=tmp_path / "m.tflite", speech_commands=tmp_path, **{name: MAX_STREAM_S})
    assert getattr(built, name) == MAX_STREAM_S


def test_write_config_without_the_streaming_evaluation_is_refused(tmp_path):
    """--no-streaming has no recommendation to write: the file was left as it was, and the run said nothing."""
    config = tmp_path / "device.yaml"
    with pytest.raises(ValueError, match=r"^write_config: expected the streaming evaluation .*got '--no-streaming'$"):
        BenchOptions(model_path=tmp_path / "m.tflite", speech_commands=tmp_path, write_config=(config,),
                     streaming=False)
    assert BenchOptions(model_path=tmp_path / "m.tflite", speech_commands=tmp_path, write_config=(config,)).streaming


STREAMING_VALUES = {"stream_s": 120.0, "talk_s": 240.0, "class_thresholds": True, "max_false_accepts_per_hour": 0.5,
                    "max_false_accepts_per_100_words": 1.0, "max_latency_p95_ms": 400.0, "latency_rule": "p95",
                    "model_alone": True}


@pytest.mark.parametrize("name", sorted(STREAMING_ONLY))
def test_an_option_of_the_streams_alone_is_refused_without_them_not_ignored(tmp_path, name):
    """--class-thresholds, --model-alone, --negatives... with --scenes only or --no-streaming set nothing: the run
    said nothing and the report had no trace of them."""
    value = STREAMING_VALUES.get(name, (tmp_path,))  # the path options: an existing folder
    with pytest.raises(ValueError, match=rf"^{name}: expected --speech-commands and the streaming evaluation .*, "
                                         r"got 'no --speech-commands'$"):
        BenchOptions(model_path=tmp_path / "m.tflite", scenes=tmp_path, **{name: value})
    with pytest.raises(ValueError, match=rf"^{name}: expected .*, got '--no-streaming'$"):
        BenchOptions(model_path=tmp_path / "m.tflite", speech_commands=tmp_path, streaming=False, **{name: value})
    assert getattr(BenchOptions(model_path=tmp_path / "m.tflite", speech_commands=tmp_path, **{name: value}),
                   name) == value


def test_a_references_folder_that_is_a_file_is_refused_when_built(tmp_path):
    """Not after the run and the references' training, as '[Errno 17] File exists'; nor read as 'no references'."""
    file = tmp_path / "refs"
    file.write_text("keep")
    for folder, inside in ((file, ""), (file / "sub", f", inside {file}")):
        with pytest.raises(ValueError, match=rf"^references_dir: expected a folder, got {folder}{inside}, which is a "
                                             "file$"):
            BenchOptions(model_path=tmp_path / "m.tflite", scenes=tmp_path, references_dir=folder)
    assert file.read_text() == "keep"


def test_a_reference_config_is_an_existing_file_of_something_it_trains(tmp_path):
    config = tmp_path / "refs.yaml"
    with pytest.raises(ValueError, match=r"^reference_config: expected an existing train YAML file, got '.*'$"):
        BenchOptions(model_path=tmp_path / "m.tflite", scenes=tmp_path, reference_config=config, train_references=True)
    config.write_text("name: refs\n")
    with pytest.raises(ValueError, match=r"^reference_config: expected --train-references or --teachers .*, "
                                         r"got 'neither'$"):
        BenchOptions(model_path=tmp_path / "m.tflite", scenes=tmp_path, reference_config=config)
    for flag in ("train_references", "teachers"):
        assert BenchOptions(model_path=tmp_path / "m.tflite", scenes=tmp_path, reference_config=config,
                            **{flag: True}).reference_config == config


def test_the_fusion_study_without_photos_is_refused_when_built(tmp_path):
    """It trains on --scenes (paired with sounds) or --av: without either, the whole benchmark ran first (latency,
    commands, streams) and then stopped on "scenes_root: expected a scene image folder (or av_root), got None"."""
    with pytest.raises(ValueError, match=r"^fusion_study: expected --scenes or --av too .*, got 'neither'$"):
        BenchOptions(model_path=tmp_path / "m.tflite", fusion_study=True)
    with pytest.raises(ValueError, match=r"^fusion_study: expected --scenes or --av too"):
        BenchOptions(model_path=tmp_path / "m.tflite", speech_commands=tmp_path, fusion_study=True)
    for name in ("scenes", "av"):
        assert BenchOptions(model_path=tmp_path / "m.tflite", fusion_study=True, **{name: tmp_path}).fusion_study


def test_the_fusion_study_without_photos_is_one_line_naming_the_flag_before_anything_runs(tmp_path, capsys):
    from edgesense.app import cli

    out = tmp_path / "out"
    model = Path(__file__).resolve().parents[2] / "models" / "edgesense.tflite"
    assert cli.main(["bench", "--model", str(model), "--fusion-study", "--out", str(out)]) == 2
    assert capsys.readouterr().err == ("edgesense: error: --fusion-study: expected --scenes or --av too (the photos "
                                       "it pairs with sounds and trains on), got 'neither'\n")
    assert not out.exists()  # not the latency figure of a benchmark that ran first


@pytest.mark.parametrize(("field", "value"), [("quick", "false"), ("streaming", None), ("teachers", 1),
                                              ("salt", None), ("model_path", None), ("out_dir", 1), ("out_dir", ""),
                                              ("noise", None), ("noise", "noise.wav"), ("write_config", None),
                                              ("scenes", 1), ("references_dir", None)])
def test_an_option_of_the_wrong_kind_is_refused_naming_it(tmp_path, field, value):
    """Built in Python, not by the CLI: quick="false" turned the quick run on, noise=None and scenes=1 were
    TypeErrors, noise="noise.wav" was a list of its letters, model_path=None failed when the model was read."""
    with pytest.raises(ValueError, match=rf"^{field}(\[0\])?: expected "):
        BenchOptions(**{"model_path": tmp_path / "m.tflite", "speech_commands": tmp_path, field: value})


def test_paths_given_as_strings_are_stored_as_paths(tmp_path):
    options = BenchOptions(model_path=str(tmp_path / "m.tflite"), speech_commands=str(tmp_path), out_dir="out",
                           noise=[str(tmp_path)])
    assert options.model_path == tmp_path / "m.tflite" and options.speech_commands == tmp_path
    assert options.out_dir == Path("out") and options.noise == (tmp_path,)
