"""Stage external@<name>: the trained model on the dataset params.yaml's external.<name> names ->
metrics/external/<name>.json, reports/external/<name>.json (lungdx.external)."""

import sys

from lungdx import params
from lungdx.console import progress
from lungdx.errors import LungdxError
from lungdx.external import external
from lungdx.readable import score
from lungdx.runner import stage


@stage
def main() -> None:
    """Score models/model.keras on the external dataset named on the command line."""
    settings = params.load().external
    if len(sys.argv) != 2:
        raise LungdxError(
            f"usage: python -m stages.external NAME, NAME one of params.yaml's external: "
            f"{', '.join(settings.names) or '(none)'}"
        )
    name = sys.argv[1]
    found = external(
        settings,
        name,
        model_path="models/model.keras",
        metrics_path=f"metrics/external/{name}.json",
        details_path=f"reports/external/{name}.json",
        progress=progress,
    )
    lungs = (
        f", lung energy {score(found['lung_energy_share'])} (lungs' area {score(found['lung_energy_chance'])})"
        if "lung_energy_share" in found
        else ""
    )
    print(
        f"external {name}: {found['n_images']} images, accuracy {score(found['accuracy'])}{lungs} "
        f"-> metrics/external/{name}.json"
    )


if __name__ == "__main__":
    main()
