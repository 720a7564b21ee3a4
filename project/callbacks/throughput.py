"""What Lightning's ``ThroughputMonitor`` counts in a batch of this template: images."""

import warnings

# Without a ``flops_per_batch`` on the module, ThroughputMonitor warns on every run; images per second need none
# (FLOPs and MFU would: lightning_fabric's ``measure_flops``).
warnings.filterwarnings("ignore", message="When using the `ThroughputMonitor`, you need to define a `flops_per_batch`")


def images_in_batch(batch) -> int:
    """``ThroughputMonitor(batch_size_fn=images_in_batch)``: a batch is ``(images, labels)``; any other kind
    (a module of your own) counts its first tensor's rows."""
    return len(batch[0] if isinstance(batch, (tuple, list)) else batch)
