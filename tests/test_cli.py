"""python -m hirilib: the commands that write the book's results files."""

import pytest

from hirilib.__main__ import main
from hirilib.profile import load_results


def test_bench_writes_a_results_file_with_metadata(tmp_path, monkeypatch):
    import hirilib.bench as bench

    monkeypatch.setattr(bench, "attention_grid", lambda quick: [8])
    out = tmp_path / "attention.json"
    assert main(["bench", "attention", "--quick", "--out", str(out)]) == 0
    doc = load_results(out)
    assert doc["command"] == f"python -m hirilib bench attention --quick --out {out}"
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

    monkeypatch.setitem(registry._MODELS, "tiny_cli_net", lambda **kw: nn.Identity())
    assert main(["list", "tiny_cli_*"]) == 0
    assert capsys.readouterr().out.split() == ["tiny_cli_net"]


def test_usage_error_exits_nonzero():
    with pytest.raises(SystemExit):
        main(["bench"])
