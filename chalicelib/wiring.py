"""Build the stores, providers, dispatcher, orchestrator and services from settings."""
from __future__ import annotations

import os
from dataclasses import dataclass

from chalicelib import telemetry
from chalicelib.auth import Authenticator, parse_key_hashes
from chalicelib.conversation_service import ConversationService
from chalicelib.conversations import ConversationStore
from chalicelib.dispatch import Dispatcher, InlineDispatcher, LambdaDispatcher, ThreadDispatcher
from chalicelib.orchestrator import Orchestrator
from chalicelib.providers import ProviderRegistry
from chalicelib.providers.catalog import build_providers
from chalicelib.purge import Purger
from chalicelib.reaper import LocalHousekeeping, Reaper
from chalicelib.service import ChatService
from chalicelib.settings import Settings
from chalicelib.store import SessionStore
from chalicelib.tools import default_tools


@dataclass(frozen=True)
class Components:
    """Everything one process needs, built once per container."""

    settings: Settings
    store: SessionStore
    conversation_store: ConversationStore
    providers: ProviderRegistry
    orchestrator: Orchestrator
    dispatcher: Dispatcher
    service: ChatService
    conversations: ConversationService
    reaper: Reaper
    purger: Purger
    authenticator: Authenticator


def build_components(settings: Settings, dispatcher: Dispatcher | None = None) -> Components:
    """Wire the real components; tests may pass their own dispatcher."""
    settings.check_runtime_secrets()
    metrics = telemetry.metrics_for(settings.stage)
    store = SessionStore(settings, on_throttle=metrics.store_throttled)
    store.connect()
    conversation_store = ConversationStore(store.models, on_throttle=metrics.store_throttled)
    # Provider keys and endpoints are read where they are used; nothing is contacted here.
    providers = ProviderRegistry(build_providers(os.environ), settings.allowed_models)
    orchestrator = Orchestrator(store, conversation_store, providers, default_tools(), settings,
                                metrics)
    dispatcher = dispatcher or build_dispatcher(settings, orchestrator)
    service = ChatService(settings, store, conversation_store, dispatcher, providers)
    conversations = ConversationService(settings, store, conversation_store, service)
    reaper = Reaper(store, metrics)
    purger = Purger(store, conversation_store)
    if settings.dispatch_mode == "thread":
        LocalHousekeeping([reaper.reap, purger.purge], settings.local_reaper_seconds).start()
    authenticator = Authenticator(settings.auth_mode, settings.local_owner,
                                  parse_key_hashes(settings.api_key_hashes), settings.cors_origin)
    return Components(settings, store, conversation_store, providers, orchestrator, dispatcher,
                      service, conversations, reaper, purger, authenticator)


def build_dispatcher(settings: Settings, orchestrator: Orchestrator) -> Dispatcher:
    """Return the dispatcher DISPATCH_MODE asks for."""
    if settings.dispatch_mode == "lambda":
        import boto3  # only the deployed API function needs a Lambda client

        client = boto3.client("lambda", region_name=settings.region)
        return LambdaDispatcher(client, settings.orchestrator_function)
    if settings.dispatch_mode == "thread":
        return ThreadDispatcher(orchestrator.run, settings.local_max_runs)
    return InlineDispatcher(orchestrator.run)
