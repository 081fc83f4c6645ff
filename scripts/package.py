"""Build backchat's deployable template and zip with `chalice package`, offline.

    python -m scripts.package [--stage dev] [--out build/package] [--cors-origin ORIGIN]

writes OUT/sam.json (a SAM template: Chalice's functions, API and roles, merged with
infra/tables.yaml and infra/functions.yaml), OUT/deployment.zip (the code and its runtime
dependencies) and OUT/merge-template.json (what was merged, for reading). Deploy it with
`sam deploy` or `aws cloudformation package` + `deploy` (docs/deploy.md).

Chalice is run on a copy of the project in a temporary directory, so that:
- the dependencies come from this virtualenv rather than from pip downloading them, which
  needs no network and ships exactly the versions the tests ran with; and boto3, botocore
  and what only they need are left out (the Lambda runtime has them), which `pip` could not
  do because pynamodb requires botocore;
- `--cors-origin` can set the stage's CORS_ORIGIN without editing .chalice/config.json (the
  origin is read when app.py is imported, so API Gateway's preflight answer and the
  function's own headers both come from it).
No AWS call is made: chalice runs with dummy AWS variables (and none of the caller's), so
nothing looks for, or finds, real credentials.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Iterable

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parent.parent
INFRA = REPO_ROOT / "infra"
MERGED_TEMPLATES = (INFRA / "tables.yaml", INFRA / "functions.yaml")
# What the AWS Lambda Python runtime already has; with what only these need, left out.
RUNTIME_PROVIDED = frozenset(canonicalize_name(n) for n in ("boto3", "botocore"))
LAMBDA_PYTHON = (3, 11)
# What a package directory holds: chalice's template and zip, and the merged template.
PACKAGE_FILES = ("sam.json", "deployment.zip", "merge-template.json")
# How old Lambda lets an asynchronous event get, in seconds.
MIN_EVENT_AGE, MAX_EVENT_AGE = 60, 21600
# Wheel tags a compiled distribution may carry to load on Lambda (x86_64, Python 3.11).
LAMBDA_PLATFORM_SUFFIX = "x86_64"
LAMBDA_PYTHON_TAGS = ("cp311", "abi3")
# Dummies: chalice and botocore must never look for, or find, real credentials.
OFFLINE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "offline-packaging",
    "AWS_SECRET_ACCESS_KEY": "offline-packaging",
    "AWS_SESSION_TOKEN": "offline-packaging",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
# app.py checks its settings on import, and `chalice package` imports it with the API
# function's environment: AUTH_MODE=apikey needs key hashes then. This one matches no key and
# never reaches the template; the deployed function gets the ApiKeyHashes parameter.
PACKAGING_KEY_HASHES = "packaging:" + "0" * 64
# One origin (scheme, host, port; no path) or *: it goes into API Gateway's CORS headers.
CORS_ORIGIN_FORM = re.compile(r"\*|https://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


class PackagingError(RuntimeError):
    """The project cannot be packaged as it is; the message says what to change."""


def runtime_distributions(requirements_file: Path) -> list[metadata.Distribution]:
    """Return the installed distributions the functions need, minus what Lambda provides."""
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
            raise PackagingError(
                f"{requirement.name} is required but not installed; run `make test` or "
                "`.venv/bin/pip install -r requirements-dev.txt` first") from None
        found[name] = distribution
        for spec in distribution.requires or []:
            dependency = Requirement(spec)
            if dependency.marker is None or dependency.marker.evaluate({"extra": ""}):
                pending.append(dependency)
    return sorted(found.values(), key=lambda d: canonicalize_name(d.metadata["Name"]))


def vendor(distributions: Iterable[metadata.Distribution], target: Path) -> None:
    """Copy each distribution's installed files (not its bytecode) into target."""
    for distribution in distributions:
        _check_loads_on_lambda(distribution)
        site_packages = Path(distribution.locate_file("")).resolve()
        for file in distribution.files or []:
            source = Path(distribution.locate_file(file)).resolve()
            if not source.is_relative_to(site_packages) or "__pycache__" in source.parts:
                continue  # console scripts live outside site-packages; bytecode is rebuilt
            destination = target / source.relative_to(site_packages)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def merge_template(stage: str, claim_timeout_seconds: int) -> dict:
    """Return infra/tables.yaml and infra/functions.yaml as one template, for one stage."""
    from chalice.package import TemplateDeepMerger, YAMLTemplateSerializer

    serializer, merger = YAMLTemplateSerializer(), TemplateDeepMerger()
    merged: dict = {}
    for path in MERGED_TEMPLATES:
        merged = merger.merge(serializer.load_template(path.read_text(), str(path)), merged)
    stage_parameter = merged["Parameters"]["Stage"]
    if stage not in stage_parameter["AllowedValues"]:
        raise PackagingError(f"infra/tables.yaml does not allow the stage {stage!r}")
    # The template is built for one stage's code and settings: it can only be deployed as it.
    stage_parameter["AllowedValues"] = [stage]
    stage_parameter["Default"] = stage
    if not MIN_EVENT_AGE <= claim_timeout_seconds <= MAX_EVENT_AGE:
        raise PackagingError(f"CLAIM_TIMEOUT_SECONDS must be {MIN_EVENT_AGE}-{MAX_EVENT_AGE} "
                             "when deployed (Lambda's limits on an async event's age)")
    # A dispatched session not claimed by then is ended by the reaper: an older event could
    # only be refused, so Lambda may as well drop it.
    merged["Resources"]["OrchestratorAsyncConfig"]["Properties"][
        "MaximumEventAgeInSeconds"] = claim_timeout_seconds
    return merged


