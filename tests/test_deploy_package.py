"""`make package` (scripts/package.py): the packaged template, its IAM, and the policy files."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from packaging.tags import parse_tag

from chalicelib.settings import Settings
from scripts.lambda_wheels import LAMBDA_ABI, LAMBDA_RUNTIME, lambda_tags
from scripts.package import PACKAGE_FILES

REPO_ROOT = Path(__file__).resolve().parent.parent
POLICY_FILES = sorted((REPO_ROOT / ".chalice").glob("policy-*.json"))
STAGES = ("dev", "prod")
PROD_ORIGIN = "https://d111111abcdef8.cloudfront.net"
# Logical ids in Chalice's output, and the policy file of each function.
FUNCTIONS = {"APIHandler": "api", "Orchestrator": "orchestrator", "Reaper": "reaper"}
ROLES = {"APIHandler": "ApiHandlerRole", "Orchestrator": "OrchestratorRole",
         "Reaper": "ReaperRole"}
# API Gateway gives up on an integration after 29 s.
API_GATEWAY_TIMEOUT = 29
# Small enough to deploy fast; Lambda's own limit is 50 MB zipped.
ZIP_LIMIT = 1024 * 1024
# Lambda's default concurrency quota per account and region, and what it keeps unreserved.
ACCOUNT_CONCURRENCY, UNRESERVED_MINIMUM = 1000, 100


def cfn_lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    """Run the virtualenv's cfn-lint (requirements-dev.txt) on templates."""
    executable = Path(sys.executable).parent / "cfn-lint"
    command = str(executable) if executable.exists() else shutil.which("cfn-lint")
    assert command, "cfn-lint is not installed; it is in requirements-dev.txt"
    return subprocess.run([command, *map(str, paths)], capture_output=True, text=True,
                          check=False, timeout=120)


def lint_errors(result: subprocess.CompletedProcess[str]) -> bool:
    """cfn-lint exits with a bit mask: 2 errors, 4 warnings, 8 informational (1: it failed)."""
    return result.returncode not in (0, 4, 8, 12)


