"""Kill safety (issue 13, item 8): what a kill -9 leaves behind is removed by the next run, and
nothing else is.

Two real kills: ``ganport export`` killed while its staging folder exists, and ``ganport train``
killed with SIGKILL by itself right after a checkpoint's temp file is written and synced (before
the rename). Fabricated debris, named the way ganport names it, covers the ownership rules:
dead owner, live owner, another host, the old naming without an owner, and files that only look
similar.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path


from ganport.atomic import STALE_AFTER, atomic_write, clean_debris, owner_tag

TINY_TRAIN = ["--dataset", "digits", "--image-size", "16", "--n-samples", "64", "--latent-dim", "8",
              "--batch-size", "8", "--sample-interval", "100", "--log-every", "1", "--seed", "0",
              "--device", "cpu"]


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    return int(done.stdout)


def _host() -> str:
    return owner_tag().split("-")[0]


def _age(path: Path, seconds: float) -> None:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


def _debris_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".partial", ".old")))


# ----------------------------------------------------------------------------- ownership rules

def test_clean_debris_removes_only_stale_entries_of_ganport_naming(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    host = _host()
    other_host = "000000" if host != "000000" else "111111"

    def file(name: str, age: float = 0.0) -> Path:
        path = tmp_path / name
        path.write_bytes(b"x" * 10)
        _age(path, age)
        return path

    stale = [
        file(f".step_000300.pt.{host}-{dead}.abcd1234.tmp"),              # writer gone
        file(".step_000200.pt.k2j4h6g8.tmp", age=STALE_AFTER + 60),        # old naming, old
        file(f".latest.pt.{other_host}-{alive}.zzzz_999.tmp", age=STALE_AFTER + 60),  # other host, old
    ]
    kept = [
        file(f".step_000400.pt.{host}-{alive}.abcd1234.tmp"),              # writer alive (this process)
        file(".step_000100.pt.k2j4h6g9.tmp", age=60),                      # old naming, recent
        file(f".latest.pt.{other_host}-{dead}.abcd1234.tmp", age=60),      # other host, recent
        file("notes.tmp", age=STALE_AFTER * 10),                           # not hidden: not ours
        file(".notes.tmp", age=STALE_AFTER * 10),                          # no random part: not ours
        file(".x.ABCD1234.tmp", age=STALE_AFTER * 10),                     # tempfile never makes capitals
        file("step_000100.pt", age=STALE_AFTER * 10),
    ]
    # a folder named like a temp file, and a file named like a staging folder: not what ganport makes
    folder_tmp = tmp_path / f".model.pt.{host}-{dead}.abcd1234.tmp"
    folder_tmp.mkdir()
    kept += [folder_tmp, file(f".pkg.{host}-{dead}.abcd1234.partial")]
    removed = clean_debris(tmp_path)
    assert sorted(removed) == sorted(stale)
    assert all(not p.exists() for p in stale)
    assert all(p.exists() for p in kept)
    assert clean_debris(tmp_path) == []


def test_staging_folders_and_interrupted_replacements(tmp_path):
    host, dead = _host(), _dead_pid()
    partial = tmp_path / f".pkg.{host}-{dead}.abcd1234.partial"
    (partial / "sub").mkdir(parents=True)
    (partial / "sub" / "model.onnx").write_bytes(b"half")
    live = tmp_path / f".pkg.{host}-{os.getpid()}.abcd1235.partial"
    live.mkdir()
    # The old naming: stale only when nothing inside changed for an hour.
    legacy_old = tmp_path / ".other.q1w2e3r4.partial"
    (legacy_old / "f").parent.mkdir()
    (legacy_old / "f").write_bytes(b"x")
    _age(legacy_old / "f", STALE_AFTER + 60)
    _age(legacy_old, STALE_AFTER + 60)
    legacy_busy = tmp_path / ".busy.q1w2e3r5.partial"
    legacy_busy.mkdir()
    _age(legacy_busy, STALE_AFTER + 60)
    (legacy_busy / "new-file").write_bytes(b"just written")  # recent content keeps it
    # kill between the two renames of a replacing export: the old package is moved aside and
    # the destination is missing -> it is put back, not deleted.
    moved_aside = tmp_path / f".served.{host}-{dead}.abcd1236.old"
    moved_aside.mkdir()
    (moved_aside / "manifest.json").write_text("{}")
    # an .old whose package exists again: removed
    leftover_old = tmp_path / f".pkg2.{host}-{dead}.abcd1237.old"
    leftover_old.mkdir()
    (tmp_path / "pkg2").mkdir()

    clean_debris(tmp_path, kinds=("partial", "old"))
    assert not partial.exists() and not legacy_old.exists() and not leftover_old.exists()
    assert live.exists() and legacy_busy.exists()
    assert (tmp_path / "served" / "manifest.json").read_text() == "{}" and not moved_aside.exists()


def test_atomic_write_cleans_its_folder_and_names_its_owner(tmp_path):
    host, dead = _host(), _dead_pid()
    debris = tmp_path / f".state.json.{host}-{dead}.abcd1234.tmp"
    debris.write_bytes(b"half")
    seen = []
    def write(handle):
        seen.append(Path(os.readlink(f"/proc/self/fd/{handle.fileno()}")).name)
        handle.write(b"{}")

    atomic_write(tmp_path / "state.json", write)
    assert not debris.exists() and (tmp_path / "state.json").read_bytes() == b"{}"
    assert seen[0].startswith(f".state.json.{owner_tag()}.") and seen[0].endswith(".tmp")
    assert _debris_in(tmp_path) == []


# ----------------------------------------------------------------------------- real kills

def test_export_killed_mid_way_leaves_nothing_after_the_next_export(tiny_checkpoint, tmp_path):
    checkpoint = tiny_checkpoint("gan")
    (tmp_path / "unrelated.txt").write_text("keep me")
    (tmp_path / ".hidden.partial").mkdir()  # a user's folder with a similar suffix
    out = tmp_path / "pkg"
    proc = subprocess.Popen([sys.executable, "-m", "ganport", "export", str(checkpoint), "-o", str(out),
                             "--format", "torchscript"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    staging: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        staging = list(tmp_path.glob(".pkg.*.partial"))
        if staging and any(staging[0].iterdir()):
            break  # artifacts are being written into the staging folder: kill now
        time.sleep(0.005)
    assert proc.poll() is None, "export finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert staging and staging[0].exists() and not out.exists()
    assert f"-{proc.pid}." in staging[0].name  # the owner is recorded in the name

    done = subprocess.run([sys.executable, "-m", "ganport", "export", str(checkpoint), "-o", str(out),
                           "--format", "torchscript", "--no-verify"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out / "manifest.json").is_file()
    assert _debris_in(tmp_path) == [".hidden.partial"]
    assert (tmp_path / "unrelated.txt").read_text() == "keep me"


def test_train_killed_during_a_checkpoint_write_leaves_nothing_after_resume(tmp_path):
    # The trainer kills itself with SIGKILL at the worst moment of a numbered checkpoint write:
    # the temp file is complete and synced, the rename has not happened.
    out = tmp_path / "runs"
    script = textwrap.dedent(f"""
        import os, signal, sys
        real_fsync = os.fsync
        def fsync(fd):
            real_fsync(fd)
            try:
                name = os.readlink(f"/proc/self/fd/{{fd}}")
            except OSError:
                return
            if ".step_000004.pt." in name and name.endswith(".tmp"):
                os.kill(os.getpid(), signal.SIGKILL)
        os.fsync = fsync
        from ganport.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    args = ["train", "gan", *TINY_TRAIN, "--steps", "6", "--checkpoint-interval", "2",
            "--out-dir", str(out), "--run-name", "r"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300,
                            env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    checkpoints = out / "r" / "checkpoints"
    debris = [p.name for p in checkpoints.iterdir() if p.name.endswith(".tmp")]
    assert len(debris) == 1 and debris[0].startswith(f".step_000004.pt.{_host()}-"), debris
    (checkpoints / "README.keep").write_text("not ours")
    resumed = subprocess.run([sys.executable, "-m", "ganport", "train", "--resume", str(checkpoints / "latest.pt"),
                              "--steps", "6"], capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert not [p for p in checkpoints.iterdir() if p.name.endswith(".tmp")]
    assert (checkpoints / "README.keep").read_text() == "not ours"
    assert (checkpoints / "step_000006.pt").is_file()


def test_atomic_write_gives_the_usual_permissions(tmp_path):
    """Not mkstemp's 0600: what open() would give (0666 less the umask), so another user can read it."""
    mask = os.umask(0o022)
    try:
        target = atomic_write(tmp_path / "shared.bin", lambda f: f.write(b"x"))
    finally:
        os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
