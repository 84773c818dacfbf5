"""Faithfulness and agreement of the seed-1 rows of one group (adkd.py explain --faithfulness).

    python bench/faithfulness.py mrpc                 # group full: the MiniLM full-length rows
    python bench/faithfulness.py mrpc --group paper   # the 12 x 768 -> 6 x 768 rows

Measures, on every dev example, the teacher and the seed-1 students (fine-tuned, vanilla KD,
AD-KD) of the group: ERASER's comprehensiveness and sufficiency AOPC of each model's own map
(IG of its predicted class, m = 8) beside random token orders', and each student's agreement
with the teacher (same prediction, Spearman of the maps, top-20 % overlap). Writes
bench/faithfulness/<task>_<group>.json, which bench/report.py turns into RESULTS.md's table.
The rows' weights must be on this disk: a clone has their records only, and
`python bench/run.py <task> --rows <names> --retrain` trains them again.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import run

OUT = run.BENCH / "faithfulness"
METHOD_KEYS = ("ft", "vanilla", "adkd")


def group_rows(task, group):
    """The group's teacher and seed-1 student rows, teacher first."""
    rows = [row for row in run.task_rows(task) if group in row.groups]
    teacher = [row for row in rows if row.kind == "teacher"]
    students = [next(row for row in rows if row.seed == 1 and row.meta.get("key") == key)
                for key in METHOD_KEYS]
    return teacher + students


def json_path(task, group):
    return OUT / f"{task}_{group}.json"


def measure(task, group, threads=2, ig_steps=8):
    """Run explain --faithfulness on the group's rows; write and return the JSON record."""
    import torch
    import adkd
    rows = group_rows(task, group)
    absent = [row.name for row in rows if not run.has_weights(row)]
    if absent:
        raise SystemExit(f"error: no weights on this disk for {', '.join(absent)}: "
                         f"python bench/run.py {task} --rows {','.join(absent)} --retrain")
    torch.set_num_threads(threads)
    path = json_path(task, group)
    path.parent.mkdir(exist_ok=True)
    argv = ["--faithfulness", "--task", task, "--data-dir", str(run.GLUE), "--dev", "all",
            "--ig-steps", str(ig_steps), "--json", str(path)]
    for row in rows:
        argv += ["--model", f"{row.name}={row.stage_dir / 'best'}"]
    start = time.time()
    adkd.explain_main(argv)
    record = json.loads(path.read_text())
    record.update(group=group, torch_threads=threads, wall_s=round(time.time() - start, 1),
                  command=f"python bench/faithfulness.py {task} --group {group}",
                  explain_command="python adkd.py explain " + " ".join(map(run.shown, argv)))
    for model in record["models"]:
        model["path"] = run.shown(model["path"])
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=sorted(run.FULL_EPOCHS))
    parser.add_argument("--group", default="full", choices=("full", "paper"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv)
    if args.group == "paper" and args.task not in run.PAPER_EPOCHS:
        parser.error(f"{args.task} has no paper-shape rows")
    measure(args.task, args.group, args.threads)
    print(f"wrote {json_path(args.task, args.group)}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
