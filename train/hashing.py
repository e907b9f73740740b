"""The stable hash every split draws from: speakers (:func:`edgesense.train.data.which_set`),
photos, and recordings into pools (:func:`edgesense.train.pools.split_recordings`).

It is the Speech Commands rule, so a split is the same on every machine and, unsalted,
reproduces the official Speech Commands split. Names are hashed in one Unicode form (NFC): a name
with an accent is the same name, and lands on the same side, whether a Mac disk stored it
decomposed (``u`` + U+0308) or Linux composed (``ü``). A name whose bytes are not UTF-8 (a Latin-1 ``café`` from
an old archive, which Python reads with surrogate escapes) is hashed by its bytes as they are on disk.
"""

from __future__ import annotations

import hashlib
import unicodedata

__all__ = ["MAX_NUM_WAVS_PER_CLASS", "hash_percent"]

#: From TensorFlow's speech_commands example: the hash modulus of ``which_set``.
MAX_NUM_WAVS_PER_CLASS = 2 ** 27 - 1
_PERCENT = 100.0


def hash_percent(key: str, salt: str = "") -> float:
    """A stable pseudo-random percentage in [0, 100] for ``key`` (the Speech Commands rule:
    sha1 of ``salt + key``, in Unicode form NFC, modulo ``MAX_NUM_WAVS_PER_CLASS + 1``, scaled to percent); the
    surrogate escapes of a file name that is not UTF-8 hash as the bytes they stand for."""
    # a name read in a C locale without UTF-8 mode holds its UTF-8 as escapes: read back as the characters they spell
    text = (salt + key).encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
    text = unicodedata.normalize("NFC", text)  # ASCII (every Speech Commands name) is its own NFC
    digest = int(hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest(), 16)
    return (digest % (MAX_NUM_WAVS_PER_CLASS + 1)) * (_PERCENT / MAX_NUM_WAVS_PER_CLASS)
