"""The in-memory data path: per-image augmentation, sharded batches, image folders and their cache."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torchvision
from PIL import Image
from pytorch_lightning import LightningModule, Trainer

import project.data.image_folder as image_folder
from conftest import REPO, SYNTHETIC, write_image_folder
from project.data.augment import random_resized_crop, random_shift_and_flip
from project.data.batches import TensorBatches
from project.data.image_folder import ImageFolderDataModule
from project.data.synthetic import SyntheticDataModule


def test_each_image_gets_its_own_shift_and_about_half_are_mirrored():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    out = random_shift_and_flip(image.expand(2000, -1, -1, -1), padding=2, mirror=torch.rand(2000) < 0.5)
    padded = torch.nn.functional.pad(image, (2, 2, 2, 2), mode="reflect")[0]
    windows = {
        (dy, dx, mirrored): window.flip(-1) if mirrored else window
        for dy in range(5)
        for dx in range(5)
        for mirrored in (False, True)
        for window in [padded[:, dy : dy + 32, dx : dx + 32]]
    }
    found = [next(k for k, w in windows.items() if torch.equal(o, w)) for o in out]  # each is a window
    assert len(set(found)) == 50  # every shift, mirrored and not, within one batch
    assert 0.45 < sum(mirrored for *_, mirrored in found) / len(found) < 0.55


def test_shift_only_and_flip_only():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (500, 3, 8, 8), dtype=torch.uint8)
    mirror = torch.rand(500) < 0.5
    flipped = random_shift_and_flip(images, padding=0, mirror=mirror)
    assert all(torch.equal(f, i.flip(-1) if m else i) for f, i, m in zip(flipped, images, mirror))
    shifted = random_shift_and_flip(images, padding=1, mirror=None)
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1), mode="reflect")
    assert all(
        any(torch.equal(s, p[:, dy : dy + 8, dx : dx + 8]) for dy in range(3) for dx in range(3))
        for s, p in zip(shifted, padded)
    )


def test_a_random_resized_crop_of_the_whole_image_is_torchvisions_antialiased_resize():
    images = torch.randint(0, 256, (3, 3, 48, 48), dtype=torch.uint8)
    out = random_resized_crop(images, 20, scale=(1.0, 1.0), mirror=None, ratio=(1.0, 1.0))
    assert out.dtype == torch.uint8 and out.shape == (3, 3, 20, 20)
    assert torch.equal(out, torchvision.transforms.v2.functional.resize(images, [20, 20], antialias=True))


def test_random_resized_crops_are_whole_pixel_windows_anywhere_in_the_image_each_its_own():
    # A quarter of the area at ratio 1, resized to its own size: each output is a window of the image as it is.
    image = torch.arange(64 * 64, dtype=torch.int32).view(1, 1, 64, 64)  # every pixel its own value
    mirror = torch.arange(400) % 2 == 1
    out = random_resized_crop(image.expand(400, -1, -1, -1).float(), 32, (0.25, 0.25), mirror, ratio=(1.0, 1.0))
    out = torch.where(mirror.view(-1, 1, 1, 1), out.flip(3), out).long()
    tops, lefts = out[:, 0, 0, 0] // 64, out[:, 0, 0, 0] % 64
    for crop, top, left in zip(out, tops, lefts):
        assert torch.equal(crop[0], image[0, 0, top : top + 32, left : left + 32].long())
    assert tops.min() == 0 and tops.max() == 32 and lefts.min() == 0 and lefts.max() == 32  # every position
    assert len(set(zip(tops.tolist(), lefts.tolist()))) > 300  # each image its own draw


def test_random_resized_crops_follow_the_scale_and_ratio_drawn():
    # Crops of 0.3-0.6 of the area at ratios 1/2-2 of a 200x200 image: measured by a pixel-coordinate image.
    rows = torch.arange(200.0).view(1, 1, 200, 1).expand(1, 1, 200, 200)
    cols = torch.arange(200.0).view(1, 1, 1, 200).expand(1, 1, 200, 200)
    image = torch.cat([rows, cols], dim=1).expand(500, -1, -1, -1)
    out = random_resized_crop(image, 50, (0.3, 0.6), None, torch.Generator().manual_seed(0), ratio=(0.5, 2.0))
    height = out[:, 0, -1, 0] - out[:, 0, 0, 0] + 200 / 50 * (49 / 50)  # first to last sample, plus a pixel
    width = out[:, 1, 0, -1] - out[:, 1, 0, 0] + 200 / 50 * (49 / 50)
    area, aspect = height * width / 200**2, width / height
    assert area.min() > 0.25 and area.max() < 0.65 and aspect.min() > 0.45 and aspect.max() < 2.2
    assert aspect.min() < 0.6 and aspect.max() > 1.7 and area.min() < 0.35 and area.max() > 0.55  # the whole range


def test_training_batches_are_augmented_and_normalized_labels_untouched():
    data = SyntheticDataModule(train_size=256, val_size=64, test_size=64, batch_size=64)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    images, labels, indices = batch
    assert torch.equal(images, data.splits["train"][0][indices]) and torch.equal(
        labels, data.splits["train"][1][indices]
    )
    plain, same_labels = data.prepare_batch(batch, augment=False)
    assert torch.equal(same_labels, labels)
    assert torch.allclose(plain, (images.float() - data.mean) / data.std, atol=1e-6)
    augmented, same_labels = data.prepare_batch(batch, augment=True)
    assert torch.equal(same_labels, labels) and not torch.allclose(augmented, plain)


def test_a_constant_channel_is_normalized_to_zero_not_nan():
    data = SyntheticDataModule(train_size=64, val_size=0, test_size=16, batch_size=16)
    data.load = lambda split: (torch.full((64, 3, 8, 8), 90, dtype=torch.uint8), torch.zeros(64, dtype=torch.long))
    data.setup("fit")
    images, _ = data.prepare_batch(next(iter(data.train_dataloader())), augment=True)
    assert torch.allclose(images, torch.zeros_like(images), atol=1e-5)


def mirrored_in_epoch(data, epoch):
    """Which training images ``prepare_batch`` mirrors in ``epoch`` (no shift: a mirror is exact)."""
    images, labels = data.splits["train"]
    indices = torch.arange(len(images))
    out, _ = data.prepare_batch((images, labels, indices), augment=True, epoch=epoch)
    mirrors, _ = data.prepare_batch((images.flip(-1), labels, indices), augment=False)
    return torch.tensor([torch.equal(o, m) for o, m in zip(out, mirrors)])


def test_alternating_flip_mirrors_each_image_every_other_epoch_from_a_seeded_start():
    torch.manual_seed(3)
    data = SyntheticDataModule(train_size=400, val_size=0, test_size=16, crop_padding=0, flip="alternating")
    data.setup("fit")
    epochs = [mirrored_in_epoch(data, epoch) for epoch in range(4)]
    assert 0.4 < epochs[0].float().mean() < 0.6
    assert (
        torch.equal(epochs[1], ~epochs[0]) and torch.equal(epochs[2], epochs[0]) and torch.equal(epochs[3], ~epochs[0])
    )
    torch.manual_seed(3)
    again = SyntheticDataModule(train_size=400, val_size=0, test_size=16, crop_padding=0, flip="alternating")
    again.setup("fit")
    assert torch.equal(mirrored_in_epoch(again, 0), epochs[0])  # the same seed mirrors the same images
    torch.manual_seed(0)
    random = SyntheticDataModule(train_size=400, val_size=0, test_size=16, crop_padding=0, flip="random")
    random.setup("fit")
    first, second = mirrored_in_epoch(random, 0), mirrored_in_epoch(random, 1)
    assert 0.15 < (first == second).float().mean() < 0.85 and not torch.equal(first, ~second)
    none = SyntheticDataModule(train_size=400, val_size=0, test_size=16, crop_padding=0, flip="none")
    none.setup("fit")
    assert not mirrored_in_epoch(none, 0).any()


@pytest.mark.parametrize("world_size, drop_last", [(1, True), (2, True), (3, False), (4, True)])
def test_ranks_get_disjoint_equal_shards_and_a_new_order_each_epoch(world_size, drop_last):
    n, batch_size = 103, 8
    data = torch.arange(n)
    loaders = [
        TensorBatches(data, data, batch_size, True, drop_last, seed=5, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    epochs = []
    for epoch in range(2):
        for loader in loaders:
            loader.set_epoch(epoch)
        batches = [list(loader) for loader in loaders]
        assert all(len(b) == len(loaders[0]) for b in batches)  # every rank runs the same number of batches
        assert all(torch.equal(images, indices) for b in batches for images, _, indices in b)
        shards = [torch.cat([images for images, *_ in b]) for b in batches]
        seen = torch.cat(shards)
        assert len(seen.unique()) == len(seen)  # disjoint
        shard_size = n // world_size
        expected = (shard_size // batch_size) * batch_size if drop_last else shard_size
        assert all(len(shard) == expected for shard in shards)
        epochs.append(seen)
    assert not torch.equal(epochs[0], epochs[1])
    full = TensorBatches(data, data, 10, shuffle=False, drop_last=False)
    assert torch.equal(torch.cat([images for images, *_ in full]), data)  # complete, in order, last batch kept


class LabelsSeen(LightningModule):
    """Records the labels of every training batch, epoch by epoch; learns nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: dict[int, list[int]] = {}

    def training_step(self, batch, batch_idx):
        self.seen.setdefault(self.current_epoch, []).extend(batch[1].tolist())
        return self.weight * 0

    def validation_step(self, batch, batch_idx):
        pass  # never run (limit_val_batches 0); Lightning warns of a module without one

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_trainer_gives_each_epoch_its_own_order():
    # The loader draws its order from the epoch Lightning passes to its set_epoch at each epoch start.
    model = LabelsSeen()
    data = SyntheticDataModule(train_size=64, val_size=0, test_size=8, batch_size=8, crop_padding=0, flip="none")
    trainer = Trainer(
        max_epochs=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    assert sorted(model.seen) == [0, 1, 2]
    labels = data.splits["train"][1].tolist()
    assert all(sorted(seen) == sorted(labels) for seen in model.seen.values())  # every image once an epoch
    assert len({tuple(seen) for seen in model.seen.values()}) == 3  # three orders


def test_image_folder_reads_classes_resizes_and_holds_out_validation(tmp_path):
    root = write_image_folder(tmp_path / "images", size=(40, 24))
    data = ImageFolderDataModule(str(root), image_size=16, cache_dir=str(tmp_path / "cache"), batch_size=4, val_size=3)
    assert data.class_names == ["cat", "dog", "eel"] and data.num_classes == 3
    data.setup("fit")
    images, labels = data.splits["train"]
    assert images.shape == (9, 3, 16, 16) and images.dtype == torch.uint8
    assert len(data.splits["val"][0]) == 3 and len(data.splits["test"][0]) == 12
    test_images, test_labels = data.splits["test"]
    assert test_labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert test_images[4, :, 0, 0].tolist() == [40, 0, 200]  # dog 0: the colour it was written with


def test_image_folder_uses_its_val_folder_when_there_is_one(tmp_path):
    root = write_image_folder(tmp_path / "images", splits=("train", "val", "test"), per_class=2)
    data = ImageFolderDataModule(str(root), cache_dir=str(tmp_path / "cache"), batch_size=2, val_size=5000)
    data.setup("fit")
    assert len(data.splits["train"][0]) == 6 and len(data.splits["val"][0]) == 6


class NoDecoding:
    def __init__(self, *args):
        raise AssertionError("decoded again although the cache is valid")


def test_prepare_data_decodes_once_and_setup_reads_the_cache(tmp_path, monkeypatch):
    # Lightning runs prepare_data in one process per machine, setup in every rank.
    root = write_image_folder(tmp_path / "images", splits=("train", "val", "test"), per_class=2)
    data = ImageFolderDataModule(str(root), cache_dir=str(tmp_path / "cache"), batch_size=2)
    data.prepare_data()
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3
    monkeypatch.setattr(image_folder, "Pool", NoDecoding)
    data.setup("fit")
    assert len(data.splits["train"][0]) == 6 and len(data.splits["val"][0]) == 6


def test_the_cache_is_reused_and_rebuilt_when_the_folder_changes(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "images")
    cache = tmp_path / "cache"
    make = lambda: ImageFolderDataModule(str(root), cache_dir=str(cache), val_size=1)  # noqa: E731
    first = make().load("train")
    [cache_file] = cache.glob("*-train-*.pt")
    monkeypatch.setattr(image_folder, "Pool", NoDecoding)
    again = make().load("train")
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])

    monkeypatch.undo()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(root / "train" / "dog" / "new.png")
    rebuilt = make().load("train")
    assert len(rebuilt[0]) == len(first[0]) + 1
    assert list(cache.glob("*-train-*.pt")) != [cache_file] and len(list(cache.glob("*-train-*.pt"))) == 1


