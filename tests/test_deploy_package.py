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

from chalicelib.settings import Settings

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


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run `make package` for each stage, into tmp dirs (the virtualenv is taken as built)."""
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
        # The zip is the code and four small libraries: well under a megabyte or two.
        assert (path / "deployment.zip").stat().st_size < 5 * 1024 * 1024


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
    references = ("SessionsTable", "EventsTable", "Orchestrator")
    if isinstance(resource, dict):
        return any(name in text for name in references)
    return bool(re.search(r":table/backchat-(dev|prod)-chat(Sessions|Events)(/index/\w+)?$"
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
            literal = [v for v in variables.values() if isinstance(v, str)]
            assert not [v for v in literal if re.search(r"chatSessions|chatEvents|orchestrator",
                                                        v)], function
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

