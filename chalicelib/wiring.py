"""Build the store, providers, dispatcher, orchestrator and service from settings."""
from __future__ import annotations

import os
from dataclasses import dataclass

from chalicelib.auth import Authenticator, parse_key_hashes
from chalicelib.dispatch import Dispatcher, InlineDispatcher, LambdaDispatcher, ThreadDispatcher
from chalicelib.orchestrator import Orchestrator
from chalicelib.providers import ProviderRegistry
from chalicelib.providers.catalog import build_providers
from chalicelib.reaper import LocalReaperLoop, Reaper
from chalicelib.service import ChatService
from chalicelib.settings import Settings
from chalicelib.store import SessionStore
from chalicelib.tools import default_tools


@dataclass(frozen=True)
class Components:
    """Everything one process needs, built once per container."""

    settings: Settings
    store: SessionStore
    orchestrator: Orchestrator
    dispatcher: Dispatcher
    service: ChatService
    reaper: Reaper
    authenticator: Authenticator


def build_components(settings: Settings, dispatcher: Dispatcher | None = None) -> Components:
    """Wire the real components; tests may pass their own dispatcher."""
    store = SessionStore(settings)
    # Provider keys and endpoints are read where they are used; nothing is contacted here.
    providers = ProviderRegistry(build_providers(os.environ))
    orchestrator = Orchestrator(store, providers, default_tools(), settings)
    dispatcher = dispatcher or build_dispatcher(settings, orchestrator)
    service = ChatService(settings, store, dispatcher, providers)
    reaper = Reaper(store)
    if settings.dispatch_mode == "thread":
        LocalReaperLoop(reaper, settings.local_reaper_seconds).start()
    authenticator = Authenticator(settings.auth_mode, settings.local_owner,
                                  parse_key_hashes(settings.api_key_hashes))
    return Components(settings, store, orchestrator, dispatcher, service, reaper, authenticator)


def build_dispatcher(settings: Settings, orchestrator: Orchestrator) -> Dispatcher:
    """Return the dispatcher DISPATCH_MODE asks for."""
    if settings.dispatch_mode == "lambda":
        import boto3  # only the deployed API function needs a Lambda client

        client = boto3.client("lambda", region_name=settings.region)
        return LambdaDispatcher(client, settings.orchestrator_function)
    if settings.dispatch_mode == "thread":
        return ThreadDispatcher(orchestrator.run, settings.local_workers)
    return InlineDispatcher(orchestrator.run)
