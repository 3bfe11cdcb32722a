"""What the job wrapper and hpcml agree on: exit statuses, task-directory file names,
environment variables.

The wrapper (`wrapper.sh` beside this module) is bash; the executors, the run state and
the submitter are Python. Every value both sides must spell the same is defined here once:
the wrapper template names it as an `@NAME@` marker and `render.jobs` fills the marker
from `WRAPPER_VALUES` when it renders a job script. Python reads the same names from here.

Example:

    Path(task_dir, TASK_EXITCODE).read_text()   # what the wrapper wrote with hpcml_put
"""

from __future__ import annotations

from typing import Mapping

#: Exit status of a wrapper that asks the local executor to run its task again
#: (EX_TEMPFAIL); it writes TASK_REQUEUE first, so a program's own 75 is not mistaken.
REQUEUE_EXIT = 75

#: Exit status of a task whose image fails the signature check in the job
#: (require_signatures; EX_NOPERM): the wrapper refuses to run it.
VERIFY_FAILED_EXIT = 77

# ---- the task directory `tasks/<step>/<key>/` (see run/state.py for the whole layout) ----

#: The task's output directory, `{out}` in a command.
TASK_OUT = "out"
#: Everything the wrapper and the task print, appended across attempts.
TASK_LOG = "log"
#: The task's filled command, run by the container's shell.
TASK_COMMAND = "cmd.sh"
#: The exit status of the task's last attempt; 0 here means done (the ground truth).
TASK_EXITCODE = "exitcode"
#: Why a signal ended the task: CAUSE_TIMEOUT or CAUSE_CANCELLED.
TASK_CAUSE = "cause"
#: Marker (with a timestamp) of a task that requeued itself on the checkpoint signal.
TASK_REQUEUE = "requeue"
#: The number of the attempt running or last run (1 for the first).
TASK_ATTEMPT = "attempt"
#: How many attempts spent the step's `retries`: those that failed on their own or were
#: requeued at the time limit; preempted ones and those lost with their node do not.
TASK_TRIES = "tries"
#: How many times SLURM preempted the task (its wrapper counts each: docs/running.md).
TASK_PREEMPTED = "preempted"
#: One line appended per attempt event, for the report (run/trace.py reads it):
#: `start EPOCH ATTEMPT NODE JOBREF DEVICES` and `end EPOCH ATTEMPT STATUS SIGNAL` (DEVICES
#: and SIGNAL are `-` when there are none). Each line is one
#: short O_APPEND write, so a reader sees whole lines; a torn or unknown line is skipped.
TASK_ATTEMPTS = "attempts"
#: `nvidia-smi --query-gpu=...` samples (CSV) taken while an attempt runs on a GPU node
#: where nvidia-smi exists; absent elsewhere.
TASK_GPU_SAMPLES = "gpu.csv"
#: Directory of a multi-process step's rank records: one file `NANOSECONDS.RANK` holding the
#: exit status of each rank that failed in the current attempt (ranks.sh).
TASK_RANKS = "ranks"
#: Seconds between two GPU samples: light enough to cost nothing beside a training job.
GPU_SAMPLE_S = 30

#: What the wrapper writes into TASK_CAUSE on SIGTERM: near the time limit, or before it.
CAUSE_TIMEOUT = "timeout"
CAUSE_CANCELLED = "cancelled"

# ---- environment variables -----------------------------------------------------------------

#: Set to LOCAL_EXECUTOR by the local scheduler: the wrapper then requeues by exiting with
#: REQUEUE_EXIT instead of calling `scontrol requeue`.
EXECUTOR_ENV = "HPCML_EXECUTOR"
LOCAL_EXECUTOR = "local"

#: Environment variables through which SLURM (and ROCm) name the allocated devices; the
#: wrapper forwards every one that is set into the container (through `--cleanenv`).
DEVICE_ENV_VARS = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL")

# ---- multi-process steps (ranks.sh; docs/distributed.md) -----------------------------------

#: MASTER_PORT of a multi-process step: MASTER_PORT_BASE + job id % MASTER_PORT_SPAN (the
#: local executor: + the wrapper's pid), so that two jobs sharing a node do not collide.
MASTER_PORT_BASE = 10000
MASTER_PORT_SPAN = 50000

#: The wrapper template's markers and their text. Each value is a plain word (or words
#: separated by one blank), so it is safe wherever the template puts a marker.
WRAPPER_VALUES: Mapping[str, str] = {
    "REQUEUE_EXIT": str(REQUEUE_EXIT),
    "VERIFY_FAILED_EXIT": str(VERIFY_FAILED_EXIT),
    "TASK_OUT": TASK_OUT,
    "TASK_LOG": TASK_LOG,
    "TASK_COMMAND": TASK_COMMAND,
    "TASK_EXITCODE": TASK_EXITCODE,
    "TASK_CAUSE": TASK_CAUSE,
    "TASK_REQUEUE": TASK_REQUEUE,
    "TASK_ATTEMPT": TASK_ATTEMPT,
    "TASK_TRIES": TASK_TRIES,
    "TASK_PREEMPTED": TASK_PREEMPTED,
    "TASK_ATTEMPTS": TASK_ATTEMPTS,
    "TASK_GPU_SAMPLES": TASK_GPU_SAMPLES,
    "GPU_SAMPLE_S": str(GPU_SAMPLE_S),
    "CAUSE_TIMEOUT": CAUSE_TIMEOUT,
    "CAUSE_CANCELLED": CAUSE_CANCELLED,
    "EXECUTOR_ENV": EXECUTOR_ENV,
    "LOCAL_EXECUTOR": LOCAL_EXECUTOR,
    "DEVICE_ENV_VARS": " ".join(DEVICE_ENV_VARS),
}

#: The rank launcher's markers (ranks.sh, only in job scripts of multi-process steps).
RANKS_VALUES: Mapping[str, str] = {
    "EXECUTOR_ENV": EXECUTOR_ENV,
    "LOCAL_EXECUTOR": LOCAL_EXECUTOR,
    "DEVICE_ENV_VARS": " ".join(DEVICE_ENV_VARS),
    "MASTER_PORT_BASE": str(MASTER_PORT_BASE),
    "MASTER_PORT_SPAN": str(MASTER_PORT_SPAN),
    "TASK_RANKS": TASK_RANKS,
    "VERIFY_FAILED_EXIT": str(VERIFY_FAILED_EXIT),
}
