"""One job script per step (or array chunk): sbatch directives + a bash wrapper. Pure.

The same script serves SLURM (`sbatch script`) and the local executor (`bash script` with
HPCML_EXECUTOR=local and the SLURM_* variables a job would see), so both share one behaviour:

- the task index comes from HPCML_TASK_INDEX (an override), else SLURM_ARRAY_TASK_ID + the
  chunk offset, else 0; its key from the step's manifest (`index key` per line);
- a task whose `exitcode` is already 0 is not run again (a duplicate job is harmless);
- the container runs in the background in its own process group and is `wait`ed, so
  TERM/INT and the checkpoint signal reach the whole task;
- on the checkpoint signal, while the attempt budget (`retries`) lasts, the task requeues
  itself (`scontrol requeue`, array-task aware; locally: exit REQUEUE_EXIT and a `requeue`
  marker);
- a plain failure is retried in the same allocation while the budget lasts;
- every step's job is `--requeue`: a preemption (PreemptMode=REQUEUE) or a node failure
  runs the task again; the wrapper tells a preemption from an end (scontrol's PreemptTime),
  counts it in `preempted` and spends no retry on it (docs/running.md, "Preemption");
- the exit code is written atomically (tmp + mv) to the task directory, and on TERM a
  `cause` file says whether the time limit (timeout) or someone else (cancelled) ended it.

Every interpolated value is either validated (directives) or shlex-quoted (shell). The
wrapper itself is package data, `wrapper.sh` beside this module (shellcheck reads it as it
is); the values it shares with Python come from `protocol`, filled in by `wrapper_text`.

Example:

    text = render_step_script(ScriptSpec(workflow="demo", run_id=rid, step=step, ...))
"""

from __future__ import annotations

import functools
import re
import shlex
from dataclasses import dataclass
from importlib import resources
from typing import Iterable, Mapping, Sequence

from hpcml.errors import SubmitError
from hpcml.model import ENV_NAME_RE, Step, Task
from hpcml.render.gpus import GpuStyle, container_gpu_flags, sbatch_gpu_flags
from hpcml.render.protocol import RANKS_VALUES, WRAPPER_VALUES
from hpcml.spec.rules import CONSTRAINT_RE, CONSTRAINT_RULE, SLURM_NAME_RE, SLURM_NAME_RULE
from hpcml.spec.units import format_slurm_time

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SIGNAL = re.compile(r"(?:SIG)?[A-Z0-9]+")
# Paths end up in #SBATCH lines (split on blanks, `#` starts a comment, `%` is a filename
# pattern) and in apptainer --bind specs (`:` and `,` are separators): keep them plain.
# One #SBATCH option: `%` stays allowed here (filename patterns such as %j, the array throttle).
_DIRECTIVE_RE = re.compile(r"--[^\s'\"\\#\x00-\x1f\x7f]+")
_BAD_PATH_CHARS = set(" \t\n\r%:,'\"\\#") | {chr(c) for c in range(32)} | {"\x7f"}


@dataclass(frozen=True)
class ScriptSpec:
    """Everything one job script depends on; rendering reads nothing else.

    `indices` are the task indices this script runs (an array when `array` is true);
    `offset` is subtracted to form array indices when a step is split into chunks at
    MaxArraySize. Paths are absolute on the cluster.
    """

    workflow: str
    run_id: str
    step: Step
    sif: str
    shell: str  # bash or sh: runs the task's cmd.sh inside the container
    run_dir: str  # the `.hpcml` directory
    workflow_root: str  # the workflow's directory: bound read-only, the working directory
    run_root: str  # `.hpcml/runs/<run-id>`
    indices: tuple[int, ...] = (0,)
    array: bool = False
    offset: int = 0
    chunk: int | None = None
    gpu_style: GpuStyle = "gres"
    apptainer: str = "apptainer"
    exec_flags: tuple[str, ...] = ()
    env_file: str | None = None  # secrets and step env, mode 0600, for --env-file
    verify_key: str | None = None  # require_signatures: the public key the job verifies the SIF with

    @property
    def job_name(self) -> str:
        return job_name(self.workflow, self.run_id, self.step.name, self.chunk)


