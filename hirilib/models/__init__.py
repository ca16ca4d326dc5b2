"""One file per paper; importing this package registers every variant.

Each file holds its modules, its variant table, its factories (registered with
``hirilib.registry.register_model``) and ``convert_state_dict``, nothing else:
published numbers live in ``hirilib.reference``, closed-form costs in
``hirilib.analytic``, timings in ``hirilib.bench``.
"""

# importing a file registers its variants
from . import cas_vit, convnext, convnext_roadmap, hire_mlp, hiri_vit, pvt_v2  # noqa: F401

__all__ = ["cas_vit", "convnext", "convnext_roadmap", "hire_mlp", "hiri_vit", "pvt_v2"]
