"""GLUE data: task table, TSV readers, tokenisation, dynamic-padding collate, metrics.

Reads the TSV files produced by the classic GLUE download script, the same way the old
HuggingFace `run_glue.py` processors do: tab-separated, quoting off (QNLI has stray `"`),
UTF-8 with the byte-order mark dropped (MRPC headers start with one). Columns are looked
up by header name; CoLA train/dev have no header and get a fixed one.

Your own data goes through the same reader: `own_task` builds a TaskSpec over .csv, .tsv or
.jsonl files whose header or keys name the columns. One rule per format (README, "Your own
data"): TSV is split at tabs with no quoting, as GLUE's; CSV is RFC 4180 (a quoted field may
span lines but must close); JSON lines are strict JSON. A file that breaks its rule is refused
with its path and line, never read in part.

Metrics use numpy only and return plain floats on the 0-1 (or -1..1) scale; any non-finite
prediction or label makes every metric NaN.

`download_task` fetches a task from the classic GLUE download locations (stdlib only) into
the same layout; run `python glue_data.py --download mrpc rte --data-dir glue_data`.
"""

import argparse
import csv
import errno
import hashlib
import http.client
import json
import math
import os
import re
import shutil
import stat
import sys
import tempfile
import unicodedata
import urllib.error
import urllib.request
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """Everything the pipeline needs to know about one GLUE task, or about your own data."""

    name: str
    folder: str
    labels: tuple = ("0", "1")  # TSV label strings in class-index order; () means regression
    dev_splits: tuple = ("dev",)
    test_splits: tuple = ("test",)
    metrics: tuple = ("accuracy",)  # dev metrics; the first picks the best checkpoint
    submission_names: tuple
    text_a_column: str
    text_b_column: str | None = None
    label_column: str | None = None
    headerless_columns: tuple | None = None  # column names for labelled files that lack a header
    files: tuple = ()  # own data: (split, path) pairs; a GLUE task reads <folder>/<split>.tsv
    # the test column that names each prediction, found by name as every column is: GLUE's index
    # (QQP's id); own data's --id-column, None for the row's line number
    id_column: str | None = "index"

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    @property
    def num_labels(self) -> int:
        """Number of model outputs: classes, or 1 for regression."""
        return len(self.labels) if self.labels else 1

    @property
    def is_regression(self) -> bool:
        """True for STS-B, whose label is a float similarity score."""
        return not self.labels


_NLI_LABELS = ("entailment", "not_entailment")

TASKS = {
    "cola": TaskSpec(name="cola", folder="CoLA", metrics=("mcc",), submission_names=("CoLA",),
                     text_a_column="sentence", label_column="label",
                     headerless_columns=("source", "label", "marker", "sentence")),
    "sst2": TaskSpec(name="sst2", folder="SST-2", submission_names=("SST-2",),
                     text_a_column="sentence", label_column="label"),
    "mrpc": TaskSpec(name="mrpc", folder="MRPC", metrics=("f1", "accuracy"),
                     submission_names=("MRPC",), text_a_column="#1 String",
                     text_b_column="#2 String", label_column="Quality"),
    "stsb": TaskSpec(name="stsb", folder="STS-B", labels=(), metrics=("spearman", "pearson"),
                     submission_names=("STS-B",), text_a_column="sentence1",
                     text_b_column="sentence2", label_column="score"),
    "qqp": TaskSpec(name="qqp", folder="QQP", metrics=("f1", "accuracy"),
                    submission_names=("QQP",), text_a_column="question1",
                    text_b_column="question2", label_column="is_duplicate", id_column="id"),
    "mnli": TaskSpec(name="mnli", folder="MNLI", labels=("contradiction", "entailment", "neutral"),
                     dev_splits=("dev_matched", "dev_mismatched"),
                     test_splits=("test_matched", "test_mismatched"),
                     submission_names=("MNLI-m", "MNLI-mm"), text_a_column="sentence1",
                     text_b_column="sentence2", label_column="gold_label"),
    "qnli": TaskSpec(name="qnli", folder="QNLI", labels=_NLI_LABELS, submission_names=("QNLI",),
                     text_a_column="question", text_b_column="sentence", label_column="label"),
    "rte": TaskSpec(name="rte", folder="RTE", labels=_NLI_LABELS, submission_names=("RTE",),
                    text_a_column="sentence1", text_b_column="sentence2", label_column="label"),
}

# Readable names for the tasks whose TSV labels are digits (adkd.py explain shows them).
CLASS_NAMES = {"cola": ("unacceptable", "acceptable"), "sst2": ("negative", "positive"),
               "mrpc": ("not paraphrase", "paraphrase"), "qqp": ("not duplicate", "duplicate")}


@dataclass
class Example:
    """One row of a GLUE TSV file."""

    guid: str
    text_a: str
    text_b: str | None
    label: int | float | None
    line: int


class GlueFormatError(ValueError):
    """A GLUE TSV file does not have the expected layout; the message starts with path:line."""


class GlueDownloadError(RuntimeError):
    """A GLUE file could not be fetched; the one-line message names the URL and what to do."""


# ---------------------------------------------------------------------------------------------
# Reading


