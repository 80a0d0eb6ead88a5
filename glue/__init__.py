"""renku-notebooks: launch a JupyterHub notebook server at one exact commit of a git project."""

__version__ = "0.1.0"
