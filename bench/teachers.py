"""The teachers the rows distil, told apart by their records (one teacher per
comparison).

A teacher row's record is its row.json (bench/runs/<task>/<folder>/row.json, its log in
<folder>/teacher/log.jsonl). A teacher fine-tuned again in a later session, into the same
folder, has its record in <folder>/retrain/ (row.json, log.jsonl). Beside a record,
teacher.json (written by this script) holds what identifies its weights: their digest
(adkd.weights_digest) and the --teacher-outputs files they wrote. Which record a student row
distilled:

- from --teacher-outputs FILE: the record whose teacher.json names FILE;
- from --teacher FOLDER (a teacher row's best/): the last of that row's records whose training
  started before the student's did (the logs' clock readings), as a retrain writes its weights
  into the folder the earlier teacher's were in; the first record for a row older than all.

    python bench/teachers.py    # teacher.json for each committed teacher-outputs file

It finds a file's record by the file's dev logits: their dev scores (the GLUE dev labels are
read) must equal one record's, and it copies the digest from the file's meta.
"""
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import rowtable

IDENTITY = "teacher.json"
RETRAIN = "retrain"  # <teacher folder>/retrain/: the record of a teacher fine-tuned again
DIGEST_SHOWN = 12  # hex digits of a weights digest in a table
OUTPUTS_FILES = (rowtable.PAPER_OUTPUTS,)  # the committed --teacher-outputs files


@dataclass(frozen=True, eq=False)
class Teacher:
    """One teacher record: its folder, row.json and log, and the identity teacher.json adds;
    two are the same record when their folders are."""
    folder: Path
    log: Path
    result: dict
    identity: dict

    def __eq__(self, other):
        return isinstance(other, Teacher) and self.folder == other.folder

    def __hash__(self):
        return hash(self.folder)

    @property
    def name(self):
        return rowtable.shown(self.folder)

    @property
    def digest(self):
        return self.identity.get("weights_digest")

    @property
    def started(self):
        """When its training started (its log's first clock reading; inf without a log)."""
        return next((r["started"] for r in rowtable.log_records(self.log) if "started" in r),
                    math.inf)

    def label(self, metric):
        """`folder` (dev METRIC x, weights abc...): how every table names a row's teacher."""
        digest = (f"weights {self.digest[:DIGEST_SHOWN]}…" if self.digest
                  else "weights digest not recorded")
        return f"`{self.name}` (dev {metric} {100 * self.result['dev'][metric]:.1f}, {digest})"


def records(teacher_row):
    """The records of one teacher row, in the order they were trained: its own, then a
    retrain's; none before it has run."""
    found = []
    for folder, log in ((teacher_row.out, teacher_row.stage_dir / "log.jsonl"),
                        (teacher_row.out / RETRAIN, teacher_row.out / RETRAIN / "log.jsonl")):
        if (folder / "row.json").exists():
            identity = folder / IDENTITY
            found.append(Teacher(folder, log, json.loads((folder / "row.json").read_text()),
                                 json.loads(identity.read_text()) if identity.exists() else {}))
    return sorted(found, key=lambda teacher: teacher.started)


def task_records(rows):
    """Every teacher record of a task's rows (Row objects)."""
    return [t for row in rows if row.kind == "teacher" for t in records(row)]


def first_start(row):
    """When a row's own training first started (inf before it has)."""
    return next((r["started"] for r in rowtable.log_records(row.stage_dir / "log.jsonl")
                 if "started" in r), math.inf)


def teacher_of(row, rows):
    """The teacher record a student row distilled (see the module's docstring); None for a
    teacher row, or when no record of its teacher is here."""
    if row.kind == "teacher":
        return None
    if "--teacher-outputs" in row.argv:
        wanted = rowtable.shown(row.teacher_dir)
        return next((t for t in task_records(rows)
                     if wanted in t.identity.get("teacher_outputs", [])), None)
    owner = next((r for r in rows if r.kind == "teacher" and r.stage_dir / "best" ==
                  row.teacher_dir), None)
    candidates = records(owner) if owner else []
    started = first_start(row)
    before = [t for t in candidates if t.started <= started]
    # A row older than every record distilled the first (a log kept from an identical rerun
    # can start after rows its teacher taught).
    return before[-1] if before else candidates[0] if candidates else None


def across(pairs, rows, metric):
    """One flag per pair of rows (Row objects) whose teacher records differ: such a difference
    mixes the method with a change of teacher."""
    flags = []
    for a, b in pairs:
        ta, tb = teacher_of(a, rows), teacher_of(b, rows)
        if ta and tb and ta != tb:
            flags.append(f"**Across teachers:** {a.name} distilled {ta.label(metric)}, "
                         f"{b.name} {tb.label(metric)}; their difference mixes the method "
                         "with the change of teacher.")
    return flags


# ------------------------------------------------------------------- teacher.json from a file
def dev_scores(outputs, task):
    """The dev scores of a teacher-outputs file's dev logits against the GLUE dev labels."""
    import glue_data
    spec = glue_data.get_task(task)
    dev = glue_data.read_split(glue_data.task_dir(str(rowtable.GLUE), spec), spec,
                               spec.dev_splits[0])
    logits = outputs.logits[outputs.meta["dev_start"]:]
    return glue_data.compute_metrics(task, logits.argmax(-1).tolist(), [e.label for e in dev])


def identify(path):
    """Writes teacher.json beside the record whose dev scores the file's dev logits give;
    returns that file's path."""
    import adkd
    outputs = adkd.load_teacher_outputs(path)
    task = outputs.meta["task"]
    scores = dev_scores(outputs, task)
    matching = [t for t in task_records(rowtable.task_rows(task)) if t.result["dev"] == scores]
    if len(matching) != 1:
        raise SystemExit(f"error: {rowtable.shown(path)}'s dev scores {scores} match "
                         f"{len(matching)} teacher records, not one")
    teacher = matching[0]
    files = sorted(set(teacher.identity.get("teacher_outputs", [])) | {rowtable.shown(path)})
    identity = {"weights_digest": outputs.meta["teacher_weights"], "teacher_outputs": files,
                "dev_from_outputs": scores, "outputs_written_from": outputs.meta["teacher"],
                "identified_by": "the file's dev logits score what this record's row.json "
                "does; the digest is the file's meta's (python bench/teachers.py)"}
    (teacher.folder / IDENTITY).write_text(json.dumps(identity, indent=1) + "\n")
    return teacher.folder / IDENTITY


def main():
    for path in OUTPUTS_FILES:
        print(f"wrote {rowtable.shown(identify(path))}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
