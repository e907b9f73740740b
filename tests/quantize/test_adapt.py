"""edgesense adapt: the fusion head learns places; the encoders and the command head stay as they were."""

import dataclasses
import json
import re

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from cli_run import ERROR_PREFIX, edgesense, error_line, only_line  # noqa: E402
from datagen import make_av_folder, make_scene_sounds, recorded_session, write_recorded_pairs  # noqa: E402

from edgesense.app.inspect import model_metrics  # noqa: E402
from edgesense.frontend.audio import log_mel_batch  # noqa: E402
from edgesense.frontend.wav import read_wav  # noqa: E402
from edgesense.quantize.adapt import (  # noqa: E402
    AdaptOptions,
    Embeddings,
    adapt_model,
    fuse_layers,
    sound_reliability,
    speech_embeddings,
)
from edgesense.quantize.convert import merge_tflite_parts, split_tflite_parts  # noqa: E402
from edgesense.runtime.interpreter import make_interpreter  # noqa: E402
from edgesense.runtime.model import EdgeModel  # noqa: E402
from edgesense.shipped import MODELS, SAMPLES, shipped_path  # noqa: E402

BUNDLED = shipped_path(MODELS, "edgesense.tflite")
FAST = AdaptOptions(epochs=2, rows_per_epoch=2000, image_variants=1, sounds_per_class=40)


