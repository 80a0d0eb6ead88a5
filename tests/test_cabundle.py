"""A GitLab whose certificate a private CA signed (`provider.caBundle`): the real clients trust it.

The GitLab stand-in serves HTTPS on 127.0.0.1 with a certificate of a CA made
here by `openssl`. The glue's API client (aiohttp, also the hub's access
checks), the hub's OAuth client (tornado, with the file hubconfig writes) and
the clone step (git, run as the init container runs it, with the variables the
pod gets) reach it with the bundle and fail without; the system store still
counts (the bundle is added, not substituted).
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient
from traitlets.config import Config as HubConfig

from glue.core import trust
from glue.core.config import ConfigError, validate
from glue.core.errors import GlueError
from glue.core.target import Target
from glue.hub import setup as hubconfig
from glue.providers.base import Caller
from glue.providers.gitlab import GitLabProvider
from glue.session.clone import step
from testing.gitlab import GitLabStandIn, StandInThread, create_bare_repo

REGISTRY = "registry.gitlab.test"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A private CA and a certificate for 127.0.0.1 that it signed."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=Institute Private CA", "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr", cwd=d)
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "ext", "-out", "server.crt", cwd=d)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(d / "server.crt", d / "server.key")
    return SimpleNamespace(ca=(d / "ca.crt").read_text(), server=server)


def provider_config(url: str, ca_bundle: str) -> Any:
    return validate({
        "images": {"default": f"{REGISTRY}/renku/default:1", "allowedRegistries": [REGISTRY]},
        "profiles": [{"name": "small", "cpu": 1, "memory": "1G"}],
        "provider": {"kind": "gitlab", "url": url, "timeoutSeconds": 5, "caBundle": ca_bundle},
    })


@pytest.fixture
async def gitlab(pki: SimpleNamespace, tmp_path: Path) -> AsyncIterator[GitLabStandIn]:
    standin = GitLabStandIn(registry_host=REGISTRY)
    await standin.start(ssl_context=pki.server)
    yield standin
    await standin.stop()


def test_the_bundle_adds_to_the_system_store(pki: SimpleNamespace) -> None:
    system = trust.system_bundle()
    assert "BEGIN CERTIFICATE" in system, "the test needs a system store"
    both = trust.combined(pki.ca)
    assert both.startswith(system.rstrip()) and both.rstrip().endswith(pki.ca.strip())
    context = trust.context(pki.ca)
    assert len(context.get_ca_certs()) == len(ssl.create_default_context().get_ca_certs()) + 1


@pytest.mark.parametrize(
    "bundle", ["not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"]
)
def test_a_bundle_that_is_no_pem_is_refused(bundle: str) -> None:
    with pytest.raises(ConfigError, match=r"provider\.caBundle"):
        provider_config("https://gitlab.example.org", bundle)


async def test_the_glues_gitlab_client_trusts_the_private_ca(
    gitlab: GitLabStandIn, pki: SimpleNamespace, tmp_path: Path
) -> None:
    """The glue's (and the hub's access check's) aiohttp client, with and without the bundle."""
    repo = tmp_path / "demo.git"
    sha = create_bare_repo(repo, [{"README.md": "hi\n"}])[0]
    gitlab.add_user("alice")
    gitlab.add_token("alice", "glpat-alice-token-0123456789", scope="api")
    gitlab.add_project("group/demo", repo=repo, members={"alice": 30})
    caller = Caller.from_auth_state(
        "alice",
        {
            "access_token": "glpat-alice-token-0123456789",
            "gitlab_user": {"id": gitlab.users["alice"].id, "username": "alice"},
        },
    )
    target = Target("group", "demo", sha)
    trusting = GitLabProvider(provider_config(gitlab.url, pki.ca))
    plain = GitLabProvider(provider_config(gitlab.url, ""))
    try:
        assert await trusting.access_level(caller, target) == 30
        with pytest.raises(GlueError):
            await plain.access_level(caller, target)
    finally:
        await trusting.close()
        await plain.close()


