"""Everything loaded into JupyterHub, and the processes it starts for the embedded default."""
