"""Test-suite settings shared by the files in tests/."""

import pytest


def pytest_collection_modifyitems(config, items):
    """Tests marked ``fullmode`` run every chapter's full-mode code paths (minutes on 2
    cores): they run only when the marker expression names them (``pytest -m fullmode``),
    so that a plain ``pytest`` stays fast."""
    if "fullmode" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="full mode at small sizes takes minutes: pytest -m fullmode")
    for item in items:
        if "fullmode" in item.keywords:
            item.add_marker(skip)
