"""What a call costs: token usage times a per-model price (US dollars per million tokens).

The defaults below are documented in docs/api/README.md; a model definition's ``price``
(``{input_per_mtok, output_per_mtok}``) overrides them. A model whose name matches no
entry and has no ``price`` of its own has no known cost (None).
"""

from __future__ import annotations

from typing import Any

# Longest matching prefix wins: "gpt-4o-mini-2024-07-18" is priced as "gpt-4o-mini".
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-haiku-4": (1.00, 5.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
}
# The simulator costs nothing unless its definition names a price.
SIMULATOR_PRICE = (0.0, 0.0)


def price_of(definition: dict[str, Any]) -> tuple[float, float] | None:
    """(input, output) dollars per million tokens, or None when unknown."""
    own = definition.get("price")
    if own:
        return float(own["input_per_mtok"]), float(own["output_per_mtok"])
    if definition["provider"] == "simulator":
        return SIMULATOR_PRICE
    model = str(definition.get("model", ""))
    matches = [prefix for prefix in DEFAULT_PRICES if model.startswith(prefix)]
    return DEFAULT_PRICES[max(matches, key=len)] if matches else None


def cost(price: tuple[float, float] | None, tokens_in: int, tokens_out: int) -> float | None:
    if price is None:
        return None
    return round((tokens_in * price[0] + tokens_out * price[1]) / 1_000_000, 10)
