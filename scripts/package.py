"""Build backchat's deployable template and zip with `chalice package`, offline.

    python -m scripts.package [--stage dev] [--out build/package] [--cors-origin ORIGIN]

writes OUT/sam.json (a SAM template: Chalice's functions, API and roles, merged with
infra/tables.yaml, infra/functions.yaml and infra/alarms.yaml), OUT/deployment.zip (the code
and its runtime dependencies) and OUT/merge-template.json (what was merged, for reading).
Deploy it with `sam deploy` or `aws cloudformation package` + `deploy` (docs/deploy.md).

Chalice is run on a copy of the project in a temporary directory, so that:
- the dependencies are the wheels for the functions' runtime (LAMBDA_RUNTIME, newer than the
  Python the project is developed with) that scripts/lambda_wheels.py fetched when the
  virtualenv was set up, at the versions the tests ran with, unpacked offline; boto3,
  botocore and what only they need are left out (the Lambda runtime has them);
- only what the functions run (app.py, chalicelib/, the stage settings and policy files) is
  in it, whatever else a deployment left in the project;
- `--cors-origin` can set the stage's CORS_ORIGIN without editing .chalice/config.json (the
  origin is read when app.py is imported, so API Gateway's preflight answer and the
  function's own headers both come from it).
Chalice's output is then finished: every function's Runtime is LAMBDA_RUNTIME (Chalice
would name the packaging Python's), and API Gateway's own 4XX/5XX answers carry the CORS
headers of Chalice's preflight answers.
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
from pathlib import Path
from typing import Any

from scripts.lambda_wheels import LAMBDA_RUNTIME, WheelError, install

REPO_ROOT = Path(__file__).resolve().parent.parent
INFRA = REPO_ROOT / "infra"
MERGED_TEMPLATES = (INFRA / "tables.yaml", INFRA / "functions.yaml", INFRA / "alarms.yaml")
# What a package directory holds: chalice's template and zip, and the merged template.
PACKAGE_FILES = ("sam.json", "deployment.zip", "merge-template.json")
# What the deploy steps of earlier docs/deploy.md versions wrote beside the package: derived
# from the previous build (it names its zip's S3 copy), so stale once the package is rebuilt.
DEPLOY_LEFTOVERS = ("packaged.yaml", "packaged.json")
# How old Lambda lets an asynchronous event get, in seconds.
MIN_EVENT_AGE, MAX_EVENT_AGE = 60, 21600
# API Gateway's answers of its own (throttled, unauthorised, timed out...) that get CORS.
GATEWAY_RESPONSE_TYPES = ("DEFAULT_4XX", "DEFAULT_5XX")
CORS_RESPONSE_HEADERS = ("Access-Control-Allow-Origin", "Access-Control-Allow-Headers")
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


def merge_template(stage: str, stage_settings: dict[str, Any], claim_timeout_seconds: int) -> dict:
    """Return the infra/ templates as one template, for one stage and its settings."""
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
    resources = merged["Resources"]
    # A dispatched session not claimed by then is ended by the reaper: an older event could
    # only be refused, so Lambda may as well drop it.
    resources["OrchestratorAsyncConfig"]["Properties"][
        "MaximumEventAgeInSeconds"] = claim_timeout_seconds
    rate, burst = api_throttling(stage, stage_settings)
    [method_settings] = resources["RestAPI"]["Properties"]["MethodSettings"]
    method_settings["ThrottlingRateLimit"] = rate
    method_settings["ThrottlingBurstLimit"] = burst
    return merged


def api_throttling(stage: str, stage_settings: dict[str, Any]) -> tuple[float, int]:
    """Return the stage's API Gateway (rate per second, burst) from .chalice/config.json."""
    throttling = stage_settings.get("api_throttling")
    if not isinstance(throttling, dict) or set(throttling) != {"rate_limit", "burst_limit"}:
        raise PackagingError(f"stage {stage!r} needs \"api_throttling\": {{\"rate_limit\": "
                             "<requests per second>, \"burst_limit\": <requests>}} in "
                             ".chalice/config.json (docs/deploy.md, Concurrency)")
    rate, burst = throttling["rate_limit"], throttling["burst_limit"]
    if not (isinstance(rate, (int, float)) and rate > 0 and isinstance(burst, int) and burst >= 1):
        raise PackagingError(f"stage {stage!r}: api_throttling needs a rate_limit > 0 and a "
                             "whole burst_limit >= 1")
    return rate, burst


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


