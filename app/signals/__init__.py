"""Signals on ingested market data: one signal, batches and streams, computed once per closed bar."""
