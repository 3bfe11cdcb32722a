"""Which executor a run uses, and making it: the flag, the setting, else SLURM where sbatch
works, else the local executor.

Example:

    name, why = choose_executor(None, settings, Slurm())   # ("local", "sbatch is not installed; …")
    ex = make_executor(name, settings)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from hpcml.clients.runner import Runner
from hpcml.clients.slurm import Slurm
from hpcml.config import Settings
from hpcml.errors import SubmitError
from hpcml.executors.base import Executor
from hpcml.executors.local.executor import LocalExecutor
from hpcml.executors.slurm import SlurmExecutor


def choose_executor(
    flag: str | None, settings: Settings, slurm: Slurm, env: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """(executor name, why): the flag, else the `executor` setting, else SLURM where it is
    installed and configured — also while its controller does not answer (submission waits
    for it: a short outage must not put a sweep on the login node) — else local."""
    env = os.environ if env is None else env
    if flag:
        return flag, "chosen with --executor"
    if settings.executor != "auto":
        # The environment wins over the files (docs/configuration.md): name what decided.
        where = (f"HPCML_EXECUTOR={env['HPCML_EXECUTOR']}" if env.get("HPCML_EXECUTOR")
                 else f"`executor` in {', '.join(settings.sources) or 'the configuration'}")
        return settings.executor, f"set by {where}"
    state, why = slurm.controller()
    if state == "down":
        return "slurm", f"{why} now; waiting for it"
    return ("slurm", why) if state == "up" else ("local", f"{why}; running tasks on this machine")


def make_executor(
    name: str, settings: Settings, runner: Runner | None = None, on_message: Callable[[str], None] | None = None
) -> Executor:
    """The executor called `name` (slurm or local). `on_message` gets its notes to the user
    (SLURM: waiting for a controller that does not answer)."""
    if name == "slurm":
        return SlurmExecutor(Slurm(runner, sbatch_timeout_s=settings.sbatch_timeout_s), wait_s=settings.slurm_wait_s,
                             on_wait=on_message)
    if name == "local":
        return LocalExecutor.from_settings(settings)
    raise SubmitError(f"unknown executor {name!r}; allowed: slurm, local")
