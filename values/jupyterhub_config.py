# JupyterHub config of the embedded default and the tests: a few lines around
# glue.hubconfig.configure(). `python -m glue.dev` (and the test fixtures) set
# the NOTEBOOKS_* variables read here.
import os

from glue.config import load
from glue.hubconfig import configure, embedded

config_path = os.environ["NOTEBOOKS_CONFIG"]
configure(c, load(config_path))
embedded(c, load(config_path), config_path)
