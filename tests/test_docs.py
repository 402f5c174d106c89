"""Every `--option` that README.md or a docs/ page names for a cmunext-* command exists in that
command's argparse parser (read from the parser itself, never from a list kept here).

How a mention is attributed to a command:
- a command line in a fenced block or an inline code span (`cmunext-predict x --out o`): the
  options after the command name belong to it (up to `|`, `&&`, `;` or a `#` comment); a
  fenced line ending in a backslash continues on the next line. Lines of other programs
  (`curl`, `ray start`, `benchmarks/...py`) are not checked.
- a bare option (`--summary-json` in prose or alone in a code span): the commands named by the
  nearest enclosing heading that names any (`## Serving: cmunext-serve`); the option must exist
  in one of them. Where no heading names a command, it must exist in some cmunext-* command.

Also: tables keep their width, relative links name files, and every repository file or dated
benchmark record a page names in code exists (a figure's cited record, a module path).
"""
from __future__ import annotations

import argparse
import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPTION = re.compile(r"(?<![\w-])--[a-z0-9][a-z0-9-]*")
SEPARATOR = re.compile(r"\|\||&&|[|;]|\s#")


def _scripts() -> dict[str, str]:
    """Console scripts from pyproject.toml: name -> "module:function"."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^(cmunext-[\w-]+)\s*=\s*"([\w.]+:\w+)"', section, re.M))


class _Captured(BaseException):
    """Raised in place of parsing: BaseException, so the CLIs' error wrapper lets it through."""

    def __init__(self, parser):
        super().__init__()
        self.parser = parser


def _parser_of(target: str) -> argparse.ArgumentParser:
    """The parser a CLI's main() builds: main runs until it parses its arguments."""
    module, function = target.split(":")
    main = getattr(importlib.import_module(module), function)

    def capture(self, args=None, namespace=None):
        raise _Captured(self)

    original = argparse.ArgumentParser.parse_known_args
    argparse.ArgumentParser.parse_known_args = capture
    try:
        main([])
    except _Captured as got:
        return got.parser
    finally:
        argparse.ArgumentParser.parse_known_args = original
    raise AssertionError(f"{target} returned without parsing its arguments")


def _all_options(parser) -> set[str]:
    """A parser's options, with those of its subcommands (cmunext-keys new/sign/verify)."""
    found = set()
    for a in parser._actions:
        found |= set(a.option_strings)
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                found |= _all_options(sub)
    return found


def cli_options() -> dict[str, set[str]]:
    return {name: _all_options(_parser_of(target)) for name, target in _scripts().items()}


@dataclass(frozen=True)
class Mention:
    where: str
    option: str
    commands: tuple[str, ...]   # the option must exist in at least one of these


class _Page:
    """Walks one Markdown page and collects its option mentions."""

    def __init__(self, where: str, aliases: dict[str, str]):
        self.where, self.aliases = where, aliases
        self.all = tuple(sorted(set(aliases.values())))
        self.command = re.compile(r"(?<![\w.-])(" + "|".join(map(re.escape, sorted(aliases, key=len,
                                                                                   reverse=True))) + r")(?![\w-])")
        self.headings: list[tuple[int, tuple[str, ...]]] = []
        self.found: list[Mention] = []

    def context(self) -> tuple[str, ...]:
        for _, named in reversed(self.headings):
            if named:
                return named
        return self.all

    def command_line(self, text: str, line: int) -> bool:
        """Options after each cmunext command in `text`; False if `text` names none."""
        hits = list(self.command.finditer(text))
        for m in hits:
            tail = SEPARATOR.split(text[m.end():], 1)[0]
            for opt in OPTION.findall(tail):
                self.found.append(Mention(f"{self.where}:{line}", opt, (self.aliases[m.group(1)],)))
        return bool(hits)

    def prose(self, text: str, line: int) -> None:
        for span in re.findall(r"`([^`]+)`", text):
            if not self.command_line(span, line) and span.lstrip().startswith("--"):
                self.bare(span, line)
        self.bare(re.sub(r"`[^`]*`", " ", text), line)

    def bare(self, text: str, line: int) -> None:
        for opt in OPTION.findall(text):
            self.found.append(Mention(f"{self.where}:{line}", opt, self.context()))

    def heading(self, level: int, text: str, line: int) -> None:
        while self.headings and self.headings[-1][0] >= level:
            self.headings.pop()
        named = tuple(dict.fromkeys(self.aliases[m.group(1)] for m in self.command.finditer(text)))
        self.headings.append((level, named))
        self.prose(text, line)


