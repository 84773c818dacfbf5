"""AD-KD: Attribution-Driven Knowledge Distillation (Wu et al., ACL 2023), in one file.

The student learns the teacher's logits *and* its reasons: for every class c, Integrated
Gradients (IG) attributes the teacher's probability of c to the input tokens, and the student
is trained so that its own attribution map over the tokens matches the teacher's.

    L = (1 - alpha) * CE(student, gold) + alpha * KD(student, teacher; tau) + beta * L_attr   (Eq. 12)

Read top to bottom: hyperparameters -> Integrated Gradients (Eq. 1-2) -> attribution maps
(Eq. 4-7, 9-10) -> losses (Eq. 11-12) -> models and checkpoints -> training loop -> explain -> CLI.
Equations are numbered as in the paper; ../shared/ADKD.md (and the README) restate them.

    python adkd.py --task mrpc --data-dir glue_data      # fine-tune the teacher, then distil
    python adkd.py explain --task mrpc --model runs/mrpc/student/best --text "A sentence." "Its pair."
"""
import argparse
import hashlib
import html
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm
from transformers import (AutoConfig, AutoModelForSequenceClassification, AutoTokenizer,
                          get_linear_schedule_with_warmup)

import glue_data

# ----------------------------------------------------------------------------- hyperparameters
# The paper's Table 5 (lr, batch, alpha, beta, tau, K for a 768-wide teacher) and the epochs and
# temperature annealing of the public code's student scripts.
PAPER_STUDENT = {
    "cola": dict(lr=4e-5, batch_size=32, alpha=0.9, beta=1.0, temperature=1.0, top_k=768, epochs=10, anneal=False),
    "mnli": dict(lr=4e-5, batch_size=64, alpha=0.8, beta=10.0, temperature=3.0, top_k=768, epochs=6, anneal=True),
    "sst2": dict(lr=5e-5, batch_size=32, alpha=0.8, beta=1.0, temperature=2.0, top_k=768, epochs=6, anneal=False),
    "qnli": dict(lr=4e-5, batch_size=32, alpha=0.9, beta=100.0, temperature=3.0, top_k=768, epochs=6, anneal=False),
    "mrpc": dict(lr=3e-5, batch_size=16, alpha=0.9, beta=10.0, temperature=4.0, top_k=768, epochs=10, anneal=True),
    "qqp": dict(lr=4e-5, batch_size=32, alpha=1.0, beta=50.0, temperature=4.0, top_k=734, epochs=8, anneal=True),
    "rte": dict(lr=2e-5, batch_size=16, alpha=0.9, beta=10.0, temperature=2.0, top_k=700, epochs=12, anneal=False),
    "stsb": dict(lr=5e-5, batch_size=16, alpha=0.8, beta=1.0, temperature=3.0, top_k=640, epochs=8, anneal=False),
}
PAPER_TOP_K_WIDTH = 768
# Teacher fine-tuning (lr, batch, epochs) from the public code's teacher scripts; QNLI, QQP and
# MNLI are not among the scripts we read, so they get the standard BERT recipe.
TEACHER_RECIPE = {
    "cola": (2e-5, 8, 5), "sst2": (2e-5, 32, 5), "mrpc": (5e-5, 8, 5), "rte": (5e-5, 16, 4),
    "stsb": (3e-5, 4, 4), "qnli": (2e-5, 32, 3), "qqp": (2e-5, 32, 3), "mnli": (2e-5, 32, 3),
}
# Double backward (the student's L_attr differentiates through its own gradients) needs an
# attention kernel with second derivatives; PyTorch's fused CPU SDPA kernel has none.
ATTENTION = "eager"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="AD-KD: fine-tune a teacher on a GLUE task, then distil it into a student.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", required=True, help="GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte")
    p.add_argument("--data-dir", default="glue_data", help="GLUE root (with MRPC/, ...) or the task folder itself")
    p.add_argument("--output-dir", default=None, help="where checkpoints, logs and predictions go (default runs/<task>)")
    p.add_argument("--teacher", default=None, help="a teacher already fine-tuned on the task; skips the teacher stage")
    p.add_argument("--teacher-model", default="bert-base-uncased", help="pretrained model the teacher stage fine-tunes")
    p.add_argument("--student", default="google/bert_uncased_L-6_H-768_A-12", help="student model (hub name or folder)")
    p.add_argument("--teacher-only", action="store_true", help="fine-tune the teacher into <output-dir>/teacher and stop")
    p.add_argument("--max-length", type=int, default=128, help="maximum tokens per example")
    # Eq. 12 and the maps; None means the task's value from the paper's Table 5.
    p.add_argument("--lr", type=float, default=None, help="student learning rate")
    p.add_argument("--batch-size", type=int, default=None, help="student batch size")
    p.add_argument("--epochs", type=int, default=None, help="student epochs (0: only evaluate/predict --student)")
    p.add_argument("--alpha", type=float, default=None, help="weight of the KD term; 1-alpha weighs CE")
    p.add_argument("--beta", type=float, default=None, help="weight of L_attr (0 = vanilla KD)")
    p.add_argument("--temperature", type=float, default=None, help="KD temperature tau")
    p.add_argument("--anneal-temperature", action=argparse.BooleanOptionalAction, default=None,
                   help="anneal tau linearly to 1 over the epochs (public code's kd_anneal)")
    p.add_argument("--top-k", type=int, default=None, help="K of Eq. 4 (default: the paper's K scaled to the teacher's width)")
    p.add_argument("--ig-steps", type=int, default=1, help="m, Riemann steps of Eq. 2 (the student's)")
    p.add_argument("--teacher-ig-steps", type=int, default=None, help="the teacher's m (default --ig-steps)")
    p.add_argument("--teacher-cache", action=argparse.BooleanOptionalAction, default=True,
                   help="compute the frozen teacher's maps and logits once per example and reuse them")
    p.add_argument("--teacher-cache-path", default=None,
                   help="file of that cache, shareable between runs (default <output-dir>/student/teacher_cache.pt)")
    p.add_argument("--baseline", choices=["pad", "zero"], default="pad", help="IG baseline: [PAD] embeddings (paper) or zeros (public code)")
    p.add_argument("--kd-loss", choices=["soft_ce", "kl"], default="soft_ce", help="soft cross-entropy (public code) or KL * tau^2")
    p.add_argument("--attr-reduction", choices=["entries", "batch"], default="entries",
                   help="L_attr / non-zero teacher entries (public code, Table 5's beta) or / batch (Eq. 11)")
    p.add_argument("--no-ce", action="store_true", help="ablation: drop the CE term")
    p.add_argument("--no-kd", action="store_true", help="ablation: drop the KD term")
    p.add_argument("--ig-max-rows", type=int, default=None,
                   help="interpolated rows per IG forward pass (default: 256 on GPU, 32 on CPU)")
    # The teacher stage (plain fine-tuning, Eq. 12 with alpha = beta = 0).
    p.add_argument("--teacher-lr", type=float, default=None, help="teacher learning rate")
    p.add_argument("--teacher-batch-size", type=int, default=None, help="teacher batch size")
    p.add_argument("--teacher-epochs", type=int, default=None, help="teacher epochs")
    # The loop.
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of steps of linear learning-rate warm-up")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping norm")
    p.add_argument("--max-steps", type=int, default=None, help="stop each stage after this many steps")
    p.add_argument("--eval-every", type=int, default=0, help="also evaluate on dev every N steps (0: each epoch only)")
    p.add_argument("--save-every", type=int, default=0, help="also write the resumable checkpoint every N steps")
    p.add_argument("--log-every", type=int, default=10, help="write a loss record to log.jsonl every N steps")
    p.add_argument("--eval-batch-size", type=int, default=64, help="batch size for dev and test")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output-dir")
    p.add_argument("--predict", action="store_true", help="write GLUE test-set submission files with the best student")
    p.add_argument("--skip-bad-rows", action="store_true", help="skip malformed TSV rows (and report how many)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward passes and IG")
    p.add_argument("--seed", type=int, default=42, help="random seed")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    return p.parse_args(argv)


