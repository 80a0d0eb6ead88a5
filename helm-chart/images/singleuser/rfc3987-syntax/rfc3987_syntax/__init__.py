"""rfc3987-syntax's names, looked up in rfc3987-syntax2 when first used.

jsonschema runs `from rfc3987_syntax import is_valid_syntax` at import; the fork
builds a parser only when a value is first checked, so the import costs no parsing.
A star import is avoided on purpose: it would read the fork's lazily built
`syntax_parser` and so build it.
"""

from typing import Any

import rfc3987_syntax2


def __getattr__(name: str) -> Any:
    return getattr(rfc3987_syntax2, name)
