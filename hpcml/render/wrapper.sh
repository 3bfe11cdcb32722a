# shellcheck shell=bash
#
# The job wrapper: the part of every hpcml job script that is the same for every step.
# hpcml/render/jobs.py renders a job script as `#SBATCH` lines, the step's settings (the
# variables below) and this wrapper; SLURM runs it with sbatch, the local executor with bash.
#
# How this template becomes part of a job script (hpcml/render/jobs.py, wrapper_text):
# - Everything above the line `# ---- hpcml task wrapper (the same for every step) ----`
#   is for this file alone; job scripts start their copy at that line.
# - `@NAME@` stands for a value defined in hpcml/render/protocol.py (WRAPPER_VALUES): exit
#   statuses, task-directory file names and environment variables that Python reads or
#   writes too. Rendering replaces every marker and refuses one it does not know. Each value
#   is a plain word, and a marker stands only where a plain word may (inside "double
#   quotes", as a command's argument, or a variable's name), so this file is valid bash as
#   written and `shellcheck hpcml/render/wrapper.sh` checks it on its own.
# - A line holding only a `# shellcheck disable=...` directive is left out of job scripts:
#   it silences what shellcheck says about a marker, not about the value it stands for.
#   Rendered scripts are checked again as a whole (tests/unit/test_jobs.py).
#
# The step's settings, which jobs._settings writes above the wrapper in every job script.
# The values here are examples, so that shellcheck knows the names and their types.
hpcml_step=train
hpcml_tasks=/work/.hpcml/tasks/train
hpcml_manifest=/work/.hpcml/runs/RUN/jobs/train.tasks
hpcml_array=1
hpcml_offset=0
hpcml_retries=2
hpcml_checkpoint_signal=USR1
hpcml_time_limit=3600
hpcml_shell=bash
hpcml_gpu=1
hpcml_container=(apptainer --quiet exec --cleanenv /work/image.sif)
hpcml_verify_key=/lab/keys/lab.pub.pem  # only with require_signatures

# ---- hpcml task wrapper (the same for every step) ----
# sbatch passes the submitter's environment on and sets SLURM_ARRAY_* only for arrays: a
# plain job submitted from inside an array task inherits that task's ids. Read them only
# in an array job.
if (( hpcml_array )); then
  hpcml_job_ref=${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-local}}_${SLURM_ARRAY_TASK_ID:-0}
else
  hpcml_job_ref=${SLURM_JOB_ID:-local}
fi
if [[ -n ${HPCML_TASK_INDEX:-} ]]; then
  hpcml_index=$HPCML_TASK_INDEX
elif (( hpcml_array )); then
  hpcml_index=$(( ${SLURM_ARRAY_TASK_ID:-0} + hpcml_offset ))
else
  hpcml_index=0
fi
hpcml_key=
while read -r hpcml_i hpcml_k; do
  if [[ $hpcml_i == "$hpcml_index" ]]; then hpcml_key=$hpcml_k; break; fi
done <"$hpcml_manifest"
if [[ -z $hpcml_key ]]; then
  echo "hpcml: task $hpcml_step/$hpcml_index is not in $hpcml_manifest" >&2
  exit 3
fi
taskdir=$hpcml_tasks/$hpcml_key
mkdir -p "$taskdir/@TASK_OUT@"
exec >>"$taskdir/@TASK_LOG@" 2>&1 </dev/null

hpcml_now() { date -u +%Y-%m-%dT%H:%M:%SZ; }
hpcml_put() {  # hpcml_put FILE VALUE: replace FILE atomically; a failed write (full disk) leaves no temporary file
  printf '%s\n' "$2" >"$taskdir/.$1.tmp.$$" && mv -f "$taskdir/.$1.tmp.$$" "$taskdir/$1" && return 0
  rm -f "$taskdir/.$1.tmp.$$"
  return 1
}
if [[ -f $taskdir/@TASK_EXITCODE@ && $(<"$taskdir/@TASK_EXITCODE@") == 0 ]]; then
  echo "hpcml: $(hpcml_now) task $hpcml_step/$hpcml_index already completed; not running it again"
  exit 0
fi
rm -f "$taskdir/@TASK_EXITCODE@" "$taskdir/@TASK_CAUSE@" "$taskdir/@TASK_REQUEUE@"

