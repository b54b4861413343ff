"""Opaque keyset cursors: (created_at, id) of the last row of a page, URL-safe base64."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import Query

from app.core.errors import AppError

CursorParam = Annotated[str | None, Query(description="Opaque cursor: the previous page's `next_cursor`")]


class InvalidCursor(AppError):
    slug = "invalid-cursor"
    title = "Invalid pagination cursor"
    status = 422
    description = "The `cursor` query parameter is not one this service issued."


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not cursor:  # absent, or `?cursor=` as clients that always send the parameter write the first page
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, row_id = base64.urlsafe_b64decode(padded.encode()).decode().split("|")
        parsed = datetime.fromisoformat(created_at)
        if parsed.tzinfo is None:
            raise ValueError("naive")
        return parsed, uuid.UUID(row_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor(
            "The cursor is malformed; use `next_cursor` from the previous page.",
            extensions={"errors": [{"parameter": "cursor", "in": "query", "detail": "malformed cursor"}]},
        ) from exc
