"""Checkpoint writes are atomic: a process killed mid-save leaves the previous checkpoint whole."""

import sys
import textwrap

import pytest
import torch

from conftest import REPO, start_process, starts_early

# Saves version 0, then dies by SIGKILL once `kill_at` bytes of version 1 have reached the disk.
WRITER = textwrap.dedent("""
    import io, os, signal, sys, torch
    import project.checkpoints as atomic
    path, kill_at = sys.argv[1], int(sys.argv[2])

    class DiesMidWrite(io.FileIO):
        written = 0

        def write(self, data):
            if self.written + len(data) >= kill_at:
                super().write(bytes(data)[: kill_at - self.written])
                os.kill(os.getpid(), signal.SIGKILL)
            self.written += len(data)
            return super().write(data)

    writer = atomic.AtomicCheckpointIO()
    writer.save_checkpoint({"version": 0, "weights": torch.zeros(1_000_000)}, path)
    atomic.open = DiesMidWrite  # the module's own open(), as the next save calls it
    writer.save_checkpoint({"version": 1, "weights": torch.ones(1_000_000)}, path)
""")


KILL_AT = [1, 2_000_000, 3_990_000]  # bytes into a 4 MB checkpoint


@starts_early
def killed_writers(tmp_path_factory):
    """The writer, once for each of ``KILL_AT``, each process saving to its own folder: started with the session,
    ``{kill_at: (checkpoint path, finished process)}``."""
    started = {}
    for kill_at in KILL_AT:
        path = tmp_path_factory.mktemp(f"kill_at_{kill_at}") / "last.ckpt"
        started[kill_at] = path, start_process([sys.executable, "-c", WRITER, str(path), str(kill_at)], cwd=REPO)
    return lambda: {kill_at: (path, finished()) for kill_at, (path, finished) in started.items()}


@pytest.mark.parametrize("kill_at", KILL_AT)
def test_a_kill_during_a_save_leaves_the_previous_checkpoint_whole(killed_writers, kill_at):
    path, result = killed_writers[kill_at]
    assert result.returncode == -9, result.stderr[-2000:]  # killed mid-write, as planned
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["version"] == 0 and torch.equal(checkpoint["weights"], torch.zeros(1_000_000))
