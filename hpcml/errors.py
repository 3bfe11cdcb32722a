"""The one error family of hpcml. Only hpcml/cli maps these to exit codes."""

from __future__ import annotations

from dataclasses import dataclass


class HpcmlError(Exception):
    """Base of every error a user can act on. `exit_code` is what the CLI exits with."""

    exit_code = 1


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a spec file, located as file:line:col (1-based)."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class SpecError(HpcmlError):
    """The workflow file is invalid. Carries every problem found, not only the first."""

    exit_code = 2

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.file, d.line, d.col))
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class ConfigError(HpcmlError):
    """The configuration (file, environment or flags) is invalid."""

    exit_code = 2


class BuildError(HpcmlError):
    """An image could not be built."""


class CatalogError(HpcmlError):
    """The image catalog refused an operation (missing, read-only, corrupt, unsigned)."""


class SubmitError(HpcmlError):
    """Jobs could not be submitted or controlled."""


class RemoteError(HpcmlError):
    """A remote (SSH) operation failed."""


class RemoteDetached(RemoteError):
    """Watching a remote run was stopped (Ctrl-C); the run goes on on the cluster."""

    exit_code = 130

    def __init__(self, remote: str, run_id: str | None):
        self.remote, self.run_id = remote, run_id
        if run_id is None:
            super().__init__(
                f"interrupted while submitting; what was submitted goes on on {remote}: "
                f"`hpcml -r {remote} status` follows it, rerunning `hpcml -r {remote} run` submits the "
                "rest (jobs already queued are found by name, not submitted twice)"
            )
            return
        super().__init__(
            f"stopped watching; run {run_id} goes on on {remote}: follow it with "
            f"`hpcml -r {remote} status {run_id}`, stop it with `hpcml -r {remote} cancel {run_id}`"
        )


class StateError(HpcmlError):
    """The run directory is missing, locked or inconsistent."""


class InitError(HpcmlError):
    """`hpcml init` refused: an unknown template, or a file it would write exists."""


class RunInterrupted(HpcmlError):
    """`hpcml run` was interrupted (Ctrl-C, SIGTERM, SIGHUP): what became of the run, as facts.

    `submitted` counts the jobs this run had submitted before the interrupt; `executor` is
    the executor's name ("" when none was chosen yet); `tasks_cancelled` says whether the
    run's tasks were cancelled (an executor that is not detached, such as the local one,
    takes its tasks down with it). The message follows from these facts alone.
    """

    exit_code = 130

    def __init__(self, *, submitted: int, executor: str, tasks_cancelled: bool, run_id: str | None = None):
        self.submitted = submitted
        self.executor = executor
        self.tasks_cancelled = tasks_cancelled
        self.run_id = run_id
        super().__init__(self._message())

    def _message(self) -> str:
        if self.submitted == 0:
            return "interrupted before anything was submitted; rerun to start again"
        if self.tasks_cancelled:
            return "interrupted: the run's tasks were cancelled; `hpcml status` shows them, a rerun resumes"
        jobs = "SLURM jobs" if self.executor == "slurm" else f"{self.executor} jobs"
        return f"interrupted: the {jobs} keep running; `hpcml status` follows them, `hpcml cancel` stops them"
