"""What every benchmark shares: a scratch project built by our own stages, whole-process timing.

Each benchmark is `python -m benchmarks.<name>` from the repository root; it prints
progress to stderr and its result as one JSON line, last, on stdout. `--toy` runs it
at a size that finishes in seconds (the smoke tests use it); the figures in
benchmarks/README.md come from the default sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work"  # scratch projects, reused between runs (git-ignored)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--toy", action="store_true", help="tiny sizes: checks the benchmark runs, measures nothing")
    p.add_argument("--workdir", type=Path, default=None, help=f"scratch folder (default: {WORK}/<name>)")
    return p


def machine() -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "python": platform.python_version()}


def env() -> dict:
    """The environment of every timed process: the library importable, quiet logs."""
    # The same CPU allocator for every side: lungdx sets it before TensorFlow starts, but a
    # reference that imports keras first would otherwise run on TensorFlow's default one.
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LUNGDX_PROGRESS": "0",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TF_CPU_ALLOCATOR_USE_BFC": "true",
    }


def timed(
    cmd: list[str], cwd: Path, cores: int | None = None, timings: Path | None = None, extra_env: dict | None = None
) -> dict:
    """Run one whole process: its wall seconds, peak resident memory (as /usr/bin/time -v) and stdout.

    `cores` pins it (and its children) to that many CPUs, as `taskset` would; our stages
    start one worker process per CPU they may use. `extra_env` adds variables to env()'s.
    """
    pin = (lambda: os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])) if cores else None
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        extra = {**(extra_env or {}), **({"LUNGDX_TIMINGS": str(timings)} if timings else {})}
        if timings:
            Path(timings).unlink(missing_ok=True)
        proc = subprocess.Popen(cmd, cwd=cwd, env={**env(), **extra}, stdout=out, stderr=err, text=True, preexec_fn=pin)
        # wait4, not wait: it returns this child's own rusage; ru_maxrss is its peak RSS in KiB.
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd} ({proc.returncode}):\n{stdout[-2000:]}\n{stderr[-4000:]}")
    stages = [json.loads(line) for line in Path(timings).read_text().splitlines()] if timings else []
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "stdout": stdout,
        "stages": stages,
    }


def synthetic_project(
    workdir: Path,
    per_class: int,
    source_size: int,
    image_size: int,
    drop: dict[str, int] | None = None,
    kaggle_like: bool = False,
    **params,
) -> Path:
    """A scratch project whose data/prepared our own stages made from synthetic X-rays.

    `drop` removes images of a class from the source first (the real database has 1345
    Viral Pneumonia images, half the others' 2690); `kaggle_like` removes the lesion
    masks, which only our synthetic data have. Reused when the same setup exists.
    """
    from lungdx.download import download
    from lungdx.prepare import prepare
    from lungdx.sample import sample
    from lungdx.synthetic import generate_dataset

    key = {
        "per_class": per_class,
        "source_size": source_size,
        "image_size": image_size,
        "drop": drop or {},
        "kaggle_like": kaggle_like,
    }
    done = workdir / "setup.json"
    if not (done.is_file() and json.loads(done.read_text()) == key):
        source = workdir / "source"
        if workdir.is_dir() and any(workdir.iterdir()) and not done.is_file():
            raise SystemExit(
                f"{workdir}: not empty and not a benchmark's scratch folder (no setup.json); "
                "it would be replaced: give an empty or new --workdir"
            )
        log(f"making {per_class} synthetic {source_size}px images per class in {source}")
        shutil.rmtree(workdir, ignore_errors=True)
        generate_dataset(source, per_class, 239, source_size)
        for cls, keep in (drop or {}).items():
            for kind in ("images", "masks", "lesions"):
                for path in sorted((source / cls / kind).iterdir())[keep:]:
                    path.unlink()
        if kaggle_like:
            for folder in source.glob("*/lesions"):
                shutil.rmtree(folder)
        settings = project_settings(
            {
                "seed": 239,
                "dataset.source": str(source),
                "sample.per_class": per_class,
                "sample.val_size": 0.1,
                "sample.test_size": 0.2,
                "prepare.image_size": image_size,
                "baseline.image_size": min(32, image_size),
            }
        )
        download(settings.download, workdir / "data" / "raw")
        sample(settings.sample, workdir / "data" / "raw", workdir / "data" / "sampled")
        log(f"preparing them at {image_size}px")
        from lungdx.segment import segment

        manifest, segmented = workdir / "data" / "sampled" / "manifest.csv", workdir / "data" / "segmented"
        segment(
            settings.segment,
            manifest,
            workdir / "data" / "raw",
            segmented,
            workdir / "metrics" / "segment.json",
            workdir / "reports" / "segment.json",
            workdir / "reports" / "segment_images",
        )
        prepare(settings.prepare, manifest, workdir / "data" / "raw", segmented, workdir / "data" / "prepared")
        done.write_text(json.dumps(key))
    write_params(workdir, **{"dataset.source": str(workdir / "source"), "prepare.image_size": image_size, **params})
    return workdir


def git(repo: Path, *args: str) -> None:
    """A git command in a scratch repository, committing as "benchmark"."""
    subprocess.run(
        ["git", "-c", "user.name=benchmark", "-c", "user.email=benchmark@localhost", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def fresh_clone(dest: Path) -> Path:
    """A new `git clone` of this repository's committed HEAD at dest: no DVC cache, every stage runs."""
    shutil.rmtree(dest, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    return dest


def synthetic_source(folder: Path, per_class: int, size: int) -> Path:
    """A synthetic database of per_class images a class (4 classes) at size px, made once and reused."""
    from lungdx.synthetic import generate_dataset

    key = json.dumps({"per_class": per_class, "size": size, "seed": 239})
    if not ((folder / "done").is_file() and (folder / "done").read_text() == key):
        log(f"making {4 * per_class} synthetic {size}px X-rays in {folder}")
        shutil.rmtree(folder, ignore_errors=True)
        generate_dataset(folder, per_class, 239, size)
        (folder / "done").write_text(key)
    return folder


def stage_records(run: dict) -> dict[str, dict]:
    """A timed run's LUNGDX_TIMINGS records by stage; what the stages leave of its wall time is dvc's."""
    records = {r["stage"]: r for r in run["stages"]}
    if any(r["process_seconds"] is None for r in records.values()):
        raise SystemExit("the stages' process times need /proc (Linux)")
    return records


def dvc_share(run: dict) -> float:
    """Seconds of a timed dvc run spent outside its stages' processes."""
    return round(run["seconds"] - sum(r["process_seconds"] for r in stage_records(run).values()), 2)


def project_settings(changes: dict):
    """This project's params.yaml with dotted-key changes, checked: every stage's settings."""
    from lungdx import params

    return params.check(params.with_changes(params.read(ROOT / "params.yaml"), changes))


def write_params(project: Path, **changes) -> None:
    """The project's params.yaml with dotted-key changes, e.g. write_params(p, **{"prepare.image_size": 64})."""
    from lungdx.params import with_changes

    params = with_changes(yaml.safe_load((ROOT / "params.yaml").read_text()), changes)
    project.mkdir(parents=True, exist_ok=True)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def real_xray_settings(docs: Path = ROOT / "docs" / "data.md") -> dict[str, str]:
    """The -S key=value pairs of the command in docs/data.md's "settings for real X-rays" block."""
    import shlex

    text = docs.read_text(encoding="utf-8")
    try:
        block = text.split("<!-- real-xray-settings")[1].split("<!-- /real-xray-settings -->")[0]
        command = block.split("```bash\n")[1].split("```")[0]
    except IndexError:
        raise ValueError(f"{docs}: no ```bash block between the real-xray-settings markers") from None
    words = shlex.split(command.replace("\\\n", " "), comments=True)
    rest = words[3:] if words[:3] == ["dvc", "exp", "run"] else []
    if rest[:1] == ["-n"]:
        rest = rest[2:]
    flags, options = rest[::2], rest[1::2]
    if set(flags) != {"-S"} or len(options) != len(flags):
        raise ValueError(f"{docs}: the real-xray-settings block must be `dvc exp run [-n NAME] -S key=value ...`")
    if any("=" not in option for option in options):
        raise ValueError(f"{docs}: each -S of the real-xray-settings command must be key=value")
    return dict(option.split("=", 1) for option in options)


def emit(result: dict) -> None:
    print(json.dumps(result), flush=True)