def get_task(name) -> TaskSpec:
    """Look up a task by name, ignoring case, '-' and '_' ("SST-2", "sts-b", "MRPC")."""
    if isinstance(name, TaskSpec):
        return name
    key = str(name).strip().lower().replace("-", "").replace("_", "")
    if key not in TASKS:
        raise ValueError(f"unknown GLUE task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[key]


def task_dir(data_dir, task) -> Path:
    """Return the folder holding the task's TSVs: <data_dir>/<folder> or data_dir itself."""
    spec = get_task(task)
    data_dir = Path(data_dir)
    nested = data_dir / spec.folder
    if nested.is_dir():
        return nested
    if (data_dir / "train.tsv").is_file() or any(data_dir.glob("dev*.tsv")):
        return data_dir
    raise FileNotFoundError(
        f"no {spec.folder} data: {nested} is not a folder and {data_dir} "
        f"has no train.tsv or dev*.tsv")


def split_file_name(task, split) -> str:
    """Map a split name to its file name; 'dev'/'test' mean the matched sets for MNLI."""
    spec = get_task(task)
    aliases = {"dev": spec.dev_splits[0], "test": spec.test_splits[0]}
    resolved = aliases.get(split, split)
    valid = split_names(spec)
    if resolved not in valid:
        raise ValueError(f"unknown split {split!r} for {spec.name}; valid splits: "
                         f"{', '.join(sorted(set(valid) | set(aliases)))}")
    return resolved + ".tsv"


def read_split(data_dir, task, split, skip_bad_rows=False, report=warnings.warn,
               standard_rows=False) -> list[Example]:
    """Read one split; with skip_bad_rows, malformed rows are dropped and named in one line
    passed to report (a warning by default). With standard_rows, a GLUE split whose data rows
    (skipped ones included) are not the standard release's count is refused: a cut-short file
    would give a dev score or a submission that is not GLUE's."""
    examples, skipped = read_split_counted(data_dir, task, split, skip_bad_rows)
    path = split_path(data_dir, task, split)
    if skipped:
        report(f"{path}: skipped {len(skipped)} malformed rows {skipped_lines(skipped)}")
    if standard_rows and not get_task(task).files:
        _check_row_count(get_task(task), path, len(examples) + len(skipped),
                         " (--glue-subset reads a sample knowingly)")
    if not examples:  # a GLUE test file of no rows, read as a sample: no empty submission
        raise GlueFormatError(f"{path}: no data rows; a submission would be empty")
    return examples


def read_splits(data_dir, task, splits, skip_bad_rows=False, report=warnings.warn,
                standard_rows=False, download=True) -> dict[str, list[Example]]:
    """{split: examples} of own files or of GLUE's, whose files are fetched into data_dir first
    when absent (download=False: a GlueDownloadError naming the command that fetches them)."""
    folder, spec = None, get_task(task)
    if not spec.files:
        try:
            folder = task_dir(data_dir, spec)
        except FileNotFoundError as missing:
            fetch = f"python glue_data.py --download {spec.name} --data-dir {data_dir}"
            if not download:
                raise GlueDownloadError(f"{missing}; fetch it once first: {fetch}") from None
            report(f"no {spec.folder} files in {data_dir}: downloading them")
            try:
                download_task(spec, data_dir)
            except (GlueDownloadError, GlueFormatError) as error:
                raise GlueDownloadError(f"--data-dir {data_dir}: {error}") from None
            folder = task_dir(data_dir, spec)
    return {split: read_split(folder, spec, split, skip_bad_rows, report, standard_rows)
            for split in splits}


def skipped_lines(lines, shown=5) -> str:
    """'(lines 3, 7, ...)': the first few line numbers of the rows skipped."""
    return f"(lines {', '.join(map(str, lines[:shown]))}{', ...' * (len(lines) > shown)})"


def check_file(path, name) -> None:
    """Refuse, in one line naming `name` and the path, what is not a readable regular file:
    missing, a folder, a link to nothing or a link loop, a device or pipe, no read permission."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as error:
        problem = ("a symbolic link loop" if error.errno == errno.ELOOP else
                   f"a link to {os.readlink(path)}, which does not exist" if path.is_symlink()
                   else "no such file" if error.errno == errno.ENOENT else error.strerror)
        raise FileNotFoundError(f"{name} {path}: {problem}") from None
    if not stat.S_ISREG(mode):
        raise FileNotFoundError(f"{name} {path}: " + ("a folder, not a file"
                                                      if stat.S_ISDIR(mode) else "not a file"))
    try:
        open(path, "rb").close()
    except OSError as error:
        raise FileNotFoundError(f"{name} {path}: cannot be read ({error.strerror})") from None


def file_digests(task) -> dict:
    """{"train_file": "sha256:...", "dev_file": ...}: own train and dev files by content, which
    --resume compares (the test file does not change what is trained)."""
    return {f"{split}_file": "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()
            for split, path in task.files if split != "test"}


def missing_file(task, training, predict) -> str:
    """'' or, for own data, the one line naming the flag of a file this run reads but was not
    given: train when it trains, dev always (the run ends with its score), test with --predict.
    A command line asks before any model loads."""
    needs = {"train": training and "the run trains on its rows (--epochs 0 only evaluates)",
             "dev": "its rows pick the best checkpoint and score the run",
             "test": predict and "--predict writes a submission of its rows"}
    return next((f"give --{split}-file: {why}" for split, why in needs.items()
                 if task.files and why and split not in dict(task.files)), "")


def split_path(data_dir, task, split) -> Path:
    """The file of a split: own data's, or the GLUE task's <data_dir>/<folder>/<split>.tsv."""
    spec = get_task(task)
    if not spec.files:
        return task_dir(data_dir, spec) / split_file_name(spec, split)
    if split not in dict(spec.files):
        raise ValueError(f"no --{split}-file given")
    return Path(dict(spec.files)[split])


def read_split_counted(data_dir, task, split, skip_bad_rows=False) -> tuple[list[Example], list]:
    """Read one split and return (examples, the line numbers of the malformed rows skipped)."""
    spec = get_task(task)
    path = split_path(data_dir, spec, split)
    check_file(path, "data file" if spec.files else "GLUE file")
    split_name = split if spec.files else path.stem
    has_labels = not split_name.startswith("test")
    examples, skipped, num_rows, first_lines = [], [], 0, {}
    try:
        # newline="" lets csv count physical lines
        with open(path, encoding="utf-8-sig", newline="") as f:
            header, rows = _records(f, spec, has_labels, path)
            columns = _column_indices(spec, header, has_labels, path)
            for line, row in rows:
                if not row:  # a blank line (e.g. a trailing one) carries no example
                    continue
                num_rows += 1
                try:
                    if isinstance(row, str):  # a JSON line
                        row = _json_fields(row, header, has_labels, spec.label_column, path, line)
                    example = _parse_row(spec, row, columns, len(header), split_name, line,
                                         path)
                    if not has_labels:
                        _check_id(example, first_lines, path)
                    examples.append(example)
                except GlueFormatError as error:
                    if not skip_bad_rows:
                        raise _lone_cr_told(error, path, line) from None
                    skipped.append(line)
    except UnicodeDecodeError as error:
        raise _not_utf8_error(path, error) from None
    except GlueFormatError as error:  # the decoder reads ahead in chunks and meets a character
        # cut at the end last: whatever the read met first, a file not UTF-8 is refused as such
        raise _not_utf8_error(path) or error from None
    if (has_labels or spec.files) and not num_rows:
        raise GlueFormatError(f"{path}: no data rows")
    if has_labels and not examples:
        raise GlueFormatError(f"{path}: no usable data rows (all {len(skipped)} are malformed)")
    return examples, skipped


# A submission line is `id<TAB>prediction`: an id or a class holding a tab, or anything at which
# str.splitlines ends a line (a reader of the submission may split there), would break it.
_BREAKS_LINE = re.compile("[\t\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")
_UNWRITABLE = "holds a tab or a line break, which a submission line cannot hold"


def _check_id(example, first_lines, path) -> None:
    """Refuse a test row's id that its submission line could not hold or that names no row
    alone: one holding a tab or a line break, an empty one, one an earlier row has (first_lines
    maps each id read to its line)."""
    guid, line = example.guid, example.line
    if _BREAKS_LINE.search(guid):
        raise GlueFormatError(f"{path}:{line}: id {_shown(guid)} {_UNWRITABLE}")
    if not guid.strip():
        raise GlueFormatError(f"{path}:{line}: empty id {_shown(guid)}; a submission names "
                              "each test row by its id")
    if guid in first_lines:
        raise GlueFormatError(f"{path}:{line}: id {_shown(guid)} again (first on line "
                              f"{first_lines[guid]}); a submission names each test row once")
    first_lines[guid] = line


def _lone_cr_told(error, path, line) -> GlueFormatError:
    """The error, with its likely cause when a lone \\r ends line `line` (or the one before) of a
    CSV whose other lines end with \\n: Python's csv.writer(lineterminator="\\n") before 3.11.9
    and 3.12.3 writes a text's \\r unquoted, and every reader takes it for a line end."""
    lines = path.read_bytes().splitlines(keepends=True) if path.suffix == ".csv" else []
    lone = [n for n in (line - 1, line) if 0 < n <= len(lines) and lines[n - 1].endswith(b"\r")]
    if not lone or not any(text.endswith(b"\n") for text in lines):
        return error
    return GlueFormatError(f"{error} (line {lone[-1]} ends at a lone '\\r' where the file's lines "
                           "end with '\\n': csv.writer(lineterminator='\\n') before Python 3.11.9 "
                           "(3.12.3) leaves a text's '\\r' unquoted; write the file with a newer "
                           "Python, the default lineterminator or csv.QUOTE_ALL)")


def _not_utf8_error(path, error=None) -> GlueFormatError | None:
    """Name the first physical line that is not valid UTF-8 (the decoder reads in chunks); with
    no decode error given, None when every line is."""
    # bytes.splitlines breaks at \n, \r\n and \r, as the text reader does; no UTF-8 sequence
    # contains those bytes, so decoding line by line finds the same bad bytes
    for number, raw in enumerate(Path(path).read_bytes().splitlines(), start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as line_error:
            bad = line_error.object[line_error.start:line_error.end]
            return GlueFormatError(f"{path}:{number}: not UTF-8 text ({line_error.reason}: "
                                   f"byte {bad[:4].hex(' ')} at column {line_error.start + 1}); "
                                   f"re-save the file as UTF-8")
    return error and GlueFormatError(f"{path}: not UTF-8 text ({error.reason})")


def _records(f, spec, has_labels, path) -> tuple[list, object]:
    """(header, iterator of (line, row)): a delimited file's header and field lists, each
    from its first line; or, for JSON lines, the columns wanted and each line's text."""
    if path.suffix == ".jsonl":
        header = [name for name in (spec.text_a_column, spec.text_b_column, spec.label_column,
                                    None if has_labels else spec.id_column) if name]
        return header, ((line, text.strip()) for line, text in enumerate(f, start=1))
    own_tsv = path if spec.files else None  # GLUE's TSVs keep their stray quotes as text
    rows = _csv_rows(f, path) if path.suffix == ".csv" else _tsv_rows(f, own_tsv)
    header = spec.headerless_columns if has_labels and spec.headerless_columns else None
    if header is None:
        header = next(rows, (None, None))[1]
        if header is None:
            raise GlueFormatError(f"{path}:1: empty file, expected a header line")
        # a reader by name would silently take the first; unnamed columns (a spreadsheet's
        # empty trailing cells) are not read by name, and may repeat
        repeated = [name for name, count in Counter(header).items() if count > 1 and name]
        if repeated:
            raise GlueFormatError(f"{path}:1: the header names {_shown(repeated[0])} twice or "
                                  "more; name each column once")
    return header, rows


def _tsv_rows(f, own_path=None):
    """(line, fields) per physical line, split at every tab: no quoting, as GLUE's TSVs and
    the old HF processors read them (QNLI has stray quotes), so a field holds no tab or line
    break and every other character is text as written. In own files (own_path), a field that
    a CSV writer quoted (wrapped in quotes, each quote in it doubled, as pandas' to_csv writes
    a text holding a quote, tab-separated or not) is refused rather than read with its quotes."""
    for line, text in enumerate(f, start=1):
        text = text.rstrip("\r\n")
        fields = text.split("\t") if text else []
        quoted = own_path and next(filter(_CSV_QUOTED.fullmatch, fields), None)
        if quoted:
            raise GlueFormatError(f"{own_path}:{line}: {_shown(quoted)} is quoted as CSV, but a "
                                  ".tsv is read without quoting; write it unquoted "
                                  "(csv.QUOTE_NONE, quotechar=None) or as .csv")
        yield line, fields


_CSV_QUOTED = re.compile(r'"(?=.*"")(?:[^"]|"")*"', re.DOTALL)  # "...""..." as csv quotes


CSV_FIELD_LIMIT = 2**31 - 1  # the csv module's default, 131,072 characters, refuses long texts


def _csv_rows(f, path):
    """(first line, fields) per CSV row, RFC 4180 as the csv module reads it strictly: a field
    that starts with '"' is quoted, may span lines and must close, its closing quote followed
    by ',' or the line's end. A row that breaks this stops the read: where the next row would
    start is unknown, so no later row can be trusted."""
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    reader, start = csv.reader(f, strict=True), 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            if "end of data" in str(error):  # csv reads an unclosed quote to the end
                raise GlueFormatError(f"{path}:{start}: a quoted field in the row starting on "
                                      "this line never closes (a stray '\"'?)") from None
            raise GlueFormatError(f"{path}:{reader.line_num}: {error} (in the row starting on "
                                  f"line {start}; a quote inside a quoted field is written "
                                  "'\"\"')") from None
        yield start, row
        start = reader.line_num + 1


class _Number(str):
    """A JSON number as written: 1.50 stays "1.50", 1e400 is not inf, 5000 digits stay text."""


def _unique_keys(pairs) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) < len(keys):
        repeated = next(key for key in keys if keys.count(key) > 1)
        raise ValueError(f"key {_shown(repeated)} twice in one object")
    return dict(pairs)


def _no_constant(name):
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def _json_fields(text, header, has_labels, label_column, path, line) -> list[str]:
    """One JSON line's values of the header's columns, as text (numbers as written); a test
    line may lack the label. Strict JSON: each key once, no NaN or Infinity."""
    try:
        record = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant,
                            parse_int=_Number, parse_float=_Number)
    except json.JSONDecodeError as error:
        raise GlueFormatError(f"{path}:{line}: not JSON ({error.msg})") from None
    except ValueError as error:  # raised by the hooks above
        raise GlueFormatError(f"{path}:{line}: {error}") from None
    except RecursionError:
        raise GlueFormatError(f"{path}:{line}: JSON nested too deeply") from None
    if not isinstance(record, dict):
        raise GlueFormatError(f"{path}:{line}: not a JSON object")
    fields = []
    for name in header:
        if name not in record and (has_labels or name != label_column):
            raise GlueFormatError(f"{path}:{line}: no {name!r} key{_same_text(name, record)}")
        value = record.get(name, "")  # a test line may lack the label
        if value is None and not has_labels and name == label_column:
            value = ""  # a test label is only checked; pandas' to_json writes empty cells null
        if not isinstance(value, str):  # numbers arrive as _Number, a str
            raise GlueFormatError(f"{path}:{line}: {name!r} is "
                                  f"{'null' if value is None else _shown(value)}, "
                                  "not text or a number")
        if _SURROGATE.search(value):  # a \ud800 escape: no character, no UTF-8 for it
            raise GlueFormatError(f"{path}:{line}: {name!r} holds a lone surrogate "
                                  f"{_shown(_SURROGATE.search(value)[0])}, not text")
        fields.append(str(value))
    return fields


