"""What the docs say about the command line against its parsers: every flag a doc gives an
``edgesense`` command is one of that command's flags, the option tables name only their command's
flags and miss none, and the figures the docs state of an option are the code's."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from edgesense.app import cli

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/DEVICE.md", "docs/DEPLOY.md", "docs/BENCHMARK.md", "docs/RELIABILITY.md",
        "docs/CONTRACTS.md", "models/README.md")
COMMAND = re.compile(r"(?<![\w/.-])edgesense (" + "|".join(sorted(cli.COMMANDS, key=len, reverse=True))
                     + r")(?![\w-])")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
#: What ends one command in a snippet: a pipe, a comment, a chain.
COMMAND_END = re.compile(r"\s(?:\||#|&&|;)\s")


def parser_flags(command: str) -> set[str]:
    sub = next(a for a in cli.build_parser([command])._actions if isinstance(a, argparse._SubParsersAction))
    return {option for action in sub.choices[command]._actions for option in action.option_strings}


def _snippets(text: str) -> list[str]:
    """The command lines of a Markdown text: each line of a fenced or indented block (continuation
    lines joined) and each inline code span."""
    out = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        out += block.replace("\\\n", " ").splitlines()
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    out += [line for line in text.replace("\\\n", " ").splitlines() if line.startswith("    ")]
    return out + re.findall(r"`([^`\n]+)`", text)


def _table(path: str, heading: str, *, full: bool = False) -> list[str]:
    """The first column (``full``: the whole row) of each row of the first ``| option | meaning |``
    table after ``heading``."""
    text = (REPO / path).read_text(encoding="utf-8")
    start = text.index(heading)
    lines = text[text.index("| option | meaning |", start):].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append(line if full else line.split("|")[1])
    return rows


def test_every_flag_a_doc_gives_an_edgesense_command_is_one_of_its_flags():
    wrong = []
    for path in DOCS:
        for snippet in _snippets((REPO / path).read_text(encoding="utf-8")):
            for part in COMMAND_END.split(snippet):
                found = list(COMMAND.finditer(part))
                for i, match in enumerate(found):
                    words = part[match.end():found[i + 1].start() if i + 1 < len(found) else len(part)]
                    command = match.group(1)
                    wrong += [f"{path}: edgesense {command} {flag} ({part.strip()[:80]})"
                              for flag in FLAG.findall(words) if flag not in parser_flags(command)]
    assert not wrong


def test_the_readme_command_table_has_a_row_for_every_command():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `edgesense ([a-z-]+)", text, flags=re.M)
    assert sorted(rows) == sorted(cli.COMMANDS)


@pytest.mark.parametrize("path, heading, command", [
    ("docs/DEVICE.md", "## On the device: `edgesense run`", "run"),
    ("docs/DEVICE.md", "### Recording your own places: `edgesense record`", "record"),
    ("docs/BENCHMARK.md", "## How to run", "bench"),
])
def test_an_option_table_names_only_its_commands_flags(path, heading, command):
    named = {flag for cell in _table(path, heading) for flag in FLAG.findall(cell)}
    assert named and not named - parser_flags(command)


def test_the_deploy_options_paragraph_names_only_deploys_flags():
    text = (REPO / "docs/DEPLOY.md").read_text(encoding="utf-8")
    paragraph = text[text.index("Options of `edgesense deploy`"):].split("\n\n")[0]
    named = set(FLAG.findall(paragraph))
    assert named and not named - parser_flags("deploy")


@pytest.mark.parametrize("path, command", [("docs/DEVICE.md", "run"), ("docs/DEVICE.md", "record"),
                                           ("docs/DEVICE.md", "demo"), ("docs/BENCHMARK.md", "bench"),
                                           ("docs/DEPLOY.md", "deploy")])
def test_every_flag_of_a_command_with_its_own_doc_is_in_that_doc(path, command):
    text = (REPO / path).read_text(encoding="utf-8")
    missing = [flag for flag in parser_flags(command) - {"-h", "--help", "-v", "--verbose"}
               if not re.search(re.escape(flag) + r"(?![\w-])", text)]
    assert not missing


def test_the_quick_sweep_is_as_large_as_the_benchmark_doc_says():
    from edgesense.bench.options import BenchOptions
    from edgesense.bench.streaming import StreamingPlan

    row = next(cell for cell in (REPO / "docs/BENCHMARK.md").read_text(encoding="utf-8").splitlines()
               if cell.startswith("| `--quick` |"))
    stated = re.search(r"a (\d+)-point sweep \((\d+) for a model without `_unknown_`", row)
    assert stated, row
    sweep = StreamingPlan.for_options(BenchOptions(model_path=Path("m.tflite"), speech_commands=REPO,
                                                   quick=True)).sweep
    assert (len(sweep.grid()), len(sweep.grid(context=False))) == tuple(map(int, stated.groups()))


def test_record_says_its_config_is_the_shipped_one_without_config_on_a_device_too():
    """record reads the shipped desktop.yaml without --config, wherever it runs; its help and the
    DEVICE.md row once read as if a deployed device's /opt/edgesense/config.yaml were the default."""
    from edgesense.app import record

    sub = next(a for a in cli.build_parser(["record"])._actions if isinstance(a, argparse._SubParsersAction))
    help_text = next(a.help for a in sub.choices["record"]._actions if "--config" in a.option_strings)
    row = next(cell for cell in _table("docs/DEVICE.md", "### Recording your own places", full=True)
               if cell.startswith("| `--config` |"))
    for text in (help_text, row):
        assert f"firmware_configs/{record.DEFAULT_CONFIG}.yaml" in text
        assert re.search(r"pass its `?/opt/edgesense/config\.yaml", text), text
