"""The student kit works where students use it: installed into a fresh virtual environment with
the set-up commands of its own README, `make check` runs there.

The kit and its environment are made once per test session (minutes: PyTorch from local disk,
the rest from the package index); each test then puts the notebook it needs in place. `make`
itself exits 2 whenever a recipe fails; the recipe's own status (1 a check failed, 2 a notebook
unreadable) is the number in make's "Error N" line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sysconfig
import time
from pathlib import Path

import pytest
from conftest import REPO

from grader.course.config import load_course
from grader.ship.kit import write_kit

pytestmark = pytest.mark.kernel


def clean_env() -> dict[str, str]:
    """The test's environment without this repository's virtual environment in it."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "MAKEFLAGS", "MFLAGS")}
    here = str(REPO / ".venv")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(here))
    return env


def setup_commands(readme: str) -> list[str]:
    """The commands of the first code block under "## Set up"."""
    section = readme.split("## Set up", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block, "the README's set-up section has no code block"
    return [line for line in block.group(1).splitlines() if line.strip()]


OWN_INSTALL = ("__editable__", "nncourse_grader", "__pycache__", "pip", "setuptools", "_distutils")


def share_packages(source: Path, target: Path) -> None:
    """Hard-link the installed packages of ``source`` into ``target`` (a fresh site-packages),
    leaving out this repository's own editable install and the packaging tools the new
    environment already has."""
    for entry in source.iterdir():
        if entry.name.startswith(OWN_INSTALL) or (target / entry.name).exists():
            continue
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name, copy_function=_link, symlinks=True)
        else:
            _link(entry, target / entry.name)


def _link(source: str | Path, target: str | Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


@pytest.fixture(scope="session")
def installed_kit(tmp_path_factory) -> Path:
    course = load_course(REPO / "course.toml")
    kit = tmp_path_factory.mktemp("student") / "kit"
    write_kit(course, kit, ("hw1", "hw2"))
    commands = setup_commands((kit / "README.md").read_text())
    assert commands == ["make install"]
    # Shared set-up: a fresh virtual environment given the packages this test run is
    # installed with (hard links, no copy; the kit asks for exactly the engine's pinned
    # dependencies), so the kit's own commands install only the kit, in seconds rather than
    # the minutes a full download takes. This repository's own install is left out.
    subprocess.run(["python3", "-m", "venv", str(kit / ".venv")], check=True, env=clean_env())
    (site,) = (kit / ".venv" / "lib").glob("python*/site-packages")
    share_packages(Path(sysconfig.get_paths()["purelib"]), site)
    env = {**clean_env(), "PIP_NO_COMPILE": "1", "PIP_PROGRESS_BAR": "off"}
    start = time.monotonic()
    for command in commands:
        done = subprocess.run(command, shell=True, cwd=kit, env=env, text=True,
                              capture_output=True, timeout=1500)
        assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    print(f"\nthe kit's set-up took {time.monotonic() - start:.0f} s")
    assert (kit / ".venv" / "bin" / "grader").exists()
    return kit


def make_check(kit: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "check", *args], cwd=kit, env=clean_env(), text=True,
                          capture_output=True, timeout=900)


def test_the_reference_passes_make_check(installed_kit):
    shutil.copy(REPO / "solutions" / "hw1" / "hw1.ipynb",
                installed_kit / "assignments" / "hw1" / "hw1.ipynb")
    done = make_check(installed_kit, "HW=hw1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"^(\d+) passed, 0 failed$", done.stdout, re.M)
    assert "notebook: ok" in done.stdout


def test_the_untouched_template_fails_make_check_readably(installed_kit):
    shutil.copy(REPO / "assignments" / "hw1" / "hw1.ipynb",
                installed_kit / "assignments" / "hw1" / "hw1.ipynb")
    done = make_check(installed_kit, "HW=hw1")
    assert done.returncode == 2 and "check] Error 1" in done.stderr, done.stderr[-2000:]
    assert re.search(r"^0 passed, (\d+) failed$", done.stdout, re.M)
    assert re.search(r"^FAIL conv2d_macs: .+ \(\d+ pt\)$", done.stdout, re.M)
    assert "test_hw1_public" not in done.stdout  # checks by what they test, not their ids
    assert re.search(r"conv2d_macs\(.*\) raised NotImplementedError", done.stdout)


def test_a_malformed_notebook_is_a_usage_error(installed_kit):
    notebook = installed_kit / "assignments" / "hw1" / "hw1.ipynb"
    notebook.write_text('{"cells": [')
    done = make_check(installed_kit, "HW=hw1")
    assert done.returncode == 2 and "check] Error 2" in done.stderr, done.stderr[-2000:]
    assert "hw1.ipynb is not a valid notebook file" in done.stderr
    direct = subprocess.run([str(installed_kit / ".venv" / "bin" / "grader"), "check",
                             str(notebook)], cwd=installed_kit, env=clean_env(), text=True,
                            capture_output=True, timeout=300)
    assert direct.returncode == 2


def test_make_check_names_the_homework_a_kit_has(installed_kit):
    done = make_check(installed_kit, "HW=hw5")
    assert done.returncode == 2 and "check] Error 2" in done.stderr
    assert "hw5 is not in this kit: hw1 hw2" in done.stdout
