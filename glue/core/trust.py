"""A private CA (an in-house GitLab, `provider.caBundle`), trusted in addition to the system store.

The HTTP clients fix their trust at different moments: aiohttp and tornado build
their default SSL contexts when imported, so an SSL_CERT_FILE set later would be
ignored. Each gets the certificates explicitly instead: aiohttp a context
(`context`), tornado (oauthenticator) a combined file (`write_bundle`), since
its `ca_certs` replaces the store; the pods' git steps the combined text
(`combined`) in their Secret, named by GIT_SSL_CAINFO and SSL_CERT_FILE at
process start.
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

BUNDLE_NAME = "ca-bundle.crt"


def context(ca_bundle: str) -> ssl.SSLContext:
    """The system store plus the given PEM certificates."""
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cadata=ca_bundle)
    return ctx


def system_bundle() -> str:
    """This process's system store as PEM text ("" if OpenSSL names no file)."""
    paths = ssl.get_default_verify_paths()
    for name in (paths.cafile, paths.openssl_cafile):
        if name and Path(name).is_file():
            return Path(name).read_text()
    return ""


def combined(ca_bundle: str) -> str:
    """One file's text with both: what tools that take a single CA file expect."""
    system = system_bundle()
    return f"{system.rstrip()}\n{ca_bundle.strip()}\n" if system else f"{ca_bundle.strip()}\n"


def write_bundle(ca_bundle: str) -> Path:
    """The combined bundle in a file of this process's own (a fresh directory, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="renku-notebooks-ca-")) / BUNDLE_NAME
    path.write_text(combined(ca_bundle))
    return path
