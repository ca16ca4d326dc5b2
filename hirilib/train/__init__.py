"""Training a registered model on an ImageNet subset: the recipe, EMA distillation,
exact resume and multi-GPU, in a small package whose modules follow the method.

    python -m hirilib train --model pvt_v2_b0 --data imagenette --res 128 --epochs 5 \\
        --batch-size 128 --out runs/pvt_v2_b0 [--distill] [--resume]
    torchrun --standalone --nproc_per_node=4 -m hirilib train ...   # same run, 4 GPUs

* ``config``: **the recipe** is one dataclass, :class:`TrainConfig`: every
  hyperparameter in one place with its range, each a command-line flag (``cli``),
  named sets of values in :data:`RECIPES` (``--recipe NAME``, any field overridden
  after it), one :func:`validate` for the command line and for Python; the resolved
  recipe is the first record of the run's log.
* ``objectives``: AdamW without weight decay on norms and biases, linear warm-up then
  cosine decay per step (:func:`lr_at`) or one-cycle, the soft cross-entropy of
  label-smoothed Mixup/CutMix targets (:mod:`hirilib.data`), the exponential moving
  average (EMA) of the weights (:func:`ema_update_`), and **EMA distillation**
  (HIRI-ViT, Sec. 4.5): the EMA teacher sees the two CutMix sources separately,
  without its final pooling (:func:`location_logits`), its per-location class
  probabilities are mixed with the CutMix mask and pooled, and the student learns
  alpha * (mixed labels) + (1 - alpha) * (teacher) (:func:`distillation_target`).
* ``loop``: **the step** (mixed precision: bf16 where native, fp16 with a gradient
  scaler on a T4, off on a CPU; channels-last and ``torch.compile`` on a GPU) makes no
  host synchronisation; evaluation, logging and checkpoints are timed apart.
  ``setup`` builds the run; :func:`train` reads top to bottom.
* ``state``: **checkpoints** (every ``--save-every-epochs`` epochs, every
  ``--save-every`` steps, at the end and on SIGTERM), written atomically, verified
  before they are read with ``torch.load(weights_only=True)``; ``--resume`` restores
  model, optimizer, scaler, EMA, schedule, every random state and the data order, so a
  run killed mid-epoch ends with the same weights, bit for bit on a CPU.  A run owns
  its ``--out`` folder (a lock a dead process's run can take over).
* ``dist``: **several processes** with DistributedDataParallel under ``torchrun`` (NCCL
  on GPUs, gloo on CPUs): ``--batch-size`` is the global batch, each rank takes its
  slice of the very samples, crops and pairs one process would use, BatchNorm
  normalises over the global batch, metrics are all-reduced and only rank 0 writes.

Reading the logs (summaries, the recipe and ablation tables of chapter 8) lives in
:mod:`hirilib.book.runs`; its names are re-exported here.
"""

import dataclasses  # noqa: F401  (chapter 8 and the tests read T.dataclasses.fields)

from hirilib.book.runs import (
    _ADDED_SETTINGS,
    ablation_lever,
    find_run_logs,
    log_summary,
    mean_std,
    read_log,
    recipe_changes,
    recipe_command,
)

from .cli import (
    _PER_INVOCATION,
    add_train_arguments,
    config_from_args,
    recipes_help,
    run_cli,
    unknown_flag_message,
)
from .config import (
    _NOT_THE_RECIPE,
    CHECKPOINT_NAME,
    IMAGENETTE_ABLATION,
    LOG_NAME,
    RECIPE_NOTES,
    RECIPES,
    SCHEDULES,
    SPEED_AND_PLACE,
    ConfigError,
    TrainConfig,
    amp_dtype,
    check_fields,
    resolve_config,
    validate,
)
from .dist import (
    Dist,
    GlobalBatchNorm,
    init_distributed,
    sync_batchnorm,
    world_from_env,
)
from .loop import evaluate, next_batch, train, train_step
from .objectives import (
    distillation_target,
    ema_momentum_at,
    ema_update_,
    location_logits,
    lr_at,
    lr_for,
    onecycle_lr,
    param_groups,
    res_at,
    soft_cross_entropy,
)
from .setup import Interrupted, Run, RunResult, matmul_peak, setup_run
from .state import (
    CHECKPOINT_FORMAT,
    RunLock,
    RunLog,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
