"""`lungdx verify`: the committed pipeline rerun from nothing in a scratch clone, each stage's
outputs checked against the committed dvc.lock, with how far each differing metric moved."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lungdx.readable import exact
from lungdx.verify import compare_locks, report
from tests.helpers import ROOT, commit, run, set_params


def lungdx_verify(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LUNGDX_PROGRESS": "0"}
    return subprocess.run(
        [sys.executable, "-m", "lungdx", "verify", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def report_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """The report verify prints after dvc's own output."""
    lines = proc.stdout.splitlines()
    return lines[next(i for i, line in enumerate(lines) if line.startswith("against the dvc.lock of commit")) :]


@pytest.mark.slow
def test_verify_says_which_stages_reproduce_and_how_far_metrics_moved(project, tmp_path):
    # A cache shared with the scratch clone (a cache.dir in .dvc/config): verify must still run
    # every stage, not check the committed outputs out of it.
    run([sys.executable, "-m", "dvc", "config", "cache.dir", str(tmp_path / "shared-cache")], project)
    run([sys.executable, "-m", "dvc", "repro", "baseline"], project)
    commit(project, "a run")
    forest = json.loads((project / "metrics" / "baseline.json").read_text())

    same = lungdx_verify(project, "baseline")
    assert same.returncode == 0, same.stdout + same.stderr
    lines = report_lines(same)
    for stage in ("download", "sample", "segment", "prepare", "baseline"):
        assert f"Running stage '{stage}':" in same.stdout, same.stdout
        assert any(line.split() == [stage, "identical"] for line in lines), same.stdout
    assert lines[-1] == "5 of 5 stages identical"
    assert not list(project.parent.glob(".lungdx-verify-*")), "the scratch clone is removed"

    # Only the stages that ran are reported: download alone is one stage, not the four the
    # committed lock holds.
    download = lungdx_verify(project, "download")
    assert download.returncode == 0 and report_lines(download)[-1] == "1 of 1 stages identical", download.stdout

    # A params change committed without rerunning: the committed lock no longer describes what
    # the commit's params produce.
    set_params(project, **{"baseline.n_estimators": 7})
    commit(project, "params changed, not rerun")
    moved = lungdx_verify(project, "baseline", "--keep")
    assert moved.returncode == 1, moved.stdout + moved.stderr
    text = moved.stdout
    assert any(line.split()[:2] == ["prepare", "identical"] for line in text.splitlines()), text
    assert "baseline  differs: metrics/baseline.json, reports/baseline.json" in text
    assert "the lock is stale" in text
    # Each number that moved, from its committed value (read from the DVC cache) to the rerun's.
    lines = text.splitlines()
    start = lines.index(next(line for line in lines if line.strip() == "metrics/baseline.json:"))
    changes = [line.split() for line in lines[start + 1 :] if "->" in line]
    committed = {
        **forest,
        **{f"{k}.{kk}": vv for k, v in forest.items() if isinstance(v, dict) for kk, vv in v.items()},
    }
    assert changes, text
    for key, before, arrow, after, *_delta in changes:
        shown = (
            str(committed[key]) if isinstance(committed[key], int) else exact(committed[key])
        )  # as the file holds it
        assert arrow == "->" and before == shown and after != before, (key, before, after)
    assert "4 of 5 stages identical" in text
    kept = Path(text.split("the scratch clone is kept: ")[1].strip())
    assert (kept / "dvc.lock").is_file() and kept.parent == project.parent


def test_verify_outside_a_project_or_without_a_committed_lock_is_one_line(tmp_path):
    tmp_path = tmp_path / "here"
    tmp_path.mkdir()
    outside = lungdx_verify(tmp_path)
    assert outside.returncode == 2
    assert outside.stderr.strip().splitlines() == [
        f"error: {tmp_path}: no dvc.yaml here; run lungdx verify in the project's folder"
    ]
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    run(["git", "init", "-q"], tmp_path)
    commit(tmp_path, "no lock")
    unlocked = lungdx_verify(tmp_path)
    assert unlocked.returncode == 2
    [line] = unlocked.stderr.strip().splitlines()
    assert line.startswith("error: commit ") and "has no dvc.lock to verify against" in line, line


