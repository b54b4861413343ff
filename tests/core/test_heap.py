"""The start-up heap freezer: frozen while the app runs, released when it stops."""

from __future__ import annotations

import gc

from fastapi import FastAPI

from app.core.heap import startup_heap_freezer
from tests.helpers import running


async def test_the_heap_is_frozen_after_startup_and_released_at_shutdown() -> None:
    app = FastAPI()
    app.include_router(startup_heap_freezer())
    assert gc.get_freeze_count() == 0
    async with running(app):
        assert gc.get_freeze_count() > 10_000  # the interpreter and every imported library at least
    assert gc.get_freeze_count() == 0
