"""The repository stands on its own: no file tracked by git refers to a path outside it.

A clone in an empty directory must be able to run its tests, its benchmarks and read its
documentation, so a tracked file may not point at the machine it was written on or at folders
beside the checkout. Checked over ``git ls-files`` (CI runs in a git clone; without git the
test fails rather than passing on nothing), one finding per line:

- ``absolute``: an absolute path of a build or developer machine (its work folder,
  ``/home/<user>``, ``/Users/<user>``, ``/root/...``, ``/mnt/...``, ``C:\\Users\\...``,
  ``file://``). System locations a program may legitimately name (``/etc/confman/...``,
  ``/usr/bin/env``, ``/tmp``, ``/dev/null``) are not findings.
- ``climbs out``: a relative path ``../...`` that leaves the repository from the directory of
  the file, or, outside Markdown links, from the repository root (where a reader of prose
  stands). A climb into a system directory (``../../../etc/passwd``, an attack string of the
  API tests) is not a finding.
- ``parents[N]``: ``Path(__file__)...parents[N]`` reaching above the repository root.
- ``sibling folder``: ``... / "shared"`` joined onto a path above the root.
- ``missing document``: a Markdown file name (``SOMETHING.md``) that no tracked file has, i.e.
  a document that lives somewhere else (names are compared exactly, case included).

Binary files are checked for absolute paths only (their bytes read as Latin-1). Only this
file is left out, because it spells the patterns it looks for.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]
SELF = PurePosixPath(Path(__file__).resolve().relative_to(ROOT).as_posix())

#: Directories of an operating system, not of a project: paths into them are not findings.
SYSTEM_DIRS = frozenset(
    {"bin", "dev", "etc", "lib", "opt", "proc", "run", "sbin", "sys", "tmp", "usr", "var"}
)

_ABSOLUTE = re.compile(
    r"""(?<![\w.~:/-])(?:
        /wor[k]/[\w.-]   # the build machine's work folder (spelt so this file is not a hit)
      | /home/[\w.-]+
      | /Users/[\w.-]+
      | /root/[\w.-]
      | /mnt/[\w.-]
      | /workspace/[\w.-]
      | /builds/[\w.-]
      | /github/workspace
      | /private/var/folders/
    )[^\s'"`()<>\[\]]*""",
    re.VERBOSE,
)
_WINDOWS = re.compile(r"(?<![\w])[A-Za-z]:\\(?:Users|Documents and Settings|build|work)\\", re.I)
_FILE_URL = re.compile(r"\bfile://(?:localhost)?/[A-Za-z~]")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+")
_CLIMB = re.compile(r"(?<![\w.])((?:\.\./)+)([\w.-]+)")
_MD_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)")
_PARENTS = re.compile(r"Path\(__file__\)(?:\.resolve\(\)|\.absolute\(\))?\.parents\[(\d+)\]")
_SIBLING = re.compile(r"""parents\[(\d+)\]\s*/\s*["']shared["']""")
_MARKDOWN = re.compile(r"(?<![\w.-])((?:[\w.-]+/)*[A-Za-z0-9][\w.-]*\.md)\b")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    kind: str
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind}: {self.text}"


def tracked_files() -> list[PurePosixPath]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, timeout=60
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"this test needs a git checkout and git on PATH: {exc}")
    return [PurePosixPath(p) for p in out.decode("utf-8", "surrogateescape").split("\0") if p]


def _read(path: PurePosixPath) -> tuple[str, bool] | None:
    """The file's text and whether it is binary; None when the work tree lacks it."""
    full = ROOT / path
    if full.is_symlink():
        return str(full.readlink()), False
    try:
        data = full.read_bytes()
    except FileNotFoundError:  # deleted in the work tree, not yet committed
        return None
    if b"\0" in data[:8192]:
        return data.decode("latin-1"), True
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("latin-1"), True


def _escapes(start: PurePosixPath, ups: int) -> bool:
    """Does climbing ``ups`` levels from directory ``start`` (relative to the root) leave it?"""
    return ups > len(start.parts)


def check_text(path: PurePosixPath, text: str, documents: frozenset[str]) -> list[Finding]:
    """The findings of one text file; ``documents``: basenames of the tracked ``*.md`` files."""
    found: list[Finding] = []
    here = path.parent
    markdown = path.suffix == ".md"
    for number, line in enumerate(text.splitlines(), 1):

        def add(kind: str, text: str, number: int = number) -> None:
            found.append(Finding(str(path), number, kind, text))

        for rx in (_ABSOLUTE, _WINDOWS, _FILE_URL):
            for m in rx.finditer(line):
                add("absolute", m.group(0))
        prose = _URL.sub(lambda m: " " * len(m.group(0)), line)  # a URL names no local path
        links = {m.start(1) for m in _MD_LINK.finditer(prose)} if markdown else set()
        for m in _CLIMB.finditer(prose):
            ups = m.group(1).count("../")
            if m.group(2) in SYSTEM_DIRS:
                continue
            from_file = _escapes(here, ups)
            from_root = m.start() not in links and _escapes(PurePosixPath(), ups)
            if from_file or from_root:
                add("climbs out", m.group(0))
        for m in _PARENTS.finditer(line):
            # parents[0] is the file's directory, parents[len(dirs)] the repository root.
            if int(m.group(1)) > len(here.parts):
                add("parents[N]", m.group(0))
        for m in _SIBLING.finditer(line):
            if int(m.group(1)) >= len(here.parts):
                add("sibling folder", m.group(0))
        for m in _MARKDOWN.finditer(prose):
            name = PurePosixPath(m.group(1)).name
            if name not in documents:
                add("missing document", m.group(1))
    return found


