"""`python -m benchmarks [--quick] [--json PATH]`: see benchmarks/README.md."""

import sys

from benchmarks.suite import main

sys.exit(main())
