"""Copy an image's input files into its private build directory before building.

Apptainer 1.4 expands every `%files` source with a shell interpreter (command
substitution, `~user`, `$VAR`; issue 12), and reads the files when the build runs, which
may be minutes after hpcml hashed them. So a build never reads the workflow directory:
each input named by the plan is copied to `in/NNNN/<its base name>` inside the build's
private (0700) directory, the copy is hashed again and must match the digest the image key
was computed from, and the definition Apptainer gets names only those copies
(`deffile.localize`). What the key says is then what the image holds, and the only names
Apptainer's shell sees are ones hpcml generated from the safe set validation enforces.

Example:

    staged = stage_inputs("/home/me/wf", image.inputs, build_dir)
    staged["src"]   # 'in/0001/src'
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Iterable

from hpcml.errors import BuildError
from hpcml.hashing import InputError, hash_input

#: The directory, inside a build directory, that holds the copies.
STAGE_DIR = "in"


def staged_names(inputs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """relpath → the name of its copy relative to the build directory, for every input
    inside the workflow directory (`in/0001/src`: a numbered slot, then the base name, so
    `%files` copies a directory under the name it had)."""
    out: dict[str, str] = {}
    for n, (rel, _digest) in enumerate(sorted(inputs), 1):
        if not os.path.isabs(rel):  # a site image outside the workflow (localimage /x.sif): read in place
            out[os.path.normpath(rel)] = f"{STAGE_DIR}/{n:04d}/{os.path.basename(os.path.normpath(rel))}"
    return out


def stage_inputs(root: str, inputs: Iterable[tuple[str, str]], build_dir: Path) -> dict[str, str]:
    """Copy every `(relpath, sha256)` input under `root` into `build_dir/in/`; return
    `staged_names(inputs)`.

    Raises BuildError when an input is a symbolic link, unreadable, or no longer has the
    digest it had when the plan was made (the key would describe other bytes).
    """
    inputs = list(inputs)
    staged = staged_names(inputs)
    (build_dir / STAGE_DIR).mkdir(mode=0o700)
    for rel, digest in inputs:
        if os.path.isabs(rel):
            continue
        local = staged[os.path.normpath(rel)]
        (build_dir / local).parent.mkdir(mode=0o700)
        _copy(os.path.join(root, rel), build_dir / local, rel)
        try:
            got = hash_input(str(build_dir), local)
        except InputError as err:
            raise BuildError(f"input {rel}: {err}") from None
        if got != digest:
            raise BuildError(f"input {rel} changed after the plan was made (sha256 {digest[:12]} then, "
                             f"{got[:12]} now); the image key would not describe it: run the command again")
    return staged


def _copy(src: str, dest: Path, rel: str) -> None:
    """Copy a file or a directory tree without following any symbolic link."""
    try:
        st = os.lstat(src)
        if stat.S_ISLNK(st.st_mode):
            raise BuildError(f"input {rel} is a symbolic link, which hpcml does not follow")
        if stat.S_ISDIR(st.st_mode):
            # symlinks=True copies a link as a link; hashing the copy then refuses it.
            shutil.copytree(src, dest, symlinks=True)
        elif stat.S_ISREG(st.st_mode):
            _copy_file(src, dest)
        else:
            raise BuildError(f"input {rel} is neither a file nor a directory")
    except OSError as err:
        raise BuildError(f"input {rel}: cannot copy it into the build directory: {err}") from None


def _copy_file(src: str, dest: Path) -> None:
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fin:
        mode = stat.S_IMODE(os.fstat(fin.fileno()).st_mode)
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(out, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            os.fchmod(fout.fileno(), mode)
