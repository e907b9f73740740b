import hashlib
import os

import numpy as np
import pytest

from edgesense.train.cache import ArrayCache, content_key, default_cache_dir, file_sha256


def test_key_follows_content_options_and_seed_not_identity():
    clips = np.arange(12, dtype=np.float32).reshape(3, 4)
    key = content_key(clips, {"snr": [0, 20]}, 42)
    assert key == content_key(clips.copy(), {"snr": [0, 20]}, 42)  # same content, another array
    changed = clips.copy()
    changed[1, 2] += 1e-3
    assert content_key(changed, {"snr": [0, 20]}, 42) != key  # a changed sample
    assert content_key(clips, {"snr": [0, 10]}, 42) != key  # another augmentation option
    assert content_key(clips, {"snr": [0, 20]}, 43) != key  # another augmentation seed
    assert content_key(clips.astype(np.float64), {"snr": [0, 20]}, 42) != key  # another dtype
    assert content_key(clips.reshape(4, 3), {"snr": [0, 20]}, 42) != key  # another shape


def test_cache_computes_once_then_reads_and_recomputes_a_corrupt_entry(tmp_path):
    cache = ArrayCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(5, dtype=np.float16), "y": np.array([1, 2], np.int32)}

    first = cache.get_or_compute("bank", "k1", compute)
    second = ArrayCache(tmp_path).get_or_compute("bank", "k1", compute)
    assert len(calls) == 1
    np.testing.assert_array_equal(first["x"], second["x"])
    assert second["x"].dtype == np.float16 and second["y"].dtype == np.int32
    cache.path("bank", "k1").write_bytes(b"not an npz")
    cache.get_or_compute("bank", "k1", compute)
    assert len(calls) == 2
    whole = cache.path("bank", "k1").read_bytes()
    cache.path("bank", "k1").write_bytes(whole[:len(whole) // 2])  # cut short (a full disk, a killed run)
    cache.get_or_compute("bank", "k1", compute)
    assert len(calls) == 3
    assert not list(tmp_path.rglob("*.partial.npz"))


def test_default_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGESENSE_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("EDGESENSE_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "edgesense")


def test_file_sha256_reads_a_file_larger_than_one_chunk(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, size=(3 << 20) + 7, dtype=np.uint8).tobytes()
    path = tmp_path / "model.tflite"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert file_sha256(str(path)) == file_sha256(path)


def _entry():
    return {"x": np.arange(6, dtype=np.float32)}


def test_a_cache_that_cannot_be_written_is_a_warning_and_the_run_keeps_what_it_computed(tmp_path, caplog):
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    cache = ArrayCache(tmp_path / "cache")
    with caplog.at_level("WARNING", logger="edgesense.train.cache"):
        out = cache.get_or_compute("bank", "k1", _entry)  # minutes of work were not to be thrown away
    np.testing.assert_array_equal(out["x"], _entry()["x"])
    assert cache.misses == 1 and "not written" in caplog.text and "bank" in caplog.text


class _FailsWhenSaved:
    """An array member whose pickling fails after the members before it were written (as a disk that
    fills up half-way through an entry, or Ctrl-C while it is written)."""

    def __init__(self, error: BaseException):
        self.error = error

    def __reduce__(self):
        raise self.error


def test_an_entry_whose_writing_fails_half_way_leaves_no_file_behind(tmp_path):
    cache = ArrayCache(tmp_path)
    full = {"a": np.zeros(10_000), "b": np.array([_FailsWhenSaved(OSError(28, "No space left on device"))])}
    out = cache.get_or_compute("bank", "k1", lambda: full)
    assert out is full
    with pytest.raises(KeyboardInterrupt):
        cache.get_or_compute("bank", "k2", lambda: {"a": np.zeros(10), "b": np.array([_FailsWhenSaved(
            KeyboardInterrupt())])})
    assert list(tmp_path.rglob("*")) == [tmp_path / "bank"]  # no entry, no partial file


def test_a_writer_never_writes_into_another_writers_file(tmp_path):
    # Another training (in a container of its own, where its process has this one's id) is writing
    # the same entry into the folder both share.
    cache = ArrayCache(tmp_path)
    cache.path("bank", "k1").parent.mkdir(parents=True)
    theirs = cache.path("bank", "k1").with_name(f"k1.{os.getpid()}.partial.npz")
    theirs.write_bytes(b"their half-written entry")
    cache.get_or_compute("bank", "k1", _entry)
    assert theirs.read_bytes() == b"their half-written entry"
    np.testing.assert_array_equal(ArrayCache(tmp_path).get_or_compute("bank", "k1", list)["x"], _entry()["x"])


def test_replace_files_keeps_the_old_files_when_a_writer_fails_and_leaves_no_partial_file(tmp_path):
    from edgesense.train.cache import partial_path, replace_files

    model, sidecar = tmp_path / "m.tflite", tmp_path / "m.json"
    model.write_bytes(b"old model")
    sidecar.write_text("old sidecar")

    def fails(partial):
        partial.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        replace_files({model: lambda p: p.write_bytes(b"new model"), sidecar: fails})
    assert (model.read_bytes(), sidecar.read_text()) == (b"old model", "old sidecar")
    assert sorted(tmp_path.iterdir()) == [sidecar, model]
    replace_files({model: lambda p: p.write_bytes(b"new model"), sidecar: lambda p: p.write_text("new sidecar")})
    assert (model.read_bytes(), sidecar.read_text()) == (b"new model", "new sidecar")
    assert sorted(tmp_path.iterdir()) == [sidecar, model]
    assert not partial_path(model).name.endswith(".tflite")  # no *.tflite listing finds one a kill left
    assert partial_path(tmp_path / "h.keras", keep_suffix=True).suffix == ".keras"


#: Writes cache entry (or, with ``replace``, the files) ARGV[2] under ARGV[1] and is killed half-way (SIGKILL: the
#: OOM killer), or (``live``) stays half-way until its standard input closes.
_KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
import numpy as np
from edgesense.train.cache import ArrayCache, replace_files

def half_then(file, **arrays):
    file.write(b"PK half an entry")
    file.flush()
    print("half-way", flush=True)
    if sys.argv[3] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdin.read()

if sys.argv[2] == "replace":
    replace_files({Path(sys.argv[1]) / "m.npz": lambda partial: half_then(open(partial, "wb"))}, keep_suffix=True)
else:
    np.savez = half_then
    ArrayCache(sys.argv[1]).get_or_compute("bank", sys.argv[2], lambda: {"x": np.zeros(3)})
"""


def _local(path) -> bool:
    from edgesense.train.runfolder import may_sweep

    return may_sweep(path)


#: Leftovers are swept on a local file system only (a lock on NFS may be this host's alone).
_swept_here = pytest.mark.skipif(not _local(__import__("tempfile").gettempdir()),
                                 reason="the temporary folder is not on a local file system")


def _writer(root, what, how):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(root), what, how], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "half-way\n"
    if how == "kill":
        proc.wait(timeout=60)
    return proc


@_swept_here
def test_partial_files_of_killed_writers_are_removed_by_the_next_writer_of_the_entry(tmp_path):
    # Each run killed while it wrote an entry left KEY.npz.PID-RANDOM.partial.npz (as large as the entry) for good:
    # the cache only grew with them.
    cache = ArrayCache(tmp_path)
    for _ in range(2):
        _writer(tmp_path, "k1", "kill")
    _writer(tmp_path, "k2", "kill")  # another entry's: its next writer's to remove
    living = _writer(tmp_path, "k1", "live")
    try:
        cache.get_or_compute("bank", "k1", _entry)
        [left] = (tmp_path / "bank").glob("k1.npz.*.partial.npz")  # the living writer's
        assert left.read_bytes() == b"PK half an entry" and len(list((tmp_path / "bank").glob("k2.*"))) == 1
    finally:
        living.kill()
        living.wait(timeout=60)
    cache.get_or_compute("bank", "k2", _entry)
    assert sorted(p.name for p in (tmp_path / "bank").iterdir()) == ["k1.npz", left.name, "k2.npz"]


@_swept_here
def test_partial_files_of_killed_writers_are_removed_by_the_next_replace_files_of_the_path(tmp_path):
    from edgesense.train.cache import replace_files

    for _ in range(2):
        _writer(tmp_path, "replace", "kill")
    replace_files({tmp_path / "m.npz": lambda partial: partial.write_bytes(b"whole")}, keep_suffix=True)
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"] and (tmp_path / "m.npz").read_bytes() == b"whole"


def test_the_cache_writes_and_reads_where_there_is_no_flock(tmp_path):
    """``import fcntl`` at the top of the module: on Windows (no ``fcntl``) bench, mine, deploy and train failed with
    ModuleNotFoundError before anything ran. Without locks an entry is still written whole and read back."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['fcntl'] = None\n"
            "import numpy as np\n"
            "from edgesense.train.cache import ArrayCache\n"
            f"cache = ArrayCache({str(tmp_path)!r})\n"
            "got = cache.get_or_compute('bank', 'k1', lambda: {'x': np.arange(3)})\n"
            "again = ArrayCache(cache.root).get_or_compute('bank', 'k1', lambda: 1 / 0)\n"
            "assert list(again['x']) == [0, 1, 2], again\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.rglob("*.partial*"))
