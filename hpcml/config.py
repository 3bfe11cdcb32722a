"""Settings: built-in defaults < lab TOML < user TOML < HPCML_* environment < flags.

Every setting is one field of `Settings`, declared once with its kind (how text from a
file or the environment is parsed) and a one-line doc. Adding a setting is adding a field:
the TOML key, the environment variable (`HPCML_` + upper-case name) and the error listing
the allowed keys all follow from it.

Example:

    settings = config.load({"build_jobs": 4})
    settings.catalogs   # ('/home/me/.cache/hpcml/images',)
"""

from __future__ import annotations

import os
import shlex
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from hpcml.errors import ConfigError
from hpcml.remote.settings import Remote, parse_remotes
# The checker reads the configuration only for a workflow of more than MIN_MAX_TASKS tasks,
# so `validate` of an ordinary workflow stays as fast as without settings.
from hpcml.spec.rules import DEFAULT_MAX_TASKS, MIN_MAX_TASKS

SITE_CONFIG = "/etc/hpcml/config.toml"
ENV_PREFIX = "HPCML_"


def _f(default: Any, kind: str, doc: str, choices: tuple[str, ...] = ()) -> Any:
    return field(default=default, metadata={"kind": kind, "doc": doc, "choices": choices})


@dataclass(frozen=True)
class Settings:
    """The resolved configuration. Paths are absolute (`~` expanded), lists are tuples.

    `sources` lists the configuration files that were read, for messages.
    """

    catalogs: tuple[str, ...] = _f(
        (), "paths", "image catalogs, searched in order; new images go to the first writable one"
    )
    cache_dir: str = _f("", "path", "per-user cache (verified-hash stamps); default ~/.cache/hpcml")
    apptainer: str = _f("apptainer", "str", "the apptainer (or singularity) binary")
    build_flags: tuple[str, ...] = _f((), "args", "extra flags for `apptainer build`, e.g. --fakeroot")
    build_binds: tuple[str, ...] = _f((), "binds", "bind mounts during builds (src[:dst[:opts]])")
    ca_bundle: str | None = _f(
        None, "ca", "CA bundle bound into builds; pip/requests/curl are pointed at it "
        "(default: the host's bundle when there is one; `none` turns it off)"
    )
    exec_flags: tuple[str, ...] = _f((), "args", "extra flags for `apptainer exec`, e.g. --userns")
    build_jobs: int = _f(2, "int", "images built in parallel")
    build_on: str = _f(
        "login", "choice", "where missing images are built: on this machine, or as SLURM jobs that the "
        "tasks depend on (docs/running.md)", ("login", "slurm")
    )
    build_partition: str | None = _f(None, "str", "build_on = slurm: the build jobs' partition (default: the cluster's)")
    build_time: str = _f("02:00:00", "str", "build_on = slurm: the build jobs' time limit (sbatch --time)")
    build_cpus: int = _f(4, "int", "build_on = slurm: CPUs per build job (mksquashfs uses them all)")
    build_mem: str = _f("16G", "str", "build_on = slurm: memory per build job (sbatch --mem)")
    build_sbatch_flags: tuple[str, ...] = _f(
        (), "args", "build_on = slurm: more sbatch flags for build jobs, e.g. --account=lab"
    )
    require_signatures: bool = _f(False, "bool", "refuse catalog images whose signature does not verify")
    signing_key: str | None = _f(None, "path", "private key (PEM) used to sign images on publish")
    verify_key: str | None = _f(None, "path", "public key (PEM) that signatures are verified against")
    lock_stale_after: int = _f(
        120, "int", "seconds without a heartbeat after which another host may break an image build's lock"
    )
    executor: str = _f("auto", "choice", "where tasks run", ("auto", "slurm", "local"))
    slurm_wait_s: int = _f(
        600, "int", "how long (seconds) hpcml waits for a slurmctld that does not answer, while "
        "submitting or following a run, before it gives up (jobs already queued keep running)"
    )
    sbatch_timeout_s: int = _f(
        120, "int", "how long (seconds) one sbatch may take before hpcml stops it and looks for the job by "
        "name (a controller that queued it but never answered); then it is adopted, or submitted again"
    )
    gpu_request: str = _f(
        "auto", "choice", "how GPUs are asked of SLURM", ("auto", "gres", "gpus-per-node")
    )
    local_gpus: tuple[str, ...] | None = _f(None, "list", "GPU ids the local executor hands out")
    local_cpus: int | None = _f(None, "int", "CPUs the local executor hands out (default: all)")
    local_mem_mb: int | None = _f(None, "int", "memory (MiB) the local executor hands out")
    notify_on: tuple[str, ...] = _f(
        (), "list", "events (finish, failure) a run notifies of when its workflow has no `notify:` section"
    )
    notify_webhook: str | None = _f(
        None, "str", "for notify_on: the NAME of the environment variable holding the webhook URL (a secret)"
    )
    notify_mail: str | None = _f(None, "str", "for notify_on: an address for SLURM's own mail")
    allow_setup: tuple[str, ...] = _f(
        (), "list", "image names whose hand-written %setup/%pre may run on the build host, as the "
        "builder (off for all by default; lock it in the lab file)"
    )
    max_tasks: int = _f(
        DEFAULT_MAX_TASKS, "tasks", "the most tasks a workflow may expand to (all steps together), checked before "
        "any matrix is expanded: a small file cannot cost a login node minutes and gigabytes (at least 1000)"
    )
    scan_on_publish: bool = _f(
        False, "bool", "scan every image right after it is published (SBOM + audit, docs/security.md#scanning)"
    )
    advisories: tuple[str, ...] = _f(
        (), "paths", "local vulnerability advisories for scans: OSV files, directories or .zip, "
        "or Debian security tracker JSON (docs/security.md#scanning)"
    )
    advisory_service: str = _f(
        "auto", "choice", "online advisory service pip-audit asks about Python packages during scans "
        "(auto: osv when no `advisories` are set, else off)", ("auto", "osv", "pypi", "off")
    )
    remotes: tuple[Remote, ...] = _f(
        (), "remotes", "clusters reachable over SSH, one [remotes.NAME] table each (docs/remote.md)"
    )
    sources: tuple[str, ...] = field(default=(), compare=False)
    locked: tuple[str, ...] = field(default=(), compare=False)  # keys the lab file locked