def test_a_corrupt_image_is_named(tmp_path):
    root = write_image_folder(tmp_path / "images")
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"not an image at all")
    data = ImageFolderDataModule(str(root), cache_dir=str(tmp_path / "cache"), val_size=1)
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.jpg"):
        data.load("train")


def test_folder_mistakes_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataModule(str(tmp_path / "nowhere"))
    root = write_image_folder(tmp_path / "mismatch")
    (root / "test" / "eel").rename(root / "test" / "emu")
    with pytest.raises(ValueError, match=r"class folders differ .*'eel'.*'emu'"):
        ImageFolderDataModule(str(root))
    root = write_image_folder(tmp_path / "empty")
    for file in (root / "train" / "cat").iterdir():
        file.unlink()
    with pytest.raises(ValueError, match=r"class folder .*train/cat holds no images"):
        ImageFolderDataModule(str(root), cache_dir=str(tmp_path / "cache")).load("train")
    (tmp_path / "noclasses" / "train").mkdir(parents=True)
    (tmp_path / "noclasses" / "test").mkdir()
    with pytest.raises(ValueError, match="has no class folders"):
        ImageFolderDataModule(str(tmp_path / "noclasses"))
    (tmp_path / "notes.txt").write_text("a file")
    with pytest.raises(ValueError, match="data.cache_dir .*notes.txt is a file; it must be a folder"):
        ImageFolderDataModule(str(write_image_folder(tmp_path / "good")), cache_dir=str(tmp_path / "notes.txt"))