def fill_task_defaults(args, task):
    """Replace every unset (None) hyperparameter with the paper's value for the task."""
    paper = PAPER_STUDENT[task.name]
    for name in ("lr", "batch_size", "epochs", "alpha", "beta", "temperature"):
        if getattr(args, name) is None:
            setattr(args, name, paper[name])
    if args.teacher_ig_steps is None:
        args.teacher_ig_steps = args.ig_steps
    if args.anneal_temperature is None:
        args.anneal_temperature = paper["anneal"]
    if args.ig_max_rows is None:  # large chunks are memory-bound on CPU (bench/chunk_sweep.py)
        args.ig_max_rows = 256 if str(args.device).startswith("cuda") else 32
    t_lr, t_batch, t_epochs = TEACHER_RECIPE[task.name]
    args.teacher_lr = t_lr if args.teacher_lr is None else args.teacher_lr
    args.teacher_batch_size = t_batch if args.teacher_batch_size is None else args.teacher_batch_size
    args.teacher_epochs = t_epochs if args.teacher_epochs is None else args.teacher_epochs
    return args


def validate_args(args):
    """Refuse impossible flags before anything is loaded."""
    checks = [
        (args.ig_steps >= 1, f"--ig-steps must be >= 1, got {args.ig_steps}"),
        (args.teacher_ig_steps >= 1, f"--teacher-ig-steps must be >= 1, got {args.teacher_ig_steps}"),
        (0.0 <= args.alpha <= 1.0, f"--alpha must lie in [0, 1], got {args.alpha}"),
        (args.beta >= 0.0, f"--beta must be >= 0, got {args.beta}"),
        (args.temperature > 0.0, f"--temperature must be > 0, got {args.temperature}"),
        (args.top_k is None or args.top_k >= 1, f"--top-k must be >= 1, got {args.top_k}"),
        (args.lr > 0 and args.teacher_lr > 0, "--lr and --teacher-lr must be > 0"),
        (args.batch_size >= 1 and args.teacher_batch_size >= 1, "--batch-size and --teacher-batch-size must be >= 1"),
        (args.epochs >= 0 and args.teacher_epochs >= 1, "--epochs must be >= 0 and --teacher-epochs >= 1"),
        (args.max_length >= 8, f"--max-length must be >= 8, got {args.max_length}"),
        (args.ig_max_rows >= 1, f"--ig-max-rows must be >= 1, got {args.ig_max_rows}"),
        (0.0 <= args.warmup < 1.0, f"--warmup must lie in [0, 1), got {args.warmup}"),
        (args.max_steps is None or args.max_steps >= 1, f"--max-steps must be >= 1, got {args.max_steps}"),
        (not (args.teacher_only and args.teacher), "--teacher-only fine-tunes a teacher; drop --teacher"),
        (args.beta > 0 or not (args.no_ce or args.alpha == 1) or not (args.no_kd or args.alpha == 0),
         "--alpha, --beta, --no-ce and --no-kd leave no loss term to train on"),
    ]
    for ok, message in checks:
        if not ok:
            raise SystemExit(f"error: {message}")


# ----------------------------------------------------------------- Integrated Gradients (Eq. 1-2)
def class_scores(logits, is_regression):
    """F_c of Eq. 1: the softmax probability of each class, or the regression output itself."""
    return logits if is_regression else logits.softmax(dim=-1)  # (rows, views)


