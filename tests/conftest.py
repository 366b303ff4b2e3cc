"""Shared fixtures: real servers (one per test session) and reactor hygiene."""

pytest_plugins = [
    "tests.fixtures.hygiene",
    "tests.fixtures.ircd",
    "tests.fixtures.postgres",
    "tests.fixtures.prosody",
    "tests.fixtures.sip_peers",
    "tests.fixtures.store",
]
