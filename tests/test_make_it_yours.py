"""The README's "Make it yours": a network in a new file plugged in by a config alone, and the package renamed."""

import re
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import QUIET, REPO, run_in_process, start_process, starts_early, write_image_folder

BRIEFLY = ["--trainer.max_steps", "3", "--model.scheduler.warmup_steps", "1", *QUIET]


def test_the_readmes_network_in_a_new_file_trains_with_images_yaml(tmp_path, monkeypatch):
    # The README's SmallCNN, in a file outside the package, named on the command line with configs/images.yaml
    # (whose TorchvisionNet settings do not carry over to it).
    readme = (REPO / "README.md").read_text()
    [network] = re.findall(r"### Add your own network\n.*?```python\n(.*?)```", readme, re.DOTALL)
    (tmp_path / "mynets").mkdir()
    (tmp_path / "mynets" / "small_cnn.py").write_text(network)
    write_image_folder(tmp_path / "photos", per_class=6, size=(40, 30), splits=("train",))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    # 18 photos: 12 to train on, fewer than images.yaml's batch of 32.
    with pytest.warns(UserWarning, match="data.batch_size 32 is larger than the 12 training images: lowered to 12"):
        run_in_process(monkeypatch, "fit", "--config", str(REPO / "configs" / "images.yaml"), "--data.root", "photos",
                       "--model.network", "mynets.small_cnn.SmallCNN", "--model.network.width", "4",
                       "--data.image_size", "16", "--trainer.max_steps", "3", *QUIET)  # fmt: skip
    weights = torch.load(tmp_path / "logs" / "photos" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert weights["state_dict"]["network.head.weight"].shape == (3, 16)
    assert weights["hyper_parameters"]["network"]["init_args"] == {"width": 4}


@starts_early
def renamed_fork(tmp_path_factory):
    """A copy of the repository renamed by the README's commands, and `python main.py fit` of the copy's synthetic
    config (with the copy on PYTHONPATH), started with the session: ``(folder, copy, finished process)``."""
    tmp_path = tmp_path_factory.mktemp("make_it_yours")
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
    fit = [sys.executable, str(copy / "main.py"), "fit", "--config", str(copy / "configs" / "synthetic.yaml"), *BRIEFLY]
    finished = start_process(fit, cwd=tmp_path, env={"PYTHONPATH": str(copy)})
    return lambda: (tmp_path, copy, finished())


def test_the_readmes_rename_commands_rename_the_package(renamed_fork):
    tmp_path, copy, fitted = renamed_fork
    leftovers = [
        str(path)
        for path in copy.rglob("*")
        if path.suffix in (".py", ".yaml") and re.search(r"\bproject\.[a-z]", path.read_text())
    ]
    assert not (copy / "project").exists() and not leftovers and '"project' not in (copy / "pyproject.toml").read_text()
    if fitted.returncode != 0:
        pytest.fail(f"main.py fit exited {fitted.returncode}:\n{fitted.stdout[-3000:]}\n{fitted.stderr[-5000:]}")
    config = yaml.safe_load((tmp_path / "logs" / "synthetic" / "version_0" / "config.yaml").read_text())
    assert config["model"]["class_path"] == "mypkg.models.classifier.ImageClassifier"
