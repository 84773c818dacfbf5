"""Why do AD-KD students stay on one class? Reads the rows of a task and prints, per row: dev
accuracy and the share of dev predictions in the majority class per epoch (from the best and
last checkpoints), the attribution gap, the seconds each epoch took, and per epoch the median
over its logged steps of each weighted term's gradient norm (Eq. 12) and of each unweighted
training term (CE, KD, L_attr). With --at-start it also measures, on the first training batches
and at the student's initial weights, each term's gradient norm over all weights, over the
classifier head alone and over the embeddings; it needs the row's teacher weights and initial
student, not the row's own weights, and --json writes those numbers to a file, with the
teacher's path and weights digest. A row whose
weights are not on this disk (a fresh clone, or a row stopped before it finished) gets what its
committed log.jsonl holds, and a line saying what was skipped.

    python bench/diagnose.py rte adkd-s1 adkd-beta1-s1 adkd-beta0.1-s1 vanilla-s1 --at-start
    python bench/diagnose.py mrpc adkd-paper-e7-s1 adkd-e10-s1 --at-start \
        --json bench/notes/at_start_mrpc_paper.json
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import torch  # noqa: E402

import adkd  # noqa: E402
import glue_data  # noqa: E402
import report  # noqa: E402
from rowtable import GLUE, RUNS, from_root, shown, timed_epochs  # noqa: E402


def training_terms(record):
    """The unweighted training terms (ce, kd, attr) of a loss record; None for other records."""
    if "loss" not in record or "epoch" not in record:
        return None
    return {t: record[t] for t in ("ce", "kd", "attr") if t in record}


def loss_terms_by_epoch(log_path):
    """{epoch: {term: median}} of the training terms over each epoch's logged steps, one
    record per step (a resumed run repeats steps)."""
    return report.medians_by_epoch(log_path, training_terms)


def majority_share(model_dir, task, features, tokenizer):
    """Dev accuracy and the share of predictions in the most predicted class."""
    model = adkd.load_model(model_dir, task, "--model").eval()
    logits = adkd.predict_logits(model, features, 64, tokenizer.pad_token_id, "cpu")
    predictions = logits.argmax(axis=-1)
    labels = [f["label"] for f in features]
    accuracy = sum(int(p == y) for p, y in zip(predictions, labels)) / len(labels)
    counts = torch.bincount(torch.tensor(predictions), minlength=task.num_labels)
    return accuracy, counts.max().item() / len(predictions)


AT_START_BATCHES = 5  # --at-start: the median over this many first batches
PATH_SETTINGS = ("student", "teacher")  # the models a row's settings.json names


def on_disk(settings):
    """A row's settings with its model paths (from the repository root in a committed record)
    as paths on this disk."""
    return {key: str(from_root(value)) if key in PATH_SETTINGS and value else value
            for key, value in settings.items()}


def teacher_identity(path):
    """What an --at-start record says of the teacher it measured against: where its weights
    were read and their digest (adkd.weights_digest), which a teacher record's teacher.json
    can be matched with."""
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(path)
    return {"path": shown(path), "weights_digest": adkd.weights_digest(model)}


def at_start(row_dir, task, train_features, tokenizer, batches=AT_START_BATCHES):
    """Per-term gradient norms at the student's initial weights on the first batches of
    epoch 0, as train() would see them: all weights, the classifier head, the embeddings."""
    settings = on_disk(json.loads((row_dir / "student" / "settings.json").read_text()))
    args, _ = adkd.resolve_config(adkd.stage_args(adkd.parse_args(["--task", task.name]),
                                                  **settings))
    config = adkd.adkd_config(args, task, tokenizer.pad_token_id)
    adkd.seed_everything(args.seed)
    student = adkd.load_model(args.student, task)
    teacher = adkd.load_model(args.teacher, task, "--teacher").requires_grad_(False)
    student.train()
    order = torch.randperm(len(train_features),
                           generator=torch.Generator().manual_seed(args.seed)).tolist()
    groups = {"all": lambda n: True, "head": lambda n: n.startswith("classifier"),
              "embeddings": lambda n: ".embeddings." in n}
    norms = {}
    for b in range(batches):
        indices = order[b * args.batch_size:(b + 1) * args.batch_size]
        batch = glue_data.collate([train_features[i] for i in indices], config.pad_token_id)
        loss, terms = adkd.distillation_step(student, teacher, batch, config)
        weights = adkd.term_weights(config.alpha, config.beta, config.use_ce, config.use_kd)
        named = [(n, p) for n, p in student.named_parameters()]
        for term, value in terms.items():
            grads = torch.autograd.grad(weights[term] * value, [p for _, p in named],
                                        retain_graph=True, allow_unused=True)
            for group, keep in groups.items():
                squares = sum(float(g.pow(2).sum()) for (n, _), g in zip(named, grads)
                              if g is not None and keep(n))
                norms.setdefault((group, term), []).append(squares ** 0.5)
    return {key: statistics.median(values) for key, values in norms.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("rows", nargs="+")
    parser.add_argument("--at-start", action="store_true")
    parser.add_argument("--json", help="with --at-start: also write its gradient norms here")
    options = parser.parse_args(argv)
    if options.json and not options.at_start:
        parser.error("--json writes the --at-start norms: add --at-start")
    torch.set_num_threads(1)
    task = glue_data.get_task(options.task)
    from transformers import AutoTokenizer
    folder = glue_data.task_dir(GLUE, task)
    dev_examples = glue_data.read_split(folder, task, "dev")
    train_examples = glue_data.read_split(folder, task, "train")
    at_start_norms = {}  # row name -> {group: {term: median norm}}
    teachers = {}  # row name -> teacher_identity
    for name in options.rows:
        row_dir = RUNS / options.task / name
        log_path = row_dir / "student" / "log.jsonl"
        records = adkd.read_log(log_path)
        settings = on_disk(json.loads((row_dir / "student" / "settings.json").read_text()))
        print(f"\n== {options.task}/{name}: beta={settings['beta']} alpha={settings['alpha']} "
              f"lr={settings['lr']}")
        for record in records:
            if "dev" in record:
                dev_metrics = record["dev"]
                print(f"epoch {record['epoch']:.0f}: dev "
                      + " ".join(f"{k}={v:.4f}" for k, v in dev_metrics.items()))
        print("seconds per epoch, with the dev evaluation: "
              + ", ".join(f"{seconds:.0f}" for seconds, _ in timed_epochs(log_path)))
        weights = row_dir / "student" / "best"
        if weights.exists():
            # the row's own tokenizer: the MiniLM rows' and the paper-shape (MPNet) rows' differ
            tokenizer = AutoTokenizer.from_pretrained(weights)
            dev = glue_data.encode(dev_examples, tokenizer, 128)
            for which in ("best", "last"):
                accuracy, share = majority_share(row_dir / "student" / which, task, dev,
                                                 tokenizer)
                print(f"{which}: dev accuracy {accuracy:.4f}, "
                      f"{share:.1%} of predictions in one class")
        else:
            print(f"{weights} is not on this disk: no majority share")
        losses = loss_terms_by_epoch(log_path)
        for epoch, terms in report.grad_norms_by_epoch(log_path).items():
            print(f"epoch {epoch} median grad norms: "
                  + " ".join(f"{t}={v:.4f}" for t, v in sorted(terms.items()))
                  + " | training terms: "
                  + " ".join(f"{t}={v:.4f}" for t, v in losses.get(epoch, {}).items()))
        if not options.at_start:
            continue
        teacher = Path(settings["teacher"])
        if not (teacher / "config.json").exists():
            print(f"{teacher} is not on this disk: no --at-start")
            continue
        tokenizer = AutoTokenizer.from_pretrained(settings["student"])  # the initial student's
        train = glue_data.encode(train_examples, tokenizer, 128)
        teachers[name] = teacher_identity(teacher)
        norms = at_start_norms.setdefault(name, {})
        for (group, term), value in sorted(at_start(row_dir, task, train, tokenizer).items()):
            print(f"at start, {group}: {term} {value:.4f}")
            norms.setdefault(group, {})[term] = value
    if options.json:
        command = "python bench/diagnose.py " + " ".join(map(shown, argv or sys.argv[1:]))
        record = {"task": options.task, "command": command, "batches": AT_START_BATCHES,
                  "teacher": teachers, "at_start": at_start_norms}
        Path(options.json).write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {options.json}")


if __name__ == "__main__":
    main()
