"""The stage scripts: stages/<name>.py is the `<name>` stage of dvc.yaml (python -m stages.<name>)."""
