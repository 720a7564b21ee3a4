"""Accuracy after every epoch of a run, as a Markdown table and a plot, next to a reference curve.

    python benchmarks/accuracy_per_epoch.py logs/cifar10/version_0 [--out benchmarks/results/cifar10]

Reads ``val/acc`` per epoch from the run's TensorBoard events (with ``data.val_size: 0`` that is
test accuracy without TTA) and ``test/acc`` from any ``test`` run given with ``--test-run``.
The reference is airbench94 on the same JPEG copy of CIFAR-10 (its own code, float32, 2-core CPU).
Writes ``<out>.md`` and, if matplotlib is installed, ``<out>.png``.
"""

import argparse
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

# airbench94, test accuracy without TTA after each epoch of its 10-epoch schedule, JPEG copy of
# CIFAR-10, one seed (the team's measurement); with TTA at the end: 90.73%.
AIRBENCH94_JPEG = [63.2, 67.7, 75.2, 67.0, 79.1, 81.4, 83.9, 86.7, 88.6, 90.0]


def scalars(run: Path, tag: str) -> list[float]:
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return [100 * event.value for event in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--test-run", type=Path, help="the directory of a `main.py test` run of the same checkpoint")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/accuracy_per_epoch"))
    args = parser.parse_args()
    accuracy = scalars(args.run, "val/acc")
    lines = ["| epoch | template | airbench94 |", "|---:|---:|---:|"]
    for epoch, value in enumerate(accuracy, start=1):
        reference = f"{AIRBENCH94_JPEG[epoch - 1]:.1f}%" if epoch <= len(AIRBENCH94_JPEG) else ""
        lines.append(f"| {epoch} | {value:.2f}% | {reference} |")
    if args.test_run:
        lines.append(f"| final, TTA | {scalars(args.test_run, 'test/acc')[-1]:.2f}% | 90.73% |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(range(1, len(accuracy) + 1), accuracy, marker="o", label="template (configs/cifar.yaml)")
    axes.plot(range(1, 11), AIRBENCH94_JPEG, marker="s", label="airbench94")
    axes.set(xlabel="epoch", ylabel="test accuracy without TTA (%)", title="CIFAR-10 (JPEG copy), CPU, float32")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(args.out.with_suffix(".png"), dpi=120, bbox_inches="tight")
    print(f"wrote {args.out.with_suffix('.md')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
