"""Generate glue/core/configtypes.py, the typed view of a validated config, from the config schema.

The schema (schema/notebooks.schema.yaml) stays the only source: the code reads
the config through TypedDicts written from it, so mypy checks every key and
value type the code reads against what `glue.core.config.validate` guarantees. A key
is required in the types when the schema requires it or gives it a default,
since `validate` fills every default in. The generator covers the part of JSON
Schema the config uses and refuses anything else, so a schema that outgrows it
fails here instead of producing a wrong type.

    python -m glue.tools.typegen           # write the file
    python -m glue.tools.typegen --check   # fail if the committed file is stale (CI)
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from glue.core.config import SCHEMA_NAME, schema
from glue.tools import generated

TYPES_FILE = Path(__file__).resolve().parents[1] / "core" / "configtypes.py"
ROOT_NAME = "Config"
SCALARS = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}


class SchemaNotSupported(Exception):
    """The schema uses a construct the generator does not turn into a type."""


def _pascal(key: str) -> str:
    return key[:1].upper() + key[1:]


def _docstring(text: str) -> list[str]:
    """The first sentence of a schema description as a class docstring."""
    head, dot, _ = " ".join(text.split()).partition(". ")
    lines = textwrap.wrap(f'"""{head}{dot.strip()}', width=96)
    if len(lines) == 1:
        return [f'    {lines[0]}"""']
    return [f"    {line}" for line in lines] + ['    """']


class _Generator:
    def __init__(self) -> None:
        self.classes: dict[str, str] = {}
        self.imports = {"TypedDict"}

    def annotation(self, prop: dict[str, Any], key: str, where: str) -> str:
        if "enum" in prop:
            self.imports.add("Literal")
            return f"Literal[{', '.join(json.dumps(v) for v in prop['enum'])}]"
        kind = prop.get("type")
        if kind in SCALARS:
            return SCALARS[kind]
        if kind == "array" and isinstance(prop.get("items"), dict):
            singular = key[:-1] if key.endswith("s") else f"{key}Item"
            items = {"description": prop.get("description", ""), **prop["items"]}
            return f"list[{self.annotation(items, singular, where + '[]')}]"
        if kind == "object" and "properties" in prop:
            suffix = "" if where.endswith("[]") else "Config"
            name = _pascal(key) + suffix if where else ROOT_NAME
            return self.typed_dict(prop, name, where)
        if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
            return f"dict[str, {self.annotation(prop['additionalProperties'], key, where + '.*')}]"
        raise SchemaNotSupported(f"{where or '(top level)'}: no type for {json.dumps(prop)[:120]}")

    def typed_dict(self, node: dict[str, Any], name: str, where: str) -> str:
        if name in self.classes:
            raise SchemaNotSupported(f"{where}: a second type would be named {name}")
        self.classes[name] = ""  # reserve the name; children are written first
        required = set(node.get("required", []))
        lines = [f"class {name}(TypedDict):"]
        if node.get("description"):
            lines += [*_docstring(node["description"]), ""]
        for key, prop in node["properties"].items():
            path = f"{where}.{key}" if where else key
            kind = self.annotation(prop, key, path)
            if key not in required and "default" not in prop:
                self.imports.add("NotRequired")
                kind = f"NotRequired[{kind}]"
            lines.append(f"    {key}: {kind}")
        del self.classes[name]
        self.classes[name] = "\n".join(lines)
        return name


def render() -> str:
    """The text of configtypes.py for the current schema."""
    generator = _Generator()
    generator.annotation(schema(), ROOT_NAME, "")
    header = (
        f'"""Typed view of a validated notebooks config.\n\n'
        f"Generated from schema/{SCHEMA_NAME} by `python -m glue.tools.typegen`; do not edit.\n"
        "`python -m glue.tools.typegen --check` fails when this file is stale. A key is\n"
        "required here when the schema requires it or gives it a default, since\n"
        "`glue.core.config.validate` fills every default in.\n"
        '"""\n\n'
        f"from typing import {', '.join(sorted(generator.imports))}\n"
    )
    return header + "".join(f"\n\n{text}\n" for text in generator.classes.values())


def main(argv: list[str] | None = None) -> int:
    return generated.main(argv, render, TYPES_FILE, "glue.tools.typegen", __doc__)


if __name__ == "__main__":
    sys.exit(main())
