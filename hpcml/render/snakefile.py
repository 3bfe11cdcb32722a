"""Snakemake text from a plan: resources in the SLURM plugin's names, the `apptainer exec`
command of a rule, and the whole Snakefile of `hpcml export snakemake`. Pure.

Every rule of an exported Snakefile runs its step the way hpcml's job wrapper does: one
`apptainer exec --cleanenv` of the step's catalog image, the workflow directory bound
read-only as the working directory, the step's env and secrets passed as APPTAINERENV_*,
`--nv`/`--rocm` and the allocated devices only for a GPU step. Snakemake's own
`container:` cannot do that per rule (its `--apptainer-args` are global), so rules use
`run: shell(...)` with the rendered command (see docs/snakemake.md).

Text handed to Snakemake is a format string: `{input}` and friends are its placeholders,
every other brace is doubled. The step's own command travels in a quoted here-document,
so it reaches the container's shell byte for byte.

Example:

    slurm_resources(Resources(partition="gpu", gpus=1, time_s=3600), "gres")
    # {'slurm_partition': 'gpu', 'runtime': 60, 'gres': 'gpu:1'}
"""

from __future__ import annotations

import keyword
import os
import shlex
from dataclasses import dataclass

from hpcml.errors import HpcmlError
from hpcml.model import Plan, Resources, StepPlan
from hpcml.plan import format_value
from hpcml.render.gpus import GpuStyle, container_gpu_flags
from hpcml.render.jobs import apptainer_env_value
from hpcml.render.protocol import DEVICE_ENV_VARS
from hpcml.spec import placeholders

#: Ends the here-document that carries a command into the container.
HEREDOC_END = "HPCML_COMMAND"
#: Where an exported Snakefile puts step outputs and logs, relative to its working directory.
RESULTS, LOGS = "results", "logs"


@dataclass(frozen=True)
class Raw:
    """Text put into a rendered command as it is (shell or Snakemake syntax), not quoted."""

    text: str


#: The host's working directory, evaluated when the rule runs.
CWD = Raw('"$PWD"')

_SECRET_FN = r"""hpcml_secret() {  # NAME: from this environment into the container, byte for byte
  local v=${!1}
  v=${v//\\/\\\\}; v=${v//\$/\\\$}; v=${v//\`/\\\`}
  export "APPTAINERENV_$1=$v"
}"""


# ---- resources ---------------------------------------------------------------------------


