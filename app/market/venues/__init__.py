"""Venue connectors; each normalises an exchange's wire format to the events in ``app.market.events``."""
