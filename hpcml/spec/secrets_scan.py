"""Literal secrets where an image would keep them: the detector behind "secrets never
enter an image" (docs/security.md#secrets).

Pure functions over text and names; the checker (spec/images.py) calls them on an image's
env, labels, scripts, pip entries, requirements file, build arguments, hand-written
definition and the files it copies in, and reports each finding at its file:line:col.

Three kinds of evidence:

- a name that says secret (`GITHUB_TOKEN`, `DB_PASSWORD`, `AWS_SECRET_ACCESS_KEY`, `API_KEY`)
  given a literal value (`secret_name`; in scripts `NAME=value` assignments);
- a value shaped like a well-known credential: cloud access key ids, Git hosting and
  model-hub tokens, chat and AI API keys, private-key PEM blocks, `user:password@` in a URL
  (`scan_text`);
- a file that is one by its name or content: SSH private keys, `.netrc`, `.env`,
  `.git-credentials`, `.pypirc`, cloud credential JSON (`file_findings`).

A line that carries the marker `hpcml: not-a-secret` (in a YAML comment, a shell comment,
or anywhere on the line of a scanned file) is a declared false positive: the finding is
waived, and `hpcml plan` lists it.

>>> [f.what for f in scan_text("export HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyzABCDEFGH")]
['HF_TOKEN=… (a literal value for a name that says secret)', 'a Hugging Face token']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

#: The marker that waives the findings of its line.
NOT_A_SECRET = "hpcml: not-a-secret"
#: Files larger than this are not read for secrets (their names still are).
MAX_SCAN_BYTES = 1 << 20
#: A file whose first block holds a NUL byte is binary and not read.
BINARY_SNIFF = 8192


@dataclass(frozen=True)
class Finding:
    """One literal secret: what it looks like and where it starts in the scanned text."""

    what: str
    start: int = 0


#: Well-known credential shapes, each with what it is called in messages.
TOKEN_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((what, re.compile(rx)) for what, rx in (
    ("an AWS access key id", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b"),
    ("a GitHub token", r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    ("a GitHub token", r"\bgithub_pat_[A-Za-z0-9_]{22,}\b"),
    ("a GitLab token", r"\bglpat-[A-Za-z0-9_-]{20,}\b"),
    ("a Hugging Face token", r"\bhf_[A-Za-z0-9]{30,}\b"),
    ("a Slack token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"),
    ("an OpenAI-style API key", r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}\b"),
    ("a Google API key", r"\bAIza[0-9A-Za-z_-]{35}\b"),
    ("a Stripe secret key", r"\b[sr]k_live_[0-9A-Za-z]{20,}\b"),
    ("an npm token", r"\bnpm_[A-Za-z0-9]{36}\b"),
    ("a PyPI token", r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{20,}"),
    ("a private key", r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----"),
    # scheme://user:password@host; a password that is a variable ($X, ${X}) is not literal.
    ("a password in a URL (user:password@)", r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@'\"]+:(?!\$)[^\s/@'\"]+@"),
))

#: Names that say secret: a part (between `_`, `-` or `.`) such as TOKEN, SECRET, PASSWORD.
_SECRET_PART = re.compile(
    r"(?:^|[_.-])(?:TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|PWD|APIKEY|API[_.-]KEY|ACCESS[_.-]KEY|PRIVATE[_.-]KEY"
    r"|SECRET[_.-]KEY|AUTH[_.-]TOKEN|CREDENTIALS?)(?:$|[_.-])|[_.-]KEY$",
    re.IGNORECASE,
)
#: Names that end in a secret word but hold none (PWD is the working directory).
_NOT_SECRET_NAMES = frozenset({"PWD", "OLDPWD", "GPG_KEY_ID", "SSH_AUTH_SOCK", "KEY_ID"})

# NAME=value in a script: `export X_TOKEN=abc`, `X_TOKEN="abc"`; `$VAR`/`$(…)` are not literal.
_ASSIGNMENT = re.compile(r"(?<![\w$])([A-Za-z_][A-Za-z0-9_]*)=(['\"]?)(?![$`'\"\s])([^\s'\"]+)")


def secret_name(name: str) -> bool:
    """Whether a variable or label name says it holds a secret (`*_TOKEN`, `*_KEY`,
    `*PASSWORD*`, `*SECRET*`, `API_KEY`, …).

    >>> [secret_name(n) for n in ("WANDB_API_KEY", "db.password", "HF_TOKEN", "PYTHONPATH", "PWD")]
    [True, True, True, False, False]
    """
    if name.upper() in _NOT_SECRET_NAMES:
        return False
    upper = name.upper()
    return bool(_SECRET_PART.search(upper)) or "PASSWORD" in upper or "SECRET" in upper


def literal_value(value: str) -> bool:
    """Whether `value` is a literal, not empty and not a reference to a variable (`$X`)."""
    text = value.strip()
    return bool(text) and not re.fullmatch(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", text)


def scan_text(text: str) -> list[Finding]:
    """Credential shapes and `SECRET_NAME=literal` assignments in `text` (a script, a value,
    a requirements file), skipping lines that carry NOT_A_SECRET. Findings are in order."""
    found: list[Finding] = []
    offset = 0
    for line in text.splitlines(keepends=True):
        if NOT_A_SECRET not in line:
            for what, pattern in TOKEN_SHAPES:
                for m in pattern.finditer(line):
                    found.append(Finding(what, offset + m.start()))
            for m in _ASSIGNMENT.finditer(line):
                if secret_name(m.group(1)) and literal_value(m.group(3)):
                    found.append(Finding(f"{m.group(1)}=… (a literal value for a name that says secret)", offset + m.start()))
        offset += len(line)
    return sorted(found, key=lambda f: f.start)


def waived(text: str) -> list[Finding]:
    """The findings on lines marked NOT_A_SECRET (what `hpcml plan` lists as waived)."""
    return [f for f in scan_text(text.replace(NOT_A_SECRET, "")) if NOT_A_SECRET in _line_at(text, f.start)]


def _line_at(text: str, offset: int) -> str:
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return text[start:] if end < 0 else text[start:end]


# ---- files ---------------------------------------------------------------------------------

#: File names that are credentials whatever they hold.
SECRET_FILE_NAMES = {
    ".netrc": "a .netrc (login passwords)", "_netrc": "a .netrc (login passwords)",
    ".git-credentials": "a Git credential store", ".pypirc": "a .pypirc (package index passwords)",
    ".npmrc": "an .npmrc (registry tokens)", ".dockercfg": "a Docker credential file",
    "credentials": "a cloud credentials file", ".boto": "a cloud credentials file",
    ".pgpass": "a PostgreSQL password file", ".my.cnf": "a MySQL option file (passwords)",
    "id_rsa": "an SSH private key", "id_dsa": "an SSH private key", "id_ecdsa": "an SSH private key",
    "id_ed25519": "an SSH private key", "id_ecdsa_sk": "an SSH private key", "id_ed25519_sk": "an SSH private key",
}
_ENV_FILE = re.compile(r"\.env(?:\..+)?")
# Cloud service-account / application-default credential JSON.
_CREDENTIAL_JSON = re.compile(r"\"private_key\"\s*:|\"type\"\s*:\s*\"(?:service_account|authorized_user)\"|"
                              r"\"client_secret\"\s*:|\"refresh_token\"\s*:")


def file_name_finding(rel: str) -> str | None:
    """What a file is by its name alone (`id_rsa`: an SSH private key), or None."""
    name = PurePosixPath(rel).name
    if name in SECRET_FILE_NAMES:
        return SECRET_FILE_NAMES[name]
    if _ENV_FILE.fullmatch(name) and name not in (".env.example", ".env.sample", ".env.template"):
        return "an environment file (.env)"
    if PurePosixPath(rel).parts[-2:] == (".docker", "config.json"):
        return "a Docker credential file"
    return None


def readable_text(data: bytes) -> str | None:
    """`data` as text to scan, or None for a binary (a NUL in its first block)."""
    if b"\0" in data[:BINARY_SNIFF]:
        return None
    return data.decode("utf-8", errors="replace")


def content_findings(rel: str, text: str) -> list[Finding]:
    """Findings in a copied file's text: credential shapes, assignments in `.sh`/`.env`-like
    text, and credential JSON (`"private_key": …`)."""
    found = scan_text(text)
    if rel.endswith(".json"):
        for m in _CREDENTIAL_JSON.finditer(text):
            if NOT_A_SECRET not in _line_at(text, m.start()):
                found.append(Finding("credential JSON (a private key, client secret or refresh token)", m.start()))
                break
    return sorted(found, key=lambda f: f.start)


def line_col(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of `offset` in `text`."""
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1
