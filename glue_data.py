"""GLUE data: task table, TSV readers, tokenisation, dynamic-padding collate, metrics.

Reads the TSV files produced by the classic GLUE download script, the same way the old
HuggingFace `run_glue.py` processors do: tab-separated, quoting off (QNLI has stray `"`),
UTF-8 with the byte-order mark dropped (MRPC headers start with one). Columns are looked
up by header name; CoLA train/dev have no header and get a fixed one.

Metrics use numpy only and return plain floats on the 0-1 (or -1..1) scale.
"""

import csv
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """Everything the pipeline needs to know about one GLUE task."""

    name: str
    folder: str
    labels: tuple = ("0", "1")  # TSV label strings in class-index order; () means regression
    dev_splits: tuple = ("dev",)
    test_splits: tuple = ("test",)
    main_metric: str = "accuracy"
    submission_names: tuple
    text_a_column: str
    text_b_column: str | None = None
    label_column: str | None = None
    headerless_columns: tuple | None = None  # column names for labelled files that lack a header

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
    "cola": TaskSpec(name="cola", folder="CoLA", main_metric="mcc", submission_names=("CoLA",),
                     text_a_column="sentence", label_column="label",
                     headerless_columns=("source", "label", "marker", "sentence")),
    "sst2": TaskSpec(name="sst2", folder="SST-2", submission_names=("SST-2",),
                     text_a_column="sentence", label_column="label"),
    "mrpc": TaskSpec(name="mrpc", folder="MRPC", main_metric="f1", submission_names=("MRPC",),
                     text_a_column="#1 String", text_b_column="#2 String", label_column="Quality"),
    "stsb": TaskSpec(name="stsb", folder="STS-B", labels=(), main_metric="spearman",
                     submission_names=("STS-B",), text_a_column="sentence1",
                     text_b_column="sentence2", label_column="score"),
    "qqp": TaskSpec(name="qqp", folder="QQP", main_metric="f1", submission_names=("QQP",),
                    text_a_column="question1", text_b_column="question2",
                    label_column="is_duplicate"),
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
    valid = ("train",) + spec.dev_splits + spec.test_splits
    if resolved not in valid:
        raise ValueError(f"unknown split {split!r} for {spec.name}; valid splits: "
                         f"{', '.join(sorted(set(valid) | set(aliases)))}")
    return resolved + ".tsv"


def read_split(data_dir, task, split, skip_bad_rows=False) -> list[Example]:
    """Read one split; with skip_bad_rows, malformed rows are dropped with a warning."""
    examples, num_skipped = read_split_counted(data_dir, task, split, skip_bad_rows)
    if num_skipped:
        warnings.warn(f"{get_task(task).name} {split}: skipped {num_skipped} malformed rows")
    return examples


def read_split_counted(data_dir, task, split, skip_bad_rows=False) -> tuple[list[Example], int]:
    """Read one split and return (examples, number of malformed rows skipped)."""
    spec = get_task(task)
    path = task_dir(data_dir, spec) / split_file_name(spec, split)
    if not path.is_file():
        raise FileNotFoundError(f"GLUE file not found: {path}")
    split_name = path.stem
    has_labels = not split_name.startswith("test")
    examples, num_skipped = [], 0
    # newline="" lets csv count physical lines; quotechar=None because QNLI has stray quotes
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quotechar=None)
        header = spec.headerless_columns if has_labels and spec.headerless_columns else None
        if header is None:
            header = next(reader, None)
            if header is None:
                raise GlueFormatError(f"{path}:1: empty file, expected a header line")
        columns = _column_indices(spec, header, has_labels, path)
        for row in reader:
            if not row:  # a blank line (e.g. a trailing one) carries no example
                continue
            try:
                examples.append(_parse_row(spec, row, columns, len(header), split_name,
                                           reader.line_num, path))
            except GlueFormatError:
                if not skip_bad_rows:
                    raise
                num_skipped += 1
    return examples, num_skipped


