"""The beta warning's threshold, read off the AD-KD rows on this disk (issue 36).

adkd.py warns when beta*L_attr's gradient norm is more than T times the larger logit term's
(CE's or KD's), the median over the first 10 logged steps (adkd.attr_dominance). This prints,
per AD-KD row whose log.jsonl holds gradient norms: that median R over the first --window
logged steps, and for how many epochs from the first its dev accuracy equalled one class's
share of dev (every answer in one class, barring a coincidence). A row that did so for
--stall-epochs epochs or more stalled; no fine-tuned or vanilla KD row did for 2. Then the
range of T that separates the stalled rows from the others (T above every other row's R, at
or below every stalled row's), or the rows on the wrong side of --threshold when none does.
Then the --beta-remedy fit rows, which warn above T times --attr-ratio: their R, the warnings
their logs record and whether they stalled. bench/report.py pastes both tables into RESULTS.md.

    python bench/beta_threshold.py                    # W = 10 logged steps, as adkd.py
    python bench/beta_threshold.py --window 5         # a shorter window
"""
import argparse
import inspect
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rowtable  # noqa: E402  (puts the repository root on sys.path)

import adkd  # noqa: E402
import glue_data  # noqa: E402


WINDOW = 10  # logged steps: adkd.py's window
STALL_EPOCHS = 2  # epochs in one class from the first that make a row stalled
# adkd.py's T; with --beta-remedy fit it warns above T times --attr-ratio
WARN_RATIO = inspect.signature(adkd.attr_dominance).parameters["threshold"].default


def first_window(records, window):
    """The grad_norm dicts of a log's first `window` logged steps (the last record of a step:
    a resumed run repeats the steps after its checkpoint)."""
    by_step = {r["step"]: r["grad_norm"] for r in records if isinstance(r.get("grad_norm"), dict)}
    return [by_step[step] for step in sorted(by_step)[:window]]


def dev_by_epoch(records):
    """{epoch: dev metrics} of the evaluations at whole epochs (the last one of an epoch)."""
    return {int(r["epoch"]): r["dev"] for r in records
            if "dev" in r and float(r.get("epoch", 0.5)).is_integer()}


def class_shares(task):
    """Each class's share of the task's dev labels (none for a regression task)."""
    spec = glue_data.get_task(task)
    if spec.is_regression:
        return []
    labels = [e.label for e in glue_data.read_split(rowtable.GLUE / spec.folder, spec,
                                                    spec.dev_splits[0])]
    return [labels.count(label) / len(labels) for label in sorted(set(labels))]


def row_reading(log_path, shares, window):
    """(R, epochs answering one class from the first, epochs evaluated) of one row's log; R is
    None when the log holds no L_attr gradient norms."""
    records = adkd.read_log(log_path)
    ratio = adkd.attr_dominance(first_window(records, window), threshold=0.0)
    dev = dev_by_epoch(records)
    return ratio, rowtable.one_class_epochs([dev[e] for e in sorted(dev)], shares), len(dev)


def separation(readings, stall_epochs):
    """(largest R of the rows that did not stall, smallest R of those that did): a T
    separates them when the first < T <= the second."""
    learned = [r for _, r, stalled, _ in readings if stalled < stall_epochs]
    stalled = [r for _, r, stalled, _ in readings if stalled >= stall_epochs]
    return max(learned, default=0.0), min(stalled, default=math.inf)


def warnings_logged(records):
    """The warnings a log records: [(step, R)] (runs from before the warning record none)."""
    return [(r["step"], r["warning"]["attr_dominance"]) for r in records if "warning" in r]


