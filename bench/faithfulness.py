"""Faithfulness and agreement of the seed-1 rows of one group (adkd.py explain --faithfulness).

    python bench/faithfulness.py mrpc                 # group full: the MiniLM full-length rows
    python bench/faithfulness.py mrpc --group paper   # the 12 x 768 -> 6 x 768 rows
    python bench/faithfulness.py mrpc --group paper_retest  # its retest's best seed-1 student

Measures, on every dev example, the teacher and the seed-1 students (fine-tuned, vanilla KD,
AD-KD) of the group: ERASER's comprehensiveness and sufficiency AOPC of each model's own map
(IG of its predicted class, m = 8) beside random token orders', and each student's agreement
with the teacher (same prediction, Spearman of the maps, top-20 % overlap). Each model's
per-example values are kept too, and a 95 % bootstrap interval over the dev examples of its
comprehensiveness minus random orders' (and of sufficiency minus random's) says how far one
seed's 408 examples pin that difference down. Writes bench/faithfulness/<task>_<group>.json,
which bench/report.py turns into RESULTS.md's table.
The rows' weights must be on this disk: a clone has their records only, and
`python bench/run.py <task> --rows <names> --retrain` trains them again. Each model's result is
kept in bench/faithfulness/<task>_<group>.parts/ until the JSON is written, so a run stopped
part-way (the paper group takes hours of one core) continues from the last model it finished.
"""
import argparse
import inspect
import json
import shutil
import sys
import time
from pathlib import Path

import rowtable

OUT = rowtable.BENCH / "faithfulness"
METHOD_KEYS = ("ft", "vanilla", "adkd")
MEASURES = ("comprehensiveness", "sufficiency")  # each beside its random orders' ("_random")
BOOTSTRAP_RESAMPLES = 10_000
LEVEL = 0.95
INTERVAL = "_minus_random_95"  # the summary's key: measure + INTERVAL


def bootstrap_interval(values, resamples=BOOTSTRAP_RESAMPLES, seed=0, level=LEVEL):
    """Percentile bootstrap interval of the mean of `values` (one per example), resampling the
    examples with replacement: [low, high]."""
    import numpy as np
    values = np.asarray(values, dtype=float)
    draws = np.random.default_rng(seed).integers(0, len(values), (resamples, len(values)))
    means = values[draws].mean(axis=1)
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]


def per_example_falls(logits, random_orders, is_regression):
    """Each example's AOPCs, {measure: [...], measure_random: [...]}, from the logits calls of
    one adkd.faithfulness run, in order: per chunk the examples', then their erased copies'
    (per example: the map's order, then each random order; per k; removed, then kept). The
    arithmetic is adkd.faithfulness's, before it averages over the examples."""
    import torch
    import adkd
    falls = []
    for chunk, erased in zip(logits[0::2], logits[1::2]):
        scores = adkd.class_scores(torch.from_numpy(chunk), is_regression)
        rows, views = torch.arange(len(chunk)), scores.argmax(-1)
        after = adkd.class_scores(torch.from_numpy(erased), is_regression).view(
            len(chunk), -1, scores.shape[-1])[rows, :, views]
        fall = scores[rows, views][:, None] - after
        falls.append((fall.abs() if is_regression else fall).view(
            len(chunk), 1 + random_orders, -1, 2))
    falls = torch.cat(falls)  # (examples, the map's order + random orders, k, removed / kept)
    found = {}
    for index, measure in enumerate(MEASURES):
        found[measure] = falls[:, 0, :, index].mean(-1).tolist()
        found[f"{measure}_random"] = falls[:, 1:, :, index].mean((1, 2)).tolist()
    return found


def with_per_example(compute):
    """adkd.faithfulness with each example's values kept (result["per_example"]) and, in its
    summary, the bootstrap interval of each measure minus its random orders' (INTERVAL)."""
    import adkd

    def faithfulness(model, features, special_ids, config, **kwargs):
        calls, predict = [], adkd.predict_logits

        def recorded(*args, **more):
            calls.append(predict(*args, **more))
            return calls[-1]
        adkd.predict_logits = recorded
        try:
            result = compute(model, features, special_ids, config, **kwargs)
        finally:
            adkd.predict_logits = predict
        orders = kwargs.get("random_orders")
        if orders is None:
            orders = inspect.signature(adkd.faithfulness).parameters["random_orders"].default
        found = per_example_falls(calls, orders, config.is_regression)
        result["per_example"] = found
        for measure in MEASURES:
            result["summary"][measure + INTERVAL] = bootstrap_interval(
                [a - b for a, b in zip(found[measure], found[f"{measure}_random"])])
        return result
    return faithfulness


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


def resumable(compute, parts, per_example):
    """adkd.faithfulness, each model's result kept in `parts` (named by its explain NAME) and
    reused by a later run with the same weight file, m and examples: the same result, as IG is
    deterministic and the random orders are seeded per model; agreement with the reference
    is recomputed (cheap). Each model's per-example values land in `per_example` (by NAME)."""
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
        per_example[desc] = result.get("per_example")
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
    compute, parts, per_example = adkd.faithfulness, parts_dir(task, group), {}
    adkd.faithfulness = resumable(with_per_example(compute), parts, per_example)
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
        model["per_example"] = per_example.get(model["model"])
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
