"""Documentation that must not drift from the code, and no citation that leads nowhere.

A citation is a file named in prose (Markdown and other text files whole; in Python, comments and
docstrings, plus the string literals of non-test modules, which reach users as help and errors):
a documentation file (``*.md``), a path whose first folder exists in the repository, or any path that
climbs to a parent folder. It must resolve inside the repository. ``docs/design.md §N`` must name a heading of
docs/design.md, and every ``test_file.py::name`` the design cites must be defined in that file.
"""

from __future__ import annotations

import ast
import io
import os
import re
import subprocess
import tokenize
from pathlib import Path

from iot_platform.cli import COMMANDS
from iot_platform.settings import settings_table

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
LIVING_DOC = REPO / "docs/design.md"  # the project's living design document
TESTS = REPO / "iot_platform_tests"

_SKIPPED_DIRS = {".git", ".venv", ".iot", ".dg", ".pytest_cache", ".hypothesis", "__pycache__", "build", "dist", "node_modules"}
_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+")
_EXTENSIONS = "md|py|sql|toml|sh|yaml|yml|xml|properties|json|txt|cfg|ini"
# A path-like token not glued to a longer word or path; `...` (an elided path) never starts one.
_PATH = re.compile(rf"(?<![\w./-])((?:\.\./|/)?[\w.-]+(?:/[\w.-]+)*\.(?:{_EXTENSIONS}))(?![\w/-])")
_OUTSIDE = re.compile(r"(?<![\w./-])\.\./[\w./-]*")
_SECTION_REF = re.compile(r"docs/design\.md\s*§\s*(\d+(?:\.\d+)*)")
_BARE_SECTION_REF = re.compile(r"§\s*(\d+(?:\.\d+)*)")
_HEADING = re.compile(r"^#{2,6}\s+(\d+(?:\.\d+)*)\.?\s", re.M)
_TEST_REF = re.compile(r"((?:iot_platform_tests/)?(?:unit|integration|faults)/[\w/]+\.py)(?:::(\w+))?|`::(\w+)`")


