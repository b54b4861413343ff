"""The README's configuration table stays complete: every setting is documented by its environment variable."""

from __future__ import annotations

from pathlib import Path

from app.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_is_in_the_configuration_table() -> None:
    table = README.read_text(encoding="utf-8").split("## Configuration", 1)[1].split("\n## ", 1)[0]
    missing = [
        f"DELTAFLOW_{name.upper()}" for name in Settings.model_fields if f"DELTAFLOW_{name.upper()}" not in table
    ]
    assert missing == [], "document these settings in README.md's configuration table"
