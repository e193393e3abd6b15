"""The one exception type a user is meant to read.

Every stage and the CLI catch `LungdxError` and print its message on one line,
so a user sees what went wrong and what to do, never a deep traceback.
"""

from __future__ import annotations


class LungdxError(Exception):
    """An error caused by the user's input: a file, a folder or a parameter."""


class ParamError(LungdxError):
    """A value in params.yaml that is not allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"params.yaml: {key} = {value!r} is not allowed: {allowed}")


class MissingParam(ParamError):
    """Keys params.yaml must hold and does not: every value comes from params.yaml."""

    def __init__(self, keys: list[str]) -> None:
        self.key, self.value, self.allowed, self.keys = keys[0], None, "present", keys
        what = f"{keys[0]} is missing: add it" if len(keys) == 1 else f"{', '.join(keys)} are missing: add them"
        LungdxError.__init__(
            self,
            f"params.yaml: {what} (this project's params.yaml has every key, each with a comment saying what it takes)",
        )


class DiskFull(LungdxError):
    """Not enough free space for an output; the message names it and, when known, both sizes."""
