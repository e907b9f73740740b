"""The second opinion: a stream-heads file in the real interpreter, blended into the student's posteriors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_HEADS_CONTEXT, require_speech_embedding

from edgesense.runtime.second_opinion import SecondOpinion, SecondOpinionOptions, StreamHeads, is_stream_heads
from edgesense.runtime.speech_embedding import EMBEDDING_DIM, SpeechEmbeddingStream
from edgesense.types import DEFAULT_COMMAND_LABELS

SR = 16000


def test_heads_file_runs_the_mean_of_its_heads(tiny_heads_path):
    heads = StreamHeads(tiny_heads_path)
    assert heads.labels == tuple(DEFAULT_COMMAND_LABELS) and heads.context == TINY_HEADS_CONTEXT
    x = np.random.default_rng(0).normal(size=(TINY_HEADS_CONTEXT, EMBEDDING_DIM)).astype(np.float32)
    probs = heads(x)
    assert probs.shape == (len(DEFAULT_COMMAND_LABELS),)
    assert abs(float(probs.sum()) - 1.0) < 1e-4 and probs.min() >= 0.0
    assert not np.allclose(heads(x), heads(-x))  # the embeddings reach the output


def test_inspect_prints_a_heads_files_metadata(tiny_heads_path, tiny_model_path, capsys):
    from edgesense.app.cli import main

    assert is_stream_heads(tiny_heads_path) and not is_stream_heads(tiny_model_path)
    assert main(["inspect", str(tiny_heads_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"stream heads (second opinion): {tiny_heads_path}")
    assert f"heads: 2 on {TINY_HEADS_CONTEXT}" in out
    assert main(["inspect", "--json", str(tiny_heads_path)]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "stream_heads"


def test_the_student_model_is_not_a_heads_file(tiny_model_path):
    with pytest.raises(ValueError, match="a stream-heads file"):
        StreamHeads(tiny_model_path)


def test_blend_is_the_weighted_mean_once_the_context_exists(tiny_heads_path):
    require_speech_embedding()
    options = SecondOpinionOptions(heads_path=str(tiny_heads_path), student_weight=0.25)
    second = SecondOpinion(options, labels=DEFAULT_COMMAND_LABELS, sample_rate_hz=SR)
    student = np.full(len(DEFAULT_COMMAND_LABELS), 1.0 / len(DEFAULT_COMMAND_LABELS), np.float32)
    rng = np.random.default_rng(1)
    hop = SR // 10
    while not second.ready:
        assert second.probabilities() is None
        np.testing.assert_array_equal(second.blend(student), student)  # not ready: the student's own
        second.push((0.05 * rng.normal(size=hop)).astype(np.float32))
    assert second.stream.count == TINY_HEADS_CONTEXT
    # the heads see the newest context, as a stream of their own gives it
    alone = SpeechEmbeddingStream()
    second.reset()
    rng = np.random.default_rng(2)
    audio = (0.05 * rng.normal(size=SR * 2)).astype(np.float32)
    for i in range(0, audio.size, hop):
        second.push(audio[i:i + hop])
    embeddings = alone.push(audio)
    heads = StreamHeads(tiny_heads_path)(embeddings[-TINY_HEADS_CONTEXT:])
    np.testing.assert_allclose(second.probabilities(), heads, atol=1e-4)
    np.testing.assert_allclose(second.blend(student), 0.25 * student + 0.75 * heads, atol=1e-5)


def _with_metadata(path, out, **changes):
    """A copy of a heads file with fields of its metadata changed (through TF's flatbuffer object API)."""
    from tensorflow.lite.tools import flatbuffer_utils

    from edgesense.runtime.model import METADATA_NAME

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    for entry in obj.metadata:
        if entry.name.decode() == METADATA_NAME:
            meta = dict(json.loads(bytes(obj.buffers[entry.buffer].data)), **changes)
            obj.buffers[entry.buffer].data = np.frombuffer(json.dumps(meta).encode(), np.uint8).copy()
    out.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(obj)))
    return out


@pytest.mark.parametrize("field", ["format_version", "context_embeddings"])
def test_a_true_is_no_integer_in_a_heads_files_metadata(tiny_heads_path, tmp_path, field):
    pytest.importorskip("tensorflow")
    path = _with_metadata(tiny_heads_path, tmp_path / "h.tflite", **{field: True})
    with pytest.raises(ValueError, match=f"h.tflite: metadata {field}: expected .*, got True"):
        StreamHeads(path)


def test_blend_refuses_posteriors_of_another_shape(tiny_heads_path):
    require_speech_embedding()
    second = SecondOpinion(SecondOpinionOptions(heads_path=str(tiny_heads_path)), labels=DEFAULT_COMMAND_LABELS,
                           sample_rate_hz=SR)
    classes = len(DEFAULT_COMMAND_LABELS)
    for wrong in (np.zeros(1, np.float32), np.zeros((3, classes), np.float32)):
        with pytest.raises(ValueError, match=f"student: expected posteriors of shape \\({classes},\\)"):
            second.blend(wrong)


def test_a_missing_or_wrong_heads_file_names_the_config_field(tmp_path, tiny_model_path):
    for path, needle in ((tmp_path / "none.tflite", "does not exist"), (tiny_model_path, "got a model without one")):
        with pytest.raises(ValueError, match=f"^second_opinion.heads_path: .*{needle}"):
            SecondOpinion(SecondOpinionOptions(heads_path=str(path)), labels=DEFAULT_COMMAND_LABELS, sample_rate_hz=SR)