def command_aliases() -> dict[str, str]:
    """How a page may name each command: its script name or `python -m` module."""
    return {alias: name for name, target in _scripts().items() for alias in (name, target.split(":")[0])}


def mentions(text: str, where: str, aliases: dict[str, str]) -> list[Mention]:
    page, fence, paragraph, pending, start = _Page(where, aliases), False, [], "", 0

    def flush():
        if paragraph:
            page.prose(" ".join(t for _, t in paragraph), paragraph[0][0])
            paragraph.clear()

    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            flush()
            fence, pending = not fence, ""
        elif fence:
            code = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].rstrip()   # without its comment
            start = start or number
            pending += code.removesuffix("\\") + " "
            if not code.endswith("\\"):
                page.command_line(pending, start)
                pending, start = "", 0
        elif heading := re.match(r"(#+)\s+(.*)", line):
            flush()
            page.heading(len(heading.group(1)), heading.group(2), number)
        elif line.strip():
            paragraph.append((number, line.strip()))
        else:
            flush()
    flush()
    return page.found


def problems(found: list[Mention], options: dict[str, set[str]]) -> list[str]:
    return [f"{m.where}: {m.option} is not an option of {' or '.join(m.commands)}"
            for m in found if not any(m.option in options[c] for c in m.commands)]


def doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.fixture(scope="module")
def options() -> dict[str, set[str]]:
    return cli_options()


def test_every_option_the_docs_name_exists_in_its_command(options):
    found = [m for page in doc_pages()
             for m in mentions(page.read_text(), str(page.relative_to(ROOT)), command_aliases())]
    attributed = [m for m in found if len(m.commands) == 1]
    assert len(found) > 150 and len(attributed) > 100, "the docs should name the commands' options"
    assert not problems(found, options), "\n".join(problems(found, options))


def test_every_command_has_a_parser_with_options(options):
    assert len(options) >= 10
    assert all("--help" in opts for opts in options.values())


PAGE = """# Prediction: `cmunext-predict`

```bash
cmunext-predict scans/ --weights m.onnx \\
    --out out --mask-videos              # renamed option on a continued line
curl --data-binary @scan.png http://127.0.0.1:8000/segment
```

Bare `--max-frame` here belongs to cmunext-predict; `cmunext-serve --max-batch 8` is fine,
`cmunext-bench --strict-devices` is not, and `tritonserver --model-repository=x` is not ours.

## On the device: `cmunext-check`

`--n-images` is an option of cmunext-bundle, not of this section's cmunext-check.
"""


def test_checker_catches_wrong_options(options):
    found = mentions(PAGE, "page", command_aliases())
    assert sorted(problems(found, options)) == [
        "page:14: --n-images is not an option of cmunext-check",
        "page:4: --mask-videos is not an option of cmunext-predict",
        "page:9: --max-frame is not an option of cmunext-predict",
        "page:9: --strict-devices is not an option of cmunext-bench",
    ]
    named = {m.option: m.commands for m in found}
    assert named["--out"] == named["--weights"] == ("cmunext-predict",) and named["--max-batch"] == ("cmunext-serve",)
    assert "--data-binary" not in named and "--model-repository" not in named   # curl's, tritonserver's


def table_problems(text: str, where: str) -> list[str]:
    """Markdown table rows whose cell count differs from their header's (a merged or split row)."""
    found, width, fence = [], None, False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
        row = line.strip()
        if fence or not (row.startswith("|") and row.endswith("|")):
            width = None
            continue
        cells = len(re.sub(r"`[^`]*`", "x", row.replace("\\|", "x")).strip("|").split("|"))
        if width is None:
            width = cells
        elif cells != width:
            found.append(f"{where}:{number}: {cells} cells in a table of {width}")
    return found


