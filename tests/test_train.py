"""hirilib.train: each piece of the recipe against its equation, the loss going down,
an exact resume after a kill, two processes training the same model as one, and every
user error as one line before any work."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import hirilib
from conftest import PYTHON, ROOT, TINY_KWARGS, TINY_MODEL, subprocess_env
from hirilib import train as T
from hirilib.__main__ import main

# --------------------------------------------------------------------------- the pieces


def test_warmup_then_cosine():
    total, warm, base, low = 100, 10, 1e-3, 1e-5
    lrs = [T.lr_at(s, total, warm, base, low) for s in range(total)]
    assert lrs[0] == pytest.approx(base / warm) and lrs[warm - 1] == pytest.approx(base)
    assert all(a < b for a, b in zip(lrs[: warm - 1], lrs[1:warm]))  # rising
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1 :]))  # then falling
    mid = warm + (total - warm) // 2  # half-way: mean
    assert lrs[mid] == pytest.approx((base + low) / 2)
    assert T.lr_at(total, total, warm, base, low) == pytest.approx(low)
    assert T.lr_at(5, 10, 0, 1.0) == pytest.approx(0.5)  # no warm-up


def test_no_weight_decay_on_norms_and_biases():
    model = hirilib.create_model("convnext_tiny", num_classes=10, depths=(1, 1, 1, 1))
    decay, none = T.param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and none["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim > 1 for p in decay["params"])
    no = [names[id(p)] for p in none["params"]]
    assert any("norm" in n for n in no) and any(n.endswith("bias") for n in no)
    assert any(n.endswith("gamma") for n in no)  # layer scale
    assert len(decay["params"]) + len(none["params"]) == len(list(model.parameters()))


def test_ema_update_is_the_equation():
    """theta_t <- m theta_t + (1 - m) theta_s for weights and BatchNorm statistics; the
    step counter is copied; the warm-up ramp is (1 + t) / (10 + t), capped at m."""
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(6, 2))
    student.train()(torch.randn(2, 3, 8, 8))  # move the BN statistics
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    student(torch.randn(2, 3, 8, 8))
    before = copy.deepcopy(teacher.state_dict())
    T.ema_update_(teacher, student, 0.9)
    for k, v in teacher.state_dict().items():
        s, t0 = student.state_dict()[k], before[k]
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.9 * t0 + 0.1 * s, rtol=0, atol=1e-6)
        else:
            assert torch.equal(v, s), k  # num_batches_tracked
    assert T.ema_momentum_at(0, 0.9998) == pytest.approx(0.1)
    assert T.ema_momentum_at(90, 0.9998) == pytest.approx(91 / 100)
    assert T.ema_momentum_at(10**6, 0.9998) == 0.9998
    assert T.ema_momentum_at(0, 0.9998, warmup=False) == 0.9998


@pytest.mark.parametrize(
    "name, kwargs",
    [("pvt_v2_b0", TINY_KWARGS), ("convnext_tiny", {"depths": (1, 1, 1, 1)})],
)
def test_location_logits_apply_the_head_at_every_position(name, kwargs):
    """The head at each position of the last map, for heads that pool first: PVTv2's
    (mean, Linear; its mean over positions is the model's output) and ConvNeXt's
    (mean, LayerNorm, Linear; each position normalised on its own)."""
    torch.manual_seed(0)
    model = hirilib.create_model(name, num_classes=7, **kwargs).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = T.location_logits(model, x)  # (B, K, h, w)
        f = model.forward_features(x)
        assert maps.shape == (2, 7) + f.shape[-2:]
        for i, j in [(0, 0), (1, 0), (1, 1)]:
            one = model.forward_head(f[:, :, i : i + 1, j : j + 1])  # a 1x1 map
            torch.testing.assert_close(maps[:, :, i, j], one, rtol=0, atol=1e-5)
        if name == "pvt_v2_b0":  # linear head
            torch.testing.assert_close(maps.mean((2, 3)), model(x), rtol=0, atol=1e-5)


def _smallest_of_each_family():
    from hirilib.measure import count_params
    from hirilib.registry import get_entry

    best = {}
    for name in hirilib.list_models():
        with torch.device("meta"):
            n = count_params(hirilib.create_model(name))
        fam = get_entry(name).family
        if fam not in best or n < best[fam][1]:
            best[fam] = (name, n)
    return sorted(name for name, _ in best.values())


@pytest.mark.parametrize("name", _smallest_of_each_family())
def test_location_logits_work_for_every_family(name):
    """Through the model interface alone, so every family registered later (HIRI-ViT)
    is covered: the map of logits equals the head applied to each position."""
    torch.manual_seed(0)
    model = hirilib.create_model(name, num_classes=5).eval()
    side = -(-max(64, model.min_input_size) // model.size_multiple) * model.size_multiple
    x = torch.randn(1, 3, side, side)
    with torch.no_grad():
        maps = T.location_logits(model, x)
        f = model.forward_features(x)
        h, w = f.shape[-2:]
        assert maps.shape == (1, 5, h, w)
        for i, j in [(0, 0), (h - 1, w - 1)]:
            one = model.forward_head(f[:, :, i : i + 1, j : j + 1])
            torch.testing.assert_close(maps[:, :, i, j], one, rtol=0, atol=1e-5)


def test_location_logits_with_a_batchnorm_head_in_eval():
    from hirilib.layers import ClassifierHead

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(3, 8, 4, 4)
            self.head = ClassifierHead(8, 5, norm="bn", norm_first=False)

        def forward_features(self, x):
            return self.body(x)

        def forward_head(self, x, pre_logits=False):
            return self.head(x, pre_logits)

    torch.manual_seed(0)
    net = Net()
    net.train()
    for _ in range(3):  # running statistics
        net.head(net.body(torch.randn(4, 3, 16, 16)))
    net.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        maps = T.location_logits(net, x)
        f = net.body(x)
        n = net.head.norm
        want = net.head.fc(
            (
                (f - n.running_mean[:, None, None])
                / torch.sqrt(n.running_var[:, None, None] + n.eps)
                * n.weight[:, None, None]
                + n.bias[:, None, None]
            ).permute(0, 2, 3, 1)
        ).permute(0, 3, 1, 2)
    torch.testing.assert_close(maps, want, rtol=0, atol=1e-5)


def _probs(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).softmax(1)


def test_distillation_target_is_a_distribution_and_alpha_1_is_the_labels():
    from hirilib.data import cutmix_mask, smooth_one_hot

    p_a = _probs(4, 10, 4, 4)
    p_b = p_a.flip(0)
    mask, lam = cutmix_mask(0.6, 32, 32, 12, 20)
    y = smooth_one_hot(torch.tensor([1, 2, 3, 4]), 10, 0.1)
    target = lam * y + (1 - lam) * y.flip(0)
    for alpha in (0.0, 0.3, 0.5, 1.0):
        out = T.distillation_target(p_a, p_b, mask, target, alpha)
        assert (out >= 0).all()
        torch.testing.assert_close(out.sum(1), torch.ones(4))
    torch.testing.assert_close(
        T.distillation_target(p_a, p_b, mask, target, 1.0), target
    )
    # alpha = 0 is the teacher alone: the area-resized mask mixes the maps, then the
    # pool; the mask's 8x8 cells map 1:1 onto the 4x4 map, so P_a's pooled weight is
    # lambda
    m4 = torch.nn.functional.avg_pool2d(mask, 8)
    assert m4.mean().item() == pytest.approx(lam)
    want = (m4 * p_a + (1 - m4) * p_b).mean((2, 3))
    torch.testing.assert_close(T.distillation_target(p_a, p_b, mask, target, 0.0), want)


def test_distillation_target_under_mixup_is_lambda_weighted():
    p_a = _probs(3, 5, 2, 2, seed=1)
    p_b = _probs(3, 5, 2, 2, seed=2)
    lam = 0.7
    mask = torch.full((1, 1, 16, 16), lam)
    y = torch.eye(5)[:3]
    out = T.distillation_target(p_a, p_b, mask, y, 0.5)
    teacher = lam * p_a.mean((2, 3)) + (1 - lam) * p_b.mean((2, 3))
    torch.testing.assert_close(out, 0.5 * y + 0.5 * teacher)


# -------------------------------------------------------------------------- a short run


def _cfg(parquet_set, cache_dir, out, **kw):
    base = dict(
        model="pvt_v2_b0",
        model_kwargs=TINY_KWARGS,
        data=str(parquet_set),
        res=32,
        epochs=2,
        batch_size=16,
        lr=3e-3,
        warmup_epochs=0.25,
        mix_prob=0.0,
        cache_dir=str(cache_dir),
        out=str(out),
        progress=False,
        log_every=1,
        device="cpu",
    )
    base.update(kw)
    return T.resolve_config(**base)


def test_loss_goes_down_and_the_log_says_what_ran(parquet_set, cache_dir, tmp_path):
    result = T.train(_cfg(parquet_set, cache_dir, tmp_path / "run", epochs=4))
    log = T.read_log(result.log)
    start = log[0]
    assert start["type"] == "start" and start["config"]["model"] == "pvt_v2_b0"
    assert start["device_type"] == "cpu" and start["torch"] and start["command"]
    assert start["data"]["classes"] == ["red", "green", "blue", "yellow"]
    steps = [r for r in log if r["type"] == "step"]
    epochs = [r for r in log if r["type"] == "epoch"]
    assert len(steps) == 16 and len(epochs) == 4 and log[-1]["type"] == "end"
    for key in ("loss", "acc", "lr", "img_s", "data_wait", "time"):
        assert key in steps[0]
    assert 0 <= steps[0]["data_wait"] <= 1
    first, last = (
        sum(r["loss"] for r in steps[:4]) / 4,
        sum(r["loss"] for r in steps[-4:]) / 4,
    )
    assert last < 0.8 * first, (first, last)
    assert epochs[-1]["val_top1"] >= 75 and epochs[-1]["val_top5"] == 100
    assert "ema_val_top1" in epochs[-1]
    # the checkpoint reads with weights_only=True and loads into create_model
    ck = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    assert ck["step"] == 16
    model = hirilib.create_model(
        "pvt_v2_b0", num_classes=4, checkpoint=result.checkpoint, **TINY_KWARGS
    )
    for k, v in model.state_dict().items():
        assert torch.equal(v, result.model.state_dict()[k])


@pytest.fixture(scope="module")
def mixed_run(parquet_set, tmp_path_factory):
    """One epoch with Mixup/CutMix and an EMA, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("mixed")
    cache = tmp_path_factory.getbasetemp() / "hirilib-cache"
    return T.train(_cfg(parquet_set, cache, tmp / "run", epochs=1, mix_prob=1.0))


def test_the_ema_does_not_change_the_student(
    mixed_run, parquet_set, cache_dir, tmp_path
):
    """Plain EMA is a passive average: the student is the same with or without it, so
    one run measures both 'no EMA' (the student) and 'EMA' (the average)."""
    b = T.train(
        _cfg(parquet_set, cache_dir, tmp_path / "b", epochs=1, mix_prob=1.0, ema=False)
    )
    assert b.ema is None
    for k, v in mixed_run.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k


def test_distillation_changes_the_student_and_alpha_1_does_not(
    mixed_run, parquet_set, cache_dir, tmp_path
):
    d = T.train(
        _cfg(
            parquet_set, cache_dir, tmp_path / "d", epochs=1, mix_prob=1.0, distill=True
        )
    )
    plain = mixed_run.model.state_dict()
    assert any(not torch.equal(v, d.model.state_dict()[k]) for k, v in plain.items())
    one = T.train(
        _cfg(
            parquet_set,
            cache_dir,
            tmp_path / "one",
            epochs=1,
            mix_prob=1.0,
            distill=True,
            distill_alpha=1.0,
        )
    )
    for k, v in plain.items():  # alpha = 1: the labels alone
        assert torch.equal(v, one.model.state_dict()[k]), k


def _run(args, check=True, **kw):
    p = subprocess.run(
        [PYTHON, "-m", "hirilib", "train", *args],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}: {p.stderr[-2000:]}")
    return p


def _args(parquet_set, cache_dir, out):
    return [
        *TINY_MODEL,
        "--data",
        str(parquet_set),
        "--res",
        "32",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--distill",
        "--drop-path-rate",
        "0.1",
        "--device",
        "cpu",
        "--cache-dir",
        str(cache_dir),
        "--out",
        str(out),
        "--no-progress",
        "--save-every",
        "3",
        "--log-every",
        "1",
    ]


@pytest.mark.slow
def test_killed_mid_epoch_and_resumed_gives_bit_identical_weights(
    parquet_set, cache_dir, tmp_path
):
    """4 steps an epoch; checkpoints at steps 3, 4, 6 and 8; the run is killed (SIGKILL)
    after step 7, mid-epoch, and resumed from step 6 by ``--resume --out`` alone (the
    settings come from the run's log).  Model, EMA and optimizer state then equal those
    of an uninterrupted run bit for bit (drop-path on, so the random states must be
    restored too; EMA distillation on)."""
    from hirilib.data import load_data

    load_data(str(parquet_set), 32, cache_dir=cache_dir, progress=False)  # cache exists
    full, cut = tmp_path / "full", tmp_path / "cut"
    p_full = subprocess.Popen(
        [PYTHON, "-m", "hirilib", "train", *_args(parquet_set, cache_dir, full)],
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = _run(
        _args(parquet_set, cache_dir, cut) + ["--stop-after-steps", "7"], check=False
    )
    assert killed.returncode in (-9, 137), killed.stderr[-2000:]
    assert torch.load(cut / "checkpoint.pt", weights_only=True)["step"] == 6
    # the short form: the run's settings come from its own log
    _run(["--resume", "--out", str(cut), "--no-progress", "--device", "cpu"])
    assert p_full.wait(timeout=300) == 0, p_full.stderr.read()[-2000:]
    a = torch.load(full / "checkpoint.pt", weights_only=True)
    b = torch.load(cut / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 8
    for part in ("model", "ema"):
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), f"{part}.{k} differs after the resume"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    log = T.read_log(cut / "log.jsonl")
    assert [r["step"] for r in log if r["type"] == "step"] == list(range(1, 9))
    assert [r["type"] for r in log].count("resume") == 1


def _torchrun(model_args, parquet_set, cache_dir, out, res=32):
    """``torchrun --nproc_per_node=2 -m hirilib train`` on CPUs (gloo), global batch
    16, one epoch, EMA distillation with Mixup/CutMix."""
    args = [
        *model_args,
        "--data", str(parquet_set),
        "--res", str(res),
        "--epochs", "1",
        "--batch-size", "16",
        "--lr", "3e-3",
        "--warmup-epochs", "0.25",
        "--mix-prob", "1.0",
        "--distill",
        "--device", "cpu",
        "--cache-dir", str(cache_dir),
        "--out", str(out),
        "--no-progress",
        "--log-every", "1",
    ]  # fmt: skip
    p = subprocess.run(
        [
            PYTHON, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node=2", "-m", "hirilib", "train", *args,
        ],  # fmt: skip
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return torch.load(out / "checkpoint.pt", weights_only=True)


def _same_weights(two, one, atol, rtol=0.0):
    """Weights within ``atol``; BatchNorm's running statistics within ``atol`` plus
    ``rtol`` of their value."""
    for part, module in (("model", one.model), ("ema", one.ema)):
        for k, v in module.state_dict().items():
            stat = k.endswith(("running_mean", "running_var"))
            torch.testing.assert_close(
                two[part][k], v, rtol=rtol if stat else 0.0, atol=atol,
                msg=f"{part}.{k}",
            )  # fmt: skip


@pytest.mark.slow
def test_two_gloo_processes_train_the_model_one_process_trains(
    parquet_set, cache_dir, tmp_path
):
    """torchrun with 2 CPU processes (gloo) and a global batch of 16 ends where one
    process with batch 16 ends: the same samples, crops, CutMix pairs and teacher
    targets, gradients averaged by DDP.  Equal up to the order of floating-point
    sums."""
    one = T.train(
        _cfg(
            parquet_set, cache_dir, tmp_path / "one", epochs=1, mix_prob=1.0,
            distill=True,
        )  # fmt: skip
    )
    two = _torchrun(TINY_MODEL, parquet_set, cache_dir, tmp_path / "two")
    assert two["world_size"] == 2 and len(two["rng"]) == 2
    _same_weights(two, one, 1e-5)
    log = T.read_log(tmp_path / "two" / "log.jsonl")
    assert log[0]["world_size"] == 2
    ref = T.read_log(one.log)
    for r2, r1 in zip(
        [r for r in log if r["type"] == "step"], [r for r in ref if r["type"] == "step"]
    ):
        assert r2["loss"] == pytest.approx(r1["loss"], abs=1e-4)  # all-reduced metrics
    e2, e1 = log[-2], ref[-2]
    assert e2["type"] == "epoch" and e2["val_top1"] == pytest.approx(
        e1["val_top1"], abs=1e-6
    )


@pytest.mark.slow
def test_two_processes_train_a_batchnorm_model_as_one(
    parquet_set, cache_dir, tmp_path
):
    """HIRI-ViT-Nano has BatchNorm in its early stages: each process normalising its
    half batch would leave the weights 3e-3 and the running statistics 0.1 apart.
    With BatchNorm over the global batch (differentiably all-reduced sums), the
    student, its running statistics and the EMA teacher's are those of one process
    within 1e-4.  (IRDS downsampling: the Conv downsampling's conv bias feeds a
    BatchNorm, which cancels it, so its gradient is zero but for rounding, and AdamW
    turns that noise into steps: a weight no two runs agree on, one process or two.)"""
    kw = {"downsample": "irds"}
    model = ["--model", "hiri_vit_nano", "--model-kwargs", json.dumps(kw)]
    one = T.train(
        _cfg(
            parquet_set, cache_dir, tmp_path / "one", model="hiri_vit_nano",
            model_kwargs=kw, epochs=1, mix_prob=1.0, distill=True,
        )  # fmt: skip
    )
    assert any(isinstance(m, nn.BatchNorm2d) for m in one.model.modules())
    two = _torchrun(model, parquet_set, cache_dir, tmp_path / "two")
    assert any(k.endswith("running_var") for k in two["model"])
    _same_weights(two, one, 1e-4, rtol=1e-4)


def test_global_batchnorm_is_batchnorm_in_one_process():
    """Without a process group the all-reduce is the identity: GlobalBatchNorm then
    gives BatchNorm's output, gradients and running statistics."""
    import torch.distributed as tdist

    if not tdist.is_available():
        pytest.skip("torch.distributed is not available")
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(4)
    net = T.sync_batchnorm(nn.Sequential(copy.deepcopy(ref)), torch.device("cpu"))
    assert isinstance(net[0], T.GlobalBatchNorm)
    x = torch.randn(6, 4, 5, 5, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    if not tdist.is_initialized():
        tdist.init_process_group(
            "gloo", init_method=f"file://{os.path.abspath('.')}/.gbn-{os.getpid()}",
            rank=0, world_size=1,
        )  # fmt: skip
    try:
        (ref(x) ** 2).sum().backward()
        (net(x2) ** 2).sum().backward()
    finally:
        tdist.destroy_process_group()
        Path(f".gbn-{os.getpid()}").unlink(missing_ok=True)
    torch.testing.assert_close(x2.grad, x.grad, rtol=0, atol=1e-5)
    torch.testing.assert_close(net[0].running_var, ref.running_var)
    torch.testing.assert_close(net[0].running_mean, ref.running_mean)
    g, want = net[0].weight.grad, ref.weight.grad
    torch.testing.assert_close(g, want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture()
def no_training(monkeypatch):
    """Any of these errors must come before the first step."""
    ran = []
    import hirilib.train.setup

    stop = lambda *a: ran.append(1) or 1 / 0  # noqa: E731
    monkeypatch.setattr(hirilib.train.setup, "init_distributed", stop)
    return ran


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "pvt_v2_bo"], "did you mean: pvt_v2_b0"),
        (["--model", "pvt_v2_b0", "--res", "100"], "--res 100"),
        (["--model", "pvt_v2_b0", "--res", "-3"], "must be >= 1, got '-3'"),
        (["--model", "pvt_v2_b0", "--data", "/no/such/folder"], "no such folder"),
        (["--model", "pvt_v2_b0", "--lr", "0"], "--lr: must be > 0"),
        (["--model", "pvt_v2_b0", "--distill-alpha", "1.5"], "must be >= 0 and <= 1"),
        (["--model", "pvt_v2_b0", "--ema-momentum", "1"], "must be >= 0 and < 1"),
        (
            ["--model", "pvt_v2_b0", "--model-kwargs", "{depths"],
            "must be a JSON object",
        ),
        (
            ["--model", "pvt_v2_b0", "--model-kwargs", '{"depthz": [1]}'],
            "no argument 'depthz'",
        ),
        (
            ["--model", "pvt_v2_b0", "--amp", "fp16", "--device", "cpu"],
            "needs a CUDA GPU",
        ),
        (["--model", "pvt_v2_b0", "--device", "tpu"], "unknown device 'tpu'"),
        (["--model", "pvt_v2_b0", "--distill", "--no-ema"], "needs the EMA teacher"),
        (["--model", "pvt_v2_b0", "--min-lr", "1", "--lr", "0.1"], "above --lr"),
        (["--recipe", "no_such_recipe"], "invalid choice"),
        (["--data", "imagenette"], "--model is required"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    argv, message, capsys, no_training, parquet_set
):
    argv = [a if a != "PARQUET" else str(parquet_set) for a in argv]
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and not no_training


def test_a_run_is_never_overwritten(tmp_path, capsys, no_training, parquet_set):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.jsonl").write_text("{}\n")
    assert (
        main(
            [
                "train",
                *TINY_MODEL,
                "--data",
                str(parquet_set),
                "--res",
                "32",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 2
    )
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    f = tmp_path / "file"
    f.write_text("")
    assert (
        main(
            [
                "train",
                *TINY_MODEL,
                "--data",
                str(parquet_set),
                "--res",
                "32",
                "--out",
                str(f),
            ]
        )
        == 2
    )
    assert "is a file" in capsys.readouterr().err


def test_batch_must_split_across_processes(parquet_set):
    cfg = T.resolve_config(
        model="pvt_v2_b0", data=str(parquet_set), res=32, batch_size=10
    )
    with pytest.raises(T.ConfigError, match="multiple of 4"):
        T.validate(cfg, world=4)


def test_offline_hub_from_the_cli_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(
        [
            "train",
            *TINY_MODEL,
            "--data",
            "imagenette",
            "--res",
            "32",
            "--device",
            "cpu",
            "--cache-dir",
            str(tmp_path / "c"),
            "--out",
            str(tmp_path / "r"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Hub is unreachable" in err and "--data" in err
    assert len(err.strip().splitlines()) == 1


def test_recipes_resolve_and_accept_overrides():
    cfg = T.resolve_config("imagenette_cpu", seed=3, res=96)
    assert cfg.model == "pvt_v2_b0" and cfg.seed == 3 and cfg.res == 96
    assert cfg.recipe == "imagenette_cpu"
    with pytest.raises(T.ConfigError, match="the recipes are .*imagenette_cpu"):
        T.resolve_config("nope")
    with pytest.raises(T.ConfigError, match="unknown training setting 'lr_max'"):
        T.resolve_config(lr_max=1.0)
    fields = {f.name for f in T.dataclasses.fields(T.TrainConfig)}
    for name, recipe in T.RECIPES.items():
        assert set(recipe) <= fields, name


# ---------------------------------------------------------------------------- real data


def _imagenette() -> Path | None:
    for p in (
        os.environ.get("HIRILIB_IMAGENETTE"),
        ROOT / ".." / "shared" / "data" / "imagenette-128",
        ROOT / "data" / "imagenette-128",
    ):
        if p and (Path(p) / "train").is_dir():
            return Path(p)
    return None


@pytest.mark.skipif(
    _imagenette() is None,
    reason=(
        "Imagenette at 128 px not found (set "
        "HIRILIB_IMAGENETTE to a folder with train/ and validation/ Parquet "
        "files, or place it at ../shared/data/imagenette-128)"
    ),
)
def test_a_few_steps_on_imagenette(cache_dir, tmp_path):
    path = _imagenette()
    result = T.train(
        T.resolve_config(
            model="pvt_v2_b0",
            model_kwargs=TINY_KWARGS,
            data=str(path),
            res=32,
            train_subset=256,
            val_subset=100,
            epochs=1,
            batch_size=64,
            device="cpu",
            cache_dir=str(cache_dir),
            out=str(tmp_path / "run"),
            progress=False,
            log_every=1,
        )
    )
    log = T.read_log(result.log)
    assert log[0]["data"]["classes"][0] == "tench" and log[0]["data"]["train"] == 256
    assert [r["step"] for r in log if r["type"] == "step"] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) for r in log if r["type"] == "step")
    assert log[-2]["type"] == "epoch" and 0 <= log[-2]["val_top1"] <= 100


# -------------------------------------------------------------------------- logs, bench

RESULTS = sorted((ROOT / "hirilib" / "results").glob("train_*.jsonl"))


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.name)
def test_committed_logs_have_what_the_chapter_reads(path):
    """The committed runs: a start record naming the device, the versions, the command
    and the resolved recipe; step and epoch records with the fields chapter 8 plots."""
    records = T.read_log(path)
    start = records[0]
    assert start["type"] == "start" and start["device"] and start["torch"]
    assert start["command"].startswith("python -m hirilib train")
    assert set(start["config"]) >= set(T.TrainConfig().recipe_fields())
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(1, start["config"]["epochs"] + 1))
    for e in epochs:
        assert 0 <= e["val_top1"] <= e["val_top5"] <= 100
    # the EMA after every epoch, or (--eval-ema last) after the last
    every = start["config"].get("eval_ema", "every") == "every"
    assert all("ema_val_top1" in e for e in (epochs if every else epochs[-1:]))
    assert records[-1]["type"] == "end"
    s = T.log_summary(records)
    assert s["img_s"] > 0 and 0 <= s["data_wait"] < 1 and 0 < s["fraction_of_peak"] < 1
    if start["device_type"] == "cpu":
        assert "_cpu_" in path.name, "a CPU run's log must say so in its name"


def test_the_bench_suite_measures_the_real_step():
    from hirilib.bench import train as bench

    data = bench.data_throughput(32, 8, 2, torch.device("cpu"), n=32)
    assert data["kind"] == "data" and data["images_per_s"] > 0
    step = bench.step_throughput(
        "pvt_v2_b0", TINY_KWARGS, 32, 8, 3, torch.device("cpu"), distill=True
    )
    assert step["kind"] == "step" and step["img_s"] > 0 and 0 <= step["data_wait"] < 1
    assert step["train_macs_per_image"] == pytest.approx(4e9 * step["gmacs_per_image"])
    assert step["bound_img_s"] == pytest.approx(
        step["peak_macs_per_s"] / step["train_macs_per_image"]
    )


# ------------------------------------------------------------- the step, on a GPU too

#: ATen calls that make the host wait for the device: reading a value back, an output
#: whose shape depends on the data, or a tensor made from host data (an H2D copy).
_SYNCING = (
    "aten._local_scalar_dense",
    "aten.item",
    "aten.is_nonzero",
    "aten.equal",
    "aten.nonzero",
    "aten.masked_select",
    "aten.unique",
    "aten._unique",
    "aten.lift_fresh",
)


def _host_syncs():
    """A dispatch mode that records every synchronising call: the ops above, and
    copies between devices (on a CPU none happen, on a GPU each would block)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Syncs(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func.overloadpacket)
            out = func(*args, **(kwargs or {}))
            if name.startswith(_SYNCING):
                self.calls.append(name)
            elif name in ("aten._to_copy", "aten.copy_") and args:
                src = args[1] if name == "aten.copy_" else args[0]
                dst = args[0] if name == "aten.copy_" else out
                if isinstance(src, torch.Tensor) and isinstance(dst, torch.Tensor):
                    if src.device != dst.device:
                        self.calls.append(f"{name} {src.device}->{dst.device}")
            return out

    return Syncs()


@pytest.mark.parametrize("mix", [0.0, 1.0])
def test_a_step_makes_no_host_synchronisation(
    mix, parquet_set, cache_dir, tmp_path
):
    """A batch and a training step (Mixup/CutMix, EMA distillation, drop-path,
    clipping, fused AdamW, the EMA update) issue no call that would make the host wait
    for a GPU; the logging step's read-back is the only one, and the mode sees it."""
    import hirilib.train.setup

    cfg = _cfg(
        parquet_set, cache_dir, tmp_path / "run", epochs=1, mix_prob=mix,
        distill=True, drop_path_rate=0.1,
    )
    run = T.setup_run(cfg)
    try:
        for step in range(2):  # warm-up: constants made on the device once
            T.train_step(run, T.next_batch(run, step), step)
        with _host_syncs() as mode:
            for step in range(2, 4):
                loss, acc = T.train_step(run, T.next_batch(run, step), step)
        assert mode.calls == [], mode.calls
        with _host_syncs() as mode:
            loss.item()
        assert mode.calls == ["aten._local_scalar_dense"]
    finally:
        hirilib.train.setup.close_run(run)


# --------------------------------------------- runs, checkpoints, bad input, the CLI


def test_python_goes_through_the_same_checks_as_the_cli():
    with pytest.raises(T.ConfigError, match="--lr -1: must be > 0"):
        T.train(T.resolve_config(model="pvt_v2_b0", lr=-1))
    with pytest.raises(T.ConfigError, match="--epochs 2.5: must be int"):
        T.validate(T.resolve_config(model="pvt_v2_b0", epochs=2.5))


def test_a_resume_may_change_the_speed_settings_not_the_recipe(tmp_path):
    """compile, amp, channels_last, data and cache_res are not the recipe
    (``--resume --no-compile`` works); the learning rate is."""
    from hirilib.train.state import TRAINING_KEYS, check_resumable

    cfg = T.resolve_config(model="pvt_v2_b0", compile=False, amp="off")
    old = dict(cfg.recipe_fields(), compile=True, amp="bf16", data="elsewhere")
    ck = {k: None for k in TRAINING_KEYS} | {"config": old}
    check_resumable(ck, cfg, tmp_path / "checkpoint.pt")
    ck["config"] = dict(old, lr=0.5)
    with pytest.raises(T.ConfigError, match="trained with lr=0.5"):
        check_resumable(ck, cfg, tmp_path / "checkpoint.pt")


def _tiny(parquet_set, cache_dir, out, *extra):
    return [
        "train", *TINY_MODEL, "--data", str(parquet_set), "--res", "32",
        "--epochs", "1", "--batch-size", "16", "--device", "cpu",
        "--cache-dir", str(cache_dir), "--out", str(out), "--no-progress", *extra,
    ]  # fmt: skip


def _one_line(capsys):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("content", ["weights", "missing_keys"])
def test_resume_on_a_file_that_is_not_a_training_checkpoint(
    content, parquet_set, cache_dir, tmp_path, capsys
):
    from hirilib.train.state import TRAINING_KEYS

    out = tmp_path / "run"
    out.mkdir()
    if content == "weights":  # a model's weights only: KeyError 'config' before
        doc = {"model": {"w": torch.zeros(1)}}
    else:  # a training checkpoint whose model has other keys
        doc = {k: 0 for k in TRAINING_KEYS}
        doc.update(config={}, model={"w": torch.ones(1)})
    torch.save(doc, out / "checkpoint.pt")
    assert main(_tiny(parquet_set, cache_dir, out, "--resume")) == 2
    err = _one_line(capsys)
    assert ("no training state" if content == "weights" else "does not fit") in err


def test_a_damaged_checkpoint_is_refused_naming_the_file(tmp_path):
    """torch does not check the archive's CRCs: 64 flipped bytes inside a tensor load
    silently; load_checkpoint verifies them first."""
    from hirilib.hub import CheckpointError

    path = tmp_path / "checkpoint.pt"
    T.save_checkpoint(path, {"w": torch.arange(4096, dtype=torch.float32)})
    raw = bytearray(path.read_bytes())
    i = raw.find(torch.arange(4096, dtype=torch.float32).numpy().tobytes()[:64])
    assert i > 0
    raw[i + 1000 : i + 1064] = bytes(64)
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt is damaged.*CRC"):
        T.load_checkpoint(path)


def test_world_size_without_torchrun_is_one_line(
    parquet_set, cache_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for k in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    assert main(_tiny(parquet_set, cache_dir, tmp_path / "r")) == 2
    assert "torchrun" in _one_line(capsys)


def test_abbreviated_flags_are_refused(capsys, no_training):
    assert main(["train", "--model", "pvt_v2_b0", "--epoch", "3"]) == 2
    assert "unknown setting '--epoch'" in _one_line(capsys)


def test_help_describes_the_recipes_in_words(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "see RECIPES" not in out
    for name, words in T.RECIPE_NOTES.items():
        assert name in out and " ".join(words.split()[:4]) in out


def test_a_garbage_first_line_of_the_log_is_not_called_missing(
    tmp_path, capsys, no_training
):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.jsonl").write_text("garbage\n")
    assert main(["train", "--resume", "--out", str(tmp_path / "run")]) == 2
    err = _one_line(capsys)
    assert "not the run's start record" in err and "has no log.jsonl" not in err
    with pytest.raises(ValueError, match="line 1, is not a JSON record"):
        T.read_log(tmp_path / "run" / "log.jsonl")


def test_a_live_run_owns_its_folder_a_dead_ones_lock_is_taken_over(
    parquet_set, cache_dir, tmp_path, capsys
):
    """A second run on a folder whose lock names a live process stops in one line and
    touches nothing; a lock left by a dead process is taken over, and only then are
    the temporary files it left removed."""
    import socket

    out = tmp_path / "run"
    out.mkdir()
    tmp = out / ".checkpoint.pt.abc.tmp"
    tmp.write_text("half written")
    live = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"pid": live.pid, "host": socket.gethostname()}
        (out / ".lock").write_text(json.dumps(lock))
        assert main(_tiny(parquet_set, cache_dir, out)) == 2
        assert "in use by a running training" in _one_line(capsys)
        assert tmp.exists()  # its writer may be alive
    finally:
        live.kill()
        live.wait()
    assert main(_tiny(parquet_set, cache_dir, out)) == 0  # the owner is gone
    assert not tmp.exists() and not (out / ".lock").exists()
    assert (out / "checkpoint.pt").is_file()


@pytest.mark.slow
def test_resume_before_a_checkpoint_starts_afresh_and_on_a_finished_run_stops(
    parquet_set, cache_dir, tmp_path, capsys
):
    """A preemptible job can always pass --resume: with no checkpoint yet it starts
    from scratch and says so; on a finished run it says so, prints the summary and
    exits 0 without training again."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text('{"type": "start", "config": {}}\n')  # no ckpt
    assert main(_tiny(parquet_set, cache_dir, out, "--resume")) == 0
    captured = capsys.readouterr()
    assert "starting from scratch" in captured.err
    log = (out / "log.jsonl").read_text()
    assert T.read_log(out / "log.jsonl")[-1]["type"] == "end"
    assert main(_tiny(parquet_set, cache_dir, out, "--resume")) == 0
    printed = capsys.readouterr().out
    assert "already finished" in printed and "val top-1" in printed
    assert "epoch 2/1" not in printed
    assert (out / "log.jsonl").read_text() == log  # nothing trained, nothing logged


def test_ctrl_c_says_the_state_is_intact_and_how_to_resume(
    parquet_set, cache_dir, tmp_path, capsys, monkeypatch
):
    import hirilib.train.loop as loop

    real = loop.train_step

    def step(run, batch, i):
        if i == 3:
            raise KeyboardInterrupt
        return real(run, batch, i)

    monkeypatch.setattr(loop, "train_step", step)
    out = tmp_path / "run"
    code = main(_tiny(parquet_set, cache_dir, out, "--save-every", "2"))
    err = _one_line(capsys)
    assert code == 130 and "the checkpoint of step 2" in err and "intact" in err
    assert "--resume" in err and str(out) in err
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2
    assert not (out / ".lock").exists()


def test_bench_measures_a_recipe_as_it_trains():
    """The recipe's own model, batch and both resolutions (96 px, then 128 px), on
    synthetic images; its peak is the roofline's measure_peaks."""
    from hirilib.bench import train as bench

    r = bench.recipe_throughput("imagenette_5ep", 2, torch.device("cpu"))
    assert r["model"] == "hiri_vit_nano" and r["batch_size"] == 64
    assert set(r["img_s_by_res"]) == {"96", "128"} and r["img_s"] > 0
    assert 0 < r["fraction_of_peak"] < 1 and r["compile_seconds"] > 0


def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(
    parquet_set, cache_dir, tmp_path, capsys, monkeypatch
):
    """A preempted job gets SIGTERM: the step in flight ends, a checkpoint is written,
    and one line says how to continue (exit 143)."""
    import signal

    import hirilib.train.loop as loop

    real = loop.train_step

    def step(run, batch, i):
        if i == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(run, batch, i)

    monkeypatch.setattr(loop, "train_step", step)
    out = tmp_path / "run"
    assert main(_tiny(parquet_set, cache_dir, out)) == 143
    err = _one_line(capsys)
    assert "stopped by SIGTERM at step 3" in err and "--resume" in err
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is not None  # the handler is put back
