"""The signal routes use the trading tests' authenticated client (a real key with only `signals:read`)."""

from tests.trading.conftest import signals_client  # noqa: F401 - re-exported fixture
