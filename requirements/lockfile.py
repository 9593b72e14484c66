"""Reads and checks the lock files beside it. `check` and `stamp` need only the standard library,
so a fresh machine with nothing but Python 3.11 refuses a stale lock before installing anything.

The locks (`make lock` writes them with uv, from one resolution):
- ``dev.lock``: everything ``make install`` puts in ``.venv`` (runtime, sandbox, dev, build);
- ``runtime.lock``: what production code imports, the image's set;
- ``build.lock``: pip, setuptools and wheel, which install and build the project;
- ``tools.lock``: uv itself, which only ``make lock`` runs.

Invariants:
- every lock carries a ``# pyproject-digest:`` line: the digest of the dependency tables of
  ``pyproject.toml`` it was resolved from (comments and formatting do not count). ``check``
  refuses, in one line and before anything is installed, a lock whose digest differs and locks
  that pin one package differently (they are views of one resolution);
- hashes are never checked here: pip's ``--require-hashes`` checks every file it installs;
- ``installed`` compares a Python environment with the locks' set for that environment's
  markers: same names, same versions, nothing more (only pip and the project itself may stand
  beside them unlocked).

Commands: ``stamp``, ``check``, ``installed``, ``platforms`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PYPROJECT = HERE.parent / "pyproject.toml"
DIGEST_PREFIX = "# pyproject-digest: "

# The machines we run on: CPython 3.11 on Linux (glibc 2.17 and newer), x86_64 and aarch64.
TARGET_MACHINES = ("x86_64", "aarch64")
TARGET_PYTHON = "3.11"
_GLIBC_MINORS = range(17, 42)

# Distributions every venv may hold beyond a lock: the installer and the project itself.
_ALWAYS_ALLOWED = frozenset({"pip", "integration-worker"})

_REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)")


def normalize(name: str) -> str:
    """PEP 503 name normalisation: `Typing_Extensions` and `typing-extensions` are one name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    """One locked distribution: ``name==version ; marker`` with its allowed file hashes."""

    name: str
    version: str
    marker: str
    hashes: tuple[str, ...]

    def requirement(self) -> str:
        hashes = "".join(f" \\\n    --hash={h}" for h in self.hashes)
        return f"{self.name}=={self.version}{hashes}\n"


def dependency_digest(pyproject: Path) -> str:
    """The digest of what a lock is resolved from: requirements, extras, groups, uv settings."""
    data = tomllib.loads(pyproject.read_text())
    project = data.get("project", {})
    inputs = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "dependency-groups": data.get("dependency-groups", {}),
        "uv": data.get("tool", {}).get("uv", {}),
    }
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def stored_digest(lock: Path) -> str | None:
    for line in lock.read_text().splitlines():
        if line.startswith(DIGEST_PREFIX):
            return line.removeprefix(DIGEST_PREFIX).strip()
    return None


def stamp(lock: Path, digest: str) -> None:
    """Write the digest line at the top of ``lock`` (replacing an older one)."""
    lines = [line for line in lock.read_text().splitlines() if not line.startswith(DIGEST_PREFIX)]
    lock.write_text("\n".join([DIGEST_PREFIX + digest, *lines]) + "\n")


def parse(lock: Path) -> list[Pin]:
    """The pins of a lock written by ``uv pip compile --generate-hashes``."""
    pins: list[Pin] = []
    # A requirement is one logical line: backslash continuations join its hashes.
    logical = re.sub(r"\\\n", " ", lock.read_text())
    for line in logical.splitlines():
        match = _REQUIREMENT.match(line)
        if not match:
            continue
        marker = line.split(";", 1)[1].split("--hash", 1)[0].strip() if ";" in line else ""
        hashes = tuple(re.findall(r"--hash=(\S+)", line))
        pins.append(Pin(normalize(match["name"]), match["version"], marker, hashes))
    return pins


def _evaluate(marker: str, environment: dict[str, str]) -> bool:
    if not marker:
        return True
    # Imported here: `check` and `stamp` run before any install, on a bare Python; the commands
    # that read markers run where build.lock is installed (packaging comes with wheel).
    from packaging.markers import Marker  # noqa: PLC0415

    return bool(Marker(marker).evaluate(environment))


def selected(locks: Iterable[Path], environment: dict[str, str]) -> dict[str, str]:
    """name -> version of every pin of ``locks`` whose marker holds in ``environment``."""
    chosen: dict[str, str] = {}
    for lock in locks:
        for pin in parse(lock):
            if _evaluate(pin.marker, environment):
                chosen[pin.name] = pin.version
    return chosen


_PROBE = """
import importlib.metadata as m, json, os, platform, sys
environment = {
    "implementation_name": sys.implementation.name,
    "implementation_version": platform.python_version(),
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_python_implementation": platform.python_implementation(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}
installed = {d.metadata["Name"]: d.version for d in m.distributions(path=sys.path)}
print(json.dumps({"environment": environment, "installed": installed}))
"""


def probe(python: str) -> tuple[dict[str, str], dict[str, str]]:
    """The marker environment and the installed distributions of the interpreter ``python``."""
    out = subprocess.run(
        [python, "-I", "-c", _PROBE], check=True, capture_output=True, text=True
    ).stdout
    found = json.loads(out)
    installed = {normalize(name): version for name, version in found["installed"].items()}
    return found["environment"], installed