def slurm_resources(res: Resources, gpu_style: GpuStyle = "gres") -> dict[str, str | int]:
    """A step's resources in snakemake-executor-plugin-slurm's names, for `resources:`.

    GPUs become `gres: gpu[:type]:N` (every SLURM takes it) or, with the gpus-per-node
    style, `gpu`/`gpu_model` (the plugin's `--gpus`, all nodes together). `runtime` is in
    minutes, rounded up; CPUs are per task unless the step asks for CPUs per GPU.
    """
    out: dict[str, str | int] = {}
    for name, value in (("slurm_partition", res.partition), ("slurm_account", res.account), ("qos", res.qos)):
        if value is not None:
            out[name] = value
    if res.time_s is not None:
        out["runtime"] = max(1, -(-res.time_s // 60))
    if res.mem_mb is not None:
        out["mem_mb"] = res.mem_mb
    if res.nodes != 1:
        out["nodes"] = res.nodes
    if res.gpus > 0 and res.cpus_per_gpu:
        out["cpus_per_gpu"] = res.cpus_per_gpu
    elif res.cpus is not None:
        out["cpus_per_task"] = res.cpus
    if res.constraint is not None:
        out["constraint"] = res.constraint
    if res.gpus > 0:
        if gpu_style == "gres":
            out["gres"] = f"gpu:{res.gpu_type}:{res.gpus}" if res.gpu_type else f"gpu:{res.gpus}"
        else:
            out["gpu"] = res.gpus * res.nodes
            if res.gpu_type:
                out["gpu_model"] = res.gpu_type
    return out


# ---- the container command of one rule ---------------------------------------------------


@dataclass(frozen=True)
class ContainerCall:
    """Everything one rendered `apptainer exec` depends on; rendering reads nothing else.

    `binds` are `(source, target, read_only)`; `pwd` is the container's working directory.
    A path is a plain string (quoted when rendered) or Raw text such as `CWD`, the host's
    working directory when the rule runs. `redirect` (Raw Snakemake text, e.g.
    `>{log:q} 2>&1`) is appended to the `apptainer exec` line.
    """

    sif: str | Raw
    shell: str = "bash"  # runs the command inside the container: bash or sh
    gpus: int = 0
    gpu_vendor: str = "nvidia"
    apptainer: str = "apptainer"
    exec_flags: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    secrets: tuple[str, ...] = ()
    binds: tuple[tuple[str | Raw, str | Raw, bool], ...] = ((CWD, CWD, False),)
    pwd: str | Raw = CWD
    redirect: str = ""


def container_command(call: ContainerCall, command: str) -> str:
    """Bash for a Snakemake `shell:`: run `command` (Snakemake placeholders allowed) in the
    image with hpcml's binding. Every value is shell-quoted; braces outside `command` and
    Raw values are doubled, so Snakemake formats only their own placeholders."""
    if call.shell not in ("bash", "sh"):
        raise HpcmlError(f"invalid shell {call.shell!r}; allowed: bash, sh")
    if any(line.strip() == HEREDOC_END for line in command.splitlines()):
        raise HpcmlError(f"a command may not contain a line {HEREDOC_END!r} (it ends hpcml's here-document)")
    q = shlex.quote
    head: list[str] = [_SECRET_FN] if call.secrets else []
    head += [f"export APPTAINERENV_{k}={q(apptainer_env_value(v))}" for k, v in call.env]
    head += [f"hpcml_secret {q(name)}" for name in call.secrets]
    if call.gpus > 0:  # the container sees exactly the devices this job was given
        head += [f'if [[ -n ${{{v}+set}} ]]; then export APPTAINERENV_{v}="${v}"; fi' for v in DEVICE_ENV_VARS]
    head.append(f"IFS= read -r -d '' hpcml_command <<'{HEREDOC_END}' || true")
    head.append("set -eo pipefail" if call.shell == "bash" else "set -e")
    vendor = "amd" if call.gpu_vendor == "amd" else "nvidia"
    argv = [q(call.apptainer), "--quiet", "exec", *map(q, call.exec_flags), "--cleanenv",
            *container_gpu_flags(Resources(gpus=call.gpus, gpu_vendor=vendor))]
    argv = [_braces(a) for a in argv]
    for source, target, read_only in call.binds:
        argv += ["--bind", _path(source) + ":" + _path(target) + (":ro" if read_only else "")]
    argv += ["--pwd", _path(call.pwd), _path(call.sif), call.shell, "-c", '"$hpcml_command"']
    if call.redirect:
        argv.append(call.redirect)
    return _braces("\n".join(head)) + "\n" + command.rstrip("\n") + "\n" + HEREDOC_END + "\n" + " ".join(argv)


def _path(path: str | Raw) -> str:
    return path.text if isinstance(path, Raw) else _braces(shlex.quote(path))


def _braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


# ---- step commands in Snakemake's syntax -------------------------------------------------


def snakemake_command(step: StepPlan) -> str:
    """The step's `run:` as a Snakemake format string: `{out}` → `{params.out:q}`, `{in.X}` →
    `{params.in_X:q}`, a matrix value → `{params.NAME:q}`, `{task}` → the wildcard, `{step}`
    → the quoted name; literal braces doubled (hpcml's `{{`/`}}` escapes stay as they are)."""
    st = step.step
    axes = _matrix_names(step)

    def name_for(name: str) -> str:
        if name == "out":
            return "{params.out:q}"
        if name.startswith("in."):
            return f"{{params.in_{_ident(name[3:])}:q}}"
        if name == "step":
            return _braces(shlex.quote(st.name))
        if name == "task":
            return "{wildcards.task}" if step.is_array else "0"
        if name == "nodes":
            return str(st.resources.nodes)
        if name == "gpus_per_node":
            return str(st.resources.gpus)
        if name in axes:
            return f"{{params.{_ident(name)}:q}}"
        raise HpcmlError(f"step {st.name!r}: unknown placeholder {{{name}}}")

    out: list[str] = []
    pos = 0
    for m in placeholders.PLACEHOLDER_RE.finditer(st.run):
        out.append(_braces(st.run[pos:m.start()]))
        out.append(name_for(m.group("name")) if m.group("name") is not None else m.group(0))
        pos = m.end()
    out.append(_braces(st.run[pos:]))
    return "".join(out)


def _matrix_names(step: StepPlan) -> list[str]:
    names: list[str] = []
    for task in step.tasks:
        for k, _ in task.point:
            if k not in names:
                names.append(k)
    return names


def _ident(name: str) -> str:
    # Step and axis names may hold '-' or be a Python keyword; a keyword argument may not.
    ident = name.replace("-", "_")
    return ident + "_" if keyword.iskeyword(ident) else ident


#: Names of the params every exported rule has; a matrix axis may not take one.
_RULE_PARAMS = ("out", "image", "workflow_dir")


def _check_names(plan: Plan) -> None:
    """Refuse names that would clash once turned into Python identifiers and params."""
    seen: dict[str, str] = {"all": "the target rule `all`"}
    for name in plan.step_order:
        res = plan.steps[name].step.resources
        if res.launch != "single":  # a rule runs one command: it has no rank launcher
            raise HpcmlError(f"step {name!r} starts {res.ranks} processes (launch: {res.launch}); the Snakemake "
                             "export runs one per rule. Run it with `hpcml run` (docs/distributed.md)")
        ident = _ident(name)
        if ident in seen:
            raise HpcmlError(f"step {name!r} would be rule {ident!r}, like {seen[ident]}; rename one for the export")
        seen[ident] = f"step {name!r}"
        sp = plan.steps[name]
        for axis in _matrix_names(sp):
            if _ident(axis) in _RULE_PARAMS or _ident(axis).startswith("in_"):
                raise HpcmlError(f"step {name!r}: matrix axis {axis!r} clashes with the exported rule's params "
                                 f"({', '.join(_RULE_PARAMS)}, in_STEP); rename it for the export")


# ---- the Snakefile -----------------------------------------------------------------------


@dataclass(frozen=True)
class ExportSpec:
    """What an exported Snakefile depends on: the plan, where the workflow directory is as
    seen from the Snakefile's directory, the site's apptainer settings and the GPU style."""

    plan: Plan
    workflow_dir: str  # relative to the Snakefile's directory (or absolute when it must be)
    command_line: str  # how it was made, for the header
    apptainer: str = "apptainer"
    exec_flags: tuple[str, ...] = ()
    gpu_style: GpuStyle = "gres"


@dataclass(frozen=True)
class Exported:
    """The Snakefile text and what it could not express (also said in its rule comments)."""

    text: str
    notes: tuple[str, ...]


def render_snakefile(spec: ExportSpec) -> Exported:
    """A readable Snakefile running the plan's DAG: one rule per step (see module docstring)."""
    plan, wf = spec.plan, spec.plan.workflow
    _check_names(plan)
    secrets = sorted({s for sp in plan.steps.values() for s in sp.step.secrets})
    lines = [
        f"# Snakefile for the hpcml workflow {wf.name!r}, generated by `{spec.command_line}`.",
        "# Edit the workflow and export again rather than editing this file.",
        "#   snakemake -c 4                      # locally",
        "#   snakemake --executor slurm -j 50    # every rule a SLURM job",
        "# Each rule runs its step in the step's hpcml image (from the catalog, by content key,",
        "# integrity-checked when this file loads) with hpcml's binding: see docs/snakemake.md.",
        "",
        "import os",
        "",
        "from hpcml.snakemake import image",
        "",
        f"WORKFLOW_DIR = os.path.normpath(os.path.join(workflow.basedir, {spec.workflow_dir!r}))",
        "IMAGES = {",
    ]
    used = list(dict.fromkeys(plan.steps[n].step.image for n in plan.step_order))
    lines += [f"    {name!r}: image({plan.images[name].key!r}),  # image {name!r} of {os.path.basename(wf.path)!r}"
              for name in used]
    lines += ["}", ""]
    if secrets:
        lines += ["# Secrets come from the environment of whoever runs snakemake; they are never written here.",
                  "envvars:"] + [f"    {s!r}," for s in secrets] + [""]
    for name in plan.step_order:
        sp = plan.steps[name]
        if sp.is_array:
            lines += _points_table(sp)
    finals = [n for n in plan.step_order if not any(n in plan.steps[m].step.needs for m in plan.step_order)]
    lines += ["", "rule all:", "    default_target: True", "    input:"]
    lines += [f"        {_output_ref(plan.steps[n])}," for n in finals]
    notes: list[str] = []
    for name in plan.step_order:
        rule, rule_notes = _rule(spec, plan.steps[name])
        lines += ["", ""] + rule
        notes += rule_notes
    return Exported("\n".join(lines) + "\n", tuple(notes))


def _points_table(sp: StepPlan) -> list[str]:
    const = _table_name(sp.step.name)
    out = [f"# Matrix points of step {sp.step.name!r} (include/exclude applied), by task index: the wildcard 'task'.",
           f"{const} = {{"]
    for t in sp.tasks:
        values = ", ".join(f"{k!r}: {format_value(v)!r}" for k, v in t.point)
        out.append(f"    {str(t.index)!r}: {{{values}}},")
    return out + ["}"]


def _table_name(step: str) -> str:
    return _ident(step).upper() + "_POINTS"


def _output_ref(sp: StepPlan) -> str:
    if sp.is_array:
        return f'expand("{RESULTS}/{sp.step.name}/{{task}}", task={_table_name(sp.step.name)})'
    return repr(f"{RESULTS}/{sp.step.name}")


def _rule(spec: ExportSpec, sp: StepPlan) -> tuple[list[str], list[str]]:
    plan, st = spec.plan, sp.step
    rule = [f"rule {_ident(st.name)}:"]
    notes: list[str] = []
    if st.checkpoint is not None:
        note = (f"step {st.name}: hpcml requeues it on SIG{st.checkpoint.signal.removeprefix('SIG')} "
                f"({st.checkpoint.grace_s}s before its time limit) to resume from its output; Snakemake cannot, "
                f"so a task that hits its time limit fails (and is retried from scratch with `retries`)")
        rule.append(f"    # NOTE {note}.")
        notes.append(note)
    if st.max_parallel is not None:
        note = (f"step {st.name}: hpcml runs at most {st.max_parallel} of its tasks at once (max_parallel); "
                f"Snakemake has no per-rule limit: use -j or --resources to throttle")
        rule.append(f"    # NOTE {note}.")
        notes.append(note)
    ups = [(u, plan.steps[u]) for u in st.needs]
    if ups:
        rule.append("    input:")
        rule += [f"        {_ident(u)}={_output_ref(usp)}," for u, usp in ups]
    wildcard = "/{task}" if sp.is_array else ""
    rule.append("    output:")
    rule.append(f'        directory("{RESULTS}/{st.name}{wildcard}"),')
    rule.append("    log:")
    rule.append(f'        "{LOGS}/{st.name}{wildcard}.log",')
    rule.append("    params:")
    # Absolute paths: the container's working directory is the workflow directory, as in hpcml.
    rule.append("        out=lambda wildcards, output: os.path.abspath(output[0]),")
    for u, usp in ups:
        if usp.is_array:
            rule.append(f"        in_{_ident(u)}=lambda wildcards, input: "
                        f"os.path.dirname(os.path.abspath(input.{_ident(u)}[0])),")
        else:
            rule.append(f"        in_{_ident(u)}=lambda wildcards, input: os.path.abspath(input.{_ident(u)}),")
    table = _table_name(st.name)
    for axis in _matrix_names(sp):
        rule.append(f"        {_ident(axis)}=lambda wildcards: {table}[wildcards.task].get({axis!r}, ''),")
    if sp.is_array:
        rule += ["    wildcard_constraints:", '        task="[0-9]+",']
    res = slurm_resources(st.resources, spec.gpu_style)
    if res:
        rule.append("    resources:")
        rule += [f"        {k}={v!r}," for k, v in res.items()]
    if st.retries:
        rule.append(f"    retries: {st.retries}")
    shell = st.shell or plan.workflow.images[st.image].shell
    wf_dir = Raw("{params.workflow_dir:q}")
    call = ContainerCall(
        sif=Raw("{params.image:q}"),
        shell=shell,
        gpus=st.resources.gpus,
        gpu_vendor=st.resources.gpu_vendor,
        apptainer=spec.apptainer,
        exec_flags=spec.exec_flags,
        env=st.env,
        secrets=st.secrets,
        # As hpcml binds a task: the workflow directory read-only, its output read-write,
        # its inputs read-only (not the whole working directory, which may be the workflow's).
        binds=((wf_dir, wf_dir, True), (Raw("{params.out:q}"), Raw("{params.out:q}"), False),
               *((Raw(f"{{params.in_{_ident(u)}:q}}"), Raw(f"{{params.in_{_ident(u)}:q}}"), True) for u, _ in ups)),
        pwd=wf_dir,
        redirect=">{log:q} 2>&1",
    )
    # hpcml makes {out} before the task runs; Snakemake makes only its parent.
    body = "mkdir -p {params.out:q}\n" + container_command(call, snakemake_command(sp))
    rule.insert(rule.index("    params:") + 1, f"        image=IMAGES[{st.image!r}],")
    rule.insert(rule.index("    params:") + 2, "        workflow_dir=WORKFLOW_DIR,")
    rule.append("    run:")
    if '"""' in body or body.endswith("\\") or "\r" in body:
        rule += ["        shell("] + [f"            {line!r}" for line in _keepends(body)] + ["        )"]
    else:
        # Readable as written: a raw string from column 0, where the here-document's end
        # marker must stand.
        rule += ['        shell(r"""'] + body.split("\n") + ['""")']
    return rule, notes


def _keepends(text: str) -> list[str]:
    return text.splitlines(keepends=True)
