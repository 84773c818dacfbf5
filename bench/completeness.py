"""How IG's completeness error (Eq. 1) falls as m grows, for one fine-tuned model.

    python bench/completeness.py mrpc bench/runs/mrpc/paper/teacher/best --examples 8 \
        --steps 1 8 32 128 512 --json bench/notes/completeness_mrpc_paper.json

Row records carry the error at m = 1 and m = 32 (bench/run.py's completeness_error: sum over
examples and classes of |sum of IG - (F_c(x) - F_c(x'))|, divided by the sum of
|F_c(x) - F_c(x')|). Where it does not fall from m = 1 to 32, this script says whether it falls
further out: IG's Riemann sum converges to the rise for every model (completeness), but a
fine-tuned model whose class probability jumps within a short stretch of the path from the
[PAD] baseline needs many steps to resolve the jump. Per example it also prints the rise
and the sum of IG at each m, and with --path-points N the last class's score F(x' + a (x - x'))
at N evenly spaced a from 0 to 1, the curve the Riemann sum samples. One torch thread, the
first --examples dev examples.

    python bench/completeness.py mrpc bench/runs/mrpc/paper/teacher/best --examples 8 \
        --steps 1 --path-points 101 --json bench/notes/completeness_path_mrpc_paper.json
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

import rowtable
import run


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task")
    p.add_argument("model", help="a fine-tuned checkpoint folder")
    p.add_argument("--examples", type=int, default=8, help="the first N dev examples")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 8, 32, 128, 512])
    p.add_argument("--path-points", type=int, default=0,
                   help="also the score along the IG path at this many points")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    import adkd
    import glue_data
    task = glue_data.get_task(args.task)
    tokenizer = adkd.AutoTokenizer.from_pretrained(args.model)
    model = adkd.load_model(args.model, task, "model").eval()
    dev = glue_data.read_split(rowtable.GLUE, task, task.dev_splits[0])[:args.examples]
    features = glue_data.encode(dev, tokenizer, 128)
    pad = tokenizer.pad_token_id
    inputs = next(run.batches(features, pad, len(features)))
    rows = []
    for steps in args.steps:
        start = time.time()
        sums, rises = run.completeness_sums(model, task, inputs, pad, steps)  # (examples, views)
        error = float((sums - rises).abs().sum() / rises.abs().sum())
        rows.append({"steps": steps, "error": error, "seconds": round(time.time() - start, 1),
                     "ig_sum": sums[:, -1].tolist(), "rise": rises[:, -1].tolist()})
        print(f"m = {steps:4d}: completeness error {error:.3f} ({rows[-1]['seconds']} s); last "
              "class, per example: sum IG " + " ".join(f"{v:+.3f}" for v in rows[-1]["ig_sum"])
              + " | rise " + " ".join(f"{v:+.3f}" for v in rows[-1]["rise"]), flush=True)
    path = path_scores(model, inputs, pad, task.is_regression, args.path_points)
    if args.json:
        shown = rowtable.shown
        record = {"task": args.task, "model": shown(args.model), "examples": len(features),
                  "command": "python bench/completeness.py " + " ".join(map(shown, argv)),
                  "rows": rows, **({"path": path} if path else {})}
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")


def path_scores(model, inputs, pad, is_regression, points):
    """[(a, [last class's score per example])] along IG's straight path from the [PAD]
    baseline x' (a = 0) to the input x (a = 1), at `points` evenly spaced a."""
    import adkd
    embeddings = model.get_input_embeddings()
    with torch.no_grad():
        real = embeddings(inputs["input_ids"])  # (examples, seq, dim)
        base = embeddings.weight[pad].expand_as(real)
        rest = {k: v for k, v in inputs.items() if k != "input_ids"}
        path = []
        for a in torch.linspace(0, 1, points).tolist():
            logits = model(inputs_embeds=base + a * (real - base), **rest).logits
            scores = adkd.class_scores(logits, is_regression)[:, -1].tolist()
            path.append((round(a, 4), scores))
            print(f"a = {a:.3f}: " + " ".join(f"{v:.3f}" for v in scores), flush=True)
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
