"""Plan a group of bench rows before queueing them: seconds per epoch of each row type,
measured on the task's real training batches with the row's real models.

    python bench/plan.py mrpc --teacher-model bench/models/all-mpnet-base-v2 \
        --student bench/models/mpnet-l6 --steps 6 --json bench/notes/plan_mrpc_paper.json

Each case times --steps training steps (forward, backward, AdamW; --warmup untimed ones before)
on the first batches of epoch 1 in the order adkd.py draws them (seed 1), in one torch thread,
as bench/run.py trains a row. Cases:
  teacher      fine-tuning the teacher-to-be (its pretrained weights), the public teacher batch
  ft           the student without KD (alpha = beta = 0), Table 5's batch
  vanilla      vanilla KD (beta = 0)
  adkd_fresh   AD-KD, the teacher's maps computed in the step (the first epoch)
  adkd_cached  AD-KD, the teacher's maps from the cache (every later epoch), the same batches
  eval         one evaluation: dev predictions and the dev attribution gap (the student's maps;
               the teacher's are computed once per run), as adkd.py does after every epoch
The teacher's weights here are its pretrained ones with a new classifier: the time of a step does
not depend on what the weights are. An epoch is steps-per-epoch x the median step + one eval.
Run two at once (as the rows run) to see the time with both cores busy.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

import adkd  # noqa: E402
import glue_data  # noqa: E402
import speed  # noqa: E402  (bench/speed.py: timing one step)

GLUE = ROOT.parent / "shared" / "glue"
CASES = ("teacher", "ft", "vanilla", "adkd_fresh", "adkd_cached", "eval")


def first_batches(size, batch_size, count, seed=1):
    """The indices of epoch 1's first `count` batches, drawn as adkd.py's train() draws them."""
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[first:first + batch_size] for first in range(0, count * batch_size, batch_size)]


def timed(step, batch_list, warmup):
    for indices, batch in batch_list[:warmup]:
        step(indices, batch)
    return [speed.timed(lambda: step(indices, batch), "cpu")
            for indices, batch in batch_list[warmup:]]


def measure(options):
    torch.set_num_threads(options.threads)
    task = glue_data.get_task(options.task)
    tokenizer = AutoTokenizer.from_pretrained(options.student)
    pad = tokenizer.pad_token_id
    folder = glue_data.task_dir(str(options.data_dir), task)
    train = glue_data.encode(glue_data.read_split(folder, task, "train"), tokenizer, 128)
    dev = glue_data.encode(glue_data.read_split(folder, task, task.dev_splits[0]), tokenizer, 128)
    paper = adkd.PAPER_STUDENT[task.name]
    teacher_lr, teacher_batch, teacher_epochs = adkd.TEACHER_RECIPE[task.name]
    teacher = adkd.load_model(options.teacher_model, task, "--teacher-model")
    student = adkd.load_model(options.student, task, "--student")
    top_k = adkd.scaled_top_k(task.name, teacher.config.hidden_size)
    count = options.warmup + options.steps
    results = {}

    def collate(indices):
        return glue_data.collate([train[i] for i in indices], pad)

    def run(case, model, batch_size, config=None, frozen=None, cache=None):
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        batch_list = [(i, collate(i)) for i in first_batches(len(train), batch_size, count)]

        def step(indices, batch):
            if config is None:  # plain fine-tuning, as adkd.py's teacher stage
                loss = adkd.gold_loss(model(**{k: v for k, v in batch.items()
                                               if k != "labels"}).logits,
                                      batch["labels"], task.is_regression)
            else:
                teacher_fn = cache.teacher_fn(indices) if cache else adkd.teacher_outputs
                loss, _ = adkd.distillation_step(model, frozen, batch, config, teacher_fn)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        if cache is not None:  # fill the cache with these batches, as the first epoch does
            for indices, batch in batch_list:
                step(indices, batch)
        seconds = timed(step, batch_list, options.warmup)
        steps_per_epoch = math.ceil(len(train) / batch_size)
        results[case] = {"batch": batch_size, "steps_per_epoch": steps_per_epoch,
                         "s_per_step": round(statistics.median(seconds), 3),
                         "s_all": [round(s, 3) for s in seconds]}
        print(f"  {case:<12} batch {batch_size:>2}: {results[case]['s_per_step']:.2f} s/step "
              f"x {steps_per_epoch} steps", flush=True)

    def config(**changes):
        settings = dict(alpha=paper["alpha"], beta=paper["beta"], temperature=paper["temperature"],
                        top_k=top_k, is_regression=task.is_regression, pad_token_id=pad,
                        ig_max_rows=32)
        return adkd.ADKDConfig(**{**settings, **changes})

    teacher_model_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_state = {k: v.clone() for k, v in student.state_dict().items()}
    for case in options.cases:
        student.load_state_dict(student_state)
        if case == "teacher":
            run(case, teacher, teacher_batch)
            teacher.load_state_dict(teacher_model_state)
        elif case == "ft":
            run(case, student, paper["batch_size"], config(alpha=0.0, beta=0.0), teacher)
        elif case == "vanilla":
            run(case, student, paper["batch_size"], config(beta=0.0), teacher.eval())
        elif case in ("adkd_fresh", "adkd_cached"):
            cache = None
            if case == "adkd_cached":
                lengths = [len(f["input_ids"]) for f in train]
                cache = adkd.TeacherCache(lengths, task.num_labels)
            teacher.requires_grad_(False)
            run(case, student, paper["batch_size"], config(), teacher.eval(), cache)
            teacher.requires_grad_(True)
        elif case == "eval":
            start = time.perf_counter()
            dev_sets = {task.dev_splits[0]: dev}
            adkd.evaluate(student, task, dev_sets, 32, pad, "cpu")
            predict_s = time.perf_counter() - start
            adkd.dev_maps(student, dev, config(), 32, teacher=False)
            results[case] = {"dev_examples": len(dev), "predict_s": round(predict_s, 1),
                             "s": round(time.perf_counter() - start, 1)}
            print(f"  eval: {results[case]['s']} s", flush=True)
    return results, teacher_epochs, paper["epochs"]


def plan(results, teacher_epochs, student_epochs):
    """Hours per row type at the given epochs: the first AD-KD epoch fills the cache."""
    def epoch(case):
        return results[case]["s_per_step"] * results[case]["steps_per_epoch"]
    evaluation = results["eval"]["s"]
    hours = {
        "teacher": teacher_epochs * (epoch("teacher") + results["eval"]["predict_s"]),
        "ft": student_epochs * (epoch("ft") + evaluation),
        "vanilla": student_epochs * (epoch("vanilla") + evaluation),
        "adkd": epoch("adkd_fresh") + (student_epochs - 1) * epoch("adkd_cached")
        + student_epochs * evaluation}
    return {row: round(seconds / 3600, 2) for row, seconds in hours.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("--teacher-model", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--data-dir", default=str(GLUE))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--json", default=None)
    options = parser.parse_args(argv)
    options.cases = options.cases.split(",")
    results, teacher_epochs, student_epochs = measure(options)
    report = {"task": options.task, "threads": options.threads, "steps": options.steps,
              "teacher_model": options.teacher_model, "student": options.student,
              "torch": torch.__version__, "cases": results}
    if set(CASES) <= set(results):
        report["hours_per_row"] = plan(results, teacher_epochs, student_epochs)
        report["epochs"] = {"teacher": teacher_epochs, "student": student_epochs}
        print(f"hours per row (teacher {teacher_epochs} epochs, students {student_epochs}): "
              f"{report['hours_per_row']}")
    if options.json:
        Path(options.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
