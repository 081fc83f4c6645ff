"""infra/cognito.yaml: the optional user pool the page signs in with (issue 12)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from scripts.page_config import UserPoolSignIn
from tests.test_deploy_package import cfn_lint, lint_errors
from tests.test_deploy_site import _CfnLoader, _of_type

TEMPLATE = Path(__file__).resolve().parent.parent / "infra" / "cognito.yaml"


@pytest.fixture(scope="module")
def cognito() -> dict:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)


def test_cognito_template_passes_cfn_lint() -> None:
    result = cfn_lint(TEMPLATE)
    assert not lint_errors(result), result.stdout + result.stderr
    assert result.returncode == 0, result.stdout  # no warnings either


def test_page_client_is_public_and_uses_only_the_code_flow(cognito: dict) -> None:
    client = _of_type(cognito, "AWS::Cognito::UserPoolClient")
    assert client["GenerateSecret"] is False
    assert client["AllowedOAuthFlows"] == ["code"]  # no implicit flow, no client credentials
    assert client["AllowedOAuthFlowsUserPoolClient"] is True
    assert "openid" in client["AllowedOAuthScopes"]
    assert client["SupportedIdentityProviders"] == ["COGNITO"]
    assert client["EnableTokenRevocation"] is True
    assert set(client["ExplicitAuthFlows"]) == {"ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"}
    assert client["PreventUserExistenceErrors"] == "ENABLED"


def test_callback_and_sign_out_urls_are_the_sites_page_and_optionally_the_local_one(cognito: dict) -> None:
    client = _of_type(cognito, "AWS::Cognito::UserPoolClient")
    for urls in (client["CallbackURLs"], client["LogoutURLs"]):
        condition, with_local, without_local = urls["Fn::If"]
        assert condition == "AcceptsLocalPage"
        assert without_local == [{"Fn::Sub": "${SiteOrigin}/"}]
        assert with_local == [{"Fn::Sub": "${SiteOrigin}/"}, {"Ref": "LocalPageUrl"}]
    assert client["DefaultRedirectURI"] == {"Fn::Sub": "${SiteOrigin}/"}
    local = re.compile(cognito["Parameters"]["LocalPageUrl"]["AllowedPattern"])
    assert local.match("") and local.match("http://localhost:8080/")
    for bad in ("http://127.0.0.1:8080/", "http://evil.example.com/", "https://localhost:8080/x"):
        assert not local.match(bad), bad
    site = re.compile(cognito["Parameters"]["SiteOrigin"]["AllowedPattern"])
    assert site.match("https://d111111abcdef8.cloudfront.net")
    for bad in ("http://d111111abcdef8.cloudfront.net", "https://d1.cloudfront.net/app", ""):
        assert not site.match(bad), bad


def test_only_administrators_create_users_unless_self_sign_up_is_chosen(cognito: dict) -> None:
    pool = _of_type(cognito, "AWS::Cognito::UserPool")
    assert cognito["Parameters"]["AllowSelfSignUp"]["Default"] == "false"
    assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] == {
        "Fn::If": ["AdminCreatesUsers", True, False]}
    assert pool["Policies"]["PasswordPolicy"]["MinimumLength"] >= 12
    assert pool["DeletionProtection"] == "ACTIVE"
    [resource] = [r for r in cognito["Resources"].values() if r["Type"] == "AWS::Cognito::UserPool"]
    assert resource["DeletionPolicy"] == "RetainExceptOnCreate"


def test_outputs_are_what_the_api_and_upload_site_take(cognito: dict) -> None:
    outputs = cognito["Outputs"]
    assert outputs["UserPoolArn"]["Value"] == {"Fn::GetAtt": "UserPool.Arn"}
    assert outputs["ClientId"]["Value"] == {"Ref": "PageClient"}
    domain = outputs["HostedUiDomain"]["Value"]["Fn::Sub"]
    assert domain == "https://${UserPoolDomain}.auth.${AWS::Region}.amazoncognito.com"
    redirect = outputs["RedirectUri"]["Value"]["Fn::Sub"]
    # Filled in as CloudFormation would, they make a page config upload_site accepts.
    user_pool = UserPoolSignIn.checked(
        domain.replace("${UserPoolDomain}", "backchat-dev").replace("${AWS::Region}", "eu-west-1"),
        "1h2g3f4e5d", redirect.replace("${SiteOrigin}", "https://d111111abcdef8.cloudfront.net"),
    )
    assert user_pool.domain == "https://backchat-dev.auth.eu-west-1.amazoncognito.com"
    assert user_pool.redirect_uri == "https://d111111abcdef8.cloudfront.net/"
