"""The remote pieces that need no connection: settings, ~/.ssh/config resolution, the
remote command line (run through a real local shell), command translation, the sync's file
selection and the pid line of a submission."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from hpcml import config
from hpcml.clients.ssh import command_line
from hpcml.errors import ConfigError, RemoteError
from hpcml.remote.commands import pin_run, translate
from hpcml.remote.session import PID_MARK, _PidFilter, status_from_json
from hpcml.remote.settings import Remote, find, resolve
from hpcml.remote.sync import local_files

NASTY = ["a b", "it's", '"q"', "$HOME", "x;y", "`id`", "back\\slash", "new\nline", "", "*"]


def test_every_word_reaches_the_remote_shell_as_written(tmp_path: Path) -> None:
    # the remote end runs the line with `sh -c`, as sshd does with the user's shell
    line = command_line(["printf", "%s|", *NASTY], cwd=str(tmp_path / "d i r;$x"), env={"K": "v w;$x"})
    (tmp_path / "d i r;$x").mkdir()
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True).stdout
    assert out == "".join(w + "|" for w in NASTY)
    env_line = command_line(["sh", "-c", 'printf %s "$K"'], env={"K": "v w;$x 'q'"})
    assert subprocess.run(["sh", "-c", env_line], capture_output=True, text=True, check=True).stdout == "v w;$x 'q'"


def load(tmp_path: Path, text: str) -> config.Settings:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return config.load(env={"HOME": str(tmp_path), "HPCML_CONFIG": str(path), "HPCML_SITE_CONFIG": "/nonexistent"})


def test_remotes_table_is_strict(tmp_path: Path) -> None:
    s = load(tmp_path, '[remotes.c]\nhost = "h"\nport = 2200\ncatalogs = ["/lab"]\nexecutor = "slurm"\n'
                       'identity_file = "~/k"\n[remotes.c.env]\nHPCML_BUILD_JOBS = "4"\n')
    [r] = s.remotes
    assert (r.name, r.host, r.port, r.identity_file) == ("c", "h", 2200, str(tmp_path / "k"))
    assert r.remote_env() == {"HPCML_BUILD_JOBS": "4", "HPCML_CATALOGS": "/lab", "HPCML_EXECUTOR": "slurm"}
    with pytest.raises(ConfigError, match="unknown key 'hots'.*allowed: host"):
        load(tmp_path, '[remotes.c]\nhots = "h"\n')
    with pytest.raises(ConfigError, match="'host' is required"):
        load(tmp_path, '[remotes.c]\nuser = "me"\n')
    with pytest.raises(ConfigError, match="port number"):
        load(tmp_path, '[remotes.c]\nhost = "h"\nport = 0\n')
    with pytest.raises(ConfigError, match="HPCML_REMOTES.*configuration file"):
        config.load(env={"HOME": str(tmp_path), "HPCML_CONFIG": "/nonexistent", "HPCML_SITE_CONFIG": "/nonexistent",
                         "HPCML_REMOTES": "x"})
    with pytest.raises(ValueError, match="no remote 'x' is configured \\(configured: c\\)"):
        find(s.remotes, "x")


def test_ssh_config_is_honoured_and_table_values_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # paramiko expands IdentityFile's ~ itself
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(
        "Host jump\n  HostName j.example\n  User ju\n  Port 2201\n"
        "Host cl\n  HostName login.example\n  User me\n  Port 2222\n  IdentityFile ~/.ssh/lab\n  ProxyJump jump\n"
    )
    ep = resolve(Remote("c", "cl"), tmp_path)
    assert (ep.hostname, ep.user, ep.port, ep.identity_files) == ("login.example", "me", 2222, (str(tmp_path / ".ssh/lab"),))
    assert ep.known_hosts_name == "[login.example]:2222"
    assert ep.jump is not None and (ep.jump.hostname, ep.jump.user, ep.jump.port) == ("j.example", "ju", 2201)
    ep = resolve(Remote("c", "cl", user="other", port=22, proxy_jump="u@10.0.0.1:2", identity_file="/k"), tmp_path)
    assert (ep.user, ep.port, ep.identity_files, ep.known_hosts_name) == ("other", 22, ("/k",), "login.example")
    assert ep.jump is not None and (ep.jump.user, ep.jump.hostname, ep.jump.port, ep.jump.jump) == ("u", "10.0.0.1", 2, None)
    chain = resolve(Remote("c", "h", proxy_jump="a,b:3"), tmp_path)
    assert chain.jump is not None and chain.jump.hostname == "b" and chain.jump.jump is not None
    assert chain.jump.jump.hostname == "a"


def test_commands_map_local_paths_to_the_synced_copy(tmp_path: Path) -> None:
    def to_remote(d: Path) -> str:
        return f"/work root/{d.name}"

    cmd = translate(("run",), {"file": "wf.yaml", "executor": None, "watch": None}, tmp_path / "proj", to_remote, tty=True)
    assert cmd.argv == ("run", "/work root/proj/wf.yaml", "--detach") and cmd.watch
    cmd = translate(("run",), {"file": "wf.yaml", "executor": None, "watch": None, "only": ("a,b",), "start": (),
                               "until": (), "force": ("b",)}, tmp_path / "proj", to_remote, tty=False)
    assert cmd.argv == ("run", "/work root/proj/wf.yaml", "--detach", "--only", "a,b", "--force", "b")
    assert cmd.workflow == tmp_path / "proj" / "wf.yaml"
    cmd = translate(("status",), {"run": "R", "as_json": True, "directory": None, "workflow": None}, tmp_path / "p", to_remote, False)
    assert cmd.argv == ("status", "R", "--json", "-C", "/work root/p")
    cmd = translate(("logs",), {"target": "t/1", "follow": True, "run": None, "directory": None,
                                "workflow": "sub/w.yaml"}, tmp_path, to_remote, False)
    assert cmd.argv == ("logs", "t/1", "-f", "--workflow", "/work root/sub/w.yaml")
    cmd = translate(("retry",), {"run": None, "executor": None, "watch": None, "directory": None, "workflow": None},
                    tmp_path / "p", to_remote, tty=True)
    assert cmd.argv == ("retry", "--detach", "-C", "/work root/p") and cmd.watch and cmd.workflow is None
    assert cmd.where == ("-C", "/work root/p")  # followed by the directory, not synced
    assert pin_run(cmd, "R0").argv == ("retry", "R0", "--detach", "-C", "/work root/p")
    cmd = translate(("retry",), {"run": "R1", "executor": "slurm", "watch": False, "directory": None,
                                 "workflow": "sub/w.yaml"}, tmp_path, to_remote, tty=True)
    assert cmd.argv == ("retry", "R1", "--detach", "--executor", "slurm", "--workflow", "/work root/sub/w.yaml")
    assert not cmd.watch and pin_run(cmd, "R0") == cmd
    cmd = translate(("catalog", "show"), {"ref": "torch", "as_json": False}, tmp_path, to_remote, False)
    assert cmd.argv == ("catalog", "show", "torch")
    with pytest.raises(RemoteError, match="does not run with --remote; these do: run"):
        translate(("compile",), {}, tmp_path, to_remote, False)


def test_sync_sends_nothing_outside_the_directory_nor_state_nor_credentials(tmp_path: Path) -> None:
    root = tmp_path / "wf"
    for rel in ("workflow.yaml", "src/a.py", ".hpcml/runs/x", ".git/HEAD", ".env", "keys/id_ed25519", "__pycache__/c.pyc"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    (tmp_path / "outside.txt").write_text("secret")
    os.symlink(tmp_path / "outside.txt", root / "link-out")
    os.symlink(root / "src" / "a.py", root / "link-in")
    os.symlink(tmp_path, root / "dir-out")
    assert sorted(local_files(root)) == ["link-in", "src/a.py", "workflow.yaml"]


def test_the_pid_line_is_kept_out_of_the_output() -> None:
    got: list[bytes] = []
    pid: list[str] = []
    f = _PidFilter(got.append, pid)
    f(f"{PID_MARK} 4".encode())
    f(b"2\nhpcml: executor\n")
    f(b"more\n")
    assert pid == ["42"] and b"".join(got) == b"hpcml: executor\nmore\n"
    got2: list[bytes] = []
    pid2: list[str] = []
    _PidFilter(got2.append, pid2)(b"sh: not found\n")
    assert pid2 == [""] and got2 == [b"sh: not found\n"]


def test_status_json_round_trips() -> None:
    doc = {"run": "r1", "workflow": "w", "executor": "slurm", "finished": False, "ok": False, "counts": {},
           "tasks": [{"step": "s", "index": 0, "key": "k", "state": "running", "exit_code": None, "job": "7",
                      "detail": "", "attempt": 1}]}
    st = status_from_json(json.dumps(doc))
    assert st.run_id == "r1" and st.counts == {"running": 1} and not st.finished
    with pytest.raises(RemoteError, match="unreadable"):
        status_from_json("Traceback")
