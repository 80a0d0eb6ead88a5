"""`python -m glue`: run the glue service."""

import sys

from .app import main

sys.exit(main())
