"""No secret in the repository or in the image.

Scans every file git tracks or would track (not ignored) for things that look like
passwords, password hashes or keys, checks that the generated secrets are git-ignored, and
that the Dockerfile copies nothing secret (the .dockerignore allow-list keeps secrets/,
the broker's passwd and .env out of the build context).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PATTERNS = {
    "mosquitto password hash": re.compile(r"\$[67]\$\d+\$[A-Za-z0-9+/=]{8,}\$[A-Za-z0-9+/=]{20,}"),
    "console password hash": re.compile(
        r"pbkdf2_sha256\$\d+\$[A-Za-z0-9+/=]{8,}\$[A-Za-z0-9+/=]{20,}"
    ),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "password assignment": re.compile(
        r"(?i)(?<![a-z])(password|passwd|secret|token|api_?key)\w*\s*[=:]\s*['\"]?"
        r"(?=[A-Za-z_\-+/=]*[0-9])([A-Za-z0-9_\-+/=]{16,})(?![\w(.\[])"
    ),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
}
# what matches but is not a secret: placeholders and code that handles secrets
ALLOWED = re.compile(
    r"\.\.\.|<[a-z_ -]+>|\{[a-z_.]*\}|not-the-password|CONSOLE_PASSWORD_FILE|"
    r"telnet-console-password"
)


def _files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def _text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data[:4096]:
        return None
    return data.decode("utf-8", "replace")


def test_no_secret_in_any_repository_file() -> None:
    files = _files()
    assert len(files) > 50
    found = []
    for path in files:
        text = _text(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for what, pattern in PATTERNS.items():
                match = pattern.search(line)
                if match and not ALLOWED.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()[:120]}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "line",
    [
        # split so that this file does not hold what it looks for
        "mosquitto:$7$101$" + "c2FsdHNhbHRzYWx0$ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGlnZXN0",
        "GRIDZERO_PASSWORD_HASH=pbkdf2_sha256$600000$" + "c2FsdHNhbHQ=$ZGlnZXN0ZGlnZXN0ZGlnZXN0",
        "GRIDZERO_MQTT__PASSWORD=" + "Zq3v9kLmN0pQrStUvWxYz1",
        "-----BEGIN OPENSSH " + "PRIVATE KEY-----",
        'api_key: "' + 'AbCdEfGhIjKl3nOpQrStUv"',
        "token=" + "ghp_" + "a" * 36,
    ],
)
def test_the_scanner_finds_secrets(line: str) -> None:
    assert any(p.search(line) for p in PATTERNS.values())
    assert not ALLOWED.search(line)


def test_generated_secrets_are_git_ignored() -> None:
    for name in (
        "secrets/bms.env",
        "secrets/telnet-console-password.txt",
        "mosquitto/config/passwd",
        ".env",
        "data/shunt/shunt.json",
    ):
        done = subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT, check=False)
        assert done.returncode == 0, f"{name} is not git-ignored"
    tracked = subprocess.run(
        ["git", "ls-files", "secrets", "mosquitto/config/passwd", "data"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert tracked == ""


def test_dockerfile_copies_nothing_secret() -> None:
    dockerfiles = [*sorted(ROOT.glob("services/*/Dockerfile")), ROOT / "tools" / "Dockerfile"]
    copies = [
        line.split()[1:-1]
        for dockerfile in dockerfiles
        for line in dockerfile.read_text(encoding="utf-8").splitlines()
        if line.strip().upper().startswith(("COPY ", "ADD "))
    ]
    assert copies
    for sources in copies:
        for source in sources:
            if source.startswith("--"):
                continue
            assert not re.search(r"secret|passwd|\.env|mosquitto|data/", source), source
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [r.strip() for r in ignore if r.strip() and not r.startswith("#")]
    # an allow-list: everything is excluded, then only what the image needs
    assert rules[0] == "*"
    allowed = [r[1:] for r in rules if r.startswith("!")]
    assert not any(re.search(r"secret|passwd|\.env|^data|mosquitto", a) for a in allowed), allowed


def test_image_context_holds_no_secret_shaped_file() -> None:
    # what the allow-list lets into the image: the package and three files
    for path in (ROOT / "gridzero").rglob("*"):
        if path.is_file():
            assert not re.search(r"\.env$|passwd$|secret", path.name), path
