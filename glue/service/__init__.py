"""The glue service: the aiohttp app behind the hub's `/services/<name>/` prefix."""
