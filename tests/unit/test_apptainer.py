"""Apptainer argv builders and output parsers (pure)."""

from __future__ import annotations

import pytest

from hpcml.clients.apptainer import Apptainer, parse_labels, parse_version
from hpcml.errors import CatalogError, HpcmlError
from hpcml.clients.runner import LocalRunner

APP = Apptainer(LocalRunner(), "/usr/bin/apptainer")


def test_build_argv_puts_flags_and_binds_before_output_then_def() -> None:
    argv = APP.build_argv("/t/x.def", "/t/x.sif", ["--fakeroot"], ["/ca:/var/tmp", "/data:/data:ro"])
    assert argv == ["/usr/bin/apptainer", "build", "--force", "--fakeroot", "--bind", "/ca:/var/tmp",
                    "--bind", "/data:/data:ro", "/t/x.sif", "/t/x.def"]


def test_exec_argv_passes_env_as_separate_words() -> None:
    argv = APP.exec_argv("/c/x.sif", ["sh", "-c", "echo $A; rm -rf /"], ["--userns"], ["/w"], {"A": "b c"})
    assert argv == ["/usr/bin/apptainer", "exec", "--userns", "--bind", "/w", "--env", "A=b c",
                    "/c/x.sif", "sh", "-c", "echo $A; rm -rf /"]


def test_sign_verify_and_inspect_argv() -> None:
    assert APP.sign_argv("x.sif", "k.pem") == ["/usr/bin/apptainer", "sign", "--key", "k.pem", "x.sif"]
    assert APP.verify_argv("x.sif", "p.pem") == ["/usr/bin/apptainer", "verify", "--key", "p.pem", "x.sif"]
    assert APP.inspect_labels_argv("x.sif")[1:] == ["inspect", "--json", "--labels", "x.sif"]


@pytest.mark.parametrize(
    ("text", "version"),
    [("apptainer version 1.4.5\n", "1.4.5"), ("apptainer version 1.3.6-1.el9\n", "1.3.6-1.el9"),
     ("singularity-ce version 4.1.0\n", "4.1.0")],
)
def test_parse_version(text: str, version: str) -> None:
    assert parse_version(text) == version


def test_parse_version_rejects_garbage() -> None:
    with pytest.raises(HpcmlError, match="unrecognised"):
        parse_version("bash: apptainer: command not found")


def test_parse_labels() -> None:
    text = '{"data":{"attributes":{"labels":{"org.hpcml.key":"ab12","org.hpcml.image":"base"}}},"type":"container"}'
    assert parse_labels(text) == {"org.hpcml.key": "ab12", "org.hpcml.image": "base"}
    assert parse_labels('{"data":{"attributes":{"labels":null}}}') == {}
    with pytest.raises(CatalogError):
        parse_labels("not json")
