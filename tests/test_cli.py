"""python -m hirilib: the commands that write the book's results files."""

import pytest

from hirilib.__main__ import main
from hirilib.measure import load_results


def test_bench_writes_a_results_file_with_metadata(tmp_path, monkeypatch):
    import hirilib.bench.attention as bench

    monkeypatch.setattr(bench, "attention_grid", lambda quick: [8])
    out = tmp_path / "attention.json"
    assert main(["bench", "attention", "--quick", "--device", "cpu", "--out", str(out)]) == 0
    doc = load_results(out)
    assert doc["command"] == f"python -m hirilib bench attention --quick --device cpu --out {out}"
    assert doc["device_type"] == "cpu"
    assert doc["settings"] == {"suite": "attention", "quick": True, "device_type": "cpu"}
    variants = {(r["layer"], r["variant"]) for r in doc["records"]}
    assert ("attention", "full attention") in variants and ("ffn", "CFFN") in variants


def test_unknown_suite_and_model_fail_with_a_message(capsys):
    assert main(["bench", "no_such_suite", "--quick"]) == 2
    assert "unknown suite 'no_such_suite'" in capsys.readouterr().err
    assert main(["summary", "no_such_model"]) == 2
    assert "unknown model 'no_such_model'" in capsys.readouterr().err


def test_list_prints_registered_names(capsys, monkeypatch):
    import torch.nn as nn
    from hirilib import registry

    def tiny_cli_net(**kw):
        return nn.Identity()

    monkeypatch.setitem(registry._MODELS, "tiny_cli_net", registry.ModelEntry("tiny_cli_net", tiny_cli_net))
    assert main(["list", "tiny_cli_*"]) == 0
    assert capsys.readouterr().out.split() == ["tiny_cli_net"]


@pytest.mark.parametrize("argv, message", [
    (["bench"], "the following arguments are required: suite"),
    (["bench", "attention", "--device", "tpu"], "unknown device 'tpu'"),
    (["bench", "attention", "--device", "cuda:7"], "cuda:7"),
    (["summary", "pvt_v2_b0", "--resolution", "-32"], "must be a positive integer, got '-32'"),
    (["summary", "pvt_v2_b0", "--resolution", "abc"], "must be a positive integer"),
    (["summary", "convnext_tiny", "--resolution", "100"], "nearest sizes that work are 96 and 128"),
    (["summary", "pvt_v2_b0", "--num-classes", "-1"], "must be an integer >= 0"),
    (["summary", "pvt_v2_bo"], "did you mean: pvt_v2_b0"),
    (["nosuchcommand"], "invalid choice"),
])
def test_user_errors_are_one_line_and_exit_2(argv, message, capsys):
    """Every user error is caught before any work: one line on stderr, status 2, no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bench_checks_the_output_before_running(tmp_path, monkeypatch, capsys):
    """An unwritable --out, a folder, or a GPU file a CPU run would replace: refused at once,
    before the suite runs."""
    import json

    import hirilib.bench as bench

    ran = []
    monkeypatch.setitem(bench.SUITES, "attention", lambda **kw: ran.append(1) or [])
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps({"format": 1, "device": "NVIDIA T4", "device_type": "cuda",
                               "torch": "2", "date": "2026", "command": "x", "records": []}))
    cases = [(str(tmp_path), "is a folder"), (str(gpu), "holds a GPU measurement")]
    import os
    if os.geteuid() != 0:  # root writes anywhere
        cases.append((str(ro / "x.json"), "not writable"))
    cases.append(("/proc/hirilib-test.json", "not writable"))
    for out, message in cases:
        assert main(["bench", "attention", "--device", "cpu", "--out", out]) == 2
        assert message in capsys.readouterr().err
    assert not ran


def test_every_error_line_starts_with_error(capsys):
    for argv in (["bench", "no_such_suite"], ["summary", "no_such_model"], ["list", "--nope"],
                 ["summary", "pvt_v2_b0", "--resolution", "0"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "error: " in err, (argv, err)


def test_abbreviated_flags_are_refused(capsys):
    # '--res' for '--resolution' would be accepted silently by argparse's default
    assert main(["summary", "pvt_v2_b0", "--res", "64"]) == 2
    assert "--res" in capsys.readouterr().err


def test_summary_uses_the_models_own_resolution(capsys, monkeypatch):
    import hirilib
    from hirilib import registry

    def tiny_res_net(num_classes=1000, **kw):
        model = hirilib.create_model("pvt_v2_b0", num_classes=num_classes)
        model.default_resolution = 64
        return model

    monkeypatch.setitem(registry._MODELS, "tiny_res_net",
                        registry.ModelEntry("tiny_res_net", tiny_res_net))
    assert main(["summary", "tiny_res_net"]) == 0
    assert capsys.readouterr().out.strip().endswith("at 64x64")


def test_help_is_plain_text(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and "\\\n" not in out, out