# Built once per test session, whichever test module asks first (they import the fixture).
_BUILT_PACKAGES: dict[str, Path] = {}


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run `make package` for each stage, into tmp dirs (the virtualenv is taken as built)."""
    if _BUILT_PACKAGES:
        return dict(_BUILT_PACKAGES)
    out = {}
    for stage in STAGES:
        target = tmp_path_factory.mktemp(f"package-{stage}")
        origin = PROD_ORIGIN if stage == "prod" else ""
        # Variables on make's command line win over any in the environment.
        result = subprocess.run(
            ["make", "--no-print-directory", "-o", ".venv/.installed", "package",
             f"STAGE={stage}", f"PACKAGE_DIR={target}", f"CORS_ORIGIN={origin}",
             f"VENV_PYTHON={sys.executable}"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        out[stage] = target
    _BUILT_PACKAGES.update(out)
    return out


@pytest.fixture(scope="module")
def templates(packages: dict[str, Path]) -> dict[str, dict]:
    return {stage: json.loads((path / "sam.json").read_text()) for stage, path in packages.items()}


def resources(template: dict, kind: str) -> dict[str, dict]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def policy_statements(node: Any) -> Iterator[dict]:
    """Yield every statement of every policy document anywhere in a template or policy."""
    if isinstance(node, dict):
        if "Statement" in node and "Version" in node:
            statements = node["Statement"]
            yield from statements if isinstance(statements, list) else [statements]
            return
        for value in node.values():
            yield from policy_statements(value)
    elif isinstance(node, list):
        for value in node:
            yield from policy_statements(value)


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def role_statements(template: dict, function: str) -> list[dict]:
    role = template["Resources"][ROLES[function]]
    return [s for policy in role["Properties"]["Policies"]
            for s in policy["PolicyDocument"]["Statement"]]


# -- acceptance 1: make package works offline and its template lints clean -----------------


def test_package_writes_template_and_zip_without_the_runtimes_own_libraries(
        packages: dict[str, Path]) -> None:
    for path in packages.values():
        with zipfile.ZipFile(path / "deployment.zip") as archive:
            top_level = {name.split("/", 1)[0] for name in archive.namelist()}
        assert {"app.py", "chalicelib", "chalice", "pynamodb", "requests"} <= top_level
        assert not top_level & {"boto3", "botocore", "s3transfer"}
        # The code and a few small libraries: under a megabyte (docs/deploy.md has the size).
        assert (path / "deployment.zip").stat().st_size < ZIP_LIMIT


def test_every_function_runs_on_the_newest_runtime_with_that_runtimes_wheels(
        packages: dict[str, Path], templates: dict[str, dict]) -> None:
    for stage, template in templates.items():
        functions = resources(template, "AWS::Serverless::Function")
        assert set(functions) == set(FUNCTIONS), stage
        assert {f["Properties"]["Runtime"] for f in functions.values()} == {LAMBDA_RUNTIME}
        assert {tuple(f["Properties"]["Architectures"]) for f in functions.values()} == {
            ("x86_64",)}
        with zipfile.ZipFile(packages[stage] / "deployment.zip") as archive:
            names = archive.namelist()
            dist_info = {name.split("/")[0] for name in names
                         if re.fullmatch(r"[^/]+\.dist-info/WHEEL", name)}
            wheel = {d: archive.read(f"{d}/WHEEL").decode() for d in dist_info}
            record = {d: archive.read(f"{d}/RECORD").decode() for d in dist_info}
        compiled = {d for d in dist_info if "Root-Is-Purelib: false" in wheel[d]}
        for dist in compiled:
            tags = {parsed for line in wheel[dist].splitlines() if line.startswith("Tag:")
                    for parsed in parse_tag(line.split(":", 1)[1].strip())}
            assert tags & lambda_tags(), (dist, tags)
        compiled_files = {line.split(",")[0] for d in compiled for line in record[d].splitlines()}
        extensions = [name for name in names if name.endswith(".so")]
        # charset_normalizer (under requests) ships compiled: the check has work to do.
        assert extensions and compiled
        for name in extensions:
            assert name in compiled_files, name
            assert name.endswith((f".cpython-{LAMBDA_ABI[2:]}-x86_64-linux-gnu.so",
                                  ".abi3.so")), name


def test_leftovers_of_the_documented_deploy_steps_do_not_stop_the_next_package(
        packages: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "package"
    shutil.copytree(packages["dev"], out)
    # `aws cloudformation package --output-template-file build/package/packaged.yaml`, as
    # earlier versions of docs/deploy.md said: it names the previous zip's S3 copy.
    (out / "packaged.yaml").write_text("CodeUri: s3://artifacts/previous-build\n")
    again = subprocess.run([sys.executable, "-m", "scripts.package", "--out", str(out)],
                           cwd=REPO_ROOT, capture_output=True, text=True, check=False,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(PACKAGE_FILES)


def test_documented_deploy_steps_write_outside_the_package_directory() -> None:
    deploy_doc = (REPO_ROOT / "docs" / "deploy.md").read_text()
    outputs = re.findall(r"--output-template-file\s+(\S+)", deploy_doc)
    assert outputs
    assert not [o for o in outputs if o.startswith("build/package/")], outputs


def test_packaged_templates_pass_cfn_lint(packages: dict[str, Path]) -> None:
    result = cfn_lint(*(path / "sam.json" for path in packages.values()))
    assert not lint_errors(result), result.stdout + result.stderr


def test_a_packaged_template_can_only_be_deployed_as_its_stage(templates: dict[str, dict]) -> None:
    for stage, template in templates.items():
        assert template["Parameters"]["Stage"]["AllowedValues"] == [stage]


@pytest.mark.parametrize("origin", [[], ["--cors-origin", f"{PROD_ORIGIN}/page"],
                                    ["--cors-origin", "https://a.example; x"]])
def test_prod_is_not_packaged_without_the_pages_origin(tmp_path: Path, origin: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "scripts.package", "--stage", "prod",
                             "--out", str(tmp_path / "out"), *origin], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 1
    assert "CORS_ORIGIN" in result.stderr
    assert not (tmp_path / "out").exists()


def test_package_never_clears_a_directory_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    result = subprocess.run([sys.executable, "-m", "scripts.package", "--out", str(tmp_path)],
                            cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 1 and "other files" in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_the_pages_origin_reaches_the_function_and_the_preflight(
        templates: dict[str, dict]) -> None:
    template = templates["prod"]
    variables = template["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert variables["CORS_ORIGIN"] == PROD_ORIGIN
    assert f"'{PROD_ORIGIN}'" in json.dumps(template["Resources"]["RestAPI"])


# -- acceptance 2: least privilege, and the orchestrator's timeout and async settings ------


def test_no_statement_grants_wildcard_actions_or_dynamodb_or_lambda_on_everything(
        templates: dict[str, dict]) -> None:
    documents = {f"sam.json ({stage})": t for stage, t in templates.items()}
    documents |= {path.name: json.loads(path.read_text()) for path in POLICY_FILES}
    assert len(POLICY_FILES) == len(STAGES) * len(FUNCTIONS)
    for source, document in documents.items():
        statements = list(policy_statements(document))
        assert statements, source
        for statement in statements:
            where = f"{source}: {json.dumps(statement)}"
            assert "NotAction" not in statement and "NotResource" not in statement, where
            actions = as_list(statement.get("Action", []))
            assert all("*" not in action for action in actions), where
            resources_ = as_list(statement.get("Resource", []))
            if any(a.split(":")[0] in ("dynamodb", "lambda") for a in actions):
                assert statement["Effect"] == "Allow" and resources_, where
                for resource in resources_:
                    assert resource != "*", where
                    assert _names_this_apps_table_or_function(resource), where


def _names_this_apps_table_or_function(resource: Any) -> bool:
    """True for a reference to the stack's tables or orchestrator, or an ARN naming them."""
    text = json.dumps(resource)
    references = ("SessionsTable", "EventsTable", "ConversationsTable", "Orchestrator")
    if isinstance(resource, dict):
        return any(name in text for name in references)
    return bool(re.search(r":table/backchat-(dev|prod)-chat(Sessions|Events|Conversations)"
                          r"(/index/\w+)?$"
                          r"|:function:backchat-(dev|prod)-orchestrator$", resource))


