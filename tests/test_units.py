"""Config, launch-target validation, launch options and the clone routine, without a hub."""

from __future__ import annotations

import asyncio
import json
import random
import re
import string
import subprocess
import sys
import typing
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from glue.core import config as config_mod
from glue.core import configtypes
from glue.core.errors import BadRequest, NotFound
from glue.core.launch import from_user_options
from glue.core.target import Target, parse
from glue.service.openapi import OPENAPI_PATH
from glue.session import clone as clone_module
from glue.session.clone import CloneError, clone, head, step
from glue.tools import configdocs, typegen
from testing import CHECKOUT
from testing.repos import make_repo

SHA = "0123456789abcdef0123456789abcdef01234567"
NAME_RE = re.compile(r"^[a-z](?:[a-z0-9]|-(?!-))*[a-z0-9]$")


def minimal() -> dict:
    return {
        "images": {"default": "img:1"},
        "profiles": [{"name": "small", "cpu": 1, "memory": "1G"}],
        "provider": {"kind": "local", "root": "/srv/repos"},
    }


# --- config -------------------------------------------------------------------------


def test_defaults_come_from_the_schema():
    config = config_mod.validate(minimal())
    assert config["launch"]["serversPerUser"] == 5
    assert config["provider"]["minAccessLevel"] == 30
    assert config["service"]["name"] == "notebooks"
    assert config["profiles"][0]["gpu"] == 0
    assert config_mod.default_profile(config)["name"] == "small"


def test_process_limit_and_disk_have_defaults_and_bounds():
    """`spawner.processLimit` (one for every server) and a profile's `disk` (a quantity)."""
    data = minimal()
    data["profiles"].append({"name": "big", "cpu": 2, "memory": "4G", "disk": "50Gi"})
    config = config_mod.validate(data)
    assert config["spawner"]["processLimit"] == 1024
    assert [p["disk"] for p in config["profiles"]] == ["10G", "50Gi"]
    for bad in ("lots", "10", "10GB", "-1G", 10):
        data = minimal()
        data["profiles"][0]["disk"] = bad
        with pytest.raises(config_mod.ConfigError, match=r"at profiles\.0\.disk"):
            config_mod.validate(data)
    for bad in (0, 63, "1024", 1.5):
        data = minimal()
        data["spawner"] = {"processLimit": bad}
        with pytest.raises(config_mod.ConfigError, match=r"at spawner\.processLimit"):
            config_mod.validate(data)
    data["spawner"] = {"processLimit": 64}
    assert config_mod.validate(data)["spawner"]["processLimit"] == 64
    assert "disk" in typing.get_type_hints(configtypes.Profile)
    assert "processLimit" in typing.get_type_hints(configtypes.SpawnerConfig)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda c: c["profiles"].clear(), "at profiles"),
        (lambda c: c["provider"].pop("root"), "at provider"),
        (lambda c: c["profiles"][0].update(memory="lots"), "at profiles.0.memory"),
        (lambda c: c.update(surprise=1), "at (top level)"),
        (lambda c: c["provider"].update(kind="github"), "at provider.kind"),
        (lambda c: c["profiles"].append(dict(c["profiles"][0])), "duplicate profile names"),
    ],
)
def test_invalid_config_names_file_and_path(tmp_path, change, where):
    data = minimal()
    change(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(config_mod.ConfigError) as error:
        config_mod.load(path)
    assert str(path) in str(error.value) and where in str(error.value)


def test_helm_values_form_is_accepted(tmp_path):
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"notebooks": minimal()}))
    assert config_mod.load(path)["images"]["default"] == "img:1"


def test_shipped_configs_are_valid():
    checked = []
    for path in [*(CHECKOUT / "values").glob("*.yaml"), CHECKOUT / "minikube_values.yaml"]:
        assert config_mod.load(path)["images"]["default"], path  # load() raises if invalid
        checked.append(path.name)
    assert {"embedded.yaml", "kind.yaml", "minikube_values.yaml"} <= set(checked), checked


def test_the_charts_values_form_is_accepted(tmp_path):
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"jupyterhub": {"custom": {"notebooks": minimal()}}}))
    assert config_mod.load(path)["images"]["default"] == "img:1"


