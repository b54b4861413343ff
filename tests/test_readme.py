"""The README's configuration table stays complete: every setting is documented by its environment variable."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from app.cli import build_parser
from app.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_is_in_the_configuration_table() -> None:
    table = README.read_text(encoding="utf-8").split("## Configuration", 1)[1].split("\n## ", 1)[0]
    missing = [
        f"DELTAFLOW_{name.upper()}" for name in Settings.model_fields if f"DELTAFLOW_{name.upper()}" not in table
    ]
    assert missing == [], "document these settings in README.md's configuration table"


def _documented_commands() -> list[str]:
    """Every `deltaflow …` command the README and DEVELOPERS.md show, inline or in a code block."""
    found: list[str] = []
    for document in (README, README.with_name("DEVELOPERS.md")):
        text = document.read_text(encoding="utf-8")
        found += re.findall(r"`(deltaflow [^`]+)`", text)
        found += [line.split("#", 1)[0].strip() for line in text.splitlines() if line.startswith("deltaflow ")]
    return found


def test_every_documented_command_line_parses() -> None:
    commands = [command for command in _documented_commands() if " | " not in command]  # `a | b` lists choices
    assert any(command.startswith("deltaflow keys create") for command in commands)
    for command in commands:
        words = [word.replace("…", "x") for word in shlex.split(command)][1:]
        try:
            build_parser().parse_args(words)
        except SystemExit:
            raise AssertionError(f"the documented command does not parse: {command}") from None
