"""Apptainer behind one small class: pure argv builders and output parsers, plus thin runners.

The `*_argv` methods and `parse_*` functions are pure and unit-tested on pasted output;
the methods that run something go through `hpcml.runner` and raise BuildError/CatalogError
with the tail of apptainer's output.

Example:

    app = Apptainer(LocalRunner())
    app.run_build("/tmp/x/torch.def", "/tmp/x/torch.sif", flags=["--fakeroot"], cwd=root)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from hpcml.errors import BuildError, CatalogError, HpcmlError
from hpcml.clients.runner import Completed, Runner


#: What of the builder's environment `apptainer build` gets (issue 12: build logs and
#: images never hold the builder's environment): where to find programs, who and where the
#: builder is, the locale, Apptainer's own settings and the proxies a bootstrap downloads
#: through. `%setup` (when a lab allows it) sees only these; `%post` gets Apptainer's clean one.
BUILD_ENV_KEEP = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
                            "XDG_RUNTIME_DIR", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY",
                            "HTTPS_PROXY", "NO_PROXY"})
#: Prefixes of Apptainer's settings (APPTAINER_TMPDIR, APPTAINER_CACHEDIR, …); the
#: `*ENV_` forms, which would set variables inside the build, are left out.
BUILD_ENV_PREFIXES = ("APPTAINER_", "SINGULARITY_")


def build_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment `apptainer build` runs with: `environ` filtered by BUILD_ENV_KEEP
    and BUILD_ENV_PREFIXES.

    >>> build_environment({"PATH": "/bin", "AWS_SECRET_ACCESS_KEY": "x", "APPTAINERENV_A": "1"})
    {'PATH': '/bin'}
    """
    return {k: v for k, v in environ.items()
            if k in BUILD_ENV_KEEP or (k.startswith(BUILD_ENV_PREFIXES) and not k.startswith(("APPTAINERENV_",
                                                                                                "SINGULARITYENV_")))}


