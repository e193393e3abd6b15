"""The pin files are the dependency list: exact, used, and what the installed package declares."""

import importlib.metadata
import re

import pytest

from tests.helpers import ROOT

# Distributions whose import name differs from their name.
IMPORT_NAMES = {"scikit-learn": "sklearn", "opencv-python-headless": "cv2", "pyyaml": "yaml"}
# Pinned for their command line, not imported.
COMMANDS = {
    "dvc": "dvc repro, the pipeline",
    "gto": "gto register, docs/workflows.md",
    "pytest-xdist": "pytest -n, pytest.ini",
    "ruff": "ruff check, ruff format: tests/test_style.py",
    "mypy": "mypy: tests/test_style.py",
}


def pins(name: str) -> dict[str, str]:
    """{distribution: version} of a requirements file; every line must be an exact pin."""
    out = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[\w,-]+\])?==([\w.]+)", line)
            assert match, f"{name}: {line!r} is not an exact pin (name==version)"
            out[match[1].lower()] = match[3]
    return out


def imported_modules() -> set[str]:
    names = set()
    for folder in ("lungdx", "stages", "tests", "benchmarks", "docs"):
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(re.findall(r"^\s*(?:import|from)\s+([A-Za-z_]\w*)", path.read_text(), re.M))
    return names


def test_every_pin_is_exact_and_used():
    used = imported_modules()
    for name in ("requirements.txt", "requirements-test.txt"):
        for dist in pins(name):
            module = IMPORT_NAMES.get(dist, dist.replace("-", "_"))
            assert module in used or dist in COMMANDS, f"{name}: nothing imports {dist} ({module}): drop its pin"


def test_the_installed_package_declares_exactly_the_pins():
    try:
        dist = importlib.metadata.distribution("lungdx")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip('lungdx is not installed: pip install -e ".[test]"')
    declared = {}
    for requirement in dist.requires or []:
        spec, _, marker = requirement.partition(";")
        name, version = spec.strip().split("==")
        declared[(name.lower(), "test" if "extra" in marker else "")] = version
    expected = {
        **{(d, ""): v for d, v in pins("requirements.txt").items()},
        **{(d, "test"): v for d, v in pins("requirements-test.txt").items()},
    }
    assert declared == expected, (
        'the installed lungdx was built from other pin files; reinstall it: pip install -e ".[test]"'
    )
