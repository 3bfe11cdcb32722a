"""What a workflow file may contain: key lists, value patterns and limits.

The checker enforces these and the JSON Schema (schema.py) is generated from them, so the
two cannot drift apart. docs/spec.md is the reference for users.
"""

from __future__ import annotations

import re

from hpcml.model import ENV_NAME_RE, ENV_NAME_RULE

SUPPORTED_VERSIONS = (1,)

TOP_KEYS = ("hpcml", "name", "defaults", "images", "steps", "notify")
DEFAULTS_KEYS = ("image", "resources", "env", "shell", "retries")
BUILD_KEYS = ("apt", "pip", "requirements", "files", "env", "post", "test", "runscript", "labels", "mirror")
IMAGE_KEYS = ("from", *BUILD_KEYS, "shell", "deffile", "dockerfile", "build_args")
STEP_KEYS = (
    "image", "run", "needs", "matrix", "max_parallel", "resources", "retries", "checkpoint", "secrets", "env", "shell",
)
RESOURCE_KEYS = (
    "partition", "account", "qos", "time", "nodes", "cpus", "mem", "gpus", "gpu_type", "gpu_vendor", "cpus_per_gpu",
    "constraint", "launch",
)
CHECKPOINT_KEYS = ("signal", "grace")
NOTIFY_KEYS = ("on", "webhook", "mail")
NOTIFY_EVENTS = ("finish", "failure")
MATRIX_LIST_KEYS = ("include", "exclude")

SHELLS = ("bash", "sh")
GPU_VENDORS = ("nvidia", "amd")
#: How many processes a step starts (docs/distributed.md): one in total, one per node (a
#: launcher such as torchrun starts the workers), one per GPU (every rank bound to its GPU).
LAUNCH_MODES = ("single", "per_node", "per_gpu")
SIGNALS = ("USR1", "USR2", "TERM", "INT", "HUP", "QUIT", "ALRM")
FROM_FORMS = (
    "scratch, debootstrap:SUITE, docker://REF, oras://REF, localimage:PATH.sif, catalog:NAME[:TAG], "
    "or the name of another image in this file"
)
#: Placeholder names every step has besides its matrix keys and in.STEP.
BUILTIN_PLACEHOLDERS = ("out", "step", "task", "nodes", "gpus_per_node")
#: Matrix keys that would shadow a built-in placeholder.
RESERVED_AXES = ("out", "step", "task", "in", "nodes", "gpus_per_node")
RESERVED_IMAGE_NAMES = ("scratch",)

MAX_NAME = 63
MAX_RETRIES = 100
MAX_GPUS = 64
MAX_MATRIX_POINTS = 100_000
#: The default and the smallest allowed value of the setting max_tasks (config.py): the most
#: tasks a whole workflow may expand to, checked before any matrix is expanded.
DEFAULT_MAX_TASKS = 100_000
MIN_MAX_TASKS = 1000
MAX_GRACE_S = 65535  # sbatch --signal accepts at most 65535 seconds

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
#: Environment variable names, secrets and matrix axes share the one rule of model.py.
ENV_RE = ENV_NAME_RE
ENV_RULE = ENV_NAME_RULE
AXIS_RE = ENV_NAME_RE
#: partition, account, qos. The job-script renderer checks with these same patterns, so
#: `validate` refuses exactly what submission would (before any image is built).
SLURM_NAME_RE = re.compile(r"[A-Za-z0-9_.,-]+")
SLURM_NAME_RULE = "use letters, digits and _ . , -"
CONSTRAINT_RE = re.compile(r"[A-Za-z0-9_.,&|\[\]*-]+")
CONSTRAINT_RULE = "use feature names of letters, digits, _ . - joined with & | , and [ ] *"
GPU_TYPE_RE = re.compile(r"[A-Za-z0-9_.-]+")  # it lands inside --gres=gpu:TYPE:N, so no colon
LABEL_KEY_RE = re.compile(r"[A-Za-z0-9._-]+")
APT_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+(?::[a-z0-9-]+)?(?:=[A-Za-z0-9.+~:-]+)?")
# PEP 508-ish requirement without markers: no quotes, $, `, \, ;, |, &, parentheses or newlines.
PIP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-\[\], <>=!~*@:/+]*")
SUITE_RE = re.compile(r"[a-z][a-z0-9-]*")
#: An e-mail address for SLURM's --mail-user: no blanks, quotes or shell characters.
MAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+")
REF_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*")
REF_EXPECTED = "a reference such as nvcr.io/nvidia/pytorch:24.01-py3 (letters, digits and . _ / : @ + -)"
CATALOG_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*(?::[A-Za-z0-9_.-]+)?")
# No '#': the URL lands in a definition header (MirrorURL:), which Apptainer cuts at '#'.
URL_RE = re.compile(r"https?://[A-Za-z0-9._~:/?\[\]@!&'()*+,;=%-]+")
NO_SPACE_PATH_RE = re.compile(r"[^\s\x00]+")
