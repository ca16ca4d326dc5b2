"""Feed-forward networks on tokens ``(B, N, C)``: the plain FFN and two
convolutional variants that give a Transformer block 2-D locality.

    FFN(X)     = FC(act(FC(X)))                              (Vaswani et al. 2017)
    ConvFFN(X) = FC(act(DWConv(FC(X))))                      (PVTv2 Sec. 3.2)
    CFFN(X)    = FC(DWConv(z) + z),  z = act(FC(X))          (HIRI-ViT Sec. 3, Eq. 2)

The depthwise 3x3 convolution sees each token's 3x3 neighbourhood on the
H x W grid, which is what lets PVTv2 drop the fixed position embedding.
HIRI-ViT keeps a residual around it, so the block can fall back to a plain
FFN, and normalises its CFFN blocks with BatchNorm (Sec. 4.4).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange

from .checks import check_tokens
from .norm import make_norm, norm2d


class Mlp(nn.Module):
    """The Transformer's position-wise FFN: Linear, activation, Linear.

    ``use_conv=True`` writes the two layers as 1x1 convolutions and takes maps
    ``(B, C, H, W)`` instead of tokens ``(B, N, C)``: the same function, with the
    weights ``(out, in)`` stored as ``(out, in, 1, 1)`` (timm's name for the switch;
    Hire-MLP and CAS-ViT keep their maps channels-first and use it).
    ``norm`` ('bn', 'ln' or None) is an optional pre-norm inside the module, as for
    ``ConvFFN`` and ``CFFN`` (HIRI-ViT's Table 7 path swaps LN for BN before it).
    """

    #: a BN pre-norm folds into fc1 at inference (``hirilib.deploy.fuse_bn``)
    bn_fusion = (("norm", "fc1", "before"),)

    def __init__(self, dim: int, hidden_dim: int | None = None, out_dim: int | None = None,
                 act_layer=nn.GELU, drop: float = 0.0, use_conv: bool = False,
                 norm: str | None = None):
        super().__init__()
        hidden_dim = hidden_dim or 4 * dim
        if use_conv:
            self.norm = norm2d(norm, dim) if norm else nn.Identity()
        else:
            self.norm = make_norm(norm, dim)
        layer = (lambda i, o: nn.Conv2d(i, o, 1)) if use_conv else nn.Linear
        self.fc1 = layer(dim, hidden_dim)
        self.act = act_layer()
        self.fc2 = layer(hidden_dim, out_dim or dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, H: int | None = None,
                W: int | None = None) -> torch.Tensor:
        # H and W are accepted (and ignored) so that every FFN here is called alike.
        x = self.drop(self.act(self.fc1(self.norm(x))))  # (B, N, hidden) or (B, hidden, H, W)
        return self.drop(self.fc2(x))                    # (B, N, C) or (B, C, H, W)


class DWConv(nn.Module):
    """Depthwise 3x3 convolution applied to tokens laid out on an H x W grid."""

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = rearrange(x, "b (h w) c -> b c h w", h=H, w=W)
        x = self.dwconv(x)                           # (B, C, H, W)
        return rearrange(x, "b c h w -> b (h w) c")  # (B, N, C)


class ConvFFN(nn.Module):
    """PVTv2's convolutional FFN: fc1, [ReLU], DWConv 3x3, act, fc2.

    ``extra_relu=True`` is the linear variant's ReLU after fc1 (PVTv2-Li).
    ``norm`` ('bn', 'ln' or None) is an optional pre-norm inside the module,
    for blocks that want the FFN to normalise its own input.
    """

    #: a BN pre-norm folds into fc1 at inference (``hirilib.deploy.fuse_bn``)
    bn_fusion = (("norm", "fc1", "before"),)

    def __init__(self, dim: int, hidden_dim: int | None = None, act_layer=nn.GELU,
                 drop: float = 0.0, extra_relu: bool = False, norm: str | None = None):
        super().__init__()
        hidden_dim = hidden_dim or 4 * dim
        self.dim = dim
        self.norm = make_norm(norm, dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.relu = nn.ReLU() if extra_relu else nn.Identity()
        self.dwconv = DWConv(hidden_dim)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        check_tokens(x, self.dim, H, W, type(self).__name__)
        x = self.relu(self.fc1(self.norm(x)))          # (B, N, hidden)
        x = self.drop(self.act(self.dwconv(x, H, W)))  # (B, N, hidden)
        return self.drop(self.fc2(x))                  # (B, N, C)


class CFFN(nn.Module):
    """HIRI-ViT's convolutional FFN: FC(DWConv(z) + z), z = act(FC(X)).

    Unlike ``ConvFFN`` the depthwise convolution sits on a residual path and
    comes after the activation.  ``norm`` ('bn', 'ln' or None) is the pre-norm
    of the CFFN block; HIRI-ViT uses BN (Sec. 4.4: +7.6% inference speed at
    equal accuracy, and it folds into fc1 at inference).
    """

    #: the BN pre-norm folds into fc1 at inference (``deploy.fuse_bn``; Sec. 4.4)
    bn_fusion = (("norm", "fc1", "before"),)

    def __init__(self, dim: int, hidden_dim: int | None = None, act_layer=nn.GELU,
                 drop: float = 0.0, norm: str | None = None):
        super().__init__()
        hidden_dim = hidden_dim or 4 * dim
        self.dim = dim
        self.norm = make_norm(norm, dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = act_layer()
        self.dwconv = DWConv(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        check_tokens(x, self.dim, H, W, type(self).__name__)
        z = self.drop(self.act(self.fc1(self.norm(x))))  # (B, N, hidden)
        z = self.dwconv(z, H, W) + z                     # (B, N, hidden)
        return self.drop(self.fc2(z))                    # (B, N, C)