def integrated_gradients(model, input_ids, attention_mask, token_type_ids=None, *, steps=1, baseline="pad",
                         pad_token_id=0, is_regression=False, create_graph=False, max_rows=256):
    """Eq. 2: Integrated Gradients on the input embeddings by a right Riemann sum (a = k/m, k = 1..m).

    Returns (attributions, logits): attributions for every view (class) at once,
    shape (batch, views, seq, dim), zero on padding; logits (batch, classes) of the a = 1 step,
    which is the plain forward pass on the real input. With create_graph=True the attributions
    stay differentiable in the model's parameters (the student's L_attr needs that).
    """
    embeddings = getattr(model, "module", model).get_input_embeddings()  # .module: under DDP
    inputs = embeddings(input_ids)  # (batch, seq, dim)
    if baseline == "pad":  # the paper: a [PAD] embedding at every position
        base = embeddings.weight[pad_token_id].expand_as(inputs)
    else:  # zero word embeddings (the public code scales the whole embedding output by a)
        base = torch.zeros_like(inputs)
    if not create_graph:
        inputs, base = inputs.detach(), base.detach()
    delta = inputs - base  # (batch, seq, dim)
    batch, seq, _ = inputs.shape
    steps_per_chunk = max(1, max_rows // batch)
    grad_sum, logits = 0.0, None
    for first in range(1, steps + 1, steps_per_chunk):
        alphas = torch.arange(first, min(first + steps_per_chunk, steps + 1), device=inputs.device) / steps
        # inputs - (1 - a) * delta rather than base + a * delta: exact at a = 1, so the last
        # row is bit-for-bit the real input.
        path = inputs - (1 - alphas.to(inputs.dtype)).view(-1, 1, 1, 1) * delta  # (chunk, batch, seq, dim)
        path = path.reshape(-1, seq, inputs.shape[-1])
        if not path.requires_grad:
            path.requires_grad_(True)
        chunk = len(alphas)
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids.repeat(chunk, 1)}
        chunk_logits = model(inputs_embeds=path, attention_mask=attention_mask.repeat(chunk, 1), **extra).logits
        scores = class_scores(chunk_logits, is_regression)  # (chunk * batch, views)
        grads = view_gradients(scores, path, is_regression, create_graph)  # (chunk * batch, views, seq, dim)
        grads = grads.view(chunk, batch, *grads.shape[1:])
        grad_sum = grad_sum + grads.sum(dim=0)
        logits = chunk_logits.view(chunk, batch, -1)[-1]
    if not create_graph:  # the graph behind these logits was freed by the last autograd.grad
        logits = logits.detach()
    mask = attention_mask[:, None, :, None].to(inputs.dtype)
    attributions = delta[:, None] * grad_sum / steps * mask  # (batch, views, seq, dim)
    return attributions, logits


def view_gradients(scores, inputs, is_regression=False, create_graph=False):
    """dF_c/d(inputs) for every view c, from one batched vector-Jacobian product.

    Rows are independent examples, so the gradient of a column's sum gives each row its own
    gradient. Softmax probabilities sum to one, so their gradients sum to zero: the last class's
    gradient is minus the others' sum, and C - 1 products suffice (one for a binary task).
    scores (rows, views), inputs (rows, seq, dim) -> (rows, views, seq, dim)."""
    rows, views = scores.shape
    solved = views if is_regression else views - 1
    one_hots = torch.eye(views, dtype=scores.dtype, device=scores.device)[:solved, None, :].expand(solved, rows, views)
    grads = torch.autograd.grad(scores, inputs, grad_outputs=one_hots, is_grads_batched=True,
                                create_graph=create_graph)[0]  # (solved, rows, seq, dim)
    if not is_regression:
        grads = torch.cat([grads, -grads.sum(dim=0, keepdim=True)])
    return grads.transpose(0, 1)


# ------------------------------------------------------------- attribution maps (Eq. 4-7, 9-10)
def token_attributions(attributions, top_k=None):
    """Eq. 4 / Eq. 6: a token's score is the L2 norm of its |IG| over the top-K dimensions
    (teacher) or over all dimensions (student, top_k=None). (batch, views, seq, dim) -> (batch, views, seq)."""
    magnitudes = attributions.abs()
    if top_k is not None and top_k < magnitudes.shape[-1]:
        magnitudes = magnitudes.topk(top_k, dim=-1).values
    return torch.linalg.vector_norm(magnitudes, dim=-1)


def normalise_maps(maps, attention_mask, eps=1e-12):
    """Eq. 9-10: each view becomes a unit vector over the real tokens; padding stays exactly zero."""
    maps = maps * attention_mask[:, None, :].to(maps.dtype)  # (batch, views, seq)
    return maps / torch.linalg.vector_norm(maps, dim=-1, keepdim=True).clamp_min(eps)


def attribution_maps(attributions, attention_mask, top_k=None):
    """Eq. 4-7 then Eq. 9-10: multi-view, L2-normalised token maps, shape (batch, views, seq)."""
    return normalise_maps(token_attributions(attributions, top_k), attention_mask)


# ---------------------------------------------------------------------- losses (Eq. 11-12)
def attribution_loss(teacher_maps, student_maps, reduction="entries"):
    """Eq. 11: || A~t - A~s ||^2 over all views and tokens; maps are (batch, views, seq).

    reduction="batch": averaged over the batch, as Eq. 11 is written; each example lies in
    [0, 2 * views] because every view is a non-negative unit vector.
    reduction="entries": the public code's scale (its `loss.py`), at which Table 5's beta was
    tuned: per view, the squared error over batch and tokens / that view's non-zero teacher
    entries, summed over the views; a binary task counts one view (its two are identical).
    """
    squared = (teacher_maps.detach() - student_maps).pow(2)  # (batch, views, seq)
    if reduction == "batch":
        return squared.sum() / teacher_maps.shape[0]
    entries = (teacher_maps != 0).sum(dim=(0, 2)).clamp_min(1)  # (views,)
    per_view = squared.sum(dim=(0, 2)) / entries
    # Binary: the public code computes one view; ours are two identical ones.
    return per_view.mean() if per_view.numel() == 2 else per_view.sum()


def kd_loss(student_logits, teacher_logits, temperature, form="soft_ce", is_regression=False):
    """The logit term of Eq. 12. Classification: soft cross-entropy -sum p_t log p_s at
    temperature tau (the public code; same gradient as KL, no tau^2), or KL * tau^2 (Hinton
    et al.) with form="kl". Regression, any form: the public code's MSE between the student's
    and the teacher's outputs, both divided by tau."""
    if is_regression:
        return F.mse_loss(student_logits.squeeze(-1) / temperature,
                          teacher_logits.squeeze(-1) / temperature)
    teacher_probs = (teacher_logits / temperature).softmax(dim=-1)
    student_log_probs = (student_logits / temperature).log_softmax(dim=-1)
    if form == "kl":
        return F.kl_div(student_log_probs, teacher_probs, reduction="batchmean") * temperature ** 2
    return -(teacher_probs * student_log_probs).sum(dim=-1).mean()


