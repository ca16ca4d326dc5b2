"""Every published number that the tests and chapters compare with, one table per paper,
each with its source.

GFLOPs are the papers' (G multiply-accumulates at 224 x 224 unless a table says
otherwise); params are millions; top-1 is ImageNet-1K validation accuracy (%).
Where a paper and its released code disagree, the table gives both and says which
one our models reproduce (the code's, since the released weights come from it).
Nothing here is measured by us: measured figures live in ``book/results/``.
"""

from __future__ import annotations

from typing import Any, Dict

# ============================================================================= PVTv2

#: PVTv2 (Wang et al., CVMJ 2022).  ``params_m`` / ``gflops``: the released code's
#: counts (``whai362/PVT``, ``classification/pvt_v2.py`` and ``get_flops.py``, which
#: adds the attention matrix products by hand); ``paper_*``: the paper's Table 1 figures
#: (for B2-Li and B4 the official README's); ``top1``: the README; ``drop_path_rate`` and
#: ``clip_grad``: the official ImageNet configs.
PVT_V2: Dict[str, Dict[str, Any]] = {
    "pvt_v2_b0": dict(params_m=3.67, gflops=0.571, paper_params_m=3.4, paper_gflops=0.6, top1=70.5,
                      drop_path_rate=0.1, clip_grad=None),
    "pvt_v2_b1": dict(params_m=14.01, gflops=2.119, paper_params_m=13.1, paper_gflops=2.1, top1=78.7,
                      drop_path_rate=0.1, clip_grad=None),
    "pvt_v2_b2": dict(params_m=25.36, gflops=4.045, paper_params_m=25.4, paper_gflops=4.0, top1=82.0,
                      drop_path_rate=0.1, clip_grad=None),
    "pvt_v2_b2_li": dict(params_m=22.55, gflops=3.909, paper_params_m=22.6, paper_gflops=3.9,
                         top1=82.1, drop_path_rate=0.1, clip_grad=None),
    "pvt_v2_b3": dict(params_m=45.24, gflops=6.922, paper_params_m=45.2, paper_gflops=6.9, top1=83.2,
                      drop_path_rate=0.3, clip_grad=1.0),
    "pvt_v2_b4": dict(params_m=62.56, gflops=10.136, paper_params_m=62.6, paper_gflops=10.1,
                      top1=83.6, drop_path_rate=0.3, clip_grad=1.0),
    "pvt_v2_b5": dict(params_m=81.96, gflops=11.752, paper_params_m=82.0, paper_gflops=11.8,
                      top1=83.8, drop_path_rate=0.3, clip_grad=1.0),
}
PVT_V2_SOURCE = ("code counts: whai362/PVT classification/pvt_v2.py + get_flops.py; paper: "
                 "Table 1 (B2-Li, B4: classification/README.md)")

# ============================================================================= ConvNeXt

#: ConvNeXt (Liu et al., CVPR 2022), Table 1: params (M) and GFLOPs at 224 (``params_m``,
#: ``gflops`` are the architecture's exact counts, which the paper rounds), ImageNet-1K
#: top-1 (XL: after ImageNet-22K pre-training only), and the IN-1K drop-path rates (Table 5).
CONVNEXT: Dict[str, Dict[str, Any]] = {
    "convnext_tiny": dict(params_m=28.59, gflops=4.456, paper_params_m=28.6, paper_gflops=4.5,
                          top1=82.1, drop_path_rate=0.1),
    "convnext_small": dict(params_m=50.22, gflops=8.684, paper_params_m=50, paper_gflops=8.7,
                           top1=83.1, drop_path_rate=0.4),
    "convnext_base": dict(params_m=88.59, gflops=15.355, paper_params_m=89, paper_gflops=15.4,
                          top1=83.8, drop_path_rate=0.5),
    "convnext_large": dict(params_m=197.77, gflops=34.361, paper_params_m=198, paper_gflops=34.4,
                           top1=84.3, drop_path_rate=0.5),
    "convnext_xlarge": dict(params_m=350.20, gflops=60.921, paper_params_m=350, paper_gflops=60.9,
                            top1=87.0, drop_path_rate=None),
}
CONVNEXT_SOURCE = "ConvNeXt paper, Table 1 (Table 9 for T's 28.6 M); drop path: Table 5"

