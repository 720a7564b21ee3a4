"""Tab completion: the script that `python -m project.completion` writes, sourced in a real bash, completes main.py."""

import shutil
import subprocess
import sys

import pytest

import project.completion
from conftest import REPO, start_process, starts_early

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

# What bash does on <TAB>: find the function registered for the command, call it with the words so far.
COMPLETE = """
source "$1"; shift
spec=$(complete -p main.py) || exit 3
function=${spec##*-F }; function=${function%% *}
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
"$function" main.py "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"
printf '%s\\n' "${COMPREPLY[@]}"
"""


@starts_early
def script(tmp_path_factory):
    """`python -m project.completion`, started with the session (it walks every class's signature): the script's
    path."""
    path = tmp_path_factory.mktemp("completion") / "main.py-completion.bash"
    finished = start_process([sys.executable, "-m", "project.completion"], cwd=REPO, timeout=300)

    def written():
        result = finished()
        assert result.returncode == 0, result.stderr
        path.write_text(result.stdout)
        return path

    return written


def complete(script, *words: str) -> list[str]:
    result = subprocess.run(
        ["bash", "-c", COMPLETE, "complete", str(script), "./main.py", *words],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.split()


@pytest.mark.parametrize(
    "words, expected",
    [
        (["f"], ["fit"]),
        (["fit", "--trainer.max_ep"], ["--trainer.max_epochs"]),
        (["fit", "--model.scheduler.warm"], ["--model.scheduler.warmup_steps", "--model.scheduler.warmup_fraction"]),
        (["fit", "--model.scheduler.min_lr_"], ["--model.scheduler.min_lr_ratio"]),
        (["test", "--ckpt_p"], ["--ckpt_path"]),
        (["fit", "--trainer.precision", "bf16-m"], ["bf16-mixed"]),
        (["fit", "--data.fl"], ["--data.flip"]),
    ],
)
def test_flags_and_values_complete(script, words, expected):
    assert complete(script, *words) == expected


@pytest.mark.parametrize(
    "words, expected",
    [
        (["fit", "--model.optimizer.l"], "--model.optimizer.lr"),
        (["fit", "--data", ""], "project.data.image_folder.ImageFolderDataModule"),
        (["fit", "--model.scheduler", ""], "project.optim.warmup_cosine.WarmupCosine"),
        (["fit", "--model", ""], "project.models.classifier.ImageClassifier"),
    ],
)
def test_class_names_and_their_settings_are_among_the_choices(script, words, expected):
    assert expected in complete(script, *words)


def test_another_shell_is_one_error_line():
    with pytest.raises(SystemExit) as exit:
        project.completion.main(["zsh"])
    assert exit.value.code.splitlines() == [
        "error: python -m project.completion zsh: the only shell offered is bash",
        "(set TRACEBACK=1 to see where it was raised)",
    ]