_SURROGATE = re.compile("[\ud800-\udfff]")


def _shown(value, limit=40) -> str:
    """A value for a one-line message: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} characters)"


def _same_text(name, names) -> str:
    """'' or, when one of names is `name` in another Unicode normalisation (é as one character,
    or as e and a combining accent: the two print alike), a clause saying so."""
    key = unicodedata.normalize("NFC", name)
    other = next((n for n in names if n != name and unicodedata.normalize("NFC", n) == key), None)
    return "" if other is None else (f"; {_shown(other)} differs from it only in Unicode "
                                     f"normalisation ({ascii(name)} against {ascii(other)}): "
                                     "write both in one form (NFC)")


def _column_indices(spec, header, has_labels, path) -> dict:
    """Find the text, label and (test) id columns in the header by name."""
    wanted = {"text_a": spec.text_a_column, "text_b": spec.text_b_column,
              "id": None if has_labels else spec.id_column}
    if has_labels or (spec.files and spec.label_column in header):  # own test files may have one
        wanted["label"] = spec.label_column
    columns = {}
    for role, name in wanted.items():
        if name is None:
            continue
        if name not in header:
            raise GlueFormatError(f"{path}:1: header has no {name!r} column: "
                                  f"{_shown(header, 100)}{_same_text(name, header)}")
        if header.count(name) > 1:  # unnamed columns (others are refused above): which one?
            raise GlueFormatError(f"{path}:1: {header.count(name)} columns are named {name!r}; "
                                  "a flag names one column")
        columns[role] = header.index(name)
    return columns


def _parse_row(spec, row, columns, num_columns, split_name, line, path) -> Example:
    """Turn one TSV row into an Example, raising GlueFormatError on a malformed row."""
    # Every row must have exactly the header's columns. The HF processors read a trailing label
    # as line[-1], which tolerates extra columns but silently shifts the text when a sentence
    # holds a tab. Every real GLUE file checked (all of shared/glue: CoLA, SST-2, MRPC, STS-B,
    # QNLI, RTE, every split) has the same column count on every row, so no file needs that.
    if len(row) > num_columns:
        raise GlueFormatError(f"{path}:{line}: expected {num_columns} columns, got {len(row)} "
                              f"(a tab inside a field?)")
    if len(row) < num_columns:
        raise GlueFormatError(f"{path}:{line}: expected {num_columns} columns, got {len(row)} "
                              f"(a line break inside a field, or a cut-off row?)")
    text_b = row[columns["text_b"]] if "text_b" in columns else None
    raw_label = row[columns["label"]].strip() if "label" in columns else ""
    if split_name.startswith("test"):  # a test label is only checked; the id names the row
        if raw_label:
            _parse_label(spec, raw_label, line, path)
        guid = row[columns["id"]] if "id" in columns else str(line)
        return Example(guid=guid, text_a=row[columns["text_a"]], text_b=text_b, label=None,
                       line=line)
    label = _parse_label(spec, raw_label, line, path)
    return Example(guid=f"{split_name}-{line}", text_a=row[columns["text_a"]], text_b=text_b,
                   label=label, line=line)


_SCORE = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")  # ASCII decimal
_PLAIN_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")  # how a class label that is a number reads


def _parse_label(spec, raw, line, path) -> int | float | str:
    """Class index for classification tasks (own labels as written while train's classes are
    collected), float score for regression: an ASCII decimal, finite in float32 as trained.
    An own class label that reads as a number must be written plainly (0, -1, 0.5): Python
    would read 1_0 as 10 and Arabic-Indic digits as numbers, which a reader of the file and
    the label table would not."""
    if spec.labels is not None and spec.is_regression:  # labels None: classes being collected
        if not _SCORE.fullmatch(raw):
            raise GlueFormatError(f"{path}:{line}: score {_shown(raw)} is not a decimal number")
        with np.errstate(over="ignore"):  # 1e39 is a float64, not a float32
            if not np.isfinite(np.float32(float(raw))):
                raise GlueFormatError(f"{path}:{line}: score {_shown(raw)} is not finite in "
                                      "float32, the dtype training uses")
        return float(raw)
    if spec.labels is None and not raw:  # own data whose classes are being collected
        raise GlueFormatError(f"{path}:{line}: empty label")
    if spec.files and _reads_as_number(raw) and not _PLAIN_NUMBER.fullmatch(raw):
        raise GlueFormatError(f"{path}:{line}: label {_shown(raw)} reads as a number but is not "
                              "written as one plainly (0, -1, 0.5); write it so, or as a word")
    if spec.labels is None:  # a class: each submission line predicting it holds it
        if _BREAKS_LINE.search(raw):
            raise GlueFormatError(f"{path}:{line}: label {_shown(raw)} {_UNWRITABLE}")
        return raw
    if raw not in spec.labels:
        hint = "; use --regression?" if _scores_as_classes(spec.labels + (raw,)) else ""
        raise GlueFormatError(f"{path}:{line}: label {_shown(raw)} is not one of "
                              f"{_shown(spec.labels, 200)}{hint}{_same_text(raw, spec.labels)}")
    return spec.labels.index(raw)


def _reads_as_number(text) -> bool:
    """Python's float() reads it (1_0, ١, nan and 1e3 too), or it is digits of any script (²)."""
    try:
        float(text)
        return True
    except ValueError:
        return text.lstrip("+-").isdigit()


