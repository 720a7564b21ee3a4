"""Start-up time: `python main.py fit --help` against a bare `import pytorch_lightning.cli`.

    python benchmarks/startup.py [--runs 5]

Runs the two commands alternately and prints the median wall time of each and their ratio.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

MAIN = str(Path(__file__).resolve().parent.parent / "main.py")
COMMANDS = {
    "main.py fit --help": [sys.executable, MAIN, "fit", "--help"],
    "import pytorch_lightning.cli": [sys.executable, "-c", "import pytorch_lightning.cli"],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, median in medians.items():
        print(f"{name:<32}{median:6.2f} s")
    help_time, import_time = medians.values()
    print(f"ratio{help_time / import_time:32.2f}x")


if __name__ == "__main__":
    main()
