"""The provider a config names: the one place that knows every provider.

Apart from glue.providers.base so the interface imports no provider (no cycle), and the
service and the hub build their provider the same way.
"""

from __future__ import annotations

from glue.core.config import Config
from glue.providers.base import GitProvider
from glue.providers.gitlab import GitLabProvider
from glue.providers.local import LocalProvider


def make_provider(config: Config) -> GitProvider:
    """The provider of `provider.kind`."""
    if config["provider"]["kind"] == "local":
        return LocalProvider(config)
    return GitLabProvider(config)
