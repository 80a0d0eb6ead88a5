"""`python -m glue`: run the glue service."""

import sys

from glue.service.app import main

sys.exit(main())
