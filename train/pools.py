"""Recordings split by file into a training pool and an evaluation pool.

Every recording-derived set (noise, music, ambience, other people's speech) is split by
recording, never by snippet: a recording whose snippets trained the model never appears in
an evaluation stream. The rule is a hash of the recording's folder and file name, so it is
the same on every machine and for every tool (the trainer draws from ``training``, the
benchmark's streams from ``evaluation``). Within each group (a folder, with music apart from
other noise) at least one recording goes to each pool when the group has two or more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Literal

from edgesense.schema.validate import require
from edgesense.train.data import hash_percent

__all__ = ["EVALUATION_PERCENT", "POOLS", "pool_of", "split_recordings"]

Pool = Literal["training", "evaluation"]
POOLS: tuple[Pool, ...] = ("training", "evaluation")
EVALUATION_PERCENT = 30.0  #: share of each group's recordings kept for evaluation
POOL_SALT = "edgesense-pools"
_MUSIC_PREFIX = "music"
_PERCENT = 100.0


def _key(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _group(path: Path) -> str:
    kind = _MUSIC_PREFIX if path.stem.lower().startswith(_MUSIC_PREFIX) else "other"
    return f"{path.parent.name}:{kind}"


def split_recordings(paths: Iterable[str | Path], *, evaluation_percent: float = EVALUATION_PERCENT
                     ) -> dict[Pool, list[Path]]:
    """``{"training": [...], "evaluation": [...]}``, each sorted; see the module docstring."""
    require(0 < evaluation_percent < _PERCENT, "evaluation_percent", "a number in (0, 100)", evaluation_percent)
    groups: dict[str, list[Path]] = {}
    for p in sorted({Path(p) for p in paths}):
        groups.setdefault(_group(p), []).append(p)
    out: dict[Pool, list[Path]] = {"training": [], "evaluation": []}
    for members in groups.values():
        ranked = sorted(members, key=lambda p: (hash_percent(_key(p), POOL_SALT), _key(p)))
        count = round(len(ranked) * evaluation_percent / _PERCENT)
        if len(ranked) >= 2:
            count = min(max(count, 1), len(ranked) - 1)
        out["evaluation"] += ranked[:count]
        out["training"] += ranked[count:]
    return {pool: sorted(files) for pool, files in out.items()}


def pool_of(path: str | Path, siblings: Iterable[str | Path], *, evaluation_percent: float = EVALUATION_PERCENT
            ) -> Pool:
    """The pool ``path`` belongs to among ``siblings`` (the whole collection it was split with)."""
    split = split_recordings([path, *siblings], evaluation_percent=evaluation_percent)
    return "evaluation" if Path(path) in split["evaluation"] else "training"
