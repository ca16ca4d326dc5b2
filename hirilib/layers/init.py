"""Weight initialisation shared by several models (each model file says which it uses)."""

from __future__ import annotations

import math

import torch.nn as nn


def trunc_normal_init(module: nn.Module, std: float = 0.02, convs: bool = True) -> None:
    """Linear (and, with ``convs``, Conv2d) weights ~ truncated normal(0, std), biases 0;
    norms' weights 1, biases 0.  Apply with ``model.apply(trunc_normal_init)``.

    ConvNeXt and Hire-MLP initialise convs and linears this way; CAS-ViT only its
    linears (``convs=False``), leaving convs at PyTorch's default.
    """
    if isinstance(module, nn.Linear) or (convs and isinstance(module, nn.Conv2d)):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d, nn.BatchNorm1d)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def fan_out_init(module: nn.Module, std: float = 0.02) -> None:
    """PVT's initialisation, which the HIRI-ViT authors' released code (Wave-ViT,
    Dual-ViT) also uses: Linear weights ~ truncated normal(0, std), Conv2d weights ~
    normal(0, sqrt(2 / fan_out)) with fan_out = k*k*C_out/groups (He init, fan-out
    mode), biases 0; norms' weights 1, biases 0.  Apply with
    ``model.apply(fan_out_init)``.
    PVTv2 (chapter 2) uses it.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        fan_out = k * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d, nn.BatchNorm1d)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
