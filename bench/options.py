"""What ``edgesense bench`` measures and how: its options, validated when built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgesense.app.cli import refuse_file_in_the_way
from edgesense.bench.scoring import LATENCY_RULES
from edgesense.bench.streams import MAX_STREAM_S
from edgesense.runtime.interpreter import MAX_THREADS
from edgesense.schema.validate import as_path, as_paths, is_int, is_number, require
from edgesense.train.config import INT_LIMIT, SEED_EXPECTED, is_seed

__all__ = ["BenchOptions"]

SPLITS = ("all", "testing")
QUICK_PER_CLASS = 12  #: clips or photos per class with --quick
DEFAULT_REFERENCES_DIR = Path("models/references")
#: The shortest ``stream_s``/``talk_s`` (``--stream-minutes``/``--talk-minutes`` x 60), in seconds.
MIN_STREAM_S = 20
#: RMS level of the sound paired with each test photo in the degraded-camera table (--scene-ambient).
AMBIENCE_DBFS_RANGE = (-35.0, -20.0)
#: The options only the streaming evaluation reads (``--speech-commands`` without ``--no-streaming``).
STREAMING_ONLY = ("stream_s", "talk_s", "class_thresholds", "max_false_accepts_per_hour",
                  "max_false_accepts_per_100_words", "max_latency_p95_ms", "latency_rule", "negatives",
                  "tuning_noise", "tuning_negatives", "model_alone")

PATH_FIELDS = ("model_path", "out_dir", "speech_commands", "scenes", "av", "scene_ambient", "references_dir",
               "reference_config", "firmware_config")
OPTIONAL_PATH_FIELDS = ("speech_commands", "scenes", "av", "scene_ambient", "reference_config", "firmware_config")
PATHS_FIELDS = ("noise", "tuning_noise", "negatives", "tuning_negatives", "write_config")
BOOL_FIELDS = ("quick", "train_references", "teachers", "fusion_study", "streaming", "class_thresholds",
               "model_alone", "tuning_only")


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """What to benchmark. Paths are folders unless said otherwise."""

    model_path: Path
    #: Not ``bench``: in a checkout that is the benchmark's own source folder (``edgesense.bench``).
    out_dir: Path = Path("bench-out")
    speech_commands: Path | None = None
    scenes: Path | None = None
    av: Path | None = None
    #: ``CLASS/*.wav`` sounds of the scene classes: each test photo of ``scenes`` is also scored with a
    #: snippet of its own class (evaluation pool only) at an RMS level in ``ambience_dbfs_range``.
    scene_ambient: Path | None = None
    ambience_dbfs_range: tuple[float, float] = AMBIENCE_DBFS_RANGE
    noise: tuple[Path, ...] = ()
    #: Noise and music for the tuning streams only, every recording of them (None of it may have fed
    #: training: a model trained on stream-like mixtures of its own noise is flattered by it).
    #: Empty: the training pool of ``noise``.
    tuning_noise: tuple[Path, ...] = ()
    negatives: tuple[Path, ...] = ()
    #: Other speech for the tuning streams only, every recording of it, beside the tuning pool of
    #: ``negatives``: talk like the device will hear (e.g. ``edgesense synth-talk`` sentences), so the
    #: operating point is chosen on more than one reader. The evaluation streams never hear it.
    tuning_negatives: tuple[Path, ...] = ()
    threads: int = 1
    quick: bool = False
    split: str = "all"
    salt: str = ""
    train_references: bool = False
    references_dir: Path = DEFAULT_REFERENCES_DIR
    reference_config: Path | None = None
    #: Train (cached next to the references) and score the pretrained teachers as rows.
    teachers: bool = False
    fusion_study: bool = False
    streaming: bool = True
    stream_s: float | None = None
    talk_s: float | None = None
    class_thresholds: bool = False
    #: The false-accept budget the operating point is chosen within on the tuning streams (None:
    #: :class:`edgesense.bench.scoring.SweepOptions`' own, the targets of issue 14). Tighter than the
    #: target leaves a margin for talk the tuning streams do not hold.
    max_false_accepts_per_hour: float | None = None
    max_false_accepts_per_100_words: float | None = None
    #: The latency budget (ms from word end) the operating point is chosen by, as ``latency_rule``
    #: says (None: ``SweepOptions``' own; 0: none).
    max_latency_p95_ms: float | None = None
    #: How that budget chooses (None: ``SweepOptions``' own): one of ``LATENCY_RULES`` (see there).
    latency_rule: str | None = None
    write_config: tuple[Path, ...] = ()
    #: The device config whose ``scheduler.command_hop_ms`` the streams are scored at and whose
    #: ``commands:`` settings the streaming section scores next to the recommendation (``None``:
    #: the shipped firmware_configs/desktop.yaml). ``write_config`` takes configs of the same hop.
    firmware_config: Path | None = None
    #: Score ``model_path`` alone, leaving out the ``second_opinion`` that ``firmware_config`` blends it
    #: with (its hop and ``commands:`` are kept); ``write_config`` then takes configs without one.
    model_alone: bool = False
    max_per_class: int | None = None
    seed: int = 0
    #: Score only what a model may be chosen by: the validation part of the written-down split
    #: (``split: testing``; clip accuracy on its speakers and photos) and the tuning streams
    #: (their operating point, budgets, level envelope and DET curve). Nothing of the test
    #: speakers or photos, nor of the evaluation pools, is read.
    tuning_only: bool = False

    def __post_init__(self) -> None:
        # Paths stored as Paths, lists of them as tuples, whatever the caller gave (None, 1 or a string of paths
        # failed later as TypeErrors, or iterated as letters).
        for name in PATH_FIELDS:
            value = getattr(self, name)
            if value is not None or name not in OPTIONAL_PATH_FIELDS:
                object.__setattr__(self, name, as_path(name, value))
        for name in PATHS_FIELDS:
            object.__setattr__(self, name, as_paths(name, getattr(self, name)))
        for name in BOOL_FIELDS:  # "false" and 1 are no booleans: a truthy string turned a part on
            require(isinstance(getattr(self, name), bool), name, "true or false", getattr(self, name))
        require(isinstance(self.salt, str), "salt", "a string", self.salt)
        # the interpreter's own bound, said here so that the line names --threads, not num_threads
        require(is_int(self.threads) and 1 <= self.threads <= MAX_THREADS, "threads",
                f"an integer in [1, {MAX_THREADS}]", self.threads)
        require(self.split in SPLITS, "split", f"one of {', '.join(SPLITS)}", self.split)
        require(is_seed(self.seed), "seed", SEED_EXPECTED, self.seed)
        require(self.speech_commands is not None or self.scenes is not None or self.av is not None
                 or self.fusion_study, "speech_commands", "at least one of speech_commands, scenes, av", None)
        require(self.max_per_class is None or (is_int(self.max_per_class) and 1 <= self.max_per_class < INT_LIMIT),
                 "max_per_class", "None or an integer in [1, 2**63)", self.max_per_class)
        for name in ("stream_s", "talk_s"):
            value = getattr(self, name)
            # up to the longest stream StreamOptions builds: past it the run was refused after the accuracy section
            # and the tuning streams, naming a duration_s the user never typed
            require(value is None or (is_number(value) and MIN_STREAM_S <= value <= MAX_STREAM_S), name,
                    f"None or a number in [{MIN_STREAM_S}, {MAX_STREAM_S:g}] (s)", value)
        for name in ("max_false_accepts_per_hour", "max_false_accepts_per_100_words", "max_latency_p95_ms"):
            value = getattr(self, name)
            require(value is None or (is_number(value) and value >= 0), name, "a number >= 0", value)
        require(self.latency_rule is None or self.latency_rule in LATENCY_RULES, "latency_rule",
                f"one of {', '.join(LATENCY_RULES)}", self.latency_rule)
        require(not self.tuning_only or self.split == "testing", "tuning_only",
                "--split testing (the validation part of the split training wrote down)", self.split)
        require(not self.tuning_only or (self.scene_ambient is None and self.av is None), "tuning_only",
                "no --scene-ambient or --av (evaluation material)",
                ", ".join(f for f, v in (("--scene-ambient", self.scene_ambient), ("--av", self.av)) if v))
        require(not self.write_config or self.speech_commands is not None, "write_config",
                 "--speech-commands too (the recommendation comes from the streaming evaluation)", self.write_config)
        require(not self.write_config or self.streaming, "write_config",
                 "the streaming evaluation it writes the recommendation of", "--no-streaming")
        # Refused now, not after the whole benchmark ran (as "scenes_root: ... got None", a name no flag has).
        require(not self.fusion_study or self.scenes is not None or self.av is not None, "fusion_study",
                "--scenes or --av too (the photos it pairs with sounds and trains on)", "neither")
        require(self.scene_ambient is None or self.scenes is not None, "scene_ambient",
                 "--scenes too (its test photos are paired with these sounds)", str(self.scene_ambient))
        low_high = self.ambience_dbfs_range
        require(isinstance(low_high, tuple) and len(low_high) == 2 and all(is_number(v) for v in low_high)
                 and low_high[0] <= low_high[1] <= 0, "ambience_dbfs_range", "a (low, high) pair with low <= high <= 0",
                 low_high)
        for name in ("speech_commands", "scenes", "av", "scene_ambient"):
            path = getattr(self, name)
            require(path is None or Path(path).is_dir(), name, "an existing folder", str(path))
        for name in ("noise", "tuning_noise", "negatives", "tuning_negatives"):
            missing = [str(p) for p in getattr(self, name) if not Path(p).exists()]
            require(not missing, name, "existing files or folders", missing)
        # What only the streaming evaluation reads is refused without it, not silently left unused.
        streams = self.speech_commands is not None and self.streaming
        for name in STREAMING_ONLY:
            value = getattr(self, name)
            require(streams or value in (None, False, ()), name, "--speech-commands and the streaming evaluation "
                    "(it sets the streams only)", "--no-streaming" if self.speech_commands is not None
                    else "no --speech-commands")
        refuse_file_in_the_way("references_dir", self.references_dir)  # not after the run, as an OSError
        require(self.reference_config is None or Path(self.reference_config).is_file(), "reference_config",
                "an existing train YAML file", str(self.reference_config))
        require(self.reference_config is None or self.train_references or self.teachers, "reference_config",
                "--train-references or --teachers (what it trains)", "neither")

    @property
    def per_class_cap(self) -> int | None:
        return self.max_per_class if self.max_per_class is not None else (QUICK_PER_CLASS if self.quick else None)


def _progress(iterable, total: int, what: str):
    """The training side's progress bar (:func:`edgesense.train.data._progress`), counting items."""
    from edgesense.train.data import _progress as progress  # here: the options load without the data module

    return progress(iterable, total, what, unit="item")