def repository_files() -> list[Path]:
    """Every file of the checkout that git does not ignore (tracked or new)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO, capture_output=True, check=True, timeout=60,
        ).stdout.decode()
        return sorted(p for p in (REPO / name for name in listed.split("\0") if name) if p.is_file())
    except (OSError, subprocess.SubprocessError):  # no git: walk, skipping what .gitignore lists
        found = []
        for root, dirs, files in os.walk(REPO):
            dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS and not d.endswith(".egg-info")]
            found += [Path(root) / name for name in files]
        return sorted(found)


def _python_prose(source: str, *, with_strings: bool) -> str:
    """Comments and docstrings of a module, plus every string literal when ``with_strings``."""
    parts = []
    string_types = {tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT or (with_strings and token.type in string_types):
            parts.append(token.string)
    if not with_strings:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                parts.append(ast.get_docstring(node) or "")
    return "\n".join(parts)


def prose(path: Path) -> str | None:
    """The text of ``path`` in which citations are looked for; None for binary or generated data."""
    if path.suffix == ".json":
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None
    if path.suffix == ".py":
        is_test = TESTS in path.parents
        return _python_prose(text, with_strings=not is_test)
    return text


def dangling_citations(text: str, where: Path, files: list[Path]) -> list[str]:
    """Files ``text`` (found in ``where``) cites that are not in the repository."""
    relative = [f.relative_to(REPO).as_posix() for f in files]
    folders = {part for name in relative for part in name.split("/")[:-1]}
    text = _URL.sub("", text)
    dangling = [m.group(0) for m in _OUTSIDE.finditer(text)]
    for match in _PATH.finditer(text):
        token = match.group(1)
        if token.startswith("../"):
            continue  # already reported
        if token.startswith("/"):
            if token.endswith(".md"):  # documentation on some machine, not in the repository
                dangling.append(token)
            continue
        name = token.rsplit("/", 1)[-1]
        documentation = token.endswith(".md") and "." not in name[: -len(".md")]  # dg.MetadataValue.md: an attribute
        repo_path = "/" in token and token.split("/", 1)[0] in folders
        if not (documentation or repo_path):
            continue
        if (REPO / token).exists() or (where.parent / token).exists():
            continue
        if any(name == token or name.endswith("/" + token) for name in relative):
            continue
        dangling.append(token)
    return dangling


def design_sections() -> set[str]:
    return set(_HEADING.findall(LIVING_DOC.read_text()))


def unresolved_sections(text: str, sections: set[str], *, bare: bool = False) -> list[str]:
    """``docs/design.md §N`` references of ``text`` (every ``§N`` when ``bare``) naming no heading."""
    pattern = _BARE_SECTION_REF if bare else _SECTION_REF
    return [f"§{number}" for number in pattern.findall(text) if number not in sections]


def missing_tests(text: str) -> list[str]:
    """``file.py::name`` citations (a quoted bare ``::name`` continues the last file) naming no definition."""
    missing, current = [], None
    for match in _TEST_REF.finditer(text):
        path, name, continued = match.groups()
        if path is not None:
            current = REPO / path if path.startswith("iot_platform_tests/") else TESTS / path
        name = name or continued
        if name is None:
            continue
        if current is None or not current.is_file():
            missing.append(f"{current}::{name}")
            continue
        defined = {n.name for n in ast.walk(ast.parse(current.read_text())) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        if name not in defined:
            missing.append(f"{current.relative_to(REPO)}::{name}")
    return missing


def test_readme_settings_table_is_current() -> None:
    """The README's settings table equals the one generated from Settings (regenerate with
    `python -m iot_platform.settings`)."""
    text = README.read_text()
    match = re.search(r"<!-- settings-table:start -->\n(.*?)<!-- settings-table:end -->", text, re.S)
    assert match, "README lost its settings-table markers"
    assert match.group(1) == settings_table()


def test_readme_names_the_two_commands_and_every_cli_command() -> None:
    """The README shows `make run`, `make test` and every `iot-platform` subcommand."""
    text = README.read_text()
    assert "make run" in text and "make test" in text
    for name in COMMANDS:
        assert f"iot-platform {name}" in text, f"README does not mention `iot-platform {name}`"


def test_every_cited_file_exists_in_the_repository() -> None:
    """No file of the repository cites a document or path that is not in it (or lies outside it)."""
    files = repository_files()
    assert README in files and LIVING_DOC in files, "the scan must see the repository's own documents"
    problems = {}
    for path in files:
        text = prose(path)
        if text is not None and (dangling := dangling_citations(text, path, files)):
            problems[path.relative_to(REPO).as_posix()] = sorted(set(dangling))
    assert not problems, f"citations of files that are not in the repository: {problems}"


def test_every_design_section_reference_resolves() -> None:
    """`docs/design.md §N` anywhere, and `§N` inside the design, names one of its numbered headings."""
    sections = design_sections()
    assert {"1", "2", "2.7", "3", "4"} <= sections
    problems = {}
    for path in repository_files():
        text = prose(path)
        if text is None:
            continue
        unresolved = unresolved_sections(text, sections, bare=path == LIVING_DOC)
        if unresolved:
            problems[path.relative_to(REPO).as_posix()] = sorted(set(unresolved))
    assert not problems, f"references to sections docs/design.md does not have: {problems}"


def test_every_test_the_design_cites_exists() -> None:
    """Each `file.py::test` named as proof of a guarantee is defined in that file."""
    text = LIVING_DOC.read_text()
    assert len(_TEST_REF.findall(text)) > 50, "the design names its proofs as file.py::test"
    assert missing_tests(text) == []


def test_the_finders_catch_what_they_look_for() -> None:
    """Positive control of the scans above: each kind of broken citation is found, good ones are not."""
    files = repository_files()
    outside = "../elsewhere/notes"  # a path outside the checkout
    missing = "CONTRACT.md"  # a document the checkout does not have
    sample = (
        "see " + missing + " §2, docs/" + "nowhere.md, " + outside + ", /srv/" + "guide.md, storage/" + "gone.py; "
        "fine: docs/benchmarks.md, core/envelope.py, writer.py, deploy/kafka/pom.xml, dg.MetadataValue.md, "
        ".../{device_id}/telemetry, IOT_HOME/state.json, https://example.org/x/README.md"
    )
    found = dangling_citations(sample, REPO / "iot_platform" / "consumer" / "service.py", files)
    assert sorted(found) == sorted([missing, "docs/nowhere.md", outside, "/srv/guide.md", "storage/gone.py"])
    sections = design_sections()
    assert unresolved_sections("docs/design.md §2.1 and docs/design.md §" + "99", sections) == ["§99"]
    assert missing_tests("`unit/test_docs.py::test_the_finders_catch_what_they_look_for`, `::no_such_test`") == [
        "iot_platform_tests/unit/test_docs.py::no_such_test"]