def test_labels_and_rate_must_match_the_student(tiny_heads_path):
    require_speech_embedding()
    options = SecondOpinionOptions(heads_path=str(tiny_heads_path))
    with pytest.raises(ValueError, match="labels: expected the model's"):
        SecondOpinion(options, labels=("yes", "no"), sample_rate_hz=SR)
    with pytest.raises(ValueError, match="16000 Hz"):
        SecondOpinion(options, labels=DEFAULT_COMMAND_LABELS, sample_rate_hz=8000)


@pytest.mark.parametrize("kwargs, field", [({"heads_path": ""}, "heads_path"),
                                           ({"student_weight": 1.0}, "student_weight"),
                                           ({"student_weight": -0.1}, "student_weight"),
                                           ({"num_threads": 0}, "num_threads"),
                                           ({"num_threads": 65}, "num_threads")])
def test_options_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SecondOpinionOptions(**kwargs)
    assert not SecondOpinionOptions().enabled


def test_too_many_threads_is_refused_naming_the_config_line(tmp_path, tiny_heads_path):
    """Not the interpreter's unplaced 'num_threads: ...' when the loop starts: the config's own line."""
    from edgesense.loop.config import load_config

    config = tmp_path / "device.yaml"
    config.write_text(f"device:\n  name: test\nsecond_opinion:\n  heads_path: {tiny_heads_path}\n"
                      "  num_threads: 100\n")
    with pytest.raises(ValueError, match=r"device.yaml:5: second_opinion.num_threads: expected an integer in "
                                         r"\[1, 64\], got 100"):
        load_config(config)


BUNDLED_HEADS = Path(__file__).resolve().parents[3] / "models" / "stream_heads.tflite"


def test_a_heads_file_whose_output_is_not_float32_is_refused_when_loaded(tmp_path):
    # Read as float, int8 outputs would pass for probabilities; this one fails only at its first call, unnamed.
    pytest.importorskip("tensorflow")
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(BUNDLED_HEADS.read_bytes()))
    graph = obj.subgraphs[0]
    output = graph.tensors[graph.outputs[0]]
    output.type = schema.TensorType.INT8
    output.quantization = schema.QuantizationParametersT()  # an int8 tensor without scales is a damaged file
    output.quantization.scale, output.quantization.zeroPoint = [1 / 256], [-128]
    path = tmp_path / "int8_out.tflite"
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(obj)))
    with pytest.raises(ValueError, match=r"int8_out.tflite: output: expected float32 \(1, 12\), got int8 \(1, 12\)$"):
        StreamHeads(path)


def test_a_heads_file_given_as_the_model_says_where_it_goes():
    from edgesense.runtime.model import EdgeModel

    with pytest.raises(ValueError, match=r"stream_heads.tflite: expected an EdgeSense model .*, got a file of "
                                         r"metadata kind 'stream_heads' \(stream heads go in a config's "
                                         r"second_opinion.heads_path\)"):
        EdgeModel.load(BUNDLED_HEADS)


def test_a_heads_file_with_a_tensor_name_that_is_not_utf8_is_one_line_naming_it(tmp_path):
    pytest.importorskip("tensorflow")
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(BUNDLED_HEADS.read_bytes()))
    graph = obj.subgraphs[0]
    graph.tensors[graph.inputs[0]].name = b"embeddings\xcf("  # one damaged byte
    path = tmp_path / "damaged.tflite"
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(obj)))
    with pytest.raises(ValueError) as raised:
        StreamHeads(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: a tensor name is not UTF-8 (") and message.endswith("); damaged?")


@pytest.mark.parametrize("hop_ms, block_ms", [(1.0, 10.0), (3.0, 12.0), (5.0, 10.0), (10.0, 10.0), (50.0, 50.0),
                                              (10_000.0, 10_000.0), (15_000.0, 7_500.0), (3_600_000.0, 10_000.0)])
def test_the_mel_block_of_any_hop_the_scheduler_allows_ends_on_a_hop(hop_ms, block_ms):
    from edgesense.runtime.second_opinion import mel_block_ms_for_hop
    from edgesense.runtime.speech_embedding import SpeechEmbeddingStreamOptions

    assert mel_block_ms_for_hop(hop_ms) == block_ms
    SpeechEmbeddingStreamOptions(mel_block_ms=block_ms)  # within the stream's bounds
    with pytest.raises(ValueError, match="hop_ms: expected a positive number"):
        mel_block_ms_for_hop(0.0)


def test_a_command_hop_below_a_mel_frame_runs_and_any_chunking_hears_the_same(tiny_heads_path):
    """scheduler.command_hop_ms: 5 (the scheduler takes 1 ms and up) with a second opinion refused to start with
    'mel_block_ms: expected None or a number of ms in [10, 10000], got 5.0', a field no config has. The device's
    20-ms chunks and the benchmark's 5-ms hops still give the same heads."""
    require_speech_embedding()
    options = SecondOpinionOptions(heads_path=str(tiny_heads_path))
    audio = (0.05 * np.random.default_rng(3).normal(size=SR * 2)).astype(np.float32)
    heard = []
    for chunk in (SR // 200, SR // 50):  # the bench's 5-ms hops, the device's 20-ms chunks
        second = SecondOpinion(options, labels=DEFAULT_COMMAND_LABELS, sample_rate_hz=SR, hop_ms=5.0)
        assert second.stream.options.mel_block_ms == 10.0
        for i in range(0, audio.size, chunk):
            second.push(audio[i:i + chunk])
        assert second.ready
        heard.append(second.probabilities())
    np.testing.assert_array_equal(heard[0], heard[1])
