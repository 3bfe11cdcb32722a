"""The catalog store, search path, integrity cache, gc and the NFS-safe lock, on plain files.

The catalog handles SIFs as opaque bytes, so these tests publish small byte files; real
images are built in tests/integration/test_images.py.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcml.images.catalog import Catalog
from hpcml.images.manifest import Manifest, new_manifest
from hpcml.images.search import CatalogPath
from hpcml.errors import CatalogError
from hpcml.images.locking import FileLock, Owner, read_owner

KEY_A = "a" * 64
KEY_B = "b" * 64


def publish(cat: Catalog, tmp_path: Path, key: str = KEY_A, data: bytes = b"SIF-bytes", name: str = "base") -> Path:
    src = tmp_path / f"{key[:8]}.src"
    src.write_bytes(data)
    manifest = new_manifest(key=key, name=name, definition="Bootstrap: scratch\n", inputs=[("a.txt", "0" * 64)],
                            parent_key=None, sif=src, apptainer_version="1.4.5")
    cat.publish(src, manifest, log_text="log\n")
    return cat.sif_path(key)


def test_layout_manifest_and_modes(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "cat")
    sif = publish(cat, tmp_path)
    assert sif == tmp_path / "cat/sif/aa" / f"{KEY_A}.sif"
    entry = cat.get(KEY_A)
    assert entry is not None and entry.sif == sif and entry.manifest.size == 9
    data = json.loads(cat.meta_path(KEY_A).read_text())
    assert data["schema"] == 1 and data["inputs"] == [["a.txt", "0" * 64]] and data["user"]
    # created by hpcml (a personal cache): as private as the umask makes it
    assert stat.S_IMODE(os.stat(tmp_path / "cat/sif").st_mode) == 0o755 & ~_umask() | 0o700
    assert stat.S_IMODE(os.stat(sif).st_mode) == 0o444
    assert not [p for p in sif.parent.iterdir() if p.name.startswith(".")]  # no temp left over
    assert cat.log_path(KEY_A).read_text() == "log\n"


def test_sif_without_manifest_is_incomplete_and_ignored(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "cat")
    publish(cat, tmp_path)
    cat.meta_path(KEY_A).unlink()
    assert cat.get(KEY_A) is None and cat.keys() == []


def test_manifest_schema_is_checked(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="schema 99"):
        Manifest.from_json(json.dumps({"schema": 99}), "m.json")


def test_keys_and_tags_are_validated(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "cat")
    with pytest.raises(CatalogError, match="invalid image key"):
        cat.sif_path("../../etc/passwd")
    with pytest.raises(CatalogError, match="invalid tag"):
        cat.tag_path("base", "../x")


def test_search_path_first_hit_wins_and_find_by_tag_and_prefix(tmp_path: Path) -> None:
    user, lab = Catalog(tmp_path / "user"), Catalog(tmp_path / "lab")
    publish(lab, tmp_path, KEY_A)
    publish(user, tmp_path, KEY_B, name="torch")
    path = CatalogPath([user, lab], tmp_path / "cache")
    assert path.lookup(KEY_A).catalog == lab  # type: ignore[union-attr]
    lab.set_tag("base", "v1", KEY_A)
    assert path.find("base:v1").key == KEY_A
    assert path.find("bbbbbbbb").key == KEY_B
    with pytest.raises(CatalogError, match="no image 'base:v2'"):
        path.find("base:v2")
    with pytest.raises(CatalogError, match="not in catalog"):
        user.set_tag("base", "v1", KEY_A)
    publish(user, tmp_path, KEY_A)
    assert path.lookup(KEY_A).catalog == user  # type: ignore[union-attr]
    assert lab.tags() == {KEY_A: ["base:v1"]}


def test_integrity_check_is_cached_and_catches_a_flipped_byte(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "cat")
    sif = publish(cat, tmp_path)
    path = CatalogPath([cat], tmp_path / "cache")
    assert path.resolve(KEY_A) is not None
    assert list((tmp_path / "cache/verified").iterdir())  # stamp written
    os.chmod(sif, 0o644)
    data = bytearray(sif.read_bytes())
    data[3] ^= 0xFF
    sif.write_bytes(bytes(data))
    with pytest.raises(CatalogError, match="corrupt"):
        path.resolve(KEY_A)
    results = path.verify_all()
    assert [(r.key, r.ok) for r in results] == [(KEY_A, False)]


def test_copy_between_catalogs_and_read_only_refusal(tmp_path: Path) -> None:
    user, lab = Catalog(tmp_path / "user"), Catalog(tmp_path / "lab")
    publish(user, tmp_path)
    path = CatalogPath([user, lab], tmp_path / "cache")
    copied = path.copy(user.get(KEY_A), lab)  # type: ignore[arg-type]
    assert copied.catalog == lab and lab.sif_path(KEY_A).read_bytes() == b"SIF-bytes"
    assert lab.log_path(KEY_A).is_file()


def test_require_signatures_needs_a_verifier(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="verify_key"):
        CatalogPath([Catalog(tmp_path)], tmp_path, require_signatures=True)


def test_signature_check_runs_once_then_is_cached(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "cat")
    publish(cat, tmp_path)
    calls: list[Path] = []
    path = CatalogPath([cat], tmp_path / "cache", require_signatures=True, verify_signature=calls.append)
    path.resolve(KEY_A)
    path.resolve(KEY_A)
    assert len(calls) == 1


def test_gc_removes_old_untagged_and_incomplete(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "cat")
    publish(cat, tmp_path, KEY_A)
    publish(cat, tmp_path, KEY_B)
    cat.set_tag("keep", "v1", KEY_B)
    stray = cat.root / "sif/cc" / ("c" * 64 + ".sif")
    stray.parent.mkdir()
    stray.write_bytes(b"partial")
    future = time.time() + 40 * 86400
    dry = cat.gc(30, dry_run=True, now=future)
    removed = {Path(i.path).name for i in dry}
    assert f"{KEY_A}.sif" in removed and f"{KEY_A}.json" in removed and stray.name in removed
    assert f"{KEY_B}.sif" not in removed
    assert cat.get(KEY_A) is not None  # dry run removed nothing
    cat.gc(30, dry_run=False, now=future)
    assert cat.get(KEY_A) is None and cat.get(KEY_B) is not None and not stray.exists()
    assert cat.gc(30, dry_run=True) == []  # recently used: kept


def test_gc_keeps_recently_used(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "cat")
    publish(cat, tmp_path)
    old = time.time() - 90 * 86400
    os.utime(cat.meta_path(KEY_A), (old, old))
    assert cat.gc(30, dry_run=True)
    cat.touch_used(KEY_A)
    assert cat.gc(30, dry_run=True) == []


def test_a_sif_built_in_the_catalog_is_renamed_into_place_not_copied(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "cat")
    bdir = cat.build_dir("base")
    assert bdir.path.parent == cat.root / "tmp"
    assert stat.S_IMODE(bdir.path.stat().st_mode) == 0o700  # private (issue 12)
    assert (cat.root / "tmp").stat().st_mode & stat.S_ISVTX  # sticky: no one renames it
    sif = bdir.here / "base.sif"
    sif.write_bytes(b"SIF-bytes")
    inode = sif.stat().st_ino
    manifest = new_manifest(key=KEY_A, name="base", definition="Bootstrap: scratch\n", inputs=[],
                            parent_key=None, sif=sif, apptainer_version="1.4.5")
    entry = cat.publish(sif, manifest)
    assert entry.sif.stat().st_ino == inode and not sif.exists()
    assert stat.S_IMODE(entry.sif.stat().st_mode) == 0o444
    bdir.close()
    assert not bdir.path.exists()


def test_publish_never_replaces_and_needs_the_lock(tmp_path: Path) -> None:
    """Issue 12, finding 4: a complete entry is never replaced; a builder that lost its lock
    publishes nothing."""
    cat = Catalog(tmp_path / "cat")
    manifests = []
    for content in (b"first", b"second"):
        bdir = cat.build_dir("base")
        sif = bdir.here / "base.sif"
        sif.write_bytes(content)
        manifests.append((sif, new_manifest(key=KEY_A, name="base", definition="Bootstrap: scratch\n",
                                            inputs=[], parent_key=None, sif=sif, apptainer_version="1.4.5")))
    with pytest.raises(CatalogError, match="lost the build lock"):
        cat.publish(*manifests[0], owned=lambda: False)
    assert cat.get(KEY_A) is None and not cat.sif_path(KEY_A).exists()
    cat.publish(*manifests[0], owned=lambda: True)
    with pytest.raises(CatalogError, match="published .* by another builder"):
        cat.publish(*manifests[1], owned=lambda: True)
    assert cat.sif_path(KEY_A).read_bytes() == b"first"


def test_build_dir_refuses_a_tmp_others_can_rename_in(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "cat")
    cat.init()
    os.chmod(cat.root / "tmp", 0o777)  # as an older hpcml made it
    cat.init()  # its owner repairs it
    assert (cat.root / "tmp").stat().st_mode & stat.S_ISVTX
    os.chmod(cat.root / "tmp", 0o777)
    real_init = cat.init
    cat.init = lambda: None  # type: ignore[method-assign]  # someone else owns it: no repair
    with pytest.raises(CatalogError, match="chmod \\+t"):
        cat.build_dir("base")
    cat.init = real_init  # type: ignore[method-assign]


def test_gc_removes_build_directories_of_dead_builders_after_a_day(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "cat")
    work = cat.build_dir("base").path
    (work / "base.sif").write_bytes(b"half a SIF")
    assert cat.gc(30, dry_run=True) == []  # a build may still be running
    later = time.time() + 2 * 86400
    assert [i.reason for i in cat.gc(30, dry_run=True, now=later)] == ["build directory of a builder that died"]
    cat.gc(30, dry_run=False, now=later)
    assert not work.exists()


# ---- lock -------------------------------------------------------------------------------


def test_lock_records_owner_and_releases(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "k.lock")
    with lock:
        owner = read_owner(tmp_path / "k.lock")
        assert owner is not None and owner.pid == os.getpid() and owner.start
    assert not (tmp_path / "k.lock").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_lock_of_a_dead_process_is_broken(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = Owner(os.uname().nodename, proc.pid, "12345", "deadbeef")
    (tmp_path / "k.lock").write_text(json.dumps(dead.__dict__))
    with FileLock(tmp_path / "k.lock", timeout_s=5):
        assert read_owner(tmp_path / "k.lock").token != "deadbeef"  # type: ignore[union-attr]


def test_lock_of_a_reused_pid_is_broken(tmp_path: Path) -> None:
    # Our own pid, but a start time that is not ours: the owner died and the pid was reused.
    reused = Owner(os.uname().nodename, os.getpid(), "1", "cafe")
    (tmp_path / "k.lock").write_text(json.dumps(reused.__dict__))
    with FileLock(tmp_path / "k.lock", timeout_s=5):
        pass


def test_lock_on_another_host_is_broken_only_when_its_heartbeat_is_old(tmp_path: Path) -> None:
    other = Owner("some-other-host", 1, "1", "f00d")
    lock_file = tmp_path / "k.lock"
    lock_file.write_text(json.dumps(other.__dict__))
    with pytest.raises(CatalogError, match="some-other-host:1"):
        FileLock(lock_file, timeout_s=0.5, stale_after_s=60).acquire()
    old = time.time() - 120
    os.utime(lock_file, (old, old))
    with FileLock(lock_file, timeout_s=5, stale_after_s=60):
        pass


def test_lock_staleness_is_judged_by_the_file_servers_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12, finding 4: a client whose clock runs an hour ahead does not break a live
    lock. The skew is faked (this machine's clock is shared and cannot be skewed for a test)."""
    other = Owner("some-other-host", 1, "1", "f00d")
    lock_file = tmp_path / "k.lock"
    lock_file.write_text(json.dumps(other.__dict__))  # a fresh heartbeat, by the server's clock
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)  # fake: a skewed local clock
    with pytest.raises(CatalogError, match="some-other-host:1"):
        FileLock(lock_file, timeout_s=0.5, stale_after_s=60).acquire()


