"""A run of a workflow: submit the DAG, follow it (status, watch, cancel, logs, history),
and the files of the run directory `.hpcml/` (plan file, journal, task state)."""
