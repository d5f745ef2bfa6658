"""Judging the files a notebook wrote: a snapshot without links, a sandboxed loader, data back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from grader.errors import StudentError
from grader.kernel.judge import Judge, snapshot
from grader.kernel.sandbox import use_sandbox
from grader.records import Limits

LIMITS = Limits(memory_mb=3072)
SANDBOXED, SANDBOX_NOTE = use_sandbox(LIMITS)

LOAD_AND_RUN = '''
import torch

def judge(folder, inputs):
    weight = torch.load(folder + "/model.pt", weights_only=True)["weight"]
    return {"logits": inputs["x"] @ weight.T, "files": sorted(__import__("os").listdir(folder))}
'''


class _Escape:
    """Unpickling this tries to write outside the sandbox and to read the grader's secrets."""

    def __init__(self, marker: str, secret: str) -> None:
        self.marker, self.secret = marker, secret

    def __reduce__(self):
        attempt = (f"try:\n    open({self.marker!r}, 'w').write('escaped')\n"
                   f"except OSError:\n    pass")
        code = f"(exec({attempt!r}), __import__('os').path.exists({self.secret!r}))[1]"
        return (eval, (code,))


@pytest.fixture
def workdir(tmp_path) -> Path:
    folder = tmp_path / "work"
    (folder / "sub").mkdir(parents=True)
    torch.save({"weight": torch.eye(3) * 2}, folder / "model.pt")
    (folder / "sub" / "notes.txt").write_text("hello")
    secret = tmp_path / "labels.pt"
    secret.write_text("the labels")
    os.symlink(secret, folder / "link.pt")
    return folder


def test_snapshot_copies_regular_files_and_never_follows_links(workdir, tmp_path):
    files = snapshot(workdir, tmp_path / "copy")
    assert set(files) == {"model.pt", "sub/notes.txt"}
    assert not (tmp_path / "copy" / "link.pt").exists()
    assert (tmp_path / "copy" / "sub" / "notes.txt").read_text() == "hello"


@pytest.mark.kernel
def test_a_judge_loads_and_runs_what_the_notebook_saved(workdir):
    judge = Judge(workdir, LIMITS)
    assert judge.files()["model.pt"] > 0
    x = torch.randn(4, 3)
    result = judge.run(LOAD_AND_RUN, {"x": x}, timeout=120)
    torch.testing.assert_close(result["logits"], x * 2)
    assert result["files"] == ["model.pt", "sub"]


@pytest.mark.kernel
@pytest.mark.skipif(not SANDBOXED and not os.environ.get("CI"), reason=SANDBOX_NOTE)
def test_an_artifact_that_runs_code_stays_inside_the_sandbox(workdir, tmp_path):
    marker, secret = tmp_path / "escaped", tmp_path / "labels.pt"
    torch.save(_Escape(str(marker), str(secret)), workdir / "evil.pt")
    unsafe_loader = ('import torch\ndef judge(folder, inputs):\n'
                     '    return bool(torch.load(folder + "/evil.pt", weights_only=False))\n')
    saw_secret = Judge(workdir, LIMITS).run(unsafe_loader, {}, timeout=120)
    assert saw_secret is False
    assert not marker.exists()


@pytest.mark.kernel
@pytest.mark.parametrize("source, message, timeout", [
    ("def judge(folder, inputs):\n    raise ValueError('bad export')", "bad export", 20),
    ("def judge(folder, inputs):\n    return object()", "not plain data", 20),
    # a hang ends at the limit, whether the judge reached its sleep or was still starting
    ("import time\ndef judge(folder, inputs):\n    time.sleep(600)", "longer than 4 s", 4),
], ids=["raises", "not-data", "hangs"])
def test_a_failing_judge_is_the_students_failure(workdir, source, message, timeout):
    with pytest.raises(StudentError, match=message):
        Judge(workdir, LIMITS).run(source, {}, timeout=timeout)


LOOK = '''
import os

def judge(folder, inputs):
    try:
        with open(folder + "/written.txt", "w") as f:
            f.write("x")
        wrote = True
    except OSError:
        wrote = False
    slot = os.path.dirname(folder)
    return {"wrote": wrote, "private": os.access(os.getcwd(), os.W_OK),
            "slots": sorted(os.listdir(os.path.dirname(slot)))}
'''


@pytest.mark.kernel
@pytest.mark.skipif(not SANDBOXED and not os.environ.get("CI"), reason=SANDBOX_NOTE)
def test_a_judge_reads_its_snapshot_only_and_sees_no_kernel(workdir):
    seen = Judge(workdir, LIMITS).run(LOOK, {}, timeout=60)
    assert not seen["wrote"] and seen["private"]  # the snapshot is read-only, its own folder not
    assert len(seen["slots"]) == 1  # its own slot: no kernel's, no fork server's socket