def test_each_role_grants_what_its_policy_file_grants(templates: dict[str, dict]) -> None:
    # `chalice deploy` uses the policy files; the packaged template its own copy, on exact ARNs.
    for stage, template in templates.items():
        for function, name in FUNCTIONS.items():
            document = json.loads((REPO_ROOT / ".chalice" / f"policy-{stage}-{name}.json").read_text())
            from_file = _normalised(document["Statement"])
            from_template = _normalised(
                [_as_policy_file_statement(s, stage) for s in role_statements(template, function)])
            assert from_template == from_file, (stage, function)


def _normalised(statements: list[dict]) -> list[tuple]:
    return sorted((s["Sid"], s["Effect"], tuple(sorted(as_list(s["Action"]))),
                   tuple(sorted(as_list(s["Resource"]))), json.dumps(s.get("Condition"),
                                                                     sort_keys=True))
                  for s in statements)


def _as_policy_file_statement(statement: dict, stage: str) -> dict:
    """Write a template statement's references the way the policy files spell them."""
    arns = {
        "SessionsTable.Arn": f"arn:aws:dynamodb:*:*:table/backchat-{stage}-chatSessions",
        "EventsTable.Arn": f"arn:aws:dynamodb:*:*:table/backchat-{stage}-chatEvents",
        "ConversationsTable.Arn": f"arn:aws:dynamodb:*:*:table/backchat-{stage}-chatConversations",
        "Orchestrator.Arn": f"arn:aws:lambda:*:*:function:backchat-{stage}-orchestrator",
        "OrchestratorFailures.Arn": f"arn:aws:sqs:*:*:backchat-{stage}-orchestrator-failures",
    }
    pseudo = {"AWS::Partition": "aws", "AWS::Region": "*", "AWS::AccountId": "*",
              "Stage": stage, "BedrockModelPattern": "*", **arns}

    def resolve(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"Fn::GetAtt"}:
            return arns[".".join(value["Fn::GetAtt"])]
        if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
            return re.sub(r"\$\{([^}]+)\}", lambda m: pseudo[m.group(1)], value["Fn::Sub"])
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    return resolve(statement)


