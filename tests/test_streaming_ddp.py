"""Image folders streamed from LitData shards: under DDP (two gloo CPU processes through `python main.py`), when
``streaming: auto`` streams a split, and that a streamed batch is the in-memory batch to within JPEG error."""

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # `python main.py` imports this file by class_path, without pytest's sys.path
    sys.path.insert(0, str(TESTS))

import project.cli  # noqa: E402
import project.data.image_folder  # noqa: E402
from conftest import QUIET, REPO, SYNTHETIC, write_image_folder  # noqa: E402
from project.data.image_folder import ImageFolderDataModule  # noqa: E402
from project.data.in_memory import _channel_std_mean  # noqa: E402
from project.data.shards import Shards, decoded_bytes  # noqa: E402

# main.py finds RecordingImageFolder as test_streaming_ddp.RecordingImageFolder through this path.
IMPORTABLE = {"PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])}


def ddp_fit(*args: str) -> list[str]:
    return [
        "fit",
        "--config",
        SYNTHETIC,
        "--config",
        str(REPO / "configs" / "ddp.yaml"),
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
        *QUIET,
        "--model.scheduler.warmup_steps",
        "1",
        *args,
    ]


def start_main(args: list[str], cwd: Path, **kwargs) -> subprocess.Popen:
    """`python main.py ARGS` in a new session: it, its DDP rank and its workers can be ended together. Each of
    them prints its threads' stacks when sent SIGABRT (Python's faulthandler)."""
    return subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), *args],
        cwd=cwd,
        env={**os.environ, **IMPORTABLE, "PYTHONFAULTHANDLER": "1"},
        start_new_session=True,
        **kwargs,
    )


def end(run: subprocess.Popen) -> None:
    """Ends a run, with its DDP rank and workers: its whole process group, which outlives the run's own process
    while any of them is left (a decode pool's workers, for one, would hold its output open)."""
    with contextlib.suppress(ProcessLookupError):  # none is left
        os.killpg(run.pid, signal.SIGKILL)
    run.wait()


