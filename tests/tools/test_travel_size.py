"""tools/offline_gpu/travel_size.sh: what a device call sends (tracked and untracked-not-ignored files, plus the
carried .whl/ and .gl/) against the call's 64 MiB, in a scratch git repository."""

import os
import shutil
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "offline_gpu", "travel_size.sh")
MIB = 1024 * 1024

pytestmark = pytest.mark.skipif(sys.platform == "win32" or shutil.which("git") is None, reason="bash and git")


def _repo(tmp_path, tracked_mib: int, ignored_mib: int, wheels_mib: int):
    def write(rel, n_bytes):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(n_bytes)  # sparse: the apparent size is what counts

    (tmp_path / "tools" / "offline_gpu").mkdir(parents=True)
    shutil.copy(SCRIPT, tmp_path / "tools" / "offline_gpu" / "travel_size.sh")
    (tmp_path / ".gitignore").write_text("/.whl/\n/runs/\n")
    write("docs/records.json", tracked_mib * MIB)
    write("notes.txt", MIB)  # untracked, not ignored: it travels too
    write("runs/checkpoint.pt", ignored_mib * MIB)  # ignored: stays here
    write(".whl/ray.tar.xz", wheels_mib * MIB)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "tools", ".gitignore", "docs"], check=True)
    subprocess.run(git + ["commit", "-qm", "x"], check=True)
    return subprocess.run(["bash", str(tmp_path / "tools" / "offline_gpu" / "travel_size.sh")], capture_output=True,
                          text=True, timeout=60)


def test_counts_tracked_untracked_and_carried_files_and_not_the_ignored_ones(tmp_path):
    proc = _repo(tmp_path, tracked_mib=10, ignored_mib=200, wheels_mib=40)
    assert proc.returncode == 0, proc.stderr
    assert "working tree 11.0 MiB + .whl/.gl 40.0 MiB = 51.0 MiB of 64 MiB" in proc.stdout


def test_fails_and_says_what_to_do_over_64_mib(tmp_path):
    proc = _repo(tmp_path, tracked_mib=12, ignored_mib=0, wheels_mib=52)  # session 20's tree and wheelhouse
    assert proc.returncode == 1
    assert "= 65.0 MiB of 64 MiB" in proc.stdout
    assert "over the device call's 64 MiB" in proc.stderr
