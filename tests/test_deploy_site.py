"""infra/site.yaml (the page on S3 + CloudFront) and scripts/upload_site.py (on moto's S3)."""
from __future__ import annotations

import re
from pathlib import Path

import boto3
import pytest
import yaml
from moto import mock_aws

from scripts.page_config import UserPoolSignIn
from scripts.static_site import content_security_policy
from scripts.upload_site import api_base_of, main, upload_site
from tests.test_deploy_package import cfn_lint, lint_errors

REPO_ROOT = Path(__file__).resolve().parent.parent
SITE_TEMPLATE = REPO_ROOT / "infra" / "site.yaml"
API_ORIGIN = "https://abc123.execute-api.us-east-1.amazonaws.com"
USER_POOL_ORIGIN = "https://backchat-test.auth.us-east-1.amazoncognito.com"
SITE = "https://d111111abcdef8.cloudfront.net"
BUCKET = "backchat-site-test"


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short tags (!Sub, !Ref, !GetAtt) as {"Fn::...": value}."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict:
    name = suffix if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        return {name: loader.construct_scalar(node)}
    return {name: loader.construct_sequence(node, deep=True)}


_CfnLoader.add_multi_constructor("!", _intrinsic)


@pytest.fixture(scope="module")
def site() -> dict:
    return yaml.load(SITE_TEMPLATE.read_text(), Loader=_CfnLoader)


def _of_type(template: dict, kind: str) -> dict:
    [resource] = [r for r in template["Resources"].values() if r["Type"] == kind]
    return resource["Properties"]


def test_site_template_passes_cfn_lint() -> None:
    result = cfn_lint(SITE_TEMPLATE)
    assert not lint_errors(result), result.stdout + result.stderr


def test_bucket_is_private_encrypted_and_owner_enforced(site: dict) -> None:
    bucket = _of_type(site, "AWS::S3::Bucket")
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]


