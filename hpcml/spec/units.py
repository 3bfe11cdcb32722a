"""Durations and sizes as users write them, parsed once into seconds and MiB.

SLURM is the reference: a plain number of minutes (`90`), `MM:SS`, `HH:MM:SS` and
`D-HH[:MM[:SS]]` mean what they mean to `sbatch --time`, and sizes use binary units
(`1G` = 1024 MiB) as in `sbatch --mem`.
"""

from __future__ import annotations

import re

DURATION_FORMS = (
    "a number of minutes (90), 90s, 30m, 4h, 1d or combinations such as 1h30m, "
    "MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
)
SIZE_FORMS = "a number of MiB (512), or a number with unit K, M, G or T (500M, 32G, 1T; binary units, optional B/iB after the unit: 16GB)"

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# re.ASCII: `\d` alone would accept other scripts' digits (`١٢h`) and `²`, which int() refuses.
_COMPOUND = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", re.ASCII)
_CLOCK = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", re.ASCII)
# A `B`/`iB` suffix only after a unit: `512B` is bytes to a reader, not 512 MiB.
_SIZE = re.compile(r"(\d+)\s*(?:([KMGT])(?:i?B)?)?", re.IGNORECASE | re.ASCII)
_SIZE_KIB = {"K": 1, "M": 1024, "G": 1024**2, "T": 1024**3}


def parse_duration(text: str | int) -> int:
    """Parse a wall-time into whole seconds.

    Example: ``parse_duration("1h30m") == 5400``; ``parse_duration(90) == 5400`` (minutes, as SLURM).
    Raises ValueError naming the accepted forms.
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r}: expected {DURATION_FORMS}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"invalid duration {text}: must not be negative")
        return text * 60
    s = str(text).strip()
    if s.isascii() and s.isdigit():
        return int(s) * 60
    if s and (m := _COMPOUND.fullmatch(s)) and any(m.groups()):
        return sum(int(v) * _UNIT_SECONDS[u] for v, u in zip(m.groups(), "dhms") if v)
    if m := _CLOCK.fullmatch(s):
        return _clock_seconds(s, m)
    raise ValueError(f"invalid duration {str(text)!r}: expected {DURATION_FORMS}")


def _clock_seconds(s: str, m: re.Match[str]) -> int:
    days, a, b, c = m.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        h, mi, sec = int(a), int(b or 0), int(c or 0)
        total = int(days) * 86400 + h * 3600 + mi * 60 + sec
        fields = [(h, 24)] + [(v, 60) for v in (mi, sec)]
    elif c is not None:  # HH:MM:SS
        h, mi, sec = int(a), int(b), int(c)
        total, fields = h * 3600 + mi * 60 + sec, [(mi, 60), (sec, 60)]
    elif b is not None:  # MM:SS
        mi, sec = int(a), int(b)
        total, fields = mi * 60 + sec, [(sec, 60)]
    else:  # pragma: no cover - plain digits are handled before
        total, fields = int(a) * 60, []
    if any(v >= limit for v, limit in fields):
        raise ValueError(f"invalid duration {s!r}: a field is out of range (hours < 24, minutes and seconds < 60)")
    return total


def format_slurm_time(seconds: int) -> str:
    """Format seconds as SLURM writes times: ``HH:MM:SS``, or ``D-HH:MM:SS`` from one day on.

    Example: ``format_slurm_time(5400) == "01:30:00"``; ``format_slurm_time(129600) == "1-12:00:00"``.
    """
    if seconds < 0:
        raise ValueError(f"negative duration {seconds}")
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    clock = f"{h:02d}:{m:02d}:{s:02d}"
    return f"{days}-{clock}" if days else clock


def parse_size(text: str | int) -> int:
    """Parse a memory size into MiB (binary units; a plain number is MiB, as in SLURM).

    Example: ``parse_size("32G") == 32768``; ``parse_size("1536K") == 2`` (rounded up to whole MiB).
    Raises ValueError naming the accepted forms.
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid size {text!r}: expected {SIZE_FORMS}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"invalid size {text}: must not be negative")
        return text
    m = _SIZE.fullmatch(str(text).strip())
    if not m:
        raise ValueError(f"invalid size {str(text)!r}: expected {SIZE_FORMS}")
    kib = int(m.group(1)) * _SIZE_KIB[(m.group(2) or "M").upper()]
    return -(-kib // 1024)  # SLURM counts memory in whole MiB; never ask for less than written


def format_slurm_mem(mb: int) -> str:
    """Format MiB for ``sbatch --mem``: ``"32G"`` when a whole number of GiB, else ``"500M"``."""
    if mb < 0:
        raise ValueError(f"negative size {mb}")
    if mb and mb % 1024 == 0:
        return f"{mb // 1024}G"
    return f"{mb}M"


def human_duration(seconds: float) -> str:
    """A duration for people to read: ``42s``, ``3m 05s``, ``2h 10m`` (report, live view)."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"
