"""Core fixtures: the key factory for the tests that go through authenticated routes."""

from tests.keys.conftest import make_key  # noqa: F401 - re-exported fixture
