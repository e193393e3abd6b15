"""`python -m lungdx`: the same command line as the installed `lungdx` (see lungdx.cli)."""

from __future__ import annotations

import sys

from lungdx.cli import main

sys.exit(main())
