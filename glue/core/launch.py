"""What a launch asks for, between the glue and the hub: validated on both sides.

The glue turns a POST body into a `Launch`, sends it to the hub as the
server's user_options, and the hub-side hooks rebuild it from those options
with the same checks, because anyone holding a token with server scopes could
send user_options straight to the hub.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import jsonschema

from glue.core.config import Config, default_profile
from glue.core.contracts import SPAWNER_OPTIONS, USER_OPTIONS
from glue.core.errors import BadRequest, Conflict
from glue.core.target import Target, from_options

log = logging.getLogger(__name__)

# a commit's image, as the server model and the launch page report it
PRESENT, BUILDING, FAILED, NONE = "present", "building", "failed", "none"
IMAGE_STATUSES = (PRESENT, BUILDING, FAILED, NONE)
# GitLab's pipeline statuses that still lead to an image (doc/api/pipelines.md)
PIPELINE_BUILDING = frozenset(
    {"created", "waiting_for_resource", "preparing", "pending", "running"}
)
# what a launch does with the autosave of its user and commit: put it back, or start clean
# and delete it
AUTOSAVE_CHOICES = ("restore", "discard")


@dataclass(frozen=True)
class Image:
    """The image a launch runs, and whether it is the configured fallback."""

    ref: str
    fallback: bool
    status: str = NONE


def image_allowed(config: Config, image: str) -> bool:
    """Only images from the configured registries (or the default image itself) are run."""
    if image == config["images"]["default"]:
        return True
    return any(
        image.startswith(registry.rstrip("/") + "/")
        for registry in config["images"]["allowedRegistries"]
    )


def choose_image(config: Config, candidate: str | None) -> Image:
    """The one image decision: the commit's own image when allowed, else the default."""
    if candidate is not None and image_allowed(config, candidate):
        return Image(candidate, fallback=False)
    if candidate is not None:
        log.warning("image %s is outside images.allowedRegistries; using the default", candidate)
    return Image(config["images"]["default"], fallback=True)


def image_status(candidate: str | None, pipeline: str | None) -> str:
    """present (the registry has it), building (its pipeline is on its way), failed (its
    pipeline failed) or none (no pipeline, no image)."""
    if candidate is not None:
        return PRESENT
    if pipeline in PIPELINE_BUILDING:
        return BUILDING
    return FAILED if pipeline == "failed" else NONE


def decide_image(
    config: Config,
    target: Target,
    candidate: str | None,
    pipeline: str | None,
    choices: dict[str, Any],
) -> Image:
    """What a launch runs, given the commit's image and pipeline and the caller's choice:
    a building image follows `images.whenBuilding`, a failed build never falls back
    unless the caller asked for the default image (`{"image": "default"}`)."""
    status = image_status(candidate, pipeline)
    chosen = choose_image(config, candidate)
    if choices.get("image") == "default":
        return Image(config["images"]["default"], fallback=True, status=status)
    short = target.commit_sha[:7]
    if status == FAILED:
        raise Conflict(
            f"GitLab CI failed to build the image for commit {short}, so there is no image "
            "for it. Fix the build, or launch with the default image instead.",
            code="image_build_failed",
        )
    if status == BUILDING and config["images"]["whenBuilding"] != "default":
        raise Conflict(
            f"GitLab CI is still building the image for commit {short} (pipeline {pipeline}). "
            "Launch again once it has finished, or launch now with the default image.",
            code="image_building",
        )
    return Image(chosen.ref, chosen.fallback, status)


@dataclass(frozen=True)
class Launch:
    target: Target
    profile: str
    image: str
    image_fallback: bool
    lfs: bool
    autosave: str = "restore"
    image_status: str = NONE

    def user_options(self) -> dict[str, Any]:
        """The hub's user_options: flat, no key named user_options or display_name (hub 5.x)."""
        options: dict[str, Any] = self.target.options()
        options.update(
            profile=self.profile,
            image=self.image,
            image_fallback=self.image_fallback,
            image_status=self.image_status,
            lfs=self.lfs,
        )
        if self.autosave != "restore":
            options["autosave"] = self.autosave
        return options


def body_schema(config: Config) -> dict[str, Any]:
    """The POST body a launch accepts, derived from the config (profiles, LFS choice)."""
    properties: dict[str, Any] = {
        "profile": {"type": "string", "enum": [p["name"] for p in config["profiles"]]},
        # the caller's explicit choice of the default image over the commit's own
        "image": {"type": "string", "enum": ["default"]},
    }
    if config["launch"]["lfsOption"]:
        properties["lfs"] = {"type": "boolean"}
    properties["autosave"] = {"type": "string", "enum": list(AUTOSAVE_CHOICES)}
    return {"type": "object", "additionalProperties": False, "properties": properties}


def parse_body(config: Config, body: Any) -> dict[str, Any]:
    """The launch choices in a POST body; anything unknown is a 400."""
    if body is None:
        body = {}
    try:
        jsonschema.validate(body, body_schema(config))
    except jsonschema.ValidationError as e:
        where = ".".join(map(str, e.absolute_path)) or "body"
        raise BadRequest(
            f"Invalid launch option at {where}: {e.message}", code="invalid_options"
        ) from None
    return body


def make(config: Config, target: Target, choices: dict[str, Any], image: Image) -> Launch:
    """A launch from validated choices and an image `choose_image` (or the hub side) vouched for."""
    return Launch(
        target=target,
        profile=choices.get("profile") or default_profile(config)["name"],
        image=image.ref,
        image_fallback=image.fallback,
        lfs=bool(choices.get("lfs", config["launch"]["lfs"])),
        autosave=choices.get("autosave") or "restore",
        image_status=image.status,
    )


def from_user_options(config: Config, options: dict[str, Any]) -> Launch:
    """Rebuild a launch on the hub side, refusing anything the glue would not have sent
    (besides what the spawner itself added to the hub's copy, `SPAWNER_OPTIONS`)."""
    unknown = sorted(set(options) - USER_OPTIONS - SPAWNER_OPTIONS)
    if unknown:
        raise BadRequest(f"Unknown launch options {unknown}.", code="invalid_options")
    target = from_options(options)
    choices: dict[str, Any] = {
        k: options[k] for k in ("profile", "lfs", "autosave") if k in options
    }
    if "lfs" in choices and not config["launch"]["lfsOption"]:
        choices.pop("lfs")
    parse_body(config, choices)
    image = str(options.get("image") or config["images"]["default"])
    if not image_allowed(config, image):
        raise BadRequest(
            f"Image {image} is not from an allowed registry.", code="image_not_allowed"
        )
    status = str(options.get("image_status") or NONE)
    if status not in IMAGE_STATUSES:
        raise BadRequest(f"Unknown image status {status!r}.", code="invalid_options")
    fallback = bool(options.get("image_fallback", True))
    return make(config, target, choices, Image(image, fallback, status))
