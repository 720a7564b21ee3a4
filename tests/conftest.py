import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parent.parent
SYNTHETIC = str(REPO / "configs" / "synthetic.yaml")
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def expected_lr(step: int, base: float, warmup: int, total: int, start_factor: float = 0.0, floor_ratio: float = 0.0):
    """The documented schedule, written out independently of the implementation."""
    floor = floor_ratio * base
    if step < warmup:
        return base * (start_factor + (1 - start_factor) * step / warmup)
    if step >= total:
        return floor
    return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def run_main(
    *args: str, cwd: Path, env: dict | None = None, check: bool = True, script: Path = REPO / "main.py"
) -> subprocess.CompletedProcess:
    """`python main.py ARGS` in a fresh process, with ``cwd`` as the working directory (logs/ goes there)."""
    result = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"main.py {' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def run_mains(*runs: tuple[Path, list[str]], env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """`python main.py ARGS` in ``cwd`` for each ``(cwd, ARGS)``, all at once, as ``run_main`` runs one: each
    process spends seconds starting up and waiting, which the others use. Exit statuses are the caller's to check."""
    started = [
        subprocess.Popen(
            [sys.executable, str(REPO / "main.py"), *args],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cwd, args in runs
    ]
    results = []
    for (_, args), process in zip(runs, started):
        stdout, stderr = process.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
    return results


def run_in_process(monkeypatch, *args: str) -> None:
    """`python main.py ARGS` in this process (faster than a new one; the current directory is the caller's)."""
    import project.cli

    monkeypatch.setattr(sys, "argv", ["main.py", *args])
    project.cli.main()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="session")
def run_dir(workdir):
    """One `python main.py fit --config configs/synthetic.yaml` (run in this process), logging every step and
    testing its final weights, read by several tests."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(workdir)
        run_in_process(
            monkeypatch,
            "fit",
            "--config",
            SYNTHETIC,
            "--trainer.log_every_n_steps",
            "1",
            "--test_after_fit",
            "true",
            *QUIET,
        )
    return workdir / "logs" / "synthetic" / "version_0"


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every point of ``tag`` in the run's TensorBoard event files."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def write_image_folder(root: Path, classes=("cat", "dog", "eel"), per_class=4, size=(32, 32), splits=("train", "test")):
    """``root/<split>/<class>/<i>.png``, each image one colour: class ``c``, image ``i`` is (40c, 10i mod 256, 200)."""
    for split in splits:
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", size, (40 * c, 10 * i % 256, 200)).save(root / split / name / f"{i}.png")
    return root


# Processes started with the session -----------------------------------------------------------------------------
# A test that waits for a real process leaves a core idle while it waits. The processes of a fixture made with
# ``starts_early`` start as soon as the session does (if a selected test uses the fixture), one per spare core, in
# the order in which the session's tests first use them, at a lower priority than the tests: they run on what the
# tests before theirs leave idle, and by the time a test asks for the fixture they have often finished.

_EARLY: dict = {}


def starts_early(start):
    """Decorator: a session-scoped fixture named after ``start``, whose processes start with the session.

    ``start(tmp_path_factory)`` prepares them (files, folders) and queues them with ``start_process``, without
    waiting, and returns a function of no arguments that waits for them and returns the fixture's value. An error in
    either is raised in the tests that use the fixture, as a fixture's own error would be."""
    _EARLY[start.__module__, start.__name__] = start

    @pytest.fixture(scope="session", name=start.__name__)
    def early(early_starts, tmp_path_factory):
        started = early_starts.get((start.__module__, start.__name__))
        if started is None:  # used by a test of another module (not started with the session): now
            started = start(tmp_path_factory)
        if isinstance(started, BaseException):
            raise started
        return started()

    early.__doc__ = start.__doc__
    return early


