"""A registry of named model variants, in the style of timm.

Every model a chapter builds is registered under the lower-case name the
papers use (``pvt_v2_b2``, ``convnext_tiny`` ...), so that a reader can say
``hirilib.create_model("pvt_v2_b2")`` and get exactly that network; with
``pretrained=True``, the published weights **of that variant**, fetched,
converted and loaded through one code path for every family.

A model file registers each variant explicitly, with where its weights live
and the function that maps their keys onto ours::

    @register_model(pretrained="timm/pvt_v2_b0.in1k", converter=convert_state_dict)
    def pvt_v2_b0(num_classes=1000, in_chans=3, drop_path_rate=0.0, **kwargs): ...

>>> from hirilib import create_model, list_models
>>> names = list_models()            # every registered variant, sorted
>>> names == sorted(names)
True
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch.nn as nn


@dataclass(frozen=True)
class ModelEntry:
    """One registered variant: its factory, the Hugging Face Hub repository of its
    published weights (None if there are none) and the converter of their keys."""

    name: str
    factory: Callable[..., nn.Module]
    pretrained: Optional[str] = None
    converter: Optional[Callable] = None

    @property
    def family(self) -> str:
        """The model file it comes from (``pvt_v2``, ``convnext`` ...)."""
        return self.factory.__module__.rsplit(".", 1)[-1]


_MODELS: Dict[str, ModelEntry] = {}


def register_model(fn: Optional[Callable[..., nn.Module]] = None, *,
                   pretrained: Optional[str] = None, converter: Optional[Callable] = None):
    """Decorator: register ``fn`` under its own ``__name__``.

    Use it bare (``@register_model``) or with the variant's published weights
    (``@register_model(pretrained="timm/name.tag", converter=convert_state_dict)``).
    The function takes keyword overrides (``num_classes``, ``in_chans``,
    ``drop_path_rate`` and any constructor argument) and returns the model.
    """
    def deco(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = f.__name__
        old = _MODELS.get(name)
        if old is not None and old.factory.__qualname__ != f.__qualname__:
            raise ValueError(f"a model named {name!r} is already registered")
        _MODELS[name] = ModelEntry(name, f, pretrained, converter)
        return f

    return deco(fn) if fn is not None else deco


def _ensure_models_imported() -> None:
    # Importing the model files runs their @register_model decorators.
    import hirilib.models  # noqa: F401


def list_models(pattern: str = "*", pretrained: bool = False) -> List[str]:
    """Names of the registered models, sorted; ``pattern`` is a shell glob;
    ``pretrained=True`` lists only those with published weights.

    >>> from hirilib import list_models
    >>> list_models("no_such_family_*")
    []
    """
    _ensure_models_imported()
    return sorted(n for n, e in _MODELS.items()
                  if fnmatch.fnmatch(n, pattern) and (e.pretrained or not pretrained))


def get_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; unknown names raise a ``ValueError`` that lists
    the closest matches."""
    _ensure_models_imported()
    if not isinstance(name, str) or name not in _MODELS:
        # best matches first; ties broken alphabetically (difflib alone prefers the last)
        score = {n: difflib.SequenceMatcher(None, str(name), n).ratio() for n in _MODELS}
        close = sorted((n for n in _MODELS if score[n] >= 0.5), key=lambda n: (-score[n], n))[:3]
        hint = f"; did you mean: {', '.join(sorted(close))}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (hirilib.list_models() lists all)")
    return _MODELS[name]


def _unexpected_argument(name: str, entry: ModelEntry, error: TypeError, kwargs: dict):
    """A clear ``ValueError`` for an override the model does not take, listing those it does."""
    m = re.search(r"unexpected keyword argument '(\w+)'", str(error))
    if not m or m.group(1) not in kwargs:
        return None
    import torch

    with torch.device("meta"):
        cls = type(entry.factory())
    takes = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")]
    extra = getattr(cls, "override_fields", ())
    return ValueError(f"{name} has no argument {m.group(1)!r}; it takes: "
                      f"{', '.join(list(takes) + list(extra))}")


def create_model(name: str, pretrained: bool = False, checkpoint: Optional[str | os.PathLike] = None,
                 num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
                 **overrides) -> nn.Module:
    """Build the registered model ``name``, optionally with weights.

    Args:
        pretrained: load the variant's published weights (``list_models(pretrained=True)``),
            from the local Hugging Face cache or the Hub.
        checkpoint: load weights from this local file instead (``.safetensors``, ``.bin``,
            ``.pth``), in ours or the published keys.
        num_classes, in_chans, drop_path_rate, **overrides: constructor arguments; any
            argument of the model's class can be overridden for every variant.  A
            classifier that does not fit ``num_classes`` is not loaded (with a warning).

    >>> from hirilib import create_model
    >>> create_model("no_such_model_xyz")
    Traceback (most recent call last):
    ...
    ValueError: unknown model 'no_such_model_xyz' (hirilib.list_models() lists all)
    """
    from hirilib.layers.checks import check_model_args

    entry = get_entry(name)
    check_model_args(num_classes, in_chans, drop_path_rate)
    if pretrained and not entry.pretrained and checkpoint is None:
        have = list_models(pretrained=True)
        raise ValueError(f"no published weights are known for {name!r}; these have them: "
                         f"{', '.join(have)}. Or pass checkpoint= a local file")
    kwargs = dict(num_classes=num_classes, in_chans=in_chans, drop_path_rate=drop_path_rate,
                  **overrides)
    try:
        model = entry.factory(**kwargs)
    except TypeError as e:
        clear = _unexpected_argument(name, entry, e, kwargs)
        if clear is None:
            raise
        raise clear from None
    if pretrained or checkpoint is not None:
        from hirilib import hub

        path = checkpoint if checkpoint is not None else hub.download_weights(entry.pretrained)
        state_dict = hub.read_checkpoint(path)
        if entry.converter is not None:
            state_dict = entry.converter(state_dict)
        hub.load_weights(model, state_dict, source=str(path))
    return model