def test_only_this_distribution_may_read_the_bucket(site: dict) -> None:
    policy = _of_type(site, "AWS::S3::BucketPolicy")["PolicyDocument"]["Statement"]
    allows = [s for s in policy if s["Effect"] == "Allow"]
    assert len(allows) == 1
    [allow] = allows
    assert allow["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert allow["Action"] == "s3:GetObject"
    source = allow["Condition"]["StringEquals"]["AWS:SourceArn"]["Fn::Sub"]
    assert source.endswith(":distribution/${SiteDistribution}")
    distribution = _of_type(site, "AWS::CloudFront::Distribution")["DistributionConfig"]
    [origin] = distribution["Origins"]
    assert origin["OriginAccessControlId"] == {"Fn::GetAtt": "SiteOriginAccessControl.Id"}
    assert distribution["DefaultRootObject"] == "index.html"
    assert distribution["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "redirect-to-https"


def _render(value: object, parameters: dict[str, str], conditions: dict[str, bool]) -> str:
    """Evaluate the Fn::Join / Fn::Sub / Fn::If a template string is built with."""
    if isinstance(value, str):
        return value
    [(name, argument)] = value.items()  # type: ignore[union-attr]
    if name == "Fn::Sub":
        return re.sub(r"\$\{(\w+)\}", lambda match: parameters[match.group(1)], argument)
    if name == "Fn::If":
        condition, when_true, when_false = argument
        return _render(when_true if conditions[condition] else when_false, parameters, conditions)
    if name == "Fn::Join":
        separator, parts = argument
        return separator.join(_render(part, parameters, conditions) for part in parts)
    raise AssertionError(f"unexpected {name} in the CSP")


@pytest.mark.parametrize("user_pool_origin", ["", USER_POOL_ORIGIN])
def test_page_gets_the_local_servers_csp_and_strict_headers(site: dict, user_pool_origin: str) -> None:
    config = _of_type(site, "AWS::CloudFront::ResponseHeadersPolicy")["ResponseHeadersPolicyConfig"]
    headers = config["SecurityHeadersConfig"]
    csp = _render(headers["ContentSecurityPolicy"]["ContentSecurityPolicy"],
                  {"ApiOrigin": API_ORIGIN, "UserPoolOrigin": user_pool_origin},
                  {"SignsInWithUserPool": user_pool_origin != ""})
    # The token endpoint is allowed only when a user pool signs the page in.
    assert csp == content_security_policy(API_ORIGIN, *filter(None, [user_pool_origin]))
    assert headers["StrictTransportSecurity"]["AccessControlMaxAgeSec"] >= 31536000
    assert headers["ContentTypeOptions"]["Override"] is True
    assert headers["ReferrerPolicy"]["ReferrerPolicy"] == "no-referrer"
    assert headers["FrameOptions"]["FrameOption"] == "DENY"
    assert all(h["Override"] is True for h in headers.values())


def test_api_origin_parameter_cannot_inject_into_the_csp(site: dict) -> None:
    pattern = re.compile(site["Parameters"]["ApiOrigin"]["AllowedPattern"])
    assert pattern.match(API_ORIGIN)
    for bad in ("http://abc.example.com", f"{API_ORIGIN}; script-src *", f"{API_ORIGIN}/api",
                "https://a b"):
        assert not pattern.match(bad), bad


def test_user_pool_origin_parameter_is_optional_and_cannot_inject_into_the_csp(site: dict) -> None:
    parameter = site["Parameters"]["UserPoolOrigin"]
    pattern = re.compile(parameter["AllowedPattern"])
    assert parameter["Default"] == "" and pattern.match("")
    assert pattern.match(USER_POOL_ORIGIN)
    for bad in ("http://x.example.com", f"{USER_POOL_ORIGIN}; connect-src *", f"{USER_POOL_ORIGIN}/",
                f"{USER_POOL_ORIGIN} https://evil.example.com"):
        assert not pattern.match(bad), bad


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch):
    """moto's in-process S3 with fake credentials: nothing leaves the process."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def test_upload_puts_every_page_file_with_its_type_and_a_config_naming_the_api(s3) -> None:
    report = upload_site(s3, BUCKET, api_base_of(API_ORIGIN + "/api/"))
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {"index.html", "app.js", "api.js", "style.css", "config.js"} <= keys
    assert keys == set(report.uploaded)
    assert not any(key.startswith(".") or "/." in key for key in keys)
    config = s3.get_object(Bucket=BUCKET, Key="config.js")
    assert config["Body"].read() == f'export const API_BASE = "{API_ORIGIN}/api";\n'.encode()
    expected = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                "config.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8",
                "favicon.svg": "image/svg+xml"}
    for key, content_type in expected.items():
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ContentType"] == content_type, key
        assert head["CacheControl"] == "no-cache", key
    page = (REPO_ROOT / "frontend" / "index.html").read_bytes()
    assert s3.get_object(Bucket=BUCKET, Key="index.html")["Body"].read() == page


def test_upload_removes_files_the_page_no_longer_has(s3, tmp_path: Path) -> None:
    s3.put_object(Bucket=BUCKET, Key="old-module.js", Body=b"")
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / ".hidden").write_text("secret")
    report = upload_site(s3, BUCKET, API_ORIGIN, root=tmp_path)
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert keys == {"index.html", "config.js"}
    assert report.deleted == ("old-module.js",)


@pytest.mark.parametrize("url", ["http://abc.example.com/api", "https://", "abc.example.com",
                                 "https://abc.example.com/api?x=1"])
def test_upload_refuses_an_api_base_that_is_not_plain_https(url: str, capsys) -> None:
    with pytest.raises(ValueError):
        api_base_of(url)
    assert main(["--bucket", BUCKET, "--api-base", url]) == 2
    assert "https" in capsys.readouterr().err


def test_upload_with_a_user_pool_names_it_in_the_config(s3) -> None:
    user_pool = UserPoolSignIn.checked(USER_POOL_ORIGIN, "page-client", f"{SITE}/")
    upload_site(s3, BUCKET, API_ORIGIN + "/api", user_pool=user_pool)
    config = s3.get_object(Bucket=BUCKET, Key="config.js")["Body"].read().decode()
    assert config == (
        f'export const API_BASE = "{API_ORIGIN}/api";\n'
        f'export const COGNITO = {{"domain": "{USER_POOL_ORIGIN}", "clientId": "page-client", '
        f'"redirectUri": "{SITE}/", "scopes": ["openid", "email", "profile"]}};\n'
    )


def test_upload_command_writes_the_user_pool_from_the_cognito_stacks_outputs(s3, capsys) -> None:
    code = main(["--bucket", BUCKET, "--api-base", API_ORIGIN + "/api/",
                 "--cognito-domain", USER_POOL_ORIGIN + "/", "--cognito-client-id", "page-client",
                 "--redirect-uri", f"{SITE}/", "--scopes", "openid email"])
    assert code == 0, capsys.readouterr().err
    config = s3.get_object(Bucket=BUCKET, Key="config.js")["Body"].read().decode()
    assert f'"domain": "{USER_POOL_ORIGIN}"' in config and '"scopes": ["openid", "email"]' in config
    assert f"signs in with the user pool at {USER_POOL_ORIGIN}" in capsys.readouterr().out


@pytest.mark.parametrize("options, complaint", [
    (["--cognito-domain", USER_POOL_ORIGIN], "go together"),
    (["--cognito-domain", "http://pool.example.com", "--cognito-client-id", "c",
      "--redirect-uri", f"{SITE}/"], "user pool domain must be an https URL"),
    (["--cognito-domain", "http://127.0.0.1:9000", "--cognito-client-id", "c",
      "--redirect-uri", f"{SITE}/"], "user pool domain must be https"),
    (["--cognito-domain", USER_POOL_ORIGIN, "--cognito-client-id", "c",
      "--redirect-uri", "http://localhost:8080/"], "redirect URI must be https"),
    (["--cognito-domain", USER_POOL_ORIGIN, "--cognito-client-id", "c",
      "--redirect-uri", f"{SITE}/", "--scopes", "email"], "must include openid"),
])
def test_upload_refuses_an_incomplete_or_insecure_user_pool(options: list[str], complaint: str,
                                                             capsys) -> None:
    assert main(["--bucket", BUCKET, "--api-base", API_ORIGIN, *options]) == 2
    assert complaint in capsys.readouterr().err
