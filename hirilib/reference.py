"""Every published number that the tests and chapters compare with, one table per paper,
each with its source.

GFLOPs are the papers' (G multiply-accumulates at 224 x 224 unless a table says
otherwise); params are millions; top-1 is ImageNet-1K validation accuracy (%).
Where a paper and its released code disagree, the table gives both and says which
one our models reproduce (the code's, since the released weights come from it).
Nothing here is measured by us: measured figures live in ``hirilib/results/``.
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

# ============================================================================= Hire-MLP

#: Hire-MLP (Guo et al., CVPR 2022).  ``paper_params_m`` / ``paper_gflops`` / ``top1``: the
#: official README's table (ImageNet-1K at 224; the CVPR paper gives the same rounded
#: figures).  ``params_m``: the released code's exact parameter count; ``gflops``: an
#: analytic count of its convolution and linear MACs alone (BN and means excluded), which
#: our counts, with BN at 2 per element and the means, exceed by 0.2-0.3%.  The README's
#: FLOPs come from ``torchprofile.profile_macs`` (MACs).  ``drop_path_rate``: the README's
#: training commands (given for Tiny and Base only).  Large has no released weights.
HIRE_MLP: Dict[str, Dict[str, Any]] = {
    "hire_mlp_tiny": dict(params_m=18.04, gflops=2.143, paper_params_m=18, paper_gflops=2.1,
                          top1=79.7, drop_path_rate=0.0),
    "hire_mlp_small": dict(params_m=33.11, gflops=4.229, paper_params_m=33, paper_gflops=4.2,
                           top1=82.1, drop_path_rate=None),
    "hire_mlp_base": dict(params_m=58.23, gflops=8.107, paper_params_m=58, paper_gflops=8.1,
                          top1=83.2, drop_path_rate=0.2),
    "hire_mlp_large": dict(params_m=95.72, gflops=13.416, paper_params_m=96, paper_gflops=13.4,
                           top1=83.8, drop_path_rate=None),
}
HIRE_MLP_SOURCE = ("ggjy/Hire-Wave-MLP.pytorch README.md (params, GFLOPs, top-1; commit "
                   "5b6d1c8); exact counts from mlp_based/hire_mlp.py (b2a7f86)")

#: MLP-Mixer-B/16 (Tolstikhin et al., NeurIPS 2021), the vision MLP whose token mixing
#: Hire-MLP replaces: 16x16 patches (196 tokens at 224 x 224), hidden size C, the
#: token-mixing MLP's width D_S and the channel-mixing MLP's width D_C, 12 blocks.
MLP_MIXER_B16: Dict[str, Any] = dict(patch=16, image=224, tokens=196, channels=768,
                                     token_mlp_dim=384, channel_mlp_dim=3072, depth=12)
MLP_MIXER_SOURCE = "MLP-Mixer paper, Table 1 (Mixer-B/16)"

# ============================================================================= HIRI-ViT

#: HIRI-ViT (Yao, Li, Pan, Mei, TPAMI 2024, arXiv 2403.11999).  No code or Table 1 has
#: been published, so these are the numbers a reconstruction can be held to.  GFLOPs are
#: G multiply-accumulates.  ``gflops`` None: the figure for that row is not available to us;
#: ``direction`` then quotes what its text says about the cost (Sec. 4.1, 5.4).
HIRI_VIT_TABLE7: Dict[str, Dict[str, Any]] = {
    "hiri_vit_table7_01_mvit": dict(top1=82.7, gflops=None, direction=None),
    "hiri_vit_table7_02_cffn": dict(top1=82.9, gflops=None, direction=None),
    "hiri_vit_table7_03_no_early_mha": dict(
        top1=82.9, gflops=None, direction="fewer GFLOPs and parameters, same accuracy"),
    "hiri_vit_table7_04_batch_norm": dict(top1=83.0, gflops=None, direction=None),
    "hiri_vit_table7_05_conv_stem": dict(
        top1=83.4, gflops=None,
        direction="at 224 the Conv-stem adds slightly to parameters and GFLOPs"),
    "hiri_vit_table7_06_irds": dict(top1=83.6, gflops=4.7, direction=None),
    "hiri_vit_table7_07_input_448": dict(
        top1=None, gflops=21.5,
        direction="an obvious accuracy gain; GFLOPs 4.7 -> 21.5"),
    "hiri_vit_table7_08_five_stages": dict(
        top1=84.0, gflops=None, direction="GFLOPs much lower than row 7's at 448"),
    "hiri_vit_table7_09_hr_stem": dict(top1=84.0, gflops=5.1,
                                       direction="an obvious drop in GFLOPs"),
    "hiri_vit_table7_10_hr_blocks": dict(top1=84.1, gflops=5.0,
                                         direction="slightly lower GFLOPs (about 5.0)"),
    "hiri_vit_table7_11_ema_distillation": dict(top1=84.3, gflops=5.0,
                                                direction="the same network"),
}
HIRI_VIT_TABLE7_SOURCE = ("HIRI-ViT, Sec. 5.4 and Table 7 (ImageNet-1K top-1 of "
                          "HIRI-ViT-S size models; row 10's 'about 5.0 GFLOPs': the "
                          "abstract)")

#: Other figures of the paper.  ``fig1``: a HIRI-ViT and Swin at 224 and 384 (Sec. 1;
#: Swin's are Swin-B's).  ``large_group_gflops``: Table 2's large group is "backbones
#: over 11.7 GFLOPs" (Sec. 5.1).  ``bn_cffn_speedup_pct``: BN instead of LN in the CFFN,
#: same accuracy (Sec. 4.4).
HIRI_VIT: Dict[str, Any] = {
    "hiri_vit_s": dict(resolution=448, gflops=5.0, top1=84.3),
    "hiri_vit_l": dict(top1_448=85.7, top1_224=85.3, throughput_224=660),
    "fig1": dict(hiri_vit_gflops=(8.2, 9.3), hiri_vit_ms=(0.84, 1.04),
                 swin_gflops=(15.4, 47.0), swin_ms=(1.17, 3.95), swin_top1=(83.5, 84.5),
                 resolutions=(224, 384)),
    "large_group_gflops": 11.7,
    "bn_cffn_speedup_pct": 7.6,
    "iformer_s": dict(resolution=224, top1=83.4),
    "recipe": dict(epochs=300, batch=1024, lr=1e-3, weight_decay=0.05, warmup_epochs=5),
}
HIRI_VIT_SOURCE = ("HIRI-ViT: abstract (5.0 G, 84.3%, iFormer-S 83.4%), Sec. 1 and "
                   "Fig. 1, Sec. 4.4 (+7.6%), Sec. 5.1 (11.7 G group, HIRI-ViT-L "
                   "85.7% / 85.3%, 660 img/s; the training recipe)")

#: MaxViT-L (Tu et al., ECCV 2022, Table 2, 224 x 224): the strongest large competitor
#: in HIRI-ViT's Sec. 5.1, which says HIRI-ViT-L at 448 needs fewer GFLOPs and runs
#: nearly twice as fast (throughput 241 img/s in HIRI-ViT's measurement).
MAXVIT_L = dict(gflops=43.9, params_m=212, top1=85.2, throughput=241)
MAXVIT_L_SOURCE = ("MaxViT paper, Table 2 (GFLOPs, params); HIRI-ViT Sec. 5.1 "
                   "(top-1, img/s)")

#: Wave-ViT-S (Yao, Pan, Li, Ngo, Mei, ECCV 2022), the same authors' previous four-stage
#: model, on which our HIRI-ViT-S reconstruction is anchored: its widths, depths, FFN
#: ratios, heads and key/value reduction ratios, and its size at 224 x 224.
WAVE_VIT = {
    "wave_vit_s": dict(dims=(64, 128, 320, 448), depths=(3, 4, 6, 3),
                       mlp_ratios=(8, 8, 4, 4), num_heads=(2, 4, 10, 14),
                       sr_ratios=(4, 2, 1, 1), params_m=22.7, gflops=4.7),
}
WAVE_VIT_SOURCE = ("YehLi/ImageNetModel: classification/wavevit.py (wavevit_s) and "
                   "classification/README.md (22.7 M, 4.7 GFLOPs at 224)")

# ============================================================================= CAS-ViT

#: CAS-ViT (Zhang et al., arXiv 2408.03703).  ``params_m``: the model zoo's
#: (``Tianfang-Zhang/CAS-ViT`` MODEL_ZOO.md), which count the distillation head;
#: ``params_one_head_m``: the same networks without it (the official code, counted);
#: ``gflops``: the v1 paper's G multiply-accumulates at 224, as fvcore counted them
#: then (BatchNorm at 4 per element), read from iFormer's Table 18, which copies them;
#: for T the paper's figure could not be retrieved (None; the architecture gives about
#: 3.6).  ``top1_v1``: the model zoo before its 13 Dec 2024 update (commit 041d2d6,
#: "update new metrics"); ``top1_v2``: the zoo after it, which gives two numbers per
#: model without saying what separates them (the v2 abstract quotes the second for M
#: and T).  ``iphone_ms``: iFormer's Table 18 (third-party); the paper's own GPU, ONNX
#: and iPhone throughputs could not be retrieved.
CAS_VIT: Dict[str, Dict[str, Any]] = {
    "cas_vit_xs": dict(params_m=3.20, params_one_head_m=2.98, gflops=0.56, top1_v1=77.5,
                       top1_v2=(78.3, 78.7), iphone_ms=0.85),
    "cas_vit_s": dict(params_m=5.76, params_one_head_m=5.51, gflops=0.93, top1_v1=80.2,
                      top1_v2=(80.9, 81.1), iphone_ms=1.82),
    "cas_vit_m": dict(params_m=12.42, params_one_head_m=12.04, gflops=1.89,
                      top1_v1=81.4, top1_v2=(82.8, 83.0), iphone_ms=2.46),
    "cas_vit_t": dict(params_m=21.76, params_one_head_m=21.25, gflops=None,
                      top1_v1=82.3, top1_v2=(83.9, 84.1), iphone_ms=None),
}
#: GMACs the architecture gives for T at 224 with BN at 4 per element (the paper's own
#: figure was not retrievable), and the BN convention of the published GFLOPs.
CAS_VIT_T_GFLOPS_ARCH = 3.6
CAS_VIT_BN_PER_ELEMENT = 4
CAS_VIT_SOURCE = ("params: Tianfang-Zhang/CAS-ViT MODEL_ZOO.md (with the distillation "
                  "head); GFLOPs: the v1 paper via iFormer Table 18 (T not "
                  "retrievable); top-1: MODEL_ZOO.md before (v1) and after (v2) commit "
                  "041d2d6")


# ============================================================================= Imagenette

#: The fastai Imagenette leaderboard at 128 px (github.com/fastai/imagenette, README,
#: "Imagenette Leaderboard"): top-1 (%) on imagenette2's 3,925 validation images after
#: training from random weights for that many epochs, no test-time augmentation; CNNs
#: (fastai's xse_resnext50: SE-ResNeXt-50 32x4d, deep stem, Mish, one self-attention layer;
#: Ranger, i.e. RAdam + Lookahead, with ``fit_flat_cos``; neither record uses one-cycle or
#: progressive resizing).  ``runs``: the number of runs averaged.  The 5-epoch record is
#: the current entry; the README version at commit 0239486 lists the earlier one,
#: kept in ``IMAGENETTE_128_EARLIER`` (the "85.8%" quoted in older notes).
IMAGENETTE_128: Dict[int, Dict[str, Any]] = {
    5: dict(top1=87.43, runs=5, entry="xse_resnext50 + MaxBlurPool, Ranger, "
            "fit_flat_cos(5, 8e-3, wd=1e-2), batch 32, label smoothing, Resize(128) + "
            "flip only, from 320-px images (86.37% without BlurPool)"),
    20: dict(top1=91.57, runs=5, entry="xse_resnext50 + MaxBlurPool, Ranger, flat-cos, "
             "batch 64, random-resized crop (0.35) + flip"),
    80: dict(top1=93.55, runs=1, entry="fastai2 train_imagenette.py 2020-01"),
    200: dict(top1=94.24, runs=1, entry="fastai2 train_imagenette.py 2020-01"),
}
IMAGENETTE_128_EARLIER: Dict[int, Dict[str, Any]] = {
    5: dict(top1=85.77, runs=5, entry="fastai2 train_imagenette.py 2020-10 (mini net)"),
}
IMAGENETTE_SOURCE = ("fastai/imagenette README, Imagenette leaderboard, size 128 px "
                     "(5 epochs: the current entry; 85.77% before it, README at commit "
                     "0239486)")
