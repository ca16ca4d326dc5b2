"""Writing files so that nothing already written is ever lost.

Every file hirilib writes that a reader or a later run depends on (results files, the
decoded-image cache, training checkpoints and logs) goes through ``atomic_write``: the
content is written to a unique temporary file in the same folder, flushed and synced to
disk, then renamed over the target in one step.  A run that is killed, or fails, while
writing leaves the previous file intact and no temporary behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None],
                 binary: bool = False) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then replace ``path`` with it.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> atomic_write(p, lambda f: f.write("hello")).read_text()
    'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # as an ordinary file (mkstemp makes it private)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``atomic_write`` of a string."""
    return atomic_write(path, lambda f: f.write(text))


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` through ``atomic_write``."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f), binary=True)
