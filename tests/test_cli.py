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


def test_edgetune_warnings_are_one_line_and_others_hidden(capsys):
    import warnings

    from edgetune._console import edgetune_warnings
    from edgetune.train import folders

    saved = warnings.showwarning
    try:
        edgetune_warnings("train", verbose=False)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning("skipping 2 unreadable file(s)", UserWarning, folders.__file__, 10)
            warnings.showwarning("some library detail", DeprecationWarning, warnings.__file__, 10)
        err = capsys.readouterr().err
        assert err == "edgetune train: warning: skipping 2 unreadable file(s)\n"
    finally:
        warnings.showwarning = saved


def test_quiet_console_drops_native_log_lines_only():
    from edgetune._console import NATIVE_LOG

    for line in (b"I0000 00:00:1795689917.265866   22583 cudart_stub.cc:31] Could not find cuda drivers",
                 b"E0000 00:00:1795688361.541243    7975 cuda_platform.cc:52] failed call to cuInit: INTERNAL",
                 b"W0000 00:00:1732.12 4242 tf_tfl_flatbuffer_helpers.cc:365] Ignored output_format.",
                 b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
                 b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU."):
        assert NATIVE_LOG.match(line), line
    for line in (b"edgetune train: error: --epochs must be >= 1", b"Epoch 1/10", b"[pipeline] train: -> runs/x"):
        assert not NATIVE_LOG.match(line), line
