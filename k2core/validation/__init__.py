"""Pandera schemas for the synth datasets and the validate stage (quarantine, per-row reports, thresholds)."""

from k2core.validation.records import declared_calls_error, messages_error, tools_error
from k2core.validation.schemas import SCHEMAS
from k2core.validation.validate import (
    DATASETS,
    OPTIONAL_DATASETS,
    RejectThresholdError,
    ValidateConfig,
    ValidationReport,
    find_failures,
    validate_all,
    validate_dataset,
)

__all__ = [
    "DATASETS",
    "OPTIONAL_DATASETS",
    "SCHEMAS",
    "RejectThresholdError",
    "ValidateConfig",
    "ValidationReport",
    "declared_calls_error",
    "find_failures",
    "messages_error",
    "tools_error",
    "validate_all",
    "validate_dataset",
]
