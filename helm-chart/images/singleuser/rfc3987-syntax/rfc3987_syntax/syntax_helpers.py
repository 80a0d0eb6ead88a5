"""rfc3987-syntax's `syntax_helpers` module, from rfc3987-syntax2's, names looked up when used."""

from typing import Any

from rfc3987_syntax2 import syntax_helpers


def __getattr__(name: str) -> Any:
    return getattr(syntax_helpers, name)
