"""A run of a workflow, after planning and images: submit the DAG and follow it.

    submit.py     start(): reconcile, task directories, job scripts, one submission per step
    reconcile.py  which tasks are still live in an earlier run's jobs (found by job name)
    taskdir.py    a task's directory before its job starts (cmd.sh, {in.STEP} links)
    status.py     which run is meant, one polling round (status), following it (watch)
    control.py    cancel, logs (and follow), history; what an interrupted run leaves
    planfile.py   plan.json: typed, versioned, one writer and one loader
    rundir.py     the `.hpcml/` layout, run ids, the run lock
    journal.py    the append-only journal;  durable.py  atomic and batched file writes
    tasks.py      task states, derived purely from task files and executor records
"""
