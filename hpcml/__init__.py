"""hpcml: declarative ML workflows compiled to Apptainer images and SLURM jobs."""

__version__ = "0.1.0"