def link_problems(text: str, folder: Path, where: str) -> list[str]:
    """Relative links ([text](path) or path#anchor), read from `folder`, that name no file."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (folder / target.split("#", 1)[0]).exists():
                found.append(f"{where}:{number}: {target} does not exist")
    return found


def test_docs_tables_and_links_are_well_formed():
    pages = [*doc_pages(), ROOT / "ARCHITECTURE.md", ROOT / "benchmarks" / "README.md",
             *sorted((ROOT / "models").glob("*.md"))]
    bad = [p for page in pages for where in [str(page.relative_to(ROOT))]
           for p in table_problems(page.read_text(), where) + link_problems(page.read_text(), page.parent, where)]
    assert not bad, "\n".join(bad)


def test_table_and_link_checks_catch_what_they_claim(tmp_path):
    merged = "| a | b |\n|---|---|\n| `x|y` | 1 |\n| c | d | e |\n\n| one |\n|---|\n"
    assert table_problems(merged, "p") == ["p:4: 3 cells in a table of 2"]
    (tmp_path / "p.md").write_text("")
    text = "[ok](p.md#top) [web](https://x.org) [here](#a)\n[gone](docs/none.md)"
    assert link_problems(text, tmp_path, "p") == ["p:2: docs/none.md does not exist"]


REPO_DIRS = ("cmunext_edge/", "benchmarks/", "models/", "tests/", "docs/", "embed/", "export/", ".ci/")
FILE_SUFFIX = re.compile(r"\.(py|md|json|txt|csv|png|toml|sh|cpp|hpp|h|pth|safetensors|npz)$")
DATED = re.compile(r"\d{4}-\d{2}-\d{2}")


def _expand(token: str) -> list[str]:
    """`a{,_b}.md` -> a.md, a_b.md (the shell's brace expansion, as the docs write record pairs)."""
    m = re.search(r"\{([^{}]*)\}", token)
    if not m:
        return [token]
    return [x for alt in m.group(1).split(",") for x in _expand(token[:m.start()] + alt + token[m.end():])]


def _exists(name: str, folder: Path, root: Path) -> bool:
    found = (lambda base: list(base.glob(name)) if "*" in name else (base / name).exists())
    return any(found(base) for base in (root, folder, root / "benchmarks" / "results"))


def path_problems(text: str, folder: Path, where: str, root: Path = ROOT) -> list[str]:
    """Files the page names in code (`cmunext_edge/...py`, `benchmarks/results/x.md`, or a dated
    record such as `auto_s_2026-12-06_zen4{,_avx2-lowered}.md`) that are not in the repository: a
    renamed module or a figure citing a record that does not exist. Placeholders (<name>, NAME)
    and outputs a command writes (after --json, --markdown, --out, ...) are not checked."""
    found, fence = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        code = [line] if fence else re.findall(r"`([^`]+)`", line)
        for span in code:
            words = span.split()
            for i, word in enumerate(words):
                if i and re.fullmatch(r"--(json|markdown|plot|out|summary-json|output)", words[i - 1]):
                    continue                       # written by the command, not read
                token = word.strip(".,;:()\"'`").split("=")[-1]
                if "<" in token or not FILE_SUFFIX.search(token):
                    continue
                if not (token.startswith(REPO_DIRS) or ("/" not in token and DATED.search(token))):
                    continue
                for name in _expand(token):
                    if not _exists(name, folder, root):
                        found.append(f"{where}:{number}: {name} is not in the repository")
    return found


def test_files_and_records_the_docs_name_exist():
    pages = [*doc_pages(), ROOT / "ARCHITECTURE.md", ROOT / "benchmarks" / "README.md",
             *sorted((ROOT / "models").glob("*.md"))]
    bad = [p for page in pages
           for p in path_problems(page.read_text(), page.parent, str(page.relative_to(ROOT)))]
    assert not bad, "\n".join(bad)


def test_path_check_catches_what_it_claims(tmp_path):
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    for name in ("auto_2026-12-06.md", "auto_2026-12-06_x.md", "soak_1.md"):
        (tmp_path / "benchmarks" / "results" / name).write_text("")
    (tmp_path / "cmunext_edge").mkdir()
    (tmp_path / "cmunext_edge" / "a.py").write_text("")
    text = ("`cmunext_edge/a.py` and `cmunext_edge/gone.py`; `auto_2026-12-06{,_x,_y}.md`, "
            "`benchmarks/results/soak_*.md`\n"
            "```\nbenchmarks/run.py --json benchmarks/results/new_2026-12-07.json\n```\n"
            "`masks/<name>.png`, `models/<name>.split.json`, `your_images/a.png`")
    assert path_problems(text, tmp_path, "p", tmp_path) == [
        "p:1: cmunext_edge/gone.py is not in the repository",
        "p:1: auto_2026-12-06_y.md is not in the repository",
        "p:3: benchmarks/run.py is not in the repository",
    ]
