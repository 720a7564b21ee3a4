"""Checkpoint writes are atomic: a process killed mid-save leaves the previous checkpoint whole."""

import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from conftest import REPO

WRITER = textwrap.dedent("""
    import sys, torch
    from project.plugins.atomic_checkpoint_io import AtomicCheckpointIO
    io, path = AtomicCheckpointIO(), sys.argv[1]
    for version in range(1_000_000):
        io.save_checkpoint({"version": version, "weights": torch.full((8_000_000,), float(version))}, path)
        print(version, flush=True)
""")


@pytest.mark.parametrize("delay", [0.05, 0.13, 0.31])
def test_a_kill_during_a_save_leaves_the_previous_checkpoint_whole(tmp_path, delay):
    path = tmp_path / "last.ckpt"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    saved = int(writer.stdout.readline())  # one 32 MB checkpoint is complete; the next is being written
    time.sleep(delay)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["version"] >= saved
    assert torch.equal(checkpoint["weights"], torch.full((8_000_000,), float(checkpoint["version"])))