def differences(wanted: dict[str, str], installed: dict[str, str]) -> list[str]:
    """What keeps ``installed`` from being exactly ``wanted``, one line each (sorted)."""
    lines = []
    for name in sorted(wanted.keys() | installed.keys()):
        want, have = wanted.get(name), installed.get(name)
        if want == have or (want is None and name in _ALWAYS_ALLOWED):
            continue
        if want is None:
            lines.append(f"not in the lock: {name}=={have}")
        elif have is None:
            lines.append(f"missing: {name}=={want}")
        else:
            lines.append(f"{name}: installed {have}, locked {want}")
    return lines


def _target_environment(machine: str) -> dict[str, str]:
    return {
        "implementation_name": "cpython",
        "implementation_version": f"{TARGET_PYTHON}.0",
        "os_name": "posix",
        "platform_machine": machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{TARGET_PYTHON}.0",
        "python_version": TARGET_PYTHON,
        "sys_platform": "linux",
    }


def download_for(machine: str, pins: Sequence[Pin], dest: Path) -> subprocess.CompletedProcess[str]:
    """Ask pip for a file of every pin installable on ``machine``, each checked by its hash.

    pip evaluates markers against the machine it runs on, so the selection is done here and pip
    gets plain pinned requirements; ``--no-deps`` because the lock already holds every one.
    """
    requirements = dest / f"{machine}.txt"
    requirements.write_text("".join(pin.requirement() for pin in pins))
    platforms = [f"--platform=manylinux_2_{minor}_{machine}" for minor in _GLIBC_MINORS]
    platforms += [f"--platform=manylinux2014_{machine}", f"--platform=linux_{machine}"]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--prefer-binary",
        "--require-hashes",
        f"--python-version={TARGET_PYTHON}",
        "--implementation=cp",
        *platforms,
        f"--dest={dest / machine}",
        f"--requirement={requirements}",
    ]
    return subprocess.run(command, capture_output=True, text=True, check=False)


# -- commands ------------------------------------------------------------------------------------


def _stamp(args: argparse.Namespace) -> int:
    digest = dependency_digest(args.pyproject)
    for lock in args.locks:
        stamp(lock, digest)
    return 0


def disagreements(locks: Iterable[Path]) -> list[str]:
    """Pins that two locks give differently: the locks are views of one resolution."""
    seen: dict[str, tuple[Pin, str]] = {}
    lines = []
    for lock in locks:
        for pin in parse(lock):
            first = seen.setdefault(pin.name, (pin, lock.name))
            other, where = first
            if (other.version, set(other.hashes)) != (pin.version, set(pin.hashes)):
                lines.append(f"{pin.name}: {where} and {lock.name} lock it differently")
    return lines


def _check(args: argparse.Namespace) -> int:
    digest = dependency_digest(args.pyproject)
    stale = [lock.name for lock in args.locks if stored_digest(lock) != digest]
    if stale:
        print(
            f"lock out of date: {', '.join(stale)} not resolved from the dependencies in "
            f"{args.pyproject.name}; run `make lock`",
            file=sys.stderr,
        )
        return 1
    split = disagreements(args.locks)
    if split:
        print(f"locks disagree ({'; '.join(split)}); run `make lock`", file=sys.stderr)
        return 1
    return 0


def _installed(args: argparse.Namespace) -> int:
    environment, installed = probe(args.python)
    wanted = selected(args.locks, environment)
    problems = differences(wanted, installed)
    for line in problems:
        print(f"{args.python}: {line}", file=sys.stderr)
    if problems:
        print("the environment is not the locked set: run `make clean install`", file=sys.stderr)
    return 1 if problems else 0


def _platforms(args: argparse.Namespace) -> int:
    # The locks agree (`check`), so each distinct pin is fetched once per machine.
    failed = 0
    names = ", ".join(lock.name for lock in args.locks)
    with tempfile.TemporaryDirectory() as scratch:
        for machine in TARGET_MACHINES:
            environment = _target_environment(machine)
            pins = {
                pin.name: pin
                for lock in args.locks
                for pin in parse(lock)
                if _evaluate(pin.marker, environment)
            }
            result = download_for(machine, list(pins.values()), Path(scratch))
            status = "ok" if result.returncode == 0 else "FAILED"
            print(f"{names} on linux/{machine}: {len(pins)} distributions {status}")
            if result.returncode:
                failed += 1
                print(result.stderr.strip(), file=sys.stderr)
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lockfile.py", description=__doc__.split("\n")[0])
    parser.add_argument("--pyproject", type=Path, default=PYPROJECT)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, run, text in (
        ("stamp", _stamp, "write pyproject's dependency digest into the locks"),
        ("check", _check, "refuse locks not resolved from pyproject's dependencies"),
        ("installed", _installed, "compare an environment with the locked set"),
        ("platforms", _platforms, "every pin has a hashed file for each target platform"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("locks", type=Path, nargs="+")
        command.set_defaults(run=run)
        if name == "installed":
            command.add_argument("--python", required=True, help="the interpreter to inspect")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result: Any = args.run(args)
    return int(result)


if __name__ == "__main__":
    sys.exit(main())
