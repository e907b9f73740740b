"""deploy's options refuse what passed and failed later: a pip timeout subprocess cannot wait (NaN, inf), True as
1 s, a resolve_options of None (AttributeError at resolution), "" as the working folder, a target's fields of the
wrong kind (TypeError)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from edgesense.deploy.bundle import DeployOptions
from edgesense.deploy.resolve import ResolveOptions
from edgesense.deploy.targets import TARGETS, Target


@pytest.mark.parametrize("timeout_s", [math.nan, math.inf, 1e308, 10**400, True, 0, -1.0, "300"])
def test_a_pip_timeout_subprocess_cannot_use_is_refused(timeout_s):
    with pytest.raises(ValueError, match=r"^timeout_s: expected a number of seconds in \(0, 86400\]"):
        ResolveOptions(timeout_s=timeout_s)


@pytest.mark.parametrize(("kwargs", "field"), [({"resolve_options": None}, "resolve_options"),
                                               ({"resolve_options": {}}, "resolve_options"),
                                               ({"out_dir": ""}, "out_dir"), ({"model_path": ""}, "model_path"),
                                               ({"target": ["rpi5"]}, "target")])
def test_deploy_options_of_the_wrong_kind_are_refused_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: expected "):
        DeployOptions(**{"target": "rpi5", "out_dir": Path("b"), **kwargs})


def test_deploy_options_store_string_paths_as_paths():
    options = DeployOptions(target="rpi5", out_dir="b", config_path="c.yaml")
    assert options.out_dir == Path("b") and options.config_path == Path("c.yaml") and options.model_path is None


@pytest.mark.parametrize(("field", "value"), [("glibc", (2, "x")), ("glibc", (2.0, 31.5)), ("name", 1),
                                              ("apt_packages", None), ("apt_packages", ["libc6"]),
                                              ("config_name", None), ("interpreters", None), ("supported", "no")])
def test_a_target_field_of_the_wrong_kind_is_refused_naming_it(field, value):
    base = {"name": "x", "description": "d", "arch": "x86_64", "glibc": (2, 31), "python_version": "3.11",
            "apt_packages": ("libc6",), "config_name": "x.yaml"}
    with pytest.raises(ValueError, match=f"^{field}: expected "):
        Target(**{**base, field: value})
    assert TARGETS["rpi5"].platform_tags[0] == "manylinux_2_36_aarch64"
