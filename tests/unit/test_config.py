"""config.load: layering, strictness and parsing, with a private HOME and environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcml import config
from hpcml.config import root_without_privileged_apptainer as detect
from hpcml.errors import ConfigError


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path / "home"), "HPCML_SITE_CONFIG": str(tmp_path / "site.toml")}


@pytest.fixture(autouse=True)
def privileged_apptainer(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about layering: not about the capabilities of the machine they run on."""
    monkeypatch.setattr(config, "root_without_privileged_apptainer", lambda: False)


def test_defaults_follow_home(env: dict[str, str]) -> None:
    s = config.load(env=env)
    assert s.catalogs == (f"{env['HOME']}/.cache/hpcml/images",)
    assert s.cache_dir == f"{env['HOME']}/.cache/hpcml"
    assert s.build_flags == () and s.executor == "auto" and s.require_signatures is False
    assert s.sources == ()


def test_layers_site_user_env_flags(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text('build_flags = ["--fakeroot"]\nbuild_jobs = 3\ncatalogs = ["/lab/hpcml"]\n')
    user = Path(env["HOME"]) / ".config/hpcml/config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('build_jobs = 5\nca_bundle = "ca.crt"\n')
    env |= {"HPCML_EXEC_FLAGS": "--userns --cleanenv", "HPCML_BUILD_JOBS": "7"}
    s = config.load({"executor": "local", "build_jobs": None}, env=env)
    assert s.build_flags == ("--fakeroot",)
    assert s.build_jobs == 7  # env beats both files; a None flag is "not given"
    assert s.ca_bundle == str(user.parent / "ca.crt")  # relative to the file that says it
    assert s.exec_flags == ("--userns", "--cleanenv")
    assert s.catalogs == ("/lab/hpcml",)
    assert s.executor == "local"
    assert s.sources == (str(tmp_path / "site.toml"), str(user))
    assert config.load({"build_jobs": 1}, env=env).build_jobs == 1


def test_catalogs_env_is_colon_separated_and_expands_home(env: dict[str, str]) -> None:
    s = config.load(env=env | {"HPCML_CATALOGS": "~/cache:/shared/lab/hpcml"})
    assert s.catalogs == (f"{env['HOME']}/cache", "/shared/lab/hpcml")


def test_xdg_and_hpcml_config_locate_the_user_file(env: dict[str, str], tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "hpcml").mkdir(parents=True)
    (xdg / "hpcml/config.toml").write_text("require_signatures = true\n")
    assert config.load(env=env | {"XDG_CONFIG_HOME": str(xdg)}).require_signatures is True
    other = tmp_path / "other.toml"
    other.write_text('gpu_request = "gres"\n')
    assert config.load(env=env | {"HPCML_CONFIG": str(other)}).gpu_request == "gres"


def test_unknown_key_names_file_and_allowed_keys(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text('catalog = ["/x"]\n')
    with pytest.raises(ConfigError) as err:
        config.load(env=env)
    assert str(tmp_path / "site.toml") in str(err.value)
    assert "'catalog'" in str(err.value) and "catalogs" in str(err.value) and "build_flags" in str(err.value)


def test_unknown_flag_is_an_error(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="unknown setting 'jobs'"):
        config.load({"jobs": 3}, env=env)


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("HPCML_BUILD_JOBS", "many", "expected an integer"),
        ("HPCML_BUILD_JOBS", "0", "positive"),
        ("HPCML_REQUIRE_SIGNATURES", "maybe", "true or false"),
        ("HPCML_EXECUTOR", "pbs", "allowed: auto, slurm, local"),
    ],
)
def test_bad_env_values_say_where_and_what(env: dict[str, str], var: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(env=env | {var: value})
    assert var in str(err.value) and message in str(err.value)


def test_bad_toml_type_and_syntax(env: dict[str, str], tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text("build_flags = 3\n")
    with pytest.raises(ConfigError, match="build_flags: expected a list of strings"):
        config.load(env=env)
    site.write_text("build_flags = [\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        config.load(env=env)


def test_bool_and_list_env_parsing(env: dict[str, str]) -> None:
    s = config.load(env=env | {"HPCML_REQUIRE_SIGNATURES": "yes", "HPCML_LOCAL_GPUS": "0, 1"})
    assert s.require_signatures is True and s.local_gpus == ("0", "1")


def test_every_setting_is_documented(env: dict[str, str]) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs/configuration.md").read_text()
    for key, var, _kind, text in config.describe():
        assert text
        assert f"`{key}`" in doc and f"`{var}`" in doc, f"docs/configuration.md misses {key}"


def test_root_without_cap_sys_resource_defaults_to_fakeroot_and_userns(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "root_without_privileged_apptainer", lambda: True)
    s = config.load(env=env)
    assert s.build_flags == ("--fakeroot",) and s.exec_flags == ("--userns",)
    # Any layer that names the flags decides, an empty list included.
    s = config.load(env=env | {"HPCML_EXEC_FLAGS": "--contain"})
    assert s.build_flags == ("--fakeroot",) and s.exec_flags == ("--contain",)
    site = Path(env["HPCML_SITE_CONFIG"])
    site.write_text("build_flags = []\n")
    assert config.load(env=env).build_flags == ()


def test_capability_detection_reads_capeff() -> None:
    full = "Name:\tx\nCapEff:\t000001ffffffffff\n"
    no_sys_resource = "Name:\tx\nCapEff:\t000001fffeffffff\n"  # bit 24 clear
    assert detect(no_sys_resource, uid=0) is True
    assert detect(full, uid=0) is False
    assert detect(no_sys_resource, uid=1000) is False  # not root: apptainer picks its own way


def test_ca_bundle_defaults_to_the_hosts_and_none_turns_it_off(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "ca-certificates.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(config, "HOST_CA_BUNDLES", (str(tmp_path / "missing.crt"), str(bundle)))
    assert config.load(env=env).ca_bundle == str(bundle)
    assert config.load(env=env | {"HPCML_CA_BUNDLE": "none"}).ca_bundle is None
    Path(env["HPCML_SITE_CONFIG"]).write_text('ca_bundle = "None"\n')
    assert config.load(env=env).ca_bundle is None
    assert config.load({"ca_bundle": str(tmp_path / "lab.crt")}, env=env).ca_bundle == str(tmp_path / "lab.crt")
    monkeypatch.setattr(config, "HOST_CA_BUNDLES", (str(tmp_path / "missing.crt"),))
    Path(env["HPCML_SITE_CONFIG"]).unlink()
    assert config.load(env=env).ca_bundle is None  # a host without a bundle: nothing bound