#: The lab file's (and only its) list of settings that no later layer may change.
LOCK_KEY = "locked"


def setting_names() -> list[str]:
    """The keys a configuration file may hold (also the flag names of `load(overrides)`)."""
    return [f.name for f in fields(Settings) if f.name not in ("sources", "locked")]


def describe() -> list[tuple[str, str, str, str]]:
    """(key, environment variable, kind, doc) for every setting, for `docs/` and `--help`."""
    return [
        (f.name, ENV_PREFIX + f.name.upper(), f.metadata["kind"], f.metadata["doc"])
        for f in fields(Settings)
        if f.name not in ("sources", "locked")
    ]


def load(overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Resolve the settings from every layer. `overrides` (flags) win; `None` values are unset.

    `env` defaults to os.environ; tests pass their own so nothing on the machine leaks in.
    Raises ConfigError naming the file/variable and the allowed keys or values.
    """
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    values: dict[str, Any] = {}
    sources: list[str] = []
    locked: tuple[str, ...] = ()
    for layer, path in enumerate(_config_files(env, home)):
        if path.is_file():
            data = _read_toml(path, home, lab=layer == 0)
            if layer == 0:
                locked = data.pop(LOCK_KEY, ())
            else:
                _refuse_locked(locked, data, str(path), sources)
            values.update(data)
            sources.append(str(path))
    for name in setting_names():
        var = ENV_PREFIX + name.upper()
        if var in env and env[var] != "":
            _refuse_locked(locked, {name: None}, var, sources)
            values[name] = _convert(name, env[var], var, home, base=None)
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in setting_names():
            raise ConfigError(_unknown(name, "flags"))
        _refuse_locked(locked, {name: None}, f"--{name.replace('_', '-')}", sources)
        values[name] = _convert(name, value, f"--{name.replace('_', '-')}", home, base=None)
    settings = replace(Settings(), **values, sources=tuple(sources), locked=locked)
    settings = _fill_defaults(settings, env, home)
    if "ca_bundle" not in values:
        settings = replace(settings, ca_bundle=host_ca_bundle())
    if root_without_privileged_apptainer():
        # Apptainer's privileged path fails here; what works is what any unprivileged user
        # gets: fakeroot builds and user-namespace containers (unless a layer said otherwise).
        if "build_flags" not in values:
            settings = replace(settings, build_flags=("--fakeroot",))
        if "exec_flags" not in values:
            settings = replace(settings, exec_flags=("--userns",))
    return settings


#: Where Debian/Ubuntu, RHEL-likes and others keep the system's trust store.
HOST_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")


def host_ca_bundle() -> str | None:
    """The host's CA bundle, if it has one: bound into builds by default, so that pip and
    curl in %post work behind TLS-intercepting proxies the host already trusts. It holds
    public certificates only, is not part of any image key, and is not kept in the image."""
    return next((p for p in HOST_CA_BUNDLES if os.path.isfile(p)), None)


#: Apptainer, run as root, takes its privileged path, which needs this capability.
CAP_SYS_RESOURCE = 24


def root_without_privileged_apptainer(status: str | None = None, uid: int | None = None) -> bool:
    """True for root lacking CAP_SYS_RESOURCE, as root is inside many containers and CI
    sandboxes: there `apptainer build` fails with "Requesting capability set …" unless given
    --fakeroot, and `apptainer exec` needs --userns. `status` is /proc/self/status's text."""
    if (os.geteuid() if uid is None else uid) != 0:
        return False
    if status is None:
        try:
            status = Path("/proc/self/status").read_text()
        except OSError:
            return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return not (int(line.split()[1], 16) >> CAP_SYS_RESOURCE) & 1
    return False


def _config_files(env: Mapping[str, str], home: Path) -> list[Path]:
    site = Path(env.get("HPCML_SITE_CONFIG") or SITE_CONFIG)
    if env.get("HPCML_CONFIG"):
        user = Path(env["HPCML_CONFIG"])
    else:
        xdg = env.get("XDG_CONFIG_HOME") or str(home / ".config")
        user = Path(xdg) / "hpcml" / "config.toml"
    return [site, user]


def _fill_defaults(settings: Settings, env: Mapping[str, str], home: Path) -> Settings:
    cache = settings.cache_dir or str(Path(env.get("XDG_CACHE_HOME") or home / ".cache") / "hpcml")
    catalogs = settings.catalogs or (str(Path(cache) / "images"),)
    return replace(settings, cache_dir=cache, catalogs=catalogs)


def _refuse_locked(locked: tuple[str, ...], data: Mapping[str, Any], where: str, sources: list[str]) -> None:
    """A layer after the lab file may not set a key the lab file locked."""
    for key in data:
        if key in locked:
            lab = sources[0] if sources else SITE_CONFIG
            raise ConfigError(f"{where}: {key} is locked by the lab configuration {lab} "
                              f"(its `{LOCK_KEY}` list); ask whoever runs the lab's hpcml to change it")


def _read_toml(path: Path, home: Path, lab: bool = False) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from err
    out: dict[str, Any] = {}
    for key, value in data.items():
        if lab and key == LOCK_KEY:
            out[key] = _locked_keys(value, path)
            continue
        if key not in setting_names():
            raise ConfigError(_unknown(key, str(path)))
        out[key] = _convert(key, value, f"{path}: {key}", home, base=path.parent)
    return out


def _locked_keys(value: Any, path: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: {LOCK_KEY}: expected a list of setting names, got {value!r}")
    for key in value:
        if key not in setting_names():
            raise ConfigError(_unknown(key, f"{path}: {LOCK_KEY}"))
    return tuple(value)


def _unknown(key: str, where: str) -> str:
    return f"{where}: unknown setting {key!r}; allowed: {', '.join(setting_names())}"


def _convert(name: str, value: Any, where: str, home: Path, base: Path | None) -> Any:
    """Parse one value (TOML value, environment text or flag) into the field's type."""
    meta = next(f.metadata for f in fields(Settings) if f.name == name)
    kind: str = meta["kind"]
    try:
        return _CONVERTERS[kind](value, home, base, meta["choices"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


def _path(value: Any, home: Path, base: Path | None) -> str:
    if not isinstance(value, (str, os.PathLike)) or str(value) == "":
        raise TypeError(f"expected a path, got {value!r}")
    text = str(value)
    if text == "~" or text.startswith("~/"):
        text = str(home) + text[1:]
    path = Path(text)
    # A relative path in a config file means: next to that file (as a lab admin would expect).
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return os.path.normpath(path)


def _str_list(value: Any, split: Callable[[str], list[str]]) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(split(value))
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int)) for v in value):
        return tuple(str(v) for v in value)
    raise TypeError(f"expected a list of strings, got {value!r}")


def _paths(value: Any, home: Path, base: Path | None, _c: tuple[str, ...]) -> tuple[str, ...]:
    items = _str_list(value, lambda s: [p for p in s.split(":") if p])
    return tuple(_path(p, home, base) for p in items)


def _args(value: Any, _h: Path, _b: Path | None, _c: tuple[str, ...]) -> tuple[str, ...]:
    args = _str_list(value, shlex.split)
    for arg in args:
        if "\n" in arg or "\0" in arg:
            raise ValueError(f"flag {arg!r} contains a newline or NUL")
    return args


def _binds(value: Any, home: Path, base: Path | None, _c: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for bind in _str_list(value, lambda s: [p for p in s.split(",") if p]):
        src, sep, rest = bind.partition(":")
        out.append(_path(src, home, base) + sep + rest)
    return tuple(out)


def _list(value: Any, _h: Path, _b: Path | None, _c: tuple[str, ...]) -> tuple[str, ...]:
    return _str_list(value, lambda s: [p.strip() for p in s.split(",") if p.strip()])


def _int(value: Any, _h: Path, _b: Path | None, _c: tuple[str, ...]) -> int:
    if isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise TypeError(f"expected an integer, got {value!r}") from None
    if number < 1:
        raise ValueError(f"expected a positive integer, got {number}")
    return number


def _tasks(value: Any, h: Path, b: Path | None, c: tuple[str, ...]) -> int:
    number = _int(value, h, b, c)
    if number < MIN_MAX_TASKS:
        raise ValueError(f"expected at least {MIN_MAX_TASKS}, got {number}")
    return number


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(value: Any, _h: Path, _b: Path | None, _c: tuple[str, ...]) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise TypeError(f"expected true or false, got {value!r}")


def _str(value: Any, _h: Path, _b: Path | None, _c: tuple[str, ...]) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected a non-empty string, got {value!r}")
    return value


def _choice(value: Any, _h: Path, _b: Path | None, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"got {value!r}; allowed: {', '.join(choices)}")
    return str(value)


def _path_kind(value: Any, home: Path, base: Path | None, _c: tuple[str, ...]) -> str:
    return _path(value, home, base)


def _ca(value: Any, home: Path, base: Path | None, _c: tuple[str, ...]) -> str | None:
    if isinstance(value, str) and value.strip().lower() == "none":
        return None  # turned off: no bundle even where the host has one
    return _path(value, home, base)


_CONVERTERS: dict[str, Callable[[Any, Path, Path | None, tuple[str, ...]], Any]] = {
    "paths": _paths,
    "path": _path_kind,
    "ca": _ca,
    "str": _str,
    "args": _args,
    "binds": _binds,
    "list": _list,
    "int": _int,
    "tasks": _tasks,
    "bool": _bool,
    "choice": _choice,
    "remotes": lambda value, home, base, _c: parse_remotes(value, home, base),
}