def _contend(path: str, counter: str, n: int) -> None:
    for _ in range(n):
        with FileLock(Path(path), poll_s=0.01):
            value = int(Path(counter).read_text())
            time.sleep(0.001)
            Path(counter).write_text(str(value + 1))


def test_lock_excludes_concurrent_processes(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    counter.write_text("0")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_contend, args=(str(tmp_path / "k.lock"), str(counter), 20)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert counter.read_text() == "80"


def test_tag_in_the_lab_catalog_after_a_push(tmp_path: Path) -> None:
    """The documented sharing flow: build (own cache first), push, tag --in the lab catalog.

    Without --in the tag went into the builder's own cache, which nobody else searches.
    """
    from hpcml import api, config

    user, lab = Catalog(tmp_path / "user"), Catalog(tmp_path / "lab")
    publish(user, tmp_path, KEY_A, name="torch")
    settings = config.load({"catalogs": [str(user.root), str(lab.root)], "cache_dir": str(tmp_path / "c")},
                           env={"HOME": str(tmp_path), "HPCML_SITE_CONFIG": str(tmp_path / "none.toml")})
    with pytest.raises(CatalogError, match="push it there first"):
        api.catalog_tag("torch", "torch:v1", settings, in_catalog=str(lab.root))
    api.catalog_push("torch", str(lab.root), settings)
    assert api.catalog_tag("torch", "torch:v1", settings, in_catalog=str(lab.root)) == KEY_A
    assert lab.resolve_tag("torch", "v1") == KEY_A and user.resolve_tag("torch", "v1") is None
    # a colleague who searches only the lab catalog finds it by the tag
    assert CatalogPath([lab], tmp_path / "c2").find("torch:v1").catalog == lab


def test_use_stamp_is_group_writable_whatever_the_umask(tmp_path: Path) -> None:
    """With umask 022 the first member's `used/<key>` was 0644: every other member's use
    then failed to update it (silently), and gc removed an image the lab used daily."""
    (tmp_path / "lab").mkdir()
    os.chmod(tmp_path / "lab", 0o2775)  # as docs/catalog.md tells the lab admin
    cat = Catalog(tmp_path / "lab")
    publish(cat, tmp_path)
    old = os.umask(0o022)
    try:
        cat.touch_used(KEY_A)
    finally:
        os.umask(old)
    stamp = cat.root / "used" / KEY_A
    assert stat.S_IMODE(stamp.stat().st_mode) == 0o664
    os.utime(stamp, (1, 1))
    cat.touch_used(KEY_A)  # an existing stamp: its time is updated
    assert stamp.stat().st_mtime > 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("root_mode, sub_mode, stamp_mode", [(0o2775, 0o2775, 0o664), (0o2755, 0o2755, 0o644),
                                                             (0o700, 0o700, 0o644)])
def test_sub_directories_follow_the_mode_the_admin_gave_the_root(tmp_path: Path, root_mode: int, sub_mode: int,
                                                                 stamp_mode: int) -> None:
    """A lab catalog made 2775 shares every sub-directory with the group; one made 2755
    (read-only for the group) or a private cache must not get group-writable 2775 sub-dirs,
    through which any group member could replace images or retarget tags."""
    root = tmp_path / "lab"
    root.mkdir()
    os.chmod(root, root_mode)
    cat = Catalog(root)
    publish(cat, tmp_path)
    cat.set_tag("base", "v1", KEY_A)
    old = os.umask(0o022)
    try:
        cat.touch_used(KEY_A)
    finally:
        os.umask(old)
    for sub in ("sif", "sif/aa", "meta", "tags", "tags/base", "logs", "locks", "used"):
        assert stat.S_IMODE(os.stat(root / sub).st_mode) == sub_mode, sub
    # tmp/ holds private build directories: sticky, so no member renames another's (issue 12)
    assert stat.S_IMODE(os.stat(root / "tmp").st_mode) == sub_mode | stat.S_ISVTX
    assert stat.S_IMODE(os.stat(root / "tags/base/v1").st_mode) == 0o644  # replaced by rename only
    assert stat.S_IMODE(os.stat(root / "used" / KEY_A).st_mode) == stamp_mode
