"""Budgets and usage: what a model call may cost and what it did cost."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.messages import A_NUMBER, Command, Event, Number
from contracts.registry import REGISTRY

MICROS_PER_USD = 1_000_000


class Budget(BaseModel):
    """A hard limit in tokens and/or money (US dollars). Before each model call the runtime reserves the call's worst
    case against every budget that applies; a call that does not fit is not made (``budget_exceeded``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tokens: Annotated[int, Field(gt=0, le=10**12), A_NUMBER] | None = Field(
        default=None, description="Prompt plus completion tokens."
    )
    cost_usd: Annotated[Number, Field(ge=0.000001, le=10**9)] | None = Field(
        default=None, description="Cost at the configured model prices (at least a millionth of a dollar)."
    )

    @model_validator(mode="after")
    def _some_limit(self) -> "Budget":
        if self.tokens is None and self.cost_usd is None:
            raise ValueError("a budget needs tokens, cost_usd or both")
        return self

    @property
    def cost_micros(self) -> int | None:
        return None if self.cost_usd is None else round(self.cost_usd * MICROS_PER_USD)


class UsageTotals(BaseModel):
    """Summed usage of model calls."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    estimated_calls: int = Field(default=0, description="Calls whose token counts are estimates (no usage reported).")


@REGISTRY.register
class SetWorkspaceBudget(Command):
    """Set (or, with ``budget`` null, remove) the workspace's monthly cap on model usage."""

    service = "orchestrator"
    budget: Budget | None


@REGISTRY.register
class WorkspaceBudgetSet(Event):
    aggregate = "workspacebudget"
    budget: Budget | None