def _column_indices(spec, header, has_labels, path) -> dict:
    """Find the text (and label) columns in the header by name."""
    wanted = {"text_a": spec.text_a_column, "text_b": spec.text_b_column}
    if has_labels:
        wanted["label"] = spec.label_column
    columns = {}
    for role, name in wanted.items():
        if name is None:
            continue
        if name not in header:
            raise GlueFormatError(f"{path}:1: header has no {name!r} column: {header}")
        columns[role] = header.index(name)
    # the HF processors read a trailing label as line[-1], which survives stray extra tabs
    if columns.get("label") == len(header) - 1:
        columns["label"] = -1
    return columns


def _parse_row(spec, row, columns, num_columns, split_name, line, path) -> Example:
    """Turn one TSV row into an Example, raising GlueFormatError on a malformed row."""
    if len(row) < num_columns:
        raise GlueFormatError(f"{path}:{line}: expected {num_columns} tab-separated columns, "
                              f"got {len(row)}")
    text_b = row[columns["text_b"]] if "text_b" in columns else None
    if "label" not in columns:  # test files: no label, first column is the submission index
        return Example(guid=row[0], text_a=row[columns["text_a"]], text_b=text_b,
                       label=None, line=line)
    label = _parse_label(spec, row[columns["label"]].strip(), line, path)
    return Example(guid=f"{split_name}-{line}", text_a=row[columns["text_a"]], text_b=text_b,
                   label=label, line=line)


def _parse_label(spec, raw, line, path) -> int | float:
    """Class index for classification tasks, float score for regression."""
    if spec.is_regression:
        try:
            score = float(raw)
        except ValueError:
            raise GlueFormatError(f"{path}:{line}: score {raw!r} is not a number") from None
        if not math.isfinite(score):
            raise GlueFormatError(f"{path}:{line}: score {raw!r} is not finite")
        return score
    if raw not in spec.labels:
        raise GlueFormatError(f"{path}:{line}: label {raw!r} is not one of {spec.labels}")
    return spec.labels.index(raw)


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


def accuracy(preds, labels) -> float:
    """Fraction of predictions equal to the label."""
    preds, labels = _paired_arrays(preds, labels)
    return float(np.mean(preds == labels))


def f1_score(preds, labels) -> float:
    """F1 of the positive class 1; 0.0 when there are no positives at all (like sklearn)."""
    preds, labels = _paired_arrays(preds, labels)
    true_pos = np.sum((preds == 1) & (labels == 1))
    false_pos = np.sum((preds == 1) & (labels != 1))
    false_neg = np.sum((preds != 1) & (labels == 1))
    denominator = 2 * true_pos + false_pos + false_neg
    return float(2 * true_pos / denominator) if denominator else 0.0


def matthews_corrcoef(preds, labels) -> float:
    """Matthews correlation (multi-class form, as sklearn); 0.0 when undefined."""
    preds, labels = _paired_arrays(preds, labels)
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
    """Pearson correlation; 0.0 when either input is constant (correlation undefined)."""
    x, y = _paired_arrays(x, y)
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
    """Spearman rank correlation: Pearson correlation of the average ranks."""
    x, y = _paired_arrays(x, y)
    return pearson(_average_ranks(x), _average_ranks(y))


def compute_metrics(task, preds, labels) -> dict[str, float]:
    """GLUE dev metrics for a task; preds are class indices, or scores for STS-B."""
    spec = get_task(task)
    if spec.name == "cola":
        return {"mcc": matthews_corrcoef(preds, labels)}
    if spec.name in ("mrpc", "qqp"):
        return {"f1": f1_score(preds, labels), "accuracy": accuracy(preds, labels)}
    if spec.name == "stsb":
        return {"spearman": spearman(preds, labels), "pearson": pearson(preds, labels)}
    return {"accuracy": accuracy(preds, labels)}
