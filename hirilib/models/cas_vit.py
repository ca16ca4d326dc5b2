"""CAS-ViT (Zhang et al., "CAS-ViT: Convolutional Additive Self-attention Vision
Transformers for Efficient Mobile Applications", arXiv 2408.03703).  Chapter 5 builds
it.

Self-attention compares every query with every key (an N x N matrix, then a
softmax).  CAS-ViT replaces that similarity by an *additive* one,
Sim(Q, K) = Phi(Q) + Phi(K), where the context mapping Phi is a spatial operator
followed by a channel operator, each a sigmoid gate computed by convolutions; the
convolutional additive token mixer (CATM) is then

    CATM(X) = proj( dwc( Phi_q(Q) + Phi_k(K) ) * V ),     Q, K, V = 1x1 conv(X),

with no matrix product over tokens and no softmax: its cost is linear in H W and
every layer is a convolution, a BatchNorm or an element-wise operation, which is
what makes the network easy to deploy (Sec. 3.2).  The block adds a convolutional
"local integration" before the mixer and an MLP after it, with BN pre-norms
(Sec. 3.3, Fig. 3); every BN folds into a neighbouring conv or linear layer at
inference (``hirilib.deploy.fuse_bn``).

Where the paper is silent the official code (``Tianfang-Zhang/CAS-ViT``,
``classification/model/rcvit.py``) decides, so that the published parameter counts
are reproduced and the released checkpoints load (``convert_state_dict``).  Published
numbers: ``hirilib.reference.CAS_VIT``.

>>> import torch, hirilib
>>> m = hirilib.create_model("cas_vit_xs", dims=(8, 16, 24, 32), num_classes=3).eval()
>>> [tuple(f.shape) for f in m.forward_pyramid(torch.zeros(1, 3, 72, 88))]
[(1, 8, 18, 22), (1, 16, 9, 11), (1, 24, 5, 6), (1, 32, 3, 3)]
"""

from __future__ import annotations

import re
from functools import partial
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn

from hirilib.layers import (ClassifierHead, ConvNormAct, DropPath, HierarchicalBackbone,
                            Mlp, Stage, check_model_args, check_positive_ints,
                            check_rate, drop_path_schedule, make_act, trunc_normal_init)
from hirilib.registry import register_model

__all__ = ["SpatialOperator", "ChannelOperator", "ContextMapping",
           "ConvolutionalAdditiveTokenMixer", "LocalIntegration", "Block", "CASViT",
           "VARIANTS", "convert_state_dict"]


# -------------------------------------------------------------------------- the mixer


class SpatialOperator(nn.Module):
    """The spatial operator (Sec. 3.2): one gate per position, shared by all channels,

        S(x) = x * sigmoid( W_{1x1, C->1}( ReLU( BN( DWConv3x3(x) ) ) ) ).

    ``(B, C, H, W) -> (B, C, H, W)``; the gate is ``(B, 1, H, W)``.  The depthwise conv
    and its BN are one ``ConvNormAct`` (the BN folds into the conv at inference)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gate = nn.Sequential(
            ConvNormAct(dim, dim, 3, groups=dim, norm="bn", act="relu"),  # (B, C, H, W)
            nn.Conv2d(dim, 1, 1, bias=False),                             # (B, 1, H, W)
            nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return x * self.gate(x)                          # gate broadcast over C


class ChannelOperator(nn.Module):
    """The channel operator (Sec. 3.2): one gate per channel, shared by all positions,
    a squeeze-and-excitation without the bottleneck,

        Ch(x) = x * sigmoid( W_{1x1, C->C}( mean_{H, W}(x) ) ).

    ``(B, C, H, W) -> (B, C, H, W)``; the gate is ``(B, C, 1, 1)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),            # (B, C, 1, 1)
            nn.Conv2d(dim, dim, 1, bias=False),  # (B, C, 1, 1)
            nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return x * self.gate(x)


class ContextMapping(nn.Sequential):
    """The context mapping Phi = Ch o S (Sec. 3.2): the spatial operator first, then the
    channel operator on its output.  ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.spatial = SpatialOperator(dim)
        self.channel = ChannelOperator(dim)


class ConvolutionalAdditiveTokenMixer(nn.Module):
    """CATM (Sec. 3.2, Eq. 6 and Fig. 2d): the additive similarity Phi_q(Q) + Phi_k(K)
    in place of softmax(Q K^T), then

        out = proj( dwc( Phi_q(Q) + Phi_k(K) ) * V ).

    Q, K and V come from one 1x1 conv (no bias, as in the official code); Phi_q and
    Phi_k are two ``ContextMapping`` s with *separate* weights; ``dwc`` (the paper's
    Gamma, which integrates the context) and ``proj`` are depthwise 3x3 convs.  No
    matrix product over tokens and no softmax: the cost is linear in H W.
    ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, dim: int, qkv_bias: bool = False, drop: float = 0.0):
        super().__init__()
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=qkv_bias)
        self.phi_q = ContextMapping(dim)
        self.phi_k = ContextMapping(dim)
        self.dwc = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)   # Gamma
        self.proj = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.proj_drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        q, k, v = self.qkv(x).chunk(3, dim=1)            # (B, C, H, W) each
        sim = self.phi_q(q) + self.phi_k(k)              # (B, C, H, W): Sim(Q, K)
        return self.proj_drop(self.proj(self.dwc(sim) * v))


