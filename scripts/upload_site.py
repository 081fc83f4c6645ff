"""Upload the chat page (frontend/) to the site bucket, with config.js naming the deployed API.

    python -m scripts.upload_site --bucket BUCKET --api-base https://abc.execute-api.REGION.amazonaws.com/api
        [--cognito-domain https://PREFIX.auth.REGION.amazoncognito.com --cognito-client-id ID
         --redirect-uri https://dxxxx.cloudfront.net/]

BUCKET is infra/site.yaml's BucketName output; the API base is the API stack's EndpointURL
output (its trailing slash is dropped). With the three --cognito/--redirect options (the
outputs of infra/cognito.yaml), config.js also names the user pool and the page signs in
through its hosted UI; without them it asks for an API key when the API answers 401. Every file gets an explicit Content-Type (a module
script served as anything but JavaScript is refused under nosniff) and `Cache-Control:
no-cache`, so browsers and CloudFront revalidate and a new upload is seen at once, never
half old and half new. Files in the bucket that frontend/ no longer has are deleted.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scripts.page_config import DEFAULT_SCOPES, PageConfigError, UserPoolSignIn, config_module
from scripts.static_site import CONFIG_MODULE_PATH, CONTENT_TYPES, DEFAULT_CONTENT_TYPE

FRONTEND = Path(__file__).resolve().parent.parent / "frontend"
CONFIG_KEY = CONFIG_MODULE_PATH.lstrip("/")
CACHE_CONTROL = "no-cache"


@dataclass(frozen=True)
class UploadReport:
    """What an upload changed in the bucket."""

    uploaded: tuple[str, ...]
    deleted: tuple[str, ...]


def api_base_of(url: str) -> str:
    """Return the API base the page prefixes its /api/... paths with; raise ValueError if unusable."""
    parts = urlsplit(url.strip())
    if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"the API base must be an https URL without query, not {url!r}")
    return f"https://{parts.netloc}{parts.path.rstrip('/')}"


def upload_site(s3: Any, bucket: str, api_base: str, root: Path = FRONTEND,
                user_pool: UserPoolSignIn | None = None) -> UploadReport:
    """Put every page file and a generated config.js into bucket; delete keys no longer there."""
    objects = {key: path.read_bytes() for key, path in _page_files(root).items()}
    objects[CONFIG_KEY] = config_module(api_base, user_pool)
    for key, body in sorted(objects.items()):
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=_content_type(key),
                      CacheControl=CACHE_CONTROL)
    stale = sorted(set(_existing_keys(s3, bucket)) - objects.keys())
    for start in range(0, len(stale), 1000):  # DeleteObjects takes at most 1,000 keys
        batch = stale[start:start + 1000]
        s3.delete_objects(Bucket=bucket,
                          Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True})
    return UploadReport(uploaded=tuple(sorted(objects)), deleted=tuple(stale))


def _page_files(root: Path) -> dict[str, Path]:
    """Return the page's files by bucket key, leaving out hidden files and directories."""
    files = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            files[relative.as_posix()] = path
    return files


def _content_type(key: str) -> str:
    return CONTENT_TYPES.get(Path(key).suffix.lower(), DEFAULT_CONTENT_TYPE)


def _existing_keys(s3: Any, bucket: str) -> list[str]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bucket", required=True, help="the site stack's BucketName output")
    parser.add_argument("--api-base", required=True,
                        help="the API stack's EndpointURL output, e.g. https://abc.execute-api."
                             "us-east-1.amazonaws.com/api/")
    parser.add_argument("--region", help="the bucket's region (default: the AWS CLI's)")
    cognito = parser.add_argument_group(
        "Cognito sign-in", "all three, from infra/cognito.yaml's outputs, or none (API keys)")
    cognito.add_argument("--cognito-domain", help="the HostedUiDomain output")
    cognito.add_argument("--cognito-client-id", help="the ClientId output")
    cognito.add_argument("--redirect-uri", help="the RedirectUri output (the page's address)")
    cognito.add_argument("--scopes", default=" ".join(DEFAULT_SCOPES),
                         help="OAuth scopes, space-separated (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        api_base = api_base_of(args.api_base)
        user_pool = _user_pool(args)
    except ValueError as error:
        print(f"upload_site: {error}", file=sys.stderr)
        return 2
    import boto3  # only a real upload needs AWS; tests pass their own client

    report = upload_site(boto3.client("s3", region_name=args.region), args.bucket, api_base,
                         user_pool=user_pool)
    signs_in = f"the user pool at {user_pool.domain}" if user_pool else "API keys"
    print(f"uploaded {len(report.uploaded)} files to s3://{args.bucket} "
          f"(API_BASE = {api_base}; signs in with {signs_in}); "
          f"deleted {len(report.deleted)} stale ones")
    return 0


def _user_pool(args: argparse.Namespace) -> UserPoolSignIn | None:
    """Return the user pool the options name, or None; raise ValueError if only some are given."""
    values = (args.cognito_domain, args.cognito_client_id, args.redirect_uri)
    if not any(values):
        return None
    if not all(values):
        raise PageConfigError(
            "--cognito-domain, --cognito-client-id and --redirect-uri go together")
    user_pool = UserPoolSignIn.checked(args.cognito_domain, args.cognito_client_id,
                                       args.redirect_uri, args.scopes.split())
    # Loopback http is for the tests' stand-in hosted UI; a deployed page signs in over https only.
    for what, url in (("user pool domain", user_pool.domain), ("redirect URI", user_pool.redirect_uri)):
        if not url.startswith("https://"):
            raise PageConfigError(f"the {what} must be https, not {url!r}")
    return user_pool


if __name__ == "__main__":
    sys.exit(main())