def test_orchestrator_runs_up_to_15_minutes_and_is_never_retried(
        templates: dict[str, dict]) -> None:
    for template in templates.values():
        orchestrator = template["Resources"]["Orchestrator"]["Properties"]
        assert orchestrator["Timeout"] == 900
        configs = resources(template, "AWS::Lambda::EventInvokeConfig")
        assert len(configs) == 1
        config = next(iter(configs.values()))["Properties"]
        assert config["FunctionName"] == {"Ref": "Orchestrator"}
        assert config["MaximumRetryAttempts"] == 0
        # Older than the claim timeout, the session has been ended by the reaper.
        assert config["MaximumEventAgeInSeconds"] == Settings().claim_timeout_seconds
        destination = config["DestinationConfig"]["OnFailure"]["Destination"]
        queue = destination["Fn::GetAtt"][0]
        assert template["Resources"][queue]["Type"] == "AWS::SQS::Queue"
        # Lambda sends the failed event with the function's own role.
        assert any(s["Action"] == "sqs:SendMessage" and s["Resource"] == destination
                   for s in role_statements(template, "Orchestrator"))


def test_api_function_ends_before_api_gateway_gives_up(templates: dict[str, dict]) -> None:
    for template in templates.values():
        assert template["Resources"]["APIHandler"]["Properties"]["Timeout"] < API_GATEWAY_TIMEOUT


def test_reaper_runs_every_minute(templates: dict[str, dict]) -> None:
    for template in templates.values():
        events = template["Resources"]["Reaper"]["Properties"]["Events"]
        assert [e["Properties"]["Schedule"] for e in events.values()] == ["rate(1 minute)"]


def test_only_the_api_may_invoke_the_orchestrator(templates: dict[str, dict]) -> None:
    for template in templates.values():
        invokers = {function for function in FUNCTIONS
                    for s in role_statements(template, function)
                    if "lambda:InvokeFunction" in as_list(s["Action"])}
        assert invokers == {"APIHandler"}
        assert all(s["Resource"] == {"Fn::GetAtt": ["Orchestrator", "Arn"]}
                   for s in role_statements(template, "APIHandler")
                   if "lambda:InvokeFunction" in as_list(s["Action"]))


# -- acceptance 3: names by reference, never spelled out -----------------------------------


