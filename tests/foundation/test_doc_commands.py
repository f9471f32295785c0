"""Every shell command in README.md and the docs works as written (issue 21).

The commands are copied from the files at test time: every ```sh block, every bare ```
block whose lines start with a gridzero command, and every inline `gridzero ...`,
`./run.sh ...` or `python -m gridzero...` in the text. Paths come from the docs
themselves, so moving files moves the test with them. Each command is:

- **run** for real when that is safe and quick here (`--check`, `--help`, `decode`,
  `encode`, `docs`, `credentials acl`), in a scratch directory when it writes a file;
- **parsed** when it runs for long or needs hardware (`./run.sh up`, `gridzero bench`,
  `docker compose up`): the subcommand and every flag must exist in the CLI's argparse
  (its `--help`), `./run.sh`'s verb in run.sh, a compose verb's services in the compose
  files, and every repository path it names must exist;
- **allowed** without a check only for programs in ``CANNOT_RUN_HERE``, each with the
  reason. A command that fits none of these fails the test: add a check, not a skip.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from gridzero.cli import CODEC_DEVICES, COMMANDS
from gridzero.contract import SERVICES

ROOT = Path(__file__).resolve().parents[2]
GRIDZERO = [sys.executable, "-m", "gridzero.cli"]

CANNOT_RUN_HERE: dict[str, str] = {
    "mosquitto_sub": "needs the running broker and the generated secrets of an installation",
    "mosquitto_pub": "needs the running broker and a meter's password; tests/system/test_system_meter.py publishes the same payloads to the running system",
    "telnet": "interactive; the console itself is tested in tests/telnet_console",
    "sudo": "changes the machine (packages, systemd, /etc); the test machine is not a Pi",
    "curl": "downloads and runs Docker's installer",
    "git": "`git clone <this repository>`: the repository is already here",
    "cd": "moves the shell; paths after it are checked relative to where it goes",
    "ip": "CAN interfaces exist only on the device",
    "dmesg": "kernel messages of the device",
    "i2cdetect": "I2C bus of the device",
    "openssl": "makes certificates; tests/runtime/test_runtime_tls.py runs the same steps",
    "mkdir": "creates the certificate directory of an installation",
    "printf": "writes an openssl extension file of an installation",
    "eval": "evaluates the output of a tool outside this repository",
    "for": "the CAN network loop writes /etc/systemd/network (sudo)",
    "done": "end of that loop",
    "set": "shell options of a script shown for the device",
    "pid": "a shell function of the script shown for the device",
    "give": "a shell function of the script shown for the device",
    "usermod": "adds the user to the docker group on the device",
    "do": "the CAN network loop writes /etc/systemd/network (sudo)",
    "sed": "reads the password out of a generated secret of an installation",
    "exit": "leaves the shell when the tool above failed",
}
DOCKER_REASON = "needs Docker Engine: the verb and its services are checked, not run"

PROGRAM_WORDS = ("gridzero", ".venv/bin/gridzero", "./run.sh", ".venv/bin/python")


@dataclass(frozen=True)
class DocCommand:
    path: Path
    line: int
    text: str
    in_block: bool = True  # in a ```sh block: pasted into a fresh clone's shell as it stands

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.text}"


# --- copying the commands out of the docs -----------------------------------------------


def doc_files() -> list[Path]:
    skip = {".venv", ".git", "node_modules", ".mypy_cache", ".pytest_cache", "tests"}
    found = [p for p in ROOT.rglob("*.md") if not skip & set(p.relative_to(ROOT).parts)]
    return sorted(found)


_FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.S | re.M)
_INLINE = re.compile(
    r"`((?:\./run\.sh|gridzero|\.venv/bin/gridzero|(?:\.venv/bin/)?python -m gridzero[^`\s]*)(?=[ `])[^`]*)`"
)


def _logical_lines(block: str, first_line: int) -> list[tuple[int, str]]:
    """Lines of a shell block with continuations joined and heredoc bodies dropped."""
    out: list[tuple[int, str]] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        start = i
        text = lines[i].strip()
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text[:-1] + " " + lines[i].strip()
        heredoc = re.search(r"<<-?\s*'?(\w+)'?", text)
        if heredoc:
            end = heredoc.group(1)
            while i + 1 < len(lines) and lines[i + 1].strip() != end:
                i += 1
            i += 1
        if text and not text.startswith("#"):
            out.append((first_line + start, text))
        i += 1
    return out


def _is_gridzero_line(text: str) -> bool:
    return text.split(" ", 1)[0] in PROGRAM_WORDS


def doc_commands() -> list[DocCommand]:
    found: list[DocCommand] = []
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        fenced: list[tuple[int, int]] = []
        for fence in _FENCE.finditer(text):
            fenced.append((fence.start(), fence.end()))
            lang, body = fence.group(2), fence.group(3)
            first = text[: fence.start(3)].count("\n") + 1
            lines = _logical_lines(body, first)
            if lang in ("sh", "bash", "shell") and body.lstrip().startswith("#!"):
                found.append(DocCommand(path, first, textwrap.dedent(body)))  # a whole script
            elif lang in ("sh", "bash", "shell"):
                found += [DocCommand(path, n, t) for n, t in lines]
            elif lang == "" and lines and all(_is_gridzero_line(t) for _, t in lines):
                # a usage listing: `gridzero` there is the command README's "Commands" names
                found += [DocCommand(path, n, t, in_block=False) for n, t in lines]
        for match in _INLINE.finditer(text):
            if any(a <= match.start() < b for a, b in fenced):
                continue
            line = text[: match.start()].count("\n") + 1
            found.append(DocCommand(path, line, match.group(1), in_block=False))
    return found


# --- splitting a line into simple commands ------------------------------------------------


def _without_comment(text: str) -> str:
    """The line up to a ``#`` that starts a word outside quotes (``1B0#5A`` is no comment)."""
    quote = ""
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip()
    return text