@pytest.mark.slow
def test_a_stopped_verify_stops_dvc_and_leaves_no_clone_and_no_process(project):
    import signal
    import time

    run([sys.executable, "-m", "dvc", "repro", "prepare"], project)
    commit(project, "a run")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LUNGDX_PROGRESS": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lungdx", "verify"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(project.parent.glob(".lungdx-verify-*/data")) and time.monotonic() < deadline:
        time.sleep(0.2)  # until dvc runs a stage in the clone
    [scratch] = project.parent.glob(".lungdx-verify-*")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert err.strip().splitlines()[-1] == (
        "interrupted: lungdx verify stopped dvc repro in its scratch clone "
        "and removed it; nothing of this project changed"
    )
    assert not scratch.exists()
    assert [pid for pid in os.listdir("/proc") if pid.isdigit() and str(scratch) in cwd(pid)] == [], (
        "a process still runs in the removed clone"
    )


def cwd(pid: str) -> str:
    """The working folder of process `pid` ('' where it cannot be read: gone, or not ours)."""
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


@pytest.mark.parametrize(
    "args, says",
    [
        (["--", "--dry", "download"], "error: --dry: not a stage name; lungdx verify passes no options to dvc repro"),
        (["trian"], "error: trian: not a stage of dvc.yaml; its stages: download, sample, segment, prepare,"),
        (["external"], "error: external: not a stage of dvc.yaml"),  # a foreach stage: external@<name>
    ],
)
def test_verify_takes_stage_names_only_and_checks_them_before_cloning(tmp_path, args, says):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    shutil.copy(ROOT / "dvc.lock", project / "dvc.lock")
    run(["git", "init", "-q"], project)
    commit(project, "project")
    proc = lungdx_verify(project, *args)
    assert proc.returncode == 2 and proc.stderr.strip().startswith(says), proc.stderr
    assert not list(tmp_path.glob(".lungdx-verify-*"))


def test_verify_outside_git_or_before_the_first_commit_says_what_to_do(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    outside = lungdx_verify(tmp_path)
    assert outside.returncode == 2 and "not in a git repository; lungdx verify reruns a commit" in outside.stderr
    run(["git", "init", "-q"], tmp_path)
    empty = lungdx_verify(tmp_path)
    assert empty.returncode == 2 and "has no commit yet; commit the project and its dvc.lock first" in empty.stderr


def test_the_comparison_names_new_stages_differing_outputs_and_other_code():
    out = {"path": "metrics/m.json", "hash": "md5", "md5": "a" * 32}
    code = {"path": "lungdx/x.py", "hash": "md5", "md5": "c" * 32}
    committed = {"one": {"deps": [code], "outs": [out]}, "two": {"deps": [code], "outs": [out]}}
    rerun = {
        "one": {"deps": [code], "outs": [out]},
        "two": {"deps": [{**code, "md5": "d" * 32}], "outs": [{**out, "md5": "b" * 32}]},
        "three": {"outs": [out]},
    }
    one, two, three = compare_locks(committed, rerun)
    assert one.identical and not one.stale_entry
    assert two.differing == ["metrics/m.json"] and two.stale_entry
    assert three.new and not three.identical
    two.metric_deltas = {
        "metrics/m.json": {
            "accuracy": (0.975, 0.95),
            "ece": (0.034807, 0.034901),
            "new_key": (None, 1),
            "n_test": (160, 170),
        }
    }
    text = report([one, two, three], "abc1234")
    assert "metrics/m.json:\n" in text
    # As the files hold them: verify shows a move under the report's three decimals too.
    assert "accuracy  0.975 -> 0.95 (-0.025)" in text and "new_key   absent -> 1" in text
    assert "ece       0.034807 -> 0.034901 (+9.4e-05)" in text
    assert "n_test    160 -> 170 (+10)" in text
    assert "three  not in the committed dvc.lock (a new stage)" in text
    assert text.splitlines()[-1].startswith("1 of 3 stages identical")
