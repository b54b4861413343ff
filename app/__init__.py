"""Deltaflow: a self-hostable, multi-tenant crypto trading-signal REST API."""

__version__ = "0.1.0"
