"""The ablation path of HIRI-ViT (Yao et al. 2024, Sec. 5.4, Table 7), from a
four-stage M-ViT to HIRI-ViT-S: one row per step, each the previous row's
``HIRIViTConfig`` fields plus its change, and the input side it runs at.  Every row is a
registered model, ``hiri_vit_table7_NN_<what changes>`` (registered by
``hirilib.models.hiri_vit`` from this table; the paper's numbers are in
``hirilib.reference.HIRI_VIT_TABLE7``).  Row 10 is HIRI-ViT-S and row 6 its four-stage
counterpart (tested).  Chapter 6 walks it.

>>> [row.resolution for row in TABLE7][5:8]
[224, 448, 448]
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple

from hirilib.models.hiri_vit import HIRI_VIT_CONFIGS

__all__ = ["Table7Row", "TABLE7", "table7_config", "config_diff"]


class Table7Row(NamedTuple):
    """One row of the paper's Table 7: the registered name, what it changes, the
    ``HIRIViTConfig`` fields it sets (on top of the previous row), and the input size."""

    name: str
    description: str
    diff: Dict[str, Any]
    resolution: int


_S = HIRI_VIT_CONFIGS["hiri_vit_s"]

#: Table 7, in order (the paper's numbers: ``hirilib.reference.HIRI_VIT_TABLE7``).
#: Row 1, M-ViT (Sec. 5.4: PVT-like, ViT-stem, MHA + FFN everywhere, K/V reduced by a
#: strided conv in stages 1-2 only, single-conv downsampling, LN): widths and depths of
#: the four-stage S; reduction ratios 4 and 2 (Wave-ViT's); FFN ratio 6 in stages 1-2
#: (ours, a calibration: row 3 must *enlarge* the ratio and still lower GFLOPs and
#: parameters; 6 -> 8 does, 4 -> 8 and 8 -> 12 would not).
TABLE7: List[Table7Row] = [
    Table7Row("hiri_vit_table7_01_mvit", "M-ViT: ViT-stem, MHA (K/V reduced in stages "
              "1-2) + FFN in all four stages, conv downsampling, LN",
              dict(dims=(64, 128, 320, 448), depths=(3, 4, 8, 3),
                   blocks=("transformer",) * 4, mlp_ratios=(6, 6, 4, 4),
                   sr_ratios=(4, 2, 1, 1), stem="vit", stem_dim=None, downsample="conv",
                   ffn="mlp", norm="ln"), 224),
    Table7Row("hiri_vit_table7_02_cffn", "FFN -> CFFN", dict(ffn="cffn"), 224),
    Table7Row("hiri_vit_table7_03_no_early_mha", "no MHA in stages 1-2 (CFFN blocks, "
              "ratio 6 -> 8)",
              dict(blocks=("ffn", "ffn", "transformer", "transformer"),
                   mlp_ratios=(8, 8, 4, 4), sr_ratios=(1, 1, 1, 1)), 224),
    Table7Row("hiri_vit_table7_04_batch_norm",
              "LN -> BN in stages 1-2 and before every CFFN", dict(norm="bn"), 224),
    Table7Row("hiri_vit_table7_05_conv_stem", "ViT-stem -> Conv-stem",
              dict(stem="conv", stem_dim=32), 224),
    Table7Row("hiri_vit_table7_06_irds", "conv downsampling -> IRDS",
              dict(downsample="irds"), 224),
    Table7Row("hiri_vit_table7_07_input_448", "input 224 -> 448 (the same network)",
              {}, 448),
    Table7Row("hiri_vit_table7_08_five_stages", "four stages -> five: a new stage 1 at "
              "stride 4 (ours: one CFFN block, ratio 4, width 32)",
              dict(dims=_S["dims"], depths=(1, 3, 4, 8, 3),
                   blocks=("ffn", "ffn", "ffn", "transformer", "transformer"),
                   mlp_ratios=(4, 8, 8, 4, 4), sr_ratios=(1,) * 5), 448),
    Table7Row("hiri_vit_table7_09_hr_stem", "Conv-stem -> HR-stem", dict(stem="hr"),
              448),
    Table7Row("hiri_vit_table7_10_hr_blocks", "each CFFN block of stages 1-2 -> two "
              "HR-blocks (= HIRI-ViT-S)",
              dict(blocks=_S["blocks"], depths=_S["depths"],
                   mlp_ratios=_S["mlp_ratios"]), 448),
    Table7Row("hiri_vit_table7_11_ema_distillation",
              "+ EMA distillation (training only: the same network)", {}, 448),
]

_TABLE7_CONFIGS: Dict[str, Dict[str, Any]] = {}
_cfg = {}
for _row in TABLE7:
    _cfg = _TABLE7_CONFIGS[_row.name] = {**_cfg, **_row.diff}


def table7_config(name: str, **overrides) -> Dict[str, Any]:
    """The ``HIRIViTConfig`` fields of a Table 7 row (cumulative), with overrides.

    >>> table7_config("hiri_vit_table7_05_conv_stem")["stem"]
    'conv'
    """
    if name not in _TABLE7_CONFIGS:
        raise ValueError(f"unknown Table 7 row {name!r}; the rows are "
                         f"{sorted(_TABLE7_CONFIGS)}")
    return {**_TABLE7_CONFIGS[name], **overrides}


def config_diff(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, tuple]:
    """The arguments two configurations set differently: ``{name: (a's, b's)}``
    (an argument one leaves unset is None there, the constructor's default)."""
    keys = list(a) + [k for k in b if k not in a]
    return {k: (a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)}
