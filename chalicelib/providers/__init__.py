"""Model strings (`demo`, `openai:<model>`, `bedrock:<modelId>`) and the providers behind them."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Mapping, Sequence

from chalicelib.errors import InvalidRequest
from chalicelib.providers.base import Provider

MODEL_FORMS = ("demo", "openai:<model>", "bedrock:<modelId>")


@dataclass(frozen=True)
class ModelRef:
    """A parsed model string: which provider, and the model's name within it."""

    provider: str
    name: str


class ProviderRegistry:
    """The providers this deployment can use, by provider name, and the models it allows."""

    def __init__(self, providers: Mapping[str, Provider], allowed: Sequence[str] = ()) -> None:
        self._providers = dict(providers)
        # fnmatch patterns ("openai:gpt-4o*"); empty: any model of a configured provider.
        self._allowed = tuple(allowed)

    def resolve(self, model: str) -> ModelRef:
        """Parse a model string; raise InvalidRequest naming the valid choices if it is unusable."""
        provider, _, name = model.partition(":")
        ref = None
        if provider == "demo" and not name:
            ref = ModelRef("demo", "demo")
        elif provider in self._providers and provider != "demo" and name.strip():
            ref = ModelRef(provider, name.strip())
        if ref is not None and self.allows(model):
            return ref
        raise InvalidRequest(
            f"model {model[:200]!r} is not available; use one of: {', '.join(self.choices())}"
        )

    def allows(self, model: str) -> bool:
        """Return True if this deployment lets a start name the model."""
        return not self._allowed or any(fnmatch.fnmatchcase(model, p) for p in self._allowed)

    def choices(self) -> list[str]:
        """Return the models (or patterns, or forms) a start may name, for clients to show."""
        if self._allowed:
            return list(self._allowed)
        return [form for form in MODEL_FORMS if form.split(":")[0] in self._providers]

    def provider(self, ref: ModelRef) -> Provider:
        """Return the provider for a resolved model."""
        return self._providers[ref.provider]
