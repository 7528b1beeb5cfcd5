"""The docs: README.md stays a short front door whose quick start is what CI runs, every relative link in README.md
and docs/ resolves, and every documented command still names settings that exist (a renamed or removed key in a
`python train.py` / `python sample.py` / `python -m sora.eval` command the docs give fails here)."""

import importlib.util
import itertools
import re
import shlex
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from sora.config import check_sample_config, check_train_config
from sora.config.checks import check_eval_config
from tests.conftest import ROOT, compose_config

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs" / "results").rglob("*.md"))]
MAX_README_LINES = 250
MAX_README_CELL = 200

# ---------------------------------------------------------------------------------------------------------------
# Markdown: fenced blocks, headings, links
# ---------------------------------------------------------------------------------------------------------------

FENCE = re.compile(r"^\s*```\s*([\w+-]*)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def split_fences(path: Path) -> tuple[list[tuple[int, str]], list[tuple[str, int, str]]]:
    """(prose lines as (line number, text), fenced blocks as (language, first line number, text))."""
    prose, blocks, block, lang, start = [], [], None, "", 0
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fence = FENCE.match(line)
        if fence and block is None:
            block, lang, start = [], fence.group(1), n + 1
        elif fence:
            blocks.append((lang, start, "\n".join(block)))
            block = None
        elif block is not None:
            block.append(line)
        else:
            prose.append((n, line))
    return prose, blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (word characters and hyphens kept),
    spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a page's headings, a repeated one numbered as GitHub numbers it (-1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in split_fences(path)[0]:
        if m := re.match(r"#{1,6}\s+(.*)", line):
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every relative link and image in a page's prose, code left out; a link's text may
    run over a line break."""
    lines = [""] * (len(path.read_text().splitlines()) + 1)
    for n, line in split_fences(path)[0]:
        lines[n] = re.sub(r"`[^`]*`", "", line)
    text = "\n".join(lines)
    return [(text.count("\n", 0, m.start(1)), m.group(1)) for m in LINK.finditer(text)
            if not re.match(r"[a-z][a-z0-9+.-]*:", m.group(1))]  # http:, https:, mailto: are not checked


LINKS = [(page, n, target) for page in PAGES for n, target in relative_links(page)]


@pytest.mark.parametrize("page,line,target", LINKS, ids=[f"{rel(p)}:{n}:{t}" for p, n, t in LINKS])
def test_relative_link_resolves(page, line, target):
    file, _, anchor = target.partition("#")
    dest = (page.parent / file).resolve() if file else page
    assert dest.exists(), f"{rel(page)}:{line}: {target} points at a missing file"
    if anchor and dest.suffix == ".md":
        assert anchor in anchors(dest), f"{rel(page)}:{line}: {target}: no heading with that anchor"


def test_readme_links_every_docs_page():
    """README is the front door: every page under docs/ is one link from it (and the link test is not vacuous)."""
    linked = {(README.parent / t.partition("#")[0]).resolve() for _, t in relative_links(README)}
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert page.resolve() in linked, f"README.md does not link {rel(page)}"


# ---------------------------------------------------------------------------------------------------------------
# README: a short front door, its quick start what CI runs
# ---------------------------------------------------------------------------------------------------------------


def test_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move details to docs/ (at most {MAX_README_LINES})"


def test_readme_table_cells_are_short():
    for n, line in split_fences(README)[0]:
        if line.lstrip().startswith("|"):
            for cell in re.split(r"(?<!\\)\|", line.strip().strip("|")):
                assert len(cell.strip()) <= MAX_README_CELL, f"README.md:{n}: a table cell of {len(cell.strip())} chars"


def _and_list(line: str) -> list[list[str]]:
    """The commands of `a && b && c`, each as its words (comments dropped, pip's quiet flags left out)."""
    words = [w for w in shlex.split(line, comments=True) if w not in ("-q", "--disable-pip-version-check")]
    return [list(group) for sep, group in itertools.groupby(words, lambda w: w == "&&") if not sep]


def test_readme_quick_start_is_what_ci_runs():
    """The quick start's test command is .ci/run's commands in order (its quiet flags aside), and the main job is
    the same installs followed by `python train.py`."""
    ci = [cmd for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("python3")
          for cmd in _and_list(line)]
    text = next(text for _, _, text in split_fences(README)[1] if "pytest" in text)
    main_job, tests = (_and_list(line) for line in text.splitlines()[:2])
    assert tests == ci, f"README's test command {tests} is not .ci/run's {ci}"
    installs = [cmd for cmd in ci if cmd[:3] == ["python3", "-m", "pip"]]
    assert main_job == [*installs, ["python", "train.py"]], main_job


# ---------------------------------------------------------------------------------------------------------------
# Documented commands: each one's settings still exist and pass the config checks
# ---------------------------------------------------------------------------------------------------------------

SHELL = {"bash", "sh", "shell", "console"}
# `<same overrides>` in a command stands for the overrides of the command before it: the rest is checked alone.
PLACEHOLDER = re.compile(r"<[a-z ]+>")


def shell_commands(text: str, first_line: int) -> list[tuple[int, list[str]]]:
    """(line number, words) of each simple command of a shell block, as the shell would split it: comments and
    line continuations dropped, commands cut at newlines, `;`, `&&`, `&` and `|`, variables set earlier in the
    block expanded ("$P", $C); unknown variables are left as written."""
    text = PLACEHOLDER.sub("", text.replace("\\\n", "\0"))  # a continuation: a space, and a line
    pieces, cur, quote, line, start, i = [], [], None, first_line, first_line, 0
    while i < len(text):
        c = text[i]
        if quote is None and c == "#" and (not cur or cur[-1].isspace()):
            while i + 1 < len(text) and text[i + 1] != "\n":
                i += 1
        elif quote is None and c in "\n;&|":
            pieces.append((start, "".join(cur)))
            cur, start = [], line + (c == "\n")
        else:
            if c in "'\"" and quote in (None, c):
                quote = None if quote else c
            cur.append(" " if c == "\0" else c)
        line += c in "\n\0"
        i += 1
    pieces.append((start, "".join(cur)))
    env, out = {}, []
    for n, piece in pieces:
        if not piece.strip():
            continue
        words = shlex.split(_expand(piece, env))
        if all(re.fullmatch(r"[A-Za-z_]\w*=.*", w, re.S) for w in words):
            env.update(w.split("=", 1) for w in words)
        else:
            out.append((n, words))
    return out


def _expand(piece: str, env: dict) -> str:
    """$NAME and ${NAME} outside single quotes, for the variables the block set."""
    out, quote, i = [], None, 0
    while i < len(piece):
        c = piece[i]
        if c in "'\"" and quote in (None, c):
            quote = None if quote else c
        elif c == "$" and quote != "'" and (m := re.match(r"\$(?:(\w+)|\{(\w+)\})", piece[i:])):
            name = m.group(1) or m.group(2)
            if name in env:
                out.append(env[name])
                i += m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, the words after `python`) of every python command in a shell block of README.md and docs/."""
    found = []
    for page in PAGES:
        for lang, first, text in split_fences(page)[1]:
            if lang not in SHELL:
                continue
            for n, words in shell_commands(text, first):
                at = next((k for k, w in enumerate(words) if w in ("python", "python3")), None)
                if words[0] == "torchrun":  # torchrun's own options, then the script and its arguments
                    at = next((k - 1 for k, w in enumerate(words) if w.endswith(".py")), None)
                if at is not None and at + 1 < len(words):
                    found.append((f"{rel(page)}:{n}", words[at + 1:]))
    return found


COMMANDS = documented_commands()
CONFIGS = {"train.py": ("train", check_train_config), "data/cache_latents.py": ("train", check_train_config),
           "sample.py": ("sample", check_sample_config), "-m sora.eval": ("eval", check_eval_config)}


def _target(args: list[str]) -> tuple[str, list[str]]:
    """('train.py' | '-m sora.eval' | ..., the arguments after it)."""
    return (f"-m {args[1]}", args[2:]) if args[0] == "-m" else (args[0], args[1:])


def test_the_docs_document_each_entry_point():
    """The command tests below are not vacuous: the docs give commands of every entry point they check."""
    targets = {_target(args)[0] for _, args in COMMANDS}
    assert set(CONFIGS) <= targets, set(CONFIGS) - targets
    assert sum(_target(a)[0] == "train.py" for _, a in COMMANDS) >= 20


def _compositions(overrides: list[str]) -> list[list[str]]:
    """A multirun's overrides as each run of its sweep sees them (Hydra's own parser); else the overrides as given."""
    choices = []
    for o in OverridesParser.create().parse_overrides(overrides):
        if o.is_sweep_override():
            choices.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([o.input_line])
    return [list(combo) for combo in itertools.product(*choices)]


HYDRA_COMMANDS = [(at, args) for at, args in COMMANDS if _target(args)[0] in CONFIGS]


@pytest.mark.parametrize("args", [a for _, a in HYDRA_COMMANDS], ids=[at for at, _ in HYDRA_COMMANDS])
def test_documented_command_composes_and_passes_its_config_check(args):
    target, rest = _target(args)
    config, check = CONFIGS[target]
    multirun = any(w in ("-m", "--multirun") for w in rest)
    # `...` stands for more overrides; hydra.* configure Hydra's run directory and sweeps, not sora. Placeholders
    # in values (DIR, RUN/checkpoints/last.ckpt, /models/...) compose as written: the config checks open no file
    # they name (a checkpoint, a VAE folder, an image), so no command needs an allow-list or a real path.
    overrides = [w for w in rest if w not in ("...", "-m", "--multirun") and not w.startswith("hydra.")]
    runs = _compositions(overrides) if multirun else [overrides]
    for run in runs:
        check(compose_config(config, run))


SCRIPTS = [(at, args) for at, args in COMMANDS
           if _target(args)[0] not in CONFIGS and (args[0] == "-m" and args[1].startswith("sora")
                                                  or args[0].startswith(("data/", "bench/")))]


def _sources(target: str) -> list[Path]:
    """The files that define a command's options: a script, a module, or a package's every module (its __main__
    may hand its arguments on)."""
    if not target.startswith("-m "):
        assert (ROOT / target).is_file(), f"{target}: no such script"
        return [ROOT / target]
    module = target[3:]
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"no module {module}"
    if not spec.submodule_search_locations:
        return [Path(spec.origin)]
    assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} has no __main__ to run"
    return sorted(Path(spec.origin).parent.glob("*.py"))


@pytest.mark.parametrize("args", [a for _, a in SCRIPTS], ids=[at for at, _ in SCRIPTS])
def test_documented_script_exists_with_its_options(args):
    """A `python -m sora...`, `python data/...` or `python bench/...` command names a script that exists, and
    every --option it passes is one its source defines."""
    target, rest = _target(args)
    text = "".join(source.read_text() for source in _sources(target))
    for word in rest:
        if word.startswith("--"):
            option = word.split("=", 1)[0]
            assert f'"{option}"' in text or f"'{option}'" in text, f"{target} has no option {option}"
