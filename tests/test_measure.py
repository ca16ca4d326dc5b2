"""count_flops, latency measurement, results files, registry and mode switches."""

import json

import pytest
import torch
import torch.nn as nn

import hirilib
from hirilib import measure as profile
from hirilib.measure import UncountedOpError, count_flops


class _Cumsum(nn.Module):
    def forward(self, x):
        return torch.cumsum(x, dim=1)  # an op nobody registered a handle for


def test_unhandled_op_raises_instead_of_being_skipped():
    model = nn.Sequential(nn.Linear(4, 4), _Cumsum())
    with pytest.raises(UncountedOpError, match="aten::cumsum"):
        count_flops(model, (1, 4))


def test_a_registered_handle_makes_it_countable():
    model = nn.Sequential(nn.Linear(4, 4), _Cumsum())
    assert count_flops(model, (2, 4), handles={"aten::cumsum": lambda i, o: 0}) == 2 * 4 * 4


def test_conv_and_linear_are_macs_not_2x():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, (1, 3, 10, 10)) == 10 * 10 * 8 * 3 * 9


def test_flops_by_module_sums_to_total():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    parts = profile.flops_by_module(m, (1, 3, 8, 8))
    assert sum(parts.values()) == count_flops(m, (1, 3, 8, 8))
    assert set(parts) == {"0", "1", "2"} or set(parts) == {"0", "2"}


def test_count_flops_restores_training_mode():
    m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train()
    count_flops(m, (2, 4))
    assert m.training


def test_measure_latency_reports_median_spread_and_settings():
    r = profile.measure_latency(nn.Linear(8, 8), (4, 8), warmup=1, runs=5)
    assert r["min_ms"] <= r["p25_ms"] <= r["median_ms"] <= r["p75_ms"] <= r["max_ms"]
    assert r["batch_size"] == 4 and r["dtype"] == "fp32" and r["compile"] is False
    assert r["device"].startswith("CPU") and r["peak_mem_mb"] is None
    assert r["throughput_img_s"] == pytest.approx(4 / (r["median_ms"] / 1e3))
    with pytest.raises(ValueError, match="dtype"):
        profile.measure_latency(nn.Linear(8, 8), (4, 8), dtype="fp8")


def test_measure_memory_on_cpu_is_the_peak_of_live_tensors():
    """Two chained layers: the hidden (B, 4096) activation and the output (B, 1024) are
    alive together at the peak (the hidden one is freed only after the second layer
    ran); an independent count of their bytes."""
    B = 16
    net = nn.Sequential(nn.Linear(1024, 4096), nn.Linear(4096, 1024))
    r = profile.measure_memory(net, (B, 1024))
    assert r["peak_mem_mb"] * 2**20 == 4 * B * (4096 + 1024)
    assert r["weights_mb"] * 2**20 == 4 * (1024 * 4096 + 4096 + 4096 * 1024 + 1024)
    assert r["device"].startswith("CPU") and "tracked" in r["method"]
    # the peak grows with the largest map: twice the batch, twice the bytes
    twice = profile.measure_memory(net, (2 * B, 1024))
    assert twice["peak_mem_mb"] == 2 * r["peak_mem_mb"]


def test_results_file_roundtrip_and_metadata(tmp_path):
    path = profile.save_results(tmp_path / "r.json", [{"x": 1, "ms": 2.5}],
                                settings={"batch_size": 1}, command="python -m hirilib bench t")
    doc = profile.load_results(path)
    for key in ("device", "device_type", "driver", "torch", "python", "hirilib", "date",
                "command", "settings"):
        assert key in doc
    assert doc["records"] == [{"x": 1, "ms": 2.5}]
    assert "python -m hirilib bench t" in profile.describe(doc)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_results_file_written_atomically(tmp_path, monkeypatch):
    """A failure while writing leaves the old file intact and no temporary behind."""
    path = profile.save_results(tmp_path / "r.json", [{"x": 1}], command="first")
    import hirilib.atomic as results

    real_replace = results.os.replace
    monkeypatch.setattr(results.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        profile.save_results(path, [{"x": 2}], command="second")
    monkeypatch.setattr(results.os, "replace", real_replace)
    assert profile.load_results(path)["command"] == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_cpu_run_never_replaces_a_gpu_file(tmp_path):
    path = tmp_path / "suite.json"
    doc = {"format": 1, "device": "NVIDIA H100", "device_type": "cuda", "torch": "2", "date": "2026-01-01",
           "command": "x", "records": []}
    path.write_text(json.dumps(doc))
    with pytest.raises(profile.ResultsError, match="holds a GPU measurement.*--force"):
        profile.save_results(path, [{"x": 1}], device="cpu")
    assert json.loads(path.read_text()) == doc
    profile.save_results(path, [{"x": 1}], device="cpu", force=True)
    assert profile.load_results(path)["device_type"] == "cpu"


def test_load_results_rejects_other_json(tmp_path):
    p = tmp_path / "other.json"
    p.write_text(json.dumps({"records": []}))
    with pytest.raises(ValueError, match="not a hirilib results file"):
        profile.load_results(p)


@pytest.mark.parametrize("flag,expected", [("1", True), ("0", False)])
def test_quick_mode_follows_environment(monkeypatch, flag, expected):
    monkeypatch.setenv("HIRILIB_QUICK", flag)
    assert hirilib.quick_mode() is expected


def test_quick_mode_without_flag_means_no_gpu(monkeypatch):
    monkeypatch.delenv("HIRILIB_QUICK", raising=False)
    assert hirilib.quick_mode() is (not torch.cuda.is_available())



@pytest.mark.parametrize("pool, shape, want", [
    (nn.AvgPool2d(2), (1, 4, 8, 8), 4 * 4 * 4 * 4),
    (nn.AvgPool2d(3, 2, 1), (1, 4, 8, 8), 4 * 4 * 4 * 9),
    (nn.AvgPool2d((2, 3)), (1, 4, 8, 9), 4 * 4 * 3 * 6),
])
def test_avg_pool_counts_one_accumulate_per_window_element(pool, shape, want):
    assert count_flops(pool, shape) == want