def job_name(workflow: str, run_id: str, step: str, chunk: int | None = None) -> str:
    """`hpcml.<workflow>.<run>.<step>[.<chunk>]`: how reconciliation finds a run's jobs."""
    base = f"hpcml.{workflow}.{run_id}.{step}"
    return base if chunk is None else f"{base}.{chunk}"


def parse_job_name(name: str) -> tuple[str, str, str, int | None] | None:
    """Inverse of job_name: (workflow, run, step, chunk), or None for a foreign job."""
    parts = name.split(".")
    if len(parts) not in (4, 5) or parts[0] != "hpcml":
        return None
    chunk = None
    if len(parts) == 5:
        if not parts[4].isdigit():
            return None
        chunk = int(parts[4])
    return parts[1], parts[2], parts[3], chunk


def render_step_script(spec: ScriptSpec) -> str:
    """The job script of one step (or one chunk of a step's array)."""
    _check_spec(spec)
    lines = ["#!/bin/bash", f"# hpcml job script: workflow {spec.workflow}, run {spec.run_id}, step {spec.step.name}"]
    lines.append("# Generated by hpcml; submit with sbatch (or run with bash by the local executor).")
    lines += sbatch_lines(sbatch_directives(spec))
    lines += ["", "set -euo pipefail", "", "# ---- this step (values are shell-quoted) ----"]
    lines += _settings(spec)
    if spec.step.resources.launch != "single":
        lines += ["", "# ---- this step's ranks ----", *_rank_settings(spec.step), "", ranks_text().rstrip("\n")]
    lines += ["", wrapper_text()]
    return "\n".join(lines)


def sbatch_directives(spec: ScriptSpec) -> list[str]:
    """The `#SBATCH` options of a step, in a fixed order."""
    step, res = spec.step, spec.step.resources
    pattern = "%A_%a" if spec.array else "%j"
    out = [
        f"--job-name={spec.job_name}",
        f"--output={spec.run_root}/slurm/{step.name}.{pattern}.out",
        "--open-mode=append",
    ]
    for flag, value in (("partition", res.partition), ("account", res.account), ("qos", res.qos)):
        if value is not None:
            out.append(f"--{flag}={_directive_value(flag, value)}")
    if res.time_s is not None:
        out.append(f"--time={format_slurm_time(max(res.time_s, 60))}")
    out.append(f"--nodes={res.nodes}")
    if res.launch != "single":
        out.append(f"--ntasks-per-node={res.ranks_per_node}")
    # SLURM refuses --cpus-per-task together with --cpus-per-gpu: the GPU form wins.
    if res.cpus is not None and not (res.gpus and res.cpus_per_gpu):
        out.append(f"--cpus-per-task={res.cpus}")
    if res.mem_mb is not None:
        out.append(f"--mem={res.mem_mb}M")
    if res.constraint is not None:
        out.append(f"--constraint={_directive_value('constraint', res.constraint, CONSTRAINT_RE, CONSTRAINT_RULE)}")
    out += sbatch_gpu_flags(res, spec.gpu_style)
    if spec.array:
        array = [i - spec.offset for i in spec.indices]
        out.append(f"--array={format_array_spec(array, step.max_parallel)}")
    if step.checkpoint is not None:
        out.append(f"--signal=B:{_signal(step.checkpoint.signal)}@{step.checkpoint.grace_s}")
    # Requeueable whatever the cluster's JobRequeue default: a preempted (or node-failed)
    # task runs again rather than being lost; the wrapper never reruns a completed one.
    out.append("--requeue")
    return out