def gold_loss(student_logits, labels, is_regression=False):
    """The CE term of Eq. 12 (MSE to the gold score for regression)."""
    if is_regression:
        return F.mse_loss(student_logits.squeeze(-1), labels.to(student_logits.dtype))
    return F.cross_entropy(student_logits, labels)


def adkd_objective(student_logits, labels, teacher_logits=None, teacher_maps=None, student_maps=None, *,
                   alpha, beta, temperature, kd_form="soft_ce", attr_reduction="entries",
                   use_ce=True, use_kd=True, is_regression=False):
    """Eq. 12: (1 - alpha) * CE + alpha * KD + beta * L_attr. Returns (loss, unweighted terms).

    beta = 0 is vanilla KD; alpha = beta = 0 is plain fine-tuning; use_ce / use_kd = False are
    the paper's ablations (the term is dropped, the others keep their weights)."""
    terms = {}
    if use_ce and alpha < 1:
        terms["ce"] = ((1 - alpha), gold_loss(student_logits, labels, is_regression))
    if use_kd and alpha > 0:
        terms["kd"] = (alpha, kd_loss(student_logits, teacher_logits, temperature, kd_form, is_regression))
    if beta > 0:
        terms["attr"] = (beta, attribution_loss(teacher_maps, student_maps, attr_reduction))
    loss = sum(weight * value for weight, value in terms.values())
    return loss, {name: value for name, (_, value) in terms.items()}


def distillation_step(student, teacher, batch, args, task, temperature, pad_token_id, cache=None, indices=None):
    """One batch of Eq. 12: teacher and student IG (when beta > 0), maps, and the objective.
    With a teacher cache, `indices` name the batch's training examples."""
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in batch}
    ig = dict(baseline=args.baseline, pad_token_id=pad_token_id, is_regression=task.is_regression,
              max_rows=args.ig_max_rows)
    teacher_logits = teacher_maps = student_maps = None
    if args.beta > 0:
        cached = cache_lookup(cache, indices, inputs["input_ids"].shape[1]) if cache is not None else None
        if cached is not None:
            teacher_maps, teacher_logits = (t.to(inputs["input_ids"].device) for t in cached)
        else:
            teacher_attr, teacher_logits = integrated_gradients(teacher, **inputs, steps=args.teacher_ig_steps, **ig)
            teacher_maps = attribution_maps(teacher_attr, inputs["attention_mask"], args.top_k)
            if cache is not None:
                cache_store(cache, indices, teacher_maps, teacher_logits)
        # The a = 1 step of the student's IG is its ordinary forward pass: CE and KD reuse it.
        student_attr, student_logits = integrated_gradients(student, **inputs, steps=args.ig_steps,
                                                            create_graph=True, **ig)
        student_maps = attribution_maps(student_attr, inputs["attention_mask"], None)
    else:
        student_logits = student(**inputs).logits
        if teacher is not None and args.alpha > 0 and not args.no_kd:
            with torch.no_grad():
                teacher_logits = teacher(**inputs).logits
    return adkd_objective(student_logits, batch["labels"], teacher_logits, teacher_maps, student_maps,
                          alpha=args.alpha, beta=args.beta, temperature=temperature, kd_form=args.kd_loss,
                          attr_reduction=args.attr_reduction, use_ce=not args.no_ce, use_kd=not args.no_kd,
                          is_regression=task.is_regression)


def annealed_temperature(start, epoch, epochs):
    """The public code's kd_anneal: tau falls linearly from its start value to 1 at the last epoch."""
    if epochs <= 1:
        return start
    return start + (1.0 - start) * epoch / (epochs - 1)


# ----------------------------------------------------------------------- the teacher cache
# The teacher is frozen and runs without dropout, so its maps and logits for a training example
# never change: compute them in the first epoch, reuse them in every later one. Examples are
# stored ragged (each at its own length) in one flat tensor, so the cache costs
# views x real tokens floats per example whatever the batch padding.
def new_teacher_cache(key, lengths, views, classes):
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.long)
    offsets[1:] = torch.tensor(lengths, dtype=torch.long).cumsum(0)
    return {"key": key, "offsets": offsets,
            "maps": torch.zeros(views, int(offsets[-1])),  # (views, total tokens)
            "logits": torch.zeros(len(lengths), classes),  # (examples, classes)
            "filled": torch.zeros(len(lengths), dtype=torch.bool)}


def cache_lookup(cache, indices, seq):
    """(maps (batch, views, seq), logits (batch, classes)) for examples already cached, else None."""
    if not bool(cache["filled"][indices].all()):
        return None
    offsets = cache["offsets"]
    maps = torch.zeros(len(indices), cache["maps"].shape[0], seq)
    for row, index in enumerate(indices):
        start, end = int(offsets[index]), int(offsets[index + 1])
        maps[row, :, :end - start] = cache["maps"][:, start:end]
    return maps, cache["logits"][indices]


def cache_store(cache, indices, maps, logits):
    offsets = cache["offsets"]
    for row, index in enumerate(indices):
        start, end = int(offsets[index]), int(offsets[index + 1])
        cache["maps"][:, start:end] = maps[row, :, :end - start].float().cpu()
    cache["logits"][indices] = logits.float().cpu()
    cache["filled"][indices] = True


