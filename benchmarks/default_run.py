"""The main job: `dvc repro` on the default params in a fresh clone, offline, timed.

    python -m benchmarks.default_run

Clones the repository's committed HEAD (no DVC cache, no remote: every stage runs),
runs `dvc repro` as a user would and reports its wall time with the accuracies it got.
tests/test_default_run.py runs it at full size on the working tree and checks the accuracies.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from benchmarks.common import ROOT, WORK, dvc_share, emit, log, machine, parser, stage_records, timed, write_params

TOY = {
    "dataset.synthetic.per_class": 12,
    "dataset.synthetic.image_size": 64,
    "prepare.image_size": 32,
    "baseline.image_size": 8,
    "baseline.n_estimators": 20,
    "models.cnn.epochs": 2,
    "models.cnn.warmup_epochs": 0,
}


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repo", default=str(ROOT), help="the git repository to clone (default: this one)")
    args = p.parse_args(argv)
    clone = (args.workdir or WORK / "default_run") / "clone"
    shutil.rmtree(clone, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", args.repo, str(clone)], check=True)  # --repo: not always this one
    if args.toy:
        write_params(clone, **TOY)
    log(f"dvc repro in {clone}")
    run = timed(["dvc", "repro"], clone, timings=clone.parent / "timings.jsonl")
    model = json.loads((clone / "reports" / "eval.json").read_text())
    forest = json.loads((clone / "metrics" / "baseline.json").read_text())
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True
    ).stdout.strip()
    result = {
        "benchmark": "default_run",
        "commit": commit,
        "machine": machine(),
        "toy": args.toy,
        "stages_run": [line.split("'")[1] for line in run["stdout"].splitlines() if line.startswith("Running stage '")],
        "seconds": run["seconds"],
        "minutes": round(run["seconds"] / 60, 2),
        "stage_seconds": {name: r["process_seconds"] for name, r in stage_records(run).items()},
        "dvc_seconds": dvc_share(run),
        "tensorflow_start_seconds": {
            name: r["tensorflow_start_seconds"]
            for name, r in stage_records(run).items()
            if r["tensorflow_start_seconds"]
        },
        "model": model["model"],
        "accuracy": model["accuracy"],
        "random_forest_accuracy": forest["accuracy"],
    }
    emit(result)
    return result


if __name__ == "__main__":
    main()
