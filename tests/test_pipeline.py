"""Run configuration checks that fire before any data is read."""

from __future__ import annotations

import pydantic
import pytest

from recfunnel.pipeline import EvalSection, RunConfig


def test_known_protocols_pass_and_a_typo_names_the_valid_ones():
    assert EvalSection(protocols=("full-unmasked", "sampled")).protocols == ("full-unmasked", "sampled")
    with pytest.raises(pydantic.ValidationError, match="valid: full, full-unmasked, sampled"):
        EvalSection(protocols=("ful",))


def test_run_config_rejects_unknown_sections_and_keys():
    with pytest.raises(pydantic.ValidationError):
        RunConfig.model_validate({"eval": {"protocol": ["full"]}})
