"""`hpcml doctor`'s judgements, fed with the facts and pasted output of other machines,
and the `--gpu` job script (golden, `bash -n`, shellcheck). The checks on the real
testbed are tests/integration/test_doctor_testbed.py."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from hpcml.clients.slurminfo import parse_gres, parse_nodes, parse_partitions
from hpcml.config import Settings
from hpcml.doctor import apptainer as dapp
from hpcml.doctor import slurm as dslurm
from hpcml.doctor import storage as dstorage
from hpcml.doctor.gpu import judge
from hpcml.model import Resources, Step
from hpcml.render.doctorjob import (
    GpuJobSpec,
    GpuReport,
    cuda_from_json,
    cuda_from_labels,
    parse_gpu_output,
    render_gpu_script,
)
from hpcml.results import Check, DoctorReport

# Pasted from the testbed (22.05.8), one partition changed to restricted groups and down.
PARTITIONS = """\
PartitionName=cpu AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=YES QoS=N/A DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=vm PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP TotalCPUs=2 TotalNodes=1 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED TRES=cpu=2,mem=22899M,node=1,billing=2
PartitionName=gpu AllowGroups=ml,vision AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=NO QoS=N/A DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=g[01-02] PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP TotalCPUs=64 TotalNodes=2 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED TRES=cpu=64,mem=500G,node=2,billing=64,gres/gpu=8
PartitionName=old AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=NO QoS=N/A DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=vm PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=DOWN TotalCPUs=2 TotalNodes=1 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED TRES=cpu=2,mem=22899M,node=1,billing=2
"""
NODES = """\
NodeName=vm Arch=x86_64 CoresPerSocket=2  CPUAlloc=1 CPUEfctv=2 CPUTot=2 CPULoad=2.70 AvailableFeatures=(null) ActiveFeatures=(null) Gres=(null) NodeAddr=127.0.0.1 NodeHostName=vm Version=22.05.8 OS=Linux 6.18.44-fc-v1045 #1 SMP PREEMPT_DYNAMIC @0  RealMemory=22899 State=MIXED Partitions=cpu,old  BootTime=2026-12-02T14:18:17
NodeName=g01 Arch=x86_64 CoresPerSocket=16 Gres=gpu:a100:4(S:0-1) NodeAddr=g01 State=IDLE Partitions=gpu  BootTime=2026-12-02T14:18:17
"""


def test_partitions_and_nodes_parse_from_scontrol_output() -> None:
    parts = {p.name: p for p in parse_partitions(PARTITIONS)}
    assert parts["cpu"].default and parts["cpu"].up and parts["cpu"].allow_groups == ("ALL",)
    assert parts["gpu"].allow_groups == ("ml", "vision") and parts["gpu"].gpus == 8
    assert not parts["old"].up
    nodes = parse_nodes(NODES)
    assert [n.name for n in nodes] == ["vm", "g01"]
    assert nodes[0].gpus == {} and nodes[0].partitions == ("cpu", "old")
    assert nodes[1].gpus == {"a100": 4}


def test_gres_forms() -> None:
    assert parse_gres("gpu:2") == {"": 2}
    assert parse_gres("gpu:a100:4(S:0-1),gpu:v100:2,shard:8") == {"a100": 4, "v100": 2}
    assert parse_gres("(null)") == {}


def _facts(**kw: object) -> dapp.Facts:
    base = {"binary": "apptainer", "version": "1.4.5", "version_error": "", "suid_install": False, "userns": True,
                "user": "ana", "uid": 1000, "subuid": True, "subgid": True, "privileged_root": False, "squashfuse": True}
    return dapp.Facts(**{**base, **kw})  # type: ignore[arg-type]


def test_build_check_names_each_way_and_its_fix() -> None:
    assert dapp.build_check(_facts()).status == "pass"
    no_subid = dapp.build_check(_facts(subuid=False))
    assert no_subid.status == "warn" and "/etc/subuid" in no_subid.detail
    assert "apptainer config fakeroot --add ana" in no_subid.fix
    nothing = dapp.build_check(_facts(userns=False, subuid=False))
    assert nothing.status == "fail" and "user namespaces are off" in nothing.detail and "sysctl" in nothing.fix
    assert dapp.build_check(_facts(userns=False, suid_install=True)).status == "pass"
    assert dapp.build_check(_facts(privileged_root=True, subuid=False)).status == "pass"
    assert dapp.build_check(_facts(version=None)).status == "skip"


def test_version_and_run_checks() -> None:
    assert dapp.version_check(_facts(version=None, version_error="not found")).status == "fail"
    assert dapp.version_check(_facts(version="1.0.3")).status == "warn"
    assert dapp.run_check(_facts()).status == "pass"
    slow = dapp.run_check(_facts(squashfuse=False))
    assert slow.status == "warn" and "--unsquash" in slow.detail and "squashfuse" in slow.fix
    assert dapp.run_check(_facts(squashfuse=False, suid_install=True)).status == "pass"


def test_subid_entries_by_name_or_uid() -> None:
    assert dapp.has_subid("ana:100000:65536\n", "ana", 1000)
    assert dapp.has_subid("1000:100000:65536\n", "ana", 1000)
    assert not dapp.has_subid("bob:100000:65536\nana:1:0\n", "ana", 1000)


def _cluster(**kw: object) -> dslurm.Cluster:
    base = {"reachable": True, "why": "slurm 22.05 answers",
                "config": {"AccountingStorageType": "accounting_storage/slurmdbd", "MaxArraySize": "1001",
                        "SelectType": "select/cons_tres"},
                "partitions": tuple(parse_partitions(PARTITIONS)), "nodes": tuple(parse_nodes(NODES)),
                "groups": frozenset({"ana"}), "root": False}
    return dslurm.Cluster(**{**base, **kw})  # type: ignore[arg-type]


def _step(name: str, **res: object) -> Step:
    return Step(name=name, image="img", run="true", resources=Resources(**res))  # type: ignore[arg-type]


def test_slurm_checks_on_a_healthy_cluster() -> None:
    checks = {c.id: c for c in dslurm.checks(_cluster(), executor="auto", gpu_request="auto")}
    assert [c.status for c in checks.values()] == ["pass"] * 5
    assert checks["slurm.partitions"].detail == "you can use: cpu* (* default)"  # gpu: not my group; old: down
    assert "4 x a100" in checks["slurm.gpus"].detail and "--gpus-per-node" in checks["slurm.gpus"].detail


def test_unreachable_slurm_fails_only_when_the_settings_ask_for_it() -> None:
    down = dslurm.Cluster(False, "sbatch is not installed")
    checks = dslurm.checks(down, executor="auto", gpu_request="auto")
    assert checks[0].status == "warn" and {c.status for c in checks[1:]} == {"skip"}
    assert dslurm.checks(down, executor="slurm", gpu_request="auto")[0].status == "fail"


def test_accounting_off_or_broken_is_a_warning_with_the_fix() -> None:
    off = dslurm.accounting_check(_cluster(config={"AccountingStorageType": "accounting_storage/none"}))
    assert off.status == "warn" and "accounting is off" in off.detail and "slurmdbd" in off.fix
    broken = dslurm.accounting_check(_cluster(sacct_error="sacct: error: Slurm accounting storage is disabled"))
    assert broken.status == "warn" and "sacct fails" in broken.detail


def test_a_step_partition_that_is_missing_down_or_closed_fails() -> None:
    steps = [_step("a", partition="nosuch"), _step("b", partition="old"), _step("c", partition="gpu"), _step("d")]
    check = dslurm.partitions_check(_cluster(), steps)
    assert check.status == "fail"
    assert "step a asks for partition 'nosuch', which this cluster does not have" in check.detail
    assert "'old', which is down" in check.detail and "'gpu', which is not open to you" in check.detail
    assert "step d" not in check.detail
    assert check.fix.startswith("set `partition:` of those steps (or build_partition) to one of: cpu")
    build = dslurm.partitions_check(_cluster(), (), build_partition="big")
    assert build.status == "fail" and "the setting build_partition asks for partition 'big'" in build.detail
    assert dslurm.partitions_check(_cluster(groups=frozenset({"ml"})), [_step("c", partition="gpu")]).status == "pass"


def test_partitions_that_cannot_be_listed_fail_with_the_reason() -> None:
    check = dslurm.partitions_check(_cluster(partitions=(), partitions_error="slurm_load_partitions: Access denied"))
    assert check.status == "fail" and "Access denied" in check.detail


def test_gpu_requests_of_steps_are_checked_against_nodes_and_style() -> None:
    ok = dslurm.gpus_check(_cluster(), "auto", [_step("t", partition="gpu", gpus=2, gpu_type="a100")])
    assert ok.status == "pass"
    bad = dslurm.gpus_check(_cluster(), "auto", [_step("t", gpus=1), _step("u", partition="gpu", gpus=1, gpu_type="h100")])
    assert bad.status == "fail" and "step t asks for GPUs in partition cpu, which has none" in bad.detail
    assert "GPU type 'h100'" in bad.detail and "a100" in bad.fix
    old = _cluster(config={"SelectType": "select/cons_res"})
    assert dslurm.gpus_check(old, "gpus-per-node").status == "fail"
    assert "--gres=gpu:N" in dslurm.gpus_check(old, "auto").detail


def test_arrays_check() -> None:
    assert dslurm.arrays_check(_cluster()).status == "pass"
    assert dslurm.arrays_check(_cluster(config={"MaxArraySize": "1"})).status == "warn"


def test_catalog_checks_personal_shared_and_keys(tmp_path: Path) -> None:
    personal, shared = tmp_path / "mine", tmp_path / "lab"
    personal.mkdir(mode=0o755)
    shared.mkdir()
    os.chmod(shared, 0o775)  # group-writable, not setgid
    checks = dstorage.catalog_checks(Settings(catalogs=(str(personal), str(shared))), umask=0o022)
    assert checks[0].status == "pass" and "(new images go here)" in checks[0].detail
    assert checks[1].status == "warn" and "not setgid" in checks[1].detail and "chmod g+s" in checks[1].fix
    assert "umask 0022" in checks[1].detail and "umask 0002" in checks[1].fix
    os.chmod(shared, 0o2775)
    assert dstorage.catalog_checks(Settings(catalogs=(str(shared),)), umask=0o002)[0].status == "pass"
    unsigned = Settings(catalogs=(str(personal),), require_signatures=True)
    check = dstorage.catalog_checks(unsigned, umask=0o022)[0]
    assert check.status == "fail" and "verify_key" in check.detail
    missing = Settings(catalogs=(str(personal),), signing_key=str(tmp_path / "nokey.pem"))
    assert "signing_key" in dstorage.catalog_checks(missing, umask=0o022)[0].detail


def test_a_catalog_not_made_yet_is_fine(tmp_path: Path) -> None:
    check = dstorage.catalog_checks(Settings(catalogs=(str(tmp_path / "new" / "cat"),)), umask=0o022)[0]
    assert check.status == "pass" and "created on the first build" in check.detail


def test_ca_bundle_check(tmp_path: Path) -> None:
    assert dstorage.ca_check(Settings(ca_bundle=None)).status == "pass"
    assert dstorage.ca_check(Settings(ca_bundle=str(tmp_path / "none.pem"))).status == "fail"
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    assert dstorage.ca_check(Settings(ca_bundle=str(empty))).status == "fail"
    good = tmp_path / "ca.pem"
    good.write_text("-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n")
    assert dstorage.ca_check(Settings(ca_bundle=str(good))).detail.endswith("(1 certificates)")


def test_space_checks_read_the_apptainer_variables(tmp_path: Path) -> None:
    checks = dstorage.space_checks({"HOME": str(tmp_path), "APPTAINER_TMPDIR": str(tmp_path / "t")})
    assert [c.id for c in checks] == ["space.cache", "space.tmp"]
    assert checks[1].detail.startswith(f"{tmp_path}/t:")


def test_report_exit_and_json() -> None:
    report = DoctorReport((Check("a", "A", "pass", "x"), Check("b", "B", "warn", "y", "do z")))
    assert report.ok and report.counts() == {"pass": 1, "warn": 1, "fail": 0, "skip": 0}
    failing = DoctorReport((*report.checks, Check("c", "C", "fail", "w", "fix")))
    assert not failing.ok and failing.as_dict()["checks"][2] == {"id": "c", "title": "C", "status": "fail",
                                                                  "detail": "w", "fix": "fix"}


# ---- --gpu: the job script and its output ----------------------------------------------

SPEC = GpuJobSpec("gpu", ["--gres=gpu:1"], "/home/ana/.cache/hpcml/doctor/gpu.out", "apptainer",
                  ("--userns",), "/srv/hpcml/images/sif/ab/ab12.sif")


def test_gpu_job_script_golden_bash_n_and_shellcheck(golden: Callable[[str, str], None], tmp_path: Path, shellcheck: str) -> None:
    text = render_gpu_script(SPEC)
    golden("doctor-gpu.sbatch", text)
    script = tmp_path / "gpu.sbatch"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    done = subprocess.run([shellcheck, str(script)], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_gpu_job_refuses_unsafe_values() -> None:
    from hpcml.errors import HpcmlError

    with pytest.raises(HpcmlError):
        render_gpu_script(dataclasses.replace(SPEC, partition="gpu\n#SBATCH --uid=0"))
    with pytest.raises(HpcmlError):
        render_gpu_script(dataclasses.replace(SPEC, sif="/tmp/a b.sif"))


def test_gpu_output_and_the_cuda_judgement() -> None:
    out = ("driver 535.104.05\ndriver-cuda 12.2\nINFO: some apptainer line\n"
           "device GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-1)\n"
           'cuda-json {"cuda" : {"name" : "CUDA SDK", "version" : "12.4.1"}}\ncontainer-exit 0\n')
    report = parse_gpu_output(out)
    assert report == GpuReport("535.104.05", "12.2", ("GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-1)",), "12.4.1", ())
    too_new = judge(report, "gpu", "7", report.image_cuda)
    assert too_new.status == "fail" and "CUDA 12.4.1" in too_new.detail and "12.2 or older" in too_new.fix
    assert judge(report, "gpu", "7", "12.1").status == "pass"
    blind = parse_gpu_output("error nvidia-smi is not installed on the compute node\ncontainer-exit 255\n")
    check = judge(blind, "gpu", "8", None)
    assert check.status == "fail" and "saw no GPU" in check.detail and "nvidia-smi is not installed" in check.detail


def test_the_gpu_job_prefers_a_gpu_partition_to_the_default() -> None:
    from hpcml.clients.slurminfo import Partition
    from hpcml.doctor.gpu import pick_gpu_partition

    both = [Partition(n, True, n == "batch", False, False, ("ALL",), (), ("ALL",), "vm", 2) for n in ("batch", "long", "gpu")]
    assert pick_gpu_partition(_cluster(partitions=tuple(both), nodes=())) == "gpu"
    assert pick_gpu_partition(_cluster(partitions=tuple(both[:2]), nodes=())) == "long"
    assert pick_gpu_partition(_cluster(partitions=(), nodes=())) is None


def test_cuda_versions_from_json_and_labels() -> None:
    assert cuda_from_json('{"cuda": {"version": "11.8.0"}}') == "11.8.0"
    assert cuda_from_json("garbage") is None
    assert cuda_from_labels({"CUDA_VERSION": "12.1.0", "maintainer": "x"}) == "12.1.0"
    assert cuda_from_labels({"com.nvidia.cuda.version": "11.8"}) == "11.8"
    assert cuda_from_labels({"maintainer": "x"}) is None


def test_umask_is_read_without_changing_it() -> None:
    before = os.umask(0o027)
    try:
        assert dstorage.current_umask() == 0o027
        assert dstorage.current_umask() == 0o027
    finally:
        os.umask(before)
