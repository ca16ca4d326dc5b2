"""The benchmark suites run (quick mode, CPU, tiny sizes) and write valid results files."""

from __future__ import annotations

import pytest
import torch

import hirilib
from hirilib.__main__ import main
from hirilib.bench import MAIN_VARIANTS
from hirilib.bench.vs_timm import compare, interleaved_ratio
from hirilib.measure import load_results


def test_every_family_names_its_main_variants():
    from hirilib.registry import get_entry

    families = {get_entry(n).family for n in hirilib.list_models()} - {"convnext_roadmap"}
    assert families <= set(MAIN_VARIANTS), sorted(families - set(MAIN_VARIANTS))
    for fam, names in MAIN_VARIANTS.items():
        assert names and all(get_entry(n).family == fam for n in names)


def test_models_suite_writes_a_results_file(tmp_path, monkeypatch):
    monkeypatch.setitem(MAIN_VARIANTS, "pvt_v2", ["pvt_v2_b0"])
    out = tmp_path / "models.json"
    assert main(["bench", "models", "--quick", "--device", "cpu", "--family", "pvt_v2",
                 "--out", str(out)]) == 0
    doc = load_results(out)
    assert doc["settings"]["families"] == ["pvt_v2"] and doc["device_type"] == "cpu"
    kinds = {r["kind"] for r in doc["records"]}
    assert kinds == {"peak", "resolution", "setting"}
    res = [r for r in doc["records"] if r["kind"] == "resolution"]
    assert [r["resolution"] for r in res] == [64, 128]
    for r in res:
        assert r["gflops"] > 0 and r["activations_m"] > 0 and r["params"] > 0
        assert r["latency"]["median_ms"] > 0 and r["throughput"]["batch_size"] > 1
    peak = next(r for r in doc["records"] if r["kind"] == "peak")
    assert peak["measured"]["tflops"] > 0 and peak["measured"]["bandwidth_gbs"] > 0


def test_unknown_family_is_refused_before_work(capsys):
    assert main(["bench", "models", "--family", "nope", "--device", "cpu"]) == 2
    assert "unknown family 'nope'" in capsys.readouterr().err


def test_ratio_of_a_model_with_itself_is_about_one():
    """The ratio code, checked where the answer is known: two copies of one model."""
    torch.manual_seed(0)
    a = hirilib.create_model("pvt_v2_b0", depths=(1, 1, 1, 1)).eval()
    b = hirilib.create_model("pvt_v2_b0", depths=(1, 1, 1, 1)).eval()
    b.load_state_dict(a.state_dict())
    r = compare(a, b, (1, 3, 64, 64), "cpu", rounds=8, runs=3, warmup=2)
    # about 1; the bounds are wide because other processes on a shared CPU skew rounds
    assert 0.5 < r["ratio"] < 2.0 and r["ratio_p25"] <= r["ratio"] <= r["ratio_p75"]


def test_ratio_arithmetic_on_a_known_clock():
    """With a clock that advances 2 ms for ours and 3 ms for theirs, whichever runs first,
    the ratio is exactly 1.5 and the medians exactly 2 and 3 ms."""
    now = [0.0]
    step = {"ours": 0.002, "theirs": 0.003}
    pending = []

    def clock():
        if pending:
            now[0] += step[pending.pop()]
        return now[0]

    r = interleaved_ratio(lambda: pending.append("ours"), lambda: pending.append("theirs"),
                          rounds=5, runs=3, warmup=0, clock=clock)
    assert r["ratio"] == pytest.approx(1.5) and r["ratio_p25"] == pytest.approx(1.5)
    assert r["ours_ms"] == pytest.approx(2.0) and r["theirs_ms"] == pytest.approx(3.0)
