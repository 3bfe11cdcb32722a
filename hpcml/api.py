"""The library API: every CLI command, the Snakemake helpers and the tests go through here."""

from __future__ import annotations
