"""Splits too large for memory: written once as LitData shards, streamed back in batches by DataLoader workers
(``ShardBatches``, ``project/data/shard_batches.py``). LitData is imported where it is used: a run that streams
nothing does not load it.

Each image is stored as the in-memory path would hold it (upright RGB, short side resized to the stored size,
centre square: ``project/data/decode.py``), re-encoded as a JPEG at quality 95 (1/17 of the decoded bytes on
photos at 256 px: ``benchmarks/streaming.py``).
Workers read the shards in chunks and decode whole batches (``torchvision.io.decode_jpeg``, libjpeg-turbo); the
batch then takes the same path as an in-memory one: to the device, augmented and normalized there
(``InMemoryImageDataModule.prepare_batch``), so the augmentation draws stay in the checkpoint.

LitData (its ``Cache`` writer, ``StreamingDataset``, ``StreamingDataLoader``) writes the chunks, shuffles them,
shards them across ranks and reads them back.
"""

import io
import json
import os
import shutil
import signal
import sys
import time
import warnings
from functools import partial
from multiprocessing import Pool
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.io import decode_jpeg

from project.data.decode import decode_image
from project.data.storage import is_remote, read

if TYPE_CHECKING:
    from project.data.shard_batches import ShardBatches

JPEG_QUALITY = 95  # visually lossless; the error is below the noise that training augmentation adds
# Items per chunk: at most about LitData's recommended 64 MB (2,048 JPEGs at 256 px), and at least 32 chunks to
# a split. LitData shuffles the order of chunks, then items within each; with one chunk, the items that an even
# number of batches leaves over would be the same ones every epoch.
MAX_CHUNK_ITEMS, MIN_CHUNKS = 2048, 32
STATS_FILE = "channel_stats.json"

# LitData's loader divides the work among its workers itself, which Lightning cannot see.
warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")


def write_shards(folder: Path, files: list[str], labels: list[int], side: int, seed: int, label: str) -> None:
    """Decode ``files`` at ``side`` in a pool of processes and write them into ``folder`` as LitData shards,
    atomically: a folder is whole or absent, and an interrupted write (Ctrl-C, a bad image) leaves nothing."""
    partial_folder = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(partial_folder, ignore_errors=True)
    partial_folder.mkdir(parents=True)
    try:
        _write(partial_folder, files, labels, side, seed, label)
    except BaseException:
        shutil.rmtree(partial_folder, ignore_errors=True)
        raise
    print(f" into {folder}", file=sys.stderr)
    try:
        os.replace(partial_folder, folder)
    except OSError:  # another process (a run started at the same time) wrote the same shards first
        shutil.rmtree(partial_folder)
        if not (folder / STATS_FILE).is_file():
            raise