hpcml_child=
hpcml_signal=
hpcml_forwarded=
hpcml_preempt=
# Whether SLURM is taking this instance of the job off its node to run it again. From the
# moment it decides to preempt the job (while it still runs, before the signal arrives)
# `scontrol show job` gives a PreemptTime (None otherwise; one before this instance's
# StartTime belongs to an earlier instance). Once SLURM requeues it (the end of GraceTime,
# an administrator's `scontrol requeue`), the PreemptTime is gone but its Restarts count is
# above the SLURM_RESTART_COUNT this instance started with (JobState COMPLETING, as for a
# scancel, which leaves Restarts alone). Never in the local executor.
hpcml_slurm_says=
# shellcheck disable=SC2120,SC2317  # `${@EXECUTOR_ENV@` reads like `$@`; called by traps
hpcml_preempted() {
  # shellcheck disable=SC2199  # a marker, not `$@`
  [[ ${@EXECUTOR_ENV@:-slurm} != @LOCAL_EXECUTOR@ && -n ${SLURM_JOB_ID:-} ]] || return 1
  local info state='' preempt='' start='' restarts=0
  info=$(timeout 10 scontrol show job "$SLURM_JOB_ID" 2>/dev/null) || return 1
  if [[ $info =~ JobState=([^[:space:]]+) ]]; then state=${BASH_REMATCH[1]}; fi
  if [[ $info =~ PreemptTime=([^[:space:]]+) ]]; then preempt=${BASH_REMATCH[1]}; fi
  if [[ $info =~ StartTime=([^[:space:]]+) ]]; then start=${BASH_REMATCH[1]}; fi
  if [[ $info =~ Restarts=([0-9]+) ]]; then restarts=${BASH_REMATCH[1]}; fi
  hpcml_slurm_says="JobState=$state PreemptTime=${preempt:-None} Restarts=$restarts"
  (( restarts > ${SLURM_RESTART_COUNT:-0} )) && return 0
  [[ -n $preempt && $preempt != None && $preempt != Unknown && ! $preempt < $start ]]
}
# shellcheck disable=SC2317  # called by the traps below
hpcml_check_preempted() {  # on a signal from outside: remember a preemption once seen
  if [[ -z $hpcml_preempt ]] && hpcml_preempted; then
    hpcml_preempt=1
    echo "hpcml: $(hpcml_now) SLURM is preempting or requeueing job $hpcml_job_ref (SIG$1; $hpcml_slurm_says);" \
      "the task will run again"
  fi
}
hpcml_forward() {  # pass a signal on to the whole task (its own process group)
  hpcml_signal=$1
  if [[ -n $hpcml_child ]]; then
    hpcml_forwarded=1
    kill -s "$1" -- "-$hpcml_child" 2>/dev/null || kill -s "$1" "$hpcml_child" 2>/dev/null || true
  fi
}
# shellcheck disable=SC2317  # called by the TERM trap below
hpcml_terminated() {  # SIGTERM: preemption, the time limit, or scancel / Ctrl-C of the local executor
  # The task first (asking slurmctld takes a round trip, longer when it is busy); the
  # main loop reads what the check found only after this trap has returned.
  hpcml_forward TERM
  hpcml_check_preempted TERM
  if [[ -n $hpcml_preempt ]]; then
    :  # not an end: SLURM requeues the job, and nothing may say otherwise meanwhile
  elif (( hpcml_time_limit > 0 && SECONDS + 15 >= hpcml_time_limit )); then
    hpcml_put @TASK_CAUSE@ @CAUSE_TIMEOUT@
  else
    hpcml_put @TASK_CAUSE@ @CAUSE_CANCELLED@
  fi
}
trap hpcml_terminated TERM
trap 'hpcml_forward INT' INT
if [[ -n $hpcml_checkpoint_signal ]]; then
  trap 'hpcml_forward "$hpcml_checkpoint_signal"; hpcml_check_preempted "$hpcml_checkpoint_signal"' "$hpcml_checkpoint_signal"
fi

# shellcheck disable=SC2120  # `${@EXECUTOR_ENV@` reads like `$@` to shellcheck
hpcml_requeue() {  # on the checkpoint signal: run again later, from the checkpoint
  hpcml_put @TASK_REQUEUE@ "$(hpcml_now)"
  # shellcheck disable=SC2199  # a marker, not `$@`
  if [[ ${@EXECUTOR_ENV@:-slurm} == @LOCAL_EXECUTOR@ ]]; then
    echo "hpcml: $(hpcml_now) checkpointed; asking the local executor to requeue"
    # shellcheck disable=SC2242  # the marker stands for a number
    exit @REQUEUE_EXIT@
  fi
  echo "hpcml: $(hpcml_now) checkpointed; scontrol requeue $hpcml_job_ref"
  if scontrol requeue "$hpcml_job_ref"; then
    exit 0
  fi
  echo "hpcml: scontrol requeue $hpcml_job_ref failed; the task ends here"
  rm -f "$taskdir/@TASK_REQUEUE@"
}