def check_binary(path: PurePosixPath, text: str) -> list[Finding]:
    return [
        Finding(str(path), text.count("\n", 0, m.start()) + 1, "absolute", m.group(0))
        for rx in (_ABSOLUTE, _WINDOWS)
        for m in rx.finditer(text)
    ]


def findings(files: list[PurePosixPath]) -> list[Finding]:
    documents = frozenset(p.name for p in files if p.suffix == ".md")
    out: list[Finding] = []
    for path in files:
        if path == SELF:
            continue
        content = _read(path)
        if content is None:
            continue
        text, binary = content
        out += check_binary(path, text) if binary else check_text(path, text, documents)
    return out


def test_no_tracked_file_refers_to_a_path_outside_the_repository() -> None:
    files = tracked_files()
    assert PurePosixPath("pyproject.toml") in files, "git ls-files did not list the checkout"
    problems = findings(files)
    assert not problems, "\n" + "\n".join(map(str, problems))


_SECTION = re.compile(r"^### §(\d+) ", re.M)
_CITED = re.compile(r"§(\d+)")


def test_citations_of_docs_behaviour_name_existing_sections() -> None:
    """Every ``§N`` in a file that cites docs/behaviour.md is a section of it."""
    sections = set(_SECTION.findall((ROOT / "docs" / "behaviour.md").read_text("utf-8")))
    assert sections, "docs/behaviour.md has no '### §N ' sections"
    wrong = []
    for path in tracked_files():
        content = _read(path)
        if content is None or content[1] or "docs/behaviour.md" not in content[0]:
            continue
        for number, line in enumerate(content[0].splitlines(), 1):
            wrong += [f"{path}:{number}: §{n}" for n in _CITED.findall(line) if n not in sections]
    assert not wrong, wrong


# The checks catch what they are meant to catch, and leave alone what they should.

DOCS = frozenset({"README.md", "api.md", "behaviour.md"})


@pytest.mark.parametrize(
    ("path", "line", "kind"),
    [
        # (the literals are split so that a plain grep of this file finds no outside path)
        ("README.md", "The contract is `../" "shared/API.md`.", "climbs out"),
        ("README.md", "The contract is `../" "shared/API.md`.", "missing document"),
        ("confman/api/__init__.py", "The contract is ``/wor" "k/shared/API.md``;", "absolute"),
        ("docs/notes.md", "as REFERENCE.md says", "missing document"),
        ("docs/run.log", "cwd /home/alice/confman", "absolute"),
        ("docs/run.log", "cwd /Users/bob/src/confman", "absolute"),
        ("docs/run.log", r"at C:\Users\carol\confman", "absolute"),
        ("docs/notes.md", "open file:///wor" "k/x", "absolute"),
        ("docs/notes.md", "see [the spec](../../spec/API.txt)", "climbs out"),
        (
            "tests/verify/helpers.py",
            'T = Path(__file__).resolve().parents[3] / "shared"',
            "parents[N]",
        ),
        (
            "tests/verify/helpers.py",
            'T = Path(__file__).resolve().parents[3] / "shared"',
            "sibling folder",
        ),
        ("benchmarks/bench_x.py", 'T = Path(__file__).parents[2] / "data"', "parents[N]"),
    ],
)
def test_each_kind_of_outside_reference_is_found(path: str, line: str, kind: str) -> None:
    found = check_text(PurePosixPath(path), line + "\n", DOCS)
    assert kind in {f.kind for f in found}, found


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("docs/findings/a.md", "see [the reference](../api.md) and docs/behaviour.md"),
        ("tests/api/test_hostile.py", 'name = "../../../etc/passwd"'),
        ("confman/node/config.py", 'cluster_secret_file = "/etc/confman/secret"'),
        ("scripts/test", "#!/usr/bin/env bash"),
        ("confman/api/__init__.py", "``GET .../{ns}/config`` of a missing namespace"),
        ("tests/api/test_x.py", 'cfg = {"data_dir": "/tmp/x"}'),
        ("confman/api/routes.py", 'ROUTE = "/api/v1/namespaces/{ns}/config"'),
        ("tests/verify/helpers.py", 'T = Path(__file__).resolve().parents[1] / "testdata"'),
        ("README.md", "Put `~/.local/bin` on `PATH`; see https://example.org/home/x.md"),
        ("docs/notes.md", "every *.md file"),
    ],
)
def test_inside_references_are_not_findings(path: str, line: str) -> None:
    assert check_text(PurePosixPath(path), line + "\n", DOCS) == []


def test_binary_files_are_checked_for_absolute_paths() -> None:
    data = b"\x89PNG\r\n\x1a\n\0\0\0\x1etEXtSource\0/home/alice/plot.py\0"
    assert [f.kind for f in check_binary(PurePosixPath("x.png"), data.decode("latin-1"))] == [
        "absolute"
    ]
