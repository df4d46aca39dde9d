"""Job folders: private while in use, removed afterwards, and swept when their worker died."""

import subprocess
import sys

from analysis.worker.workspace import PREFIX, sweep, workspace
from harness import ROOT


def test_a_workspace_is_removed_whatever_happens(tmp_path):
    try:
        with workspace(tmp_path) as folder:
            (folder / "in").mkdir()
            (folder / "in" / "m00000.jpg").write_bytes(b"x")
            raise RuntimeError("the batch failed")
    except RuntimeError:
        pass
    assert list(tmp_path.iterdir()) == []


def test_sweep_removes_folders_of_dead_workers_only(tmp_path):
    # A worker killed with SIGKILL in the middle of a batch leaves its folder behind.
    code = (
        "import os, signal, sys; from analysis.worker.workspace import workspace\n"
        "with workspace(__import__('pathlib').Path(sys.argv[1])) as f:\n"
        "    (f / 'm00000.mp4').write_bytes(b'x'); os.kill(os.getpid(), signal.SIGKILL)"
    )
    for _ in range(3):
        subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, check=False)
    assert len(list(tmp_path.glob(f"{PREFIX}*"))) == 3
    unrelated = tmp_path / "something-else"
    unrelated.mkdir()
    with workspace(tmp_path) as alive:  # a worker running beside us
        assert sweep(tmp_path) == 3
        assert alive.is_dir() and unrelated.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["something-else"]
