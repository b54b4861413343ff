"""Settings of tenant alert rules (`app/alerts`): how many a tenant may keep and how large a condition may be."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings


class AlertSettings(BaseSettings):
    # Rules per tenant (counted in SQL when one is created, so concurrent creations cannot pass it).
    alert_max_rules_per_tenant: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    # A condition is evaluated for every rule at every bar close of its market: its size is bounded so one rule
    # cannot cost more than a few microseconds (nesting depth of all/any/not, and nodes in the whole tree).
    alert_condition_max_depth: Annotated[int, Field(ge=1, le=64)] = 8
    alert_condition_max_nodes: Annotated[int, Field(ge=1, le=10_000)] = 64
    alert_page_max: Annotated[int, Field(ge=1, le=10_000)] = 200