def weights_digest(model):
    """sha256 of a model's named weights and buffers."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def teacher_cache_key(teacher, features, args):
    """A digest of everything a teacher map depends on: weights, token ids and IG settings."""
    digest = hashlib.sha256(weights_digest(teacher).encode())
    for feature in features:
        digest.update(np.asarray(feature["input_ids"], dtype=np.int64).tobytes())
        digest.update(np.asarray(feature.get("token_type_ids", []), dtype=np.int64).tobytes())
    settings = {"m": args.teacher_ig_steps, "top_k": args.top_k, "baseline": args.baseline,
                "max_length": args.max_length}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def open_teacher_cache(path, teacher, features, args, task):
    """The cache saved at `path` if it was made for this teacher, data and settings, else a new one."""
    key = teacher_cache_key(teacher, features, args)
    if Path(path).exists():
        cache = torch.load(path, weights_only=False)
        if cache["key"] == key:
            say(f"teacher cache {path}: {int(cache['filled'].sum())}/{len(features)} examples")
            return cache
        say(f"teacher cache {path} was made for another teacher, data or IG setting: rebuilding it")
    # One view per class (one for regression), and as many logits.
    return new_teacher_cache(key, [len(f["input_ids"]) for f in features], task.num_labels, task.num_labels)


def save_teacher_cache(cache, path):
    temporary = Path(str(path) + ".tmp")
    torch.save(cache, temporary)
    os.replace(temporary, path)


# -------------------------------------------------------------------- models and checkpoints
def load_model(name_or_path, task):
    """A sequence classifier for the task, with double-backward-capable attention.
    A checkpoint already fine-tuned for another label count is refused."""
    config = AutoConfig.from_pretrained(name_or_path)
    fine_tuned = any(arch.endswith("ForSequenceClassification") for arch in (config.architectures or []))
    if fine_tuned and config.num_labels != task.num_labels:
        raise SystemExit(f"error: {name_or_path} classifies {config.num_labels} labels, "
                         f"task {task.name} has {task.num_labels}")
    labels = task.labels or ("score",)
    return AutoModelForSequenceClassification.from_pretrained(
        name_or_path, num_labels=task.num_labels, attn_implementation=ATTENTION,
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
        problem_type="regression" if task.is_regression else "single_label_classification")


def check_same_tokenizer(teacher_tokenizer, student_tokenizer):
    """Token maps are compared position by position, so both models must tokenize identically."""
    teacher_vocab, student_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if teacher_vocab != student_vocab:
        raise SystemExit(f"error: teacher and student vocabularies differ ({len(teacher_vocab)} vs "
                         f"{len(student_vocab)} tokens); AD-KD compares per-token maps and needs one tokenizer")
    # Capitalised vocabulary words and accents expose casing and normalisation differences.
    words = sorted(token for token in teacher_vocab if token.isalpha())[:50]
    probe = "AD-KD compares Token MAPS, doesn't it? Überprüfung 123. " + " ".join(w.capitalize() for w in words)
    if teacher_tokenizer(probe)["input_ids"] != student_tokenizer(probe)["input_ids"]:
        raise SystemExit("error: teacher and student tokenizers split text differently (casing or "
                         "normalisation); AD-KD compares per-token maps and needs one tokenizer")


def save_model_atomically(model, tokenizer, directory, trainer_state=None):
    """Write a save_pretrained folder (plus trainer state) next to its target, then rename it in
    place, so an interruption never leaves a half-written checkpoint where a good one was."""
    directory = Path(directory)
    temporary, previous = directory.with_name(directory.name + ".tmp"), directory.with_name(directory.name + ".old")
    shutil.rmtree(temporary, ignore_errors=True)
    model.save_pretrained(temporary)
    tokenizer.save_pretrained(temporary)
    if trainer_state is not None:
        torch.save(trainer_state, temporary / "trainer_state.pt")
    if directory.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(directory, previous)
    os.replace(temporary, directory)
    shutil.rmtree(previous, ignore_errors=True)


def find_checkpoint(directory):
    """The checkpoint at `directory`, or the copy a crash mid-rename left beside it."""
    directory = Path(directory)
    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if (candidate / "trainer_state.pt").exists():
            return candidate
    return None


def rng_state():
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------- distributed training
# Under `torchrun --nproc_per_node N adkd.py ...` every process trains a DistributedDataParallel
# copy of the student on its slice of each global batch (--batch-size stays the global batch);
# evaluation is sharded and gathered; only rank 0 writes files.
def init_distributed(args):
    """Join the process group torchrun set up (gloo on CPU, nccl on GPU); a no-op otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 or dist.is_initialized():
        return
    if args.device.startswith("cuda"):
        args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(args.device)
    dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")


def world():
    """(rank, world size); (0, 1) outside torchrun."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def barrier():
    if world()[1] > 1:
        dist.barrier()


def gather_objects(obj):
    """A list of every rank's `obj`, on every rank."""
    if world()[1] == 1:
        return [obj]
    gathered = [None] * world()[1]
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_sum(tensor, device):
    """Sum a CPU tensor over ranks (nccl needs it on the GPU for the trip)."""
    if world()[1] == 1:
        return tensor
    on_device = tensor.to(device)
    dist.all_reduce(on_device)
    return on_device.to(tensor.device)


def merge_teacher_cache(cache, device):
    """Each rank filled the cache for its own examples; afterwards every rank holds all of them."""
    if world()[1] == 1:
        return
    lengths = cache["offsets"][1:] - cache["offsets"][:-1]
    filled = cache["filled"].float()
    token_filled = filled.repeat_interleave(lengths)  # (total tokens,)
    filled_total = all_reduce_sum(filled, device)
    cache["maps"] = all_reduce_sum(cache["maps"] * token_filled, device) / \
        all_reduce_sum(token_filled, device).clamp_min(1)
    cache["logits"] = all_reduce_sum(cache["logits"] * filled[:, None], device) / filled_total.clamp_min(1)[:, None]
    cache["filled"] = filled_total > 0


# ------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def predict_logits(model, features, batch_size, pad_token_id, device):
    """Logits for a list of encoded examples, in order, (examples, classes); sharded over ranks."""
    rank, size = world()
    shard = list(range(rank, len(features), size))
    was_training = model.training
    model.eval()
    outputs = [torch.zeros(0, model.config.num_labels)]
    for start in range(0, len(shard), batch_size):
        batch = glue_data.collate([features[i] for i in shard[start:start + batch_size]], pad_token_id)
        batch.pop("labels", None)
        outputs.append(model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu())
    model.train(was_training)
    logits = np.zeros((len(features), model.config.num_labels), dtype=np.float32)
    for indices, shard_logits in gather_objects((shard, torch.cat(outputs).numpy())):
        logits[indices] = shard_logits
    return logits


def predictions_from_logits(logits, task):
    return logits[:, 0] if task.is_regression else logits.argmax(axis=-1)


