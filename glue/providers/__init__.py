"""The git providers: who may launch what, and which commits exist (glue and hub)."""