def _template(text: str) -> str:
    """A usage line (`[--flag a|b]`, `<service>`) as words: optional groups opened up."""
    return re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).replace("|", " "), text)


def is_template(text: str) -> bool:
    return bool(re.search(r"\[[^\]]*\]|<[\w -]+>|\.\.\.|…", text))


def simple_commands(text: str) -> list[list[str]]:
    """The simple commands of one line: split at ;, &&, ||, | and comments removed."""
    text = _template(_without_comment(text))
    # `<digest from the first line>` is one placeholder, not four words
    text = re.sub(r"<[^<>]*>", lambda m: m.group(0).replace(" ", "_"), text)
    # redirections (`>/dev/null`, `2>&1`, `<<EOF`) belong to the shell, not the command
    text = re.sub(r"(?<!\S)\d?(>>?|<<?-?)(&\d|\s*[^\s<>]+)?(?=\s|$)", " ", text)
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = ""
    words: list[str] = []
    commands: list[list[str]] = []
    for token in lexer:
        if token in (";", "&&", "||", "|", "&"):
            commands.append(words)
            words = []
        else:
            words.append(token)
    commands.append(words)
    return [_without_assignments(c) for c in commands if _without_assignments(c)]


def _without_assignments(words: list[str]) -> list[str]:
    i = 0
    while i < len(words) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[i]):
        i += 1
    return words[i:]


# --- checks -------------------------------------------------------------------------------


class CommandError(AssertionError):
    pass


def _placeholder(word: str) -> bool:
    return bool(re.search(r"[<>\[\]…]|\.\.\.|\bFILE\b|\bNAME\b|^N$|^S$", word))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@functools.cache
