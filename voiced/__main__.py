"""`python -m voiced ...`: the same as the `voiced` command."""

import sys

from voiced.cli import main

sys.exit(main())
