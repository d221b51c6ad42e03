"""``lightning-unlearn --help`` says what the tool does and names every subcommand, ``compare``
included (it has a parser of its own, so the LightningCLI's list alone would miss it)."""

from __future__ import annotations

import pytest

from lightning_unlearn.cli import console_main


def test_help_says_what_the_tool_does_and_lists_every_subcommand(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        console_main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "make a CLIP model forget classes" in text
    assert "Lightning Trainer command line tool" not in text
    for subcommand in ("fit", "validate", "test", "compare"):
        assert subcommand in text.split("Subcommands:", 1)[1], subcommand
