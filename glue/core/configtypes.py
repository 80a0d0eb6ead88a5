"""Typed view of a validated notebooks config.

Generated from schema/notebooks.schema.yaml by `python -m glue.tools.typegen`; do not edit.
`python -m glue.tools.typegen --check` fails when this file is stale. A key is
required here when the schema requires it or gives it a default, since
`glue.core.config.validate` fills every default in.
"""

from typing import Literal, NotRequired, TypedDict


class ServiceConfig(TypedDict):
    """How the glue service is registered with JupyterHub."""

    name: str
    url: str
    adminUsers: list[str]


class ImagesConfig(TypedDict):
    """Images a launched server may run."""

    default: str
    commitTag: str
    allowedRegistries: list[str]
    whenBuilding: Literal["wait", "default", "refuse"]
    buildPollSeconds: float
    pullPolicy: Literal["Always", "IfNotPresent", "Never"]


class Profile(TypedDict):
    """Resource profiles a user chooses from when launching."""

    name: str
    displayName: NotRequired[str]
    description: str
    cpu: float
    memory: str
    disk: str
    gpu: int
    default: bool


class ProviderConfig(TypedDict):
    """Where projects live and who may launch them."""

    kind: Literal["local", "gitlab"]
    root: NotRequired[str]
    url: NotRequired[str]
    registry: NotRequired[str]
    minAccessLevel: Literal[10, 15, 20, 30, 40, 50]
    access: NotRequired[dict[str, dict[str, Literal[0, 5, 10, 15, 20, 30, 40, 50]]]]
    cacheSeconds: float
    timeoutSeconds: float
    caBundle: str


class SpawnerConfig(TypedDict):
    """Which spawner the hub uses for launched servers."""

    kind: Literal["local", "kubernetes"]
    workspaceRoot: str
    sandbox: bool
    processLimit: int
    workDir: str
    cloneImage: str
    registrySecret: str
    storageClass: str


class LaunchConfig(TypedDict):
    """Limits and behaviour of a launch."""

    startTimeoutSeconds: int
    stopTimeoutSeconds: float
    serversPerUser: int
    hibernatedPerUser: int
    lfs: bool
    lfsOption: bool
    maxBodyBytes: int
    hubTimeoutSeconds: float


class MetricsConfig(TypedDict):
    """Who may read the glue's Prometheus metrics at `<prefix>metrics`."""

    allowedNetworks: list[str]


class AutosaveConfig(TypedDict):
    """What a session keeps when its server stops."""

    branchPrefix: str
    maxFileBytes: int
    timeoutSeconds: int


class CullingConfig(TypedDict):
    """Stopping servers nobody uses, in both ways to run: the hub runs `jupyterhub-idle-culler` as a
    hub service with these settings, in the embedded default and on Kubernetes (the chart turns
    z2jh's own culler off).
    """

    idleSeconds: int
    maxAgeSeconds: int
    warningSeconds: int
    everySeconds: int
    idleAction: Literal["hibernate", "stop"]
    hibernatedKeepSeconds: int


class Config(TypedDict):
    """Configuration of the notebooks service: which images a launched server may run, which
    resource profiles users choose from, where projects live and who may launch them, and the limits
    of a launch.
    """

    service: ServiceConfig
    images: ImagesConfig
    profiles: list[Profile]
    provider: ProviderConfig
    spawner: SpawnerConfig
    launch: LaunchConfig
    metrics: MetricsConfig
    autosave: AutosaveConfig
    culling: CullingConfig
