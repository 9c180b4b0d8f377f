"""Validate synth outputs: valid rows go on, invalid rows go to quarantine with a per-row report.

Nothing is dropped silently: every input row is either written to the output or quarantined, and
the per-row report (file, row index, field, check, reason) says why. A dataset whose reject fraction
exceeds its threshold stops the stage with an error naming the file, the counts and the report.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import pandas as pd
import pandera.pandas as pa
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from k2core.storage import exists, filesystem, read_parquet, write_parquet, write_text
from k2core.validation.chat_polars import find_chat_failures
from k2core.validation.tables_polars import TABLES, find_table_failures
from k2core.validation.schemas import RULES, SCHEMAS

DatasetName = Literal["corpus", "math", "tool_tasks", "sft", "rephrased_chunks", "math_note_attempts", "tool_specs",
                      "agents"]
DATASETS: tuple[DatasetName, ...] = ("corpus", "math", "tool_tasks", "sft")  # every synth run writes these
OPTIONAL_DATASETS: tuple[DatasetName, ...] = (  # validated when present
    "rephrased_chunks", "math_note_attempts", "tool_specs", "agents")
REPORT_COLUMNS = ["file", "row_index", "field", "check", "reason"]
Engine = Literal["pandas", "polars"]
POLARS_DATASETS = ("sft", *TABLES)  # checked by the polars engine when chosen; the others always by pandas
_SHOWN_IN_MARKDOWN = 50


class ValidateConfig(BaseModel):
    """Reject thresholds: the fraction of a dataset's rows that may be quarantined before the stage fails."""

    model_config = ConfigDict(extra="forbid")

    max_reject_fraction: float = Field(ge=0, le=1)
    per_dataset: dict[DatasetName, float] = Field(default_factory=dict)  # overrides by dataset name
    chat_engine: Engine = "pandas"  # "polars": POLARS_DATASETS (chat and tool JSON tables) in polars (same report)

    def threshold(self, name: DatasetName) -> float:
        return self.per_dataset.get(name, self.max_reject_fraction)


