"""`lungdx verify`: the committed pipeline rerun from nothing in a scratch clone, each stage's
outputs checked against the committed dvc.lock, with how far each differing metric moved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lungdx.verify import compare_locks, report
from tests.helpers import ROOT, commit, run, set_params


def lungdx_verify(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LUNGDX_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "lungdx", "verify", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_verify_says_which_stages_reproduce_and_how_far_metrics_moved(project):
    run([sys.executable, "-m", "dvc", "repro", "baseline"], project)
    commit(project, "a run")
    forest = json.loads((project / "metrics" / "baseline.json").read_text())

    same = lungdx_verify(project, "baseline")
    assert same.returncode == 0, same.stdout + same.stderr
    lines = same.stdout.splitlines()
    for stage in ("download", "sample", "prepare", "baseline"):
        assert any(line.split() == [stage, "identical"] for line in lines), same.stdout
    assert lines[-1] == "4 of 4 stages identical"
    assert not list(project.parent.glob(".lungdx-verify-*")), "the scratch clone is removed"

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
    moved_line = next(line for line in text.splitlines() if line.strip().startswith("metrics/baseline.json: "))
    committed = {**forest, **{f"{k}.{kk}": vv for k, v in forest.items() if isinstance(v, dict) for kk, vv in v.items()}}
    changes = moved_line.split("metrics/baseline.json: ", 1)[1].split(", ")
    assert changes and changes[0] != "the same numbers (other bytes)", text
    for change in changes:
        key, before, arrow, after = change.split()[:4]
        assert arrow == "->" and before == f"{committed[key]:.6g}" and after != before, change
    assert "3 of 4 stages identical" in text
    kept = Path(text.split("the scratch clone is kept: ")[1].strip())
    assert (kept / "dvc.lock").is_file() and kept.parent == project.parent


def test_verify_outside_a_project_or_without_a_committed_lock_is_one_line(tmp_path):
    outside = lungdx_verify(tmp_path)
    assert outside.returncode == 2
    assert outside.stderr.strip().splitlines() == [f"error: {tmp_path}: no dvc.yaml here; run lungdx verify in "
                                                   "the project's folder"]
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    run(["git", "init", "-q"], tmp_path)
    commit(tmp_path, "no lock")
    unlocked = lungdx_verify(tmp_path)
    assert unlocked.returncode == 2
    [line] = unlocked.stderr.strip().splitlines()
    assert line.startswith("error: commit ") and "has no dvc.lock to verify against" in line, line


def test_the_comparison_names_new_stages_differing_outputs_and_other_code():
    out = {"path": "metrics/m.json", "hash": "md5", "md5": "a" * 32}
    code = {"path": "lungdx/x.py", "hash": "md5", "md5": "c" * 32}
    committed = {"one": {"deps": [code], "outs": [out]}, "two": {"deps": [code], "outs": [out]}}
    rerun = {"one": {"deps": [code], "outs": [out]},
             "two": {"deps": [{**code, "md5": "d" * 32}], "outs": [{**out, "md5": "b" * 32}]},
             "three": {"outs": [out]}}
    one, two, three = compare_locks(committed, rerun)
    assert one.identical and not one.code_changed
    assert two.differing == ["metrics/m.json"] and two.code_changed
    assert three.new and not three.identical
    two.metric_deltas = {"metrics/m.json": {"accuracy": (0.975, 0.95), "new_key": (None, 1)}}
    text = report([one, two, three], "abc1234")
    assert "metrics/m.json: accuracy 0.975 -> 0.95 (-0.025), new_key absent -> 1" in text
    assert "three  not in the committed dvc.lock (a new stage)" in text
    assert text.splitlines()[-1].startswith("1 of 3 stages identical")
