"""scripts/lambda_wheels.py: the Lambda runtime's wheels, checked and unpacked offline."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from scripts.lambda_wheels import (
    LAMBDA_RUNTIME,
    PINS_FILE,
    REQUIREMENTS,
    WHEEL_CACHE,
    WheelError,
    install,
    resolve,
)


def make_wheel(cache: Path, filename: str, requires: tuple[str, ...] = (),
               files: dict[str, str] | None = None) -> Path:
    """Write a minimal wheel: METADATA with Requires-Dist lines, and the given files."""
    name, version = filename.split("-")[:2]
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {spec}\n" for spec in requires)
    path = cache / filename
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}-{version}.dist-info/METADATA", metadata)
        for member, text in (files or {}).items():
            archive.writestr(member, text)
    return path


@pytest.fixture
def idna_only(tmp_path: Path) -> tuple[Path, Path]:
    """A requirements file naming idna (installed in .venv) and an empty cache pinned to it."""
    from importlib.metadata import version

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("idna\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / PINS_FILE).write_text(f"idna=={version('idna')}\n")
    return requirements, cache


def idna_wheel_name(tags: str) -> str:
    from importlib.metadata import version

    return f"idna-{version('idna')}-{tags}.whl"


def test_the_fetched_cache_has_every_library_and_leaves_out_the_runtimes_own() -> None:
    names = {wheel.name for wheel in resolve(WHEEL_CACHE, REQUIREMENTS)}
    assert {"pynamodb", "requests", "urllib3", "idna", "certifi", "charset-normalizer"} <= names
    assert not names & {"boto3", "botocore", "jmespath", "python-dateutil", "s3transfer"}


def test_a_cache_fetched_for_other_versions_is_refused(idna_only: tuple[Path, Path]) -> None:
    requirements, cache = idna_only
    (cache / PINS_FILE).write_text("idna==0.1\n")
    with pytest.raises(WheelError, match="do not match the virtualenv"):
        resolve(cache, requirements)


def test_a_wheel_built_for_another_python_is_refused(idna_only: tuple[Path, Path]) -> None:
    requirements, cache = idna_only
    make_wheel(cache, idna_wheel_name("cp311-cp311-manylinux_2_17_x86_64"))
    with pytest.raises(WheelError, match=f"does not load on {LAMBDA_RUNTIME}"):
        resolve(cache, requirements)


def test_dependencies_are_read_with_the_runtimes_markers(idna_only: tuple[Path, Path]) -> None:
    requirements, cache = idna_only
    # Needed below 3.12 only: this Python (3.11) would need it, Lambda's 3.14 does not.
    make_wheel(cache, idna_wheel_name("py3-none-any"), ('certifi; python_version < "3.12"',))
    assert [wheel.name for wheel in resolve(cache, requirements)] == ["idna"]


def test_a_dependency_missing_from_the_cache_is_named(idna_only: tuple[Path, Path]) -> None:
    requirements, cache = idna_only
    make_wheel(cache, idna_wheel_name("py3-none-any"), ('certifi>=2024; python_version >= "3.12"',))
    with pytest.raises(WheelError, match="certifi"):
        resolve(cache, requirements)


def test_install_unpacks_libraries_but_not_scripts_or_data(idna_only: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    requirements, cache = idna_only
    data = idna_wheel_name("py3-none-any").removesuffix("-py3-none-any.whl") + ".data"
    make_wheel(cache, idna_wheel_name("cp314-cp314-manylinux_2_28_x86_64"), files={
        "idna/__init__.py": "",
        "idna/core.cpython-314-x86_64-linux-gnu.so": "",
        f"{data}/purelib/idna_extra.py": "",
        f"{data}/scripts/idna-cli": "#!/bin/sh",
        f"{data}/data/share/doc.txt": "",
    })
    target = tmp_path / "vendor"
    [wheel] = install(target, cache, requirements)
    assert wheel.compiled
    installed = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert installed == [f"{data.removesuffix('.data')}.dist-info/METADATA", "idna/__init__.py",
                         "idna/core.cpython-314-x86_64-linux-gnu.so", "idna_extra.py"]
