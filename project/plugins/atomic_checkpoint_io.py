"""Checkpoint files that are either the old one or the new one, never half of either."""

import os
from pathlib import Path
from typing import Any, Optional

import torch
from pytorch_lightning.plugins import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside its target, flushes it to the disk, then
    renames it over the target (atomic on POSIX file systems).

    A crash, a kill or a full disk during a save leaves the previous ``last.ckpt`` in place.
    (Lightning's own writer stages the file in the system's temp directory; where that is another
    file system the final move is a copy, which a kill can cut short.)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        path = Path(path)
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, path)
        except OSError as err:
            raise OSError(f"could not write checkpoint {path}: {err.strerror or err}; the previous file "
                          "there, if any, is unchanged") from err
        finally:
            partial.unlink(missing_ok=True)
