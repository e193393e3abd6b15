"""How a stage stops early: a full disk or Ctrl-C ends in one line and leaves nothing behind.

The stage scripts run for real, as `dvc repro` runs them (`python -m stages.X` in the project
root). A full disk is a small tmpfs filled to the last block, mounted in a private mount
namespace (`unshare`), so no root and no real disk is needed; the test skips where the
kernel does not allow unprivileged namespaces.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import TINY, copy_project, require_private_mounts, run, set_params

STAGE_ENV = {**os.environ, "LUNGDX_PROGRESS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}


def run_stage(project: Path, name: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", f"stages.{name}"], project, check=check, env=STAGE_ENV)


def prepared_project(root: Path, **params) -> Path:
    """A project whose data stages have run (by hand, as dvc repro would run them)."""
    project = copy_project(root, **{**TINY, **params})
    for name in ("download", "sample", "segment", "prepare"):
        run_stage(project, name)
    return project


def messages(stderr: str) -> list[str]:
    """What a person reads: stderr without TensorFlow's C++ start-up chatter."""
    return [
        line
        for line in stderr.splitlines()
        if line.strip() and not line.startswith(("WARNING: All log messages", "I0000", "E0000", "W0000"))
    ]


def leftovers(folder: Path) -> list[str]:
    """Hidden temporaries of atomic writes (and .old- folders) anywhere below folder."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob(".*")
        if p.name != ".filler" and (".tmp" in p.name or ".old-" in p.name)
    )


# --- a full disk ---------------------------------------------------------------------------

FILL = """
set -e
folder=$1; shift
saved=$(mktemp -d)
mkdir -p "$folder"; cp -r "$folder"/. "$saved"/
mount -t tmpfs -o size=4m tmpfs "$folder"
cp -r "$saved"/. "$folder"/
dd if=/dev/zero of="$folder"/.filler bs=4k 2>/dev/null || true
set +e
"$@" 2>stage.err
echo $? >stage.rc
find "$folder" -mindepth 1 -name '.*' -not -name .filler >stage.left
"""


def on_full_disk(project: Path, folder: str, stage_name: str) -> tuple[int, list[str], list[str]]:
    """Run a stage with `folder` (below the project) on a tmpfs with no free block left;
    returns its exit status, what it printed, and the temporaries left in that folder."""
    require_private_mounts()
    subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            FILL,
            "fill",
            folder,
            sys.executable,
            "-m",
            f"stages.{stage_name}",
        ],
        cwd=project,
        env=STAGE_ENV,
        check=True,
    )
    left = (project / "stage.left").read_text().split()
    return int((project / "stage.rc").read_text()), messages((project / "stage.err").read_text()), left


@pytest.mark.slow
def test_a_full_disk_in_any_stage_is_one_line_and_leaves_no_temporary(tmp_path):
    project = prepared_project(tmp_path / "p")
    cases = [  # stage, the folder that fills up, what the line must name
        ("prepare", "data", ["stage prepare", "data/prepared", "it needs about", "is free there"]),
        ("train", "models", ["stage train", "writing models/model.keras"]),  # Keras's save, after training
        # evaluate writes metrics/plots, then reports/eval.json: the plots of the failed run go too.
        ("evaluate", "reports", ["stage evaluate", "writing reports/eval.json"]),
        ("download", "data", ["stage download", "data/raw"]),  # synthetic images, written by workers
    ]
    run_stage(project, "features")
    for stage_name, folder, named in cases:
        outputs = {
            "download": ["data/raw"],
            "prepare": ["data/prepared"],
            "train": ["models/model.keras", "dvclive/train"],
            "evaluate": ["metrics/eval.json", "reports/eval.json", "metrics/plots"],
        }[stage_name]
        for out in outputs:  # as dvc repro does before it runs a stage (data/raw is persist: kept)
            if out != "data/raw":
                shutil.rmtree(project / out, ignore_errors=True)
                (project / out).unlink(missing_ok=True)
        rc, said, left = on_full_disk(project, folder, stage_name)
        assert rc == 2 and len(said) == 1, (stage_name, said)
        assert said[0].startswith("error: ") and "no space left" in said[0], said
        assert all(word in said[0] for word in named), (named, said)
        assert "Traceback" not in said[0] and left == [], (stage_name, left)
        assert not any((project / out).exists() for out in outputs if out != "data/raw"), (
            f"{stage_name}: an output of a run that failed looks complete"
        )
        if stage_name in ("prepare", "train"):  # space freed: it runs through, for the next case
            run_stage(project, stage_name)


# --- Ctrl-C ---------------------------------------------------------------------------------


def as_from_a_terminal() -> None:
    """In the child, before exec: SIGINT delivered and handled by default, as a shell starts a
    command. pytest itself may run with SIGINT ignored (a non-interactive shell starts `pytest &`
    that way) and a child inherits it; a stage started that way rightly ignores Ctrl-C."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_when(project: Path, stage_name: str, ready, times: int = 1) -> tuple[int, list[str]]:
    """Start a stage and send SIGINT to its whole process group, as Ctrl-C in a terminal does,
    once ready() is true (`times` times, 50 ms apart); returns its exit status and what it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", f"stages.{stage_name}"],
        cwd=project,
        env=STAGE_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=as_from_a_terminal,
    )
    deadline = time.monotonic() + 120
    while not ready():
        assert proc.poll() is None, f"{stage_name} ended before it could be interrupted: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"{stage_name} never got going"
        time.sleep(0.01)
    for i in range(times):
        time.sleep(0.05 * bool(i))
        assert proc.poll() is None, f"{stage_name} finished before the Ctrl-C was sent: the test was too slow"
        os.killpg(proc.pid, signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"{stage_name} hung after {times} Ctrl-C") from None
    return proc.returncode, messages(stderr)


@pytest.mark.slow
def test_ctrl_c_in_a_stage_is_one_true_line_without_worker_tracebacks_or_temporaries(tmp_path):
    # Enough images that download and prepare use worker processes and take a few seconds.
    project = prepared_project(tmp_path / "p", **{"dataset.synthetic.per_class": 200, "models.cnn.epochs": 50})
    run_stage(project, "features")
    data, curve = project / "data", project / "dvclive" / "train" / "plots" / "metrics" / "train" / "loss.tsv"
    cases = [  # stage, when to interrupt, how many Ctrl-C (a second one used to hang the worker pool)
        ("download", lambda: any(data.glob(".raw.*.tmp/COVID/images/*.png")), 2, "as before this run: data/raw"),
        ("prepare", lambda: any(data.glob(".prepared.*.tmp/train/images.npy")), 1, "absent: data/prepared"),
        (
            "train",
            lambda: curve.is_file() and len(curve.read_text().splitlines()) > 1,
            1,
            "absent: models/model.keras, dvclive/train",
        ),
    ]
    raw_before = sorted(p.relative_to(data).as_posix() for p in (data / "raw").rglob("*"))
    for stage_name, ready, times, outputs in cases:
        if stage_name == "prepare":
            shutil.rmtree(data / "prepared")  # as dvc repro does before it runs a stage
        # A download long enough (6000 images of 256 px) that a loaded machine cannot finish it
        # between the first image and the signal; it is interrupted, so data/raw stays as it was.
        set_params(
            project,
            **{
                "dataset.synthetic.per_class": 1500 if stage_name == "download" else 200,
                "dataset.synthetic.image_size": 256 if stage_name == "download" else 64,
            },
        )
        rc, said = interrupt_when(project, stage_name, ready, times)
        assert rc == 130 and len(said) == 1, (stage_name, said)
        assert said[0].startswith(f"interrupted: stage {stage_name} stopped and kept nothing of this run"), said
        assert outputs in said[0], (outputs, said)
        assert leftovers(project) == [], (stage_name, leftovers(project))
        if stage_name == "prepare":
            run_stage(project, "prepare")
    assert sorted(p.relative_to(data).as_posix() for p in (data / "raw").rglob("*")) == raw_before


def test_lungdx_timings_records_each_successful_stage_and_never_fails_one(tmp_path):
    project = copy_project(tmp_path / "project", **TINY)
    record = tmp_path / "timings.jsonl"
    env = {**STAGE_ENV, "LUNGDX_TIMINGS": str(record)}
    for name in ("download", "sample"):
        run([sys.executable, "-m", f"stages.{name}"], project, env=env)
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [line["stage"] for line in lines] == ["download", "sample"]
    for line in lines:
        assert 0 < line["seconds"] <= line["process_seconds"], line  # the process also imported the library
        assert line["tensorflow_start_seconds"] == 0 and line["peak_rss_mb"] > 10, line  # no TensorFlow here

    # A failed stage records nothing; an unwritable record is a warning, and the stage still succeeds.
    set_params(project, **{"sample.val_size": 0.9})
    assert run([sys.executable, "-m", "stages.sample"], project, check=False, env=env).returncode == 2
    assert len(record.read_text().splitlines()) == 2
    set_params(project, **{"sample.val_size": 0.1})
    proc = run([sys.executable, "-m", "stages.sample"], project, env={**env, "LUNGDX_TIMINGS": str(tmp_path)})
    assert f"warning: LUNGDX_TIMINGS={tmp_path}: cannot append this stage's timing" in proc.stderr
    assert (project / "data" / "sampled" / "manifest.csv").is_file()


def test_lungdx_timings_on_a_fifo_does_not_hold_a_finished_stage(tmp_path):
    project = copy_project(tmp_path / "project", **TINY)
    run_stage(project, "download")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = run(
        [sys.executable, "-m", "stages.sample"], project, env={**STAGE_ENV, "LUNGDX_TIMINGS": str(fifo)}, timeout=120
    )
    assert "cannot append this stage's timing" in proc.stderr
    assert (project / "data" / "sampled" / "manifest.csv").is_file()


def test_each_external_stage_outputs_are_known_to_the_runner(tmp_path, monkeypatch):
    """A foreach stage's outputs, one set per params.yaml entry: what the runner removes when one
    stops early, and what download refuses as a source."""
    from lungdx.pipeline import pipeline_outputs
    from lungdx.runner import stage_outputs

    project = copy_project(tmp_path / "p")
    assert not [stage for stage, _ in pipeline_outputs(project) if stage.startswith("external")]  # external: {}
    set_params(project, external={"masked": "/data/a", "real": "/data/b.zip"})
    found = [item for item in pipeline_outputs(project) if item[0].startswith("external")]
    assert sorted(found) == [
        ("external@masked", "metrics/external/masked.json"),
        ("external@masked", "reports/external/masked.json"),
        ("external@real", "metrics/external/real.json"),
        ("external@real", "reports/external/real.json"),
    ]
    monkeypatch.chdir(project)
    assert sorted(stage_outputs("external")) == sorted(path for _, path in found)