class _Queued:
    def __init__(self, args: list[str], cwd: Path, env: dict | None) -> None:
        self.args, self.cwd = args, cwd
        self.env = {name: value for name, value in {**os.environ, **(env or {})}.items() if value is not None}
        self.stdout, self.stderr = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.args,
            cwd=self.cwd,
            env=self.env,
            stdout=self.stdout,  # files: a pipe that nobody reads until its test would stall it
            stderr=self.stderr,
            # Its own process group, for a session that ends before its test to stop it and its children; not its
            # own session, which Linux's autogroup scheduling would give a share of the CPU equal to the tests'.
            process_group=0,
        )
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, self.process.pid, 10)  # the tests running meanwhile come first

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class _Background:
    """The queued processes: at most one per core but one run at once (the tests use the other), one more while a
    test waits for one. Checked between tests, and while a test waits."""

    def __init__(self) -> None:
        self.queued: list[_Queued] = []
        self.started: list[_Queued] = []
        self.waiting = 0

    def pump(self) -> None:
        limit = max(1, (os.cpu_count() or 2) - 1) + self.waiting
        while self.queued and sum(job.running() for job in self.started) < limit:
            self.start(self.queued[0])

    def start(self, job: _Queued) -> None:
        self.queued.remove(job)
        job.start()
        self.started.append(job)

    def wait(self, job: _Queued, timeout: float) -> subprocess.CompletedProcess:
        if job in self.queued:
            self.start(job)
        self.waiting += 1
        try:
            deadline = time.monotonic() + timeout
            while job.process.poll() is None:
                if time.monotonic() > deadline:
                    os.killpg(job.process.pid, signal.SIGKILL)
                    job.process.wait()
                    raise subprocess.TimeoutExpired(job.args, timeout)
                self.pump()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    job.process.wait(timeout=0.5)
        finally:
            self.waiting -= 1
        self.pump()
        with job.stdout, job.stderr:
            job.stdout.seek(0)
            job.stderr.seek(0)
            return subprocess.CompletedProcess(job.args, job.process.returncode, job.stdout.read(), job.stderr.read())

    def stop(self) -> None:
        for job in self.started:
            if job.running():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(job.process.pid, signal.SIGKILL)
                job.process.wait()
        for job in self.queued + self.started:
            job.stdout.close()
            job.stderr.close()
        self.queued.clear()


_BACKGROUND = _Background()


def start_process(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 600):
    """Queues ``args`` to run in a new process (with ``cwd``, the environment plus ``env``, where None removes a
    variable) in the background, at a lower priority; returns a function that waits for it and returns its
    ``subprocess.CompletedProcess`` (text output), as ``subprocess.run(..., capture_output=True, text=True,
    timeout=timeout)`` does."""
    job = _Queued(args, cwd, env)
    _BACKGROUND.queued.append(job)
    return lambda: _BACKGROUND.wait(job, timeout)


# Runs ``(module, argv)`` pairs one after the other, each as run_in_process runs main.py: sys.argv, then main().
_RUNS = """
import importlib, json, sys
for module, argv in json.loads(sys.argv.pop()):
    sys.argv = argv
    importlib.import_module(module).main()
"""


def start_runs(*runs: tuple[str, list[str]], cwd: Path, env: dict | None = None, timeout: float = 600):
    """``start_process`` of one new process that runs each ``(module, argv)`` in turn as ``run_in_process`` runs
    main.py in this one: ``sys.argv = argv``, then ``module.main()``; e.g. ``("project.cli", ["main.py", "fit", ...])``
    or ``("project.export", ["export", ...])``. The first that raises ends the process (exit status 1; SystemExit's
    own status)."""
    return start_process([sys.executable, "-c", _RUNS, json.dumps(runs)], cwd=cwd, env=env, timeout=timeout)


def start_fit(argv: list[str], cwd: Path):
    """``start_runs`` of one ``main.py fit`` (``argv`` as its sys.argv, "main.py" first); returns a function that
    waits for it, fails the test if it failed, and returns ``cwd``."""
    finished = start_runs(("project.cli", argv), cwd=cwd)

    def done() -> Path:
        result = finished()
        assert result.returncode == 0, f"{' '.join(argv)} exited with {result.returncode}:\n{result.stderr[-3000:]}"
        return cwd

    return done


@pytest.fixture(scope="session", autouse=True)
def early_starts(request, tmp_path_factory):
    """Prepares and starts, before the session's first test, the processes of each ``starts_early`` fixture that a
    selected test uses, in the order of those tests; at the session's end, stops any still running (a session cut
    short)."""
    order = [
        (item.module.__name__, name)
        for item in request.session.items
        if isinstance(item, pytest.Function)
        for name in item.fixturenames
        if (item.module.__name__, name) in _EARLY
    ]
    started = {}
    for key in dict.fromkeys(order):
        try:
            started[key] = _EARLY[key](tmp_path_factory)
        except Exception as error:  # the tests that use it report it
            started[key] = error
    _BACKGROUND.pump()
    yield started
    _BACKGROUND.stop()


def pytest_runtest_setup(item):
    _BACKGROUND.pump()  # a queued process starts in the place of one that has finished