# shellcheck disable=SC2317  # called by hpcml_yield
hpcml_job_state() {  # this job's JobState as slurmctld says it now; nothing when it does not answer
  local info
  info=$(timeout 10 scontrol show job "$SLURM_JOB_ID" 2>/dev/null) || return 0
  if [[ $info =~ JobState=([^[:space:]]+) ]]; then printf '%s\n' "${BASH_REMATCH[1]}"; fi
}
hpcml_yield() {  # after a preempted attempt: let SLURM run the task again, never count it as an end
  local n state requeued=
  n=$(( $(cat "$taskdir/@TASK_PREEMPTED@" 2>/dev/null || echo 0) + 1 ))
  hpcml_put @TASK_PREEMPTED@ "$n"
  hpcml_put @TASK_REQUEUE@ "$(hpcml_now)"
  trap '' TERM
  if [[ -n $hpcml_checkpoint_signal ]]; then trap '' "$hpcml_checkpoint_signal"; fi
  # A preempted job that ends by itself while SLURM still runs it (during GraceTime) is
  # recorded COMPLETED and never requeued. So: once SLURM is ending it (the SIGTERM at the
  # end of GraceTime: no longer RUNNING) the wrapper may go; before that it hands the
  # allocation back with a requeue (the high-priority job starts at once) or, should that
  # fail, stays until SLURM ends it.
  while :; do
    state=$(hpcml_job_state)
    if [[ -n $state && $state != RUNNING ]]; then
      echo "hpcml: $(hpcml_now) preempted (×$n, retries untouched); SLURM requeues the job (now $state)"
      exit 0
    fi
    if [[ $state == RUNNING && -z $requeued ]]; then
      requeued=1
      echo "hpcml: $(hpcml_now) preempted (×$n, retries untouched); scontrol requeue $hpcml_job_ref"
      if scontrol requeue "$hpcml_job_ref"; then exit 0; fi
      echo "hpcml: $(hpcml_now) scontrol requeue failed; waiting for SLURM to requeue the job"
    fi
    sleep 2
  done
}

if (( hpcml_gpu )); then  # the container sees exactly the GPUs this job was given
  # shellcheck disable=SC2043  # the marker stands for several names
  for hpcml_var in @DEVICE_ENV_VARS@; do
    if [[ -n ${!hpcml_var+set} ]]; then export "APPTAINERENV_$hpcml_var=${!hpcml_var}"; fi
  done
fi
export APPTAINERENV_HPCML_STEP=$hpcml_step APPTAINERENV_HPCML_TASK_INDEX=$hpcml_index
export APPTAINERENV_HPCML_JOB_ID=${SLURM_JOB_ID:-local}

# require_signatures: the image is verified here, where it runs, on the very file that
# runs (docs/security.md). The SIF is opened once; `apptainer verify` and every attempt's
# `apptainer exec` read it through that descriptor (/proc/self/fd/N, inherited), so a file
# swapped at its catalog path while the job waited, or after this check, is never run.
if [[ -n ${hpcml_verify_key:-} ]]; then
  hpcml_sif=${hpcml_container[-1]}
  hpcml_apptainer=${hpcml_container[0]}
  if [[ $hpcml_apptainer == hpcml_ranks ]]; then hpcml_apptainer=${hpcml_container[1]}; fi
  hpcml_sif_fd=
  if [[ -f $hpcml_sif && -r $hpcml_sif ]]; then exec {hpcml_sif_fd}<"$hpcml_sif"; fi
  if [[ -z $hpcml_sif_fd ]] || ! "$hpcml_apptainer" verify --key "$hpcml_verify_key" "/proc/self/fd/$hpcml_sif_fd"; then
    echo "hpcml: $(hpcml_now) refusing to run $hpcml_sif: its signature does not verify against" \
      "$hpcml_verify_key (require_signatures); it may have been replaced since submission"
    hpcml_put @TASK_EXITCODE@ @VERIFY_FAILED_EXIT@
    # shellcheck disable=SC2242  # the marker stands for a number
    exit @VERIFY_FAILED_EXIT@
  fi
  if [[ ${hpcml_container[0]} == hpcml_ranks ]]; then
    # Ranks that srun starts do not inherit this descriptor: each verifies again where it
    # runs, on the descriptor it then executes (hpcml_rank).
    export HPCML_RANK_VERIFY_KEY=$hpcml_verify_key
  else
    hpcml_container[-1]=/proc/self/fd/$hpcml_sif_fd
  fi
fi