def remedy_table(stall_epochs=STALL_EPOCHS):
    """The --beta-remedy fit rows: R over the first 10 logged steps, the threshold the warning
    used with the remedy on (WARN_RATIO x --attr-ratio), the warnings their logs record, the
    epochs on one class from the first and whether they stalled."""
    lines = ["| row | --attr-ratio | β fitted | R | warns above | warning logged (step: R) | "
             "epochs in one class from the first / evaluated | stalled |", "|---" * 8 + "|"]
    for task in rowtable.TASKS:
        rows = [row for row in rowtable.task_rows(task) if "--beta-remedy" in row.argv
                and (row.stage_dir / "log.jsonl").exists()]
        shares = class_shares(task) if rows else []
        for row in rows:
            records = adkd.read_log(row.stage_dir / "log.jsonl")
            ratio, one_class, epochs = row_reading(row.stage_dir / "log.jsonl", shares,
                                                   WINDOW)
            attr_ratio = float(row.argv[row.argv.index("--attr-ratio") + 1])
            logged = ", ".join(f"{step}: {value:.3g}" for step, value in
                               warnings_logged(records)) or "none"
            fitted = rowtable.trained_beta(row.stage_dir)
            name = row.name + ("" if rowtable.done(row) else " (unfinished)")
            lines.append(f"| {task}/{name} | {attr_ratio:g} | "
                         f"{rowtable.shown_or_dash(fitted)} | {rowtable.shown_or_dash(ratio)} | "
                         f"{WARN_RATIO * attr_ratio:g} | {logged} | {one_class} / {epochs} | "
                         f"{'yes' if one_class >= stall_epochs else 'no'} |")
    return lines


def table(window=WINDOW, threshold=WARN_RATIO, stall_epochs=STALL_EPOCHS):
    """The rows without a remedy as markdown lines, then what separates them (see main)."""
    options = argparse.Namespace(window=window, threshold=threshold, stall_epochs=stall_epochs)
    readings, baselines = [], []
    lines = [f"| row | β | R, median of the first {options.window} logged steps | epochs in one "
             f"class from the first / evaluated | stalled | R > {options.threshold:g} |",
             "|---|---|---|---|---|---|"]
    for task in rowtable.TASKS:
        rows = [row for row in rowtable.task_rows(task) if row.meta.get("key") == "adkd"
                and (row.stage_dir / "log.jsonl").exists()
                and "--beta-remedy" not in row.argv]  # the remedy's rows: bench/beta_remedy.py
        shares = class_shares(task) if rows else []
        for row in rows:
            ratio, one_class, epochs = row_reading(row.stage_dir / "log.jsonl", shares,
                                                   options.window)
            if ratio is None:
                continue
            beta = json.loads((row.stage_dir / "settings.json").read_text())["beta"]
            stalled = one_class >= options.stall_epochs
            readings.append((f"{task}/{row.name}", ratio, one_class, epochs))
            warns = ratio > options.threshold
            lines.append(f"| {task}/{row.name} | {beta:g} | {ratio:.3g} | {one_class} / "
                         f"{epochs} | {'yes' if stalled else 'no'} | "
                         f"{'yes' if warns else 'no'} |")
        for row in rowtable.task_rows(task):  # the baselines: how long do they sit on one class?
            if row.meta.get("key") in ("ft", "vanilla") and (row.stage_dir / "log.jsonl").exists():
                reading = row_reading(row.stage_dir / "log.jsonl", shares or class_shares(task),
                                      options.window)
                if reading[2]:  # an evaluated epoch: a row just started says nothing yet
                    baselines.append((f"{task}/{row.name}", *reading))
    highest_learned, lowest_stalled = separation(readings, options.stall_epochs)
    lines += ["", f"Rows that did not stall: R up to {highest_learned:.3g}; rows that stalled: R "
              f"from {lowest_stalled:.3g}."]
    if highest_learned < lowest_stalled:
        lines[-1] += (f" Every T with {highest_learned:.3g} < T <= {lowest_stalled:.3g} "
                      "separates them.")
    wrong = [name for name, ratio, one_class, _ in readings
             if (ratio > options.threshold) != (one_class >= options.stall_epochs)]
    lines[-1] += f" On the wrong side of T = {options.threshold:g}: {', '.join(wrong) or 'none'}."
    counts = [one_class for _, _, one_class, _ in baselines]
    lines[-1] += (f" Fine-tuned and vanilla KD rows with an evaluated epoch: {len(counts)}; epochs "
                  "in one class from the first: " + ", ".join(f"{n} in {counts.count(n)}"
                                                 for n in sorted(set(counts))) + ".")
    return lines, readings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=int, default=WINDOW, help="logged steps in the window")
    parser.add_argument("--threshold", type=float, default=WARN_RATIO,
                        help="T to check the rows by")
    parser.add_argument("--stall-epochs", type=int, default=STALL_EPOCHS)
    options = parser.parse_args(argv)
    lines, readings = table(options.window, options.threshold, options.stall_epochs)
    print("\n".join(lines))
    print("\n" + "\n".join(remedy_table(options.stall_epochs)))
    return readings


if __name__ == "__main__":
    main()
