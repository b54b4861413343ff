"""Market-data ingestion: venue connectors, order books and bar aggregation.

This package imports only the standard library, numpy, orjson, websockets and httpx; limits are
explicit constructor parameters so the configuration layer can wire them from settings.
"""