def _help(words: tuple[str, ...]) -> str:
    done = subprocess.run(
        [*GRIDZERO, *words, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=_env(),
        check=False,
    )
    if done.returncode != 0:
        raise CommandError(f"`gridzero {' '.join(words)} --help` failed: {done.stderr.strip()}")
    return done.stdout


def _check_paths(words: list[str], outputs: set[int]) -> None:
    """Every word that names something in this repository must exist (outputs: its folder)."""
    for index, word in enumerate(words):
        if _placeholder(word) or not re.fullmatch(r"\.?[\w.-]+(/[\w.-]+)*/?", word):
            continue
        if "/" not in word and not word.startswith("."):
            continue
        first = ROOT / word.split("/")[0]
        if not first.exists():
            continue  # a topic, a generated secret, a path on the device
        target = ROOT / word
        if index in outputs:
            target = target.parent
        if not target.exists():
            raise CommandError(f"{word}: no such file or folder in the repository")


def _split_gridzero(args: list[str]) -> tuple[list[str], list[str]]:
    """(subcommand words, the rest) of ``gridzero <args>``."""
    if not args or args[0].startswith("-"):
        return [], args
    sub = args[0]
    known = {c.name for c in COMMANDS}
    if "/" in sub and set(sub.split("/")) <= known:
        return [sub.split("/")[0]], []  # `gridzero decode/encode vw-module`: both exist
    if sub not in known:
        raise CommandError(f"gridzero has no subcommand {sub!r}; it has {sorted(known)}")
    words = [sub]
    rest = args[1:]
    if sub in ("decode", "encode") and rest and not _placeholder(rest[0]):
        if rest[0] not in CODEC_DEVICES:
            raise CommandError(f"gridzero {sub}: no device {rest[0]!r}")
        words, rest = [sub, rest[0]], rest[1:]
        if sub == "encode" and rest and re.fullmatch(r"[a-z-]+", rest[0]):
            words, rest = [*words, rest[0]], rest[1:]  # the frame kind: `encode r48 set ...`
    elif sub == "credentials" and rest and not rest[0].startswith("-"):
        actions = [a.strip(" /") for a in " ".join(rest).split("/")] if "/" in rest else [rest[0]]
        for action in actions:
            if action.split()[0] not in _help(("credentials",)):
                raise CommandError(f"gridzero credentials has no action {action!r}")
        words, rest = [sub, actions[0].split()[0]], rest[1:] if "/" not in rest else []
    return words, rest


def _check_flags(words: list[str], rest: list[str]) -> None:
    text = _help(tuple(words))
    for flag in re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", " ".join(rest)):
        if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
            raise CommandError(f"gridzero {' '.join(words)} has no option {flag}")
    if words == ["run"] and rest and not _placeholder(rest[0]):
        service = rest[0]
        if service not in SERVICES:
            raise CommandError(f"gridzero run: no service {service!r}; services: {SERVICES}")


SAFE_TO_RUN = {"decode", "encode", "docs"}


def _runs_here(words: list[str], rest: list[str]) -> bool:
    if any(_placeholder(w) for w in rest):
        return False
    if "--help" in rest or "-h" in rest:
        return True
    if words[:1] in (["decode"], ["encode"], ["docs"]):
        return True
    if words == ["credentials", "acl"]:
        return True
    return words == ["run"] and "--check" in rest


def _run(args: list[str], tmp_path: Path) -> None:
    writes = any(w in args for w in ("--write", "--out")) or args[:1] == ["docs"]
    cwd = tmp_path if writes and "--check" not in args else ROOT
    if cwd == tmp_path:
        (tmp_path / "docs").mkdir(exist_ok=True)
        (tmp_path / "mosquitto" / "config").mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [*GRIDZERO, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=_env(),
        check=False,
    )
    if done.returncode != 0:
        raise CommandError(f"exit {done.returncode}: {done.stderr.strip()[-500:]}")


def check_gridzero(args: list[str], tmp_path: Path, template: bool = False) -> str:
    words, rest = _split_gridzero(args)
    if not words:
        _help(())
        return "parsed"
    if words[0] in ("decode", "encode") and len(words) == 1:
        return "parsed"  # `gridzero decode <device> ...`: the table of devices
    outputs = {i for i, w in enumerate(rest) if i > 0 and rest[i - 1] in ("--write", "--plot")}
    _check_paths(rest, outputs)
    _check_flags(words, rest)
    if not template and _runs_here(words, rest):
        _run(args, tmp_path)
        return "ran"
    return "parsed"


@functools.cache
def _run_sh_verbs() -> set[str]:
    text = (ROOT / "run.sh").read_text(encoding="utf-8")
    case = text[text.index('case "$cmd" in') :]
    return set(re.findall(r"^\s{2}([a-z]+)\)", case, re.M))


def check_run_sh(args: list[str], tmp_path: Path, template: bool = False) -> str:
    if not args:
        return "parsed"
    verb, rest = args[0], args[1:]
    if verb not in _run_sh_verbs():
        raise CommandError(f"./run.sh has no {verb!r}; it has {sorted(_run_sh_verbs())}")
    if verb in ("up", "bench"):
        return check_gridzero([verb, *rest], tmp_path, template)
    _check_paths([w for w in rest if not w.startswith("-")], set())
    return "parsed"


def check_python(args: list[str]) -> str:
    if args[:1] == ["-m"] and len(args) >= 2 and _placeholder(args[1]):
        package = args[1].split("<")[0].rstrip(".")
        if importlib.util.find_spec(package) is None:
            raise CommandError(f"python -m {args[1]}: no package {package}")
        return "parsed"
    if args[:1] == ["-m"] and len(args) >= 2:
        if importlib.util.find_spec(args[1]) is None:
            raise CommandError(f"python -m {args[1]}: no such module")
        return "parsed"
    _check_paths(args[:1], set())
    return "parsed"


@functools.cache
def _compose_services() -> set[str]:
    names: set[str] = set()
    for path in ROOT.glob("compose*.yaml"):
        names |= set((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("services", {}))
    return names


COMPOSE_VERBS = {"up", "ps", "logs", "exec", "run", "restart", "kill", "build", "down", "pull"}


def check_docker(args: list[str]) -> str:
    if args[:1] != ["compose"]:
        return "allowed: " + DOCKER_REASON
    if len(args) < 2 or args[1] not in COMPOSE_VERBS:
        raise CommandError(f"docker compose: unknown verb in {args}")
    verb, rest = args[1], args[2:]
    takes_value = {"-s", "--signal", "-u", "-P", "-t", "-f"}
    names: list[str] = []
    skip = False
    for word in rest:
        if skip:
            skip = False
        elif word in takes_value and verb != "logs":
            skip = True
        elif not word.startswith("-"):
            names.append(word)
            if verb in ("exec", "run"):
                break  # after the service comes the command it runs
    unknown = [n for n in names if n not in _compose_services()]
    if unknown:
        raise CommandError(f"docker compose {verb}: no service {unknown}")
    return "parsed: " + DOCKER_REASON


def check(words: list[str], tmp_path: Path, template: bool = False) -> str:
    program, args = words[0], words[1:]
    if program == ".":
        return "allowed: sources a generated secret of an installation"
    if program in ("gridzero", ".venv/bin/gridzero"):
        return check_gridzero(args, tmp_path, template)
    if program == "./run.sh":
        return check_run_sh(args, tmp_path, template)
    if program in ("python", "python3", ".venv/bin/python"):
        return check_python(args)
    if program in (".venv/bin/pytest", ".venv/bin/ruff", ".venv/bin/mypy"):
        _check_paths([w for w in args if not w.startswith("-")], set())
        return "parsed"
    if program == "docker":
        return check_docker(args)
    if program == "cp":
        sources = [w for w in args if not w.startswith("-")][:-1]
        _check_paths(sources, set())
        for source in sources:
            if not (ROOT / source).exists():
                raise CommandError(f"cp: {source} does not exist in the repository")
        return "parsed"
    if program.startswith(("$", "../")):
        return "allowed: a tool or variable outside this repository (docs/docker.md)"
    if program in CANNOT_RUN_HERE:
        return "allowed: " + CANNOT_RUN_HERE[program]
    raise CommandError(f"{program!r}: not run, not parsed and not in CANNOT_RUN_HERE")


COMMANDS_IN_DOCS = doc_commands()


def test_the_docs_have_commands() -> None:
    """The extraction itself: it must find the README's and the docs' commands."""
    texts = {c.text for c in COMMANDS_IN_DOCS}
    assert "./run.sh up" in {t.split("#")[0].strip() for t in texts}
    assert any(t.startswith("gridzero credentials init") for t in texts)
    assert any(t.startswith("docker compose up -d") for t in texts)
    assert len(COMMANDS_IN_DOCS) > 40


@pytest.mark.parametrize("command", COMMANDS_IN_DOCS, ids=str)
def test_every_doc_command_works_as_written(command: DocCommand, tmp_path: Path) -> None:
    if command.text.startswith("#!"):
        # a script for the device (docs/docker.md): its syntax is checked, it is not run
        done = subprocess.run(
            ["sh", "-n"], input=command.text, text=True, capture_output=True, check=False
        )
        assert done.returncode == 0, f"{command.path}:{command.line}: {done.stderr}"
        return
    for words in simple_commands(command.text):
        if command.in_block and words[0] == "gridzero":
            # a fresh clone has no `gridzero` on PATH (issue 21: "command not found")
            raise AssertionError(f"{command}\n  write .venv/bin/gridzero or ./run.sh")
        try:
            check(words, tmp_path, is_template(command.text))
        except CommandError as exc:
            raise AssertionError(f"{command}\n  {' '.join(words)}: {exc}") from None


@pytest.mark.parametrize(
    ("words", "wrong"),
    [
        (["gridzero", "bench", "--profiles", "x"], "no option --profiles"),
        (["gridzero", "frobnicate"], "no subcommand"),
        (["gridzero", "run", "bmss", "--check"], "no service"),
        (["./run.sh", "start"], "./run.sh has no"),
        (["docker", "compose", "logs", "-f", "controler"], "no service"),
        (["cp", ".env.sample", ".env"], "does not exist"),
        (["gridzero", "faults", "--report", "docs/nothing/here.md"], "no such file"),
        (["frob", "--x"], "not in CANNOT_RUN_HERE"),
        (["gridzero", "decode", "r48", "not-a-frame"], "exit 2"),
    ],
)
def test_a_wrong_command_is_caught(words: list[str], wrong: str, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=re.escape(wrong)):
        check(words, tmp_path)
