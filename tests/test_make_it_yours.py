"""The README's "Make it yours": a network in a new file plugged in by a config alone, and the package renamed."""

import re
import shutil
import subprocess
import textwrap

import torch
import yaml

from conftest import QUIET, REPO, SYNTHETIC, run_main

BRIEFLY = ["--trainer.max_steps", "3", "--model.scheduler.warmup_steps", "1", *QUIET]


def test_a_network_in_a_new_file_is_plugged_in_by_a_config_alone(tmp_path):
    (tmp_path / "mynets").mkdir()
    (tmp_path / "mynets" / "tiny.py").write_text(
        textwrap.dedent("""
        from torch import nn

        class TinyNet(nn.Module):
            def __init__(self, num_classes: int, hidden: int = 8):
                super().__init__()
                self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, hidden), nn.ReLU())
                self.classifier = nn.Linear(hidden, num_classes)

            def forward(self, images):
                return self.classifier(self.body(images))
    """)
    )
    (tmp_path / "tiny.yaml").write_text(
        "model:\n  init_args:\n    network:\n      class_path: mynets.tiny.TinyNet\n      init_args: {hidden: 16}\n"
    )
    run_main(
        "fit", "--config", SYNTHETIC, "--config", "tiny.yaml", *BRIEFLY, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)}
    )
    weights = torch.load(
        tmp_path / "logs" / "synthetic" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True
    )["state_dict"]
    assert weights["network.classifier.weight"].shape == (10, 16)


def test_the_readmes_rename_commands_rename_the_package(tmp_path):
    copy = tmp_path / "fork"
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    for name in tracked.decode().split("\0"):
        if name and (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    readme = (REPO / "README.md").read_text()
    [commands] = re.findall(r"### Rename the package\n\n```bash\n(.*?)```", readme, re.DOTALL)
    commands = [line for line in commands.splitlines() if not line.startswith("pip install")]  # no network here
    git = "git init -q && git add -A && "
    subprocess.run(["bash", "-c", git + " && ".join(commands)], cwd=copy, check=True)
    leftovers = [
        str(path)
        for path in copy.rglob("*")
        if path.suffix in (".py", ".yaml") and re.search(r"\bproject\.[a-z]", path.read_text())
    ]
    assert not (copy / "project").exists() and not leftovers and '"project' not in (copy / "pyproject.toml").read_text()
    run_main(
        "fit",
        "--config",
        str(copy / "configs" / "synthetic.yaml"),
        *BRIEFLY,
        cwd=tmp_path,
        env={"PYTHONPATH": str(copy)},
        script=copy / "main.py",
    )
    config = yaml.safe_load((tmp_path / "logs" / "synthetic" / "version_0" / "config.yaml").read_text())
    assert config["model"]["class_path"] == "mypkg.models.classifier.ImageClassifier"
