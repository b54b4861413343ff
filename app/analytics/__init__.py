"""Pure analytics over numpy arrays: CVD, order flow, SMC, Fibonacci, indicators and the combined signal.

Imports only numpy and the standard library. Entry point: :func:`analyze`.
"""

from app.analytics.cvd import CvdParams, CvdResult
from app.analytics.engine import MODULES, AnalysisParams, AnalysisResult, analyze
from app.analytics.fibonacci import FibonacciParams, FibonacciResult
from app.analytics.indicators import IndicatorParams, IndicatorResult
from app.analytics.orderflow import OrderflowParams, OrderflowResult
from app.analytics.signals import Signal, SignalParams, SignalWeights
from app.analytics.smc import SmcParams, SmcResult
from app.analytics.types import Candles, Liquidations, Trades

__all__ = [
    "MODULES",
    "AnalysisParams",
    "AnalysisResult",
    "Candles",
    "CvdParams",
    "CvdResult",
    "FibonacciParams",
    "FibonacciResult",
    "IndicatorParams",
    "IndicatorResult",
    "Liquidations",
    "OrderflowParams",
    "OrderflowResult",
    "Signal",
    "SignalParams",
    "SignalWeights",
    "SmcParams",
    "SmcResult",
    "Trades",
    "analyze",
]