#: The "modernizing a ResNet" roadmap, Table 10 (ResNet-50 / Swin-T regime): for each
#: registered step, the paper's top-1 (mean of 3 seeds, 300 epochs, no EMA, no layer
#: scale) and its printed GFLOPs.  Step 12's printed 4.46 is not explained by the
#: architecture (LN replaces BN one for one; see ``CONVNEXT_ROADMAP_ARCH_GFLOPS``).
CONVNEXT_ROADMAP: Dict[str, Dict[str, float]] = {
    "convnext_roadmap_00_resnet50": dict(top1=76.13, gflops=4.09),
    "convnext_roadmap_01_enhanced_recipe": dict(top1=78.82, gflops=4.09),
    "convnext_roadmap_02_stage_ratio": dict(top1=79.36, gflops=4.53),
    "convnext_roadmap_03_patchify_stem": dict(top1=79.51, gflops=4.42),
    "convnext_roadmap_04_depthwise": dict(top1=78.28, gflops=2.35),
    "convnext_roadmap_05_width": dict(top1=80.50, gflops=5.27),
    "convnext_roadmap_06_inverted_bottleneck": dict(top1=80.64, gflops=4.64),
    "convnext_roadmap_07_move_up_dw": dict(top1=79.92, gflops=4.07),
    "convnext_roadmap_08_kernel5": dict(top1=80.35, gflops=4.10),
    "convnext_roadmap_08_kernel7": dict(top1=80.57, gflops=4.15),
    "convnext_roadmap_08_kernel9": dict(top1=80.57, gflops=4.21),
    "convnext_roadmap_08_kernel11": dict(top1=80.47, gflops=4.29),
    "convnext_roadmap_09_gelu": dict(top1=80.62, gflops=4.15),
    "convnext_roadmap_10_fewer_activations": dict(top1=81.27, gflops=4.15),
    "convnext_roadmap_11_fewer_norms": dict(top1=81.41, gflops=4.15),
    "convnext_roadmap_12_layer_norm": dict(top1=81.47, gflops=4.46),
    "convnext_roadmap_13_convnext_tiny": dict(top1=81.97, gflops=4.49),
}
#: The GFLOPs the architecture of each step implies where the printed figure cannot be
#: reproduced: swapping BN for LN adds about 0.01 G of norm arithmetic, not 0.31 G.
CONVNEXT_ROADMAP_ARCH_GFLOPS = {"convnext_roadmap_12_layer_norm": 4.15}
CONVNEXT_ROADMAP_SOURCE = "ConvNeXt paper, Table 10 (Fig. 2 shows the same values rounded)"

#: The roadmap's target (Table 10).
SWIN_T = {"top1": 81.3, "gflops": 4.5}


# ============================================================================= Imagenette

#: The fastai Imagenette leaderboard at 128 px (github.com/fastai/imagenette, README,
#: "Imagenette Leaderboard"): top-1 (%) on imagenette2's 3,925 validation images after
#: training from random weights for that many epochs, no test-time augmentation; CNNs
#: (xresnet variants).  ``runs``: the number of runs averaged.  The 5-epoch record is
#: the current entry; the README version at commit 0239486 lists the earlier one,
#: kept in ``IMAGENETTE_128_EARLIER`` (the "85.8%" quoted in older notes).
IMAGENETTE_128: Dict[int, Dict[str, Any]] = {
    5: dict(top1=87.43, runs=5, entry="xresnet50 + MaxBlurPool, tuned hyperparameters"),
    20: dict(top1=91.57, runs=5, entry="fastai2 train_imagenette.py 2020-01 + MaxBlurPool"),
    80: dict(top1=93.55, runs=1, entry="fastai2 train_imagenette.py 2020-01"),
    200: dict(top1=94.24, runs=1, entry="fastai2 train_imagenette.py 2020-01"),
}
IMAGENETTE_128_EARLIER: Dict[int, Dict[str, Any]] = {
    5: dict(top1=85.77, runs=5, entry="fastai2 train_imagenette.py 2020-10 (mini net)"),
}
IMAGENETTE_SOURCE = ("fastai/imagenette README, Imagenette leaderboard, size 128 px "
                     "(5 epochs: the current entry; 85.77% before it, README at commit "
                     "0239486)")