def stage_project(project: Path, stage: str, cors_origin: str | None) -> dict[str, Any]:
    """Copy what the functions run into project, with the stage's CORS origin; return the
    stage's settings from .chalice/config.json."""
    shutil.copy2(REPO_ROOT / "app.py", project / "app.py")
    shutil.copytree(REPO_ROOT / "chalicelib", project / "chalicelib",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    # The settings and policy files only: not what `chalice deploy` keeps beside them.
    (project / ".chalice").mkdir()
    for path in (REPO_ROOT / ".chalice").glob("policy-*.json"):
        shutil.copy2(path, project / ".chalice" / path.name)
    config = json.loads((REPO_ROOT / ".chalice" / "config.json").read_text())
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
    (project / ".chalice" / "config.json").write_text(json.dumps(config, indent=2))
    return stage_config


def finish_template(template: dict) -> dict:
    """Set every function's runtime, and give API Gateway's own errors the preflight's CORS."""
    resources = template["Resources"]
    for resource in resources.values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["Runtime"] = LAMBDA_RUNTIME
    api = resources["RestAPI"]["Properties"]
    headers = preflight_headers(api["DefinitionBody"])
    if set(headers) != set(CORS_RESPONSE_HEADERS):
        raise PackagingError("no route answers CORS preflights; app.py's routes need cors=")
    api["GatewayResponses"] = {kind: {"ResponseParameters": {"Headers": dict(headers)}}
                               for kind in GATEWAY_RESPONSE_TYPES}
    return template


def preflight_headers(swagger: dict) -> dict[str, str]:
    """Return the CORS_RESPONSE_HEADERS (name: quoted value) of the API's preflight answers.

    Every route's preflight must agree on them (only the allowed methods differ by route).
    """
    found: dict[str, str] = {}
    for methods in swagger.get("paths", {}).values():
        options = methods.get("options")
        if options is None:
            continue
        parameters = options["x-amazon-apigateway-integration"]["responses"]["default"][
            "responseParameters"]
        for key, value in parameters.items():
            name = key.removeprefix("method.response.header.")
            if name in CORS_RESPONSE_HEADERS and found.setdefault(name, value) != value:
                raise PackagingError(f"routes answer preflights with different {name}: "
                                     f"{found[name]} and {value}")
    return found


def package(stage: str, out: Path, cors_origin: str | None = None) -> Path:
    """Write sam.json, deployment.zip and merge-template.json for stage into out; return the zip."""
    chalice = Path(sys.executable).parent / "chalice"
    out = out.resolve()  # chalice resolves a relative path against the project copy
    with tempfile.TemporaryDirectory(prefix="backchat-package-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        stage_settings = stage_project(project, stage, cors_origin)
        # No requirements.txt in the copy: Chalice then runs no pip, and copies vendor/ in.
        try:
            install(project / "vendor")
        except WheelError as error:
            raise PackagingError(str(error)) from None
        template = Path(tmp) / "merge-template.json"
        template.write_text(json.dumps(
            merge_template(stage, stage_settings, claim_timeout(project, stage)), indent=2))
        _clear_previous_package(out)
        result = subprocess.run(
            [str(chalice), "--project-dir", str(project), "package", "--stage", stage,
             "--merge-template", str(template), str(out)],
            env=_packaging_environment(),
            capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PackagingError(f"chalice package failed:\n{result.stdout}{result.stderr}")
        shutil.copy2(template, out / "merge-template.json")
    sam = out / "sam.json"
    sam.write_text(json.dumps(finish_template(json.loads(sam.read_text())), indent=2) + "\n")
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
    ours = PACKAGE_FILES + DEPLOY_LEFTOVERS
    others = sorted(p.name for p in out.iterdir() if p.name not in ours)
    if others:
        raise PackagingError(f"{out} holds other files ({', '.join(others[:3])}); "
                             "choose an empty or new output directory")
    for name in ours:
        (out / name).unlink(missing_ok=True)


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
    print(f"{args.out / 'sam.json'}\n{deployment} ({size / 1024:.0f} KiB, {LAMBDA_RUNTIME})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
