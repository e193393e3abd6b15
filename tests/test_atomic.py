"""Atomic outputs: complete or absent, and with the permissions any new file or folder gets."""

import os

import pytest

from lungdx.atomic import atomic_dir, atomic_path, current_umask, write_json


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_outputs_get_normal_permissions_not_the_temporaries_private_ones(tmp_path, umask_022):
    # mkstemp/mkdtemp make 0600/0700 temporaries; renamed into place they must read like any output.
    write_json(tmp_path / "metrics" / "eval.json", {"accuracy": 1.0})
    with atomic_dir(tmp_path / "data" / "prepared") as tmp:
        (tmp / "train").mkdir()
        (tmp / "train" / "labels.npy").write_bytes(b"x")
    with atomic_path(tmp_path / "models" / "model.keras", suffix=".keras") as tmp:
        tmp.write_bytes(b"model")
    assert oct((tmp_path / "metrics" / "eval.json").stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "models" / "model.keras").stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "data" / "prepared").stat().st_mode & 0o777) == oct(0o755)


def test_a_failure_inside_leaves_the_old_output_and_no_temporary(tmp_path):
    write_json(tmp_path / "eval.json", {"accuracy": 0.5})
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "eval.json") as tmp:
            tmp.write_text("{half")
            raise RuntimeError("killed")
    assert (tmp_path / "eval.json").read_text() == '{\n  "accuracy": 0.5\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]


@pytest.mark.parametrize("mask", [0o002, 0o077])
def test_modes_follow_the_umask_in_force_when_written(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert current_umask() == mask
        write_json(tmp_path / "m.json", {})
        with atomic_dir(tmp_path / "d"):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~mask
