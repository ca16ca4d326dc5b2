"""Access to reference implementations for equivalence tests.

timm's model code does not use torchvision, but ``import timm`` imports
torchvision's transforms (for its data pipeline).  Where torchvision is
missing or cannot be imported (the CPU build of torch here has no matching
torchvision), ``import_timm`` puts an inert stand-in for ``torchvision`` in
front of the import system for the duration of the import, so the models can
still be built and compared.  Nothing in ``hirilib`` depends on either.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from unittest import mock

import pytest


class _InertTorchvision(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = mock.MagicMock(name=spec.name)
        module.__path__, module.__spec__, module.__name__ = [], spec, spec.name
        return module

    def exec_module(self, module):
        pass


def import_timm():
    """timm, or skip the test saying how to get it."""
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed; the equivalence test needs it "
                    "(pip install --no-deps timm)")
    try:
        import torchvision  # noqa: F401
        return importlib.import_module("timm")
    except Exception:
        pass
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    finder = _InertTorchvision()
    sys.meta_path.insert(0, finder)
    try:
        return importlib.import_module("timm")
    finally:
        sys.meta_path.remove(finder)