def evaluate(model, task, dev_sets, batch_size, pad_token_id, device):
    """GLUE metrics on every dev split; the first split's are unprefixed (MNLI: matched first)."""
    metrics = {}
    for index, (split, features) in enumerate(dev_sets.items()):
        logits = predict_logits(model, features, batch_size, pad_token_id, device)
        labels = np.array([f["label"] for f in features])
        for name, value in glue_data.compute_metrics(task, predictions_from_logits(logits, task), labels).items():
            metrics[name if index == 0 else f"{split}/{name}"] = value
    return metrics


def write_predictions(model, task, data_dir, tokenizer, args, output_dir):
    """GLUE submission files, `index<TAB>prediction`, one per test split (MNLI-m and MNLI-mm)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for split, stem in zip(task.test_splits, task.submission_names):
        examples = glue_data.read_split(data_dir, task, split, skip_bad_rows=args.skip_bad_rows)
        features = glue_data.encode(examples, tokenizer, args.max_length)
        logits = predict_logits(model, features, args.eval_batch_size, tokenizer.pad_token_id, args.device)
        predictions = predictions_from_logits(logits, task)
        path = output_dir / f"{stem}.tsv"
        if world()[0] == 0:
            with open(path, "w") as f:
                f.write("index\tprediction\n")
                for example, prediction in zip(examples, predictions):
                    value = f"{float(prediction):.3f}" if task.is_regression else task.labels[int(prediction)]
                    f.write(f"{example.guid}\t{value}\n")
        written.append(path)
    return written


# ------------------------------------------------------------------------------ training loop
def make_optimizer(student, args, total_steps):
    """AdamW (no weight decay on biases and LayerNorm) with linear warm-up and decay."""
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [{"params": [p for n, p in student.named_parameters() if not n.endswith(no_decay)],
               "weight_decay": args.weight_decay},
              {"params": [p for n, p in student.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.lr)
    return optimizer, get_linear_schedule_with_warmup(optimizer, int(args.warmup * total_steps), total_steps)


def check_finite(terms, step, last_dir, device):
    """Stop before the update when a loss term is NaN or infinite, on every rank at once."""
    finite = torch.tensor([float(torch.isfinite(value)) for value in terms.values()])
    finite = all_reduce_sum(finite, device) == world()[1]
    for (name, value), ok in zip(terms.items(), finite):
        if not ok:
            raise FloatingPointError(
                f"step {step}: loss term '{name}' is {value.item()}; stopped before the update, "
                f"the last good checkpoint is {last_dir if last_dir.exists() else 'not written yet'}")


def train(student, tokenizer, task, train_features, dev_sets, output_dir, args, teacher=None):
    """Train `student` on Eq. 12 and keep the best dev checkpoint in output_dir/best.

    With teacher=None and alpha = beta = 0 this is plain fine-tuning (the teacher stage).
    output_dir/last holds everything --resume needs: weights, optimizer, scheduler, RNG, step.
    Returns the best dev metrics."""
    output_dir, (rank, world_size) = Path(output_dir), world()
    device, pad_token_id = args.device, tokenizer.pad_token_id
    student.to(device).train()
    if teacher is not None:
        teacher.to(device).eval().requires_grad_(False)  # frozen: no dropout, no parameter grads
    if not train_features:
        raise SystemExit("error: no training examples")
    steps_per_epoch = math.ceil(len(train_features) / args.batch_size)
    total_steps = min(steps_per_epoch * args.epochs, args.max_steps or math.inf)
    optimizer, scheduler = make_optimizer(student, args, total_steps)
    step, best = 0, {"metric": -math.inf, "metrics": None, "step": 0}
    last_dir, best_dir, log_path = output_dir / "last", output_dir / "best", output_dir / "log.jsonl"

    checkpoint = find_checkpoint(last_dir) if args.resume else None
    if checkpoint is not None:
        state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
        reloaded = AutoModelForSequenceClassification.from_pretrained(checkpoint, attn_implementation=ATTENTION)
        student.load_state_dict(reloaded.state_dict())
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, best = state["step"], state["best"]
        set_rng_state(state["rng"][rank])
        if rank == 0:
            keep_log_until(log_path, step)  # records of steps after the checkpoint are redone
            print(f"resumed {output_dir} at step {step}")
    elif last_dir.exists() or log_path.exists():
        raise SystemExit(f"error: {output_dir} already holds a run; pass --resume to continue it "
                         "or choose another --output-dir")
    barrier()  # every rank has looked before rank 0 writes
    if rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
    cache = None
    if teacher is not None and args.beta > 0 and args.teacher_cache:
        cache_path = Path(args.teacher_cache_path or output_dir / "teacher_cache.pt")
        cache = open_teacher_cache(cache_path, teacher, train_features, args, task)
        cache_saved = int(cache["filled"].sum())
    model = student if world_size == 1 else DistributedDataParallel(student)

    def checkpoint_now(with_eval):
        nonlocal best, cache_saved
        if cache is not None:
            merge_teacher_cache(cache, device)
            if rank == 0 and int(cache["filled"].sum()) > cache_saved:
                save_teacher_cache(cache, cache_path)
            cache_saved = int(cache["filled"].sum())
        rng_states = gather_objects(rng_state())
        if with_eval:
            metrics = evaluate(student, task, dev_sets, args.eval_batch_size, pad_token_id, device)
            improved = metrics[task.main_metric] > best["metric"]
            if improved:
                best = {"metric": metrics[task.main_metric], "metrics": metrics, "step": step}
            if rank == 0:
                if improved:
                    save_model_atomically(student, tokenizer, best_dir)
                write_log(log_path, {"step": step, "epoch": step / steps_per_epoch, "dev": metrics, "best": improved,
                                     "time": time.time()})
                tqdm.write(f"step {step}: dev {format_metrics(metrics)}{'  (best)' if improved else ''}")
        if rank == 0:
            trainer_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                             "step": step, "best": best, "rng": rng_states}
            save_model_atomically(student, tokenizer, last_dir, trainer_state)
        barrier()

    if rank == 0:  # marks each (re)start in the log: epoch wall times are read from it
        write_log(log_path, {"step": step, "started": time.time()})
    progress = tqdm(total=total_steps, initial=step, desc=output_dir.name, dynamic_ncols=True, disable=rank != 0)
    while step < total_steps:
        epoch, batch_in_epoch = divmod(step, steps_per_epoch)
        # The order of an epoch depends on (seed, epoch) alone, so a resumed run sees the same batches.
        order = torch.randperm(len(train_features), generator=torch.Generator().manual_seed(args.seed + epoch)).tolist()
        temperature = (annealed_temperature(args.temperature, epoch, args.epochs)
                       if args.anneal_temperature else args.temperature)
        for first in range(batch_in_epoch * args.batch_size, len(order), args.batch_size):
            indices = order[first:first + args.batch_size][rank::world_size]  # this rank's slice
            batch = glue_data.collate([train_features[i] for i in indices], pad_token_id)
            batch = {key: value.to(device) for key, value in batch.items()}
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=args.bf16):
                loss, terms = distillation_step(model, teacher, batch, args, task, temperature, pad_token_id,
                                                cache, indices)
            check_finite(terms, step + 1, last_dir, device)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            progress.update(1)
            if rank == 0 and (step % args.log_every == 0 or step == total_steps):
                record = {"step": step, "epoch": step / steps_per_epoch, "lr": scheduler.get_last_lr()[0],
                          "temperature": temperature, "loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
                write_log(log_path, record)
                progress.set_postfix(loss=f"{loss.item():.4f}")
            end_of_epoch = step % steps_per_epoch == 0 or step == total_steps
            evaluate_now = end_of_epoch or (args.eval_every and step % args.eval_every == 0)
            if evaluate_now or (args.save_every and step % args.save_every == 0):
                checkpoint_now(with_eval=evaluate_now)
            if step == total_steps:
                break
    progress.close()
    if world_size > 1:  # DDP keeps replicas equal; check it rather than trust it
        digests = gather_objects(weights_digest(student))
        if len(set(digests)) > 1:
            raise RuntimeError(f"ranks ended with different weights: {digests}")
        if rank == 0:
            write_log(log_path, {"step": step, "ranks": world_size, "weights_sha256": digests[0]})
    return best


def write_log(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def keep_log_until(path, step):
    if Path(path).exists():
        kept = [line for line in Path(path).read_text().splitlines() if json.loads(line)["step"] <= step]
        Path(path).write_text("".join(line + "\n" for line in kept))


def format_metrics(metrics):
    return " ".join(f"{name}={value:.4f}" for name, value in metrics.items())


# ---------------------------------------------------------------- explain: maps of a checkpoint
def explain(model, tokenizer, text_a, text_b=None, *, is_regression=False, steps=32, baseline="pad"):
    """A model's attribution map per class (Eq. 6 over all dims, Eq. 9 norm) for one example.
    Returns (tokens, maps (views, seq), class scores (views,)): what AD-KD compares, per token."""
    encoded = tokenizer(text_a, text_b, truncation="longest_first",
                        max_length=model.config.max_position_embeddings, return_tensors="pt")
    inputs = {key: encoded[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in encoded}
    attributions, logits = integrated_gradients(model.eval(), **inputs, steps=steps, baseline=baseline,
                                                pad_token_id=tokenizer.pad_token_id, is_regression=is_regression)
    maps = attribution_maps(attributions, inputs["attention_mask"])[0]  # (views, seq)
    tokens = tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
    return tokens, maps.detach(), class_scores(logits, is_regression)[0].detach()


def shown_views(maps, scores, class_names):
    """(view, label) pairs worth showing: a binary task's two maps are equal, so one stands for both."""
    labels = [f"{name} ({float(score):.2f})" for name, score in zip(class_names, scores)]
    if len(maps) == 2 and torch.allclose(maps[0], maps[1], atol=1e-6):
        return [(1, f"either class; p({class_names[1]}) = {float(scores[1]):.2f}")]
    return list(enumerate(labels))


