"""Generators, run as tools: files derived from the config schema."""