def sbatch_lines(directives: Iterable[str]) -> list[str]:
    """`#SBATCH` lines of `directives`, each one word. Every job script hpcml renders (steps,
    image builds, notifications, doctor) writes its directives through here, so a value
    sbatch would read differently (a `#` starts a comment, a blank ends the option, a
    newline ends the line) is refused whatever it came from. Raises SubmitError.

    >>> sbatch_lines(["--partition=gpu"])
    ['#SBATCH --partition=gpu']
    """
    out = []
    for d in directives:
        if not _DIRECTIVE_RE.fullmatch(d):
            raise SubmitError(f"cannot write the #SBATCH directive {d!r}: it must be one --flag[=value] word "
                              "without blanks, '#', quotes, backslashes or control characters (sbatch reads "
                              "the rest of a line after '#' as a comment)")
        out.append(f"#SBATCH {d}")
    return out


def format_array_spec(indices: Iterable[int], max_parallel: int | None = None) -> str:
    """[0,1,2,5,7,8] → `0-2,5,7-8`, with `%N` when throttled (sbatch's `--array` value)."""
    sorted_ids = sorted(set(indices))
    parts: list[str] = []
    i = 0
    while i < len(sorted_ids):
        j = i
        while j + 1 < len(sorted_ids) and sorted_ids[j + 1] == sorted_ids[j] + 1:
            j += 1
        parts.append(str(sorted_ids[i]) if i == j else f"{sorted_ids[i]}-{sorted_ids[j]}")
        i = j + 1
    spec = ",".join(parts)
    return f"{spec}%{max_parallel}" if max_parallel else spec


def _settings(spec: ScriptSpec) -> list[str]:
    step = spec.step
    q = shlex.quote
    # --quiet drops Apptainer's INFO lines from the task's log; warnings and errors stay.
    container = [spec.apptainer, "--quiet", "exec", *spec.exec_flags, "--cleanenv"]
    if step.resources.launch != "single":
        container.insert(0, "hpcml_ranks")  # ranks.sh: the container once per rank
    if spec.env_file:
        container += ["--env-file", spec.env_file]
    container += container_gpu_flags(step.resources)
    container += [
        "--bind",
        f"{spec.workflow_root}:{spec.workflow_root}:ro",
        "--bind",
        f"{spec.run_dir}:{spec.run_dir}",
        "--pwd",
        spec.workflow_root,
        spec.sif,
    ]
    ckpt = _signal(step.checkpoint.signal) if step.checkpoint else ""
    lines = [
        f"hpcml_step={q(step.name)}",
        f"hpcml_tasks={q(f'{spec.run_dir}/tasks/{step.name}')}",
        f"hpcml_manifest={q(f'{spec.run_root}/jobs/{step.name}.tasks')}",
        f"hpcml_array={1 if spec.array else 0}",
        f"hpcml_offset={spec.offset}",
        f"hpcml_retries={step.retries}",
        f"hpcml_checkpoint_signal={q(ckpt)}",
        f"hpcml_time_limit={step.resources.time_s or 0}",
        f"hpcml_shell={q(spec.shell)}",
        f"hpcml_gpu={1 if step.resources.gpus > 0 else 0}",
        "hpcml_container=(" + " ".join(q(a) for a in container) + ")",
        f"hpcml_verify_key={q(spec.verify_key or '')}",
    ]
    # APPTAINERENV_* survives --cleanenv and, unlike --env, takes values with commas.
    for name, value in step.env:
        lines.append(f"export APPTAINERENV_{_env_name(name)}={q(apptainer_env_value(value))}")
    return lines


def _rank_settings(step: Step) -> list[str]:
    res = step.resources
    return [
        f"hpcml_nodes={res.nodes}",
        f"hpcml_ranks_per_node={res.ranks_per_node}",
        f"hpcml_gpu_per_rank={1 if res.launch == 'per_gpu' else 0}",
    ]


