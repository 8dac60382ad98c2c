"""Shared fixtures. Tests never see the developer's installed third-party plugins unless they ask for them."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_third_party_plugins(monkeypatch):
    monkeypatch.setenv("LRFR_LOAD_PLUGINS", "")
    monkeypatch.delenv("LRFR_BLOCK_PLUGINS", raising=False)
    import lrfr_plugins

    lrfr_plugins.cache_clear()
    yield
    lrfr_plugins.cache_clear()


@pytest.fixture
def registry():
    """A fresh registry with the built-ins only."""
    from lrfr_plugins.manager import get_plugin_manager
    from lrfr_plugins.registry import Registry

    return Registry.from_manager(get_plugin_manager(entry_points=False))


def run_lrfr(*args: str, cwd: pathlib.Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run the real console entry point in a subprocess (as a user would)."""
    full_env = {**os.environ, "LRFR_LOAD_PLUGINS": "", **(env or {})}
    return subprocess.run([sys.executable, "-m", "lrfr_plugins.cli", *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def lrfr():
    return run_lrfr


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path for test distributions (plugin_factory.make_distribution); their modules are
    forgotten afterwards, and LRFR_LOAD_PLUGINS no longer filters them."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    monkeypatch.delenv("LRFR_LOAD_PLUGINS", raising=False)
    yield path
    for name in [m for m in sys.modules if m.startswith("lrfrtest_")]:
        del sys.modules[name]
