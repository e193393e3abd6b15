"""What pins TensorFlow's CPU results, and what each pin costs: the default train, evaluate and
gradcam stages under each oneDNN and thread setting, on one machine.

    python -m benchmarks.tensorflow_pinning

Another CPU is simulated on this one: oneDNN, which runs TensorFlow's convolutions and matrix
products on the CPU, picks its kernels at run time by the processor's vector level, and
ONEDNN_MAX_CPU_ISA caps that level (AVX2: what a CPU without AVX-512 runs; AVX512_CORE: an
AVX-512 CPU without VNNI or BF16); TF_NUM_INTRAOP_THREADS sets the threads a machine of
another core count would use (by default one per core), and one setting runs on one core;
TF_ENABLE_ONEDNN_OPTS=0 leaves oneDNN out (Eigen, compiled in,
runs everything). For each setting: the train stage's seconds (its ratio to the default's),
the md5 of the trained weights (models/model.keras's model.weights.h5), and the headline
metrics; `same_weights_as` groups the settings that trained identical weights. The figures
are in docs/models.md#determinism.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zipfile

from benchmarks.common import WORK, emit, log, machine, parser, synthetic_project, timed, write_params

# name -> (environment, cores the process may use: None for all); "default" first: the others'
# costs are ratios to it.
SETTINGS = {
    "default": ({}, None),
    "default, 1 thread": ({"TF_NUM_INTRAOP_THREADS": "1"}, None),
    "default, 4 threads": ({"TF_NUM_INTRAOP_THREADS": "4"}, None),
    "oneDNN at AVX512_CORE": ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, None),
    "oneDNN at AVX2": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, None),
    "oneDNN at AVX2, 1 thread": ({"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_NUM_INTRAOP_THREADS": "1"}, None),
    "oneDNN at AVX2, 4 threads": ({"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_NUM_INTRAOP_THREADS": "4"}, None),
    # the pin of docs/models.md#determinism on a machine of another core count
    "oneDNN at AVX2, 2 threads on 1 core": ({"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_NUM_INTRAOP_THREADS": "2"}, 1),
    "oneDNN off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, None),
    "oneDNN off, at AVX2": ({"TF_ENABLE_ONEDNN_OPTS": "0", "ONEDNN_MAX_CPU_ISA": "AVX2"}, None),
    "oneDNN off, 1 thread": ({"TF_ENABLE_ONEDNN_OPTS": "0", "TF_NUM_INTRAOP_THREADS": "1"}, None),
}
STAGES = ("train", "evaluate", "gradcam")


def weights_md5(model_file) -> str:
    with zipfile.ZipFile(model_file) as archive:
        return hashlib.md5(archive.read("model.weights.h5")).hexdigest()


def run_setting(project, env: dict, cores: int | None) -> dict:
    seconds = {}
    for stage in STAGES:
        run = timed(
            [sys.executable, "-m", f"stages.{stage}"],
            project,
            cores=cores,
            timings=project / "timings.jsonl",
            extra_env=env,
        )
        seconds[stage] = run["stages"][0]["seconds"]
    evaluation = json.loads((project / "metrics" / "eval.json").read_text())
    gradcam = json.loads((project / "metrics" / "gradcam.json").read_text())
    return {
        "env": env,
        "cores": cores,
        "seconds": seconds,
        "weights_md5": weights_md5(project / "models" / "model.keras"),
        "eval_md5": hashlib.md5((project / "metrics" / "eval.json").read_bytes()).hexdigest(),
        "accuracy": evaluation["accuracy"],
        "f1_macro": evaluation["f1_macro"],
        "roc_auc_ovr": evaluation["roc_auc_ovr"],
        "lung_energy_share": gradcam["lung_energy_share"],
    }


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", metavar="NAME", help="run only these settings (default: all)")
    args = p.parse_args(argv)
    sizes = (
        {"per_class": 12, "source_size": 64, "image_size": 32}
        if args.toy
        else {"per_class": 200, "source_size": 256, "image_size": 128}
    )  # the default run's
    project = synthetic_project((args.workdir or WORK / "tensorflow_pinning") / "project", **sizes)
    if args.toy:
        write_params(
            project,
            **{
                "dataset.source": str(project / "source"),
                "prepare.image_size": 32,
                "models.cnn.epochs": 2,
                "models.cnn.warmup_epochs": 0,
                "gradcam.per_class": 1,
            },
        )
    names = [name for name in SETTINGS if not args.only or name in args.only or name == "default"]
    results = {}
    for name in names:
        env, cores = SETTINGS[name]
        log(f"{name}: {' '.join(f'{k}={v}' for k, v in env.items()) or 'no variable set'}")
        results[name] = run_setting(project, env, cores)
    base = results["default"]["seconds"]["train"]
    for name, result in results.items():
        result["train_cost"] = round(result["seconds"]["train"] / base, 3)
        result["same_weights_as"] = [
            other for other in results if other != name and results[other]["weights_md5"] == result["weights_md5"]
        ]
    result = {"benchmark": "tensorflow_pinning", "machine": machine(), "toy": args.toy, "settings": results}
    emit(result)
    return result


if __name__ == "__main__":
    main()
