"""Faithfulness and agreement of the seed-1 rows of one group (adkd.py explain --faithfulness).

    python bench/faithfulness.py mrpc                 # group full: the MiniLM full-length rows
    python bench/faithfulness.py mrpc --group paper   # the 12 x 768 -> 6 x 768 rows
    python bench/faithfulness.py mrpc --group paper_retest  # its retest's best seed-1 student

Measures, on every dev example, the teacher and the seed-1 students (fine-tuned, vanilla KD,
AD-KD) of the group: ERASER's comprehensiveness and sufficiency AOPC of each model's own map
(IG of its predicted class, m = 8) beside random token orders', and each student's agreement
with the teacher (same prediction, Spearman of the maps, top-20 % overlap). Writes
bench/faithfulness/<task>_<group>.json, which bench/report.py turns into RESULTS.md's table.
The rows' weights must be on this disk: a clone has their records only, and
`python bench/run.py <task> --rows <names> --retrain` trains them again. Each model's result is
kept in bench/faithfulness/<task>_<group>.parts/ until the JSON is written, so a run stopped
part-way (the paper group takes hours of one core) continues from the last model it finished.
"""
import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import rowtable

OUT = rowtable.BENCH / "faithfulness"
METHOD_KEYS = ("ft", "vanilla", "adkd")


def group_rows(task, group):
    """The group's teacher and seed-1 student rows, teacher first. paper_retest: the paper
    teacher (the retrained one whose outputs the retest distilled) and the retest's finished
    seed-1 row with the best dev score."""
    every = rowtable.task_rows(task)
    rows = [row for row in every if group in row.groups]
    if group == "paper_retest":
        teacher = [row for row in every if row.name == "teacher-paper"]
        done = [row for row in rows if row.seed == 1 and (row.stage_dir / "done.json").exists()]
        if not done:
            raise SystemExit(f"error: no seed-1 row of {group} has finished: python "
                             f"bench/run.py {task} --rows {group}")
        return teacher + [max(done, key=lambda row: done_record(row)["metric"])]
    teacher = [row for row in rows if row.kind == "teacher"]
    students = [next(row for row in rows if row.seed == 1 and row.meta.get("key") == key)
                for key in METHOD_KEYS]
    return teacher + students


def done_record(row):
    """A finished stage's done.json: its best checkpoint's main dev metric and all of them."""
    return json.loads((row.stage_dir / "done.json").read_text())


def retest_teacher_dev(teacher):
    """The dev scores of the teacher whose outputs the retest distilled (the file's), once the
    weights on this disk are shown to be that teacher's: a clone's paper/teacher/done.json is
    the first teacher's record, and the first teacher's weights taught the committed rows."""
    import adkd
    from transformers import AutoModelForSequenceClassification
    meta = adkd.load_teacher_outputs(rowtable.PAPER_OUTPUTS).meta
    model = AutoModelForSequenceClassification.from_pretrained(teacher.stage_dir / "best")
    if adkd.weights_digest(model) != meta["teacher_weights"]:
        raise SystemExit(f"error: {teacher.stage_dir / 'best'} is not the teacher that wrote "
                         f"{rowtable.shown(rowtable.PAPER_OUTPUTS)}")
    return meta["dev_metrics"]


def json_path(task, group):
    return OUT / f"{task}_{group}.json"


def parts_dir(task, group):
    return OUT / f"{task}_{group}.parts"


def resumable(compute, parts):
    """adkd.faithfulness, each model's result kept in `parts` (named by its explain NAME) and
    reused by a later run with the same weight file, m and examples: the same result, as IG is
    deterministic and the random orders are seeded per model; agreement with the reference
    is recomputed (cheap)."""
    import torch
    import adkd

    def faithfulness(model, features, special_ids, config, *, reference=None, desc, **kwargs):
        part = parts / f"{desc}.pt"
        weights = Path(model.name_or_path) / "model.safetensors"
        key = {"weights": str(weights), "ig_steps": config.ig_steps, "examples": len(features),
               "written": weights.stat().st_mtime_ns if weights.exists() else 0}
        saved = torch.load(part, weights_only=True) if part.exists() else {}
        if saved.get("key") == key:
            result = saved["result"]
        else:
            start = time.time()
            result = compute(model, features, special_ids, config, desc=desc, **kwargs)
            result["summary"]["wall_s"] = time.time() - start  # rounded once, in the total
            parts.mkdir(parents=True, exist_ok=True)
            torch.save({"key": key, "result": result}, part)
        if reference is not None:
            result["summary"].update(adkd.agreement(result, reference, config.is_regression))
        return result
    return faithfulness


def measure(task, group, threads=2, ig_steps=8):
    """Run explain --faithfulness on the group's rows; write and return the JSON record."""
    import torch
    import adkd
    rows = group_rows(task, group)
    absent = [row.name for row in rows if not rowtable.has_weights(row)]
    if absent:
        raise SystemExit(f"error: no weights on this disk for {', '.join(absent)}: "
                         f"python bench/run.py {task} --rows {','.join(absent)} --retrain")
    torch.set_num_threads(threads)
    devs = [done_record(row).get("metrics") for row in rows]
    if group == "paper_retest":
        devs[0] = retest_teacher_dev(rows[0])
    path = json_path(task, group)
    path.parent.mkdir(exist_ok=True)
    argv = ["--faithfulness", "--task", task, "--data-dir", str(rowtable.GLUE), "--dev", "all",
            "--ig-steps", str(ig_steps), "--json", str(path)]
    for row in rows:
        argv += ["--model", f"{row.name}={row.stage_dir / 'best'}"]
    compute, parts = adkd.faithfulness, parts_dir(task, group)
    adkd.faithfulness = resumable(compute, parts)
    try:
        adkd.explain_main(argv)
    finally:
        adkd.faithfulness = compute
    record = json.loads(path.read_text())
    wall_s = sum(model.pop("wall_s", 0) for model in record["models"])
    record.update(group=group, torch_threads=threads, wall_s=round(wall_s, 2),
                  command=f"python bench/faithfulness.py {task} --group {group}",
                  explain_command="python adkd.py explain " + " ".join(map(rowtable.shown, argv)))
    for model, dev in zip(record["models"], devs):  # the dev scores of these very weights
        model["path"], model["dev"] = rowtable.shown(model["path"]), dev
    path.write_text(json.dumps(record, indent=1) + "\n")
    shutil.rmtree(parts, ignore_errors=True)
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=sorted(rowtable.FULL_EPOCHS))
    parser.add_argument("--group", default="full", choices=("full", "paper", "paper_retest"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv)
    if args.group.startswith("paper") and args.task not in rowtable.PAPER_EPOCHS:
        parser.error(f"{args.task} has no paper-shape rows")
    measure(args.task, args.group, args.threads)
    print(f"wrote {json_path(args.task, args.group)}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
