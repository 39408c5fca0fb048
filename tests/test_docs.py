"""The front page stays short, and every link between the pages leads somewhere."""

import re

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_the_readme_is_a_front_page():
    assert len((REPO / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if (
                not target.startswith(("http://", "https://", "mailto:"))
                and not (page.parent / target).exists()
            ):
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert broken == []
