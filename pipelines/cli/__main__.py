"""`python -m pipelines.cli`: the `glscl` command line, as the console script runs it."""

import sys

from pipelines.cli import main

sys.exit(main())
