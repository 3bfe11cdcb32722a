"""hpcml.spec.units: durations and sizes as users write them, and SLURM's formats."""

from __future__ import annotations

import pytest

from hpcml.spec.units import format_slurm_mem, format_slurm_time, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("4h", 14400),
        ("1d", 86400),
        ("1h30m", 5400),
        ("1d12h", 129600),
        ("1-12:00:00", 129600),
        ("2-00", 172800),
        ("1-01:30", 91800),
        ("01:30:00", 5400),
        ("05:30", 330),
        ("90", 5400),
        (90, 5400),
        (" 20m ", 1200),
        ("25:00:00", 90000),
    ],
)
def test_parse_duration(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "4 hours", "1.5h", "-5", "h", "1:60", "1-24:00:00", "1m1h", True, -1, "\u00b2", "\u0661\u0662h", "\u0661"]
)
def test_parse_duration_rejects(text: str | int) -> None:
    with pytest.raises(ValueError, match="invalid duration|must not be negative"):
        parse_duration(text)


def test_parse_duration_message_lists_forms() -> None:
    with pytest.raises(ValueError, match=r"30m, 4h, 1d.*HH:MM:SS"):
        parse_duration("soon")


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "00:00:00"), (59, "00:00:59"), (5400, "01:30:00"), (86399, "23:59:59"), (129600, "1-12:00:00")]
)
def test_format_slurm_time(seconds: int, text: str) -> None:
    assert format_slurm_time(seconds) == text
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "mib"),
    [("500M", 500), ("32G", 32768), ("1T", 1048576), ("1024K", 1), ("1536K", 2), ("512", 512), (512, 512), ("16GB", 16384), ("16GiB", 16384), ("2g", 2048)],
)
def test_parse_size(text: str | int, mib: int) -> None:
    assert parse_size(text) == mib


# "512B" reads as bytes: it must not silently mean 512 MiB.
@pytest.mark.parametrize("text", ["", "32X", "1.5G", "G", "-1G", "32 GB extra", False, "512B", "1iB", "\u0661\u0662G"])
def test_parse_size_rejects(text: str | int) -> None:
    with pytest.raises(ValueError, match=r"invalid size .*500M, 32G"):
        parse_size(text)


@pytest.mark.parametrize(("mib", "text"), [(32768, "32G"), (500, "500M"), (1536, "1536M"), (0, "0M")])
def test_format_slurm_mem(mib: int, text: str) -> None:
    assert format_slurm_mem(mib) == text