def explanation_html(examples, class_names):
    """A self-contained page: per example, one row of shaded tokens per model and class.
    examples: [(title, [(model name, tokens, maps, scores), ...]), ...]."""
    def shade(tokens, values):
        top = float(values.max()) or 1.0
        return " ".join(f'<span style="background:rgba(214,39,40,{float(v) / top:.2f})" title="{float(v):.3f}">'
                        f"{html.escape(t)}</span>" for t, v in zip(tokens, values))
    body = []
    for title, rows in examples:
        body.append(f"<h3>{html.escape(title)}</h3><table>")
        for name, tokens, maps, scores in rows:
            for view, label in shown_views(maps, scores, class_names):
                body.append(f"<tr><td><b>{html.escape(name)}</b></td><td>{html.escape(label)}</td>"
                            f"<td>{shade(tokens, maps[view])}</td></tr>")
        body.append("</table>")
    return ("<!doctype html><meta charset='utf-8'><title>AD-KD attribution maps</title><style>body{font-family:"
            "sans-serif}td{padding:3px 8px;vertical-align:top}span{padding:0 1px}</style>"
            "<p>Token shade: the class's attribution map (IG, Eq. 6 over all dimensions, L2-normalised), "
            "relative to its largest token (hover for the value), with the model's probability for the class. "
            "A binary task's two maps are identical, so one row stands for both.</p>"
            + "\n".join(body))


