"""edgesense.app.cli: one console script over every command, each module in the edgesense namespace."""

import importlib

from edgesense.app import cli


def test_every_command_module_lives_in_edgesense_and_has_the_command_interface():
    for name, (module_name, help_text) in cli.COMMANDS.items():
        assert module_name.startswith("edgesense."), name
        module = importlib.import_module(module_name)  # the test environment has every extra
        assert callable(module.add_arguments) and callable(module.run), module_name
        assert help_text


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "synth-commands" in capsys.readouterr().out
