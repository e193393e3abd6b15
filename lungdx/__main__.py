import sys

from lungdx.cli import main

sys.exit(main())
