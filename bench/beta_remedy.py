"""The beta remedy's screen, read off the rows' logs (issue 36; bench/notes/beta_remedy.md).

Table 5's beta = 10 made beta*L_attr's gradient 2.5-180x the logit terms' in our students, and
they answered one class for epochs. Three remedies were run on the committed rows' batches
(seed 1, the full setup): ramp (beta rises linearly from 0 over epoch 1), cap (each step,
beta*L_attr's gradient scaled down to the larger logit term's norm before clipping) and fit
(adkd.py --beta-remedy fit: beta lowered once, before training, so that on the first 10
batches the median of that ratio is --attr-ratio; 1 and 2, the default, were run). ramp and
cap are not in adkd.py; they are the patch bench/notes/beta_remedy_screen.patch. This prints,
per row: the teacher record it distilled (bench/teachers.py), the beta it trained with, R (the
median ratio over its first 10 logged steps, as the warning reads it), the epochs it answered
one class from the first, dev per epoch, its best and last epoch; then which rows of one
teacher row distilled different records of it. bench/report.py pastes the same table into
RESULTS.md.

    python bench/beta_remedy.py
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import beta_threshold  # noqa: E402
import rowtable  # noqa: E402  (puts the repository root on sys.path)
import teachers  # noqa: E402

import adkd  # noqa: E402

# (task, row folder, remedy): the committed row without a remedy, the candidates, vanilla KD.
SCREEN = [
    ("rte", "adkd-e12-s1", "none"), ("rte", "adkd-e12-ramp-s1", "ramp"),
    ("rte", "adkd-e12-cap-s1", "cap"), ("rte", "adkd-e12-fit-s1", "fit, --attr-ratio 1"),
    ("rte", "adkd-e12-fit-r2-s1", "fit, --attr-ratio 2"),
    ("rte", "vanilla-e12-s1", "vanilla KD"),
    ("mrpc", "adkd-e10-s1", "none"), ("mrpc", "adkd-e10-fit-s1", "fit, --attr-ratio 1"),
    ("mrpc", "adkd-e10-fit-r2-s1", "fit, --attr-ratio 2"),
    ("mrpc", "vanilla-e10-s1", "vanilla KD"),
    ("mrpc", "adkd-paper-e7-s1", "none"),
    ("mrpc", "adkd-paper-e7-fit-s1", "fit, --attr-ratio 1"),
    ("mrpc", "adkd-paper-e7-fit-r2-s1", "fit, --attr-ratio 2"),
    ("mrpc", "adkd-paper-e7-beta1-s1", "β = 1"), ("mrpc", "vanilla-paper-e7-s1", "vanilla KD"),
    ("mrpc", "vanilla-paper-e7-file-s1", "vanilla KD"),  # the fit rows' teacher
]
METRIC = {"rte": "accuracy", "mrpc": "f1"}


def reading(task, folder, shares):
    """One row's line of the table, or None when its log or settings are not on this disk."""
    log = rowtable.RUNS / task / folder / "student" / "log.jsonl"
    if not (log.exists() and (log.parent / "settings.json").exists()):
        return None
    records = adkd.read_log(log)
    settings = json.loads((log.parent / "settings.json").read_text())
    beta = rowtable.trained_beta(log.parent)
    ratio = adkd.attr_dominance(beta_threshold.first_window(records, 10), threshold=0.0)
    dev = beta_threshold.dev_by_epoch(records)
    epochs = sorted(dev)
    one_class = rowtable.one_class_epochs([dev[e] for e in epochs], shares)
    scores = [100 * dev[e][METRIC[task]] for e in epochs]
    best = max(range(len(scores)), key=lambda i: scores[i], default=None)
    return {"beta": beta, "R": ratio, "one_class": one_class, "epochs": len(epochs),
            "planned": settings["epochs"], "scores": scores,
            "best": None if best is None else (scores[best], epochs[best]),
            "last": scores[-1] if scores else None}


def screen_row(task, folder):
    """The Row of a screened folder: the table's, or one made from its settings.json (the
    patch's ramp and cap rows are not in the table); None when its records are absent."""
    named = {row.name: row for row in rowtable.task_rows(task)}.get(folder)
    if named:
        return named
    present = (rowtable.RUNS / task / folder / "student" / "settings.json").exists()
    return rowtable.settings_row(task, folder) if present else None


def shares_or_none(task):
    """Each class's share of dev, or None without the task's data (the column says –)."""
    try:
        return beta_threshold.class_shares(task)
    except OSError:
        return None


def table():
    """The screen's table as markdown lines, and under it the rows whose teacher records
    differ within one teacher row: their differences mix the remedy with the teacher."""
    lines = ["| task | row | teacher | remedy | β trained with | R | epochs in one class from "
             "the first / evaluated (of planned) | dev per epoch | best (epoch) | last |",
             "|---" * 10 + "|"]
    shares, distilled = {}, {}
    for task, folder, remedy in SCREEN:
        if task not in shares:
            shares[task] = shares_or_none(task)
        row = screen_row(task, folder)
        teacher = row and teachers.teacher_of(row, rowtable.task_rows(task))
        name = teacher.name if teacher else "–"
        if teacher:
            owner = teacher.folder.parent if teacher.folder.name == teachers.RETRAIN else \
                teacher.folder
            distilled.setdefault((task, owner), {}).setdefault(teacher, []).append(folder)
        found = row and reading(task, folder, shares[task] or [])
        if not found:
            lines.append(f"| {task} | {folder} | {name} | {remedy} | not on this disk |"
                         + "  |" * 5)
            continue
        ratio = "—" if found["R"] is None else f"{found['R']:.3g}"
        best = "—" if found["best"] is None else f"{found['best'][0]:.1f} ({found['best'][1]})"
        last = "—" if found["last"] is None else f"{found['last']:.1f}"
        one_class = found["one_class"] if shares[task] is not None else "–"
        beta = rowtable.shown_or_dash(found["beta"])
        lines.append(f"| {task} | {folder} | {name} | {remedy} | {beta} | {ratio} | "
                     f"{one_class} / {found['epochs']} (of {found['planned']}) | "
                     f"{' '.join(f'{s:.1f}' for s in found['scores'])} | {best} | {last} |")
    for (task, _), by_record in distilled.items():
        metric = METRIC[task]
        if len(by_record) > 1:
            lines += ["", f"**{task}: rows of one teacher row distilled different records:** "
                      + "; ".join(f"{', '.join(folders)} distilled {t.label(metric)}"
                                  for t, folders in by_record.items())
                      + ". Their differences mix the remedy with the change of teacher."]
        else:
            [(teacher, folders)] = by_record.items()
            lines += ["", f"{task}: {', '.join(folders)} distilled {teacher.label(metric)}."]
    return lines


def main():
    print("\n".join(table()))


if __name__ == "__main__":
    main()
