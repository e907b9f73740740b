"""Create a LiteRT interpreter for a ``.tflite`` model, with an optional delegate.

The interpreter class comes from the first importable of ``ai_edge_litert``,
``tflite_runtime`` and (desktop only) TensorFlow's ``tf.lite``; modules are imported
by name so that nothing here depends on TensorFlow being installed.

A delegate that cannot be loaded (library missing, no accelerator) is not fatal: the
model falls back to the CPU kernels and one warning line is logged.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgesense.runtime.flatbuffer import TFLITE_FILE_IDENTIFIER, check_tflite_bytes
from edgesense.schema.validate import one_line

__all__ = ["DELEGATES", "DEFAULT_DELEGATE_LIBRARIES", "InterpreterBackend", "InterpreterOptions",
           "load_interpreter_backend", "load_interpreter_class", "make_interpreter", "read_model_bytes"]

logger = logging.getLogger(__name__)


#: Accepted values of ``InterpreterOptions.delegate``. None and "xnnpack" both use the
#: CPU: LiteRT applies its built-in XNNPACK delegate by default; "xnnpack" with a
#: ``delegate_library`` loads that external XNNPACK delegate instead.
DELEGATES = (None, "xnnpack", "edgetpu", "gpu")
NO_DELEGATE = "none"  #: how a config file says None
MAX_THREADS = 64
_HEADER_BYTES = 8  #: root offset (4) + file identifier (4)
#: Shared library loaded for each delegate when ``delegate_library`` is not given.
DEFAULT_DELEGATE_LIBRARIES = {
    "edgetpu": "libedgetpu.so.1",
    "gpu": "libtensorflowlite_gpu_delegate.so",
}
#: The symbols every external TFLite delegate exports (what ``load_delegate`` calls).
DELEGATE_ENTRY_POINTS = ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate")
#: (module, attribute path of the Interpreter class, attribute path of load_delegate), in order of preference.
#: TensorFlow's is reached from ``tensorflow`` itself: ``import tensorflow.lite`` gives the package of its
#: converter's sources (``tensorflow/lite/__init__.py``), which has no ``Interpreter``; ``tf.lite`` is the API.
_BACKENDS = (
    ("ai_edge_litert.interpreter", "Interpreter", "load_delegate"),
    ("tflite_runtime.interpreter", "Interpreter", "load_delegate"),
    ("tensorflow", "lite.Interpreter", "lite.experimental.load_delegate"),
)


def _attribute(obj: Any, path: str) -> Any:
    """``obj.a.b`` for the path ``"a.b"``, or None where a part is missing."""
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj


@dataclass(frozen=True, kw_only=True)
class InterpreterOptions:
    """How to run a model: CPU threads and an optional delegate (see :data:`DELEGATES`; ``"none"``
    is read as ``None``, as device configs write it)."""

    num_threads: int = 1
    delegate: str | None = None
    delegate_library: str | None = None

    def __post_init__(self) -> None:
        if self.delegate == NO_DELEGATE:
            object.__setattr__(self, "delegate", None)
        if isinstance(self.num_threads, bool) or not isinstance(self.num_threads, int) \
                or not 1 <= self.num_threads <= MAX_THREADS:
            raise ValueError(f"num_threads: expected an integer in [1, {MAX_THREADS}], got {self.num_threads!r}")
        if self.delegate not in DELEGATES:
            raise ValueError(f"delegate: expected one of {NO_DELEGATE}, {', '.join(d for d in DELEGATES if d)}, "
                             f"got {self.delegate!r}")
        if self.delegate_library is not None:
            if not isinstance(self.delegate_library, str) or not self.delegate_library:
                raise ValueError(f"delegate_library: expected a non-empty path or library name, "
                                 f"got {self.delegate_library!r}")
            if self.delegate is None:
                raise ValueError(f"delegate_library: expected null when delegate is none, "
                                 f"got {self.delegate_library!r}")

    @property
    def library(self) -> str | None:
        """The delegate library to load, or None for the CPU kernels."""
        if self.delegate_library is not None:
            return self.delegate_library
        return DEFAULT_DELEGATE_LIBRARIES.get(self.delegate or "")


@dataclass(frozen=True)
class InterpreterBackend:
    """The interpreter implementation in use."""

    module: str
    interpreter_class: type
    load_delegate: Callable[..., Any] | None


@functools.lru_cache(maxsize=1)
def load_interpreter_backend() -> InterpreterBackend:
    """The first available of ai_edge_litert, tflite_runtime and tf.lite (logged once)."""
    missing = []
    for module_name, class_attr, delegate_attr in _BACKENDS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing.append(f"{module_name} ({exc})")
            continue
        interpreter_class = _attribute(module, class_attr)
        if interpreter_class is None:  # e.g. a stub or another package of that name
            missing.append(f"{module_name} (it has no {class_attr})")
            continue
        logger.info("using the TFLite interpreter from %s", module_name)
        return InterpreterBackend(module_name, interpreter_class, _attribute(module, delegate_attr))
    raise RuntimeError(
        "no TFLite interpreter is installed (tried " + "; ".join(missing) + "): pip install ai-edge-litert"
    )


def load_interpreter_class() -> type:
    """The Interpreter class of :func:`load_interpreter_backend`."""
    return load_interpreter_backend().interpreter_class


def read_model_bytes(model: bytes | bytearray | str | os.PathLike) -> tuple[bytes, str]:
    """(model bytes, a name for messages) from bytes or a path; checks the TFLite identifier.

    Raises FileNotFoundError for a missing file and ValueError for a folder or an empty,
    truncated or non-TFLite file (naming it). A path that is no regular file but can be read (a
    pipe, such as a shell's ``<(...)``) is read once, to its end.
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        data, what = bytes(model), "model bytes"
    else:
        path = Path(model)
        what = str(path)
        if path.is_dir():
            raise ValueError(f"model file {path} is a folder; expected a .tflite file")
        if not path.exists():
            raise FileNotFoundError(f"model file {path} does not exist")
        with path.open("rb") as file:
            head = file.read(_HEADER_BYTES)
            if len(head) == _HEADER_BYTES and head[4:] != TFLITE_FILE_IDENTIFIER:
                check_tflite_bytes(head, what)  # refused now: a video given as --model is not read whole
            data = head + file.read()
    check_tflite_bytes(data, what)
    return data, what


def _load_delegate(backend: InterpreterBackend, options: InterpreterOptions) -> list[Any]:
    """[delegate], or [] (after one warning line) when it cannot be loaded."""
    library = options.library
    if library is None:
        return []
    if backend.load_delegate is None:
        logger.warning("delegate %s: %s cannot load delegates; running on the CPU", options.delegate, backend.module)
        return []
    try:  # probe first: a failed load_delegate() leaves a noisy half-built object
        handle = ctypes.CDLL(library)
        missing = [name for name in DELEGATE_ENTRY_POINTS if not hasattr(handle, name)]
        if missing:  # another library, e.g. the wrong .so
            raise ValueError(f"{library} is not a TFLite delegate (it has no {', '.join(missing)})")
        return [backend.load_delegate(library)]
    except (OSError, ValueError, RuntimeError, AttributeError) as exc:
        logger.warning("delegate %s (%s) failed to load, running on the CPU: %s",
                       options.delegate, library, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return []


def make_interpreter(model: bytes | bytearray | str | os.PathLike,
                     options: InterpreterOptions = InterpreterOptions(), *, name: str | None = None) -> Any:
    """An interpreter (tensors not yet allocated) for a model file or bytes.

    A corrupt, empty or truncated model raises ValueError naming the file (or ``name``,
    for bytes read from a file elsewhere). A delegate that fails to load or to apply
    falls back to the CPU with one warning line.
    """
    data, what = read_model_bytes(model)
    what = name or what
    backend = load_interpreter_backend()
    delegates = _load_delegate(backend, options)

    def build(with_delegates: list[Any]) -> Any:
        return backend.interpreter_class(
            model_content=data,
            num_threads=options.num_threads,
            experimental_delegates=with_delegates or None,
        )

    try:
        return build(delegates)
    except (ValueError, RuntimeError) as exc:
        if not delegates:
            raise ValueError(f"{what}: not a valid TFLite model ({one_line(exc)})") from exc
        logger.warning("delegate %s (%s) could not be applied, running on the CPU: %s",
                       options.delegate, options.library, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    try:
        return build([])
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"{what}: not a valid TFLite model ({one_line(exc)})") from exc
