import hashlib

import numpy as np

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
