"""Access to reference implementations for equivalence tests.

``hirilib.book.import_timm`` imports timm even where torchvision cannot be imported
(timm's model code does not use it); here a missing timm skips the test instead.
"""

from __future__ import annotations

import pytest

from hirilib.book import import_timm as _import_timm


def import_timm():
    """timm, or skip the test saying how to get it."""
    try:
        return _import_timm()
    except ImportError as e:
        pytest.skip(f"the equivalence test needs timm: {e}")