def apptainer_env_value(value: str) -> str:
    """`value` escaped so that the container sees it literally.

    Apptainer hands APPTAINERENV_* and --env-file values to the container through a
    generated `export NAME="value"` script: it escapes `"` itself, but `$`, backquotes and
    backslashes would be expanded there (`$HOME` became the container's home, `$x` in a
    secret vanished). Escaping those three makes every value arrive byte for byte.
    """
    return value.replace("\\", "\\\\").replace("$", "\\$").replace("`", "\\`")


def _check_spec(spec: ScriptSpec) -> None:
    for what, value in (("workflow name", spec.workflow), ("run id", spec.run_id), ("step name", spec.step.name)):
        if not _NAME.fullmatch(value) or "." in value and what != "run id":
            raise SubmitError(f"invalid {what} {value!r} for a job name: letters, digits, '_' and '-' only")
    for what, path in (
        ("run directory", spec.run_dir),
        ("workflow directory", spec.workflow_root),
        ("run directory", spec.run_root),
        ("image", spec.sif),
    ):
        check_path(path, what)
    if spec.env_file:
        check_path(spec.env_file, "environment file")
    if spec.shell not in ("bash", "sh"):
        raise SubmitError(f"invalid shell {spec.shell!r}; allowed: bash, sh")
    if spec.array and any(i < spec.offset for i in spec.indices):
        raise SubmitError(f"array chunk of step {spec.step.name} has indices below its offset {spec.offset}")


def check_path(path: str, what: str) -> None:
    """Refuse a path hpcml cannot pass safely to sbatch directives and apptainer binds."""
    bad = sorted(set(path) & _BAD_PATH_CHARS)
    if not path.startswith("/") or bad:
        why = "is not absolute" if not path.startswith("/") else f"contains {' '.join(repr(c) for c in sorted(bad))}"
        raise SubmitError(
            f"the {what} path {path!r} {why}; hpcml needs an absolute path without blanks, quotes, "
            "'#', '%', ':', ',' or control characters (it is written into #SBATCH lines and --bind options)"
        )


#: Characters a shell treats specially, refused in the workflow directory on top of
#: _BAD_PATH_CHARS: task paths under it fill `{out}`/`{in.STEP}` and then need no quoting,
#: so they are right even inside the user's own quotes (`trap 'echo > {out}/c' USR2`).
_SHELL_SPECIAL = set("$`;&|<>()!*?[]{}~^")


def check_run_path(path: str, what: str = "workflow directory") -> None:
    """Refuse a workflow directory whose task paths would need shell quoting: on top of
    check_path's rules, no `$ ` ; & | < > ( ) ! * ? [ ] { } ~ ^`."""
    check_path(path, what)
    bad = sorted(set(path) & _SHELL_SPECIAL)
    if bad:
        raise SubmitError(
            f"the {what} path {path!r} contains {' '.join(repr(c) for c in bad)}; the paths of its tasks fill "
            "{out} and {in.STEP} in commands, so hpcml needs them free of characters a shell treats specially"
        )


def _directive_value(flag: str, value: str, pattern: re.Pattern[str] = SLURM_NAME_RE,
                     rule: str = SLURM_NAME_RULE) -> str:
    # The spec checker uses the same patterns (spec/rules.py): `validate` refuses what this would.
    if not pattern.fullmatch(value):
        raise SubmitError(f"invalid {flag} {value!r}: {rule}")
    return value


def _signal(sig: str) -> str:
    if not _SIGNAL.fullmatch(sig):
        raise SubmitError(f"invalid checkpoint signal {sig!r}: a signal name such as USR1, USR2 or TERM")
    return sig.removeprefix("SIG")


def _env_name(name: str) -> str:
    if not ENV_NAME_RE.fullmatch(name):
        raise SubmitError(f"invalid environment variable name {name!r}")
    return name


# ---- the other files of a run ---------------------------------------------------------