def _fuse_weights(part: bytes, name: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The Keras layer ``name`` of the fusion head (kernel of ``shape``, bias) as a converted ``fuse`` holds it."""
    from edgesense.quantize.adapt import _keras_roles, _the_one

    layer = _the_one(fuse_layers(part), _keras_roles(vision_gate=False)[name], shape)
    assert layer is not None, (name, shape)
    return layer.kernel, layer.bias


def _speech_windows(model):
    samples = read_wav(shipped_path(SAMPLES, "speech_commands.wav"), sample_rate_hz=16000)
    clip = model.audio_frontend.clip_samples
    return log_mel_batch(np.stack([samples[s:s + clip] for s in range(0, samples.size - clip, 4000)]),
                         model.audio_frontend)


def test_split_parts_merge_back_to_the_same_signatures():
    data = BUNDLED.read_bytes()
    parts = split_tflite_parts(data)
    assert sorted(parts) == ["encode_audio", "encode_image", "fuse"]
    whole, merged = make_interpreter(data), make_interpreter(merge_tflite_parts(parts, {}))
    rng = np.random.default_rng(0)
    for key in parts:
        a, b = whole.get_signature_runner(key), merged.get_signature_runner(key)
        feeds = {name: rng.integers(-128, 128, d["shape"], dtype=np.int8) if d["dtype"] == np.int8 else
                 rng.random(d["shape"]).astype(d["dtype"]) for name, d in a.get_input_details().items()}
        want, got = a(**feeds), b(**feeds)
        assert all(np.array_equal(want[k], got[k]) for k in want), key


def test_the_fuse_layers_reproduce_the_deployed_command_head():
    model = EdgeModel.load(BUNDLED)
    kernel, bias = _fuse_weights(split_tflite_parts(BUNDLED.read_bytes())["fuse"], "command",
                                 (model.audio_embedding_dim, len(model.command_labels)))
    for features in _speech_windows(model)[:10]:
        embedding = model.encode_audio(features)
        logits = embedding @ kernel + bias
        mine = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        deployed, _ = model.fuse(embedding, None)
        assert np.argmax(mine) == np.argmax(deployed)
        assert np.abs(mine - deployed).max() < 0.03  # int8 arithmetic against float


def test_reliability_is_measured_on_recordings_left_out():
    rng = np.random.default_rng(0)
    # Two classes, two recordings each; within a class each recording sounds different, so sound
    # identifies the recording but not, across recordings, the class.
    centres = rng.normal(size=(2, 2, 8)) * 5
    sounds = tuple(np.concatenate([centres[k, r] + rng.normal(size=(50, 8)) for r in range(2)]) for k in range(2))
    recordings = tuple(np.repeat([0, 1], 50) for _ in range(2))
    chance_like = sound_reliability(Embeddings(images=(np.zeros((1, 4)),) * 2, sounds=sounds, recordings=recordings))
    shared = rng.normal(size=(2, 8)) * 5  # now every recording of a class sounds alike
    sounds = tuple(shared[k] + rng.normal(size=(100, 8)) for k in range(2))
    reliable = sound_reliability(Embeddings(images=(np.zeros((1, 4)),) * 2, sounds=sounds, recordings=recordings))
    assert reliable > 0.95 and chance_like < 0.8
    single = (np.zeros(10, int), np.zeros(10, int))
    assert sound_reliability(Embeddings(images=(np.zeros((1, 4)),) * 2, sounds=sounds, recordings=single)) is None


@pytest.mark.slow
def test_adapt_learns_a_new_place_and_keeps_encoders_and_commands(tmp_path):
    mine = make_av_folder(tmp_path / "mine", {"kitchen": (30, 60, 200), "forest": (40, 140, 30)}, per_class=12)
    ambience = make_scene_sounds(tmp_path / "ambience", labels=("kitchen", "forest"), per_class=3)
    out = tmp_path / "adapted.tflite"
    metadata = adapt_model(BUNDLED, out, av=mine, scene_ambient=ambience, options=FAST, name="mine")
    old, new = EdgeModel.load(BUNDLED), EdgeModel.load(out)
    assert new.scene_labels == tuple(sorted(set(old.scene_labels) | {"kitchen"}))
    assert metadata["adapted"]["from"]["model_version"] == old.metadata["model_version"]
    # Its own version names its parts, however many adaptations the file it came from went through.
    assert re.fullmatch(r"\d{8}-adapted-[0-9a-f]{12}", metadata["model_version"]), metadata["model_version"]
    assert new.metadata["model_version"] == metadata["model_version"]
    assert metadata["adapted"]["scene_ambient"]["evaluation"]  # held out, and named
    # The stock places given neither photos nor sounds keep their labels, said to be untrained.
    assert metadata["adapted"]["untrained_labels"] == sorted(set(old.scene_labels) - {"forest"})
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 255, old.image_frontend.input_shape).astype(np.float32)
    assert np.array_equal(old.encode_image(image), new.encode_image(image))
    agree = []
    for features in _speech_windows(old):
        a_old, a_new = old.encode_audio(features), new.encode_audio(features)
        assert np.array_equal(a_old, a_new)
        c_old, c_new = old.fuse(a_old, None)[0], new.fuse(a_new, None)[0]
        agree.append(np.argmax(c_old) == np.argmax(c_new))
        assert np.abs(c_old - c_new).max() < 0.05
    assert np.mean(agree) >= 0.95
    # What moved is measured on the written file and recorded in it.
    audio = speech_embeddings(old)
    differ = sum(not np.array_equal(old.fuse(e, None)[0], new.fuse(e, None)[0]) for e in audio)
    recorded = new.metadata["adapted"]["metrics"]
    assert (recorded["speech_windows"], recorded["command_windows_changed"]) == (len(audio), differ)
    # Its figures are its own; those --model claimed (another scene head's) stay with --model's name.
    assert new.metadata["metrics"] == recorded and "validation_image_only_accuracy" in recorded
    assert metadata["adapted"]["from"]["metrics"] == model_metrics(old.metadata)[0]
    inspected = edgesense("inspect", out)
    assert inspected.returncode == 0, inspected.stderr
    lines = inspected.stdout.splitlines()
    assert f"  metrics: {json.dumps(recorded, sort_keys=True)}" in lines
    assert f"  metrics before adapting: {json.dumps(model_metrics(old.metadata)[0], sort_keys=True)}" in lines
    # A seventh scene class: the fusion head's scene output reads one more row of weights (and a bias).
    params, macs = (new.metadata[key]["fusion_head"] - old.metadata[key]["fusion_head"] for key in ("params", "macs"))
    assert macs > 0 and params == macs + 1
    for key in ("params", "macs"):
        assert new.metadata[key]["total"] == sum(v for k, v in new.metadata[key].items() if k != "total")
    # The new place is learned: its own photos (seen in training) come out as kitchen.
    kitchen = sorted((mine / "kitchen").glob("*.jpg"))[0]
    import cv2

    from edgesense.frontend.image import preprocess_frame

    frame = preprocess_frame(cv2.imread(str(kitchen)), new.image_frontend)
    _, scene = new.fuse(None, new.encode_image(frame))
    assert new.scene_labels[int(np.argmax(scene))] == "kitchen"
    assert speech_embeddings(new).shape[1] == new.audio_embedding_dim


def test_a_grafted_image_encoder_keeps_the_commands_bit_for_bit(tmp_path, tiny_builders):
    from edgesense.frontend.image import ImageFrontendOptions
    from edgesense.quantize.convert import QuantizeOptions, convert_run
    from edgesense.runtime.quant import dequantize, quantize

    ambience = make_scene_sounds(tmp_path / "ambience", labels=("forest", "street"), per_class=3)
    mine = make_av_folder(tmp_path / "mine", {"forest": (40, 140, 30), "street": (120, 120, 120)}, per_class=12)
    # A donor that sees smaller photos: its image frontend comes along with its encoder.
    donor_path = tmp_path / "donor.tflite"
    convert_run(tiny_builders.write_tiny_run(tmp_path / "donor", image_options=ImageFrontendOptions(
        width_px=64, height_px=64)), donor_path, QuantizeOptions(mode="int8", calibration_samples=64))
    # The bundled fuse predates the flags' own scales; adapted once, its command path is settled.
    base, out = tmp_path / "base.tflite", tmp_path / "grafted.tflite"
    adapt_model(BUNDLED, base, av=mine, scene_ambient=ambience, options=FAST)
    metadata = adapt_model(base, out, av=mine, scene_ambient=ambience, options=FAST, image_encoder=donor_path)
    old, donor, new = EdgeModel.load(base), EdgeModel.load(donor_path), EdgeModel.load(out)
    assert metadata["adapted"]["image_encoder"]["file"] == donor_path.name
    assert new.image_frontend == donor.image_frontend != old.image_frontend
    for counts in ("params", "macs"):  # the donor's image encoder, in the parts and in the total
        assert new.metadata[counts]["image_encoder"] == donor.metadata[counts]["image_encoder"]
        assert new.metadata[counts]["audio_encoder"] == old.metadata[counts]["audio_encoder"]
        assert new.metadata[counts]["total"] == sum(v for k, v in new.metadata[counts].items() if k != "total")
    assert new.image_embedding_dim == donor.image_embedding_dim != old.image_embedding_dim
    assert new.metadata["embedding_dims"] == {"audio": old.audio_embedding_dim, "image": donor.image_embedding_dim}
    image = np.random.default_rng(2).uniform(0, 255, donor.image_frontend.input_shape).astype(np.float32)
    assert np.array_equal(new.encode_image(image), donor.encode_image(image))
    for name in ("audio_present", "image_present"):
        quant = new.signatures["fuse"].inputs[name].quant
        assert dequantize(quantize(np.array([0.0, 1.0], np.float32), quant), quant).tolist() == [0.0, 1.0]
    for features in _speech_windows(old):
        a_old, a_new = old.encode_audio(features), new.encode_audio(features)
        assert np.array_equal(a_old, a_new)
        assert np.array_equal(old.fuse(a_old, None)[0], new.fuse(a_new, None)[0])
    recorded = new.metadata["adapted"]["metrics"]
    assert recorded["speech_windows"] > 0 and recorded["command_windows_changed"] == 0
    assert recorded["command_max_difference"] == 0.0


@pytest.mark.slow
def test_a_graft_says_whether_its_image_encoder_ever_learned_photos(tmp_path):
    from edgesense.quantize.adapt import FUSE_CALIBRATION_SAMPLES
    from edgesense.quantize.convert import write_merged

    ambience = make_scene_sounds(tmp_path / "ambience", labels=("forest", "street"), per_class=3)
    mine = make_av_folder(tmp_path / "mine", {"forest": (40, 140, 30), "street": (120, 120, 120)}, per_class=12)
    # The bundle as a speech-only recipe writes it: its image encoder a stand-in, the camera closed.
    speech_only = tmp_path / "speech_only.tflite"
    metadata = EdgeModel.load(BUNDLED).metadata
    quantization = {**metadata["quantization"], "stand_in_samples": {"encode_image": 32},
                    "calibration_samples": {**metadata["quantization"]["calibration_samples"], "encode_image": 0}}
    write_merged(split_tflite_parts(BUNDLED.read_bytes()), {**metadata, "quantization": quantization}, speech_only)
    assert EdgeModel.load(speech_only).untrained_encoders == {"encode_image"}
    # A trained image encoder grafted on: the camera opens.
    out = tmp_path / "grafted.tflite"
    adapt_model(speech_only, out, av=mine, scene_ambient=ambience, options=FAST, image_encoder=BUNDLED)
    new = EdgeModel.load(out)
    assert new.untrained_encoders == frozenset()
    assert new.metadata["quantization"]["calibration_samples"] == {
        **metadata["quantization"]["calibration_samples"], "fuse": FUSE_CALIBRATION_SAMPLES}
    # The stand-in grafted onto a trained model: the camera stays closed.
    adapt_model(BUNDLED, tmp_path / "blind.tflite", av=mine, scene_ambient=ambience, options=FAST,
                image_encoder=speech_only)
    assert EdgeModel.load(tmp_path / "blind.tflite").untrained_encoders == {"encode_image"}


def test_a_graft_starts_its_image_side_from_the_donors_head(tmp_path):
    from edgesense.quantize.adapt import GraftedModel, build_head

    ambience = make_scene_sounds(tmp_path / "ambience", labels=("forest", "street"), per_class=3)
    mine = make_av_folder(tmp_path / "mine", {"forest": (40, 140, 30), "street": (120, 120, 120)}, per_class=12)
    donor_path = tmp_path / "donor.tflite"  # the bundle adapted: its image projection has learned anew
    adapt_model(BUNDLED, donor_path, av=mine, scene_ambient=ambience, options=FAST)
    deployed, donor = EdgeModel.load(BUNDLED), EdgeModel.load(donor_path)
    deployed_fuse, donor_fuse = (split_tflite_parts(path.read_bytes())["fuse"] for path in (BUNDLED, donor_path))
    head = build_head(GraftedModel(deployed, donor), deployed.scene_labels, deployed_fuse, donor_fuse)
    projection = head.get_layer("fuse_image_proj").get_weights()[0]
    assert np.array_equal(projection, _fuse_weights(donor_fuse, "fuse_image_proj", projection.shape)[0])
    assert not np.array_equal(projection, _fuse_weights(deployed_fuse, "fuse_image_proj", projection.shape)[0])
    command = head.get_layer("command").get_weights()[0]
    assert np.array_equal(command, _fuse_weights(deployed_fuse, "command", command.shape)[0])


def test_adapt_model_without_photos_says_it_as_the_command_does(tmp_path):
    with pytest.raises(ValueError) as info:
        adapt_model(BUNDLED, tmp_path / "x.tflite")
    assert str(info.value) == "--scenes/--av: expected photos to learn from (one or both), got neither"


def test_cli_refuses_bad_input_in_one_line(tmp_path):
    import cv2

    out = tmp_path / "out.tflite"
    out.write_bytes(b"mine")
    line = only_line(edgesense("adapt", "--model", BUNDLED, "--out", out, "--av", tmp_path))
    assert line == f"{ERROR_PREFIX} --out {out}: exists; pass --force to replace it"  # as every other command says
    assert out.read_bytes() == b"mine"
    line = only_line(edgesense("adapt", "--model", BUNDLED, "--out", tmp_path / "x.tflite"))
    assert line == f"{ERROR_PREFIX} --scenes/--av: expected photos to learn from (one or both), got neither"
    # --out onto --model: refused as such, not "add --force" (which would not help)
    line = only_line(edgesense("adapt", "--model", BUNDLED, "--out", BUNDLED, "--av", tmp_path))
    assert line == f"{ERROR_PREFIX} --out: expected another file than --model, got {BUNDLED}"
    line = only_line(edgesense("adapt", "--model", BUNDLED, "--out", tmp_path, "--av", tmp_path, "--force"))
    assert line == f"{ERROR_PREFIX} --out: expected a .tflite file path, got {tmp_path} (a folder)"
    line = only_line(edgesense("adapt", "--model", BUNDLED, "--out", tmp_path / "x.tflite",
                               "--av", tmp_path / "nowhere"))
    assert line == f"{ERROR_PREFIX} --av: expected a folder, got {str(tmp_path / 'nowhere')!r} (does not exist)"
    line = only_line(edgesense("adapt", "--model", BUNDLED, "--out", tmp_path / "x.tflite", "--av", tmp_path,
                               "--image-encoder", tmp_path / "nowhere.tflite"))
    assert line == f"{ERROR_PREFIX} --image-encoder {tmp_path / 'nowhere.tflite'}: no such file"
    # Photos alone: said at once, before TensorFlow starts and the photos are embedded (minutes of --scenes).
    scenes = tmp_path / "scenes" / "kitchen"
    scenes.mkdir(parents=True)
    cv2.imwrite(str(scenes / "a.jpg"), np.full((32, 32, 3), 128, np.uint8))
    line = only_line(edgesense("adapt", "--model", BUNDLED, "--out", tmp_path / "x.tflite", "--scenes", scenes.parent))
    assert line == (f"{ERROR_PREFIX} --scene-ambient/--av: expected sounds of at least one scene class (one or both), "
                    "got none")
    for seed in (-1, 2**32):
        line = only_line(edgesense("adapt", "--model", BUNDLED, "--out", tmp_path / "x.tflite", "--av", tmp_path,
                                   "--seed", seed))
        assert line == f"{ERROR_PREFIX} --seed: expected an integer in [0, 2**32), got {seed}"
    for name in ("", "  "):  # it was taken as no --name: the model was called MODEL-adapted
        line = only_line(edgesense("adapt", "--model", BUNDLED, "--out", tmp_path / "x.tflite", "--av", tmp_path,
                                   "--name", name))
        assert line == f"{ERROR_PREFIX} --name: expected a non-empty string, got {name!r}"
    with pytest.raises(ValueError, match=r"^name: expected a non-empty string or None, got ''$"):
        adapt_model(BUNDLED, tmp_path / "x.tflite", av=tmp_path, name="")
    assert not (tmp_path / "x.tflite").exists()


def test_the_bundled_model_by_its_checkout_path_is_found_from_any_folder(tmp_path):
    # record's next step says `edgesense adapt --model models/edgesense.tflite --av DIR ...`, typed in the folder
    # the pairs were copied to: the shipped model is read there, as bench reads it, not "no such file".
    line = only_line(edgesense("adapt", "--model", "models/edgesense.tflite", "--out", "x.tflite", cwd=tmp_path))
    assert line == f"{ERROR_PREFIX} --scenes/--av: expected photos to learn from (one or both), got neither"
    line = only_line(edgesense("adapt", "--model", "models/edgesense.tflite", "--image-encoder",
                               "models/edgesense.tflite", "--out", "x.tflite", cwd=tmp_path))
    assert line == f"{ERROR_PREFIX} --scenes/--av: expected photos to learn from (one or both), got neither"
    line = only_line(edgesense("adapt", "--model", "models/nothing.tflite", "--out", "x.tflite", cwd=tmp_path))
    assert line == f"{ERROR_PREFIX} --model models/nothing.tflite: no such file"


@pytest.mark.parametrize("mode", ["float16", "dynamic"])
def test_a_model_that_is_not_full_integer_is_refused_in_one_line(tiny_run_dir, tmp_path, mode):
    from edgesense.quantize.convert import QuantizeOptions, convert_run

    floating = tmp_path / f"{mode}.tflite"
    convert_run(tiny_run_dir, floating, QuantizeOptions(mode=mode))
    expected = f"expected a full-integer int8 model (edgesense quantize --mode int8), got a {mode} model"
    out = tmp_path / "x.tflite"
    line = error_line(edgesense("adapt", "--model", floating, "--out", out, "--av", tmp_path))
    assert line.startswith(f"{ERROR_PREFIX} --model {floating}: {expected}"), line
    line = error_line(edgesense("adapt", "--model", BUNDLED, "--out", out, "--av", tmp_path,
                               "--image-encoder", floating))
    assert line.startswith(f"{ERROR_PREFIX} --image-encoder {floating}: {expected}"), line
    assert not out.exists()


# --------------------------------------------------------------------------- the user's places as record writes them


def _session(label: str, side: str, *, after: str = "") -> str:
    """A session name whose first block of pairs the bundled model's split puts on ``side``."""
    from edgesense.quantize.adapt import _split_percents

    return recorded_session(label, side, *_split_percents(EdgeModel.load(BUNDLED)), after=after)


@pytest.mark.parametrize("side", ["testing", "validation"])
def test_a_short_place_outside_the_training_blocks_still_learns_and_says_it_has_no_validation(tmp_path, side, caplog):
    from edgesense.quantize.adapt import gather

    # 20 pairs (4 s) are one block of a session: the split puts it whole on one side.
    mine = write_recorded_pairs(tmp_path / "mine", _session("hall", side), 20, (200, 180, 40), tone_hz=700)
    write_recorded_pairs(mine, _session("kitchen", "training"), 30, (30, 60, 200), tone_hz=300)
    write_recorded_pairs(mine, _session("kitchen", "validation"), 10, (30, 60, 200), tone_hz=300, seed=1)
    with caplog.at_level("WARNING"):
        labels, summary, emb, (val_images, val_labels) = gather(EdgeModel.load(BUNDLED), scenes=None,
                                                                scene_ambient=None, av=mine, options=FAST)
    hall = labels.index("hall")
    assert len(emb.images[hall]) == 20 and len(emb.sounds[hall]) > 0  # all of its pairs train
    assert summary["validation_photos_per_class"] == {"hall": 0, "kitchen": 10}
    assert hall not in val_labels and len(val_labels) == 10
    assert "no validation photos of hall" in caplog.text
    if side == "validation":
        assert "--av hall: all 20 of its pairs fell in held-out blocks" in caplog.text
    # The stock places, without --scenes or --scene-ambient, learn nothing: said, and recorded.
    untrained = sorted(set(EdgeModel.load(BUNDLED).scene_labels))
    assert summary["untrained_labels"] == untrained
    assert "no photos or sounds of " + ", ".join(untrained) in caplog.text


def test_the_pairs_kept_for_testing_train_and_validation_blocks_stay_out(tmp_path):
    from edgesense.quantize.adapt import gather

    # Three blocks of one session: the split sends one of them to testing, which adapting never reads.
    session = _session("kitchen", "testing")
    mine = write_recorded_pairs(tmp_path / "mine", session, 50, (30, 60, 200), tone_hz=300)
    mine = write_recorded_pairs(mine, _session("kitchen", "validation", after=session), 50, (30, 60, 200), tone_hz=300)
    write_recorded_pairs(mine, _session("hall", "training"), 50, (200, 180, 40), tone_hz=700)
    labels, summary, emb, (_, val_labels) = gather(EdgeModel.load(BUNDLED), scenes=None, scene_ambient=None,
                                                   av=mine, options=FAST)
    assert len(emb.images[labels.index("kitchen")]) == 50  # the testing block
    assert summary["validation_photos_per_class"] == {"hall": 0, "kitchen": 50}
    assert np.sum(val_labels == labels.index("kitchen")) == 50


def test_a_recorded_session_is_one_recording_when_sound_reliability_leaves_recordings_out(tmp_path, caplog):
    from edgesense.quantize.adapt import gather

    mine = tmp_path / "mine"
    for label, tone, colour in (("kitchen", 300, (30, 60, 200)), ("hall", 700, (200, 180, 40))):
        first = _session(label, "training")  # two sessions of each place
        write_recorded_pairs(mine, first, 12, colour, tone_hz=tone)
        write_recorded_pairs(mine, _session(label, "training", after=first), 12, colour, tone_hz=tone, seed=1)
    with caplog.at_level("WARNING"):
        labels, _, emb, _ = gather(EdgeModel.load(BUNDLED), scenes=None, scene_ambient=None, av=mine, options=FAST)
    for label in ("kitchen", "hall"):
        assert sorted(np.unique(emb.recordings[labels.index(label)])) == [0, 1]
    assert "no validation photos: adapt gives no validation figure" in caplog.text


def test_one_session_per_place_says_sound_is_trusted_fully(tmp_path, caplog):
    # How well sound names an unheard recording's place needs two recordings of a place; without them
    # every row's sound is its own place's, and the user is told so, with the way to say otherwise.
    mine = tmp_path / "mine"
    for label, tone, colour in (("kitchen", 300, (30, 60, 200)), ("hall", 700, (200, 180, 40))):
        write_recorded_pairs(mine, _session(label, "training"), 12, colour, tone_hz=tone)
    with caplog.at_level("WARNING"):
        metadata = adapt_model(BUNDLED, tmp_path / "a.tflite", av=mine, options=FAST)
    assert metadata["metrics"]["sound_reliability"] is None and metadata["metrics"]["sound_mismatch"] == 0
    assert "sound is trusted fully" in caplog.text and "--sound-mismatch" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        adapt_model(BUNDLED, tmp_path / "b.tflite", av=mine, options=dataclasses.replace(FAST, sound_mismatch=0.3))
    assert "sound is trusted fully" not in caplog.text  # the user said how far to trust it


def test_a_place_recorded_with_the_microphone_muted_is_said_not_silently_left_without_sound(tmp_path, caplog):
    """Pairs whose WAVs are digital silence (every sample 0) have no sound to learn: they were left out without a
    word, and a place recorded muted learned from its photos alone; with every WAV silent the error said "got none"
    of the 24 sound files given. Both now say how many were silent and name one."""
    from edgesense.frontend.wav import write_wav
    from edgesense.quantize.adapt import gather

    mine = write_recorded_pairs(tmp_path / "mine", _session("kitchen", "training"), 12, (30, 60, 200), tone_hz=300)
    write_recorded_pairs(mine, _session("hall", "training"), 12, (200, 180, 40), tone_hz=700)
    muted = sorted((mine / "hall").glob("*.wav"))
    for path in muted:
        write_wav(path, np.zeros(16000, np.float32), 16000)
    with caplog.at_level("WARNING"):
        labels, summary, emb, _ = gather(EdgeModel.load(BUNDLED), scenes=None, scene_ambient=None, av=mine,
                                         options=FAST)
    assert len(emb.sounds[labels.index("hall")]) == 0 and len(emb.images[labels.index("hall")]) == 12
    assert summary["sound_seconds"]["kitchen"] == 12.0
    assert f"12 sound files are digital silence (every sample 0: a muted or unplugged microphone?), e.g. {muted[0]}" \
        in caplog.text
    assert "hall learns from photos alone (no sound of its own)" in caplog.text
    for path in (mine / "kitchen").glob("*.wav"):
        write_wav(path, np.zeros(16000, np.float32), 16000)
    with pytest.raises(ValueError, match=r"got none \(the 24 given are digital silence, every sample 0: a muted or "
                                         r"unplugged microphone\?; e\.g\. .*hall-"):
        gather(EdgeModel.load(BUNDLED), scenes=None, scene_ambient=None, av=mine, options=FAST)


def test_reliability_needs_two_places_with_sounds():
    rng = np.random.default_rng(0)
    sounds = (rng.normal(size=(100, 8)), np.zeros((0, 8)))  # only the first place is heard
    emb = Embeddings(images=(np.zeros((1, 4)),) * 2, sounds=sounds, recordings=(np.repeat([0, 1], 50), np.zeros(0)))
    assert sound_reliability(emb) is None


def test_a_place_named_like_a_stock_scene_but_for_case_is_refused_in_one_line(tmp_path):
    mine = write_recorded_pairs(tmp_path / "mine", "Sea-20260102-090000", 2, (180, 120, 20), tone_hz=400)
    out = tmp_path / "x.tflite"
    line = error_line(edgesense("adapt", "--model", BUNDLED, "--out", out, "--av", mine))
    assert line == (f"{ERROR_PREFIX} --av {mine}: expected class folders that differ from the other scene classes by "
                    "more than case or Unicode form, got 'Sea' beside 'sea' (name it 'sea' to teach that class)")
    assert not out.exists()


# --------------------------------------------------------------------------- heads whose layers share a shape


def _quantized_fusion_model(run_dir, tmp_path, options):
    """``run_dir`` (a tiny run folder, writable) with a fusion model of the project's architecture
    built with ``options`` (untrained: its command outputs are what they are, and must stay), int8."""
    from edgesense.quantize.convert import QuantizeOptions, convert_run
    from edgesense.train.model import build_fusion_model

    info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    build_fusion_model(num_commands=len(info["labels"]["command"]), num_scenes=len(info["labels"]["scene"]),
                       options=options).save(run_dir / "model.keras")
    (run_dir / "run.json").write_text(json.dumps({**info, "fusion_strategy": options.fusion}), encoding="utf-8")
    out = tmp_path / "model.tflite"
    convert_run(run_dir, out, QuantizeOptions(mode="int8", calibration_samples=32))
    return out


def test_a_head_whose_layers_share_a_shape_keeps_its_command_path_and_vision_gate(run_dir_copy, tmp_path):
    from edgesense.train.config import ModelOptions

    # Audio and image embeddings of one width, a fused embedding as wide as the 12 commands, and a
    # command head gated by sight: the command head and both projections are (8, 12) and the gate
    # (8, 8). Each is found by what it reads and feeds; the gate stays, frozen with the command head.
    options = ModelOptions(audio_channels=8, audio_blocks=1, image_channels=(8, 8), image_strides=(2, 2),
                           embedding_dim=12, command_vision_gate=True)
    deployed = _quantized_fusion_model(run_dir_copy, tmp_path, options)
    mine = make_av_folder(tmp_path / "mine", {"kitchen": (30, 60, 200), "forest": (40, 140, 30)}, per_class=12)
    once, twice = tmp_path / "once.tflite", tmp_path / "twice.tflite"
    adapt_model(deployed, once, av=mine, options=FAST)
    adapt_model(once, twice, av=mine, options=FAST)
    models = [EdgeModel.load(path) for path in (deployed, once, twice)]
    assert models[1].scene_labels == ("forest", "indoor", "kitchen", "outdoor", "vehicle")
    audio = speech_embeddings(models[0])
    image = models[0].encode_image(np.random.default_rng(3).uniform(0, 255, models[0].image_frontend.input_shape)
                                   .astype(np.float32))
    for camera in (None, image):  # the gate reads the camera: its command outputs are kept with it too
        old, first, again = (np.stack([m.fuse(a, camera)[0] for a in audio]) for m in models)
        assert np.abs(first - old).max() <= 1 / 256  # re-quantized with the new fuse: one step at most
        assert np.array_equal(again, first)  # and then bit for bit
    assert models[2].metadata["metrics"]["command_windows_changed"] == 0


def test_a_vision_gated_command_head_refuses_another_image_encoder_in_one_line(run_dir_copy, tmp_path):
    from edgesense.train.config import ModelOptions

    options = ModelOptions(audio_channels=8, audio_blocks=1, image_channels=(8, 16), image_strides=(2, 2),
                           embedding_dim=10, command_vision_gate=True)
    deployed = _quantized_fusion_model(run_dir_copy, tmp_path, options)
    mine = make_av_folder(tmp_path / "mine", {"kitchen": (30, 60, 200), "forest": (40, 140, 30)}, per_class=4)
    out = tmp_path / "x.tflite"
    with pytest.raises(ValueError) as info:
        adapt_model(deployed, out, av=mine, options=FAST, image_encoder=BUNDLED)
    assert str(info.value) == ("--image-encoder: expected a --model whose command head does not read the camera, got "
                               "one with a vision gate on it (model.command_vision_gate): another image encoder would "
                               "change its commands")
    assert not out.exists()


def test_a_place_sound_that_holds_no_sound_is_not_raised_to_a_level(tmp_path, monkeypatch):
    """A place recording whose snippets are a silent stretch (16-bit dither, +-1 step, as most of the shared sea
    loop) was raised 50-90 dB to the drawn level: the place learned hiss and clicks. Such a snippet stays as
    recorded; a snippet with sound is still set to its level."""
    from edgesense.frontend.wav import write_wav
    from edgesense.quantize import adapt as adapt_mod

    rng = np.random.default_rng(0)
    ambience = tmp_path / "ambience"
    for label in ("forest", "street"):
        (ambience / label).mkdir(parents=True)
        for i in range(2):
            if label == "forest":
                sound = rng.choice(np.array([-1, 0, 1], np.float32), size=32000) / 32768.0  # dither only
            else:
                sound = (0.1 * np.sin(np.arange(32000) * 2 * np.pi * (300 + 100 * i) / 16000)).astype(np.float32)
            write_wav(ambience / label / f"{label}{i}.wav", sound, 16000)
    encoded: list[np.ndarray] = []
    real_encode = adapt_mod._encode_audio
    monkeypatch.setattr(adapt_mod, "_encode_audio", lambda model, clips: (encoded.append(clips),
                                                                          real_encode(model, clips))[1])
    labels, _, emb, _ = adapt_mod.gather(EdgeModel.load(BUNDLED), scenes=None, scene_ambient=ambience, av=None,
                                         options=FAST)
    peaks = [float(np.abs(clips).max()) for clips in encoded]
    assert len(emb.sounds[labels.index("forest")]) > 0 and len(emb.sounds[labels.index("street")]) > 0
    assert min(peaks) <= 1.5 / 32768  # forest's training recording: as recorded (raised, it peaked past 0.005)
    assert max(peaks) > 0.01  # street's, set to a level of -45 dBFS or louder
