"""The functions' libraries as wheels built for the Lambda runtime: fetched once, installed offline.

    python -m scripts.lambda_wheels      # `make .venv/.installed` runs it; needs the network

Lambda runs the functions on LAMBDA_RUNTIME, a newer Python than the one backchat is
developed and tested with, and a compiled library only loads on the Python it was built for.
`fetch` downloads, for each library the functions import (requirements.txt and what it needs,
less what the Lambda runtime provides), the wheel for LAMBDA_RUNTIME on Lambda's machine
(manylinux, x86_64) at the version installed in this virtualenv, the one the tests ran with,
into WHEEL_CACHE. `install` unpacks them from there into a directory that Chalice zips, with
no network, after checking that they match the virtualenv and that, read with the runtime's
own environment markers, every dependency is there.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO_ROOT / "requirements.txt"
# The newest Python that both Lambda and the installed Chalice (1.34: up to python3.14) support.
LAMBDA_RUNTIME = "python3.14"
LAMBDA_PYTHON = (3, 14)
LAMBDA_ABI = "cp314"
# Lambda's python3.12 and later run on Amazon Linux 2023 (glibc 2.34); Chalice's default
# architecture. pip expands none of the manylinux_2_N tags by itself, so all are listed.
LAMBDA_PLATFORMS = tuple(f"manylinux_2_{minor}_x86_64" for minor in range(34, 4, -1)) + (
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64")
WHEEL_CACHE = REPO_ROOT / ".venv" / "lambda-wheels" / LAMBDA_RUNTIME
# What the cache was fetched for: one `name==version` a line.
PINS_FILE = "pins.txt"
# What the AWS Lambda Python runtime already has; with what only these need, left out.
RUNTIME_PROVIDED = frozenset(canonicalize_name(n) for n in ("boto3", "botocore"))
# PEP 508 markers as they evaluate on the Lambda runtime.
LAMBDA_MARKERS = {
    "implementation_name": "cpython", "implementation_version": "3.14.0", "os_name": "posix",
    "platform_machine": "x86_64", "platform_python_implementation": "CPython",
    "platform_system": "Linux", "python_full_version": "3.14.0", "python_version": "3.14",
    "sys_platform": "linux", "extra": "",
}


class WheelError(RuntimeError):
    """The runtime's wheels cannot be fetched or installed; the message says what to do."""


@dataclass(frozen=True)
class Wheel:
    """One cached wheel: its distribution, version, file and the dependencies it declares."""

    name: str
    version: str
    path: Path
    requires: tuple[Requirement, ...]

    @property
    def compiled(self) -> bool:
        return not all(tag.abi == "none" for tag in parse_wheel_filename(self.path.name)[3])


def lambda_tags() -> frozenset[Tag]:
    """Return the wheel tags that load on LAMBDA_RUNTIME on Lambda's machine."""
    tags = [*cpython_tags(LAMBDA_PYTHON, [LAMBDA_ABI], LAMBDA_PLATFORMS),
            *compatible_tags(LAMBDA_PYTHON, LAMBDA_ABI, LAMBDA_PLATFORMS)]
    return frozenset(tags)


def pins(requirements_file: Path = REQUIREMENTS) -> list[str]:
    """Return `name==version` of each installed distribution the functions need."""
    pending = [Requirement(line) for line in _requirement_lines(requirements_file)]
    found: dict[str, metadata.Distribution] = {}
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in RUNTIME_PROVIDED or name in found:
            continue
        try:
            distribution = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            raise WheelError(f"{requirement.name} is required but not installed; run "
                             "`make .venv/.installed` first") from None
        found[name] = distribution
        pending += [d for d in map(Requirement, distribution.requires or [])
                    if d.marker is None or d.marker.evaluate({"extra": ""})]
    return sorted(f"{name}=={d.version}" for name, d in found.items())


