"""Small helpers on raw ASGI messages, for the pure ASGI middleware (cheaper than Starlette's header wrappers)."""

from __future__ import annotations

from starlette.types import Message


def append_header(message: Message, header: tuple[bytes, bytes]) -> None:
    """Add one header line to an `http.response.start` message (a repeated name adds a line, as HTTP allows)."""
    headers = message.get("headers")
    if isinstance(headers, list):
        headers.append(header)
    else:  # absent, or another iterable: ASGI allows any
        message["headers"] = [*(headers or ()), header]
