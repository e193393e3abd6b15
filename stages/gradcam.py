"""Stage gradcam: reports/gradcam/ (index.html, scores.json), reports/gradcam_images/ (image plots) and
metrics/gradcam.json (lungdx.gradcam; the heatmaps themselves: lungdx.heatmaps)."""

from lungdx import params
from lungdx.gradcam import gradcam
from lungdx.runner import stage


@stage
def main():
    """Write the Grad-CAM report of models/model.keras on the test split."""
    scores = gradcam(
        params.load().gradcam,
        model_path="models/model.keras",
        prepared_dir="data/prepared",
        manifest_path="data/sampled/manifest.csv",
        eval_path="reports/eval.json",
        out_dir="reports/gradcam",
        images_dir="reports/gradcam_images",
        metrics_path="metrics/gradcam.json",
    )
    print(
        f"gradcam: layer {scores['layer']} -> reports/gradcam/index.html, reports/gradcam_images/, metrics/gradcam.json"
    )


if __name__ == "__main__":
    main()