def fetch(cache: Path = WHEEL_CACHE, requirements_file: Path = REQUIREMENTS) -> list[Wheel]:
    """Download the runtime's wheel of every pinned library into cache (network)."""
    wanted = pins(requirements_file)
    if cache.exists():
        shutil.rmtree(cache)
    cache.mkdir(parents=True)
    platforms = [arg for platform in LAMBDA_PLATFORMS for arg in ("--platform", platform)]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--only-binary=:all:", *platforms, "--implementation", "cp",
         "--python-version", ".".join(map(str, LAMBDA_PYTHON)), "--abi", LAMBDA_ABI,
         "--dest", str(cache), *wanted],
        capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise WheelError(f"pip could not download the {LAMBDA_RUNTIME} wheels:\n"
                         f"{result.stdout}{result.stderr}")
    (cache / PINS_FILE).write_text("\n".join(wanted) + "\n")
    return resolve(cache, requirements_file)


def resolve(cache: Path = WHEEL_CACHE, requirements_file: Path = REQUIREMENTS) -> list[Wheel]:
    """Return the cached wheels the functions need on LAMBDA_RUNTIME; refuse a stale cache."""
    pins_file = cache / PINS_FILE
    if not pins_file.exists() or pins_file.read_text().split() != pins(requirements_file):
        raise WheelError(f"the {LAMBDA_RUNTIME} wheels in {cache} are missing or do not match "
                         "the virtualenv; run `make .venv/.installed` (or `.venv/bin/python -m "
                         "scripts.lambda_wheels`) with network access")
    cached = {wheel.name: wheel for wheel in map(_read_wheel, sorted(cache.glob("*.whl")))}
    tags = lambda_tags()
    needed: dict[str, Wheel] = {}
    pending = [Requirement(line) for line in _requirement_lines(requirements_file)]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in RUNTIME_PROVIDED or name in needed:
            continue
        wheel = cached.get(name)
        if wheel is None or wheel.version not in requirement.specifier:
            raise WheelError(f"{requirement} is needed on {LAMBDA_RUNTIME} but no matching "
                             f"wheel is in {cache}; install it in the virtualenv too")
        if not tags & parse_wheel_filename(wheel.path.name)[3]:
            raise WheelError(f"{wheel.path.name} does not load on {LAMBDA_RUNTIME} (x86_64)")
        needed[name] = wheel
        pending += [d for d in wheel.requires
                    if d.marker is None or d.marker.evaluate(LAMBDA_MARKERS)]
    return sorted(needed.values(), key=lambda wheel: wheel.name)


def install(target: Path, cache: Path = WHEEL_CACHE,
            requirements_file: Path = REQUIREMENTS) -> list[Wheel]:
    """Unpack the needed wheels into target as pip would into site-packages (offline)."""
    wheels = resolve(cache, requirements_file)
    for wheel in wheels:
        with zipfile.ZipFile(wheel.path) as archive:
            for member in archive.infolist():
                destination = _installed_path(member.filename)
                if destination is None or member.is_dir():
                    continue
                path = target / destination
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(archive.read(member))
    return wheels


def _installed_path(member: str) -> str | None:
    """Return where a wheel member goes in site-packages; None for scripts, headers, data."""
    top, _, rest = member.partition("/")
    if not top.endswith(".data"):
        return member
    kind, _, inner = rest.partition("/")
    return inner if kind in ("purelib", "platlib") and inner else None


def _read_wheel(path: Path) -> Wheel:
    name, version, _, _ = parse_wheel_filename(path.name)
    with zipfile.ZipFile(path) as archive:
        [metadata_file] = [n for n in archive.namelist()
                           if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        message = Parser().parsestr(archive.read(metadata_file).decode())
    requires = tuple(Requirement(spec) for spec in message.get_all("Requires-Dist") or [])
    return Wheel(canonicalize_name(name), str(version), path, requires)


def _requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def main() -> int:
    try:
        wheels = fetch()
    except WheelError as error:
        print(f"lambda_wheels: {error}", file=sys.stderr)
        return 1
    compiled = [w.path.name for w in wheels if w.compiled]
    print(f"{len(wheels)} wheels for {LAMBDA_RUNTIME} in {WHEEL_CACHE}"
          + (f" (compiled: {', '.join(compiled)})" if compiled else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
