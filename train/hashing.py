"""The stable hash every split draws from: speakers (:func:`edgesense.train.data.which_set`),
photos, and recordings into pools (:func:`edgesense.train.pools.split_recordings`).

It is the Speech Commands rule, so a split is the same on every machine and, unsalted,
reproduces the official Speech Commands split.
"""

from __future__ import annotations

import hashlib

__all__ = ["MAX_NUM_WAVS_PER_CLASS", "hash_percent"]

#: From TensorFlow's speech_commands example: the hash modulus of ``which_set``.
MAX_NUM_WAVS_PER_CLASS = 2 ** 27 - 1
_PERCENT = 100.0


def hash_percent(key: str, salt: str = "") -> float:
    """A stable pseudo-random percentage in [0, 100] for ``key`` (the Speech Commands rule:
    sha1 of ``salt + key`` modulo ``MAX_NUM_WAVS_PER_CLASS + 1``, scaled to percent)."""
    digest = int(hashlib.sha1((salt + key).encode("utf-8")).hexdigest(), 16)
    return (digest % (MAX_NUM_WAVS_PER_CLASS + 1)) * (_PERCENT / MAX_NUM_WAVS_PER_CLASS)