def render_manifest(tasks: Iterable[Task]) -> str:
    """`jobs/<step>.tasks`: line per task, `index key`, read by the wrapper and reconciliation."""
    return "".join(f"{t.index} {t.key}\n" for t in sorted(tasks, key=lambda t: t.index))


def parse_manifest(text: str) -> dict[int, str]:
    """Inverse of render_manifest: {index: key}."""
    out: dict[int, str] = {}
    for line in text.splitlines():
        index, _, key = line.strip().partition(" ")
        if index.isdigit() and key:
            out[int(index)] = key
    return out


def render_task_command(command: str, shell: str, step: Step, index: int) -> str:
    """`cmd.sh`: the task's filled command under `set -e` (and pipefail in bash).

    For a checkpointing step the shell catches the checkpoint signal with a no-op trap, so
    it keeps waiting while the program (which gets the signal too, through the process
    group) writes its checkpoint; programs it starts still see the default disposition.
    """
    strict = "set -eo pipefail" if shell == "bash" else "set -e"
    trap = f"trap ':' {_signal(step.checkpoint.signal)}\n" if step.checkpoint else ""
    return f"# hpcml task {step.name}/{index} (generated)\n{strict}\n{trap}{command.rstrip()}\n"


def render_env_file(pairs: Sequence[tuple[str, str]]) -> str:
    """An apptainer `--env-file` (read by a shell interpreter): `NAME='value'` lines, each
    value escaped for apptainer's second evaluation (see apptainer_env_value)."""
    return "".join(f"{_env_name(k)}={shlex.quote(apptainer_env_value(v))}\n" for k, v in pairs)


# ---- the wrapper: package data, the same for every step ----------------------------------

#: The line where a job script's copy of wrapper.sh starts; above it is the file's own header.
WRAPPER_START = "# ---- hpcml task wrapper (the same for every step) ----\n"
#: The same for ranks.sh, the rank launcher of multi-process steps.
RANKS_START = "# ---- hpcml ranks: one container per rank ----\n"
_MARKER = re.compile(r"@([A-Z][A-Z0-9_]*)@")
_PLAIN_WORDS = re.compile(r"[A-Za-z0-9_.]+(?: [A-Za-z0-9_.]+)*")


@functools.cache
def wrapper_text() -> str:
    """The wrapper as it appears in every job script: wrapper.sh rendered with the
    protocol's values (read from the package once per process)."""
    template = resources.files("hpcml.render").joinpath("wrapper.sh").read_text(encoding="utf-8")
    return render_wrapper(template, WRAPPER_VALUES)


@functools.cache
def ranks_text() -> str:
    """The rank launcher as it appears in job scripts of multi-process steps: ranks.sh
    rendered with the protocol's values."""
    template = resources.files("hpcml.render").joinpath("ranks.sh").read_text(encoding="utf-8")
    return render_wrapper(template, RANKS_VALUES, RANKS_START)


def render_wrapper(template: str, values: Mapping[str, str], start_line: str = WRAPPER_START) -> str:
    """`template` from its `start_line` on, with every `@NAME@` replaced by
    `values[NAME]` and the lines holding only a shellcheck directive left out.

    Example: a template line `exit @REQUEUE_EXIT@` becomes `exit 75`.
    """
    _, start, body = template.partition(start_line)
    if not start:
        raise SubmitError(f"the job wrapper template has no line {start_line.strip()!r}")
    bad = sorted(name for name, value in values.items() if not _PLAIN_WORDS.fullmatch(value))
    if bad:
        raise SubmitError(f"job wrapper values must be plain words; not so: {', '.join(bad)}")

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise SubmitError(f"unknown marker @{name}@ in the job wrapper template; known: {', '.join(sorted(values))}")
        return values[name]

    lines = (start + body).splitlines(keepends=True)
    kept = "".join(line for line in lines if not line.lstrip().startswith("# shellcheck "))
    return _MARKER.sub(fill, kept)
