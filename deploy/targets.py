"""The devices ``edgesense deploy`` knows: platform tags, Python versions, Debian packages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from edgesense.schema.validate import is_int, require

__all__ = ["MIN_PYTHON", "TARGETS", "Target"]


#: The oldest Python EdgeSense runs on: ``edge/`` uses ``dataclass(kw_only=True)`` (3.10+).
INTERPRETER_PACKAGES = ("ai-edge-litert", "tflite-runtime")
OPENCV_PIP_PACKAGES = ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless",
                       "opencv-contrib-python")
OPENCV_APT_PACKAGE = "python3-opencv"

MIN_PYTHON = (3, 10)
#: tflite-runtime (the interpreter fallback) stopped at Python 3.11.
TFLITE_RUNTIME_MAX_PYTHON = (3, 11)

#: Where nvargus-daemon (JetPack's camera service) listens: a service with PrivateTmp=true cannot see it.
ARGUS_SOCKET = "/tmp/argus_socket"

_APT_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_PYTHON_VERSION = re.compile(r"^3\.(\d{1,2})$")


def _is_strings(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(item, str) for item in value)


def _parse_python_version(value: str, field_name: str) -> tuple[int, int]:
    if not isinstance(value, str) or not _PYTHON_VERSION.match(value):
        raise ValueError(f"{field_name}: expected a Python version like '3.11', got {value!r}")
    return 3, int(value.split(".")[1])


@dataclass(frozen=True, kw_only=True)
class Target:
    """One kind of device: what its OS provides and how EdgeSense is installed there.

    ``glibc``: the OS's glibc (major, minor); wheels up to ``manylinux_<glibc>`` run there.
    ``opencv``: ``"pip"`` (the opencv-python-headless wheel) or ``"apt"`` (the system
    ``python3-opencv``, e.g. JetPack's, built with GStreamer; the venv then sees system
    site-packages). ``constraints``: extra pip constraints (e.g. ``numpy<2`` where the
    system OpenCV was built against NumPy 1.x). ``private_tmp``: the systemd unit's
    ``PrivateTmp=``; false on a Jetson, whose CSI cameras (``nvarguscamerasrc``) reach
    nvargus-daemon through its socket :data:`ARGUS_SOCKET` in the host's ``/tmp``.
    ``supported=False`` targets are listed (and resolved, for information) but ``deploy``
    refuses them with ``note``.
    """

    name: str
    description: str
    arch: str
    glibc: tuple[int, int]
    python_version: str
    apt_packages: tuple[str, ...]
    config_name: str
    opencv: str = "pip"
    interpreters: tuple[str, ...] = INTERPRETER_PACKAGES
    constraints: tuple[str, ...] = ()
    system_site_packages: bool = False
    private_tmp: bool = True
    supported: bool = True
    note: str = ""

    def __post_init__(self) -> None:
        # Checked for their kinds first: a name of 1, a glibc of (2, "x") or apt_packages of None were TypeErrors.
        for name in ("name", "description", "config_name", "opencv", "note"):
            require(isinstance(getattr(self, name), str), name, "a string", getattr(self, name))
        for name in ("system_site_packages", "private_tmp", "supported"):
            require(isinstance(getattr(self, name), bool), name, "true or false", getattr(self, name))
        for name in ("apt_packages", "interpreters", "constraints"):
            require(_is_strings(getattr(self, name)), name, "a tuple of strings", getattr(self, name))
        if not re.match(r"^[a-z0-9][a-z0-9-]*$", self.name):
            raise ValueError(f"name: expected lowercase letters, digits and '-', got {self.name!r}")
        if self.arch not in ("aarch64", "x86_64"):
            raise ValueError(f"arch: expected 'aarch64' or 'x86_64', got {self.arch!r}")
        if (not isinstance(self.glibc, tuple) or len(self.glibc) != 2 or not all(is_int(v) for v in self.glibc)
                or self.glibc[0] != 2 or not 17 <= self.glibc[1] <= 99):
            raise ValueError(f"glibc: expected (2, minor) with minor >= 17, got {self.glibc!r}")
        _parse_python_version(self.python_version, "python_version")
        bad = [p for p in self.apt_packages if not _APT_NAME.match(p)]
        if bad:
            raise ValueError(f"apt_packages: expected Debian package names, got {bad[0]!r}")
        if self.opencv not in ("pip", "apt"):
            raise ValueError(f"opencv: expected 'pip' or 'apt', got {self.opencv!r}")
        if self.opencv == "apt" and (OPENCV_APT_PACKAGE not in self.apt_packages or not self.system_site_packages):
            raise ValueError(f"opencv: 'apt' needs {OPENCV_APT_PACKAGE} in apt_packages and system_site_packages=True")
        unknown = [i for i in self.interpreters if i not in INTERPRETER_PACKAGES]
        if not self.interpreters or unknown:
            raise ValueError(f"interpreters: expected a non-empty subset of {INTERPRETER_PACKAGES}, "
                             f"got {self.interpreters!r}")
        if not self.config_name.endswith(".yaml") or "/" in self.config_name:
            raise ValueError(f"config_name: expected a file name ending in .yaml, got {self.config_name!r}")
        if not self.supported and not self.note:
            raise ValueError("note: expected the reason a target is unsupported, got ''")

    @property
    def platform_tags(self) -> tuple[str, ...]:
        """pip ``--platform`` values, newest first: manylinux_2_<glibc> ... manylinux_2_17, manylinux2014.

        pip does not expand ``manylinux_2_X`` to older glibc versions itself, so every one is named
        (ai-edge-litert publishes manylinux_2_27 wheels, numpy manylinux_2_28, most others 2_17).
        """
        minors = range(self.glibc[1], 16, -1)
        return tuple(f"manylinux_2_{m}_{self.arch}" for m in minors) + (f"manylinux2014_{self.arch}",)


_DEBIAN_BASE = ("python3-venv", "libportaudio2")
_JETSON_NOTE_OPENCV = "OpenCV from JetPack's python3-opencv (GStreamer, CSI cameras), not the pip wheel"

#: The deploy targets, by name.
TARGETS: Mapping[str, Target] = {
    t.name: t
    for t in (
        Target(
            name="rpi5", description="Raspberry Pi 5, Raspberry Pi OS Bookworm 64-bit", arch="aarch64",
            glibc=(2, 36), python_version="3.11", apt_packages=_DEBIAN_BASE, config_name="rpi5.yaml",
        ),
        Target(
            name="rpi4", description="Raspberry Pi 4, Raspberry Pi OS Bookworm 64-bit", arch="aarch64",
            glibc=(2, 36), python_version="3.11", apt_packages=_DEBIAN_BASE, config_name="rpi4.yaml",
        ),
        Target(
            name="jetson-orin", description="Jetson Orin, JetPack 6 (Ubuntu 22.04)", arch="aarch64",
            glibc=(2, 35), python_version="3.10", apt_packages=_DEBIAN_BASE + (OPENCV_APT_PACKAGE,),
            config_name="jetson-orin.yaml", opencv="apt", system_site_packages=True, private_tmp=False,
            constraints=("numpy<2",),
            note=_JETSON_NOTE_OPENCV + "; numpy<2 because that OpenCV is built against NumPy 1.x. "
                 "JetPack 5 (Python 3.8) is too old for EdgeSense (Python >= 3.10).",
        ),
        Target(
            name="jetson-nano", description="Jetson Nano, JetPack 4 (Ubuntu 18.04)", arch="aarch64",
            glibc=(2, 27), python_version="3.6", apt_packages=_DEBIAN_BASE + (OPENCV_APT_PACKAGE,),
            config_name="jetson-nano.yaml", opencv="apt", system_site_packages=True, private_tmp=False,
            constraints=("numpy<2",), supported=False,
            note="JetPack 4 is end-of-life and ships Python 3.6; EdgeSense needs Python >= 3.10 and "
                 "neither ai-edge-litert nor tflite-runtime >= 2.14 publish wheels for it",
        ),
        Target(
            name="desktop", description="x86_64 Linux desktop (glibc >= 2.35, e.g. Ubuntu 22.04+, Debian 12)",
            arch="x86_64", glibc=(2, 35), python_version="3.11", apt_packages=_DEBIAN_BASE,
            config_name="desktop.yaml",
        ),
    )
}
