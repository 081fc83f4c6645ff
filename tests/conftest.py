"""Shared fixtures: aws -> settings -> store -> components -> client."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from moto import mock_aws

from chalicelib.settings import Settings
from chalicelib.store import SessionStore
from scripts.embedded_dynamodb import install_atomic_backend

PROJECT_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def one_botocore_session() -> Iterator[None]:
    """Give every PynamoDB connection in the test process one botocore session.

    Each new session loads DynamoDB's service description again (about 0.3 s of JSON); the
    tests bind fresh models, and so fresh connections, for every test.
    """
    import botocore.session
    import pynamodb.connection.base as connection_base

    shared = botocore.session.get_session()
    original = connection_base.get_session
    connection_base.get_session = lambda: shared
    yield
    connection_base.get_session = original


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process moto with fake credentials; nothing can reach a real AWS account."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DDB_ENDPOINT", raising=False)
    install_atomic_backend()
    with mock_aws():
        yield


@pytest.fixture
def settings() -> Settings:
    """Settings for in-process tests: inline dispatch, fast flushes."""
    # chalice.test gives Lambda invocations a 3-second deadline, hence the small margin.
    return Settings(dispatch_mode="inline", flush_interval=0.05, heartbeat_interval=0.2,
                    lease_seconds=5, deadline_margin_seconds=0.5)


@pytest.fixture
def store(aws: None, settings: Settings) -> SessionStore:
    store = SessionStore(settings)
    store.create_tables()
    return store


@pytest.fixture
def components(store: SessionStore, settings: Settings, monkeypatch: pytest.MonkeyPatch):
    """The app's components on moto with inline dispatch, installed into app.py."""
    import app as app_module
    from chalicelib.wiring import build_components

    built = build_components(settings)
    monkeypatch.setattr(app_module, "_components", built)
    return built


@pytest.fixture
def client(components):
    """chalice.test.Client for the app, with the project's own config."""
    from chalice.test import Client

    import app as app_module

    with Client(app_module.app, stage_name="local", project_dir=str(PROJECT_DIR)) as test_client:
        yield test_client
