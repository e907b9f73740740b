"""What the repository ships (the wheel's package data: samples/, models/) says where it comes from and under which
licence, and the project's own licence text is there for the licence pyproject.toml declares."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"


def licence_section(readme: Path) -> str:
    text = readme.read_text(encoding="utf-8")
    start = text.index("## Licences and attribution")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_the_project_ships_the_text_of_the_licence_it_declares():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later
    declared = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["license"]
    assert declared == "Apache-2.0"
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text


def test_every_sample_is_named_in_the_licence_section():
    section = licence_section(SAMPLES / "README.md")
    named = set(re.findall(r"`([^`/]+\.(?:wav|mp4|json))`", section))
    shipped = {p.name for p in SAMPLES.iterdir() if p.is_file() and p.name != "README.md"}
    assert shipped - named == set()


def test_cc_by_samples_carry_their_attribution():
    """CC BY 4.0, section 3(a)(1): the creator, the licence and its URI, the material's URI, the changes made."""
    section = licence_section(SAMPLES / "README.md")
    for ground_truth in SAMPLES.glob("*.json"):
        meta = json.loads(ground_truth.read_text(encoding="utf-8"))
        said = json.dumps(meta)
        if "CC BY" not in said:
            continue
        assert f"`{meta['audio']}`" in section, ground_truth.name
        for needed in ("Speech Commands", "Pete Warden", "CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/",
                       "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz", "Changes:"):
            assert needed in section, needed


def test_the_model_card_names_the_licences_of_its_training_data():
    card = (REPO / "models" / "README.md").read_text(encoding="utf-8")
    assert "Speech Commands v0.02" in card and "CC BY 4.0" in card
    assert "may not be redistributed" in card  # the Intel photos: trained on, not shipped
