"""Load and validate the notebooks config; the schema in `schema/` is the only source.

Both the glue service and the hub-side hooks load config through `load()`, so
an invalid file stops either of them at start-up with a message naming the
file, the path inside it and what is wrong.
"""

from __future__ import annotations

import argparse
import copy
import ssl
import sys
from functools import cache
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import jsonschema
import yaml

from glue.core.configtypes import Config, Profile

_PACKAGE = Path(__file__).resolve().parents[1]
# installed wheels carry the schema inside the package; a checkout has it at the top
_SCHEMA_DIRS = (_PACKAGE / "schema", _PACKAGE.parent / "schema")
SCHEMA_NAME = "notebooks.schema.yaml"
# what the hub side tells the glue beside the config file: the hub's `subdomain_host`, where
# each user's servers have a domain of their own (glue.hub.setup.embedded, the chart)
SUBDOMAIN_HOST_ENV = "NOTEBOOKS_SUBDOMAIN_HOST"


# YAML's C parser (libyaml, in PyYAML's wheels) for the documents we ship: the OpenAPI
# document took 128 ms to parse in Python at every glue start, 17 ms in C. A user's config
# file keeps the Python parser and its error messages.
SHIPPED_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def shipped_yaml(path: Path) -> Any:
    """A YAML document that ships with the package (the schema, the OpenAPI document)."""
    return yaml.load(path.read_text(), Loader=SHIPPED_LOADER)  # noqa: S506 (a safe loader)


class ConfigError(Exception):
    """The config file is missing, unreadable or does not match the schema."""


def schema_path() -> Path:
    for directory in _SCHEMA_DIRS:
        if (directory / SCHEMA_NAME).is_file():
            return directory / SCHEMA_NAME
    raise ConfigError(f"schema {SCHEMA_NAME} not found in {', '.join(map(str, _SCHEMA_DIRS))}")


@cache
def schema() -> dict[str, Any]:
    return cast(dict[str, Any], shipped_yaml(schema_path()))


def _fill_defaults(node: Any, sub: dict[str, Any]) -> None:
    """Write the schema's `default`s into `node` where keys are absent."""
    if isinstance(node, dict):
        for key, prop in sub.get("properties", {}).items():
            if key not in node and "default" in prop:
                node[key] = copy.deepcopy(prop["default"])
            if key in node:
                _fill_defaults(node[key], prop)
    elif isinstance(node, list) and isinstance(sub.get("items"), dict):
        for item in node:
            _fill_defaults(item, sub["items"])


def _where(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return path or "(top level)"


def validate(data: Any, source: str = "<config>") -> Config:
    """Return `data` with defaults filled in, or raise ConfigError naming every problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping, not {type(data).__name__}")
    config = copy.deepcopy(data)
    _fill_defaults(config, schema())
    validator = jsonschema.Draft7Validator(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.path)))
    if errors:
        lines = [f"  at {_where(e)}: {e.message}" for e in errors]
        raise ConfigError(f"{source}: invalid notebooks config\n" + "\n".join(lines))
    # the types in configtypes.py are generated from the schema just checked, defaults included
    typed = cast(Config, config)
    _check_semantics(typed, source)
    return typed


def _check_semantics(config: Config, source: str) -> None:
    """Rules JSON Schema cannot say: unique profile names, at most one default, a CA bundle
    that OpenSSL reads."""
    names = [p["name"] for p in config["profiles"]]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"{source}: at profiles: duplicate profile names {duplicated}")
    if sum(bool(p["default"]) for p in config["profiles"]) > 1:
        raise ConfigError(f"{source}: at profiles: more than one profile is marked default")
    ca_bundle = config["provider"]["caBundle"]
    if ca_bundle:
        try:
            ssl.create_default_context().load_verify_locations(cadata=ca_bundle)
        except ssl.SSLError as e:
            raise ConfigError(
                f"{source}: at provider.caBundle: not PEM certificates ({e})"
            ) from None


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return validate(_notebooks_part(data), str(path))


def _notebooks_part(data: Any) -> Any:
    """The config inside a file: the chart's values carry it at `jupyterhub.custom.notebooks`
    (where z2jh's hub checksum covers it), a values file may have it at `notebooks:`, and a
    bare config file is accepted too; so an operator checks their values file as it is."""
    if not isinstance(data, dict):
        return data
    custom = (data.get("jupyterhub") or {}).get("custom") or {}
    if isinstance(custom, dict) and "notebooks" in custom:
        return custom["notebooks"]
    return data.get("notebooks", data)


def default_profile(config: Config) -> Profile:
    profiles = config["profiles"]
    return next((p for p in profiles if p["default"]), profiles[0])


def host_cookies(subdomain_host: str) -> bool:
    """Whether login cookies (the hub's, the glue's, the servers') get the `__Host-` prefix:
    where each user has a domain of their own over HTTPS, so that no page on a user's domain
    can toss a cookie onto the hub's (GHSA-7r3h-4ph8-w38g: e.g. its author's own login,
    making the visitor act as them). Such cookies must be Secure. Over plain HTTP they are
    not used: JupyterHub 5.5's servers then set their OAuth state cookie without Secure, which
    browsers refuse for a `__Host-` name; and on `localhost` (the embedded default) browsers
    refuse a cookie for the parent domain from `<user>.localhost` anyway, so nothing can be
    tossed there (tests/test_origins.py)."""
    return urlsplit(subdomain_host).scheme == "https"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Check notebooks config files (the reference: python -m glue.tools.configdocs)."
    )
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args(argv)
    status = 0
    for file in args.files:
        try:
            load(file)
            print(f"{file}: ok")
        except ConfigError as e:
            print(e, file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())

