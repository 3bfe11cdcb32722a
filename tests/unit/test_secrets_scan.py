"""The literal-secret detector (hpcml/spec/secrets_scan.py) and the checker's scan of an
image's parts (docs/security.md#secrets). Token-shaped strings here are fakes of the right
shape, built by concatenation so that this file itself holds none."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcml.errors import SpecError
from hpcml.spec import checker
from hpcml.spec import secrets_scan as scan

# Fakes of each shape (never real credentials), split so no scanner flags this file.
FAKES = {
    "an AWS access key id": "AKIA" + "IOSFODNN7EXAMPLE",
    "a GitHub token": "ghp_" + "a" * 36,
    "a GitLab token": "glpat-" + "b" * 20,
    "a Hugging Face token": "hf_" + "c" * 34,
    "a Slack token": "xoxb-" + "1234567890-abc",
    "an OpenAI-style API key": "sk-" + "d" * 40,
    "a Google API key": "AIza" + "e" * 35,
    "a private key": "-----BEGIN RSA " + "PRIVATE KEY-----",
    "a password in a URL (user:password@)": "https://alice:" + "s3cret@pypi.example.org/simple",
}


@pytest.mark.parametrize(("what", "text"), FAKES.items())
def test_each_token_shape_is_found(what: str, text: str) -> None:
    found = scan.scan_text(f"echo x\nrun --with {text} now\n")
    assert [f.what for f in found] == [what]
    assert found[0].start == len("echo x\nrun --with ")


@pytest.mark.parametrize("text", [
    "AKIA-not-a-key", "ghp_short", "hf_short", "task-abcdefghijklmnopqrstuvwxyz", "https://git@github.com/x/y.git",
    "https://user:${TOKEN}@host/x", "https://user:$TOKEN@host/x", "-----BEGIN CERTIFICATE-----", "CUDA_HOME=/usr/local/cuda",
    "export TOKEN_FILE=", "MY_KEY=\"$OTHER\"", "echo PWD=x",
])
def test_near_misses_are_not_secrets(text: str) -> None:
    assert scan.scan_text(text) == []


def test_a_marked_line_is_skipped_and_listed_as_waived() -> None:
    text = "A=1\nexport HF_TOKEN=x  # hpcml: not-a-secret\n"
    assert scan.scan_text(text) == []
    assert [f.what for f in scan.waived(text)] == ["HF_TOKEN=… (a literal value for a name that says secret)"]


@pytest.mark.parametrize(("name", "secret"), [
    ("GITHUB_TOKEN", True), ("AWS_SECRET_ACCESS_KEY", True), ("DB_PASSWORD", True), ("API_KEY", True), ("apikey", True),
    ("SSH_KEY", True), ("MY_SECRET_THING", True), ("db.password", True), ("org.example.api-token", True),
    ("PYTHONPATH", False), ("KEYBOARD", False), ("MONKEY", False), ("TOKENIZERS_PARALLELISM", False), ("PWD", False),
])
def test_names_that_say_secret(name: str, secret: bool) -> None:
    assert scan.secret_name(name) is secret


@pytest.mark.parametrize(("rel", "kind"), [
    ("id_rsa", "an SSH private key"), ("keys/id_ed25519", "an SSH private key"), (".netrc", "a .netrc (login passwords)"),
    ("conf/.env", "an environment file (.env)"), (".env.production", "an environment file (.env)"),
    (".git-credentials", "a Git credential store"), ("home/.docker/config.json", "a Docker credential file"),
    ("id_rsa.pub", None), (".env.example", None), ("env.py", None),
])
def test_credential_file_names(rel: str, kind: str | None) -> None:
    assert scan.file_name_finding(rel) == kind


def test_credential_json_and_binaries() -> None:
    sa = '{\n  "type": "service_account",\n  "private_key_id": "1"\n}\n'
    assert [f.what for f in scan.content_findings("sa.json", sa)] == [
        "credential JSON (a private key, client secret or refresh token)"]
    assert scan.content_findings("data.json", '{"a": 1}') == []
    assert scan.readable_text(b"\x7fELF\x00\x00" + b"AKIA" * 10) is None


HEAD = "hpcml: 1\nname: t\ndefaults: {image: i}\nsteps:\n  s: {run: 'true'}\nimages:\n  i:\n    from: scratch\n"


def diags(root: Path, body: str) -> list[str]:
    with pytest.raises(SpecError) as err:
        checker.loads(HEAD + body, "workflow.yaml", root=str(root))
    return [str(d) for d in err.value.diagnostics]


def test_an_image_is_scanned_part_by_part_with_positions(tmp_path: Path) -> None:
    (tmp_path / "req.txt").write_text("numpy\n--extra-index-url " + FAKES["a password in a URL (user:password@)"] + "\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "id_rsa").write_text(FAKES["a private key"] + "\n")
    (tmp_path / "app" / "big.bin").write_bytes(b"\0" + FAKES["a GitHub token"].encode())
    body = (f"    env: {{WANDB_API_KEY: abc123, OK: '{FAKES['a GitLab token']}'}}\n"
            f"    labels: {{note: '{FAKES['a Slack token']}'}}\n"
            f"    requirements: req.txt\n"
            f"    files: {{app: /opt/app}}\n"
            f"    post: |\n      echo {FAKES['an OpenAI-style API key']}\n")
    found = diags(tmp_path, body)
    expect = [
        "req.txt:2:19: literal secret: a password in a URL",
        "app/id_rsa:1:1: literal secret: a private key in app/id_rsa",
        "workflow.yaml:9:11: literal secret: WANDB_API_KEY in env of image 'i' has a literal value",
        "workflow.yaml:9:39: literal secret: a GitLab token in OK in env of image 'i'",
        "workflow.yaml:10:21: literal secret: a Slack token in label note of image 'i'",
        "workflow.yaml:12:13: literal secret: app/id_rsa in files of image 'i' is an SSH private key",
        "workflow.yaml:14:12: literal secret: an OpenAI-style API key in post of image 'i'",
    ]
    for line in expect:
        assert any(d.startswith(line) for d in found), (line, found)
    assert all("name the variable under the step's `secrets:`" in d for d in found)
    assert not any("big.bin" in d for d in found)  # binaries are not read


def test_too_large_files_are_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan, "MAX_SCAN_BYTES", 64)
    (tmp_path / "blob.txt").write_text("x" * 100 + FAKES["an AWS access key id"])
    checker.loads(HEAD + "    files: {blob.txt: /opt/blob.txt}\n", "workflow.yaml", root=str(tmp_path))


def test_a_step_env_secret_points_to_secrets(tmp_path: Path) -> None:
    text = HEAD.replace("  s: {run: 'true'}\n", "  s: {run: 'true', env: {HF_TOKEN: x}}\n")
    with pytest.raises(SpecError, match=r"workflow.yaml:5:26: literal secret: HF_TOKEN in env of step 's'"):
        checker.loads(text, "workflow.yaml", root=str(tmp_path))


def test_waived_findings_are_kept_on_the_image_for_plan(tmp_path: Path) -> None:
    wf = checker.loads(HEAD + "    env: {SORT_KEY: name}  # hpcml: not-a-secret\n", "workflow.yaml", root=str(tmp_path))
    assert wf.images["i"].not_secret == ("workflow.yaml:9:11: SORT_KEY in env of image 'i' has a literal value, "
                                         "and its name says secret",)


def test_plan_lists_every_waived_finding(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from hpcml.cli.app import main

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "settings.sh").write_text("SORT_KEY=name  # hpcml: not-a-secret\n")
    wf = tmp_path / "workflow.yaml"
    wf.write_text(HEAD.replace("  s: {run: 'true'}\n", "  s:\n    run: 'true'\n    env: {CACHE_KEY: v1}  # hpcml: not-a-secret\n")
                  + "    files: {conf: /opt/conf}\n")
    human = CliRunner().invoke(main, ["plan", str(wf)])
    assert human.exit_code == 0, human.output
    assert "Marked not-a-secret" in human.output
    assert "conf/settings.sh:1:1: SORT_KEY=" in human.output and "CACHE_KEY in env of step 's'" in human.output
    doc = json.loads(CliRunner().invoke(main, ["plan", str(wf), "--json"]).output)
    assert len(doc["images"][0]["not_secret"]) == 1 and len(doc["steps"][0]["not_secret"]) == 1
