"""``edgesense inspect``: what it prints for the bundled model, and one line (exit 2) for a TFLite file that
EdgeSense did not write (a float or an int8 model converted with tf.lite from a Keras model)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_run import edgesense, error_line

from edgesense.app.cli import main
from edgesense.runtime.model import EdgeModel

ROOT = Path(__file__).resolve().parents[3]
BUNDLED = ROOT / "models" / "edgesense.tflite"


def test_the_bundled_model_shows_its_labels_frontends_and_every_signatures_tensors(capsys):
    assert main(["inspect", str(BUNDLED)]) == 0
    out = capsys.readouterr().out
    model = EdgeModel.load(BUNDLED)
    assert out.startswith(f"model: {BUNDLED}\n") and f"  size: {BUNDLED.stat().st_size} bytes" in out
    assert f"command labels ({len(model.command_labels)}): {', '.join(model.command_labels)}" in out
    assert f"scene labels ({len(model.scene_labels)}): {', '.join(model.scene_labels)}" in out
    assert "untrained:" not in out
    for key, sig in model.signatures.items():
        assert f"  {key} (subgraph {sig.subgraph_index}," in out
        for info in (*sig.inputs.values(), *sig.outputs.values()):
            assert f" {info.name} " in out
    assert main(["inspect", "--json", str(BUNDLED)]) == 0
    assert json.loads(capsys.readouterr().out) == model.metadata


def test_an_adapted_model_shows_its_own_figures_apart_from_those_of_the_model_it_came_from(capsys):
    # The bundled file is adapted, written when adapt kept --model's figures as its "metrics".
    meta = EdgeModel.load(BUNDLED).metadata
    assert meta["adapted"]["metrics"]["validation_image_only_accuracy"] > 0
    assert main(["inspect", str(BUNDLED)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"  metrics: {json.dumps(meta['adapted']['metrics'], sort_keys=True)}" in lines
    assert f"  metrics before adapting: {json.dumps(meta['metrics'], sort_keys=True)}" in lines
    source = meta["adapted"]["from"]
    assert f"  adapted from: {source['name']}  version: {source['model_version']}" in lines
    assert any(line.startswith("  data before adapting: ") for line in lines)
    # As adapt writes them now: its own figures are "metrics", --model's "adapted.from.metrics".
    from edgesense.app.inspect import model_metrics

    now = {**meta, "metrics": meta["adapted"]["metrics"],
           "adapted": {**meta["adapted"], "from": {**meta["adapted"]["from"], "metrics": meta["metrics"]}}}
    assert model_metrics(now) == model_metrics(meta) == (meta["adapted"]["metrics"], meta["metrics"])
    assert model_metrics({"metrics": {"scene_accuracy": 0.9}}) == ({"scene_accuracy": 0.9}, None)


@pytest.fixture(scope="module")
def foreign_models(tmp_path_factory) -> dict[str, Path]:
    tf = pytest.importorskip("tensorflow")
    folder = tmp_path_factory.mktemp("foreign")
    keras_model = tf.keras.Sequential([tf.keras.Input((8,)), tf.keras.layers.Dense(4)])
    paths = {"float": folder / "float.tflite", "int8": folder / "int8.tflite"}
    paths["float"].write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras_model).convert())

    def representative():
        for row in np.random.default_rng(0).random((8, 1, 8), dtype=np.float32):
            yield [row]

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    paths["int8"].write_bytes(converter.convert())
    return paths


@pytest.mark.parametrize("kind", ["float", "int8"])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_tflite_model_edgesense_did_not_write_is_one_line_naming_it(foreign_models, tmp_path, kind, as_json):
    path = foreign_models[kind]
    line = error_line(edgesense("inspect", *(["--json"] if as_json else []), path, cwd=tmp_path))
    assert f"{path}: no 'edgesense' metadata in the model" in line and "edgesense quantize" in line


def _with_metadata(folder: Path, name: str, edit) -> Path:
    """The bundled model with ``edit(metadata)`` applied to its embedded metadata JSON."""
    pytest.importorskip("tensorflow")
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(BUNDLED.read_bytes()))
    entry = next(m for m in obj.metadata if m.name == b"edgesense")
    meta = json.loads(bytes(obj.buffers[entry.buffer].data))
    edit(meta)
    obj.buffers[entry.buffer].data = np.frombuffer(json.dumps(meta).encode(), np.uint8).copy()
    path = folder / name
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(obj)))
    return path


@pytest.mark.parametrize("quantization, field, got", [
    ("int8", "quantization", "'int8'"),
    ({"mode": "int8", "stand_in_samples": 32}, "quantization.stand_in_samples", "32"),
    # a name read letter by letter would name no untrained encoder: run would open the camera
    ({"mode": "int8", "stand_in_samples": "encode_image"}, "quantization.stand_in_samples", "'encode_image'"),
], ids=["text", "number", "name"])
def test_a_quantization_section_of_the_wrong_type_is_one_line_naming_the_field(tmp_path, quantization, field, got):
    path = _with_metadata(tmp_path, "odd.tflite", lambda meta: meta.__setitem__("quantization", quantization))
    line = error_line(edgesense("inspect", path, cwd=tmp_path))
    assert f"{path}: metadata {field}: expected a mapping" in line and line.endswith(f"got {got}")


def test_a_null_quantization_section_is_shown_as_none(tmp_path, capsys):
    path = _with_metadata(tmp_path, "null.tflite", lambda meta: meta.__setitem__("quantization", None))
    assert main(["inspect", str(path)]) == 0
    assert "  quantization: None\n" in capsys.readouterr().out


@pytest.mark.parametrize("kind, names", [("command", lambda names: [names[0]] * len(names)),
                                         ("scene", lambda names: ["", *names[1:]])], ids=["repeated", "empty"])
def test_labels_that_repeat_or_are_empty_are_one_line_naming_the_list(tmp_path, kind, names):
    # The recognizers refuse them later, in a line that names neither the file nor the field.
    path = _with_metadata(tmp_path, "labels.tflite",
                          lambda meta: meta["labels"].__setitem__(kind, names(meta["labels"][kind])))
    line = error_line(edgesense("inspect", path, cwd=tmp_path))
    assert f"{path}: metadata labels.{kind}: expected distinct, non-empty names, got [" in line


def test_a_label_outside_ascii_is_shown_on_a_stdout_that_is_not_utf8(tmp_path):
    # A place of your own (record --label 北京, then adapt) under LANG=C without UTF-8 mode or a Latin-1 locale:
    # inspect stopped half-way with "'ascii' codec can't encode characters in position 71-72".
    path = _with_metadata(tmp_path, "place.tflite",
                          lambda meta: meta["labels"].__setitem__("scene", [*meta["labels"]["scene"][:-1], "北京"]))
    proc = edgesense("inspect", path, cwd=tmp_path, env={"PYTHONIOENCODING": "ascii", "PYTHONUTF8": "0"})
    assert proc.returncode == 0, proc.stderr
    assert "scene labels (6): " in proc.stdout and proc.stdout.splitlines()[-1].startswith("    out ")
    assert "\\u5317\\u4eac" in proc.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash's process substitution")
@pytest.mark.parametrize("model", [BUNDLED, ROOT / "models" / "stream_heads.tflite"], ids=["model", "heads"])
def test_a_model_from_a_pipe_is_inspected(model, tmp_path):
    # inspect <(cat model.tflite): the shell passes /dev/fd/63, a pipe that can be read once. It was
    # "model file /dev/fd/63 does not exist", and read twice (heads or model?) it would have been empty.
    command = f'"{sys.executable}" -m edgesense.app.cli inspect <(cat "{model}")'
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith(("model: /dev/fd/", "stream heads (second opinion): /dev/fd/")), proc.stdout
    assert f"  size: {model.stat().st_size} bytes" in proc.stdout


def _with_damaged_quantization(folder: Path, case: str) -> tuple[Path, str]:
    """The bundled model with one tensor's quantization damaged as one flipped bit can: (the file, the tensor's
    name). ``no_scale``: an int8 tensor of an arithmetic layer without scales (as if the vector's length went to
    0); ``requantization``: a convolution's weight scale in channel 0 raised to a requantization scale of 300;
    ``add_ratio``: an int8 ADD's output scale lowered to 2^20 times below its inputs'."""
    pytest.importorskip("tensorflow")
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(BUNDLED.read_bytes()))
    wanted = {"no_scale": ("SUB", "ADD", "MUL"), "requantization": ("CONV_2D",), "add_ratio": ("ADD",)}[case]
    # encode_image's: XNNPACK failing on one of encode_audio's convolutions said so
    graphs = [obj.subgraphs[s.subgraphIndex] for s in obj.signatureDefs if s.signatureKey == b"encode_image"]
    graph, op = next((g, op) for g in (graphs if case == "requantization" else obj.subgraphs) for op in g.operators
                     if flatbuffer_utils.opcode_to_name(obj, op.opcodeIndex) in wanted)
    if case == "no_scale":
        tensor = graph.tensors[op.inputs[0]]
        tensor.quantization.scale = np.zeros(0, np.float32)
        tensor.quantization.zeroPoint = np.zeros(0, np.int64)
    elif case == "add_ratio":
        tensor = graph.tensors[op.outputs[0]]
        tensor.quantization.scale[0] = max(graph.tensors[i].quantization.scale[0] for i in op.inputs) / 2 ** 20
    else:
        source, weights, tensor = (graph.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
        weights.quantization.scale[0] = 300 * tensor.quantization.scale[0] / source.quantization.scale[0]
    path = folder / f"{case}.tflite"
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(obj)))
    return path, tensor.name.decode()


@pytest.mark.parametrize("case, expected", [
    ("no_scale", "expected int8 quantization scales (finite, > 0), got none"),
    ("requantization", "expected requantization scales (input x weight / output scale) below 256"),
    ("add_ratio", "expected an input scale / output scale below 524288 (2^19), which the interpreter takes, "
                  "got 1.049e+06"),
])
def test_damaged_quantization_is_one_line_not_an_aborted_interpreter(tmp_path, case, expected):
    # One flipped bit there made the interpreter abort the process (exit -6, "double free or corruption" or no
    # message at all) while the model was prepared: no line, no file named.
    path, tensor = _with_damaged_quantization(tmp_path, case)
    line = error_line(edgesense("inspect", path, cwd=tmp_path))
    assert line.startswith(f"edgesense: error: {path}: subgraph '") and f"'{tensor}': {expected}" in line
    assert line.endswith("; the model is damaged")
