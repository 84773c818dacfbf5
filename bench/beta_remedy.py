"""The beta remedy's screen, read off the rows' logs (issue 36; bench/notes/beta_remedy.md).

Table 5's beta = 10 made beta*L_attr's gradient 2.5-180x the logit terms' in our students, and
they answered one class for epochs. Three remedies were run on the committed rows' batches
(seed 1, the full setup): ramp (beta rises linearly from 0 over epoch 1), cap (each step,
beta*L_attr's gradient scaled down to the larger logit term's norm before clipping) and fit
(adkd.py --beta-remedy fit: beta lowered once, before training, so that on the first 10
batches the median of that ratio is --attr-ratio; 1 and 2, the default, were run). ramp and
cap are not in adkd.py; they are the patch bench/notes/beta_remedy_screen.patch. This prints,
per row: the beta it trained with, R (the median ratio over its first 10 logged steps, as the
warning reads it), the epochs it answered one class from the first, dev per epoch, its best
and last epoch.

    python bench/beta_remedy.py
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import beta_threshold  # noqa: E402
import rowtable  # noqa: E402  (puts the repository root on sys.path)

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
]
METRIC = {"rte": "accuracy", "mrpc": "f1"}


def reading(task, folder, shares):
    """One row's line of the table, or None when its log is not on this disk."""
    log = rowtable.RUNS / task / folder / "student" / "log.jsonl"
    if not log.exists():
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


def main():
    print(f"| task | row | remedy | β trained with | R | epochs in one class from the first / "
          "evaluated (of planned) | dev per epoch | best (epoch) | last |")
    print("|---|---|---|---|---|---|---|---|---|")
    shares = {}
    for task, folder, remedy in SCREEN:
        shares.setdefault(task, beta_threshold.class_shares(task))
        row = reading(task, folder, shares[task])
        if row is None:
            print(f"| {task} | {folder} | {remedy} | not on this disk |  |  |  |  |  |")
            continue
        ratio = "—" if row["R"] is None else f"{row['R']:.3g}"
        best = "—" if row["best"] is None else f"{row['best'][0]:.1f} ({row['best'][1]})"
        last = "—" if row["last"] is None else f"{row['last']:.1f}"
        print(f"| {task} | {folder} | {remedy} | {row['beta']:.3g} | {ratio} | "
              f"{row['one_class']} / {row['epochs']} (of {row['planned']}) | "
              f"{' '.join(f'{s:.1f}' for s in row['scores'])} | {best} | {last} |")


if __name__ == "__main__":
    main()
