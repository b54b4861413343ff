"""Seeded circular block bootstrap of a mean, and the seeding scheme shared by every random draw.

Resampling trades one by one would treat overlapping h-bar returns (and runs of the same bias) as independent and
give intervals that are too narrow. The circular block bootstrap (Politis & Romano 1992) draws blocks of ``L``
consecutive observations, wrapping at the end so every observation is equally likely, until ``n`` are drawn; the
last block is cut to fit. ``L = max(h, ceil(n^(1/3)))`` by default (``EvaluationParams.block_for``): at least the
horizon, since h-bar returns overlap over h - 1 lags, and the n^(1/3) rate of the block-bootstrap literature for
the rest. The interval is the 2.5 %-97.5 % percentile of the resampled means.

Vectorised without materialising any resample: the sum of every circular block is precomputed from a cumulative
sum, so one resample costs ``ceil(n / L)`` lookups.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from app.analytics.evaluation.inputs import FloatArray, IntArray

LEVEL = 0.95


def rng_for(seed: int, *labels: object) -> np.random.Generator:
    """An independent, reproducible stream per (seed, horizon, group, purpose): results do not depend on the
    order in which figures are computed."""
    words = [seed, *(zlib.crc32(str(label).encode()) for label in labels)]
    return np.random.default_rng(np.random.SeedSequence(words))


def block_starts(n: int, block: int, resamples: int, rng: np.random.Generator) -> IntArray:
    """The first observation of every block of every resample: ``resamples`` rows of ``ceil(n / block)``."""
    blocks = -(-n // max(1, min(block, n))) if n else 0
    return rng.integers(0, max(n, 1), size=(resamples, blocks), dtype=np.int64)


def block_bootstrap_mean(values: FloatArray, block: int, starts: IntArray) -> tuple[float, float]:
    """The (low, high) 95 % circular block bootstrap interval of ``values.mean()`` for the resamples drawn by
    :func:`block_starts` (two series of the same bars may share them: a paired bootstrap); NaNs when empty."""
    n = values.shape[0]
    if n == 0:
        return math.nan, math.nan
    length = min(block, n)
    last = n - (starts.shape[1] - 1) * length  # the cut last block, 1 … length observations
    cumulative = np.concatenate(([0.0], np.cumsum(np.concatenate((values, values[:length])))))
    full = cumulative[length : length + n] - cumulative[:n]
    partial = cumulative[last : last + n] - cumulative[:n]
    sums = full[starts[:, :-1]].sum(axis=1) + partial[starts[:, -1]]
    low, high = np.quantile(sums / n, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(low), float(high)