def test_functions_find_the_tables_and_orchestrator_by_reference(
        templates: dict[str, dict]) -> None:
    for template in templates.values():
        for function in FUNCTIONS:
            variables = template["Resources"][function]["Properties"]["Environment"]["Variables"]
            assert variables["SESSIONS_TABLE"] == {"Ref": "SessionsTable"}, function
            assert variables["EVENTS_TABLE"] == {"Ref": "EventsTable"}, function
            assert variables["CONVERSATIONS_TABLE"] == {"Ref": "ConversationsTable"}, function
            literal = [v for v in variables.values() if isinstance(v, str)]
            assert not [v for v in literal if re.search(
                r"chatSessions|chatEvents|chatConversations|orchestrator", v)], function
        api = template["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
        assert api["ORCHESTRATOR_FUNCTION"] == {"Ref": "Orchestrator"}
        assert api["DISPATCH_MODE"] == "lambda"


def test_deployed_api_requires_api_keys_given_at_deploy_time(templates: dict[str, dict]) -> None:
    for template in templates.values():
        api = template["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
        assert api["AUTH_MODE"] == "apikey"
        assert api["API_KEY_HASHES"] == {"Ref": "ApiKeyHashes"}
        parameter = template["Parameters"]["ApiKeyHashes"]
        assert parameter["NoEcho"] is True and "Default" not in parameter


def test_local_stage_stays_as_the_local_stack_needs_it() -> None:
    config = json.loads((REPO_ROOT / ".chalice" / "config.json").read_text())
    local = config["stages"]["local"]["environment_variables"]
    # No AUTH_MODE: the local stack sets it from the environment (`AUTH_MODE=apikey make run`).
    assert local == {"BACKCHAT_STAGE": "local", "DISPATCH_MODE": "thread"}
    assert "lambda_functions" not in config["stages"]["local"]



# -- concurrency, abuse and CORS on API Gateway's own answers ------------------------------


def _stage_config(stage: str) -> dict:
    return json.loads((REPO_ROOT / ".chalice" / "config.json").read_text())["stages"][stage]


def test_each_stage_throttles_every_route_as_its_config_says(templates: dict[str, dict]) -> None:
    for stage, template in templates.items():
        throttling = _stage_config(stage)["api_throttling"]
        api = template["Resources"]["RestAPI"]["Properties"]
        assert api["MethodSettings"] == [{
            "ResourcePath": "/*", "HttpMethod": "*",
            "ThrottlingRateLimit": throttling["rate_limit"],
            "ThrottlingBurstLimit": throttling["burst_limit"]}], stage
        # Its own name per stage: API Gateway's metrics (and the 5xx alarm) are per name.
        assert api["Name"] == {"Fn::Sub": "backchat-${Stage}"}


def test_orchestrator_keeps_reserved_capacity_and_the_account_keeps_its_minimum(
        templates: dict[str, dict]) -> None:
    for stage, template in templates.items():
        config = _stage_config(stage)["lambda_functions"]
        reserved = {name: template["Resources"][name]["Properties"].get(
            "ReservedConcurrentExecutions") for name in FUNCTIONS}
        assert reserved["Orchestrator"] == config["orchestrator"]["reserved_concurrency"] > 0
        # One reaper at a time, and always one: it must end dead runs even when the API is busy.
        assert reserved["Reaper"] == 1
        # The API shares the unreserved pool: a long-poll flood cannot take the runs' share.
        assert reserved["APIHandler"] is None
        # Lambda refuses a reservation that leaves fewer than 100 unreserved executions.
        assert reserved["Orchestrator"] + reserved["Reaper"] + UNRESERVED_MINIMUM <= (
            ACCOUNT_CONCURRENCY), stage


def test_api_gateways_own_errors_carry_the_stages_cors_headers(
        templates: dict[str, dict]) -> None:
    origins = {"dev": "*", "prod": PROD_ORIGIN}
    for stage, template in templates.items():
        responses = template["Resources"]["RestAPI"]["Properties"]["GatewayResponses"]
        assert set(responses) == {"DEFAULT_4XX", "DEFAULT_5XX"}
        preflight = _preflight_headers(template)
        for response in responses.values():
            headers = response["ResponseParameters"]["Headers"]
            assert headers["Access-Control-Allow-Origin"] == f"'{origins[stage]}'"
            assert headers["Access-Control-Allow-Headers"] == preflight[
                "Access-Control-Allow-Headers"]
            assert "X-Api-Key" in headers["Access-Control-Allow-Headers"]


def _preflight_headers(template: dict) -> dict[str, str]:
    paths = template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]["paths"]
    options = next(m["options"] for m in paths.values() if "options" in m)
    parameters = options["x-amazon-apigateway-integration"]["responses"]["default"][
        "responseParameters"]
    return {k.removeprefix("method.response.header."): v for k, v in parameters.items()}


def test_stage_without_throttling_is_not_packaged() -> None:
    from scripts.package import PackagingError, api_throttling

    for bad in ({}, {"api_throttling": {"rate_limit": 10}},
                {"api_throttling": {"rate_limit": 0, "burst_limit": 5}},
                {"api_throttling": {"rate_limit": 10, "burst_limit": 2.5}}):
        with pytest.raises(PackagingError, match="api_throttling"):
            api_throttling("dev", bad)
    assert api_throttling("dev", {"api_throttling": {"rate_limit": 2.5, "burst_limit": 5}}) == (
        2.5, 5)