class Apptainer:
    """argv builders and runners for one apptainer (or singularity) binary."""

    def __init__(self, runner: Runner, binary: str = "apptainer"):
        self.runner = runner
        self.binary = binary

    # ---- pure argv builders -------------------------------------------------------

    def build_argv(
        self, def_path: str, out_sif: str, flags: Sequence[str] = (), binds: Sequence[str] = (),
        build_args: Sequence[tuple[str, str]] = (),
    ) -> list[str]:
        """`apptainer build --force [flags] [--bind b]… [--build-arg NAME=VALUE]… OUT DEF`.

        --force because a localimage child otherwise keeps its parent's value of every
        label both define (org.hpcml.key…); OUT is always a fresh path, so nothing is overwritten.
        """
        argv = [self.binary, "build", "--force", *flags]
        for bind in binds:
            argv += ["--bind", bind]
        for name, value in build_args:
            argv += ["--build-arg", f"{name}={value}"]
        return argv + [out_sif, def_path]

    def exec_argv(
        self,
        sif: str,
        command: Sequence[str],
        flags: Sequence[str] = (),
        binds: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        """`apptainer exec [flags] [--bind b]… [--env K=V]… SIF COMMAND…`."""
        argv = [self.binary, "exec", *flags]
        for bind in binds:
            argv += ["--bind", bind]
        for key, value in (env or {}).items():
            argv += ["--env", f"{key}={value}"]
        return argv + [sif, *command]

    def version_argv(self) -> list[str]:
        return [self.binary, "--version"]

    def inspect_labels_argv(self, sif: str) -> list[str]:
        return [self.binary, "inspect", "--json", "--labels", sif]

    def sign_argv(self, sif: str, key: str) -> list[str]:
        """Sign with a PEM private key (non-interactive, unlike PGP keyrings)."""
        return [self.binary, "sign", "--key", key, sif]

    def verify_argv(self, sif: str, key: str) -> list[str]:
        """Verify against a PEM public key."""
        return [self.binary, "verify", "--key", key, sif]

    def sif_list_argv(self, sif: str) -> list[str]:
        """`apptainer sif list SIF`: the partitions (descriptors) of a SIF and their offsets."""
        return [self.binary, "sif", "list", sif]

    # ---- runners ------------------------------------------------------------------

    def version(self) -> str:
        """The version number, e.g. '1.4.5'. Raises HpcmlError when apptainer cannot run."""
        done = self.runner.run(self.version_argv(), timeout=60)
        if not done.ok:
            raise HpcmlError(f"{self.binary} --version failed (exit {done.returncode}):\n{done.tail()}")
        return parse_version(done.stdout)

    def build(
        self,
        def_path: str,
        out_sif: str,
        *,
        flags: Sequence[str] = (),
        binds: Sequence[str] = (),
        cwd: str | None = None,
        log_path: str | None = None,
        build_args: Sequence[tuple[str, str]] = (),
        pass_fds: Sequence[int] = (),
    ) -> Completed:
        """Run a build and return what happened; the caller decides. With `log_path`, the
        build's output is appended there as it comes (stdout is then empty, stderr its end)."""
        argv = self.build_argv(def_path, out_sif, flags, binds, build_args)
        if log_path is not None:
            return self.runner.run_logged(argv, log_path=log_path, cwd=cwd, exact_env=build_environment(os.environ),
                                          pass_fds=pass_fds)
        return self.runner.run(argv, cwd=cwd)

    def inspect_labels(self, sif: str) -> dict[str, str]:
        done = self.runner.run(self.inspect_labels_argv(sif), timeout=120)
        if not done.ok:
            raise CatalogError(f"cannot inspect {sif}:\n{done.tail()}")
        return parse_labels(done.stdout)

    def sign(self, sif: str, key: str) -> None:
        done = self.runner.run(self.sign_argv(sif, key), timeout=600)
        if not done.ok:
            raise BuildError(f"signing {sif} with {key} failed:\n{done.tail()}")

    def sif_partitions(self, sif: str) -> list[SifPartition]:
        """The data objects of `sif` (`apptainer sif list`); CatalogError when it is no SIF."""
        done = self.runner.run(self.sif_list_argv(sif), timeout=120)
        if not done.ok:
            raise CatalogError(f"cannot list the partitions of {sif}:\n{done.tail(5)}")
        return parse_sif_list(done.stdout)

    def verify(self, sif: str, key: str) -> None:
        """Raise CatalogError unless `sif` carries a valid signature by `key`."""
        done = self.runner.run(self.verify_argv(sif, key), timeout=600)
        if not done.ok:
            raise CatalogError(
                f"signature check failed for {sif} (key {key}); signatures are required "
                f"by the configuration (require_signatures):\n{done.tail(5)}"
            )


@dataclass(frozen=True)
class SifPartition:
    """One data object of a SIF: `kind` as `sif list` prints it, e.g. 'FS (Squashfs/*System/amd64)'."""

    id: int
    start: int
    end: int
    kind: str

    @property
    def primary_squashfs(self) -> bool:
        """The image's root file system: a squashfs partition marked primary (`*System`)."""
        return self.kind.startswith("FS (Squashfs/*System")


_SIF_ROW = re.compile(r"^\s*(\d+)\s*\|[^|]*\|[^|]*\|\s*(\d+)-(\d+)\s*\|\s*(.+?)\s*$")


def parse_sif_list(text: str) -> list[SifPartition]:
    """Rows of `apptainer sif list` (`ID |GROUP |LINK |SIF POSITION (start-end) |TYPE`)."""
    parts = []
    for line in text.splitlines():
        match = _SIF_ROW.fullmatch(line)
        if match:
            ident, start, end, kind = match.groups()
            parts.append(SifPartition(int(ident), int(start), int(end), kind))
    return parts


_VERSION = re.compile(r"(?:apptainer|singularity)(?:-ce)? version (\S+)", re.IGNORECASE)


def parse_version(text: str) -> str:
    """'apptainer version 1.4.5-1' → '1.4.5-1'."""
    match = _VERSION.search(text)
    if not match:
        raise HpcmlError(f"unrecognised apptainer --version output: {text.strip()[:200]!r}")
    return match.group(1)


def parse_labels(text: str) -> dict[str, str]:
    """Labels from `apptainer inspect --json --labels` (attributes.labels; null when none)."""
    try:
        data = json.loads(text)
        labels = data["data"]["attributes"]["labels"] or {}
    except (ValueError, KeyError, TypeError) as err:
        raise CatalogError(f"unrecognised apptainer inspect output ({err}): {text[:200]!r}") from None
    return {str(k): str(v) for k, v in labels.items()}
