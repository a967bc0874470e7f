"""The plugin's tests drive pytest itself, through pytester."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # `pytest_plugins = ["pytester"]` works only in the top-level conftest: this directory's
    # conftest loads after pytest is configured when the whole suite runs, so register it here
    # (pytest_configure of a late conftest runs as it registers; pytester's options get defaults).
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")


@pytest.fixture(autouse=True)
def _jax_imported_outside_the_inner_runs() -> None:
    """pytester's in-process runs drop the modules a run imported; JAX's C extension cannot be
    imported a second time in one process (it aborts), so import it here, before any run."""
    import jax  # noqa: F401
