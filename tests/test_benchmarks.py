"""Every benchmark runs at toy size, so none can rot. No timing is asserted: the figures
are in benchmarks/README.md and docs/performance.md; here only that each run completes and reports
its ratios, and that the cost curves' fit, table and plot show what was measured."""

import json
import math

import pytest

from tests.helpers import run_benchmark

RATIOS = {
    "vgg19_transfer": ["speedup_vs_original", "features_vs_floor"],
    "cnn_input": ["overhead"],
    "prepare_speed": ["images_per_second_2_cores", "speedup_1_to_2_cores"],
    "train_memory": ["rss_ratio", "peak_rss_mb_ours", "peak_rss_mb_original"],
    "gpu": ["vgg19_features_mixed_speedup", "cnn_training_mixed_speedup"],
    "tensorflow_pinning": ["settings.oneDNN at AVX2.train_cost", "settings.oneDNN off.train_cost"],
    "train_speed": ["real_vs_original_rate", "real_vs_keras_geometry_rate", "geometry_speedup"],
    "gradcam_speed": ["ours_vs_predict.8", "ours_vs_predict.16", "before_vs_predict.8"],
    "experiment": [
        "runs.0.speedup",
        "runs.0.ours_seconds",
        "runs.0.original_seconds",
        "runs.0.stages.gradcam.process_seconds",
        "runs.0.stages.features.tensorflow_start_seconds",
    ],
    # at toy size the CNN's runs only (the VGG19 command is the experiment toy's)
    "cost_curves": [
        "fits.cnn.train.seconds.per_1000_images",
        "fits.cnn.gradcam.peak_rss_mb.projected.sampled",
        "projected_total_minutes.cnn.all",
    ],
}


def value(result: dict, path: str):
    """result["a"]["b"]... for "a.b...": a digit is a list index."""
    for key in path.split("."):
        result = result[int(key)] if isinstance(result, list) else result[key]
    return result


@pytest.mark.slow  # each starts TensorFlow and most run dvc: the full tier only
@pytest.mark.parametrize("name", RATIOS)
def test_benchmark_runs_at_toy_size_and_prints_its_ratios(name, tmp_path):
    result = run_benchmark(name, "--toy", "--workdir", str(tmp_path))
    assert result["benchmark"] == name and result["machine"]["cores"] >= 1
    for key in RATIOS[name]:
        assert isinstance(value(result, key), float) and math.isfinite(value(result, key)), (key, result)


def test_the_cost_fit_recovers_fixed_and_per_image_costs_and_projects_them():
    from benchmarks.cost_curves import fit_line, project

    sizes = [100, 400, 1600]
    fit = fit_line(sizes, [12.0 + 0.05 * n for n in sizes])  # 12 s fixed, 50 s per 1000 images
    assert fit == {"fixed": 12.0, "per_1000_images": 50.0}
    assert project(fit, 9415) == round(12 + 0.05 * 9415, 1)
    assert project(fit, 9415, per_image_scale=8) == round(12 + 8 * 0.05 * 9415, 1)  # 5 epochs measured, 40 run


def test_the_cost_table_and_plot_show_every_stage_with_its_projection(tmp_path):
    from benchmarks.cost_curves import dominant, fits, totals
    from docs.make_cost_curves import END, START, main

    sizes = [100, 400, 1600]
    costs = {
        "cnn": {"download": (5, 1), "prepare": (2, 4), "train": (10, 30), "gradcam": (6, 2)},
        "vgg19": {"features": (9, 140), "train": (9, 3), "gradcam": (7, 30)},
    }  # (fixed s, s per 1000)
    runs = [
        {
            model: {
                stage: {"seconds": a + b * n / 1000, "peak_rss_mb": 500 + n / 10} for stage, (a, b) in stages.items()
            }
            for model, stages in costs.items()
        }
        for n in sizes
    ]
    fitted = fits(sizes, runs, epochs=5)
    assert fitted["cnn"]["train"]["seconds"]["projected"]["sampled"] == round(10 + 8 * 30 * 9.415, 1)  # 40 of 5 epochs
    result = {
        "benchmark": "cost_curves",
        "images": sizes,
        "cnn_epochs_measured": 5,
        "cnn_epochs_projected": 40,
        "real_sizes": {"sampled": 9415, "all": 21165},
        "machine": {"cpu": "test CPU", "cores": 2},
        "measured": {str(n): r for n, r in zip(sizes, runs, strict=True)},
        "fits": fitted,
        "dominant_stage": dominant(runs, sizes, fitted),
        "projected_total_minutes": totals(fitted),
    }
    assert result["dominant_stage"]["vgg19"] == {
        "100": "features",
        "400": "features",
        "1600": "features",
        "sampled": "features",
        "all": "features",
    }
    # VGG19 from scratch shares the CNN run's data stages: download and prepare count in its total.
    vgg_all = sum(a + b * 21.165 for a, b in costs["vgg19"].values()) + 5 + 21.165 + 2 + 4 * 21.165
    assert result["projected_total_minutes"]["vgg19"]["all"] == round(vgg_all / 60, 1)
    (tmp_path / "result.json").write_text(json.dumps(result))
    page = tmp_path / "performance.md"
    page.write_text(f"# Performance\n\n{START}\nold table\n{END}\n\nafter\n")
    main(tmp_path / "result.json", tmp_path / "curves.png", page)
    text = page.read_text()
    assert "old table" not in text and text.endswith(f"{END}\n\nafter\n")
    for model, stages in costs.items():
        for stage in stages:
            assert f"| {model} | {stage} |" in text
    assert "| vgg19 | features | 23.0 / 510 | 65.0 / 540 | 233.0 / 660 | 9.0 + 140.0 |" in text
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "result, page, message",
    [
        (None, "{START}\n{END}\n", "cannot read"),
        ("{not json", "{START}\n{END}\n", "cannot read"),
        ("{}", "{START}\n{END}\n", "not a result of benchmarks.cost_curves"),
        ('{"benchmark": "cost_curves"}', "{END}\n{START}\n", "needs the line"),
        ('{"benchmark": "cost_curves"}', "no markers\n", "needs the line"),
    ],
)
def test_the_cost_table_script_says_what_is_wrong_and_writes_nothing(tmp_path, result, page, message):
    from docs.make_cost_curves import END, START, main

    if result is not None:
        (tmp_path / "result.json").write_text(result)
    text = page.format(START=START, END=END)
    (tmp_path / "page.md").write_text(text)
    with pytest.raises(SystemExit, match=message):
        main(tmp_path / "result.json", tmp_path / "curves.png", tmp_path / "page.md")
    assert (tmp_path / "page.md").read_text() == text and not (tmp_path / "curves.png").exists()