async def test_moved_projects_http_location_is_followed_over_https(
    gitlab: GitLabStandIn, pki: SimpleNamespace, tmp_path: Path
) -> None:
    """5. Behind a TLS terminator GitLab's Location says `http://` (Rack's view; the docs'
    example does too): the same host is followed over the configured https, never in clear
    (the stand-in serves TLS only), never to another host."""
    repo = tmp_path / "demo.git"
    sha = create_bare_repo(repo, [{"README.md": "hi\n"}])[0]
    gitlab.add_user("alice")
    gitlab.add_token("alice", "glpat-alice-token-0123456789", scope="api")
    gitlab.add_project("group/old", repo=repo, members={"alice": 30})
    project = gitlab.rename_project("group/old", "group/new")
    gitlab.external_scheme = "http"
    caller = Caller.from_auth_state("alice", {"access_token": "glpat-alice-token-0123456789"})
    provider = GitLabProvider(provider_config(gitlab.url, pki.ca))
    try:
        assert await provider.access_level(caller, Target("group", "old", sha)) == 30
        assert await provider.commit_exists(caller, Target("group", "old", sha))
    finally:
        await provider.close()
    gitlab.external_url = gitlab.url.replace("127.0.0.1", "localhost")  # another host
    provider = GitLabProvider(provider_config(gitlab.url, pki.ca))
    try:
        with pytest.raises(GlueError) as refused:
            await provider.access_level(caller, Target("group", "old", sha))
        assert refused.value.code == "gitlab_error" and "not followed" in refused.value.message
    finally:
        await provider.close()
    paths = [r.path for r in gitlab.requests]
    assert paths[:2] == ["/api/v4/projects/group%2Fold", f"/api/v4/projects/{project.id}"]


async def test_the_hubs_oauth_client_trusts_the_private_ca(
    gitlab: GitLabStandIn, pki: SimpleNamespace
) -> None:
    """oauthenticator's requests are tornado's, with hubconfig's `ca_certs` file of both."""
    c = HubConfig()
    c.OAuthenticator.http_request_kwargs = {"connect_timeout": 5}  # an operator's, kept
    hubconfig.configure(c, provider_config(gitlab.url, pki.ca))
    kwargs = c.OAuthenticator.http_request_kwargs
    assert kwargs["connect_timeout"] == 5
    ca_file = Path(kwargs["ca_certs"])
    assert ca_file.read_text() == trust.combined(pki.ca)
    client = AsyncHTTPClient(force_instance=True)
    try:
        # TLS passed: the stand-in's own answer, whatever its status
        answer = await client.fetch(f"{gitlab.url}/api/v4/version", raise_error=False, **kwargs)
        assert answer.code < 599, answer.error
        with pytest.raises(ssl.SSLCertVerificationError):
            await client.fetch(f"{gitlab.url}/api/v4/version", raise_error=False)
    finally:
        client.close()


@pytest.fixture
def gitlab_thread(pki: SimpleNamespace, tmp_path: Path) -> Iterator[StandInThread]:
    with StandInThread(GitLabStandIn(registry_host=REGISTRY), pki.server) as thread:
        yield thread


def test_the_clone_step_trusts_the_pods_bundle(
    gitlab_thread: StandInThread, pki: SimpleNamespace, tmp_path: Path
) -> None:
    """The init container's command with the variables a pod gets (GIT_SSL_CAINFO names the
    Secret's combined file): git clones over TLS; without the variable it refuses the CA."""
    repo = tmp_path / "demo.git"
    sha = create_bare_repo(repo, [{"README.md": "over TLS\n"}])[0]
    standin = gitlab_thread.standin
    standin.add_project("group/demo", repo=repo, visibility="public")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text(trust.combined(pki.ca))

    def clone(dest: Path, **env: str) -> subprocess.CompletedProcess[str]:
        argv, step_env = step(
            f"{standin.url}/group/demo.git", sha, str(dest), lfs=False, token_file=None,
            python=sys.executable,
        )
        base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(Path.cwd())}
        return subprocess.run(
            argv, env={**base, **step_env, **env}, capture_output=True, text=True, timeout=60
        )

    refused = clone(tmp_path / "plain")
    assert refused.returncode != 0 and "certificate" in refused.stderr.lower()
    cloned = clone(tmp_path / "ws", GIT_SSL_CAINFO=str(ca_file), SSL_CERT_FILE=str(ca_file))
    assert cloned.returncode == 0, cloned.stderr
    assert (tmp_path / "ws" / "README.md").read_text() == "over TLS\n"


async def test_aiohttp_in_a_pod_process_reads_ssl_cert_file(
    gitlab: GitLabStandIn, pki: SimpleNamespace, tmp_path: Path
) -> None:
    """The git-proxy sidecar is aiohttp in a fresh process: SSL_CERT_FILE at its start is
    enough (aiohttp builds its default context from OpenSSL's paths at import)."""
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text(trust.combined(pki.ca))
    code = (
        "import asyncio, aiohttp\n"
        "async def main():\n"
        "    async with aiohttp.ClientSession() as s:\n"
        f"        async with s.get('{gitlab.url}/api/v4/version') as r: print(r.status)\n"
        "asyncio.run(main())\n"
    )
    args = [sys.executable, "-c", code]
    env = {"PATH": "/usr/bin:/bin"}
    ok = await _run(args, {**env, "SSL_CERT_FILE": str(ca_file)})
    assert ok[0] == 0, ok[1]
    refused = await _run(args, env)
    assert refused[0] != 0 and "CERTIFICATE_VERIFY_FAILED" in refused[1]


async def _run(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """A process, while this loop keeps serving the stand-in."""
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()

