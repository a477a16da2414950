"""The base of every voiced.yaml section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, and so are `.inf` and `.nan`
    (YAML's spellings) for any number: a handler's `timeout_s: .inf` passed `gt=0` and
    the handler was never cut off."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