class ValidationReport(BaseModel):
    """Counts and where the outputs of one dataset's validation went."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    input_uri: str
    output_uri: str | None  # None when the reject threshold stopped the dataset
    quarantine_uri: str
    report_uri: str
    markdown_uri: str
    n_input: int
    n_valid: int
    n_quarantined: int
    reject_fraction: float
    failures: dict[str, int]  # "field/check" -> number of rows


class RejectThresholdError(RuntimeError):
    """Too many rows of a dataset failed validation."""


def _report_uris(quarantine_uri: str) -> tuple[str, str]:
    stem = quarantine_uri[: -len(".parquet")] if quarantine_uri.endswith(".parquet") else quarantine_uri
    return f"{stem}.report.parquet", f"{stem}.report.md"


def _reason(
    name: str, frame: pd.DataFrame, row: int | None, column: str | None, check: str, case: Any
) -> tuple[str, str]:
    """The blamed field and a readable reason for one pandera failure case."""
    rule = RULES.get(check)
    if rule is not None and row is not None:
        return rule.field, rule.reason(frame, row) or f"{check} failed"
    file_level = check in ("column_in_dataframe", "column_in_schema")
    field = str(case) if file_level or column is None else column
    if check == "not_nullable":
        return field, "value is missing (null)"
    if check == "field_uniqueness":
        return field, f"duplicate value {str(case)[:80]!r}: an earlier row already has it"
    if check.startswith("dtype("):
        return field, f"expected {check[7:-2] or 'another type'}, got {case!r}"
    if check == "column_in_dataframe":
        return field, f"column {case!r} required by the {name} contract is missing from the file"
    if check == "column_in_schema":
        return field, f"column {case!r} is not part of the {name} contract"
    return field, f"{check} failed for value {str(case)[:80]!r}"


def find_failures(name: str, frame: pd.DataFrame, file: str, engine: Engine = "pandas") -> pd.DataFrame:
    """One report row per (row, field, check) that fails `name`'s schema; frame must have a RangeIndex.

    `engine="polars"` checks the tables with nested chat and tool JSON (`POLARS_DATASETS`) with polars instead: the
    chat table with vectorised expressions, the others with the pandas schema's checks in pandera's polars backend.
    A frame polars cannot hold (a column mixing Python types, only possible in memory) is checked with pandas.
    """
    if engine == "polars" and name in POLARS_DATASETS:
        try:
            native = pl.from_pandas(frame)
        except (TypeError, ValueError):
            native = None
        if native is not None:
            return find_chat_failures(native, file) if name == "sft" else find_table_failures(name, native, file)
    try:
        SCHEMAS[name].validate(frame, lazy=True)
        return pd.DataFrame(columns=REPORT_COLUMNS)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    records = []
    for case in cases.itertuples(index=False):
        index = None if pd.isna(case.index) else int(case.index)
        column = None if case.column is None or pd.isna(case.column) else str(case.column)
        field, reason = _reason(name, frame, index, column, str(case.check), case.failure_case)
        # A file-level failure (missing or extra column) makes every row unusable.
        rows = range(len(frame)) if index is None else [index]
        records.extend(
            {"file": file, "row_index": r, "field": field, "check": str(case.check), "reason": reason} for r in rows
        )
    report = pd.DataFrame(records, columns=REPORT_COLUMNS).drop_duplicates(["row_index", "field", "check"])
    return report.sort_values(["row_index", "field", "check"], kind="stable").reset_index(drop=True)


def _markdown(report: ValidationReport, failures: pd.DataFrame, threshold: float | None) -> str:
    lines = [
        f"# Validation of `{report.dataset}`",
        "",
        f"- input: `{report.input_uri}`: {report.n_input} rows",
        f"- valid: {report.n_valid} rows -> `{report.output_uri}`",
        f"- quarantined: {report.n_quarantined} rows ({report.reject_fraction:.2%}) -> `{report.quarantine_uri}`",
        f"- threshold: {'none' if threshold is None else f'{threshold:.2%}'}",
        "",
    ]
    if report.failures:
        lines += ["| field/check | rows |", "|---|---|"]
        lines += [f"| {key} | {count} |" for key, count in sorted(report.failures.items())]
        lines += ["", f"## First {min(len(failures), _SHOWN_IN_MARKDOWN)} failures", ""]
        lines += [
            f"- row {f.row_index}, `{f.field}` ({f.check}): {f.reason}"
            for f in failures.head(_SHOWN_IN_MARKDOWN).itertuples()
        ]
    else:
        lines.append("All rows passed.")
    return "\n".join(lines) + "\n"


def validate_dataset(
    name: str, in_uri: str, out_uri: str, quarantine_uri: str, max_reject_fraction: float | None = None,
    engine: Engine = "pandas",
) -> ValidationReport:
    """Split `in_uri` into valid rows (`out_uri`) and quarantined rows with reports next to `quarantine_uri`.

    With `max_reject_fraction`, raises `RejectThresholdError` (after writing quarantine and reports, but
    not the output) when a larger fraction of rows is rejected.
    """
    if name not in SCHEMAS:
        raise ValueError(f"unknown dataset {name!r}; known: {list(SCHEMAS)}")
    if not exists(in_uri):
        raise FileNotFoundError(f"{in_uri} does not exist; run the synth stage first")
    frame = read_parquet(in_uri).reset_index(drop=True)
    failures = find_failures(name, frame, in_uri, engine)
    bad_rows = sorted(set(failures["row_index"].astype(int)))
    bad = frame.index.isin(bad_rows)
    quarantined = frame[bad].copy()
    per_row = failures.groupby("row_index")[["field", "check", "reason"]]
    errors = per_row.apply(lambda g: json.dumps(g.to_dict("records")))
    quarantined.insert(0, "_row_index", quarantined.index.astype("int64"))
    quarantined.insert(1, "_errors", [errors.get(i, "[]") for i in quarantined.index])
    report_uri, markdown_uri = _report_uris(quarantine_uri)
    counts = failures.groupby(["field", "check"])["row_index"].nunique()
    fraction = len(quarantined) / len(frame) if len(frame) else 0.0
    stopped = max_reject_fraction is not None and fraction > max_reject_fraction
    report = ValidationReport(
        dataset=name,
        input_uri=in_uri,
        output_uri=None if stopped else out_uri,
        quarantine_uri=quarantine_uri,
        report_uri=report_uri,
        markdown_uri=markdown_uri,
        n_input=len(frame),
        n_valid=int((~bad).sum()),
        n_quarantined=len(quarantined),
        reject_fraction=fraction,
        failures={f"{field}/{check}": int(n) for (field, check), n in counts.items()},
    )
    write_parquet(quarantined.reset_index(drop=True), quarantine_uri)
    write_parquet(failures, report_uri)
    write_text(_markdown(report, failures, max_reject_fraction), markdown_uri)
    if stopped:
        fs, path = filesystem(out_uri)
        if fs.exists(path):
            fs.rm(path)  # an older output must not pass for this run's
        raise RejectThresholdError(threshold_message(report, max_reject_fraction))
    write_parquet(frame[~bad].reset_index(drop=True), out_uri)
    return report


def threshold_message(report: ValidationReport, threshold: float | None) -> str:
    return (
        f"{report.dataset}: {report.n_quarantined} of {report.n_input} rows ({report.reject_fraction:.1%}) of "
        f"{report.input_uri} failed validation, above max_reject_fraction={threshold}. Read {report.markdown_uri} "
        f"(per-row reasons in {report.report_uri}, rows in {report.quarantine_uri}), fix the synth stage or raise "
        f"the threshold in params.yaml (validate.per_dataset.{report.dataset})."
    )


def _join(directory: str, name: str) -> str:
    return f"{str(directory).rstrip('/')}/{name}"


def validate_all(in_dir: str, out_dir: str, quarantine_dir: str, cfg: ValidateConfig) -> dict[str, Any]:
    """Validate every dataset (optional ones when synth wrote them); raises `RejectThresholdError` listing all
    datasets over their threshold.

    Returns `{"reports": {name: report}, "metrics": {f"{name}_{count}": value}}` for tracking.
    """
    reports: dict[str, ValidationReport] = {}
    errors: list[str] = []
    present = [n for n in OPTIONAL_DATASETS if exists(_join(in_dir, f"{n}.parquet"))]
    for name in [*DATASETS, *present]:
        try:
            reports[name] = validate_dataset(
                name,
                _join(in_dir, f"{name}.parquet"),
                _join(out_dir, f"{name}.parquet"),
                _join(quarantine_dir, f"{name}.parquet"),
                max_reject_fraction=cfg.threshold(name),
                engine=cfg.chat_engine,
            )
        except RejectThresholdError as error:
            errors.append(str(error))
    if errors:
        raise RejectThresholdError("\n".join(errors))
    metrics: dict[str, float] = {}
    for name, r in reports.items():
        metrics.update({f"{name}_input": r.n_input, f"{name}_valid": r.n_valid, f"{name}_quarantined": r.n_quarantined,
                        f"{name}_reject_fraction": r.reject_fraction})
    return {"reports": {name: r.model_dump() for name, r in reports.items()}, "metrics": metrics}