def explain_main(argv):
    p = argparse.ArgumentParser(prog="adkd.py explain", description="print (and draw) the per-class token "
                                "attribution maps of one or more checkpoints")
    p.add_argument("--task", required=True, help="GLUE task the checkpoints were trained on")
    p.add_argument("--model", action="append", required=True, metavar="[NAME=]PATH", help="a checkpoint (repeatable)")
    p.add_argument("--text", action="append", nargs="+", default=[], metavar="SENTENCE",
                   help="one sentence, or two for a pair task (repeatable)")
    p.add_argument("--dev", type=int, nargs="+", default=[], metavar="ROW", help="dev examples by 0-based row")
    p.add_argument("--data-dir", default="glue_data", help="GLUE root, for --dev")
    p.add_argument("--ig-steps", type=int, default=32, help="m of Eq. 2")
    p.add_argument("--html", default=None, help="also write the maps to this HTML file")
    args = p.parse_args(argv)
    task = glue_data.get_task(args.task)
    examples = [(text[0], text[1] if len(text) > 1 else None, None) for text in args.text]
    if args.dev:
        dev = glue_data.read_split(glue_data.task_dir(args.data_dir, task), task, task.dev_splits[0])
        bad = [row for row in args.dev if not 0 <= row < len(dev)]
        if bad:
            raise SystemExit(f"error: --dev {bad[0]}: the {task.name} dev set has rows 0..{len(dev) - 1}")
        examples += [(dev[row].text_a, dev[row].text_b, dev[row].label) for row in args.dev]
    if not examples:
        raise SystemExit("error: give --text or --dev")
    models = [(spec.split("=", 1) if "=" in spec else (spec, spec)) for spec in args.model]
    loaded = [(name, AutoTokenizer.from_pretrained(path), load_model(path, task)) for name, path in models]
    class_names = ["score"] if task.is_regression else list(task.labels)
    pages = []
    for text_a, text_b, label in examples:
        title = text_a + (f"  ||  {text_b}" if text_b else "") + (f"  (gold: {label})" if label is not None else "")
        print(f"\n== {title}")
        rows = []
        for name, tokenizer, model in loaded:
            tokens, maps, scores = explain(model, tokenizer, text_a, text_b, is_regression=task.is_regression,
                                           steps=args.ig_steps)
            rows.append((name, tokens, maps, scores))
            for view, view_label in shown_views(maps, scores, class_names):
                print(f"{name} [{view_label}] " + " ".join(f"{t}:{float(v):.2f}" for t, v in zip(tokens, maps[view])))
        pages.append((title, rows))
    if args.html:
        Path(args.html).write_text(explanation_html(pages, class_names))
        print(f"wrote {args.html}")
    return pages


# ------------------------------------------------------------------------------------- the CLI
def stage_args(args, **overrides):
    """A copy of the arguments with one stage's hyperparameters."""
    return argparse.Namespace(**{**vars(args), **overrides})


def say(*message):
    if world()[0] == 0:
        print(*message, flush=True)


def main(argv=None):
    if argv and argv[0] == "explain":
        return explain_main(argv[1:])
    args = parse_args(argv)
    try:
        task = glue_data.get_task(args.task)
    except ValueError as error:
        raise SystemExit(f"error: --task: {error}")
    fill_task_defaults(args, task)
    validate_args(args)
    output_dir = Path(args.output_dir or Path("runs") / task.name)

    tokenizer = AutoTokenizer.from_pretrained(args.student)
    training = args.epochs > 0 or args.teacher_only
    if training:
        teacher_source = args.teacher or args.teacher_model
        width = AutoConfig.from_pretrained(teacher_source).hidden_size
        if args.top_k is None:  # the paper's K is for a 768-wide teacher: keep the same fraction
            args.top_k = max(1, round(PAPER_STUDENT[task.name]["top_k"] * width / PAPER_TOP_K_WIDTH))
        if args.top_k > width:
            raise SystemExit(f"error: --top-k {args.top_k} exceeds the teacher's embedding width {width}")
        check_same_tokenizer(AutoTokenizer.from_pretrained(teacher_source), tokenizer)
    try:
        data_dir = glue_data.task_dir(args.data_dir, task)
        dev_sets = {split: glue_data.encode(read_rows(data_dir, task, split, args), tokenizer, args.max_length)
                    for split in task.dev_splits}
        train_features = (glue_data.encode(read_rows(data_dir, task, "train", args), tokenizer, args.max_length)
                          if training else [])
    except (FileNotFoundError, glue_data.GlueFormatError) as error:
        raise SystemExit(f"error: {error}")
    init_distributed(args)

    if training and args.teacher is None:
        teacher_dir = output_dir / "teacher"
        if not (teacher_dir / "done.json").exists():
            say(f"== fine-tuning the teacher {args.teacher_model} on {task.name}")
            seed_everything(args.seed)
            teacher_args = stage_args(args, lr=args.teacher_lr, batch_size=args.teacher_batch_size,
                                      epochs=args.teacher_epochs, alpha=0.0, beta=0.0, no_ce=False,
                                      anneal_temperature=False)
            best = train(load_model(args.teacher_model, task), tokenizer, task, train_features, dev_sets,
                         teacher_dir, teacher_args)
            if world()[0] == 0:
                (teacher_dir / "done.json").write_text(json.dumps(best, indent=1))
            barrier()
        args.teacher = str(teacher_dir / "best")
        if args.teacher_only:
            return json.loads((teacher_dir / "done.json").read_text())["metrics"]

    seed_everything(args.seed)
    student = load_model(args.student, task)
    if args.epochs > 0:
        teacher = load_model(args.teacher, task)
        teacher_metrics = evaluate(teacher.to(args.device), task, dev_sets, args.eval_batch_size,
                                   tokenizer.pad_token_id, args.device)
        say(f"teacher {args.teacher}: dev {format_metrics(teacher_metrics)}")
        say(f"== distilling into {args.student}: alpha={args.alpha} beta={args.beta} tau={args.temperature} "
            f"K={args.top_k} m={args.ig_steps} (teacher m={args.teacher_ig_steps})")
        seed_everything(args.seed)
        best = train(student, tokenizer, task, train_features, dev_sets, output_dir / "student", args, teacher)
        if world()[0] == 0:
            (output_dir / "student" / "done.json").write_text(json.dumps(best, indent=1))
        barrier()
        student = AutoModelForSequenceClassification.from_pretrained(output_dir / "student" / "best").to(args.device)
    metrics = evaluate(student.to(args.device), task, dev_sets, args.eval_batch_size, tokenizer.pad_token_id, args.device)
    say(f"student: dev {format_metrics(metrics)}")
    if args.predict:
        for path in write_predictions(student, task, data_dir, tokenizer, args, output_dir / "predictions"):
            say(f"wrote {path}")
    return metrics


def read_rows(data_dir, task, split, args):
    examples, skipped = glue_data.read_split_counted(data_dir, task, split, skip_bad_rows=args.skip_bad_rows)
    if skipped:
        say(f"{task.name} {split}: skipped {skipped} malformed rows")
    return examples


if __name__ == "__main__":
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    main(sys.argv[1:])
    if dist.is_initialized():
        barrier()  # no rank tears the group down while another still writes or gathers
        dist.destroy_process_group()
