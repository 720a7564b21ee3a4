"""LitData's loader over a split's shards, started where a run stopped (``project/data/shards.py`` makes it)."""

from litdata import StreamingDataLoader


class ShardBatches(StreamingDataLoader):
    """LitData's loader, started at a given epoch and batch: where the trainer's own progress says a run
    stopped. LitData's saved position counts the batches its loader handed out, one ahead of the trainer's
    (Lightning fetches the next batch before the step), so the position is set from the trainer's count."""

    def start_at(self, epoch: int, batch: int) -> None:
        """The next pass is epoch ``epoch`` (the trainer's, from 0), from its ``batch``-th batch."""
        if batch == 0:
            self.current_epoch = epoch  # LitData counts passes from 1 and adds one as a pass begins
            return
        samples = batch * self.batch_size
        state = self.dataset.state_dict(samples, self.num_workers, self.batch_size)
        state["current_epoch"] = epoch + 1
        workers = max(self.num_workers, 1)
        self.load_state_dict(
            {
                "dataset": state,
                "current_epoch": epoch + 1,
                "num_samples_yielded": samples,
                "latest_worker_idx": (batch - 1) % workers,  # the worker that made the last batch done
            }
        )
