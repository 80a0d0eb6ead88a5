"""`python -m glue.embedded` (what `make dev` runs): the embedded default."""

import sys

from glue.embedded.dev import main

sys.exit(main())
