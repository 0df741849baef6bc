"""The errors csa-dsl raises for what a user can fix. Every message says how."""
from __future__ import annotations


class SpecError(ValueError):
    """A pipeline spec (or a call against it) is inconsistent; the message says how to fix it."""


class PlanError(SpecError):
    """No plan fits the memory budget; the message says what was free, what held the rest and what would fit."""


class InputError(SpecError):
    """An input tensor cannot be used as given (name, shape, dtype, device, layout or a non-finite value)."""
