"""External programs, one small class each, argv lists only: the runner (the one place
commands run, and where SSH plugs in), SLURM's commands and Apptainer. Parsers are pure."""
