"""A registry of named model variants, in the style of timm.

Every model a chapter builds is registered under the lower-case name the
papers use (``pvt_v2_b2``, ``convnext_tiny`` ...), so that a reader can say
``hirilib.create_model("pvt_v2_b2")`` and get exactly that network.

>>> from hirilib import create_model, list_models
>>> names = list_models()            # every registered variant, sorted
>>> names == sorted(names)
True
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, Dict, List

import torch.nn as nn

_MODELS: Dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` under its own ``__name__``.

    The function takes keyword overrides (``num_classes``, ``in_chans``,
    ``drop_path_rate`` and any constructor argument) and returns the model.
    """
    name = fn.__name__
    if name in _MODELS and _MODELS[name] is not fn:
        raise ValueError(f"a model named {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def _ensure_models_imported() -> None:
    # Importing the model files runs their @register_model decorators.
    import hirilib.models  # noqa: F401


def list_models(pattern: str = "*") -> List[str]:
    """Names of the registered models, sorted; ``pattern`` is a shell glob.

    >>> from hirilib import list_models
    >>> list_models("no_such_family_*")
    []
    """
    _ensure_models_imported()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def create_model(name: str, num_classes: int = 1000, in_chans: int = 3,
                 drop_path_rate: float = 0.0, **overrides) -> nn.Module:
    """Build the registered model ``name``.

    Unknown names raise a ``ValueError`` that lists the closest matches.

    >>> from hirilib import create_model
    >>> create_model("no_such_model_xyz")
    Traceback (most recent call last):
    ...
    ValueError: unknown model 'no_such_model_xyz' (hirilib.list_models() lists all)
    """
    _ensure_models_imported()
    if not isinstance(name, str) or name not in _MODELS:
        # best matches first; ties broken alphabetically (difflib alone prefers the last)
        score = {n: difflib.SequenceMatcher(None, str(name), n).ratio() for n in _MODELS}
        close = sorted((n for n in _MODELS if score[n] >= 0.5), key=lambda n: (-score[n], n))[:3]
        hint = f"; did you mean: {', '.join(sorted(close))}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (hirilib.list_models() lists all)")
    return _MODELS[name](num_classes=num_classes, in_chans=in_chans,
                         drop_path_rate=drop_path_rate, **overrides)
