"""Every relative link in README.md and docs/*.md leads somewhere: the file exists, and
its `#anchor` is a heading of that file (GitHub's slugs). So are the plain mentions of
`docs/<file>.md#anchor` that the docs use as references."""

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.M | re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)
MENTION = re.compile(r"(?<![\w/.])(docs/[\w.-]+\.md(?:#[\w-]+)?)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text without markup, lower-cased, with every
    character but letters, digits, spaces, `-` and `_` dropped and spaces made `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """A file's headings' anchors; a repeated heading's get `-1`, `-2`, ... as on GitHub."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def targets(path: Path) -> list[str]:
    """The relative links of a file, outside code blocks and inline code."""
    text = FENCE.sub("", path.read_text())
    prose = re.sub(r"`[^`\n]*`", "", text)
    links = LINK.findall(prose) + REFERENCE.findall(prose)
    return [link for link in links if not EXTERNAL.match(link) and not link.startswith("/")]


def mentions(path: Path) -> list[str]:
    """`docs/<file>.md` and `docs/<file>.md#anchor` named in a file's text, as
    paths from the project's root (code blocks included: they are commands' output)."""
    return MENTION.findall(path.read_text())


def dead(path: Path, target: str, base: Path) -> str | None:
    """Why `target` (relative to `base`) leads nowhere, or None when it leads somewhere."""
    where, _, anchor = target.partition("#")
    linked = (base / where).resolve() if where else path
    if not linked.exists():
        return f"{target}: no file {shown(linked)}"
    if anchor and linked.suffix == ".md" and anchor not in anchors(linked):
        return f"{target}: no heading #{anchor} in {shown(linked)}"
    return None


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT) if ROOT in path.parents else path)


@pytest.mark.parametrize("path", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(path: Path) -> None:
    problems = [dead(path, target, path.parent) for target in targets(path)]
    problems += [dead(path, target, ROOT) for target in mentions(path)]
    assert [problem for problem in problems if problem] == []


def test_the_slugs_are_githubs() -> None:
    assert slug("Limits (migration 0019)") == "limits-migration-0019"
    assert slug("3.1 Every page and response has a bounded size") == (
        "31-every-page-and-response-has-a-bounded-size"
    )
    assert slug("The `orchestrator` command") == "the-orchestrator-command"
    assert slug("Steering it (`/_sandbox`)") == "steering-it-_sandbox"
    assert slug("Relating runs, artifacts, and checkpoints") == (
        "relating-runs-artifacts-and-checkpoints"
    )
    assert slug("`pending_<gate>`: at a gate") == "pending_gate-at-a-gate"


def test_the_checker_finds_a_dead_link_and_a_dead_anchor(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Here\n\n## Here\n\n[ok](#here-1) [x](#nowhere) [y](b.md)\n")
    page = tmp_path / "a.md"
    assert [dead(page, target, tmp_path) for target in targets(page)] == [
        None,
        f"#nowhere: no heading #nowhere in {page}",
        f"b.md: no file {tmp_path / 'b.md'}",
    ]
