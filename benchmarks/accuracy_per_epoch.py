"""Accuracy after every epoch of one or more runs, as a Markdown table and a plot, next to airbench94.

    python benchmarks/accuracy_per_epoch.py logs/cifar10/version_0 [logs/cifar10/version_2 ...] \
        [--test-runs logs/cifar10/version_1 ...] [--out benchmarks/results/cifar10]

Reads ``val/acc`` per epoch from each run's TensorBoard events (with ``data.val_size: 0`` that is
test accuracy without TTA) and ``test/acc`` from the ``test`` run of each one's checkpoint, given
in the same order with ``--test-runs``. Each run is named by its config's logger name and seed.
The reference is airbench94 on the same JPEG copy of CIFAR-10 (its own code, float32, 2-core CPU).
Writes ``<out>.md`` and, if matplotlib is installed, ``<out>.png``.
"""

import argparse
from pathlib import Path

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

# airbench94, test accuracy without TTA after each epoch of its 10-epoch schedule, JPEG copy of
# CIFAR-10, one seed (the team's measurement); with TTA at the end: 90.73%.
AIRBENCH94_JPEG = [63.2, 67.7, 75.2, 67.0, 79.1, 81.4, 83.9, 86.7, 88.6, 90.0]
AIRBENCH94_JPEG_TTA = 90.73


def scalars(run: Path, tag: str) -> list[float]:
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return [100 * event.value for event in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


def run_name(run: Path) -> str:
    config = yaml.safe_load((run / "config.yaml").read_text())
    return f"{config['trainer']['logger']['init_args']['name']}, seed {config['seed_everything']}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument(
        "--test-runs",
        type=Path,
        nargs="*",
        default=[],
        help="the directories of `main.py test` runs of the runs' last checkpoints, in the same order",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/accuracy_per_epoch"))
    args = parser.parse_args()
    curves = {run_name(run): scalars(run, "val/acc") for run in args.runs}
    epochs = max(len(AIRBENCH94_JPEG), *(len(curve) for curve in curves.values()))
    lines = ["| epoch | " + " | ".join(curves) + " | airbench94 |", "|---:" * (len(curves) + 2) + "|"]
    for epoch in range(epochs):
        row = [f"{curve[epoch]:.2f}%" if epoch < len(curve) else "" for curve in [*curves.values(), AIRBENCH94_JPEG]]
        lines.append(f"| {epoch + 1} | " + " | ".join(row) + " |")
    if args.test_runs:
        final = [f"**{scalars(run, 'test/acc')[-1]:.2f}%**" for run in args.test_runs]
        final += [""] * (len(curves) - len(final)) + [f"**{AIRBENCH94_JPEG_TTA:.2f}%**"]
        lines.append("| final, TTA | " + " | ".join(final) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    figure, axes = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        axes.plot(range(1, len(curve) + 1), curve, marker="o", label=name)
    axes.plot(range(1, len(AIRBENCH94_JPEG) + 1), AIRBENCH94_JPEG, marker="s", color="black", label="airbench94")
    axes.set(xlabel="epoch", ylabel="test accuracy without TTA (%)", title="CIFAR-10 (JPEG copy), CPU, float32")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(args.out.with_suffix(".png"), dpi=120, bbox_inches="tight")
    print(f"wrote {args.out.with_suffix('.md')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