# -------------------------------------------------------------------------- the block


class LocalIntegration(nn.Sequential):
    """The block's first branch (Sec. 3.3, Fig. 3): 1x1 conv, BN, depthwise 3x3 conv,
    GELU, 1x1 conv (the official models pass GELU; the class default there is ReLU).
    Keys ``pw1.conv``, ``pw1.norm``, ``dw.conv``, ``pw2``.  Maps ``(B, C, H, W)``."""

    def __init__(self, dim: int, act: str = "gelu"):
        super().__init__()
        self.pw1 = ConvNormAct(dim, dim, 1, norm="bn")             # BN folds in here
        self.dw = ConvNormAct(dim, dim, 3, groups=dim, norm=None, act=act)
        self.pw2 = nn.Conv2d(dim, dim, 1)


class Block(nn.Module):
    """The CAS-ViT block (Sec. 3.3, Fig. 3), on maps ``(B, C, H, W)``:

        x = x + LocalIntegration(x)
        x = x + DropPath(CATM(BN(x)))
        x = x + DropPath(Mlp(BN(x)))

    The local integration has no pre-norm and no drop path (as in the official code).
    The MLP is two 1x1 convs with GELU, 4x wide.  Both BN pre-norms fold into the 1x1
    conv that follows them at inference (``bn_fusion``)."""

    #: BN pre-norms folded into the next 1x1 conv by ``hirilib.deploy.fuse_bn``
    bn_fusion = (("norm1", "attn.qkv", "before"), ("norm2", "mlp.fc1", "before"))

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0,
                 drop_path: float = 0.0, act: str = "gelu", qkv_bias: bool = False):
        super().__init__()
        self.local_integration = LocalIntegration(dim, act)
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = ConvolutionalAdditiveTokenMixer(dim, qkv_bias, drop)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=partial(make_act, act),
                       drop=drop, use_conv=True)
        self.drop_path = DropPath.make(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:       # (B, C, H, W)
        x = x + self.local_integration(x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))    # (B, C, H, W)


# -------------------------------------------------------------------------- the model