def test_val_size_zero_validates_on_the_test_set():
    data = SyntheticDataModule(train_size=128, test_size=32, val_size=0)
    data.setup("fit")
    assert len(data.splits["train"][0]) == 128
    assert data.splits["val"][0] is data.splits["test"][0]


# Decodes an image folder with a decoder slowed to 0.2 s an image (the pool's forked workers inherit it),
# which says "decoding" as it starts each image, and whether that worker would take Ctrl-C (Python's default
# handler, which raises KeyboardInterrupt). Ctrl-C must end it promptly, workers included, and cache nothing.
SLOW_DECODING = """
import signal, sys, time
# Python's own Ctrl-C handling, as in a terminal: it keeps SIGINT ignored if this process was started so, as a
# shell starts a job in the background (pytest run with `&`).
signal.signal(signal.SIGINT, signal.default_int_handler)
import project.data.image_folder as image_folder
from project.cli import main
decode = image_folder.decode_image


def slow_decode(*args):
    takes_ctrl_c = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    print("decoding, and a worker that takes Ctrl-C" if takes_ctrl_c else "decoding", flush=True)
    try:
        time.sleep(0.2)
    except KeyboardInterrupt:
        print("a decoding worker took Ctrl-C", file=sys.stderr, flush=True)
        raise
    return decode(*args)


image_folder.decode_image = slow_decode
sys.argv = ["main.py", *sys.argv[1:]]
main()
"""
STARTING = ("Seed set to ", "GPU available: ", "TPU available: ")  # what Lightning says before it fits


