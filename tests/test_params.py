"""params.yaml is a public interface: every key is documented, and bad values are named."""

import pytest
import yaml

from lungdx import params as P
from lungdx.errors import LungdxError, ParamError
from tests.conftest import ROOT


def leaves(node, prefix=""):
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaves(value, path + ".")
        else:
            yield path


def test_readme_params_reference_covers_every_key():
    readme = (ROOT / "README.md").read_text()
    keys = list(leaves(yaml.safe_load((ROOT / "params.yaml").read_text())))
    assert len(keys) > 20
    missing = [k for k in keys if f"`{k}`" not in readme]
    assert not missing, f"README's params reference lacks {missing}"


def test_missing_key_and_bad_types_are_named():
    with pytest.raises(ParamError, match="sample.per_class.*missing"):
        P.integer({"sample": {}}, "sample.per_class")
    with pytest.raises(ParamError, match=r"sample.per_class = 'many'"):
        P.integer({"sample": {"per_class": "many"}}, "sample.per_class", minimum=1)
    with pytest.raises(ParamError, match="one of cnn, vgg19"):
        P.choice({"model": "resnet"}, "model", ("cnn", "vgg19"))


def test_unreadable_params_file_is_a_clear_error(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: [unclosed\n")
    with pytest.raises(LungdxError, match="not valid YAML"):
        P.load(tmp_path / "params.yaml")
