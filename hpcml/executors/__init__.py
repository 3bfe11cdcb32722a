"""Executors: where job scripts run (SLURM, or the local scheduler). See base.py."""

from __future__ import annotations

from hpcml.executors.base import Executor, LiveJob, Observation, StepJob

__all__ = ["Executor", "LiveJob", "Observation", "StepJob"]
