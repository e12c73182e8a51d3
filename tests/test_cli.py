"""The one CLI: every stage's --help renders (argparse %-formats help text, so a stray % breaks it)."""

from __future__ import annotations

import pytest

from edgetune.cli import COMMANDS, main


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_stage_has_working_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: edgetune " + command)


def test_top_level_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