def _one_spelling(examples, path) -> None:
    """Refuse a class number written two ways (1 and 1.0, 01, -0): two classes meant as one."""
    first = {}
    for example in examples:
        if _PLAIN_NUMBER.fullmatch(example.label):
            other = first.setdefault(Decimal(example.label), example)
            if other.label != example.label:
                raise GlueFormatError(f"{path}:{example.line}: label {_shown(example.label)} is "
                                      f"the number of label {_shown(other.label)} (line "
                                      f"{other.line}); write each class one way")


def _scores_as_classes(labels) -> bool:
    """Many distinct labels, every one a number: scores read as classes (regression forgotten)."""
    try:
        return len(set(labels)) > 10 and all(math.isfinite(float(label)) for label in labels)
    except ValueError:
        return False


def _check_flags(text_columns, labels, regression, metric, metrics, has_train) -> None:
    """Refuse own_task's arguments that do not go together, naming the command line's flags."""
    given = list(labels or ())
    repeated = next((label for label in given if given.count(label) > 1), None)
    unwritable = next((label for label in given if _BREAKS_LINE.search(label)), None)
    problems = [
        (not 1 <= len(text_columns) <= 2, f"--text-columns takes one column or two, got "
         f"{len(text_columns)}: {_shown(list(text_columns), 100)}"),
        (metric not in (None,) + metrics, f"--metric {metric} scores "
         f"{'classes, not --regression' if regression else '--regression only'}: choose "
         f"{' or '.join(metrics)}"),
        (regression and labels, "--labels and --regression exclude each other: scores have "
         "no classes"),
        (repeated is not None, f"--labels names {_shown(repeated)} twice; name each class once"),
        (labels is not None and len(given) < 2, f"--labels {_shown(given)}: a classifier "
         "needs two classes or more"),
        (unwritable is not None, f"--labels: {_shown(unwritable)} {_UNWRITABLE}"),
        (not (labels or regression or has_train), "no --labels and no --train-file to take "
         "the classes from")]
    for problem, message in problems:
        if problem:
            raise ValueError(message)


