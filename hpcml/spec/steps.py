"""Checks of the `steps:` section: images, needs and their cycles, `run:` placeholders,
resources (merged with defaults) and checkpoints. The `matrix:` of a step is matrix.py's."""

from __future__ import annotations

import difflib
import shlex
from typing import Any, Callable

from hpcml.model import Checkpoint, Matrix, Resources, Step
from hpcml.spec import placeholders, units
from hpcml.spec.expand import format_value
from hpcml.spec.matrix import MatrixChecks
from hpcml.spec.secrets import SecretChecks
from hpcml.spec.rules import (
    BUILTIN_PLACEHOLDERS,
    CHECKPOINT_KEYS,
    CONSTRAINT_RE,
    CONSTRAINT_RULE,
    ENV_RE,
    ENV_RULE,
    GPU_TYPE_RE,
    GPU_VENDORS,
    LAUNCH_MODES,
    MAX_GPUS,
    MAX_GRACE_S,
    MAX_RETRIES,
    RESOURCE_KEYS,
    SHELLS,
    SIGNALS,
    SLURM_NAME_RE,
    SLURM_NAME_RULE,
    STEP_KEYS,
)
from hpcml.spec.shapes import describe, suggest
from hpcml.spec.yamlpos import YNode


class StepChecks(MatrixChecks, SecretChecks):
    """The `steps:` part of the checker (and the resource checks `defaults:` shares)."""

    # ---- steps ----------------------------------------------------------------------

    def steps(
        self, node: YNode | None, names: dict[str, YNode], image_names: dict[str, YNode], defaults: dict[str, Any]
    ) -> dict[str, Step]:
        out: dict[str, Step] = {}
        for name, body in names.items():
            assert node is not None
            step = self.step(name, body, node.key_pos[name], names, image_names, defaults)
            if step is not None:
                out[name] = step
        self.step_cycles(out)
        return out

    def step(
        self,
        name: str,
        node: YNode,
        at: tuple[int, int],
        names: dict[str, YNode],
        image_names: dict[str, YNode],
        defaults: dict[str, Any],
    ) -> Step | None:
        what = f"step {name!r}"
        m = self.mapping(node, what, STEP_KEYS, required=("run",))
        if m is None:
            return None
        n_before = len(self.diags)
        image = self.step_image(name, node, m, image_names, defaults)
        needs = self.needs(m["needs"], name, names) if "needs" in m else ()
        matrix = self.matrix(m["matrix"], what) if "matrix" in m else None
        run = self.string(m["run"], f"run of {what}") if "run" in m else None
        # A matrix with errors (reported) cannot tell which placeholders are known.
        if run is not None and (matrix is not None or "matrix" not in m):
            self.check_placeholders(m["run"], run, what, matrix, needs)
        max_parallel = self.integer(m["max_parallel"], "max_parallel", 1) if "max_parallel" in m else None
        if max_parallel is not None and "matrix" not in m:
            self.err(m["max_parallel"], f"max_parallel needs a matrix in {what}")
        resources = self.step_resources(m.get("resources"), what, defaults)
        retries = self.integer(m["retries"], "retries", 0, MAX_RETRIES) if "retries" in m else defaults.get("retries")
        checkpoint = self.checkpoint(m["checkpoint"], resources) if "checkpoint" in m else None
        env = dict(defaults.get("env") or {})
        env.update(self.env(m["env"], f"env of {what}") if "env" in m else {})
        # A step's env lands in plan.json, the journal and the task key: no place for a secret.
        not_secret = tuple(defaults.get("not_secret", ())) + (self.env_secrets(m["env"], f"env of {what}") if "env" in m else ())
        if "run" in m:  # the command is written into the plan, the task's cmd.sh and its key
            before = len(self.waived)
            self.value_secrets(m["run"], f"run of {what}")
            not_secret += tuple(self.waived[before:])
        secrets = self.string_list(m["secrets"], f"secrets of {what}", self.secret) if "secrets" in m else ()
        for secret in secrets:
            if secret in env:
                self.err(m["secrets"], f"{secret} is both a secret and an env value in {what}; keep one")
        shell = self.choice(m["shell"], "shell", SHELLS) if "shell" in m else defaults.get("shell")
        if len(self.diags) > n_before or image is None or run is None or resources is None:
            return None
        return Step(
            name=name, image=image, run=run, needs=needs, matrix=matrix, max_parallel=max_parallel,
            resources=resources, retries=retries or 0, checkpoint=checkpoint, secrets=secrets,
            env=tuple(env.items()), shell=shell, not_secret=not_secret, pos=self.pos(at),
        )

    def step_image(
        self, name: str, node: YNode, m: dict[str, YNode], image_names: dict[str, YNode], defaults: dict[str, Any]
    ) -> str | None:
        if "image" in m:
            return self.image_ref(m["image"], f"image of step {name!r}", image_names)
        if "image" not in defaults:
            self.err(node, f"step {name!r} has no image: set 'image' in the step or in defaults")
        return defaults.get("image")  # a bad default was reported once, at defaults.image

    def image_ref(self, node: YNode, what: str, image_names: dict[str, YNode]) -> str | None:
        value = self.string(node, what)
        if value is None:
            return None
        if value not in image_names:
            known = ", ".join(image_names) or "none are defined under 'images'"
            self.err(node, f"unknown image {value!r} in {what}{suggest(value, image_names)}; images: {known}")
            return None
        return value

    def needs(self, node: YNode, name: str, names: dict[str, YNode]) -> tuple[str, ...]:
        def check(item: YNode) -> str | None:
            value = self.string(item, "needs")
            if value is None:
                return None
            if value == name:
                self.err(item, f"step {name!r} cannot need itself")
                return None
            if value not in names:
                self.err(item, f"step {name!r} needs unknown step {value!r}{suggest(value, names)}; steps: {', '.join(names)}")
                return None
            return value

        return self.string_list(node, f"needs of step {name!r}", check)

    def secret(self, node: YNode) -> str | None:
        return self.matching(node, "secret name", ENV_RE, f"use an environment variable name {ENV_RULE}")

    def step_cycles(self, steps: dict[str, Step]) -> None:
        state: dict[str, int] = {}  # 1 = on the current path, 2 = done
        reported: set[str] = set()

        def visit(name: str, path: list[str]) -> None:
            state[name] = 1
            path.append(name)
            for dep in steps[name].needs:
                if dep not in steps:
                    continue
                if state.get(dep) == 1:
                    cycle = path[path.index(dep):]
                    if not reported.intersection(cycle):
                        reported.update(cycle)
                        first = steps[cycle[0]].pos
                        assert first is not None
                        self.err((first.line, first.col), "step cycle: " + " -> ".join([*cycle, cycle[0]]))
                elif state.get(dep) is None:
                    visit(dep, path)
            path.pop()
            state[name] = 2

        for name in steps:
            if name not in state:
                visit(name, [])

    # ---- placeholders ----------------------------------------------------------------

    def check_placeholders(
        self, node: YNode, run: str, what: str, matrix: Matrix | None, needs: tuple[str, ...]
    ) -> None:
        known = list(BUILTIN_PLACEHOLDERS)
        if matrix is not None:
            known += [a for a, _ in matrix.axes]
            known += [k for entry in matrix.include for k, _ in entry if k not in known]
        known += [f"in.{n}" for n in needs]
        contexts: list[str | None] | None = None
        for ph in placeholders.find_placeholders(run):
            if ph.name in known:
                contexts = contexts or placeholders.quote_contexts(run)
                self.placeholder_quoting(node, ph, contexts[ph.start], what, matrix)
                continue
            at = self.scalar_pos(node, ph.start)
            if ph.name.startswith("in."):
                upstream = ph.name[3:]
                msg = f"placeholder {{{ph.name}}} in run of {what} refers to {upstream!r}, which is not in needs"
                msg += suggest(ph.name, known) if needs else "; add it to needs"
            else:
                close = difflib.get_close_matches(ph.name, known, n=1, cutoff=0.6)
                hint = f" (did you mean {{{close[0]}}}?)" if close else ""
                msg = f"unknown placeholder {{{ph.name}}} in run of {what}{hint}"
            self.err(at, f"{msg}; known: {', '.join('{' + k + '}' for k in known)} (write {{{{ and }}}} for literal braces)")

    def placeholder_quoting(self, node: YNode, ph: placeholders.Placeholder, context: str | None, what: str,
                            matrix: Matrix | None) -> None:
        """Refuse a placeholder inside quotes, backquotes or a here-document whose value
        could need quoting: hpcml shell-quotes substituted values, and there the quotes
        would be text, so a value holding `"` could end the quoting and run a command.
        {step}, {task}, {out}, {in.STEP} and matrix values that need no quoting (`0.1`,
        `resnet-50`) are the same quoted or not, so they are allowed."""
        # {out}/{in.STEP} are task paths under a workflow directory that `run` refuses unless
        # they need no quoting (jobs.check_run_path): right inside quotes too.
        if context not in placeholders.QUOTE_CONTEXTS or ph.name in ("step", "task", "out") or ph.name.startswith("in."):
            return
        values = [v for k, vs in (matrix.axes if matrix else ()) if k == ph.name for v in vs]
        values += [v for entry in (matrix.include if matrix else ()) for k, v in entry if k == ph.name]
        unsafe = [text for text in (format_value(v) for v in values) if shlex.quote(text) != text]
        if not unsafe:
            return
        why = f"its value {unsafe[0]!r} is quoted by hpcml, and inside {placeholders.QUOTE_CONTEXTS[context]} " \
              "those quotes would be text (a value holding a quote could end them and run a command)"
        where = placeholders.QUOTE_CONTEXTS[context]
        self.err(self.scalar_pos(node, ph.start),
                 f"placeholder {{{ph.name}}} in run of {what} stands inside {where}: {why}; write it outside "
                 f"quotes (`echo {{{ph.name}}}/x` — hpcml quotes it), or assign it first: "
                 f"`v={{{ph.name}}}; echo \"$v\"`")

    # ---- resources and checkpoints --------------------------------------------------

    def resources(self, node: YNode, what: str) -> dict[str, tuple[Any, YNode]]:
        """The resource keys written in one place, parsed: field name → (value, node)."""
        m = self.mapping(node, what, RESOURCE_KEYS)
        out: dict[str, tuple[Any, YNode]] = {}
        for key, value_node in (m or {}).items():
            value = self.resource(key, value_node)
            if value is not None:
                out[key] = (value, value_node)
        return out

    def resource(self, key: str, node: YNode) -> Any:
        if key in ("partition", "account", "qos"):
            return self.matching(node, key, SLURM_NAME_RE, SLURM_NAME_RULE)
        if key == "constraint":
            return self.matching(node, key, CONSTRAINT_RE, CONSTRAINT_RULE)
        if key == "gpu_type":
            return self.matching(node, key, GPU_TYPE_RE, "use letters, digits, '_', '.' and '-' (e.g. a100)")
        if key == "gpu_vendor":
            return self.choice(node, key, GPU_VENDORS)
        if key == "launch":
            return self.choice(node, key, LAUNCH_MODES)
        if key == "nodes":
            return self.integer(node, key, 1)
        if key in ("cpus", "cpus_per_gpu"):
            return self.integer(node, key, 1)
        if key == "gpus":
            return self.integer(node, key, 0, MAX_GPUS)
        if key == "time":
            return self.parsed(node, units.parse_duration, "time", positive=True)
        assert key == "mem"
        return self.parsed(node, units.parse_size, "mem", positive=True)

    def parsed(self, node: YNode, parse: Callable[[Any], int], what: str, *, positive: bool) -> int | None:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            self.err(node, f"{what} must be a string or an integer, found {describe(value)}")
            return None
        try:
            result = parse(value)
        except ValueError as err:
            self.err(node, f"{what}: {err}")
            return None
        if positive and result <= 0:
            self.err(node, f"{what} must be greater than zero, found {value!r}")
            return None
        return result

    def step_resources(self, node: YNode | None, what: str, defaults: dict[str, Any]) -> Resources | None:
        inherited: dict[str, tuple[Any, YNode]] = dict(defaults.get("resources") or {})
        own = self.resources(node, f"resources of {what}") if node is not None else {}
        # cpus and cpus_per_gpu are exclusive in sbatch: the one a step writes replaces the inherited other.
        if "cpus_per_gpu" in own:
            inherited.pop("cpus", None)
        if "cpus" in own:
            inherited.pop("cpus_per_gpu", None)
        n_before = len(self.diags)
        self.exclusive_cpus(own)
        merged = {**inherited, **own}
        gpus = merged.get("gpus", (0, None))[0]
        for key in ("gpu_type", "cpus_per_gpu"):
            if key in merged and not gpus:
                if key in own:
                    self.err(own[key][1], f"{key} needs gpus of at least 1 in {what}")
                del merged[key]  # an inherited GPU setting does not apply to a CPU-only step
        self.launch(merged, what)
        if len(self.diags) > n_before:
            return None
        fields = {{"time": "time_s", "mem": "mem_mb"}.get(k, k): v for k, (v, _) in merged.items()}
        return Resources(**fields)

    def launch(self, merged: dict[str, tuple[Any, YNode]], what: str) -> None:
        """Check `launch` against nodes and gpus; an unwritten one becomes single on one
        node and per_node on several (something must start on every node)."""
        nodes = merged.get("nodes", (1, None))[0]
        gpus = merged.get("gpus", (0, None))[0]
        if "launch" not in merged:
            if nodes > 1:
                merged["launch"] = ("per_node", merged["nodes"][1])
            return
        launch, at = merged["launch"]
        if launch == "per_gpu" and not gpus:
            self.err(at, f"launch: per_gpu in {what} starts one process per GPU, so it needs gpus of at least 1 "
                         "(GPUs per node); for a CPU-only step use per_node or single")
        elif launch == "single" and nodes > 1:
            self.err(at, f"launch: single in {what} starts one process in all, so {nodes - 1} of its {nodes} nodes "
                         "would sit idle; use per_node (a launcher such as torchrun on every node) or per_gpu "
                         "(one process per GPU)")

    def exclusive_cpus(self, level: dict[str, tuple[Any, YNode]]) -> None:
        if "cpus" in level and "cpus_per_gpu" in level:
            self.err(level["cpus_per_gpu"][1], "cpus and cpus_per_gpu cannot both be set (sbatch refuses the pair)")

    def checkpoint(self, node: YNode, resources: Resources | None) -> Checkpoint | None:
        if node.value is True:
            return Checkpoint()
        if node.value is False:
            return None
        m = self.mapping(node, "checkpoint", CHECKPOINT_KEYS)
        if m is None:
            return None
        signal, grace = Checkpoint.signal, Checkpoint.grace_s
        if "signal" in m:
            raw = m["signal"].value
            name = raw.upper().removeprefix("SIG") if isinstance(raw, str) else raw
            checked = self.choice(YNode(name, m["signal"].line, m["signal"].col), "checkpoint signal", SIGNALS)
            if checked is None:
                return None
            signal = checked
        if "grace" in m:
            g = m["grace"]
            # A bare number is seconds here (it is a lead time, as in sbatch --signal), unlike `time`.
            if isinstance(g.value, int) and not isinstance(g.value, bool):
                value = self.integer(g, "checkpoint grace", 1, MAX_GRACE_S)
            else:
                value = self.parsed(g, units.parse_duration, "checkpoint grace", positive=True)
                if value is not None and value > MAX_GRACE_S:
                    self.err(g, f"checkpoint grace must be at most {MAX_GRACE_S} seconds")
                    value = None
            if value is None:
                return None
            grace = value
            if resources is not None and resources.time_s is not None and grace >= resources.time_s:
                self.err(g, f"checkpoint grace ({grace} s) must be shorter than the time limit ({resources.time_s} s)")
                return None
        return Checkpoint(signal=signal, grace_s=grace)
