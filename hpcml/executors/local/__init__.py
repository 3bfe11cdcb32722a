"""The embedded local executor: the same job scripts as SLURM, run by a slot scheduler
that hands out this machine's CPUs, memory and GPUs."""
