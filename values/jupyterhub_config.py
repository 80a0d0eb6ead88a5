# JupyterHub config of the embedded default and the tests: a few lines around
# glue.hub.setup.configure(). `python -m glue.embedded.dev` (and the test fixtures) set
# the NOTEBOOKS_* variables read here.
import os

from glue.core.config import load
from glue.hub.setup import configure, embedded

config_path = os.environ["NOTEBOOKS_CONFIG"]
config = load(config_path)
configure(c, config)
embedded(c, config, config_path)
