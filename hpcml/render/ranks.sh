# shellcheck shell=bash
#
# The rank launcher: the part of a job script that starts a multi-process step (launch:
# per_node or per_gpu; docs/distributed.md) once per rank. Single-process steps do not
# have it: their job scripts are exactly what they were before multi-process launches.
#
# hpcml/render/jobs.py puts this file's text (from the `# ---- hpcml ranks` line on, with
# the `@NAME@` markers of protocol.RANKS_VALUES filled in, as for wrapper.sh) between the
# step's settings and the wrapper, and makes `hpcml_ranks` the first word of
# `hpcml_container`. The wrapper then runs `hpcml_ranks CONTAINER... SHELL CMD` where it
# runs the container of a single-process step: in the background, in its own process
# group, waited for, with signals forwarded to that group. So everything the wrapper does
# around an attempt (retries, the checkpoint requeue, the exit-code file) is unchanged.
#
# The settings jobs._rank_settings writes above this part (examples, for shellcheck):
hpcml_nodes=2
hpcml_ranks_per_node=2
hpcml_gpu_per_rank=1
hpcml_gpu=1
taskdir=/work/.hpcml/tasks/train/KEY  # set by the wrapper before it runs hpcml_ranks

# ---- hpcml ranks: one container per rank ----
hpcml_rank() {  # hpcml_rank GPU PER_GPU RECORDS ARGV...: one rank: its ids and devices, its container
  export APPTAINERENV_RANK=$SLURM_PROCID APPTAINERENV_NODE_RANK=$SLURM_NODEID
  export APPTAINERENV_HPCML_NODE=${SLURMD_NODENAME:-$HOSTNAME}
  # One process per node is a launcher (torchrun, accelerate, Lightning): it sets its
  # workers' LOCAL_RANK itself, and some take a LOCAL_RANK of their own to mean "I am a worker".
  if (( $2 )); then export APPTAINERENV_LOCAL_RANK=$SLURM_LOCALID; fi
  local var status=0 records=$3
  if (( $1 )); then  # the rank sees exactly the GPUs it was given
    # shellcheck disable=SC2043  # the marker stands for several names
    for var in @DEVICE_ENV_VARS@; do
      if [[ -n ${!var+set} ]]; then export "APPTAINERENV_$var=${!var}"; fi
    done
  fi
  shift 3
  if [[ -n ${HPCML_RANK_VERIFY_KEY:-} ]]; then  # require_signatures: verified on this rank's node
    local argv=("$@") fd='' sif=${*: -3:1}
    if [[ -f $sif && -r $sif ]]; then exec {fd}<"$sif"; fi
    if [[ -z $fd ]] || ! "$1" verify --key "$HPCML_RANK_VERIFY_KEY" "/proc/self/fd/$fd" >/dev/null; then
      echo "hpcml: rank $SLURM_PROCID refuses to run $sif: its signature does not verify against $HPCML_RANK_VERIFY_KEY"
      printf '%s\n' @VERIFY_FAILED_EXIT@ >"$records/$(date +%s%N).$SLURM_PROCID" 2>/dev/null || true
      # shellcheck disable=SC2242  # the marker stands for a number
      exit @VERIFY_FAILED_EXIT@
    fi
    argv[${#argv[@]}-3]=/proc/self/fd/$fd
    set -- "${argv[@]}"
  fi
  # The container gets the rank's signals itself (SLURM signals every process of the step;
  # locally they share a process group); this shell only waits and records.
  trap ':' INT TERM HUP QUIT ALRM USR1 USR2
  "$@" || status=$?
  if (( status != 0 )); then  # `NANOSECONDS.RANK` holding the status: the first failure is the cause
    printf '%s\n' "$status" >"$records/$(date +%s%N).$SLURM_PROCID" 2>/dev/null || true
  fi
  exit "$status"
}

hpcml_label() {  # hpcml_label RANK: each line prefixed `RANK: `, as `srun --label` does
  trap '' INT TERM HUP QUIT ALRM USR1 USR2  # the rank's signals are not for it: it ends with its input
  local line
  while IFS= read -r line || [[ -n $line ]]; do printf '%s: %s\n' "$1" "$line"; done
}

hpcml_local_ranks() {  # hpcml_local_ranks RECORDS ARGV...: this machine's ranks as local processes
  local devices=() pids=() i p dev status=0
  local -A ended=()
  IFS=, read -ra devices <<<"${CUDA_VISIBLE_DEVICES:-}"
  for (( i = 0; i < hpcml_ranks_per_node; i++ )); do
    dev=${CUDA_VISIBLE_DEVICES:-}
    if (( hpcml_gpu_per_rank )); then dev=${devices[i]:-}; fi  # rank i gets the i-th GPU of the task's
    CUDA_VISIBLE_DEVICES=$dev SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NODEID=0 \
      hpcml_rank "$hpcml_gpu" "$hpcml_gpu_per_rank" "$@" > >(hpcml_label "$i") 2>&1 &
    pids+=("$!")
  done
  while (( ${#ended[@]} < ${#pids[@]} )); do
    wait -n 2>/dev/null || true  # a rank ended, or a signal came
    for i in "${!pids[@]}"; do
      p=${pids[i]}
      if [[ -n ${ended[$p]:-} ]] || kill -0 "$p" 2>/dev/null; then continue; fi
      ended[$p]=0
      wait "$p" || ended[$p]=$?
      if (( ended[$p] != 0 && status == 0 )); then  # as srun --kill-on-bad-exit: end the others
        status=${ended[$p]}
        echo "hpcml: rank $i exited with ${ended[$p]}; ending the other ranks"
        kill -s TERM 0 2>/dev/null || true  # this launcher's process group: every rank (this shell traps it)
      fi
    done
  done
  return "$status"
}

hpcml_ranks() {  # hpcml_ranks ARGV...: ARGV (the container and its command) once per rank
  local world=$(( hpcml_nodes * hpcml_ranks_per_node )) hosts=() bind=() status=0 first=()
  local port_base=@MASTER_PORT_BASE@ port_span=@MASTER_PORT_SPAN@ records=$taskdir/@TASK_RANKS@
  export APPTAINERENV_WORLD_SIZE=$world
  if (( hpcml_gpu_per_rank )); then export APPTAINERENV_LOCAL_WORLD_SIZE=$hpcml_ranks_per_node; fi
  # The wrapper signals this process group; the ranks get the signals themselves (srun
  # passes them on to every rank), so this shell only keeps waiting.
  trap ':' INT TERM HUP QUIT ALRM USR1 USR2
  rm -rf "$records"
  mkdir -p "$records"
  # shellcheck disable=SC2199  # a marker, not `$@`
  if [[ ${@EXECUTOR_ENV@:-slurm} == @LOCAL_EXECUTOR@ ]]; then
    export APPTAINERENV_MASTER_ADDR=127.0.0.1
    export APPTAINERENV_MASTER_PORT=$(( port_base + $$ % port_span ))
    hpcml_local_ranks "$records" "$@" || status=$?
  else
    # Rank 0 runs on the allocation's first node; the port comes from the job id, so two
    # jobs sharing a node do not collide.
    mapfile -t hosts < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
    export APPTAINERENV_MASTER_ADDR=${hosts[0]:-$(hostname)}
    export APPTAINERENV_MASTER_PORT=$(( port_base + SLURM_JOB_ID % port_span ))
    if (( hpcml_gpu_per_rank )); then bind=(--gpus-per-task=1); fi
    echo "hpcml: $world ranks on $hpcml_nodes node(s), rendezvous at $APPTAINERENV_MASTER_ADDR:$APPTAINERENV_MASTER_PORT"
    # --kill-on-bad-exit: a rank that fails ends the others (no hung allocation); --label:
    # each output line starts with its rank.
    srun --label --kill-on-bad-exit=1 --nodes="$hpcml_nodes" --ntasks="$world" \
      --ntasks-per-node="$hpcml_ranks_per_node" "${bind[@]}" \
      bash -c "$(declare -f hpcml_rank)"'; hpcml_rank "$@"' hpcml-rank "$hpcml_gpu" "$hpcml_gpu_per_rank" \
      "$records" "$@" || status=$?
  fi
  # The task's exit status is that of the rank that failed first: the others were ended
  # because of it (143 from SIGTERM, which srun would report as the highest).
  first=("$records"/*)  # in name order: the earliest first
  if (( status != 0 )) && [[ -f ${first[0]} ]]; then
    status=$(<"${first[0]}")
    echo "hpcml: rank ${first[0]##*.} failed first, with exit status $status"
  fi
  rmdir "$records" 2>/dev/null || true  # kept only when it holds a record
  return "$status"
}
