"""``edgesense bench --write-config``: the recommended recognizer settings written into a firmware
YAML's ``commands:`` section, in place.

The file is edited as a round trip (:func:`edgesense.schema.yaml.update_yaml_file`): every other
field, comment, blank line, flow or block style and key order stays as it was; only the
recognizer's fields of ``commands:`` change (a ``commands:`` section is added when there is
none). The file is checked with the device config loader before the run (a duplicate key, or
anything else ``edgesense run`` would refuse, is one line naming the file and the line), and the
result is checked again before it replaces the file (its permissions, owner and group kept; a
symbolic link stays one, the file it points to is edited). The result is written to a new file
beside it that is then renamed over it, so a failed write (a full disk) leaves the file as it
was and no partial file behind. A file this user could not write in place (read-only for this
user, in a folder it may not write, or one that would change owner: another user's file, unless
run as root) is refused before the run. A point goes only into configs that run the
detector it was measured on: the same command hop and the same second opinion (heads file and
blend, or none).
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from edgesense.loop.config import load_config
from edgesense.recognition.commands import CommandRecognizerOptions
from edgesense.runtime.second_opinion import SecondOpinionOptions
from edgesense.schema.yaml import DELETE, update_yaml_file
from edgesense.train.cache import file_sha256

__all__ = ["RECOGNIZER_FIELDS", "check_firmware_config", "update_firmware_config"]

logger = logging.getLogger(__name__)

#: The fields of ``commands:`` the benchmark chooses (CommandRecognizerOptions minus ignored_labels).
RECOGNIZER_FIELDS = ("threshold", "class_thresholds", "release_threshold", "suppression_ms", "average_window_ms",
                     "minimum_count", "max_context_unknown")
_SECTION = "commands"
_DIGITS = 4


def _plain(value: float) -> float | int:
    """A whole number as an int (``suppression_ms: 0``, ``1000``), any other value as it is."""
    return int(value) if float(value).is_integer() else value


def _values(options: CommandRecognizerOptions) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in RECOGNIZER_FIELDS:
        value = getattr(options, name)
        if name == "class_thresholds":
            values[name] = {k: round(float(v), _DIGITS) for k, v in sorted(value.items())} or DELETE
        elif isinstance(value, float):
            values[name] = _plain(round(value, _DIGITS))
        else:
            values[name] = value
    return values


def _detector(second: SecondOpinionOptions) -> tuple[str, float] | None:
    """What a config's second opinion makes of each hop: its heads' bytes and the blend (None: the model alone)."""
    if second.heads_path is None:
        return None
    heads = Path(second.heads_path)
    return (file_sha256(heads) if heads.is_file() else str(heads)), second.student_weight


def _describe(second: SecondOpinionOptions) -> str:
    if second.heads_path is None:
        return "no second opinion (the model alone)"
    return f"heads {Path(second.heads_path).name} at student_weight {second.student_weight:g}"


def check_firmware_config(path: str | Path, *, command_hop_ms: float | None = None,
                          second_opinion: SecondOpinionOptions | None = None) -> None:
    """Raise the one-line ``ValueError`` :func:`update_firmware_config` would (before a long run)."""
    config = load_config(path)
    hop = config.scheduler.command_hop_ms
    if command_hop_ms is not None and hop != command_hop_ms:
        raise ValueError(f"{path}: scheduler.command_hop_ms: expected {command_hop_ms:g} (the hop the operating "
                         f"point is measured at, that of bench --config), got {hop:g}; measure this device with "
                         f"--config {path}")
    if second_opinion is not None and _detector(config.second_opinion) != _detector(second_opinion):
        raise ValueError(f"{path}: second_opinion: expected {_describe(second_opinion)} (the detector the operating "
                         f"point is measured on, that of bench --config and --model-alone), got "
                         f"{_describe(config.second_opinion)}; measure this device with --config {path}")
    _check_writable(Path(path))


def _keeps_owner(st: os.stat_result) -> bool:
    """Whether a file this process writes can be given ``st``'s owner and group (as root, or as its owner in
    its group). Always on a system without user ids (Windows: no ``os.geteuid``; a file's are 0 there)."""
    if not hasattr(os, "geteuid"):
        return True
    if os.geteuid() == 0:
        return True
    return st.st_uid == os.geteuid() and (st.st_gid == os.getegid() or st.st_gid in os.getgroups())


def _check_writable(path: Path) -> None:
    """ValueError when this user may not replace ``path``'s file as :func:`update_firmware_config` does: a new
    file beside it, with its owner, group and mode, renamed over it."""
    file = path.resolve()
    st = file.stat()
    shown = f"mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}, group gid {st.st_gid}"
    if not os.access(file, os.W_OK):
        raise ValueError(f"{path}: expected a file this user may write, got a read-only one ({shown})")
    if not os.access(file.parent, os.W_OK | os.X_OK):
        raise ValueError(f"{path}: expected a file in a folder this user may write (the new file is written beside "
                         f"it, then renamed over it), got {file.parent}, which this user may not write")
    if not _keeps_owner(st):
        raise ValueError(f"{path}: expected a file of this user (uid {os.geteuid()}) in one of its groups, got "
                         f"another's ({shown}): written, it would become this user's; run as its owner or root")


def update_firmware_config(path: str | Path, options: CommandRecognizerOptions, *,
                           command_hop_ms: float | None = None,
                           second_opinion: SecondOpinionOptions | None = None) -> Path:
    """Write ``options`` into ``path``'s ``commands:`` (see the module docstring); returns the path.

    ``command_hop_ms``: the hop ``options`` were measured at; a config whose
    ``scheduler.command_hop_ms`` differs is refused (the same averaging window holds another
    number of results there, and the chosen point was not measured for it). ``second_opinion``:
    the detector they were measured on; a config that blends the model with other heads, with
    another weight, or not at all where it was blended (or the other way round) is refused too.

    Raises ``ValueError`` (one line) for a missing or unreadable file, a duplicate key, another
    command hop or detector, a file this user could not write in place, a failed write (a full
    disk), or a result the config loader rejects; the file is then left untouched."""
    path = Path(path)
    check_firmware_config(path, command_hop_ms=command_hop_ms, second_opinion=second_opinion)
    values = _values(options)
    file = path.resolve()  # a link's file is edited, the link kept
    st = file.stat()
    handle, tmp_name = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".tmp", dir=file.parent)  # a name of its own
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        update_yaml_file(file, {f"{_SECTION}.{name}": value for name, value in values.items()}, out=tmp)
        written = tmp.stat()
        if (written.st_uid, written.st_gid) != (st.st_uid, st.st_gid):  # root writing a user's (or a service's) file
            os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, stat.S_IMODE(st.st_mode))  # a config readable by its owner only stays so
        load_config(tmp)
        tmp.replace(file)
    except ValueError as exc:
        raise ValueError(str(exc).replace(str(tmp), str(path))) from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot write it ({exc.strerror or exc}); the file is left as it was") from None
    finally:
        tmp.unlink(missing_ok=True)  # a result the loader refused (or a failed write) leaves nothing behind
    logger.info("wrote %s into %s", ", ".join(f"{_SECTION}.{k}={v}" for k, v in values.items() if v is not DELETE),
                path)
    return path
