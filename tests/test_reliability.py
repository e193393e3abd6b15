"""Nothing lost: sources never change, killed stages recover, fresh clones agree byte for byte.

Real `dvc` in temporary git repositories, offline. The bad-input cases of the
troubleshooting table (docs/troubleshooting.md) are tested next to the code that handles them;
the table names each test, and test_every_case_in_the_troubleshooting_table_has_its_test checks
those names.
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from lungdx.synthetic import generate_dataset
from tests.helpers import (
    ROOT,
    TINY,
    commit,
    copy_project,
    make_flat_dataset,
    make_kaggle_dataset,
    run,
    set_params,
    stages_run,
    tree_hashes,
    write_image,
)

ALL_STAGES = ["download", "sample", "segment", "prepare", "baseline", "features", "train", "evaluate", "gradcam"]
COMPARED = [
    "data/sampled/manifest.csv",
    "data/sampled/skipped.csv",
    "data/prepared/meta.json",
    *(f"data/prepared/{s}/{a}.npy" for s in ("train", "val", "test") for a in ("images", "labels", "masks")),
    "metrics/baseline.json",
    "metrics/eval.json",
    "metrics/gradcam.json",
    "metrics/plots/predictions.csv",
    "reports/baseline.json",
    "reports/baseline_predictions.csv",
    "reports/eval.json",
    "reports/gradcam/scores.json",
    "dvclive/train/metrics.json",
    "dvclive/train/plots/metrics/train/loss.tsv",
    "dvclive/train/plots/metrics/eval/accuracy.tsv",
]


def messy_source(root: Path) -> Path:
    """A local Kaggle-layout folder of 1000 synthetic X-rays (enough for prepare and train to be
    killed midway) with what real downloads contain: unreadable files, other formats, metadata."""
    generate_dataset(root, 250, 11, 64)
    covid = root / "COVID" / "images"
    (covid / "empty.png").write_bytes(b"")
    (covid / "notes.txt").write_text("not an image")
    (covid / "cut.png").write_bytes((covid / "COVID-1.png").read_bytes()[:200])
    write_image(covid / "wide16.png", (np.arange(80 * 100, dtype=np.uint16).reshape(80, 100) * 8))
    (root / "COVID.metadata.xlsx").write_bytes(b"PK\x03\x04 not really a spreadsheet")
    return root


def kill_when(project: Path, ready, what: str) -> None:
    """Start `dvc repro` and SIGKILL it, stage process included, as soon as ready() is true
    (polled every 5 ms while dvc runs)."""
    with open(project / f"killed-{what}.log", "w") as log:
        proc = subprocess.Popen(
            ["dvc", "repro"], cwd=project, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 300
        while not ready():
            assert proc.poll() is None, (
                f"dvc repro ended before {what} could be killed:\n" + (project / f"killed-{what}.log").read_text()
            )
            assert time.monotonic() < deadline, f"{what} never got going"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (project / f"killed-{what}.log").unlink()


@pytest.mark.slow
def test_killed_stages_recover_fresh_clones_match_and_link_caches_stay_intact(tmp_path):
    source = messy_source(tmp_path / "source")
    source_before = tree_hashes(source)
    project = copy_project(tmp_path / "a", **{**TINY, "dataset.source": str(source), "models.cnn.epochs": 3})
    # Uninterrupted: every stage, then nothing; a param reruns only the stages that read it.
    assert stages_run(run(["dvc", "repro"], project).stdout) == ALL_STAGES
    for out in ("data/raw/COVID/images", "models/model.keras", "reports/gradcam/index.html", *COMPARED):
        assert (project / out).exists(), out
    assert not private_outputs(project), "outputs get the modes of any new file or folder (umask), not 0700/0600"
    assert stages_run(run(["dvc", "repro"], project).stdout) == []
    for changes, rerun in [
        ({"model": "vgg19", "models.vgg19.learning_rate": 0.01}, ["features", "train"]),
        ({"models.cnn.epochs": 4}, ["train"]),
        ({"prepare.image_size": 40}, ["prepare"]),
    ]:
        set_params(project, **changes)
        assert stages_run(run(["dvc", "repro", "--dry"], project).stdout)[: len(rerun)] == rerun, changes
        run(["git", "checkout", "params.yaml"], project)
    # Editing a module reruns the stages that run it and what follows them, and no other.
    for module, rerun in [
        ("lungdx/gradcam.py", ["gradcam"]),
        ("lungdx/baseline.py", ["baseline"]),
        ("lungdx/train.py", ["train"]),
    ]:
        with open(project / module, "a") as f:
            f.write("# edited\n")
        assert stages_run(run(["dvc", "repro", "--dry"], project).stdout) == rerun, module
        run(["git", "checkout", module], project)
    assert_stages_replace_their_outputs_under_link_caches(project)
    files = next(iter(json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout).values()))["data"]
    assert list(files) == ["metrics/eval.json", "metrics/baseline.json", "metrics/gradcam.json", "metrics/segment.json"]
    assert files["metrics/segment.json"]["data"] == {}  # lung_mask none: no segmenter, no numbers
    assert all(
        _numbers(v) for name, f in files.items() if name != "metrics/segment.json" for v in f["data"].values()
    ), files
    commit(project, "lock")
    clone = tmp_path / "b"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)  # no cache, no remote: all recomputed

    # prepare killed after writing its train split, before val and test.
    kill_when(clone, lambda: any((clone / "data").glob(".prepared.*.tmp/train/labels.npy")), "prepare")
    assert not (clone / "data" / "prepared").exists(), "a half-written prepared folder looks complete"
    # train killed after its second epoch of three, its curves read between epochs: they grow while it runs.
    curve, rows_seen = clone / "dvclive" / "train" / "plots" / "metrics" / "eval" / "loss.tsv", []

    def second_epoch_logged():
        rows = max(len(curve.read_text().splitlines()) - 1, 0) if curve.is_file() else 0
        if rows and rows not in rows_seen:
            rows_seen.append(rows)
        return rows >= 2

    kill_when(clone, second_epoch_logged, "train")
    assert rows_seen[:2] == [1, 2], f"rows of the live curve as read during training: {rows_seen}"
    assert not (clone / "models" / "model.keras").exists(), "no model file from a killed run"

    assert stages_run(run(["dvc", "repro"], clone).stdout) == ["train", "evaluate", "gradcam"]
    for name in COMPARED:
        assert (clone / name).read_bytes() == (project / name).read_bytes(), name
    assert run(["dvc", "status", "--json"], clone).stdout.strip() == "{}"
    leftovers = [p for p in clone.rglob(".*") if p.name.endswith(".tmp") or ".old-" in p.name]
    assert leftovers == [], "temporaries of the killed runs are cleaned up by the next one"

    # The source and the raw copy: never modified, by the runs that completed or the killed ones.
    assert tree_hashes(source) == source_before
    assert tree_hashes(clone / "data" / "raw") == tree_hashes(project / "data" / "raw")
    skipped = (clone / "data" / "sampled" / "skipped.csv").read_text()
    assert all(name in skipped for name in ("empty.png", "notes.txt", "cut.png")), skipped


def _numbers(value) -> bool:
    """A number, or an interval of numbers ({lower, upper}): what a metrics file holds."""
    if isinstance(value, dict):
        return set(value) == {"lower", "upper"} and all(isinstance(v, (int, float)) for v in value.values())
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def corrupted_cache_files(project: Path) -> list[str]:
    """Files of the DVC cache whose content no longer has the md5 they are named by."""
    bad = []
    for path in (project / ".dvc" / "cache" / "files" / "md5").glob("*/*"):
        if not path.name.endswith(".dir"):
            if hashlib.md5(path.read_bytes()).hexdigest() != path.parent.name + path.name:
                bad.append(path.parent.name + path.name)
    return bad


WATCHED = [
    "data/raw/COVID/images/COVID-1.png",
    "data/sampled/manifest.csv",
    "data/prepared/train/images.npy",
    "metrics/baseline.json",
    "models/model.keras",
    "dvclive/train/metrics.json",
    "dvclive/train/plots/metrics/train/loss.tsv",
    "metrics/eval.json",
    "metrics/plots/predictions.csv",
    "metrics/gradcam.json",
    "reports/gradcam/scores.json",
]


def assert_stages_replace_their_outputs_under_link_caches(project: Path) -> None:
    """With cache.type hardlink or symlink an output is the cache file itself: a stage that wrote
    into an existing output would change the cache, and DVC would then restore the wrong bytes.
    Runs stages by hand over linked outputs, with another seed, and checks the cache after each."""
    committed = {name: (project / name).read_bytes() for name in WATCHED}
    env = {**os.environ, "LUNGDX_PROGRESS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    # Every kind of writer: atomic folders (download, sample, prepare, evaluate's plots, the report),
    # atomic files (metrics, the model) and dvclive's log (train).
    for cache_type, by_hand, rewritten in [
        (
            "hardlink",
            ["download", "sample", "segment", "prepare", "baseline"],
            {"data/sampled/manifest.csv", "metrics/baseline.json"},
        ),
        (
            "symlink",
            ["train", "evaluate", "gradcam"],
            {"models/model.keras", "dvclive/train/metrics.json", "metrics/plots/predictions.csv"},
        ),
    ]:
        run(["dvc", "config", "--local", "cache.type", cache_type], project)
        run(["dvc", "checkout", "--relink"], project)
        model = project / "models" / "model.keras"
        assert model.is_symlink() if cache_type == "symlink" else model.stat().st_nlink == 2, cache_type
        set_params(project, seed=yaml.safe_load((project / "params.yaml").read_text())["seed"] + 1)
        for name in by_hand:
            run([sys.executable, "-m", f"stages.{name}"], project, env=env)
        changed = [name for name in WATCHED if (project / name).read_bytes() != committed[name]]
        assert set(changed) >= rewritten, changed
        if cache_type == "hardlink":  # the same source, the same bytes: but a new file, no longer the cache's
            assert (project / "data/raw/COVID/images/COVID-1.png").stat().st_nlink == 1
        assert corrupted_cache_files(project) == [], cache_type
        # The results come back byte for byte, and DVC says so truthfully.
        run(["git", "checkout", "params.yaml"], project)
        run(["dvc", "checkout", "--force"], project)
        assert {name: (project / name).read_bytes() for name in WATCHED} == committed, cache_type
        assert run(["dvc", "status", "--json"], project).stdout.strip() == "{}", cache_type
    run(["dvc", "config", "--local", "--unset", "cache.type"], project)
    run(["dvc", "checkout", "--relink"], project)  # back to plain copies, as the rest of the test had


def private_outputs(project: Path) -> list[str]:
    """Outputs whose group/other permission bits are stricter than the umask asks for."""
    mask = os.umask(0)
    os.umask(mask)
    private = []
    for top in ("data", "models", "metrics", "reports", "dvclive"):
        for path in [project / top, *(project / top).rglob("*")]:
            want = (0o055 if path.is_dir() else 0o044) & ~mask
            if path.stat().st_mode & want != want:
                private.append(f"{path.relative_to(project)} {oct(path.stat().st_mode & 0o777)}")
    return private


@pytest.mark.slow
def test_sources_are_never_modified_even_by_failing_runs(tmp_path):
    good = make_kaggle_dataset(tmp_path / "kaggle", {"COVID": 8, "Normal": 8}, top="COVID-19_Radiography_Dataset")
    (good / "COVID-19_Radiography_Dataset" / "Normal" / "images" / "empty.png").write_bytes(b"")
    good_zip = tmp_path / "kaggle.zip"
    with zipfile.ZipFile(good_zip, "w") as zf:
        for path in sorted(good.rglob("*")):
            zf.write(path, path.relative_to(good).as_posix())
    cut_zip = tmp_path / "cut.zip"
    cut_zip.write_bytes(good_zip.read_bytes()[: good_zip.stat().st_size // 2])
    one_class = make_flat_dataset(tmp_path / "one", {"COVID": 6})
    sources = [good, good_zip, cut_zip, one_class]
    before = {str(s): tree_hashes(s) if s.is_dir() else s.read_bytes() for s in sources}

    project = copy_project(tmp_path / "project", **TINY)
    runs = [
        (good, {}, True),
        (good_zip, {}, True),
        (cut_zip, {}, False),
        (one_class, {}, False),
        (good, {"dataset.classes": ["Pneumonia"]}, False),
    ]
    for source, extra, ok in runs:
        run(["git", "checkout", "-q", "params.yaml"], project)
        set_params(project, **{"dataset.source": str(source), **extra})
        proc = run(["dvc", "repro", "prepare"], project, check=False)
        assert (proc.returncode == 0) == ok, (source, extra, proc.stderr)
        assert "Traceback" not in proc.stderr
        if not ok:
            assert re.search(r"^error: .+", proc.stderr, re.M), proc.stderr
    assert {str(s): tree_hashes(s) if s.is_dir() else s.read_bytes() for s in sources} == before


@pytest.mark.slow
def test_a_source_inside_a_pipeline_output_is_refused_before_dvc_or_lungdx_deletes_anything(tmp_path):
    """data/raw is a persist output, so DVC leaves it in place and download can refuse it."""
    project = copy_project(tmp_path / "p", **TINY)
    run(["dvc", "repro", "sample"], project)
    raw, sampled = tree_hashes(project / "data" / "raw"), tree_hashes(project / "data" / "sampled")
    for source, named in [
        ("data/raw", "data/raw"),
        ("data/raw/COVID", "data/raw"),
        (str(project / "data" / "sampled"), "data/sampled"),
        (".", "project"),
    ]:
        set_params(project, **{"dataset.source": source})
        proc = run(["dvc", "repro"], project, check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        line = re.search(r"^error: .*", proc.stderr, re.M)
        assert line and "dataset.source" in line[0] and named in line[0], (source, proc.stderr)
        assert tree_hashes(project / "data" / "raw") == raw, f"{source}: data/raw changed"
        assert tree_hashes(project / "data" / "sampled") == sampled, f"{source}: data/sampled changed"


def test_every_case_in_the_troubleshooting_table_has_its_test():
    rows = [
        line
        for line in (ROOT / "docs" / "troubleshooting.md").read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| Situation")
    ]
    tests_of = {row: re.findall(r"`(test_\w+)`", row.rstrip(" |").rsplit("|", 1)[1]) for row in rows}  # last column
    named = {name for names in tests_of.values() for name in names}
    defined = {
        m for f in (ROOT / "tests").glob("test_*.py") for m in re.findall(r"^def (test_\w+)", f.read_text(), re.M)
    }
    assert len(rows) >= 25 and len(named) >= 25, (len(rows), len(named))
    assert all(tests_of.values()), [row[:80] for row, names in tests_of.items() if not names]
    assert named <= defined, sorted(named - defined)