def processes_of_group(group: int) -> list[int]:
    """The processes of a process group, the oldest first (the ranks, then their workers): from /proc, on Linux."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command's name, which may hold spaces
            if int(fields[2]) == group:  # the fifth field of stat: the process group
                members.append(int(stat.parent.name))
    return sorted(members)


def run_ddp(args: list[str], cwd: Path, timeout: float = 240) -> None:
    """A DDP run through `python main.py`, failed rather than waited on if it hangs."""
    run = start_main(args, cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = run.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in processes_of_group(run.pid):  # one by one, so that their stacks do not interleave
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.communicate(timeout=1)
        end(run)
        _, stderr = run.communicate()
        pytest.fail(f"main.py {' '.join(args)} did not end in {timeout} s: a rank hangs; stderr:\n{stderr[-20000:]}")
    if run.returncode != 0:
        pytest.fail(f"main.py {' '.join(args)} exited {run.returncode}:\n{stderr[-5000:]}")


class RecordingImageFolder(ImageFolderDataModule):
    """An image folder that records each batch's image indices and labels (``on_after_batch_transfer`` gets
    ``(images, labels, indices)`` and drops the indices) under ``train<epoch>``, ``val<epoch>``, ``sanity`` or
    ``test``, and writes them, with what each split holds, to ``<record_dir>/rank<global rank>.json`` as each
    stage ends."""

    def __init__(self, record_dir: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.record_dir = Path(record_dir)
        self.indices: dict[str, list[list[int]]] = {}
        self.labels: dict[str, list[list[int]]] = {}

    def on_after_batch_transfer(self, batch, dataloader_idx):
        trainer = self.trainer
        if trainer.sanity_checking:
            key = "sanity"
        elif trainer.training:
            key = f"train{trainer.current_epoch}"
        elif trainer.validating:
            key = f"val{trainer.current_epoch}"
        else:
            key = "test" if trainer.testing else "other"
        self.indices.setdefault(key, []).append(batch[2].tolist())
        self.labels.setdefault(key, []).append(batch[1].tolist())
        return super().on_after_batch_transfer(batch, dataloader_idx)

    def teardown(self, stage: str) -> None:
        self.record_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "world_size": self.trainer.world_size,
            "pid": os.getpid(),
            "streamed": sorted(name for name, split in self.splits.items() if isinstance(split, Shards)),
            "sizes": {split: len(self.image_names(split)) for split in ("train", "val", "test")},
            "lengths": {name: len(split) for name, split in self.splits.items() if isinstance(split, Shards)},
            "indices": self.indices,
            "labels": self.labels,
        }
        (self.record_dir / f"rank{self.trainer.global_rank}.json").write_text(json.dumps(record))


# 90 training images, 13 held out for validation (12: a stratified draw), 22 test images; per rank 39 training
# images, 4 batches of 8.
TRAIN_PER_CLASS, TEST_PER_CLASS, VAL_SIZE, BATCH, EPOCHS = 45, 11, 13, 8, 2


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Two epochs of DDP on an image folder whose every split streams, then ``test``: each rank's record."""
    workdir = tmp_path_factory.mktemp("streaming_ddp")
    write_image_folder(workdir / "images", classes=("cat", "dog"), per_class=TRAIN_PER_CLASS, splits=("train",))
    write_image_folder(workdir / "images", classes=("cat", "dog"), per_class=TEST_PER_CLASS, splits=("test",))
    run_ddp(
        ddp_fit(
            "--trainer.max_epochs",
            str(EPOCHS),
            "--test_after_fit",
            "true",
            "--data",
            "test_streaming_ddp.RecordingImageFolder",
            "--data.record_dir",
            str(workdir / "record"),
            "--data.root",
            "images",
            "--data.cache_dir",
            "cache",
            "--data.val_size",
            str(VAL_SIZE),
            "--data.batch_size",
            str(BATCH),
            "--data.streaming",
            "true",
            "--data.num_workers",
            "1",
        ),
        workdir,
    )
    # The run wrote the three splits' shards itself, once (prepare_data on one rank; the other waits), and whole.
    assert sorted(path.suffix for path in (workdir / "cache").iterdir()) == [".shards"] * 3
    records = [json.loads((workdir / "record" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world_size"] for r in records] == [2, 2] and records[0]["pid"] != records[1]["pid"]
    assert all(r["streamed"] == ["test", "train", "val"] for r in records)
    return records


def flat(batches: list[list[int]]) -> list[int]:
    return [index for batch in batches for index in batch]


@pytest.mark.parametrize("epoch", range(EPOCHS))
def test_ddp_ranks_train_on_disjoint_equal_shares_of_a_streamed_split(ranks, epoch):
    batches = [r["indices"][f"train{epoch}"] for r in ranks]
    train_size = ranks[0]["sizes"]["train"]
    # A rank with a batch more would wait for the other forever; each the whole batches of its half (39: 4 of 8).
    assert len(batches[0]) == len(batches[1]) == train_size // 2 // BATCH == 4
    assert all(len(batch) == BATCH for rank in batches for batch in rank)  # drop_last
    seen = [flat(rank) for rank in batches]
    assert all(len(set(rank)) == len(rank) for rank in seen)  # no image twice on a rank
    assert not set(seen[0]) & set(seen[1])  # nor on both
    assert set(seen[0]) | set(seen[1]) <= set(range(train_size))
    # Each rank's share mixes the classes (the folder lists them one after the other).
    for labels in ([label for batch in r["labels"][f"train{epoch}"] for label in batch] for r in ranks):
        assert min(labels.count(0), labels.count(1)) >= len(labels) // 4, labels


def test_each_epoch_streams_the_training_images_in_a_new_order(ranks):
    for r in ranks:
        assert flat(r["indices"]["train0"]) != flat(r["indices"]["train1"])


def test_each_epoch_drops_other_training_images(ranks):
    train_size = ranks[0]["sizes"]["train"]
    dropped = [
        set(range(train_size)) - set(flat(ranks[0]["indices"][f"train{epoch}"] + ranks[1]["indices"][f"train{epoch}"]))
        for epoch in range(EPOCHS)
    ]
    assert dropped[0] and dropped[0] != dropped[1]


def test_ddp_ranks_each_evaluate_every_image_of_a_streamed_split_once(ranks):
    for r in ranks:
        for epoch in range(EPOCHS):
            assert sorted(flat(r["indices"][f"val{epoch}"])) == list(range(r["sizes"]["val"]))
        assert sorted(flat(r["indices"]["test"])) == list(range(r["sizes"]["test"]))


def test_a_streamed_split_has_its_whole_length_on_every_rank(ranks):
    for r in ranks:
        assert r["lengths"] == r["sizes"]


# streaming: auto


def auto_folder(root: Path, budget, monkeypatch, streaming="auto") -> tuple[ImageFolderDataModule, dict[str, int]]:
    """20 training images, 4 held out of them for validation, 8 test images, and the memory budget
    ``budget(sizes)`` (each split's decoded bytes): the data module and those sizes."""
    write_image_folder(root / "images", classes=("cat", "dog"), per_class=12, splits=("train",))
    write_image_folder(root / "images", classes=("cat", "dog"), per_class=4, splits=("test",))
    data = ImageFolderDataModule(
        root=str(root / "images"), cache_dir=str(root / "cache"), val_size=4, streaming=streaming, num_workers=0
    )
    sizes = {split: decoded_bytes(len(data.image_names(split)), data.stored_size) for split in ("train", "val", "test")}
    assert sizes["train"] > sizes["test"] > sizes["val"] > 0
    monkeypatch.setattr(project.data.image_folder, "memory_budget", lambda: budget(sizes))
    return data, sizes


def test_auto_keeps_every_split_in_memory_when_all_fit_the_budget(tmp_path, monkeypatch):
    data, _ = auto_folder(tmp_path, lambda sizes: sum(sizes.values()), monkeypatch)
    assert data.streamed_splits() == set()
    images, labels = data.load("train")
    assert isinstance(images, torch.Tensor) and images.shape == (20, 3, 32, 32) and len(labels) == 20


def test_auto_streams_the_largest_split_until_the_rest_fits(tmp_path, monkeypatch):
    data, sizes = auto_folder(tmp_path, lambda sizes: sizes["val"] + sizes["test"], monkeypatch)
    assert data.streamed_splits() == {"train"}
    train, test = data.load("train"), data.load("test")
    assert isinstance(train, Shards) and len(train) == 20
    assert isinstance(test[0], torch.Tensor) and len(test[0]) == 8
    # A byte less, and the next largest streams too.
    monkeypatch.setattr(project.data.image_folder, "memory_budget", lambda: sizes["val"] + sizes["test"] - 1)
    assert data.streamed_splits() == {"train", "test"}


def test_auto_streams_every_split_without_a_budget(tmp_path, monkeypatch):
    data, _ = auto_folder(tmp_path, lambda sizes: 0, monkeypatch)
    assert data.streamed_splits() == {"train", "val", "test"}
    assert isinstance(data.load("val"), Shards)


def test_streaming_false_never_streams(tmp_path, monkeypatch):
    data, _ = auto_folder(tmp_path, lambda sizes: 0, monkeypatch, streaming=False)
    assert data.streamed_splits() == set()
    assert isinstance(data.load("train")[0], torch.Tensor)


def test_a_streaming_setting_other_than_auto_true_false_is_one_error_line(tmp_path, monkeypatch, capsys):
    write_image_folder(tmp_path / "images", classes=("cat", "dog"))
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", SYNTHETIC, *QUIET, "--data", "ImageFolderDataModule", "--data.root", "images"]
    monkeypatch.setattr(sys, "argv", ["main.py", *args, "--data.streaming", "maybe"])
    with pytest.raises(SystemExit) as stopped:
        project.cli.main()
    stderr = capsys.readouterr().err
    if isinstance(stopped.value.code, str):  # sys.exit("error: ...")
        stderr += stopped.value.code
    assert stopped.value.code != 0
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    others = [line for line in stderr.splitlines() if not line.startswith(("error: ", "(", "Seed set to "))]
    assert len(errors) == 1 and not others, stderr
    assert "data.streaming" in errors[0] and "maybe" in errors[0], errors[0]
    assert all(word in errors[0] for word in ("auto", "true", "false")), errors[0]
    assert not (tmp_path / "logs").exists()


# Streamed and in-memory images


def textured_folder(root: Path) -> Path:
    """Smooth random images of several sizes (the stored square is a resized centre crop), no two alike: a grey
    texture in a colour of its own, as in photographs, where colour changes more slowly than brightness."""
    generator = np.random.default_rng(0)
    for split, count in (("train", 16), ("test", 4)):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                grey = generator.integers(0, 256, (6, 5, 1)) * generator.uniform(0.4, 1.0, 3)
                coarse = Image.fromarray(grey.astype(np.uint8))
                coarse.resize((40 + 4 * (i % 3), 48), Image.BICUBIC).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def streamed_and_in_memory(tmp_path_factory):
    root = textured_folder(tmp_path_factory.mktemp("textured") / "images")
    pair = []
    for streaming in (True, False):
        data = ImageFolderDataModule(
            root=str(root),
            cache_dir=str(root.parent / "cache"),
            val_size=0,
            batch_size=8,
            streaming=streaming,
            num_workers=0,
        )
        data.setup("fit")
        pair.append(data)
    assert isinstance(pair[0].splits["train"], Shards) and isinstance(pair[1].splits["train"][0], torch.Tensor)
    return pair


def level_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().mean().item()


def test_a_streamed_training_batch_is_the_in_memory_batch_to_within_jpeg_error(streamed_and_in_memory):
    streamed, in_memory = streamed_and_in_memory
    images, labels = in_memory.splits["train"]
    batch_images, batch_labels, indices = next(iter(streamed.train_dataloader()))
    assert batch_images.dtype == torch.uint8 and len(indices) == 8
    assert level_difference(batch_images, images[indices]) < 2
    assert torch.equal(batch_labels, labels[indices])
    assert level_difference(batch_images, images[indices.roll(1)]) > 10  # the images differ: the check can fail
    # By position in the shards: every image, its listing index and label.
    shard_images, shard_labels, shard_indices = streamed.splits["train"].images(list(range(len(images))))
    assert sorted(shard_indices.tolist()) == list(range(len(images)))
    assert level_difference(shard_images, images[shard_indices]) < 2
    assert torch.equal(shard_labels, labels[shard_indices])


def test_a_streamed_split_is_normalized_with_the_in_memory_statistics(streamed_and_in_memory):
    streamed, in_memory = streamed_and_in_memory
    std, mean = _channel_std_mean(in_memory.splits["train"][0])
    assert streamed.mean.shape == mean.shape == (1, 3, 1, 1)
    assert (streamed.mean - mean).abs().max() < 1 and (streamed.std - std).abs().max() < 1
    assert torch.allclose(in_memory.mean, mean) and torch.allclose(in_memory.std, std)