def _write(folder: Path, files: list[str], labels: list[int], side: int, seed: int, label: str) -> None:
    # Items are written in a shuffled order: LitData shuffles chunks and the items within each, so a folder
    # listed class by class would otherwise give each worker's batches a few classes only.
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
    from litdata.streaming.cache import Cache

    writer = Cache(str(folder), chunk_size=max(1, min(MAX_CHUNK_ITEMS, -(-len(files) // MIN_CHUNKS))))
    writer._writer._distributed_env = _one_process()  # under DDP, prepare_data runs on one rank: merge waits for none
    inputs = [(index, files[index], labels[index]) for index in order]
    start, shown = time.monotonic(), 0.0
    counts = torch.zeros(3, 256, dtype=torch.int64)  # per channel, how many pixels have each level
    # Workers ignore Ctrl-C: the main process alone handles it, and ends them on its way out.
    with Pool(decode_processes(), initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
        for position, (item, image_counts) in enumerate(pool.imap(partial(_encode, side=side), inputs, chunksize=64)):
            writer[position] = item
            counts += torch.from_numpy(image_counts)
            if time.monotonic() - shown > 1 or position + 1 == len(inputs):
                shown, rate = time.monotonic(), (position + 1) / max(time.monotonic() - start, 1e-9)
                print(
                    f"\rwriting the {label} split as shards: {position + 1}/{len(inputs)} images ({rate:.0f}/s)",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
    writer.done()
    writer.merge()
    std, mean = std_mean_of_levels(counts)  # of every image, as the decoded images in memory give them
    stats = {"mean": mean.flatten().tolist(), "std": std.flatten().tolist()}
    (folder / STATS_FILE).write_text(json.dumps(stats))


def decode_processes() -> int:
    """Processes that decode a folder once, for its cache or its shards."""
    return min(os.cpu_count() or 1, 8)


def _encode(item: tuple[int, str, int], side: int) -> tuple[dict, np.ndarray]:
    """The shards' item for one image, and its per-channel histogram of levels."""
    index, path, label = item
    image = decode_image(path, side)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=JPEG_QUALITY)
    # numpy, not torch: a tensor would travel back through shared memory, a file descriptor each
    counts = np.stack([np.bincount(image[..., channel].ravel(), minlength=256) for channel in range(3)])
    return {"index": index, "label": label, "image": buffer.getvalue()}, counts


def std_mean_of_levels(counts: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel std and mean, shaped (1, C, 1, 1) to broadcast over a batch, from each channel's count of
    pixels at each of the 256 levels: exact."""
    counts, levels = counts.double(), torch.arange(256, dtype=torch.float64)
    n = counts.sum(dim=1)
    mean = (counts * levels).sum(dim=1) / n
    variance = (counts * (levels - mean[:, None]) ** 2).sum(dim=1) / (n - 1).clamp_min(1)
    # A constant channel (std 0) becomes 0, not NaN; under one grey level there is no signal to amplify.
    std = variance.sqrt().float().clamp_min(1.0).view(1, -1, 1, 1)
    return std, mean.float().view(1, -1, 1, 1)


def _one_process():
    from litdata.utilities.env import _DistributedEnv

    return _DistributedEnv(world_size=1, global_rank=0, num_nodes=1)


def _whole(dataset):
    """A LitData ``StreamingDataset`` read whole: LitData detects DDP itself and would give this rank only its part."""
    dataset.distributed_env = _one_process()
    return dataset


def _decode(encoded: bytes | memoryview) -> Tensor:
    # LitData hands bytes out as a read-only memoryview; decode_jpeg wants a writable uint8 tensor.
    return decode_jpeg(torch.frombuffer(bytearray(encoded), dtype=torch.uint8))


def decode_batch(items: list[dict]) -> tuple[Tensor, Tensor, Tensor]:
    """A DataLoader worker's collate: ``(uint8 images (N, 3, S, S), labels, indices)``, as ``TensorBatches``
    yields them (the index is the image's place in its split's listing)."""
    images = torch.stack([_decode(item["image"]) for item in items])
    labels = torch.tensor([item["label"] for item in items])
    indices = torch.tensor([item["index"] for item in items])
    return images, labels, indices


class Shards:
    """One split's shards: its size, channel statistics, decoded images by index, and its batches."""

    def __init__(self, folder: str, workers: int) -> None:
        from litdata import StreamingDataset
        from litdata.streaming import downloader as litdata_downloader

        self.folder, self.workers = folder, workers
        if is_remote(folder) and os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://"):
            # LitData reads S3 through obstore where it is installed, whose client refuses plain-HTTP endpoints
            # (a MinIO without TLS, a local test server); boto3, its other client, does not.
            litdata_downloader._OBSTORE_AVAILABLE = False
        self._dataset = _whole(StreamingDataset(folder))
        stats = json.loads(
            read(f"{folder}/{STATS_FILE}") if is_remote(folder) else (Path(folder) / STATS_FILE).read_text()
        )
        self.mean, self.std = (torch.tensor(stats[key]).view(1, -1, 1, 1) for key in ("mean", "std"))
        self.image_shape = tuple(_decode(self._dataset[0]["image"]).shape)

    def __len__(self) -> int:
        return len(self._dataset)

    def images(self, positions: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        """The images at these positions of the shards (not of the listing), decoded in this process."""
        return decode_batch([self._dataset[i] for i in positions])

    def batches(
        self, batch_size: int, shuffle: bool, drop_last: bool, seed: int = 0, sharded: bool = True
    ) -> "ShardBatches":
        """Batches of the split. ``sharded``: under DDP each rank streams its own part of it (LitData's
        chunk assignment; training); otherwise every rank streams all of it (evaluation, as in memory)."""
        from litdata import StreamingDataset

        from project.data.shard_batches import ShardBatches

        dataset = StreamingDataset(self.folder, shuffle=shuffle, seed=seed % 2**32)  # numpy's seeds are 32-bit
        if not sharded:
            _whole(dataset)
        dataset.drop_last = drop_last
        return ShardBatches(
            dataset,
            batch_size=batch_size,
            num_workers=self.workers,
            collate_fn=decode_batch,
            drop_last=drop_last,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,  # LitData's workers are not told to stop: a dropped loader waits 5 s per worker
        )


def default_workers(devices_per_machine: int) -> int:
    """DataLoader workers per device: the machine's cores shared among its devices, one left to each training
    process, at most 8 (decode rarely needs more per device)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores // max(devices_per_machine, 1) - 1))


def decoded_bytes(count: int, side: int) -> int:
    return count * 3 * side * side


def memory_budget() -> int:
    """Bytes of decoded images that may be held in memory: a fifth of the machine's memory, and of the GPU's
    when there is one (the in-memory path keeps the images on the training device). The in-memory path peaks
    at about 3.4x its decoded size while loading (measured: 60,000 JPEGs at 128 px, 2.8 GB decoded, 9.5 GB RSS),
    so a fifth leaves room for the rest of the run."""
    budget = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 5
    if torch.cuda.is_available():
        budget = min(budget, torch.cuda.get_device_properties(0).total_memory // 5)
    return budget
