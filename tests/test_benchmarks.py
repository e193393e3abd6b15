"""Every benchmark runs at toy size, so none can rot. No timing is asserted: the figures
are in benchmarks/README.md; here only that each run completes and reports its ratios."""

import math

import pytest

from tests.helpers import run_benchmark

pytestmark = pytest.mark.slow  # benchmarks: the full tier only

RATIOS = {
    "vgg19_transfer": ["speedup_vs_original", "features_vs_floor"],
    "cnn_input": ["overhead"],
    "prepare_speed": ["images_per_second_2_cores", "speedup_1_to_2_cores"],
    "train_memory": ["rss_ratio", "peak_rss_mb_ours", "peak_rss_mb_original"],
    "gpu": ["vgg19_features_mixed_speedup", "cnn_training_mixed_speedup"],
}


@pytest.mark.parametrize("name", RATIOS)
def test_benchmark_runs_at_toy_size_and_prints_its_ratios(name, tmp_path):
    result = run_benchmark(name, "--toy", "--workdir", str(tmp_path))
    assert result["benchmark"] == name and result["machine"]["cores"] >= 1
    for key in RATIOS[name]:
        assert isinstance(result[key], float) and math.isfinite(result[key]), (key, result)
