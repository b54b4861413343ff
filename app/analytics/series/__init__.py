"""The signal at every bar of a series, computed in one pass (see ``signal``)."""

from app.analytics.series.signal import SignalSeries, signal_series

__all__ = ["SignalSeries", "signal_series"]