class CASViT(HierarchicalBackbone):
    """CAS-ViT (Sec. 3.3, Fig. 3): a stem of two stride-2 3x3 convs (each with BN and
    ReLU; 224 -> 56), four stages of ``Block`` s at strides 4, 8, 16, 32 with a stride-2
    3x3 conv + BN (no activation) before stages 2-4, and a BN, mean, Linear head.

    Args:
        depths, dims: blocks and channels per stage.
        mlp_ratio: MLP width over C (4 in every variant).
        num_classes, in_chans: classes (0: no classifier) and input channels.
        drop_rate: dropout after the mixer's ``proj`` and inside the MLP.
        drop_path_rate: stochastic depth, linear from 0 to this over all blocks.
        distillation: a second classifier, DeiT's distillation head.  The published
            parameter counts include it, and the released checkpoints carry it; the
            logits are the mean of the two heads' (see ``forward_head``).
        qkv_bias: a bias in the Q, K, V conv (none in the official models).
        act: the activation of the local integration and the MLP.

    Only the linear layers are initialised (truncated normal, std .02, bias 0); convs
    keep PyTorch's default initialisation, as in the official code.  The interface
    (``forward_pyramid``, ``forward_features``, ``check_input`` ...) comes from
    ``HierarchicalBackbone``.
    """

    #: the padded stride-2 convs round sizes up (ceil(H / 2)), so any size works
    size_multiple = min_input_size = 1
    size_reason = "padded stride-2 convolutions, which round sizes up"

    def __init__(self, depths: Sequence[int] = (2, 2, 4, 2),
                 dims: Sequence[int] = (48, 56, 112, 220), mlp_ratio: float = 4.0,
                 num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, distillation: bool = True,
                 qkv_bias: bool = False, act: str = "gelu"):
        super().__init__()
        check_model_args(num_classes, in_chans, drop_path_rate)
        depths = check_positive_ints("depths", depths, 4)
        dims = check_positive_ints("dims", dims, 4)
        check_rate("drop_rate", drop_rate)
        if not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be a positive number, got {mlp_ratio!r}")
        if dims[0] < 2:
            raise ValueError(f"dims[0] must be at least 2 (the stem's first conv has "
                             f"dims[0] // 2 channels), got {dims[0]}")
        make_act(act)  # a clear error for an unknown name, before building anything
        self.in_chans, self.num_classes, self.dims = in_chans, num_classes, list(dims)
        self.num_features = dims[-1]
        self.distillation = bool(distillation)
        self.stem = nn.Sequential(                                  # (B, C1, H/4, W/4)
            ConvNormAct(in_chans, dims[0] // 2, 3, stride=2, norm="bn", act="relu"),
            ConvNormAct(dims[0] // 2, dims[0], 3, stride=2, norm="bn", act="relu"))
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        stages, j = [], 0
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            down = (ConvNormAct(dims[i - 1], dim, 3, stride=2, norm="bn") if i > 0
                    else nn.Identity())                          # (B, C_i, H_i, W_i)
            blocks = [Block(dim, mlp_ratio, drop_rate, dpr[j + k], act, qkv_bias)
                      for k in range(depth)]
            stages.append(Stage(down, blocks))
            j += depth
        self.stages = nn.ModuleList(stages)
        self.head = ClassifierHead(dims[-1], num_classes, norm="bn", norm_first=True,
                                   distillation=distillation)
        self.apply(partial(trunc_normal_init, convs=False))  # Linear only, as released

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False,
                     return_dist: bool = False):
        """BN, mean over positions, Linear: ``(B, C4, h, w) -> (B, num_classes)``.

        With the distillation head the logits are the mean of the two classifiers', in
        training as in evaluation.  (The official model returns the tuple
        ``(cls, dist)`` in training mode and their mean in eval mode; a tuple would
        break the interface every model here keeps, ``forward(x) -> (B, num_classes)``,
        and the training loop built on it, and would make the output's type depend on
        the mode.)  A distillation loss asks for both explicitly: ``return_dist=True``
        gives ``(cls, dist)``, each ``(B, num_classes)``."""
        return self.head(x, pre_logits=pre_logits, return_dist=return_dist)


# ------------------------------------------------------------------------ checkpoints


_OFFICIAL = [  # (official key pattern, ours), applied in order; s: stage, b: block
    (r"^patch_embed\.0\.", "stem.0.conv."), (r"^patch_embed\.1\.", "stem.0.norm."),
    (r"^patch_embed\.3\.", "stem.1.conv."), (r"^patch_embed\.4\.", "stem.1.norm."),
    (r"\.local_perception\.network\.0\.", ".local_integration.pw1.conv."),
    (r"\.local_perception\.network\.1\.", ".local_integration.pw1.norm."),
    (r"\.local_perception\.network\.2\.", ".local_integration.dw.conv."),
    (r"\.local_perception\.network\.4\.", ".local_integration.pw2."),
    (r"\.attn\.oper_([qk])\.0\.block\.0\.", r".attn.phi_\1.spatial.gate.0.conv."),
    (r"\.attn\.oper_([qk])\.0\.block\.1\.", r".attn.phi_\1.spatial.gate.0.norm."),
    (r"\.attn\.oper_([qk])\.0\.block\.3\.", r".attn.phi_\1.spatial.gate.1."),
    (r"\.attn\.oper_([qk])\.1\.block\.1\.", r".attn.phi_\1.channel.gate.1."),
    (r"^norm\.", "head.norm."), (r"^head\.(weight|bias)$", r"head.fc.\1"),
    (r"^dist_head\.(weight|bias)$", r"head.fc_dist.\1"),
]


def convert_state_dict(state_dict: Dict[str, torch.Tensor],
                       distillation: Optional[bool] = None) -> Dict[str, torch.Tensor]:
    """Map the official CAS-ViT keys (``RCViT``) onto ours.

    Official: ``patch_embed.{0,1,3,4}`` (the stem), ``network.{0,2,4,6}.j`` (stage
    blocks), ``network.{1,3,5}.proj / norm`` (downsamplings), ``norm``, ``head``,
    ``dist_head``; inside a block ``local_perception.network.{0,1,2,4}``, ``norm1``,
    ``attn.qkv``, ``attn.oper_{q,k}.{0,1}.block.*``, ``attn.dwc``, ``attn.proj``,
    ``norm2``, ``mlp.fc1``, ``mlp.fc2``.  A checkpoint in our keys passes unchanged.

    The released checkpoints may or may not carry ``dist_head``; the eval output of
    the official model is ``head`` alone without it and the mean of both with it.
    ``distillation`` says which head layout the target model has (None: keep the
    checkpoint's own; the default models have two heads):

    * a one-head checkpoint for a two-head model (``True``): the classifier is copied
      into both heads, whose mean is then that classifier, exactly;
    * a two-head checkpoint for a one-head model (``False``): the heads are averaged
      into one, W = (W_cls + W_dist) / 2, exact because both are linear in the same
      pooled vector.

    >>> import torch
    >>> sd = {"network.2.0.attn.oper_k.0.block.3.weight": torch.zeros(1, 8, 1, 1),
    ...       "network.3.proj.weight": torch.zeros(16, 8, 3, 3),
    ...       "head.bias": torch.zeros(5)}
    >>> for k in sorted(convert_state_dict(sd, distillation=True)):
    ...     print(k)
    head.fc.bias
    head.fc_dist.bias
    stages.1.blocks.0.attn.phi_k.spatial.gate.1.weight
    stages.2.downsample.conv.weight
    """
    out = {}
    for k, v in state_dict.items():
        k = re.sub(r"^module\.", "", k)
        m = re.match(r"^network\.(\d+)\.(.*)$", k)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            if i % 2 == 0:                              # stage i/2, block rest
                k = f"stages.{i // 2}.blocks.{rest}"
            else:                                       # the downsampling before stage
                rest = re.sub(r"^proj\.", "conv.", rest)
                k = f"stages.{(i + 1) // 2}.downsample.{rest}"
        for pattern, repl in _OFFICIAL:
            k = re.sub(pattern, repl, k)
        out[k] = v
    has_dist = any(k.startswith("head.fc_dist.") for k in out)
    if distillation and not has_dist:
        for name in ("weight", "bias"):
            if f"head.fc.{name}" in out:
                out[f"head.fc_dist.{name}"] = out[f"head.fc.{name}"].clone()
    elif distillation is False and has_dist:
        for name in ("weight", "bias"):
            dist = out.pop(f"head.fc_dist.{name}")
            out[f"head.fc.{name}"] = (out[f"head.fc.{name}"] + dist) / 2
    return out


# --------------------------------------------------------------------------- variants

#: The official factories (``rcvit_xs`` ... ``rcvit_t``): channels and blocks per stage;
#: MLP ratio 4 everywhere.
VARIANTS: Dict[str, Dict[str, tuple]] = {
    "cas_vit_xs": dict(depths=(2, 2, 4, 2), dims=(48, 56, 112, 220)),
    "cas_vit_s": dict(depths=(3, 3, 6, 3), dims=(48, 64, 128, 256)),
    "cas_vit_m": dict(depths=(3, 3, 6, 3), dims=(64, 96, 192, 384)),
    "cas_vit_t": dict(depths=(3, 3, 6, 3), dims=(96, 128, 256, 512)),
}


def _create(name: str, **kwargs) -> CASViT:
    return CASViT(**{**VARIANTS[name], **kwargs})


# The released weights are on Google Drive (the repository's MODEL_ZOO.md), not on the
# Hugging Face Hub: load a downloaded file with create_model(..., checkpoint=path).


@register_model(converter=convert_state_dict)
def cas_vit_xs(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
               **kwargs) -> CASViT:
    """CAS-ViT-XS: dims (48, 56, 112, 220), depths (2, 2, 4, 2). Model zoo: 3.20 M
    (with the distillation head), 0.56 GFLOPs."""
    return _create("cas_vit_xs", num_classes=num_classes, in_chans=in_chans,
                   drop_path_rate=drop_path_rate, **kwargs)


@register_model(converter=convert_state_dict)
def cas_vit_s(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
              **kwargs) -> CASViT:
    """CAS-ViT-S: dims (48, 64, 128, 256), depths (3, 3, 6, 3). Model zoo: 5.76 M,
    0.93 GFLOPs."""
    return _create("cas_vit_s", num_classes=num_classes, in_chans=in_chans,
                   drop_path_rate=drop_path_rate, **kwargs)


@register_model(converter=convert_state_dict)
def cas_vit_m(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
              **kwargs) -> CASViT:
    """CAS-ViT-M: dims (64, 96, 192, 384), depths (3, 3, 6, 3). Model zoo: 12.42 M,
    1.89 GFLOPs."""
    return _create("cas_vit_m", num_classes=num_classes, in_chans=in_chans,
                   drop_path_rate=drop_path_rate, **kwargs)


@register_model(converter=convert_state_dict)
def cas_vit_t(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
              **kwargs) -> CASViT:
    """CAS-ViT-T: dims (96, 128, 256, 512), depths (3, 3, 6, 3). Model zoo: 21.76 M
    (the paper's GFLOPs for T could not be retrieved; ours: about 3.6)."""
    return _create("cas_vit_t", num_classes=num_classes, in_chans=in_chans,
                   drop_path_rate=drop_path_rate, **kwargs)