def own_task(files, text_columns, label_column="label", labels=None, regression=False,
             metric=None, id_column=None, skip_bad_rows=False) -> TaskSpec:
    """A task over your own files, {split: path} for "train", "dev" and "test", each .csv, .tsv
    or .jsonl; read, encoded and scored like a GLUE task. Classes: `labels` in that order, else
    the sorted distinct labels of train (as numbers when all are integers). Metrics: accuracy
    and macro-F1, or Spearman and Pearson with regression; `metric` picks the main one."""
    files = {split: str(path) for split, path in files.items() if path}
    for split, path in files.items():
        if Path(path).suffix not in (".csv", ".tsv", ".jsonl"):
            raise ValueError(f"{path}: unknown format; name the file .csv, .tsv or .jsonl")
        check_file(path, f"--{split}-file")  # before anything reads or hashes it
    metrics = ("spearman", "pearson") if regression else ("accuracy", "macro_f1")
    _check_flags(text_columns, labels, regression, metric, metrics, "train" in files)
    folder = Path(files.get("train") or files.get("dev") or files["test"]).resolve().parent
    spec = TaskSpec(name=folder.name + ("-own" if folder.name.lower() in TASKS else ""),
                    folder=str(folder), labels=() if regression else labels and tuple(labels),
                    metrics=tuple(sorted(metrics, key=lambda name: name != metric)),
                    submission_names=(Path(files.get("test", "test")).stem,),
                    text_a_column=text_columns[0], text_b_column=(list(text_columns) + [None])[1],
                    label_column=label_column, files=tuple(files.items()), id_column=id_column)
    if regression or (labels and "train" not in files):
        return spec
    rows = read_split_counted(None, replace(spec, labels=None), "train", skip_bad_rows)[0]
    found = {example.label for example in rows}  # train's labels as written
    _one_spelling(rows, files["train"])
    unseen = [label for label in labels or () if label not in found]
    if unseen:  # a class the model is trained on but can never learn
        raise ValueError(f"{files['train']}: no rows of class {unseen[0]!r} of labels "
                         f"{list(labels)}; name only classes the train file has"
                         f"{_same_text(unseen[0], found)}")
    if labels:
        return spec
    if len(found) < 2:
        raise ValueError(f"{files['train']}: one label only ({_shown(found, 100)}); a classifier "
                         "needs two")
    integers = all(label.lstrip("-").isdigit() for label in found)  # written plainly: ASCII
    return replace(spec, labels=tuple(sorted(found, key=Decimal if integers else None)))


# ---------------------------------------------------------------------------------------------
# Tokenisation and batching


def encode(examples, tokenizer, max_length) -> list[dict]:
    """Tokenise examples (pairs truncated longest_first) without padding."""
    if not examples:
        return []
    texts_a = [ex.text_a for ex in examples]
    texts_b = [ex.text_b for ex in examples]
    num_pairs = sum(text is not None for text in texts_b)
    if 0 < num_pairs < len(examples):
        raise ValueError("cannot encode a mix of single sentences and sentence pairs")
    encoded = tokenizer(texts_a, texts_b if num_pairs else None, truncation="longest_first",
                        max_length=max_length, padding=False)
    features = []
    for i, example in enumerate(examples):
        feature = {"input_ids": encoded["input_ids"][i]}
        if "token_type_ids" in encoded:
            feature["token_type_ids"] = encoded["token_type_ids"][i]
        feature["label"] = example.label
        features.append(feature)
    return features


def count_truncated(examples, features, tokenizer, max_length) -> int:
    """How many of the examples encode() cut to max_length: those that fill it are encoded
    again whole."""
    full = [ex for ex, f in zip(examples, features) if len(f["input_ids"]) == max_length]
    if not full:
        return 0
    pairs = full[0].text_b is not None
    whole = tokenizer([ex.text_a for ex in full], [ex.text_b for ex in full] if pairs else None,
                      verbose=False)["input_ids"]
    return sum(len(ids) > max_length for ids in whole)


def truncation_report(splits, tokenizer, max_length) -> list[str]:
    """The line to print when encode() cut examples to max_length, for {split: (examples,
    features)}: how many of each split's. No line when it cut none."""
    cut = {split: count_truncated(*pair, tokenizer, max_length) for split, pair in splits.items()}
    if not any(cut.values()):
        return []
    return [f"--max-length {max_length} truncates " + ", ".join(
        f"{cut[split]} of {len(splits[split][0])} {split}" for split in splits) + " examples"]


# ---------------------------------------------------------------------------------------------
# The command line's data (adkd.py and its explain command): its flags in `args`, its messages
# through `report`. One process downloads; several would race: download=False (one process of
# several) names the command that fetches the files instead.


def task_from_args(args, report=print) -> TaskSpec:
    """The GLUE --task, or a task over your own files (reporting its classes' order)."""
    own = {"train": args.train_file, "dev": args.dev_file, "test": args.test_file}
    if bool(args.task) == any(own.values()):
        raise SystemExit("error: give either --task (GLUE) or your own --train-file/--dev-file")
    try:
        if args.task:
            return get_task(args.task)
        task = own_task(own, args.text_columns or [], args.label_column, args.labels,
                        args.regression, args.metric, args.id_column,
                        getattr(args, "skip_bad_rows", False))
    except (OSError, ValueError) as error:  # GlueFormatError is a ValueError
        raise SystemExit(f"error: {'--task: ' if args.task else ''}{error}") from None
    if not task.is_regression:
        order = "" if args.labels else " (the sorted labels of --train-file; --labels orders them)"
        report("classes: " + ", ".join(f"{i}={label}" for i, label in enumerate(task.labels))
               + order)
    return task


def read_examples(args, task, splits, skip_bad_rows=False, standard=False, report=print,
                  download=True) -> dict[str, list[Example]]:
    """{split: examples} of own files or GLUE's (fetched into --data-dir when absent), naming
    the malformed rows skip_bad_rows skips; standard: GLUE's row counts only. One line each."""
    try:
        return read_splits(args.data_dir, task, splits, skip_bad_rows, report, standard, download)
    except (OSError, ValueError, GlueDownloadError) as error:
        raise SystemExit(f"error: {error}") from None