# The attempt record for the report (`@TASK_ATTEMPTS@`): one short line per event, appended
# in one write; losing it (a full disk) must never fail the task.
hpcml_mark() {
  local t
  printf -v t '%(%s)T' -1
  printf '%s %s\n' "$1" "$t ${*:2}" >>"$taskdir/@TASK_ATTEMPTS@" 2>/dev/null || true
}
hpcml_sampler=
hpcml_sample_gpus() {  # a light nvidia-smi sample while the attempt runs, where there is one
  if (( hpcml_gpu )) && command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used,memory.total \
      --format=csv,noheader,nounits -l @GPU_SAMPLE_S@ >>"$taskdir/@TASK_GPU_SAMPLES@" 2>/dev/null &
    hpcml_sampler=$!
  fi
}
hpcml_stop_sampler() {
  if [[ -n $hpcml_sampler ]]; then kill "$hpcml_sampler" 2>/dev/null || true; hpcml_sampler=; fi
}

# Attempts are counted in `@TASK_ATTEMPT@` (every start) and `@TASK_TRIES@` (only those
# that spend the step's retries: a failure of the task's own, a requeue at the time
# limit). A preempted attempt, and one whose node failed under it (its wrapper never came
# back to count it), spend nothing.
hpcml_status=0
while :; do
  hpcml_attempt=$(( $(cat "$taskdir/@TASK_ATTEMPT@" 2>/dev/null || echo 0) + 1 ))
  hpcml_tries=$(cat "$taskdir/@TASK_TRIES@" 2>/dev/null || echo 0)
  hpcml_put @TASK_ATTEMPT@ "$hpcml_attempt"
  export APPTAINERENV_HPCML_ATTEMPT=$hpcml_attempt
  echo "hpcml: $(hpcml_now) task $hpcml_step/$hpcml_index key $hpcml_key attempt $hpcml_attempt of $(( hpcml_attempt + hpcml_retries - hpcml_tries ))" \
    "on $(hostname) job $hpcml_job_ref" \
    "devices ${CUDA_VISIBLE_DEVICES:-none}"
  if [[ -n $hpcml_signal ]]; then
    # The signal came before this attempt started (while the wrapper set up, or between
    # attempts): starting it now would run a cancelled or timed-out task to the end.
    hpcml_status=$(( 128 + $(kill -l "$hpcml_signal") ))
    echo "hpcml: $(hpcml_now) SIG$hpcml_signal arrived before attempt $hpcml_attempt started; not starting it"
  else
    hpcml_forwarded=
    hpcml_mark start "$hpcml_attempt" "${SLURMD_NODENAME:-${HOSTNAME:-unknown}}" "$hpcml_job_ref" "${CUDA_VISIBLE_DEVICES:--}"
    hpcml_sample_gpus
    set -m  # the task gets its own process group, so a forwarded signal reaches all of it
    "${hpcml_container[@]}" "$hpcml_shell" "$taskdir/@TASK_COMMAND@" &
    hpcml_child=$!
    set +m
    # A signal trapped between the fork and `hpcml_child=` found no child to pass it to.
    if [[ -n $hpcml_signal && -z $hpcml_forwarded ]]; then hpcml_forward "$hpcml_signal"; fi
    hpcml_status=0
    wait "$hpcml_child" || hpcml_status=$?
    while kill -0 "$hpcml_child" 2>/dev/null; do  # wait returned early for a trapped signal
      hpcml_status=0
      wait "$hpcml_child" || hpcml_status=$?
    done
    # It may have ended while a trap ran (the trap asks slurmctld after forwarding): then
    # the interrupted wait's 128+N is not its status. bash keeps a child's status, so
    # waiting once more gives the task's own.
    hpcml_status=0
    wait "$hpcml_child" || hpcml_status=$?
    hpcml_child=
    hpcml_stop_sampler
    hpcml_mark end "$hpcml_attempt" "$hpcml_status" "${hpcml_signal:--}" ${hpcml_preempt:+preempted}
  fi
  echo "hpcml: $(hpcml_now) attempt $hpcml_attempt exited with $hpcml_status${hpcml_signal:+ after SIG$hpcml_signal}"
  (( hpcml_status == 0 )) && break
  [[ -n $hpcml_preempt ]] && hpcml_yield  # does not return
  hpcml_tries=$(( hpcml_tries + 1 ))
  hpcml_put @TASK_TRIES@ "$hpcml_tries"
  if [[ -n $hpcml_signal && $hpcml_signal == "$hpcml_checkpoint_signal" ]] && (( hpcml_tries <= hpcml_retries )); then
    # shellcheck disable=SC2119  # see hpcml_requeue
    hpcml_requeue
  fi
  [[ -n $hpcml_signal ]] && break  # ended from outside: no retry here
  (( hpcml_tries > hpcml_retries )) && break
  echo "hpcml: retrying in this allocation"
done
hpcml_put @TASK_EXITCODE@ "$hpcml_status"
exit "$hpcml_status"