def test_configuration_reference_is_generated_from_the_schema(tmp_path):
    page = CHECKOUT / "docs" / "configuration.rst"
    text = page.read_text()
    assert configdocs.render() == text, (
        "docs/configuration.rst's reference is stale: run `python -m glue.tools.configdocs`"
    )
    for key in ("launch.serversPerUser", "provider.minAccessLevel", "images.allowedRegistries"):
        assert f"``{key}``" in text
    check = [sys.executable, "-m", "glue.tools.configdocs", "--check"]
    assert subprocess.run(check, capture_output=True, cwd=tmp_path).returncode == 0
    # a page whose reference lags behind the schema fails the check, and is rewritten
    stale = tmp_path / "configuration.rst"
    stale.write_text(text.replace("``provider.minAccessLevel``", "``provider.oldName``"))
    assert configdocs.main(["--check", "--output", str(stale)]) == 1
    assert configdocs.main(["--output", str(stale)]) == 0
    assert stale.read_text() == text


def test_check_command_exit_status(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("images: 3\n")
    result = subprocess.run(
        [sys.executable, "-m", "glue.core.config", str(bad)], capture_output=True, text=True
    )
    assert result.returncode == 1 and "at images" in result.stderr


def _type_problems(value: object, kind: object, where: str) -> list[str]:
    """Where `value` does not have the type `kind` of glue/core/configtypes.py, at run time."""
    if typing.is_typeddict(kind):
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not a mapping"]
        hints = typing.get_type_hints(kind)  # NotRequired[X] comes back as X
        problems = [f"{where}.{k}: missing" for k in kind.__required_keys__ if k not in value]
        problems += [f"{where}.{k}: not in {kind.__name__}" for k in value if k not in hints]
        for key in set(value) & set(hints):
            problems += _type_problems(value[key], hints[key], f"{where}.{key}")
        return problems
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Literal:
        return [] if value in args else [f"{where}: {value!r} not one of {args}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not a list"]
        items = enumerate(value)
        return [p for i, item in items for p in _type_problems(item, args[0], f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not a mapping"]
        return [p for k, v in value.items() for p in _type_problems(v, args[1], f"{where}.{k}")]
    allowed = (int, float) if kind is float else kind
    ok = isinstance(value, allowed) and (kind is bool or not isinstance(value, bool))
    return [] if ok else [f"{where}: {value!r} is not {kind}"]


def test_config_types_are_generated_from_the_schema():
    assert (CHECKOUT / "glue" / "core" / "configtypes.py").read_text() == typegen.render(), (
        "glue/core/configtypes.py is stale: run `python -m glue.tools.typegen`"
    )
    check = subprocess.run(
        [sys.executable, "-m", "glue.tools.typegen", "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


def test_types_check_fails_when_the_schema_changes(tmp_path, monkeypatch):
    written = tmp_path / "configtypes.py"
    assert typegen.main(["--output", str(written)]) == 0
    assert typegen.main(["--check", "--output", str(written)]) == 0
    changed = config_mod.schema() | {"properties": dict(config_mod.schema()["properties"])}
    changed["properties"]["launch"] = {
        **changed["properties"]["launch"],
        "properties": {
            **changed["properties"]["launch"]["properties"],
            "idleSeconds": {"type": "integer", "default": 0},
        },
    }
    monkeypatch.setattr(typegen, "schema", lambda: changed)
    assert typegen.main(["--check", "--output", str(written)]) == 1
    assert "    idleSeconds: int\n" in typegen.render()


def test_type_generator_refuses_what_it_cannot_type(monkeypatch):
    monkeypatch.setattr(
        typegen, "schema", lambda: {"type": "object", "properties": {"x": {"oneOf": []}}}
    )
    with pytest.raises(typegen.SchemaNotSupported, match=r"^x: "):
        typegen.render()


def test_validated_configs_have_their_generated_types():
    """Keys with a default are required in the types: validate() must have filled them in."""
    configs = {"minimal": config_mod.validate(minimal())}
    for path in [*(CHECKOUT / "values").glob("*.yaml"), CHECKOUT / "minikube_values.yaml"]:
        configs[path.name] = config_mod.load(path)
    assert {"minimal", "embedded.yaml", "kind.yaml", "minikube_values.yaml"} <= set(configs)
    for name, config in configs.items():
        assert _type_problems(config, configtypes.Config, name) == []
    # the check itself finds a default that was not filled in, and a wrong type
    unfilled = dict(configs["minimal"], launch={})
    assert "c.launch.startTimeoutSeconds: missing" in _type_problems(
        unfilled, configtypes.Config, "c"
    )
    assert _type_problems(dict(unfilled, launch=None), configtypes.Config, "c") == [
        "c.launch: None is not a mapping"
    ]


# --- launch targets ---------------------------------------------------------------------


def test_parse_splits_subgroups_and_notebook():
    target = parse(f"a/b/c/proj/{SHA.upper()}/dir/nb one.ipynb")
    assert target == Target("a/b/c", "proj", SHA, "dir/nb one.ipynb")
    assert parse(f"ns/proj/{SHA}/").notebook == ""


@pytest.mark.parametrize(
    "tail",
    [
        f"ns/proj/{SHA}/../x",
        f"ns/proj/{SHA}/./x",
        f"ns/proj/{SHA}/a\x00b",
        f"ns/proj/{SHA}/a\\b",
        f"ns/.git/{SHA}",
        f"-ns/proj/{SHA}",
        f"ns/proj.git/{SHA}",
        "ns/proj/1234567",
    ],
)
def test_parse_refuses(tail):
    with pytest.raises(BadRequest):
        parse(tail)


def test_too_short_path_is_not_found():
    with pytest.raises(NotFound):
        parse("only/two")


def test_server_names_are_valid_distinct_and_deterministic():
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "._-"
    names = {}
    for _ in range(3000):
        project = rng.choice("_.") + "".join(
            rng.choice(alphabet) for _ in range(rng.randint(0, 80))
        )
        sha = "".join(rng.choice("0123456789abcdef") for _ in range(40))
        target = Target("group/sub", project, sha)
        name = target.server_name
        assert 1 <= len(name) <= 30 and NAME_RE.match(name), name
        assert Target("group/sub", project, sha, "other.ipynb").server_name == name
        names[(project, sha)] = name
    assert len(set(names.values())) == len(names)
    assert Target("a", "p", SHA).server_name != Target("b", "p", SHA).server_name


def test_user_options_are_checked_again_on_the_hub_side():
    config = config_mod.validate(
        minimal() | {"images": {"default": "img:1", "allowedRegistries": ["reg.example"]}}
    )
    good = Target("ns", "proj", SHA, "nb.ipynb").options() | {"profile": "small"}
    assert from_user_options(config, good).profile == "small"
    for bad in (
        good | {"extra": 1},
        good | {"profile": "huge"},
        good | {"image": "evil.example/miner:1"},
        good | {"commit_sha": "HEAD"},
        good | {"notebook": "../../etc/passwd"},
        {k: v for k, v in good.items() if k != "project"},
    ):
        with pytest.raises(BadRequest):
            from_user_options(config, bad)
    allowed = from_user_options(config, good | {"image": "reg.example/ns/proj:0123456"})
    assert allowed.image == "reg.example/ns/proj:0123456"


# --- the clone routine ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[str, list[str]]:
    root = tmp_path_factory.mktemp("clone")
    shas = make_repo(root, "ns/proj", versions=4)
    return (root / "ns/proj.git").as_uri(), shas


def test_clone_fetches_only_the_commit(tmp_path, repo):
    url, shas = repo
    dest = tmp_path / "ws"
    clone(url, shas[1], dest)
    assert (dest / "README.md").read_text() == "version 2\n"
    git = ["git", "-C", str(dest)]
    assert subprocess.check_output([*git, "rev-parse", "HEAD"], text=True).strip() == shas[1]
    assert subprocess.check_output([*git, "rev-list", "--all", "--count"], text=True).strip() == "1"
    detached = subprocess.run([*git, "symbolic-ref", "-q", "HEAD"], capture_output=True)
    assert detached.returncode == 1  # HEAD is detached at the sha, on no branch
    # a restart keeps the workspace (and the user's edits)
    (dest / "mine.txt").write_text("edit")
    clone(url, shas[1], dest)
    assert (dest / "mine.txt").exists()


def test_clone_unknown_commit_is_a_clear_error(tmp_path, repo):
    url, _ = repo
    with pytest.raises(CloneError, match=f"Commit {SHA} was not found"):
        clone(url, SHA, tmp_path / "ws")


@pytest.mark.parametrize(
    ("stderr", "says"),
    [
        # git 2.39's lines; the ports hold 401 and 403, which are no HTTP status
        ("fatal: unable to access 'https://127.0.0.1:40109/g/p.git/': SSL certificate problem: "
         "unable to get local issuer certificate", "SSL certificate problem"),
        ("fatal: unable to access 'http://127.0.0.1:40335/g/p.git/': The requested URL "
         "returned error: 404", "returned error: 404"),
        ("fatal: Authentication failed for 'http://127.0.0.1:8080/g/p.git/'", "log in again"),
        ("fatal: could not read Username for 'http://127.0.0.1:8080': terminal prompts "
         "disabled", "log in again"),
        ("fatal: unable to access 'http://127.0.0.1:8080/g/p.git/': The requested URL "
         "returned error: 403", "log in again"),
    ],
)
def test_a_fetch_failure_is_told_by_what_git_says_not_by_numbers_in_the_url(
    stderr: str, says: str
) -> None:
    assert says in clone_module._fetch_failure(stderr, "http://127.0.0.1:40109/g/p.git", SHA)


def test_clone_refuses_a_foreign_workspace(tmp_path, repo):
    url, shas = repo
    dest = tmp_path / "ws"
    dest.mkdir()
    (dest / "other").write_text("x")
    with pytest.raises(CloneError, match="not empty"):
        clone(url, shas[0], dest)


def test_clone_finishes_a_clone_that_was_killed_before_its_checkout(tmp_path, repo):
    """What a spawner killed mid-clone leaves: an origin, fetched objects, no checkout."""
    url, shas = repo
    dest = tmp_path / "ws"
    dest.mkdir()
    for args in (["init", "-q"], ["remote", "add", "origin", url],
                 ["fetch", "-q", "--depth", "1", "origin", shas[2]]):
        subprocess.run(["git", "-C", str(dest), *args], check=True)
    (dest / "README.md").write_text("half written")  # a checkout cut short
    clone(url, shas[2], dest)
    assert (dest / "README.md").read_text() == "version 3\n"
    assert head(dest) == shas[2]


def test_clone_finishes_a_clone_that_was_killed_before_it_named_its_origin(tmp_path, repo):
    """A spawner killed between the clone's `git init` and its `git remote add` (seen when
    the hub was killed mid-clone on a loaded machine): a repository with no origin, nothing
    fetched, no checkout."""
    url, shas = repo
    dest = tmp_path / "ws"
    dest.mkdir()
    subprocess.run(["git", "-C", str(dest), "init", "-q"], check=True)
    clone(url, shas[1], dest)
    assert head(dest) == shas[1]
    assert subprocess.run(["git", "-C", str(dest), "remote", "get-url", "origin"],
                          capture_output=True, text=True, check=True).stdout.strip() == url


def test_clone_keeps_an_unfinished_clone_of_another_origin(tmp_path, repo):
    url, shas = repo
    dest = tmp_path / "ws"
    dest.mkdir()
    subprocess.run(["git", "-C", str(dest), "init", "-q"], check=True)
    subprocess.run(["git", "-C", str(dest), "remote", "add", "origin", url + "-other"], check=True)
    (dest / "notes.txt").write_text("someone's")
    with pytest.raises(CloneError, match="not empty"):
        clone(url, shas[0], dest)
    assert (dest / "notes.txt").read_text() == "someone's"


def run_clone(url: str, commit: str, dest: Path) -> subprocess.CompletedProcess[str]:
    """The command line both spawners run (`clone.step`), run as the local spawner does."""
    argv, env = step(url, commit, str(dest), lfs=False, token_file=None, python=sys.executable)
    assert env == {}
    return subprocess.run(argv, capture_output=True, text=True)


def test_clone_step_names_the_token_file_only_in_the_environment():
    argv, env = step("https://git.example/p.git", SHA, "/w", lfs=True, token_file="/run/t")
    assert argv[:3] == ["python", "-m", "glue.session.clone"] and argv[-1] == "--lfs"
    assert env == {"NOTEBOOKS_GIT_TOKEN_FILE": "/run/t"}
    assert not any("/run/t" in arg for arg in argv)


def test_clone_command_line(tmp_path, repo):
    url, shas = repo
    ok = run_clone(url, shas[0], tmp_path / "ws")
    assert ok.returncode == 0 and (tmp_path / "ws" / "README.md").read_text() == "version 1\n"
    bad = run_clone(url, "HEAD", tmp_path / "ws2")
    assert bad.returncode == 2 and "40-character" in bad.stderr
    assert not Path(tmp_path / "ws2").exists()


def test_hub_refuses_invalid_config(tmp_path):
    """The hub side loads config through the same schema: a bad file stops the hub at start-up."""
    bad = tmp_path / "notebooks.yaml"
    bad.write_text(yaml.safe_dump(minimal() | {"launch": {"serversPerUser": 0}}))
    env = {"PATH": "/usr/bin:/bin", "NOTEBOOKS_CONFIG": str(bad), "NOTEBOOKS_STATE": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "jupyterhub", "-f", str(CHECKOUT / "values/jupyterhub_config.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert str(bad) in output and "at launch.serversPerUser" in output


async def test_progress_relays_our_steps_until_the_hand_over():
    """The one progress loop (both spawners): events as they are emitted, in order, and the
    loop ends at hand_over(), where the base spawner's own progress takes over."""
    from glue.hub.localspawner import LocalCommitSpawner

    spawner = LocalCommitSpawner(
        _mock=True,
        user=SimpleNamespace(name="alice"),
        orm_spawner=SimpleNamespace(name="", server=None),
    )
    spawner._events = []
    spawner.emit(5, "checked")

    async def later() -> None:
        await asyncio.sleep(0.3)
        spawner.emit(60, "cloned")
        spawner.hand_over()

    seen = asyncio.ensure_future(later())
    events = [e async for e in spawner.progress()]
    await seen
    assert events == [{"progress": 5, "message": "checked"}, {"progress": 60, "message": "cloned"}]
    spawner.clear_state()  # a stopped server's steps are not the next launch's
    assert spawner._events == [] and not spawner._handed_over


# --- the slim glue image -----------------------------------------------------------------------

# the hub side's packages: the glue image (also the clone image) does not install them
HUB_PACKAGES = ("jupyterhub", "kubespawner", "oauthenticator", "traitlets")
HUB_DISTRIBUTIONS = {"jupyterhub", "jupyterhub-kubespawner", "oauthenticator", "traitlets"}
# modules of the hub's package that surely import them (glue.service.hubapi may; nothing else may)
HUB_STACK_MODULES = {
    "glue.hub.serversapi",
    "glue.hub.commitspawner",
    "glue.hub.localspawner",
    "glue.hub.kubespawner",
    "glue.hub.podspec",
    "glue.hub.internals",
}
# run in a fresh interpreter, as in the glue image: a meta-path finder refuses the hub packages
# and every package of a distribution the image would not have (argv: refused top-level names,
# allowed distributions), then every glue module is imported; prints those that failed
IMPORT_PROBE = r"""
import importlib, importlib.abc, importlib.metadata, json, pkgutil, re, sys

refused, allowed = set(json.loads(sys.argv[1])), set(json.loads(sys.argv[2]))
owners = importlib.metadata.packages_distributions()
for module, dists in owners.items():
    if module != "glue" and not {re.sub(r"[-_.]+", "-", d).lower() for d in dists} & allowed:
        refused.add(module)


# the interpreter's own finders, blind to the refused packages as if they were not installed
class SlimImage(importlib.abc.MetaPathFinder):
    def __init__(self, finders):
        self.finders = finders

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in refused:
            return None
        for finder in self.finders:
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                return spec
        return None

    def invalidate_caches(self):
        for finder in self.finders:
            finder.invalidate_caches()


sys.meta_path[:] = [SlimImage(list(sys.meta_path))]
import glue

# a __main__ would run its program; what it imports is probed on its own
names = [
    m.name
    for m in pkgutil.walk_packages(glue.__path__, "glue.")
    if not m.name.endswith(".__main__")
]
failed = {}
for name in sorted(names):
    try:
        importlib.import_module(name)
    except ImportError as e:
        failed[name] = str(e)
print(json.dumps(failed))
"""


def base_closure() -> set[str]:
    """Every distribution the package's own dependencies (no extras) install, transitively."""
    import importlib.metadata
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pyproject = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())
    todo = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        todo += [Requirement(r) for r in importlib.metadata.requires(req.name) or []]
    return seen


def probe_imports(refused: tuple[str, ...], allowed: set[str]) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, json.dumps(refused), json.dumps(sorted(allowed))],
        capture_output=True,
        text=True,
        cwd=CHECKOUT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_glue_image_needs_no_hub_packages():
    """The glue service and the clone step run on the package's own dependencies: the hub
    packages are no dependency, and every module but the hub side's imports without them."""
    closure = base_closure()
    assert not HUB_DISTRIBUTIONS & closure, f"the glue image installs {HUB_DISTRIBUTIONS & closure}"
    failed = probe_imports(HUB_PACKAGES, closure)
    # the finder works (the hub's modules are refused), and only the hub's package needs the
    # hub; and the embedded default's notebook server, JupyterHub's single-user server, which
    # the hub starts from its own environment, never from the glue image
    assert set(failed) >= HUB_STACK_MODULES | {"glue.session.serverapp"}, failed
    assert all(
        name.startswith("glue.hub.") or name == "glue.session.serverapp" for name in failed
    ), failed
    # kubernetes_asyncio too: only kubespawner brings it (glue.hub.podspec imports it first)
    hub_stack = re.compile(
        r"'(jupyterhub|jupyter_server|kubespawner|kubernetes_asyncio|traitlets)\b"
    )
    assert all(hub_stack.search(m) for m in failed.values()), failed


def test_import_probe_can_fail():
    """Without a package the glue imports (aiohttp), the probe reports the glue service."""
    failed = probe_imports(("aiohttp",), base_closure())
    assert {"glue.service.app", "glue.service.routes", "glue.service.hubapi"} <= set(failed), failed
    assert "glue.session.clone" not in failed  # standard library only


def test_the_unsafe_characters_are_unicodes_controls_and_format_characters():
    """glue.core.logsafe's class is every Cc, Cf, Zl and Zp character (bidi controls, zero-width
    ones, tags), and nothing a name or a path is written with."""
    import unicodedata

    from glue.core.logsafe import UNSAFE, printable

    unsafe = {"Cc", "Cf", "Zl", "Zp"}
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if unicodedata.category(char) in unsafe:
            assert UNSAFE.fullmatch(char), hex(code)
    for text in ("é", "日本語", "😀", "a b", "%", "\\", "עברית", "عربي"):
        assert printable(text) == text
    assert printable("a\nb\u202ec\U000e0041\x85") == "a\\x0ab\\u202ec\\U000e0041\\x85"


def test_every_log_line_of_the_glue_escapes_user_input():
    """The glue's logging (glue.service.app.setup_logging), in a process of its own as the service
    runs it: a line of another logger than the access log (an image name a project chose)
    and a traceback carrying user input come out one line each, as they read."""
    evil = "registry.evil/x\u202e\u2066gnp.\u2069:1\nWARNING glue forged"
    script = "\n".join(
        [
            "import logging, sys",
            "from glue.service.app import setup_logging",
            "from glue.core import launch",
            "setup_logging()",
            "config = {'images': {'default': 'd', 'allowedRegistries': ['r.example']}}",
            "launch.choose_image(config, sys.argv[1])",
            "try:",
            "    raise ValueError(sys.argv[1])",
            "except ValueError:",
            "    logging.getLogger('glue.service.events')"
            ".exception('following %s failed', sys.argv[1])",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", script, evil],
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    shown = "registry.evil/x\\u202e\\u2066gnp.\\u2069:1\\x0aWARNING glue forged"
    lines = result.stderr.splitlines()
    assert any(
        line.endswith(
            f"WARNING glue.core.launch image {shown} is outside images.allowedRegistries; "
            "using the default"
        )
        for line in lines
    ), lines
    assert any(
        line.endswith(f"ERROR glue.service.events following {shown} failed") for line in lines
    )
    assert f"ValueError: {shown}" in lines  # the traceback keeps its lines, escaped
    assert lines[-1] == f"ValueError: {shown}"
    assert not any(c in result.stderr for c in "\u202e\u2066\u2069"), result.stderr
    assert not any(line.startswith("WARNING glue forged") for line in lines)


def test_shipped_documents_are_parsed_in_c_and_read_as_in_python() -> None:
    """The schema and the OpenAPI document go through libyaml (every glue and hub start
    parses them), and read exactly as Python's parser reads them."""
    assert config_mod.SHIPPED_LOADER is yaml.CSafeLoader
    for path in (config_mod.schema_path(), OPENAPI_PATH):
        assert config_mod.shipped_yaml(path) == yaml.safe_load(path.read_text()), path