def test_ctrl_c_while_decoding_exits_promptly_and_caches_nothing(tmp_path):
    write_image_folder(tmp_path / "images", per_class=100)  # 300 images: a minute to decode
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SLOW_DECODING,
            "fit",
            "--config",
            SYNTHETIC,
            "--data",
            "ImageFolderDataModule",
            "--data.root",
            "images",
            "--data.cache_dir",
            "cache",
            "--data.val_size",
            "30",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job, which this test signals
    )
    try:
        while (line := process.stdout.readline()) and not line.startswith("decoding"):  # a worker's first image
            pass
        time.sleep(1)  # every worker well into its share
        os.killpg(process.pid, signal.SIGINT)  # the process and the pool's workers, as Ctrl-C in a terminal
        start = time.perf_counter()
        stdout, stderr = process.communicate(timeout=60)  # a hang fails here
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever is left of the group, when the test failed
            os.killpg(process.pid, signal.SIGKILL)
    assert time.perf_counter() - start < 30
    assert line.startswith("decoding") and "takes Ctrl-C" not in line + stdout
    # Lightning's own handling of Ctrl-C, one line, exit 1: a worker that took the signal would add its own lines
    # ("Process ForkPoolWorker-1:", its traceback).
    said = [line for line in stderr.splitlines() if line.strip() and not line.startswith(STARTING)]
    assert said == ["Detected KeyboardInterrupt, attempting graceful shutdown ..."], stderr[-3000:]
    assert process.returncode == 1
    assert not list((tmp_path / "cache").glob("*"))  # no cache file, finished or half-written


def test_a_resume_with_another_batch_size_goes_on_where_the_epoch_stopped_and_says_so():
    def train_batches(batch_size, state=None):
        data = SyntheticDataModule(batch_size=batch_size)
        data.setup("fit")
        if state is not None:
            data.load_state_dict(state)
        return [indices for _, _, indices in data.train_dataloader()]

    torch.manual_seed(0)
    epoch = torch.cat(train_batches(64))  # epoch 0's order
    state = {"epoch": 0, "batch": 5, "batch_size": 64, "augment_rng": torch.Generator().get_state()}
    again = "after 320 images .* batch 6 of that epoch, so its last 32 images are seen again"
    with pytest.warns(UserWarning, match=again):
        resumed = train_batches(48, state)
    assert torch.equal(torch.cat(resumed), epoch[6 * 48 : 6 * 48 + len(resumed) * 48])
    with pytest.warns(UserWarning, match="after 320 images .* batch 10 of that epoch. The schedule"):
        assert torch.equal(train_batches(32, state)[0], epoch[320:352])
