"""The README stays a page a newcomer finishes, and every link between the pages leads somewhere.

doc8 in `make lint` checks that each page parses; these check what it cannot: the README's
length, and that a link's file (and its `#section`, if it names one) exists, so moving or
renaming a page or a heading cannot leave a dead link behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from docutils import nodes
from docutils.core import publish_doctree

from testing import CHECKOUT

README = CHECKOUT / "README.rst"
PAGES = sorted((CHECKOUT / "docs").glob("*.rst"))
README_MAX_LINES = 250


def doctree(page: Path) -> nodes.document:
    # report_level 5: doc8 reports markup problems; here only the links matter
    return publish_doctree(
        page.read_text(), source_path=str(page), settings_overrides={"report_level": 5}
    )


def local_links(page: Path) -> list[str]:
    """The page's links to files of this repository (not to other sites, not within the page)."""
    uris = [node["refuri"] for node in doctree(page).findall(nodes.reference) if "refuri" in node]
    return [uri for uri in uris if "://" not in uri and not uri.startswith(("#", "mailto:"))]


def section_ids(page: Path) -> set[str]:
    return {i for section in doctree(page).findall(nodes.section) for i in section["ids"]}


def test_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines < README_MAX_LINES, (
        f"README.rst has {lines} lines: keep it to what a newcomer needs first "
        f"(under {README_MAX_LINES}) and move the rest to the page of its reader in docs/"
    )


def test_readme_links_every_page_of_docs():
    linked = {(README.parent / uri.partition("#")[0]).resolve() for uri in local_links(README)}
    assert PAGES, "docs/ has no pages"
    missing = [page.name for page in PAGES if page.resolve() not in linked]
    assert not missing, f"README.rst links no docs/ page named {missing}"


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.relative_to(CHECKOUT).as_posix())
def test_links_lead_to_existing_files_and_sections(page: Path):
    dead = []
    for uri in local_links(page):
        path, _, fragment = uri.partition("#")
        target = (page.parent / path).resolve()
        if not target.exists():
            dead.append(f"{uri}: no such file")
        elif fragment and target.suffix == ".rst" and fragment not in section_ids(target):
            dead.append(f"{uri}: no section #{fragment} in {target.name}")
    assert not dead, f"{page.name}: dead links: {dead}"
