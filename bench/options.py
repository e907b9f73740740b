"""What ``edgesense bench`` measures and how: its options, validated when built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgesense.schema.validate import require

__all__ = ["BenchOptions"]

SPLITS = ("all", "testing")
QUICK_PER_CLASS = 12  #: clips or photos per class with --quick
DEFAULT_REFERENCES_DIR = Path("models/references")


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """What to benchmark. Paths are folders unless said otherwise."""

    model_path: Path
    out_dir: Path = Path("bench")
    speech_commands: Path | None = None
    scenes: Path | None = None
    av: Path | None = None
    noise: tuple[Path, ...] = ()
    negatives: tuple[Path, ...] = ()
    threads: int = 1
    quick: bool = False
    split: str = "all"
    salt: str = ""
    train_references: bool = False
    references_dir: Path = DEFAULT_REFERENCES_DIR
    reference_config: Path | None = None
    fusion_study: bool = False
    streaming: bool = True
    stream_s: float | None = None
    talk_s: float | None = None
    class_thresholds: bool = False
    write_config: tuple[Path, ...] = ()
    #: The device config whose ``commands:`` settings the streaming section scores next to the
    #: recommendation (``None``: the shipped firmware_configs/desktop.yaml).
    firmware_config: Path | None = None
    max_per_class: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        require(isinstance(self.threads, int) and not isinstance(self.threads, bool) and self.threads >= 1,
                 "threads", "an integer >= 1", self.threads)
        require(self.split in SPLITS, "split", f"one of {', '.join(SPLITS)}", self.split)
        require(self.speech_commands is not None or self.scenes is not None or self.av is not None
                 or self.fusion_study, "speech_commands", "at least one of speech_commands, scenes, av", None)
        require(self.max_per_class is None or (isinstance(self.max_per_class, int) and self.max_per_class >= 1),
                 "max_per_class", "None or an integer >= 1", self.max_per_class)
        for name in ("stream_s", "talk_s"):
            value = getattr(self, name)
            require(value is None or (isinstance(value, (int, float)) and value >= 20), name,
                    "None or a number >= 20", value)
        require(not self.write_config or self.speech_commands is not None, "write_config",
                 "--speech-commands too (the recommendation comes from the streaming evaluation)", self.write_config)
        for name in ("speech_commands", "scenes", "av"):
            path = getattr(self, name)
            require(path is None or Path(path).is_dir(), name, "an existing folder", str(path))
        for name in ("noise", "negatives"):
            missing = [str(p) for p in getattr(self, name) if not Path(p).exists()]
            require(not missing, name, "existing files or folders", missing)

    @property
    def per_class_cap(self) -> int | None:
        return self.max_per_class if self.max_per_class is not None else (QUICK_PER_CLASS if self.quick else None)


def _progress(iterable, total: int, what: str):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=what, unit="item", leave=False, disable=None)