def claim_timeout(project: Path, stage: str) -> int:
    """Return the CLAIM_TIMEOUT_SECONDS the API function runs with in this stage."""
    from chalice.cli.factory import CLIFactory

    from chalicelib.settings import Settings

    config = CLIFactory(str(project)).create_config_obj(chalice_stage_name=stage)
    variables = config.scope(stage, "api_handler").environment_variables
    raw = variables.get("CLAIM_TIMEOUT_SECONDS", str(Settings.claim_timeout_seconds))
    try:
        return int(raw)
    except ValueError:
        raise PackagingError(f"CLAIM_TIMEOUT_SECONDS must be a whole number, not {raw!r}") from None


def stage_project(project: Path, stage: str, cors_origin: str | None) -> None:
    """Copy what the functions run into project, with this stage's CORS origin set."""
    shutil.copy2(REPO_ROOT / "app.py", project / "app.py")
    shutil.copytree(REPO_ROOT / "chalicelib", project / "chalicelib",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(REPO_ROOT / ".chalice", project / ".chalice",
                    ignore=shutil.ignore_patterns("deployments", "venv"))
    config_path = project / ".chalice" / "config.json"
    config = json.loads(config_path.read_text())
    stage_config = config.get("stages", {}).get(stage)
    if stage_config is None:
        raise PackagingError(f".chalice/config.json has no stage {stage!r}")
    variables = stage_config.setdefault("environment_variables", {})
    if cors_origin:
        variables["CORS_ORIGIN"] = cors_origin
    if not variables.get("CORS_ORIGIN"):
        raise PackagingError(
            f"stage {stage!r} has no CORS_ORIGIN: pass --cors-origin https://<the page's "
            "domain> (infra/site.yaml's SiteOrigin output), or CORS_ORIGIN=... to make package")
    if not CORS_ORIGIN_FORM.fullmatch(variables["CORS_ORIGIN"]):
        raise PackagingError(f"CORS_ORIGIN must be * or an origin such as "
                             f"https://d1234.cloudfront.net, not {variables['CORS_ORIGIN']!r}")
    config_path.write_text(json.dumps(config, indent=2))


def package(stage: str, out: Path, cors_origin: str | None = None) -> Path:
    """Write sam.json, deployment.zip and merge-template.json for stage into out; return the zip."""
    if sys.version_info[:2] != LAMBDA_PYTHON:
        raise PackagingError("package with Python %d.%d, the functions' runtime" % LAMBDA_PYTHON)
    chalice = Path(sys.executable).parent / "chalice"
    out = out.resolve()  # chalice resolves a relative path against the project copy
    with tempfile.TemporaryDirectory(prefix="backchat-package-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        stage_project(project, stage, cors_origin)
        # No requirements.txt in the copy: Chalice then runs no pip, and copies vendor/ in.
        vendor(runtime_distributions(REPO_ROOT / "requirements.txt"), project / "vendor")
        template = Path(tmp) / "merge-template.json"
        template.write_text(json.dumps(merge_template(stage, claim_timeout(project, stage)),
                                       indent=2))
        _clear_previous_package(out)
        result = subprocess.run(
            [str(chalice), "--project-dir", str(project), "package", "--stage", stage,
             "--merge-template", str(template), str(out)],
            env=_packaging_environment(),
            capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PackagingError(f"chalice package failed:\n{result.stdout}{result.stderr}")
        shutil.copy2(template, out / "merge-template.json")
    deployment = out / "deployment.zip"
    _check_leaves_out_runtime_packages(deployment)
    return deployment


def _packaging_environment() -> dict[str, str]:
    """Return chalice's environment: this one without AWS settings, plus the dummies."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {"API_KEY_HASHES": PACKAGING_KEY_HASHES, **inherited, **OFFLINE_AWS_ENV}


def _clear_previous_package(out: Path) -> None:
    """Remove an earlier package from out; refuse to touch a directory holding anything else."""
    if not out.exists():
        return
    others = sorted(p.name for p in out.iterdir() if p.name not in PACKAGE_FILES)
    if others:
        raise PackagingError(f"{out} holds other files ({', '.join(others[:3])}); "
                             "choose an empty or new output directory")
    for name in PACKAGE_FILES:
        (out / name).unlink(missing_ok=True)


def _requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def _check_loads_on_lambda(distribution: metadata.Distribution) -> None:
    """Refuse a compiled distribution that was not built for Lambda's Python and machine."""
    wheel = distribution.read_text("WHEEL") or ""
    if "Root-Is-Purelib: true" in wheel:
        return
    tags = [line.split(":", 1)[1].strip() for line in wheel.splitlines()
            if line.startswith("Tag:")]
    if any(t.split("-")[1] in LAMBDA_PYTHON_TAGS and "manylinux" in t.split("-")[2]
           and t.endswith(LAMBDA_PLATFORM_SUFFIX) for t in tags):
        return
    raise PackagingError(
        f"{distribution.metadata['Name']} is compiled for {', '.join(tags) or 'this machine'}, "
        "not for Lambda (manylinux x86_64, CPython 3.11): package on x86_64 Linux")


def _check_leaves_out_runtime_packages(deployment: Path) -> None:
    with zipfile.ZipFile(deployment) as archive:
        top_level = {name.split("/", 1)[0] for name in archive.namelist()}
    shipped = sorted(n for n in top_level if n in {"boto3", "botocore", "s3transfer"})
    if shipped:
        raise PackagingError(f"the deployment zip contains {', '.join(shipped)}; "
                             "the Lambda runtime provides them")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", default="dev", help="Chalice stage (default: dev)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "package",
                        help="output directory (default: build/package); an earlier "
                             "package in it is replaced")
    parser.add_argument("--cors-origin",
                        help="the page's origin, allowed to call the API (default: the "
                             "stage's CORS_ORIGIN in .chalice/config.json)")
    args = parser.parse_args(argv)
    try:
        deployment = package(args.stage, args.out, args.cors_origin)
    except PackagingError as error:
        print(f"package: {error}", file=sys.stderr)
        return 1
    size = deployment.stat().st_size
    print(f"{args.out / 'sam.json'}\n{deployment} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
