"""A run's state on disk: every random state, checkpoints (verified before they are
loaded), the checks an exact resume needs, the run's log, and the lock by which a run
owns its ``--out`` folder."""

from __future__ import annotations

import json
import os
import random
import socket
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn

from .config import SPEED_AND_PLACE, ConfigError, TrainConfig

#: Checkpoint layout version (bump when its keys change meaning).
CHECKPOINT_FORMAT = 1
#: What a training checkpoint holds besides the weights.
TRAINING_KEYS = ("step", "config", "model", "optimizer", "scaler", "rng", "elapsed")
LOCK_NAME = ".lock"


def rng_state() -> Dict[str, Any]:
    """Every random state of this process, as tensors (loadable with weights_only)."""
    import numpy as np

    py = random.getstate()
    npst = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": torch.tensor(py[1], dtype=torch.int64),
        "python_gauss": py[2],
        "numpy": torch.from_numpy(npst[1].astype("int64")),
        "numpy_pos": int(npst[2]),
        "numpy_gauss": (int(npst[3]), float(npst[4])),
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(
        (3, tuple(int(v) for v in state["python"].tolist()), state["python_gauss"])
    )
    g = state["numpy_gauss"]
    np.random.set_state(
        (
            "MT19937",
            state["numpy"].numpy().astype("uint32"),
            state["numpy_pos"],
            g[0],
            g[1],
        )
    )


def save_checkpoint(path: Path, state: Dict[str, Any]) -> Path:
    """Write ``state`` atomically (temporary file, fsync, rename)."""
    from hirilib.atomic import atomic_torch_save

    return atomic_torch_save(state, path)


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (tensors, plain containers only),
    after checking the archive's checksums (:func:`hirilib.hub.verify_torch_zip`)."""
    from hirilib.hub import CheckpointError, verify_torch_zip

    verify_torch_zip(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path} cannot be read as a training checkpoint "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None


def check_resumable(ck: Any, cfg: TrainConfig, path: Path) -> None:
    """A checkpoint an exact resume can continue: it holds the training state (not
    only weights) and was trained with this recipe.  Settings of speed and place
    (:data:`~hirilib.train.config.SPEED_AND_PLACE`: compile, amp ...) may change."""
    from hirilib.hub import CheckpointError

    missing = [k for k in TRAINING_KEYS if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise CheckpointError(
            f"--resume: {path} holds no training state (no {', '.join(missing)}); "
            "it is a weights file, which create_model(name, checkpoint=...) loads; "
            "resume needs the checkpoint.pt a training run wrote"
        )
    old, new = ck["config"], cfg.recipe_fields()
    changed = [
        k for k in new if k in old and old[k] != new[k] and k not in SPEED_AND_PLACE
    ]
    if changed:
        k = changed[0]
        raise ConfigError(
            f"--resume: the run in {path.parent} was trained with {k}={old[k]!r}, "
            f"not {new[k]!r}; an exact resume keeps the recipe (choose another --out "
            "for a new run)"
        )


def load_model_state(model: nn.Module, state: Dict[str, Any], path: Path) -> None:
    """``model.load_state_dict`` with one line naming the file when keys differ."""
    from hirilib.hub import CheckpointError

    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"--resume: the model in {path} does not fit --model's "
            f"({len(missing)} keys missing, e.g. {missing[:2]}; {len(unexpected)} "
            f"unexpected, e.g. {unexpected[:2]}); was it written by another model?"
        )
    model.load_state_dict(state)


def unwrap(model: nn.Module) -> nn.Module:
    """The module itself, without DistributedDataParallel's or torch.compile's
    wrapper."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


# ============================================================================ the log


def _json_default(v):
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, (torch.device, torch.dtype, Path)):
        return str(v)
    return float(v)


class RunLog:
    """The run's JSON-lines log (rank 0 writes; the others do nothing)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = Path(path), enabled

    def truncate_after(self, step: int) -> None:
        """On resume: drop the records of steps the checkpoint does not hold (they will
        be run again) and any end record."""
        if not self.enabled or not self.path.is_file():
            return
        from hirilib.atomic import atomic_write_text

        keep = []
        for line in self.path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash
                continue
            if r.get("type") == "end" or r.get("step", 0) > step:
                continue
            keep.append(line)
        atomic_write_text(self.path, "".join(k + "\n" for k in keep))

    def write(self, record: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=_json_default) + "\n")
            f.flush()


# ============================================================================ the lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class RunLock:
    """A run owns its ``--out`` folder: ``.lock`` holds the owner's pid and host.  A
    second live run on the folder is refused in one line; the lock of a process that
    is gone (killed, crashed) is taken over, and only then are the temporary files it
    left removed."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK_NAME
        self.held = False

    def owner(self) -> Optional[Dict[str, Any]]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> "RunLock":
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = self.owner()
                if other and other.get("pid") == me["pid"]:
                    self.held = True  # this process holds it already
                    return self
                if other is None or (
                    other.get("host") == me["host"] and not _alive(int(other["pid"]))
                ):
                    self.path.unlink(missing_ok=True)  # its owner is gone
                    continue
                where = "" if other.get("host") == me["host"] else (
                    f" on {other.get('host')}"
                )
                raise ConfigError(
                    f"--out {self.path.parent} is in use by a running training "
                    f"(pid {other.get('pid')}{where}); wait for it to end or choose "
                    f"another --out (remove {self.path} only if that process is gone)"
                )
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            for stale in self.path.parent.glob(".*.tmp"):  # left by the dead owner
                stale.unlink(missing_ok=True)
            return self
        raise ConfigError(f"could not take the lock {self.path}")

    def release(self) -> None:
        if self.held:
            other = self.owner()
            if other is None or other.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False


def previous_epochs(path: Path) -> List[Dict[str, Any]]:
    """The epoch records of a run's log (for a finished run's summary)."""
    from hirilib.book.runs import read_log

    try:
        return [r for r in read_log(path) if r.get("type") == "epoch"]
    except (OSError, ValueError):
        return []
