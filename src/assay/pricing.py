"""What a model call costs, in nanodollars, from the maintained `genai-prices` table.

Provider names are the ones ddtrace puts on spans (``openai``, ``azure_openai``,
``anthropic``, ``google``, ``amazon``, ...); genai-prices matches them and the model name
loosely (``gpt-4o-mini-2024-07-18`` is ``gpt-4o-mini``). A model it does not know gets no
cost (None, never zero) and one warning per process on the ``assay`` logger.

The table is imported on the first lookup, not with Assay: it takes a quarter of a second.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from genai_prices.types import ModelInfo, ModelPrice, Provider

logger = logging.getLogger("assay")

NANODOLLARS_PER_USD = 1_000_000_000

# ddtrace names a model "custom" when the user gave none: there is nothing to look up.
_UNNAMED = frozenset({"", "custom"})
_PER_MILLION = 1_000_000


def estimate_cost(
    model_name: str | None,
    model_provider: str | None,
    input_tokens: int | None,
    output_tokens: int | None,
    *,
    at: datetime | None = None,
) -> int | None:
    """The estimated cost of one call in nanodollars (1e-9 USD), or None when unknown.

    The price is genai-prices' for the model at ``at`` (default: now), and the dollar
    amount is rounded half-to-even to whole nanodollars. None when no token count is
    given, when the model is unnamed (``None`` or ``"custom"``), or when the table has no
    price for it (which is logged once per provider and model)::

        estimate_cost("gpt-4o-mini", "openai", 1000, 500)  # 450_000 ($0.00045)
    """
    if input_tokens is None and output_tokens is None:
        return None
    model = (model_name or "").strip().lower()
    if model in _UNNAMED:
        return None
    provider = (model_provider or "").strip().lower()
    provider_id = None if provider in _UNNAMED else provider
    tariff = _tariff(provider_id, model)
    if tariff is None:
        _warn_unpriced(provider_id, model, model_provider, model_name or model)
        return None
    usd = tariff.usd(input_tokens or 0, output_tokens or 0, at or datetime.now(UTC))
    return round(usd * NANODOLLARS_PER_USD)


@dataclass(frozen=True, slots=True)
class _Tariff:
    """A model matched in the table, with the provider whose prices apply."""

    model: ModelInfo
    provider: Provider

    def usd(self, input_tokens: int, output_tokens: int, at: datetime) -> Decimal:
        prices = self.model.get_prices(at)
        rates = _linear_rates(prices)
        if rates is not None:
            fixed, per_input, per_output = rates
            return fixed + per_input * input_tokens + per_output * output_tokens
        from genai_prices import Usage

        calculation = self.model.calc_price(
            Usage(input_tokens=input_tokens, output_tokens=output_tokens),
            self.provider,
            genai_request_timestamp=at,
        )
        return calculation.total_price


@functools.lru_cache(maxsize=1024)
def _tariff(provider_id: str | None, model: str) -> _Tariff | None:
    """The table's entry for a model, matched once per (provider, model) and process."""
    from genai_prices import Usage, calc_price

    candidates = [model]
    if provider_id and "." not in model:
        # Bedrock spans name the vendor as provider and drop it from the model id
        # ("amazon" + "nova-lite-v1:0"); the table keys them "amazon.nova-lite-v1:0".
        candidates.append(f"{provider_id}.{model}")
    for candidate in candidates:
        try:
            calculation = calc_price(
                Usage(input_tokens=0, output_tokens=0), candidate, provider_id=provider_id
            )
        except (LookupError, ValueError):
            continue
        return _Tariff(calculation.model, calculation.provider)
    return None


# Linear coefficients of each price set, keyed by identity: genai-prices hands out the
# same ModelPrice object for a model until its price changes. The object is kept in the
# value so that its id is not reused while the entry lives.
_Rates = tuple[Decimal, Decimal, Decimal]
_rates: dict[int, tuple[ModelPrice, _Rates | None]] = {}


def _linear_rates(prices: ModelPrice) -> _Rates | None:
    """(fixed, per input token, per output token) in USD, or None for tiered prices.

    A full genai-prices calculation costs ~80 µs; without tiers the price is affine in
    the two token counts, so three calculations by genai-prices itself give it exactly.
    """
    cached = _rates.get(id(prices))
    if cached is not None and cached[0] is prices:
        return cached[1]
    from genai_prices import Usage
    from genai_prices.types import TieredPrices

    rates: _Rates | None = None
    if not any(isinstance(value, TieredPrices) for value in vars(prices).values()):
        fixed = prices.calc_price(Usage(input_tokens=0, output_tokens=0))["total_price"]
        million_in = prices.calc_price(Usage(input_tokens=_PER_MILLION, output_tokens=0))
        million_out = prices.calc_price(Usage(input_tokens=0, output_tokens=_PER_MILLION))
        rates = (
            fixed,
            (million_in["total_price"] - fixed) / _PER_MILLION,
            (million_out["total_price"] - fixed) / _PER_MILLION,
        )
    if len(_rates) > 4096:
        _rates.clear()
    _rates[id(prices)] = (prices, rates)
    return rates


_warned: set[tuple[str | None, str]] = set()
_warned_lock = threading.Lock()


def _warn_unpriced(
    provider_id: str | None, model: str, given_provider: str | None, given_model: str
) -> None:
    key = (provider_id, model)
    if key in _warned:
        return
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    of_provider = f" of provider {given_provider!r}" if provider_id else ""
    logger.warning(
        "Model %r%s has no known price in genai-prices: its estimated cost is left empty",
        given_model,
        of_provider,
    )
