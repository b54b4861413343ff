"""Shared fixtures: the real captures in ../shared/data (skipped with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.market.mock_exchange import Capture, load_capture

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CAPTURES = SHARED_DATA / "captures"


def _capture(name: str) -> Capture:
    folder = CAPTURES / name
    if not (folder / "ws.txt").is_file() or not (folder / "http.txt").is_file():
        pytest.skip(f"real capture not available: {folder} is absent (../shared/data is not in a user's clone)")
    return load_capture(folder)


@pytest.fixture(scope="session")
def spot_capture() -> Capture:
    return _capture("binance_spot")


@pytest.fixture(scope="session")
def futures_capture() -> Capture:
    return _capture("binance_futures")
