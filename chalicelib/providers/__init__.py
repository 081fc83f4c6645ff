"""Model strings (`demo`, `openai:<model>`, `bedrock:<modelId>`) and the providers behind them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from chalicelib.errors import InvalidRequest
from chalicelib.providers.base import Provider

MODEL_FORMS = ("demo", "openai:<model>", "bedrock:<modelId>")


@dataclass(frozen=True)
class ModelRef:
    """A parsed model string: which provider, and the model's name within it."""

    provider: str
    name: str


class ProviderRegistry:
    """The providers this deployment can use, by provider name."""

    def __init__(self, providers: Mapping[str, Provider]) -> None:
        self._providers = dict(providers)

    def resolve(self, model: str) -> ModelRef:
        """Parse a model string; raise InvalidRequest naming the valid forms if it is unusable."""
        provider, _, name = model.partition(":")
        if provider == "demo" and not name:
            return ModelRef("demo", "demo")
        if provider in self._providers and provider != "demo" and name.strip():
            return ModelRef(provider, name.strip())
        available = [form for form in MODEL_FORMS if form.split(":")[0] in self._providers]
        raise InvalidRequest(
            f"model {model!r} is not available; use one of: {', '.join(available)}"
        )

    def provider(self, ref: ModelRef) -> Provider:
        """Return the provider for a resolved model."""
        return self._providers[ref.provider]
