"""The documents' links: each in-page anchor names a heading, each relative link a file of the project."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in markdown.splitlines():
        if match := re.match(r"#{1,6} (.+)", line):
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            out.add(base if count == 0 else f"{base}-{count}")
    return out


def test_slugs_follow_github():
    assert slug("RLHF on Ray actors (`pipelines/rlhf.py`, `actors/`, `algos/`)") == (
        "rlhf-on-ray-actors-pipelinesrlhfpy-actors-algos"
    )
    assert slug("Iterated RLHF: the RM learns the policy's own answers during RL") == (
        "iterated-rlhf-the-rm-learns-the-policys-own-answers-during-rl"
    )
    assert anchors("## A\n## A\n") == {"a", "a-1"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_of_a_document_leads_somewhere(doc: Path):
    text = doc.read_text()
    broken = []
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        unknown_anchor = anchor and file.suffix == ".md" and file.exists() and anchor not in anchors(file.read_text())
        if not file.exists() or unknown_anchor:
            broken.append(target)
    assert not broken, f"{doc.name}: {broken}"
