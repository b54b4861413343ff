"""Trading domain: routes that turn market data into analyses and signals (POST /v1/analyze)."""
