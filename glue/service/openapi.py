"""The API description the glue serves: `openapi.yaml` with this glue's own details.

The file documents every endpoint once; what depends on the running
config (the prefix, the session cookie's name, the launch options the
profiles allow) is filled in here, so the served document never disagrees
with what the glue accepts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glue.core.config import Config, shipped_yaml
from glue.core.launch import body_schema

OPENAPI_PATH = Path(__file__).resolve().parent / "openapi.yaml"


def document(config: Config, prefix: str) -> dict[str, Any]:
    """`openapi.yaml` as this glue serves it: its prefix, cookie and launch options."""
    document: dict[str, Any] = shipped_yaml(OPENAPI_PATH)
    document["servers"] = [
        {"url": prefix.rstrip("/"), "description": "this service, on the hub's origin"}
    ]
    schemes = document["components"]["securitySchemes"]
    schemes["session"]["name"] = f"{config['service']['name']}-session"
    schemas = document["components"]["schemas"]
    options = body_schema(config)
    documented = schemas["LaunchOptions"]["properties"]
    for name, prop in options["properties"].items():
        prop.setdefault("description", documented.get(name, {}).get("description", ""))
    schemas["LaunchOptions"] = {**schemas["LaunchOptions"], **options}
    schemas["LaunchForm"]["properties"]["profile"] = options["properties"]["profile"]
    return document


def encoded(config: Config, prefix: str) -> bytes:
    """The document as the JSON body the glue sends, built once at start-up."""
    return json.dumps(document(config, prefix)).encode()