def read_data(args, task, tokenizer, training, report=print, download=True):
    """Dev (and train, and with --predict test) examples, encoded. Says how many train and
    dev examples --max-length cuts. Test rows are never skipped: a submission needs each."""
    splits = task.dev_splits + (("train",) if training else ())
    standard = not args.glue_subset  # a cut-short GLUE file gives no score, no submission
    rows = read_examples(args, task, splits, args.skip_bad_rows, standard, report, download)
    test = read_examples(args, task, task.test_splits if args.predict else (), False, standard,
                         report, download)
    encoded = {split: encode(examples, tokenizer, args.max_length)
               for split, examples in {**rows, **test}.items()}
    for line in truncation_report({split: (rows[split], encoded[split]) for split in splits},
                                  tokenizer, args.max_length):
        report(line)
    return argparse.Namespace(dev={split: encoded[split] for split in task.dev_splits},
                              train=encoded.get("train", []), training=training,
                              test={split: (test[split], encoded[split]) for split in test})


def explain_rows(args, task, report=print, download=True) -> list[Example]:
    """explain's examples: each --text (unlabelled), then the --dev rows of the task's (first)
    dev split, whose numbers args.dev becomes."""
    texts = [Example("text", text[0], text[1] if len(text) > 1 else None, None, 0)
             for text in args.text]
    if not args.dev:
        return texts
    [dev] = read_examples(args, task, task.dev_splits[:1], report=report,
                          download=download).values()
    wanted = [str(row) for row in range(len(dev))] if args.dev == ["all"] else args.dev
    if bad := [row for row in wanted if not row.isdigit() or int(row) >= len(dev)]:
        raise SystemExit(f"error: --dev {bad[0]}: the {task.name} dev set has rows "
                         f"0..{len(dev) - 1} (or give all)")
    args.dev = [int(row) for row in wanted]  # the rows measured, which --json records
    return texts + [dev[row] for row in args.dev]


def class_names(task, saved) -> list[str]:
    """The names explain shows for the task's classes: a checkpoint's own (`saved`, its config's
    id2label) where it names them all, else CLASS_NAMES' or the task's labels; "score" for
    regression."""
    named = len(saved) == task.num_labels and not {*saved.values()} & {*task.labels, "LABEL_0"}
    return (["score"] if task.is_regression else [saved[i] for i in range(len(saved))]
            if named else list(CLASS_NAMES.get(task.name, task.labels)))


def collate(features, pad_token_id) -> dict[str, torch.Tensor]:
    """Pad a list of encoded features to the longest one and stack them into tensors."""
    max_len = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), max_len), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(features), max_len), dtype=torch.long)
    has_types = "token_type_ids" in features[0]
    token_type_ids = torch.zeros((len(features), max_len), dtype=torch.long)
    for i, feature in enumerate(features):
        length = len(feature["input_ids"])
        input_ids[i, :length] = torch.tensor(feature["input_ids"], dtype=torch.long)
        attention_mask[i, :length] = 1
        if has_types:
            token_type_ids[i, :length] = torch.tensor(feature["token_type_ids"], dtype=torch.long)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if has_types:
        batch["token_type_ids"] = token_type_ids
    labels = [f.get("label") for f in features]
    if all(label is None for label in labels):
        return batch
    if any(label is None for label in labels):
        raise ValueError("batch mixes labelled and unlabelled features")
    is_regression = any(isinstance(label, float) for label in labels)
    batch["labels"] = torch.tensor(labels, dtype=torch.float32 if is_regression else torch.long)
    return batch


# ---------------------------------------------------------------------------------------------
# Metrics


