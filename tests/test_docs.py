"""The documentation stays usable: a short README, every docs page reachable from it, and no
relative link (file or #heading) pointing at something that is not there."""

import re
from collections import Counter
from pathlib import Path

from tests.helpers import ROOT

PAGES = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def prose(text: str) -> str:
    """The Markdown outside code blocks and inline code: where links are links."""
    return re.sub(r"`[^`\n]*`", "", without_code_blocks(text))


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lowercase, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen, ids = Counter(), set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", without_code_blocks(page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        ids.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
        seen[slug] += 1
    return ids


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto: -- not ours to check
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no such heading")
    return broken


def test_the_readme_stays_short():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= 220, f"README.md has {lines} lines; move the detail into docs/ and link it"


def test_every_relative_link_reaches_an_existing_file_and_heading(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n## Two words\n## Two words\n")
    (tmp_path / "b.md").write_text(
        "[ok](a.md#two-words-1) [bad](a.md#three) [gone](c.md) `[code](x.md)`\n"
        "[web](https://example.org/x) [self](#nothing)\n"
    )
    assert broken_links(tmp_path / "b.md") == [
        "a.md#three: no such heading",
        "c.md: no such file",
        "#nothing: no such heading",
    ]
    assert sum(len(LINK.findall(prose(p.read_text()))) for p in PAGES) > 30
    broken = {str(p.relative_to(ROOT)): broken_links(p) for p in PAGES}
    assert not any(broken.values()), {page: links for page, links in broken.items() if links}


def test_the_readme_links_every_docs_page():
    linked = {
        (ROOT / target.partition("#")[0]).resolve() for target in LINK.findall(prose((ROOT / "README.md").read_text()))
    }
    assert set((ROOT / "docs").glob("*.md")) - linked == set()
