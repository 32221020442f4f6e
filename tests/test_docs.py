"""The docs cannot rot: every Python block in README.md and docs/*.md runs, links resolve.

Each block is a complete program, run in a fresh interpreter (so structlog's configuration,
signal handlers and threads of one example never leak into another or into pytest).  The
blocks run a few at a time in the background while the first test waits for them; each run
is bounded by a timeout.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import chronos

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REQUIRED = [
    "index.md",
    "guide.md",
    "timeouts.md",
    "shutdown.md",
    "api.md",
    "migrating.md",
    "asyncio.md",
]
#: Info strings that mark a fenced block as Python: every such block is run.
PYTHON_TAGS = {"python", "py", "python3"}
FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
BLOCK_TIMEOUT = 60.0


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    tag: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    return [
        Block(page, text.count("\n", 0, m.start()) + 1, m.group(1).lower(), m.group(2))
        for m in FENCE.finditer(text)
    ]


ALL_BLOCKS = [block for page in PAGES for block in fenced_blocks(page)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.tag in PYTHON_TAGS]


@dataclass(frozen=True)
class Outcome:
    returncode: int | None  # None: timed out
    stdout: str
    stderr: str


def run_block(block: Block, workdir: Path) -> Outcome:
    script = workdir / (re.sub(r"\W", "_", block.id) + ".py")
    script.write_text(block.code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    try:
        proc = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        return Outcome(None, str(expired.stdout or ""), str(expired.stderr or ""))
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    workdir = tmp_path_factory.mktemp("doc-examples")
    # Two cores: a few interpreters at a time; the examples leave wide timing margins.
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="doc-example") as runner:
        results = runner.map(lambda b: (b.id, run_block(b, workdir)), PYTHON_BLOCKS)
        yield dict(results)


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.id for b in PYTHON_BLOCKS])
def test_python_block_runs(block: Block, outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[block.id]
    where = f"the ```python block at {block.id}"
    assert outcome.returncode is not None, f"{where} ran past {BLOCK_TIMEOUT}s"
    assert outcome.returncode == 0, f"{where} failed:\n{outcome.stdout}\n{outcome.stderr}"


def test_every_page_is_there_with_examples() -> None:
    names = {page.name for page in PAGES}
    assert set(REQUIRED) <= names
    with_python = {block.page.name for block in PYTHON_BLOCKS}
    pages = {"README.md", "guide.md", "timeouts.md", "shutdown.md", "migrating.md", "asyncio.md"}
    assert pages <= with_python
    assert "api.md" in with_python


def test_no_python_hides_behind_another_tag() -> None:
    """Interactive sessions and odd tags would not run: keep every example a program."""
    odd = [b.id for b in ALL_BLOCKS if b.tag in {"pycon", "ipython", "python-repl", "pyi"}]
    assert not odd
    untagged_python = [
        b.id for b in ALL_BLOCKS if not b.tag and re.search(r"^(import|from) \w+", b.code, re.M)
    ]
    assert not untagged_python


def test_readme_quick_start_commands_are_exact() -> None:
    """CI extracts these two commands from README.md: their markers and text are fixed."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    demo = (
        "<!-- quickstart-demo -->\n```sh\npython3 -m venv .venv && .venv/bin/pip install -q . "
        "&& .venv/bin/python -m chronos demo\n```\n"
    )
    tests = (
        "<!-- quickstart-tests -->\n```sh\npython3 -m venv .venv && .venv/bin/pip install -q -e "
        "'.[test]' && .venv/bin/python -m pytest\n```\n"
    )
    assert demo in text and tests in text
    assert text.index(demo) < text.index(tests)


def test_readme_links_to_the_docs() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](docs/index.md)" in text


def slugs(page: Path) -> set[str]:
    """GitHub's anchors for the headings of ``page``."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.MULTILINE):
        base = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        slug, n = base, 0
        while slug in found:
            n += 1
            slug = f"{base}-{n}"
        found.add(slug)
    return found


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_local_links_resolve(page: Path) -> None:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.is_file(), f"{page.name}: broken link {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in slugs(linked), f"{page.name}: no heading for {target}"


def test_api_reference_names_every_export() -> None:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    missing = [name for name in chronos.__all__ if f"`{name}" not in text]
    assert not missing, f"docs/api.md does not document {missing}"


def test_every_test_reliability_md_cites_exists() -> None:
    """docs/reliability.md proves each guarantee with tests: each one it names must exist."""
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"(tests/[\w/]+\.py)::(test_\w+)", text))
    assert len(cited) >= 20
    missing = [
        f"{path}::{name}"
        for path, name in sorted(cited)
        if not re.search(rf"^def {name}\(", (ROOT / path).read_text(encoding="utf-8"), re.M)
    ]
    assert not missing, missing