def _paired_arrays(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Convert to 1-D arrays of equal, non-zero length."""
    a, b = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"need two non-empty arrays of equal length, got {len(a)} and {len(b)}")
    return a, b


def _all_finite(*arrays) -> bool:
    """False if any float (or complex) array holds a NaN or an infinity; ints are always finite."""
    return all(a.dtype.kind not in "fc" or bool(np.isfinite(a).all()) for a in arrays)


def accuracy(preds, labels) -> float:
    """Fraction of predictions equal to the label; NaN if any input is not finite."""
    preds, labels = _paired_arrays(preds, labels)
    if not _all_finite(preds, labels):
        return math.nan
    return float(np.mean(preds == labels))


def f1_score(preds, labels) -> float:
    """F1 of the positive class 1; 0.0 when there are no positives at all (like sklearn)."""
    preds, labels = _paired_arrays(preds, labels)
    if not _all_finite(preds, labels):
        return math.nan
    true_pos = np.sum((preds == 1) & (labels == 1))
    false_pos = np.sum((preds == 1) & (labels != 1))
    false_neg = np.sum((preds != 1) & (labels == 1))
    denominator = 2 * true_pos + false_pos + false_neg
    return float(2 * true_pos / denominator) if denominator else 0.0


def macro_f1(preds, labels) -> float:
    """Unweighted mean of each class's F1, over the classes in preds or labels (as sklearn)."""
    preds, labels = _paired_arrays(preds, labels)
    if not _all_finite(preds, labels):
        return math.nan
    return float(np.mean([f1_score(preds == c, labels == c) for c in np.union1d(preds, labels)]))


def matthews_corrcoef(preds, labels) -> float:
    """Matthews correlation (multi-class form, as sklearn); 0.0 when undefined."""
    preds, labels = _paired_arrays(preds, labels)
    if not _all_finite(preds, labels):
        return math.nan
    _, codes = np.unique(np.concatenate([labels, preds]), return_inverse=True)
    num_classes = codes.max() + 1
    true_codes, pred_codes = codes[: len(labels)], codes[len(labels):]
    confusion = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(confusion, (true_codes, pred_codes), 1)
    true_counts, pred_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    n, correct = confusion.sum(), np.trace(confusion)
    cov_true_pred = correct * n - true_counts @ pred_counts
    cov_pred_pred = n * n - pred_counts @ pred_counts
    cov_true_true = n * n - true_counts @ true_counts
    denominator = math.sqrt(cov_pred_pred * cov_true_true)
    return float(cov_true_pred / denominator) if denominator else 0.0


def pearson(x, y) -> float:
    """Pearson correlation; 0.0 when either input is constant, NaN when one is not finite."""
    x, y = _paired_arrays(x, y)
    if not _all_finite(x, y):
        return math.nan
    x_centered = x.astype(np.float64) - x.mean()
    y_centered = y.astype(np.float64) - y.mean()
    denominator = math.sqrt(np.sum(x_centered**2) * np.sum(y_centered**2))
    return float(np.sum(x_centered * y_centered) / denominator) if denominator else 0.0


def _average_ranks(values) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts_run = np.concatenate([[True], sorted_values[1:] != sorted_values[:-1]])
    run_of_position = np.cumsum(starts_run) - 1
    run_starts = np.flatnonzero(starts_run)
    run_ends = np.append(run_starts[1:], len(values))
    # positions start..end-1 hold 1-based ranks start+1..end, whose mean is (start+1+end)/2
    run_mean_rank = (run_starts + 1 + run_ends) / 2.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = run_mean_rank[run_of_position]
    return ranks


def spearman(x, y) -> float:
    """Spearman rank correlation: Pearson correlation of the average ranks; NaN as scipy when
    an input is not finite (ranking would otherwise sort NaN last and hide it)."""
    x, y = _paired_arrays(x, y)
    if not _all_finite(x, y):
        return math.nan
    return pearson(_average_ranks(x), _average_ranks(y))


METRICS = {"accuracy": accuracy, "f1": f1_score, "macro_f1": macro_f1, "mcc": matthews_corrcoef,
           "pearson": pearson, "spearman": spearman}


def predictions_from_logits(logits, task) -> np.ndarray:
    """Class indices (scores for regression); all NaN when any logit is not finite."""
    if not np.isfinite(logits).all():
        return np.full(len(logits), np.nan)
    return logits[:, 0] if get_task(task).is_regression else logits.argmax(axis=-1)


def format_metrics(metrics) -> str:
    """`name=value ...` to 4 decimals, or one phrase when a score is not finite."""
    if any(isinstance(v, float) and not math.isfinite(v) for v in metrics.values()):
        return "predictions are not finite (NaN or inf): no score"
    return " ".join(f"{name}={value:.4f}" for name, value in metrics.items())


def compute_metrics(task, preds, labels) -> dict[str, float]:
    """A task's dev metrics; preds are class indices, or scores for regression.

    Every metric is NaN when any prediction or label is NaN or infinite (a diverged model).
    """
    return {name: METRICS[name](preds, labels) for name in get_task(task).metrics}


# ---------------------------------------------------------------------------------------------
# Download (stdlib only) and row-count check

# Data rows (header excluded) of every split file of the classic GLUE release
STANDARD_ROW_COUNTS = {
    "cola": {"train": 8551, "dev": 1043, "test": 1063},
    "sst2": {"train": 67349, "dev": 872, "test": 1821},
    "mrpc": {"train": 3668, "dev": 408, "test": 1725},
    "stsb": {"train": 5749, "dev": 1500, "test": 1379},
    "qqp": {"train": 363846, "dev": 40430, "test": 390965},
    "mnli": {"train": 392702, "dev_matched": 9815, "dev_mismatched": 9832,
             "test_matched": 9796, "test_mismatched": 9847},
    "qnli": {"train": 104743, "dev": 5463, "test": 5463},  # QNLI v2
    "rte": {"train": 2490, "dev": 277, "test": 3000},
}

# The locations used by the classic download_glue_data.py (nyu-mll/GLUE-baselines) and by the
# HuggingFace `datasets` GLUE script; MRPC comes from SentEval's copy of the MSR corpus.
GLUE_URL = "https://dl.fbaipublicfiles.com/glue/data/"
SENTEVAL_URL = "https://dl.fbaipublicfiles.com/senteval/senteval_data/"
DOWNLOAD_URLS = {
    **{name: GLUE_URL + name for name in ("CoLA.zip", "SST-2.zip", "QQP-clean.zip", "STS-B.zip",
                                          "MNLI.zip", "QNLIv2.zip", "RTE.zip",
                                          "mrpc_dev_ids.tsv")},
    "msr_paraphrase_train.txt": SENTEVAL_URL + "msr_paraphrase_train.txt",
    "msr_paraphrase_test.txt": SENTEVAL_URL + "msr_paraphrase_test.txt",
}
TASK_DOWNLOADS = {"cola": "CoLA.zip", "sst2": "SST-2.zip", "qqp": "QQP-clean.zip",
                  "stsb": "STS-B.zip", "mnli": "MNLI.zip", "qnli": "QNLIv2.zip", "rte": "RTE.zip",
                  "mrpc": ("msr_paraphrase_train.txt", "msr_paraphrase_test.txt",
                           "mrpc_dev_ids.tsv")}
MRPC_TEST_HEADER = "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n"


def write_submission(path, task, examples, predictions) -> None:
    """A GLUE submission file, `index<TAB>prediction` per test example in their order (labels by
    name, scores to 3 decimals), written beside its place and renamed into it: never half
    written. The reader refused ids and classes that a line could not hold or tell apart."""
    path, spec = Path(path), get_task(task)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["index\tprediction"] + [
        f"{ex.guid}\t{float(p):.3f}" if spec.is_regression else
        f"{ex.guid}\t{spec.labels[int(p)]}" for ex, p in zip(examples, predictions)]
    temporary = path.with_suffix(".tmp")
    temporary.write_text("\n".join(lines) + "\n")
    os.replace(temporary, path)


def split_names(task) -> tuple:
    """Every split of a task, in file order: train, the dev splits, the test splits."""
    spec = get_task(task)
    return ("train",) + spec.dev_splits + spec.test_splits


def check_task_files(data_dir, task) -> dict[str, int]:
    """Read every split of a task and compare its row count with the standard GLUE release.

    data_dir is the GLUE root or the task folder. Returns {split: rows}; raises GlueFormatError
    naming the file when one is missing, malformed, or has another number of rows.
    """
    spec = get_task(task)
    folder = _checked_folder(data_dir, spec)
    counts = {}
    for split in split_names(spec):
        path = folder / f"{split}.tsv"
        if not path.is_file():
            raise GlueFormatError(f"{path}: missing; {spec.folder} needs "
                                  f"{', '.join(s + '.tsv' for s in split_names(spec))}")
        examples, _ = read_split_counted(folder, spec, split)
        counts[split] = _check_row_count(spec, path, len(examples))
    return counts


def _check_row_count(spec, path, rows, hint="") -> int:
    """Refuse a GLUE split file whose data rows are not the standard release's count."""
    expected = STANDARD_ROW_COUNTS[spec.name][path.stem]
    if rows != expected:
        raise GlueFormatError(f"{path}: {rows} data rows, but the standard GLUE {spec.folder} "
                              f"{path.name} has {expected}{hint}")
    return rows


def _checked_folder(data_dir, spec) -> Path:
    """The folder check_task_files reads: task_dir's choice, else <data_dir>/<folder>."""
    try:
        return task_dir(data_dir, spec)
    except FileNotFoundError:
        return Path(data_dir) / spec.folder


def download_task(task, data_dir, urls=None, timeout=60) -> Path:
    """Fetch one task into <data_dir>/<folder>/ as the classic GLUE download script lays it out.

    The zip of the task is extracted (its top folder is the task folder); MRPC is built from the
    SentEval MSR files as that script does. urls maps a file name (e.g. "RTE.zip") to a URL and
    overrides DOWNLOAD_URLS. Files are fetched into a temporary folder inside data_dir and then
    renamed into place, so no half-written file is left. Raises GlueDownloadError when a file
    cannot be fetched or unpacked, and GlueFormatError naming the file when a split's row count
    differs from STANDARD_ROW_COUNTS. Returns the task folder.
    """
    spec = get_task(task)
    urls = {**DOWNLOAD_URLS, **(urls or {})}
    data_dir = Path(data_dir)
    target = data_dir / spec.folder
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.folder}-download-", dir=data_dir))
    try:
        if spec.name == "mrpc":
            staged = staging / spec.folder
            staged.mkdir()
            sources = TASK_DOWNLOADS["mrpc"]
            for name in sources:
                # the classic script keeps the MSR files and saves the ids as dev_ids.tsv
                local = "dev_ids.tsv" if name == "mrpc_dev_ids.tsv" else name
                _fetch(urls[name], staged / local, spec, target, timeout)
            try:
                format_mrpc(staged)
            except GlueFormatError as error:  # name the URL, not the temporary file
                message = str(error).replace(str(staged / "dev_ids.tsv"), urls[sources[2]])
                for name in sources[:2]:
                    message = message.replace(str(staged / name), urls[name])
                raise GlueFormatError(message) from None
        else:
            sources = (TASK_DOWNLOADS[spec.name],)
            archive = staging / sources[0]
            _fetch(urls[archive.name], archive, spec, target, timeout)
            staged = _extract(archive, staging / "unpacked", spec, target, urls[archive.name])
        _move_into(staged, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    try:
        check_task_files(target, spec)
    except GlueFormatError as error:
        raise GlueFormatError(f"{error} (downloaded from {', '.join(urls[n] for n in sources)}; "
                              f"delete {target} and retry, or {_manual_hint(spec, target)})"
                              ) from None
    return target


def _manual_hint(spec, target) -> str:
    files = ", ".join(f"{split}.tsv" for split in split_names(spec))
    return f"put the files in {target}/ by hand ({files}, as the GLUE download script writes them)"


def _fetch(url, destination, spec, target, timeout) -> None:
    """Download url to destination through a temporary name; GlueDownloadError on failure."""
    partial = destination.with_name(destination.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as f:
            shutil.copyfileobj(response, f, 1 << 20)
            expected = response.headers.get("Content-Length")
        if expected is not None and partial.stat().st_size != int(expected):
            raise OSError(f"got {partial.stat().st_size} of {expected} bytes")
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        partial.unlink(missing_ok=True)
        reason = getattr(error, "reason", None) or error
        if isinstance(error, urllib.error.HTTPError):
            reason = f"HTTP {error.code} {error.reason}"
        reason = " ".join(str(reason).split()) or type(error).__name__
        raise GlueDownloadError(f"cannot download {spec.name} from {url} ({reason}); check the "
                                f"network or {_manual_hint(spec, target)}") from None
    os.replace(partial, destination)


def _extract(archive, into, spec, target, url) -> Path:
    """Unpack a task zip and return its task folder (e.g. unpacked/RTE)."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(into)  # extractall drops absolute paths and '..' parts
    except (zipfile.BadZipFile, OSError) as error:
        raise GlueDownloadError(f"cannot unpack {archive.name} for {spec.name} from {url} "
                                f"({' '.join(str(error).split())}); "
                                f"{_manual_hint(spec, target)}") from None
    folder = into / spec.folder
    if not folder.is_dir():
        raise GlueDownloadError(f"{archive.name} from {url} has no {spec.folder}/ folder; "
                                f"{_manual_hint(spec, target)}")
    return folder


def _move_into(source, target) -> None:
    """Rename every file under source to the same place under target (same file system)."""
    for path in sorted(source.rglob("*")):
        if path.is_file():
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, destination)


def format_mrpc(mrpc_dir) -> None:
    """Write MRPC train/dev/test.tsv from the MSR files, as the classic GLUE download script does.

    Reads msr_paraphrase_train.txt, msr_paraphrase_test.txt and dev_ids.tsv in mrpc_dir. The
    train header is copied unchanged (BOM included); each row is stripped, split on tabs and
    written as label, id1, id2, s1, s2 to dev.tsv when (id1, id2) is a dev pair, else to
    train.tsv. test.tsv gets a fixed header and rows index, id1, id2, s1, s2.
    """
    mrpc_dir = Path(mrpc_dir)
    dev_ids = set()
    with open(mrpc_dir / "dev_ids.tsv", encoding="utf-8") as ids:
        for row in ids:
            dev_ids.add(tuple(row.strip().split("\t")))
    train_rows, dev_rows, test_rows = [], [], []
    header = None
    for name, is_train in (("msr_paraphrase_train.txt", True), ("msr_paraphrase_test.txt", False)):
        path = mrpc_dir / name
        try:  # text mode as in the classic script: universal newlines, BOM kept in the header
            with open(path, encoding="utf-8") as f:
                first = f.readline()
                lines = list(f)
        except UnicodeDecodeError as error:
            raise _not_utf8_error(path, error) from None
        if is_train:
            header = first
        for number, row in enumerate(lines, start=2):
            fields = row.strip().split("\t")
            if fields == [""]:
                continue
            if len(fields) != 5:
                raise GlueFormatError(f"{path}:{number}: expected 5 columns (label, id1, id2, "
                                      f"s1, s2), got {len(fields)}")
            label, id1, id2, s1, s2 = fields
            if not is_train:
                test_rows.append(f"{len(test_rows)}\t{id1}\t{id2}\t{s1}\t{s2}\n")
            else:
                rows = dev_rows if (id1, id2) in dev_ids else train_rows
                rows.append(f"{label}\t{id1}\t{id2}\t{s1}\t{s2}\n")
    for name, lines in (("train.tsv", [header] + train_rows), ("dev.tsv", [header] + dev_rows),
                        ("test.tsv", [MRPC_TEST_HEADER] + test_rows)):
        partial = mrpc_dir / (name + ".part")
        with open(partial, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(lines)
        os.replace(partial, mrpc_dir / name)


def main(argv=None) -> int:
    """Command line: download GLUE tasks, or check the row counts of tasks already on disk."""
    parser = argparse.ArgumentParser(
        description="Download GLUE tasks in the classic glue_data/ layout, or check them.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--download", nargs="+", metavar="TASK",
                        help=f"tasks to fetch ({', '.join(TASKS)}, or all)")
    action.add_argument("--check", nargs="+", metavar="TASK",
                        help="tasks whose files to read and compare with the standard row counts")
    parser.add_argument("--data-dir", default="glue_data",
                        help="GLUE root; each task goes to <data-dir>/<folder>/")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per network read")
    args = parser.parse_args(argv)
    names = args.download or args.check
    try:
        specs = list(TASKS.values()) if "all" in names else [get_task(n) for n in names]
        for spec in specs:
            if args.download:
                print(f"{spec.name}: downloading into {Path(args.data_dir) / spec.folder}",
                      flush=True)
                folder = download_task(spec, args.data_dir, timeout=args.timeout)
                counts = STANDARD_ROW_COUNTS[spec.name]  # download_task checked them
            else:
                counts = check_task_files(args.data_dir, spec)
                folder = _checked_folder(args.data_dir, spec)
            print(f"{spec.name}: ok, " + ", ".join(f"{split} {n}" for split, n in counts.items())
                  + f" rows (standard) in {folder}", flush=True)
    except (GlueDownloadError, GlueFormatError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
