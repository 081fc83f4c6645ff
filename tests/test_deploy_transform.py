"""The packaged template through the SAM transform, as CloudFormation would run it.

`sam deploy` and `aws cloudformation package` upload the zip and point each CodeUri at it;
CloudFormation then expands AWS::Serverless-2016-10-31. These tests do both offline, with
aws-sam-translator (the transform's own code), and check the CloudFormation that comes out:
every Ref, GetAtt, Sub, DependsOn and condition names something that exists, it lints clean,
and what the SAM properties asked for is in the resources.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from scripts.lambda_wheels import LAMBDA_RUNTIME
from tests.test_deploy_package import (  # noqa: F401 (module-scoped fixtures, used by name)
    FUNCTIONS,
    cfn_lint,
    lint_errors,
    packages,
    templates,
)

PSEUDO_PARAMETERS = frozenset({
    "AWS::AccountId", "AWS::NotificationARNs", "AWS::NoValue", "AWS::Partition",
    "AWS::Region", "AWS::StackId", "AWS::StackName", "AWS::URLSuffix"})
# What a deployer passes: the parameters without a default.
DEPLOY_PARAMETERS = {"ApiKeyHashes": "alice:" + "a" * 64, "CursorSecret": "c" * 32}
SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")


def uploaded(template: dict, zip_path: Path) -> dict:
    """Return the template as the package step leaves it: CodeUri is the zip's S3 copy."""
    result = copy.deepcopy(template)
    key = hashlib.md5(zip_path.read_bytes()).hexdigest()  # the package step names it so
    for resource in result["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            assert resource["Properties"]["CodeUri"] == "./deployment.zip"
            resource["Properties"]["CodeUri"] = f"s3://backchat-artifacts/{key}"
    return result


def sam_transform(template: dict, parameters: dict[str, str]) -> dict:
    """Run the SAM transform offline (no managed policies are used, so none are looked up)."""
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="offline",
                                    aws_secret_access_key="offline")
    translator = Translator({}, Parser(), boto_session=session)
    return translator.translate(copy.deepcopy(template), parameters,
                                get_managed_policy_map=lambda: {})


@pytest.fixture(scope="module")
def transformed(packages: dict[str, Path], templates: dict[str, dict]) -> dict[str, dict]:
    return {stage: sam_transform(uploaded(template, packages[stage] / "deployment.zip"),
                                 {"Stage": stage, **DEPLOY_PARAMETERS})
            for stage, template in templates.items()}


def references(node: Any) -> Iterator[tuple[str, str]]:
    """Yield (kind, logical name) for every reference anywhere in a template fragment."""
    if isinstance(node, list):
        for item in node:
            yield from references(item)
        return
    if not isinstance(node, dict):
        return
    if set(node) == {"Ref"}:
        yield "Ref", node["Ref"]
        return
    if set(node) == {"Fn::GetAtt"}:
        target = node["Fn::GetAtt"]
        yield "GetAtt", (target.split(".")[0] if isinstance(target, str) else target[0])
        return
    if set(node) == {"Fn::Sub"}:
        text, variables = (node["Fn::Sub"], {}) if isinstance(node["Fn::Sub"], str) else \
            node["Fn::Sub"]
        for name in SUB_VARIABLE.findall(text):
            if name not in variables:
                yield ("Sub", name) if "::" in name else ("Sub", name.split(".")[0])
        yield from references(variables)
        return
    if set(node) == {"Fn::If"}:
        yield "Condition", node["Fn::If"][0]
        yield from references(node["Fn::If"][1:])
        return
    for value in node.values():
        yield from references(value)


def unresolved(template: dict) -> list[str]:
    """Return every reference in the template that names nothing."""
    resources, parameters = template["Resources"], template.get("Parameters", {})
    conditions = template.get("Conditions", {})
    known = set(resources) | set(parameters) | PSEUDO_PARAMETERS
    problems = []
    for where in ("Resources", "Outputs", "Conditions"):
        for kind, name in references(template.get(where, {})):
            ok = {"Condition": conditions, "GetAtt": resources}.get(kind, known)
            if name not in ok:
                problems.append(f"{where}: {kind} {name}")
    for logical_id, resource in resources.items():
        depends = resource.get("DependsOn", [])
        problems += [f"{logical_id}: DependsOn {d}" for d in
                     ([depends] if isinstance(depends, str) else depends) if d not in resources]
        if "Condition" in resource and resource["Condition"] not in conditions:
            problems.append(f"{logical_id}: Condition {resource['Condition']}")
    return problems


def test_the_sam_transform_expands_the_packaged_template(transformed: dict[str, dict]) -> None:
    for stage, template in transformed.items():
        kinds = {r["Type"] for r in template["Resources"].values()}
        assert not [k for k in kinds if k.startswith("AWS::Serverless::")], stage
        assert {"AWS::Lambda::Function", "AWS::ApiGateway::RestApi", "AWS::ApiGateway::Stage",
                "AWS::ApiGateway::Deployment", "AWS::DynamoDB::Table",
                "AWS::CloudWatch::Alarm", "AWS::CloudWatch::Dashboard"} <= kinds, stage


def test_every_reference_in_the_transformed_template_resolves(
        transformed: dict[str, dict]) -> None:
    for stage, template in transformed.items():
        assert unresolved(template) == [], stage


def test_the_reference_check_finds_a_dangling_reference(transformed: dict[str, dict]) -> None:
    broken = copy.deepcopy(transformed["dev"])
    broken["Resources"]["OrchestratorAsyncConfig"]["Properties"]["FunctionName"] = {
        "Ref": "Orchestrater"}
    broken["Outputs"]["Typo"] = {"Value": {"Fn::Sub": "${SessionTable.Arn} ${!Literal}"}}
    assert unresolved(broken) == ["Resources: Ref Orchestrater", "Outputs: Sub SessionTable"]


def test_the_transformed_template_passes_cfn_lint(transformed: dict[str, dict],
                                                  tmp_path: Path) -> None:
    paths = []
    for stage, template in transformed.items():
        path = tmp_path / f"cloudformation-{stage}.json"
        path.write_text(json.dumps(template))
        paths.append(path)
    result = cfn_lint(*paths)
    assert not lint_errors(result), result.stdout + result.stderr


def test_cloudformation_gets_the_runtime_throttling_and_cors_asked_for(
        transformed: dict[str, dict]) -> None:
    for stage, template in transformed.items():
        resources = template["Resources"]
        for function in FUNCTIONS:
            assert resources[function]["Properties"]["Runtime"] == LAMBDA_RUNTIME
        [stage_resource] = [r["Properties"] for r in resources.values()
                            if r["Type"] == "AWS::ApiGateway::Stage"]
        [settings] = stage_resource["MethodSettings"]
        assert settings["ThrottlingRateLimit"] > 0 and settings["ThrottlingBurstLimit"] > 0
        body = resources["RestAPI"]["Properties"]["Body"]
        responses = body["x-amazon-apigateway-gateway-responses"]
        assert set(responses) == {"DEFAULT_4XX", "DEFAULT_5XX"}
        for response in responses.values():
            assert "gatewayresponse.header.Access-Control-Allow-Origin" in response[
                "responseParameters"]
        assert resources["Orchestrator"]["Properties"]["ReservedConcurrentExecutions"] > 0
