"""OpenAPI shapes shared by every router: the problem document (RFC 9457) and helpers to declare it."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from app.core.errors import PROBLEM_MEDIA_TYPE

# Text a client names things with (tenants, keys): printable, since it is stored (PostgreSQL text cannot hold NUL:
# the insert failed with a 500, found by the fuzzer), logged and shown back; 1-200 characters.
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]*$"
DisplayName = Annotated[str, Field(min_length=1, max_length=200, pattern=NO_CONTROL_CHARACTERS)]


class ProblemFieldError(BaseModel):
    detail: str = Field(description="What is wrong with this field.")
    code: str | None = Field(default=None, description="Machine-readable error code.")
    pointer: str | None = Field(default=None, description="JSON pointer into the body, e.g. `#/candles/3/h`.")
    parameter: str | None = Field(default=None, description="Name of the offending query or path parameter.")
    header: str | None = Field(default=None, description="Name of the offending header.")


class Problem(BaseModel):
    """RFC 9457 problem details. Extension members (e.g. `errors`, `checks`) may follow."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["/problems/not-found"], description="URI reference identifying the problem type.")
    title: str = Field(examples=["Not found"])
    status: int = Field(examples=[404])
    detail: str = Field(examples=["No route matches GET /v1/nope."])
    instance: str = Field(examples=["/v1/nope"], description="The request path.")
    request_id: str | None = Field(examples=["5f0c8b1e9a3d4c7e8f9a0b1c2d3e4f5a"])
    errors: list[ProblemFieldError] | None = Field(default=None, description="Validation errors (422 only).")


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entry documenting problem+json bodies for the given statuses."""
    return {
        status: {
            "description": _status_description(status),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def _status_description(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
