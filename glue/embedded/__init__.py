"""The embedded default: hub, proxy and glue on one machine (`make dev`)."""
