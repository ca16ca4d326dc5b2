"""hirilib: the code that the book's chapters build, from attention to HIRI-ViT.

>>> import hirilib
>>> hirilib.quick_mode() in (True, False)
True
"""

__version__ = "0.1.0"

from .registry import create_model, list_models, register_model  # noqa: E402
from .runtime import choose, get_device, quick_mode, seed_everything, setup  # noqa: E402

__all__ = ["create_model", "list_models", "register_model", "quick_mode", "choose", "get_device",
           "seed_everything", "setup", "__version__"]
