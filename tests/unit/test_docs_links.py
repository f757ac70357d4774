"""The guide holds together: every Markdown link of README.md, CONTRIBUTING.md and docs/
that points into the repository leads to a file that exists (and, with an anchor, to a
heading of that page), every page of the guide is reachable from the README, and the
README's tutorial stays what it promises: two commands to run, and the example dossier the
tests file."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from devstack.stack import REPO
from tests.unit.test_contributing import code_of, exists, makefile_targets, named_paths

README = REPO / "README.md"
DOCS = REPO / "docs"
DOCUMENTS = [README, REPO / "CONTRIBUTING.md", *sorted(DOCS.rglob("*.md"))]
# The pages written for readers of the guide; CONTRIBUTING.md and the decision records have
# their own checks in test_contributing.py.
KINDS = ("how-to", "reference", "explanation")
GUIDE = [README, *sorted(page for kind in KINDS for page in (DOCS / kind).glob("*.md"))]
EXAMPLE_DOSSIER = DOCS / "examples" / "birth-residence-insurance.json"
FENCED = re.compile(r"^```[^\n]*\n.*?^```", flags=re.DOTALL | re.MULTILINE)
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", flags=re.MULTILINE)


def prose(text: str) -> str:
    """The text without its fenced code blocks, where brackets are code, not links."""
    return FENCED.sub("", text)


def links_of(text: str) -> list[str]:
    return LINK.findall(prose(text))


def is_external(target: str) -> bool:
    return re.match(r"[a-z][a-z0-9+.-]*:", target) is not None


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors_of(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in HEADING.findall(prose(page.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        anchors.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return anchors


def broken_links(document: Path, text: str) -> list[str]:
    """The links of `text`, written at `document`'s place, that lead nowhere."""
    broken = []
    for target in links_of(text):
        if is_external(target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        if not resolved.is_relative_to(REPO) or not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors_of(resolved):
            broken.append(f"{target} (no such heading)")
    return broken


def page_id(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("document", DOCUMENTS, ids=page_id)
def test_every_relative_link_resolves(document: Path) -> None:
    broken = broken_links(document, document.read_text(encoding="utf-8"))
    assert not broken, f"{page_id(document)} links to {broken}"


def test_every_page_of_the_guide_is_reachable_from_the_readme() -> None:
    reached: set[Path] = set()
    todo = [README]
    while todo:
        page = todo.pop()
        if page in reached:
            continue
        reached.add(page)
        for target in links_of(page.read_text(encoding="utf-8")):
            path = target.partition("#")[0]
            if path and not is_external(path):
                linked = (page.parent / path).resolve()
                if linked.suffix == ".md" and linked.is_file():
                    todo.append(linked)
    orphans = [page_id(p) for p in DOCUMENTS if p.resolve() not in reached]
    assert not orphans, f"no link from the README leads to {orphans}"


@pytest.mark.parametrize("document", GUIDE, ids=page_id)
def test_every_path_target_and_module_named_exists(document: Path) -> None:
    text = document.read_text(encoding="utf-8")
    missing = sorted(p for p in named_paths(text) if not exists(p))
    assert not missing, f"{page_id(document)} names paths that do not exist: {missing}"
    targets = {
        target
        for code in code_of(text)
        for target in re.findall(r"(?:^|[\s;&|(])make ([a-z][a-z0-9-]*)", code)
    }
    assert targets <= makefile_targets(), f"not in the Makefile: {targets - makefile_targets()}"
    modules = re.findall(r"python3? -m ([\w.]+)", text)
    unknown = [m for m in modules if not (REPO / (m.replace(".", "/") + ".py")).exists()]
    assert not unknown, f"{page_id(document)} runs modules that do not exist: {unknown}"


def section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    following = re.search(r"^#{1,3} ", text[start + len(heading) + 2 :], flags=re.MULTILINE)
    end = start + len(heading) + 2 + following.start() if following else len(text)
    return text[start:end]


def test_run_it_is_two_commands() -> None:
    run_it = section(README.read_text(encoding="utf-8"), "### Run it")
    blocks = FENCED.findall(run_it)
    assert len(blocks) == 1, "Run it shows one block of commands"
    lines = blocks[0].splitlines()[1:-1]  # inside the fence
    commands = [line.split("#")[0].strip() for line in lines if line.strip()]
    assert commands == ["make run", "make test"]


def test_the_readme_files_the_example_dossier() -> None:
    """The tutorial's body is the one the Zipkin and OpenAPI client tests file."""
    text = README.read_text(encoding="utf-8")
    submit = next(
        block for block in code_of(text) if "POST http://127.0.0.1:8080/v1/dossiers" in block
    )
    words = shlex.split(submit.replace("\\\n", " "))
    body = json.loads(words[words.index("-d") + 1])
    assert body == json.loads(EXAMPLE_DOSSIER.read_text(encoding="utf-8"))


def test_the_checks_above_can_fail() -> None:
    """A careless edit is caught: a missing file, a missing heading, a link out of the tree."""
    draft = DOCS / "how-to" / "draft.md"  # never written: where its links resolve from
    text = (
        "[a](../reference/limits.md#capacity-and-throttles) [b](limits.md) "
        "[c](../reference/limits.md#no-such) [d](../../../etc/passwd) [e](https://x.vn) "
        "[f](#local)\n\n## Local\n```sh\n[g](nowhere.md)\n```\n"
    )
    assert broken_links(draft, text) == [
        "limits.md",
        "../reference/limits.md#no-such (no such heading)",
        "../../../etc/passwd",
        "#local",  # the draft itself does not exist
    ]
    assert slug("The `gateway` CLI") == "the-gateway-cli"
    assert (
        slug("Tracing: the standard `OTEL_*` variables") == "tracing-the-standard-otel_-variables"
    )
