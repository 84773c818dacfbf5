"""AD-KD: Attribution-Driven Knowledge Distillation (Wu et al., ACL 2023), in one file.

The student learns the teacher's logits *and* its reasons: for every class c, Integrated
Gradients (IG) attributes the teacher's probability of c to the input tokens, and the student
is trained so that its own attribution map over the tokens matches the teacher's.

    L = (1 - alpha) * CE(student, gold) + alpha * KD(student, teacher; tau) + beta * L_attr  (12)

Part I is the method, read top to bottom: hyperparameters -> Integrated Gradients (Eq. 1-2)
-> attribution maps (Eq. 4-7, 9-10) -> losses (Eq. 11-12) -> one distillation step -> the
training loop -> main. Part II (after the marker) is plumbing a first reading can skip: the
command line, the teacher cache, checkpoints, several processes, evaluation files, `explain`.
Equation numbers are the paper's; the README restates every equation.

    python adkd.py --task mrpc --data-dir glue_data      # fine-tune the teacher, then distil
    python adkd.py explain --task mrpc --model runs/mrpc/student/best --text "A sentence." "Pair."
"""
# ==================================================================================================
# PART I - AD-KD
# ==================================================================================================
# From this marker to the next one, the method pastes alone into a file of your own (README,
# "Copy the method"): it imports what it uses and calls nothing outside it.
import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

# ------------------------------------------------------------------------------- hyperparameters
# The paper's Table 5 (K for a 768-wide teacher) and the public student scripts' epochs and
# temperature annealing ("kd_anneal").
TABLE_5_COLUMNS = ("lr", "batch_size", "alpha", "beta", "temperature", "top_k", "epochs", "anneal")
PAPER_STUDENT = {task: dict(zip(TABLE_5_COLUMNS, row)) for task, row in {
    #        lr    batch alpha  beta   tau   K    epochs anneal
    "cola": (4e-5, 32,   0.9,   1.0,   1.0,  768, 10,    False),
    "mnli": (4e-5, 64,   0.8,   10.0,  3.0,  768, 6,     True),
    "sst2": (5e-5, 32,   0.8,   1.0,   2.0,  768, 6,     False),
    "qnli": (4e-5, 32,   0.9,   100.0, 3.0,  768, 6,     False),
    "mrpc": (3e-5, 16,   0.9,   10.0,  4.0,  768, 10,    True),
    "qqp":  (4e-5, 32,   1.0,   50.0,  4.0,  734, 8,     True),
    "rte":  (2e-5, 16,   0.9,   10.0,  2.0,  700, 12,    False),
    "stsb": (5e-5, 16,   0.8,   1.0,   3.0,  640, 8,     False),
}.items()}
PAPER_TOP_K_WIDTH = 768  # K scales with the teacher's width: K_paper * width / 768
# Teacher fine-tuning (lr, batch, epochs) from the public teacher scripts; QNLI, QQP and MNLI
# get the standard BERT recipe (their scripts were not read).
TEACHER_RECIPE = {
    "cola": (2e-5, 8, 5), "sst2": (2e-5, 32, 5), "mrpc": (5e-5, 8, 5), "rte": (5e-5, 16, 4),
    "stsb": (3e-5, 4, 4), "qnli": (2e-5, 32, 3), "qqp": (2e-5, 32, 3), "mnli": (2e-5, 32, 3),
}
# L_attr differentiates through the student's own gradients (double backward), which needs an
# attention kernel with second derivatives; PyTorch's fused CPU SDPA kernel has none.
ATTENTION = "eager"


# -------------------------------------------------------------- Integrated Gradients (Eq. 1-2)
def class_scores(logits, is_regression):
    """F_c of Eq. 1: each class's softmax probability, or the regression output itself."""
    return logits if is_regression else logits.softmax(dim=-1)  # (rows, views)


def integrated_gradients(model, input_ids, attention_mask, token_type_ids=None, *, steps=1,
                         baseline="pad", pad_token_id=0, is_regression=False,
                         create_graph=False, max_rows=256):
    """Eq. 2, Integrated Gradients on the input embeddings E by a right Riemann sum:

        IG_c(E)_ij = (e_ij - e'_ij) * 1/m * sum_{k=1..m} dF_c(E' + k/m * (E - E')) / de_ij

    for every class c at once. E' is the [PAD] embedding at every position (the paper) or
    zeros (baseline="zero"). Returns (attributions (batch, views, seq, dim), zero on padding;
    logits (batch, classes) of the k = m step, which *is* the forward pass on the real input).
    create_graph=True keeps the attributions differentiable in the model's weights (the
    student's L_attr). max_rows only caps memory: the m steps go through the model in chunks
    of about max_rows interpolated rows, which changes no number."""
    embeddings = model.get_input_embeddings()
    inputs = embeddings(input_ids)  # E (batch, seq, dim)
    if baseline == "pad":  # looked up, not a row of the weight: Gemma's lookup scales rows
        base = embeddings(torch.full_like(input_ids, pad_token_id))
    else:  # zero word embeddings; the public code scales the whole embedding output instead
        base = torch.zeros_like(inputs)
    if not create_graph:
        inputs, base = inputs.detach(), base.detach()
    delta = inputs - base  # E - E'
    alphas = torch.arange(1, steps + 1, device=inputs.device) / steps  # a = k / m
    tokens = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    grad_sum, logits = 0.0, None
    for chunk in alphas.split(max(1, max_rows // len(input_ids))):  # memory cap, see docstring
        grads, logits = path_gradients(model, inputs, delta, chunk, tokens, is_regression,
                                       create_graph)
        grad_sum = grad_sum + grads.sum(dim=0)  # the sum over k
    mask = attention_mask[:, None, :, None].to(inputs.dtype)
    attributions = delta[:, None] * grad_sum / steps * mask  # (batch, views, seq, dim)
    return attributions, (logits if create_graph else logits.detach())


def path_gradients(model, inputs, delta, alphas, tokens, is_regression, create_graph):
    """dF_c/dE at E' + a (E - E') for each a in `alphas`, in one forward pass.
    Returns (gradients (len(alphas), batch, views, seq, dim), logits at the last a)."""
    chunk, (batch, seq, dim) = len(alphas), inputs.shape
    # E - (1 - a) * delta rather than E' + a * delta: exact at a = 1, so the last step is the
    # real input bit for bit and its logits serve as the forward pass.
    path = inputs - (1 - alphas.to(inputs.dtype)).view(-1, 1, 1, 1) * delta  # (chunk, b, s, d)
    path = path.reshape(chunk * batch, seq, dim).requires_grad_()  # no-op for the student's E
    tokens = {key: ids.repeat(chunk, 1) for key, ids in tokens.items() if ids is not None}
    logits = embedded_forward(model, tokens, path)  # its own forward on the ids: see there why
    grads = view_gradients(class_scores(logits, is_regression), path, is_regression,
                           create_graph)  # (chunk * batch, views, seq, dim)
    return grads.view(chunk, batch, *grads.shape[1:]), logits.view(chunk, batch, -1)[-1]


def embedded_forward(model, inputs, embeds):
    """model(**inputs).logits, its lookup of inputs["input_ids"] replaced by `embeds` (rows, seq,
    dim). Given inputs_embeds, decoder classifiers (GPT-2, Llama, ...) pool the last position,
    not the last real token (found in the ids), and RoBERTa's positions ignore left padding."""
    def swap(module, args, output):  # the ids' lookup only: GPT-2 looks token types up too
        return embeds if args and torch.equal(args[0], inputs["input_ids"]) else output
    with model.get_input_embeddings().register_forward_hook(swap):
        return model(**inputs).logits


def view_gradients(scores, inputs, is_regression=False, create_graph=False):
    """dF_c/d(inputs) for every view c from one batched vector-Jacobian product.

    Rows are independent examples, so the gradient of a column's sum gives each row its own
    gradient. Softmax probabilities sum to one, so their gradients sum to zero: the last
    class's gradient is minus the others' sum, and C - 1 products suffice (one when binary).
    scores (rows, views), inputs (rows, seq, dim) -> (rows, views, seq, dim)."""
    rows, views = scores.shape
    solved = views if is_regression else views - 1
    one_hots = torch.eye(views, dtype=scores.dtype, device=scores.device)[:solved, None, :]
    grads = torch.autograd.grad(scores, inputs, grad_outputs=one_hots.expand(solved, rows, views),
                                is_grads_batched=True, create_graph=create_graph)[0]
    if not is_regression:  # (solved, rows, seq, dim) -> all views
        grads = torch.cat([grads, -grads.sum(dim=0, keepdim=True)])
    return grads.transpose(0, 1)


# ------------------------------------------------------------ attribution maps (Eq. 4-7, 9-10)
def token_attributions(attributions, top_k=None):
    """Eq. 4 / Eq. 6: a token's score is the L2 norm of its |IG| over the top-K embedding
    dimensions (teacher) or over all of them (student, top_k=None).
    (batch, views, seq, dim) -> (batch, views, seq)."""
    magnitudes = attributions.abs()
    if top_k is not None and top_k < magnitudes.shape[-1]:
        magnitudes = magnitudes.topk(top_k, dim=-1).values
    return torch.linalg.vector_norm(magnitudes, dim=-1)


def normalise_maps(maps, attention_mask, eps=1e-12):
    """Eq. 9-10: each view becomes a unit vector over the real tokens; padding stays zero."""
    maps = maps * attention_mask[:, None, :].to(maps.dtype)  # (batch, views, seq)
    return maps / torch.linalg.vector_norm(maps, dim=-1, keepdim=True).clamp_min(eps)


def attribution_maps(attributions, attention_mask, top_k=None):
    """Eq. 4-7, then Eq. 9-10: multi-view, L2-normalised token maps (batch, views, seq)."""
    return normalise_maps(token_attributions(attributions, top_k), attention_mask)


# ----------------------------------------------------------------------------- losses (Eq. 11-12)
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
    return per_view.mean() if per_view.numel() == 2 else per_view.sum()


def kd_loss(student_logits, teacher_logits, temperature, form="soft_ce", is_regression=False):
    """The logit term of Eq. 12 between p_t = softmax(z_t / tau) and p_s = softmax(z_s / tau).

    soft_ce: -sum p_t log p_s, the public code's (KL's gradient, no tau^2); or a divergence
    (f-DISTILL's forms at sequence length one): kl KL(p_t||p_s), rkl KL(p_s||p_t), js
    Jensen-Shannon, tvd total variation 1/2 sum |p_t - p_s|. kl, rkl and js are scaled by
    tau^2 and tvd by tau, since their logit gradients shrink as 1/tau^2 and 1/tau (Hinton et
    al.'s reason for tau^2). Regression, any form: the public code's MSE between the
    student's and the teacher's outputs, both divided by tau."""
    if is_regression:
        return F.mse_loss(student_logits.squeeze(-1) / temperature,
                          teacher_logits.squeeze(-1) / temperature)
    log_p_t = (teacher_logits / temperature).log_softmax(dim=-1)
    log_p_s = (student_logits / temperature).log_softmax(dim=-1)
    p_t, p_s = log_p_t.exp(), log_p_s.exp()
    if form == "soft_ce":
        return -(p_t * log_p_s).sum(dim=-1).mean()
    if form == "tvd":
        return 0.5 * (p_t - p_s).abs().sum(dim=-1).mean() * temperature
    if form == "kl":
        divergence = (p_t * (log_p_t - log_p_s)).sum(dim=-1)
    elif form == "rkl":
        divergence = (p_s * (log_p_s - log_p_t)).sum(dim=-1)
    elif form == "js":  # against the mixture m = (p_t + p_s) / 2
        log_m = torch.logaddexp(log_p_t, log_p_s) - math.log(2)
        divergence = 0.5 * ((p_t * (log_p_t - log_m)).sum(-1) + (p_s * (log_p_s - log_m)).sum(-1))
    else:
        raise ValueError(f"unknown KD form {form!r}")
    return divergence.mean() * temperature ** 2


def gold_loss(student_logits, labels, is_regression=False):
    """The CE term of Eq. 12 (MSE to the gold score for regression)."""
    if is_regression:
        return F.mse_loss(student_logits.squeeze(-1), labels.to(student_logits.dtype))
    return F.cross_entropy(student_logits, labels)


def adkd_objective(student_logits, labels, teacher_logits=None, teacher_maps=None,
                   student_maps=None, *, alpha, beta, temperature, kd_form="soft_ce",
                   attr_reduction="entries", use_ce=True, use_kd=True, is_regression=False):
    """Eq. 12: (1 - alpha) * CE + alpha * KD + beta * L_attr -> (loss, unweighted terms).

    beta = 0 is vanilla KD; alpha = beta = 0 is plain fine-tuning; use_ce / use_kd = False are
    the paper's ablations (the term is dropped, the others keep their weights)."""
    weights = term_weights(alpha, beta, use_ce, use_kd)
    terms = {}
    if "ce" in weights:
        terms["ce"] = gold_loss(student_logits, labels, is_regression)
    if "kd" in weights:
        terms["kd"] = kd_loss(student_logits, teacher_logits, temperature, kd_form, is_regression)
    if "attr" in weights:
        terms["attr"] = attribution_loss(teacher_maps, student_maps, attr_reduction)
    return sum(weights[name] * value for name, value in terms.items()), terms


def term_weights(alpha, beta, use_ce=True, use_kd=True):
    """The weight of each term of Eq. 12 that is present."""
    weights = {"ce": 1 - alpha if use_ce else 0.0, "kd": alpha if use_kd else 0.0, "attr": beta}
    return {name: weight for name, weight in weights.items() if weight > 0}


def annealed_temperature(start, epoch, epochs):
    """The public code's kd_anneal: tau falls linearly from its start to 1 at the last epoch."""
    if epochs <= 1:
        return start
    return start + (1.0 - start) * epoch / (epochs - 1)


# ------------------------------------------------------------------ one step of AD-KD (portable)
@dataclasses.dataclass
class ADKDConfig:
    """Everything one distillation step needs besides the models and the batch."""
    alpha: float = 0.9             # weight of KD; 1 - alpha weighs CE
    beta: float = 10.0             # weight of L_attr (0: vanilla KD)
    temperature: float = 4.0       # tau of the KD term
    top_k: int | None = None       # K of Eq. 4, the teacher's kept dimensions (None: all)
    ig_steps: int = 1              # m of Eq. 2 for the student
    teacher_ig_steps: int = 1      # m for the teacher
    baseline: str = "pad"          # IG baseline E': "pad" (paper) or "zero"
    kd_form: str = "soft_ce"       # "soft_ce" (public code), "kl", "rkl", "js" or "tvd"
    attr_reduction: str = "entries"  # "entries" (public code's scale) or "batch" (Eq. 11)
    use_ce: bool = True            # False: the "w/o CE" ablation
    use_kd: bool = True            # False: the "w/o KD" ablation
    is_regression: bool = False    # STS-B
    pad_token_id: int = 0
    ig_max_rows: int = 256         # interpolated rows per IG forward (memory only)


def model_maps(model, inputs, config, teacher=False, create_graph=False):
    """IG (Eq. 2), then multi-view maps (Eq. 4-10) -> (maps, logits, attributions): the
    teacher's with its m and top-K, the student's with its m over all dimensions (Eq. 6)."""
    attributions, logits = integrated_gradients(
        model, **inputs, steps=config.teacher_ig_steps if teacher else config.ig_steps,
        baseline=config.baseline, pad_token_id=config.pad_token_id, create_graph=create_graph,
        is_regression=config.is_regression, max_rows=config.ig_max_rows)
    top_k = config.top_k if teacher else None
    return attribution_maps(attributions, inputs["attention_mask"], top_k), logits, attributions


def teacher_outputs(teacher, inputs, config):
    """The teacher's multi-view maps (top-K, Eq. 4-10) and logits for a batch of inputs; no
    maps for vanilla KD (beta = 0)."""
    teacher.eval()  # frozen and without dropout, or its maps would change from call to call
    if config.beta <= 0:
        with torch.no_grad():
            return None, teacher(**inputs).logits
    return model_maps(teacher, inputs, config, teacher=True)[:2]


def distillation_step(student, teacher, batch, config, teacher_fn=teacher_outputs):
    """One batch of Eq. 12 -> (loss, unweighted terms). `batch` holds input_ids,
    attention_mask, labels (and token_type_ids); teacher_fn(teacher, inputs, config) returns
    the teacher's (maps, logits): pass another function to serve them from a cache."""
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids")
              if key in batch}
    teacher_logits = teacher_maps = student_maps = None
    if config.beta > 0 or (config.alpha > 0 and config.use_kd):
        teacher_maps, teacher_logits = teacher_fn(teacher, inputs, config)
    if config.beta > 0:
        # The student's last Riemann step is its ordinary forward pass: CE and KD reuse it.
        student_maps, student_logits, _ = model_maps(student, inputs, config, create_graph=True)
    else:
        student_logits = student(**inputs).logits
    return adkd_objective(
        student_logits, batch["labels"], teacher_logits, teacher_maps, student_maps,
        alpha=config.alpha, beta=config.beta, temperature=config.temperature,
        kd_form=config.kd_form, attr_reduction=config.attr_reduction, use_ce=config.use_ce,
        use_kd=config.use_kd, is_regression=config.is_regression)


def fit_beta(student, teacher, batches, config, ratio=2.0, teacher_fns=None):
    """Table 5's beta was tuned on the authors' student: with another, beta * L_attr's gradient
    can drown CE's and KD's (README, "Choosing β"). Returns beta lowered (never raised) so
    that beta * L_attr's gradient norm is `ratio` times the larger of CE's and KD's, median over
    `batches` at the student's present weights in train mode. teacher_fns: one per batch."""
    parameters = [p for p in student.parameters() if p.requires_grad]
    weights = term_weights(config.alpha, config.beta, config.use_ce, config.use_kd)
    norms = []
    for batch, teacher_fn in zip(batches, teacher_fns or [teacher_outputs] * len(batches)):
        terms = distillation_step(student, teacher, batch, config, teacher_fn)[1]
        norms.append({name: norm_of(torch.autograd.grad(weights[name] * value, parameters,
                                                        retain_graph=True, allow_unused=True))
                      for name, value in terms.items()})
    median = attr_dominance(norms, threshold=0.0)  # the warning's R; None: no L_attr (beta = 0)
    return config.beta if median is None else config.beta * min(1.0, ratio / median)


def norm_of(tensors):
    """The L2 norm of several tensors taken as one vector (None entries skipped)."""
    return float(torch.linalg.vector_norm(torch.stack(
        [torch.linalg.vector_norm(t.float()) for t in tensors if t is not None] or
        [torch.zeros(())])))


def attr_dominance(norms, threshold=2.0):
    """Median of attr / max(ce, kd) over steps' weighted grad norms if above threshold, else None"""
    ratios = [n["attr"] / max(n.get("ce", 0), n.get("kd", 0), 1e-12) for n in norms if "attr" in n]
    return float(np.median(ratios)) if ratios and np.median(ratios) > threshold else None


# ==================================================================================================
# PART I, CONTINUED - THE LOOP: the portable method ends above; below, Part II's plumbing runs it
# ==================================================================================================
# ---------------------------------------------------------------------------- the training loop
def train(student, tokenizer, task, train_features, dev_sets, output_dir, args, teacher=None):
    """Train `student` on Eq. 12; keep the best dev checkpoint in output_dir/best.
    With teacher=None and alpha = beta = 0 this is plain fine-tuning (the teacher stage).
    Returns the best dev metrics and where they were reached."""
    config = adkd_config(args, task, tokenizer.pad_token_id)
    device, (rank, world_size) = args.device, world()
    steps_per_epoch = math.ceil(len(train_features) / args.batch_size)
    total_steps = min(steps_per_epoch * args.epochs, args.max_steps or math.inf)
    student.to(device).train()
    optimizer, scheduler = make_optimizer(student, args.lr, args.weight_decay, args.warmup,
                                          total_steps)
    run = RunFiles(output_dir, args, tokenizer, steps_per_epoch)
    step, best = run.start(student, optimizer, scheduler)  # fresh, or resumed from last/
    cache = TeacherCache.for_training(teacher, train_features, output_dir, args, config)  # or None
    teacher_dev = teacher_dev_maps(teacher, dev_sets, config, args)  # for the attribution gap
    config.beta = run.fitted_beta(student, teacher, cache, train_features, config)  # if asked
    model = student if world_size == 1 else DistributedModel(student)
    progress = run.progress_bar(total_steps, step)  # its count: the step Ctrl-C reports
    while step < total_steps:
        epoch, batch_in_epoch = divmod(step, steps_per_epoch)
        order = epoch_order(len(train_features), args.seed, epoch)
        if args.anneal_temperature:
            config.temperature = annealed_temperature(args.temperature, epoch, args.epochs)
        for first in range(batch_in_epoch * args.batch_size, len(order), args.batch_size):
            indices = order[first:first + args.batch_size][rank::world_size]  # this rank's slice
            log_now = (step + 1) % args.log_every == 0 or step + 1 == total_steps
            summed = GradientSum(model, config, measure=log_now and args.grad_norms)
            for micro in summed.micro_batches(indices, args.grad_accum):  # 1 without --grad-accum
                batch = glue_data.collate([train_features[i] for i in micro], config.pad_token_id)
                batch = {key: value.to(device) for key, value in batch.items()}
                teacher_fn = cache.teacher_fn(micro) if cache else teacher_outputs
                with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=args.bf16):
                    loss, terms = distillation_step(model, teacher, batch, config, teacher_fn)
                summed.backward(loss, terms)  # weighted by the micro-batch's share of examples
            loss, terms, norms = summed.total()  # norms: per weighted term, before clipping
            check_finite(terms, step + 1, run.last_dir, device)
            norms["total"] = float(torch.nn.utils.clip_grad_norm_(student.parameters(),
                                                                  args.max_grad_norm))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            progress.update(1)
            if log_now:  # and once, when beta*L_attr's gradient drowns CE's and KD's: a warning
                run.log_losses(step, scheduler, config.temperature, loss, terms, norms)
            end_of_epoch = step % steps_per_epoch == 0 or step == total_steps
            if end_of_epoch or (args.eval_every and step % args.eval_every == 0):
                metrics = evaluate(student, task, dev_sets, args.eval_batch_size,
                                   config.pad_token_id, device)
                metrics.update(attribution_gap(student, teacher_dev, config, args))
                best = run.record_evaluation(student, step, metrics, best, task.main_metric)
                run.save_last(student, optimizer, scheduler, step, best, cache)
            elif args.save_every and step % args.save_every == 0:
                run.save_last(student, optimizer, scheduler, step, best, cache)
            if step == total_steps:
                break
    progress.close()
    return run.finish(student, best)


def main(argv=None):
    """Fine-tune the teacher (unless --teacher is given), distil it into the student, evaluate
    the best student on dev and (with --predict) write the GLUE test submission files."""
    if argv and argv[0] == "explain":
        return explain_main(argv[1:])
    args, task = resolve_config(parse_args(argv))
    tokenizer, data = prepare(args, task)  # every check that can fail comes before training
    pad = tokenizer.pad_token_id  # the models' too: decoder classifiers pool by it
    init_distributed(args)
    output_dir = Path(args.output_dir)
    if args.teacher is None and data.training and data.saved_teacher is None:
        if not (output_dir / "teacher" / "done.json").exists():
            say(f"== fine-tuning the teacher {args.teacher_model} on {task.name}")
            seed_everything(args.seed)
            train(load_model(args.teacher_model, task, "--teacher-model", pad), tokenizer, task,
                  data.train, data.dev, output_dir / "teacher", teacher_stage_args(args))
        args.teacher = str(output_dir / "teacher" / "best")
        if args.teacher_only and not args.teacher_outputs:
            return json.loads((output_dir / "teacher" / "done.json").read_text())["metrics"]
    if args.teacher_only:  # write --teacher-outputs from the teacher, and stop
        return frozen_teacher(args, task, data, tokenizer)[1]
    seed_everything(args.seed)  # the student stage
    student = load_model(args.student, task, "--student", pad)
    if data.training and not (output_dir / "student" / "done.json").exists():
        teacher = frozen_teacher(args, task, data, tokenizer)[0]  # model, or its saved outputs
        say(f"== distilling into {args.student}: alpha={args.alpha} beta={args.beta} "
            f"tau={args.temperature} K={args.top_k} m={args.ig_steps} "
            f"(teacher m={args.teacher_ig_steps})")
        seed_everything(args.seed)
        train(student, tokenizer, task, data.train, data.dev, output_dir / "student", args, teacher)
    if data.training:
        student = load_model(output_dir / "student" / "best", task, "--output-dir")
    metrics = evaluate(student.to(args.device), task, data.dev, args.eval_batch_size,
                       tokenizer.pad_token_id, args.device)
    say(f"student: dev {glue_data.format_metrics(metrics)}")
    if args.predict:  # write_predictions says which files it wrote
        write_predictions(student, task, data.test, args, pad, output_dir / "predictions")
    return metrics


# ==================================================================================================
# PART II - PLUMBING. A first reading can stop here: nothing below changes what is trained.
# ==================================================================================================
import argparse
import atexit
import contextlib
import functools
import hashlib
import html
import json
import os
import pickle
import random
import shutil
import socket
import sys
import time
from pathlib import Path

import huggingface_hub
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm
from transformers import (AutoConfig, AutoModelForSequenceClassification, AutoTokenizer,
                          get_linear_schedule_with_warmup)

import glue_data


# ---------------------------------------------------------------------------------- configuration
def per_task(name):
    """Help text for a flag whose default is the task's Table 5 value."""
    return ", ".join(f"{task} {values[name]:g}" for task, values in PAPER_STUDENT.items()) + \
        f"; own data {OWN_DATA_STUDENT[name]:g}"


# Own data has no Table 5 row: each default is the value most of its tasks use; beta's 1 and 10
# tie, 1 is taken (README, "Choosing β"); the teacher gets BERT's recipe.
OWN_DATA_STUDENT = dict(zip(TABLE_5_COLUMNS, (4e-5, 32, 0.9, 1.0, 3.0, 768, 6, False)))
OWN_DATA_TEACHER = (2e-5, 32, 3)
HUB_TIMEOUT_S = 5  # the one probe of the hub before a hub name is loaded
SHOWN_KEYS = 4  # newly initialised weights named in load_model's one line
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C


# The flag table: the parser, its --help, the range checks, what --resume compares and what the
# teacher stage saves all come from it. Each row: flag(name, stage, bounds, argparse keywords).
# Its stage says whose weights it changes: "both" stages', "teacher" or "student" only, or none
# ("run": where files go, what is logged, memory), which a resumed stage may change.
STAGES = ("both", "teacher", "student", "run")
BOUNDS = {"> 0": lambda v: v > 0, ">= 0": lambda v: v >= 0, ">= 1": lambda v: v >= 1,
          ">= 8": lambda v: v >= 8, "in [0, 1]": lambda v: 0 <= v <= 1,
          "in [0, 1)": lambda v: 0 <= v < 1}


def flag(name, stage, bounds=None, **keywords):
    return name, stage, bounds, keywords


OWN_DATA_FLAGS = ("your own .csv, .tsv or .jsonl files instead of --task (README)", [
    flag("--train-file", "both", help="training rows; a header or JSON keys name the columns"),
    flag("--dev-file", "both", help="labelled rows that pick the best checkpoint"),
    flag("--test-file", "run", help="rows to predict with --predict"),
    flag("--text-columns", "both", nargs="+", metavar="COLUMN", help="one text column, or two"),
    flag("--label-column", "both", default="label", help="the label column"),
    flag("--labels", "both", nargs="+", help="the classes in order (default: train's, sorted)"),
    flag("--regression", "both", action="store_true", help="labels are scores: one output"),
    flag("--metric", "both", choices=["accuracy", "macro_f1", "spearman", "pearson"],
         help="the dev metric that picks the best checkpoint (default: the first)"),
    flag("--id-column", "run", help="test column naming each prediction (default: line)")])
FLAGS = [("task, data and models", [
    flag("--task", "both", help="GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte"),
    flag("--data-dir", "run", default="glue_data", help="GLUE root (with MRPC/, ...) or the "
         "task folder itself; a task with no files there is downloaded into it"),
    flag("--output-dir", "run", help="checkpoints, logs, predictions; default runs/<task>"),
    # The student stage sees the teacher only as --teacher, the folder it loads.
    flag("--teacher", "student", help="a teacher fine-tuned on the task: no teacher stage"),
    flag("--teacher-model", "teacher", default="bert-base-uncased",
         help="pretrained model the teacher stage fine-tunes (hub name or folder)"),
    flag("--student", "both", default="google/bert_uncased_L-6_H-768_A-12",
         help="student model (hub name or folder)"),
    flag("--teacher-only", "run", action="store_true",
         help="fine-tune the teacher (and write --teacher-outputs), then stop"),
    flag("--teacher-outputs", "student", metavar="FILE", help="the frozen teacher's logits and "
         "maps on train and dev: read if it exists (no teacher is loaded), else written first"),
    flag("--max-length", "both", ">= 8", type=int, default=128, help="maximum tokens per example"),
    flag("--skip-bad-rows", "both", action="store_true",
         help="skip malformed train/dev rows and report how many (never test rows)"),
    flag("--glue-subset", "run", action="store_true", help="read GLUE files whose row counts "
         "are not the release's (a sample); else they give no dev score or submission")]),
    OWN_DATA_FLAGS,
    ("AD-KD (Eq. 12 and the maps); unset: the task's Table 5 value", [
        flag("--alpha", "student", "in [0, 1]", type=float,
             help=f"weight of KD; 1-alpha weighs CE ({per_task('alpha')})"),
        flag("--beta", "student", ">= 0", type=float,
             help=f"weight of L_attr, 0 = vanilla KD ({per_task('beta')})"),
        flag("--temperature", "student", "> 0", type=float,
             help=f"KD temperature tau ({per_task('temperature')})"),
        flag("--anneal-temperature", "student", action=argparse.BooleanOptionalAction,
             help="tau falls linearly to 1 over the epochs: kd_anneal (on for mrpc, mnli, qqp)"),
        flag("--top-k", "student", ">= 1", type=int, help="K of Eq. 4: the task's K * teacher "
             f"width / 768 ({per_task('top_k')} for a 768-wide teacher)"),
        flag("--ig-steps", "student", ">= 1", type=int, default=1, help="the student's m (Eq. 2)"),
        flag("--teacher-ig-steps", "student", ">= 1", type=int,
             help="the teacher's m (default: --ig-steps)"),
        flag("--baseline", "student", choices=["pad", "zero"], default="pad",
             help="IG baseline: [PAD] embeddings (paper) or zero word embeddings"),
        flag("--kd-loss", "student", choices=["soft_ce", "kl", "rkl", "js", "tvd"],
             default="soft_ce", help="soft cross-entropy (public code); or KL, reverse KL, "
             "Jensen-Shannon, total variation (f-DISTILL)"),
        flag("--beta-remedy", "student", choices=["fit"], help="fit: lower beta once, before "
             "training, to --attr-ratio x the logit terms' gradient (README, 'Choosing β')"),
        flag("--attr-ratio", "student", "> 0", type=float, default=2.0, help="beta * L_attr's "
             "gradient norm / max(CE's, KD's) that --beta-remedy fit aims at"),
        flag("--attr-reduction", "student", choices=["entries", "batch"], default="entries",
             help="L_attr at the public code's scale (Table 5's beta) or per batch (Eq. 11)"),
        flag("--no-ce", "student", action="store_true", help="ablation: drop the CE term"),
        flag("--no-kd", "student", action="store_true", help="ablation: drop the KD term")]),
    # "both": the teacher stage takes these three from --teacher-lr, ... (teacher_stage_args).
    ("the student's loop; unset: the task's value", [
        flag("--lr", "both", "> 0", type=float, help=f"learning rate ({per_task('lr')})"),
        flag("--batch-size", "both", ">= 1", type=int,
             help=f"batch size ({per_task('batch_size')})"),
        flag("--epochs", "both", ">= 0", type=int,
             help=f"epochs, 0: only evaluate/predict --student ({per_task('epochs')})")]),
    ("the teacher stage (plain fine-tuning); unset: the task's recipe", [
        flag("--teacher-lr", "teacher", "> 0", type=float,
             help="learning rate (mrpc 5e-5, rte 5e-5, stsb 3e-5, others 2e-5)"),
        flag("--teacher-batch-size", "teacher", ">= 1", type=int,
             help="batch size (cola 8, mrpc 8, stsb 4, rte 16, others 32)"),
        flag("--teacher-epochs", "teacher", ">= 1", type=int,
             help="epochs (cola, sst2, mrpc 5; rte, stsb 4; others 3)")]),
    ("both stages", [
        flag("--warmup", "both", "in [0, 1)", type=float, default=0.1, help="lr warm-up's share"),
        flag("--weight-decay", "both", ">= 0", type=float, default=0.01, help="AdamW weight decay"),
        flag("--max-grad-norm", "both", "> 0", type=float, default=1.0, help="clipping norm"),
        flag("--max-steps", "both", ">= 1", type=int, help="stop each stage after this many steps"),
        flag("--grad-accum", "both", ">= 1", type=int, default=1, metavar="N",
             help="each optimizer step sums N micro-batches of the batch (less memory)"),
        flag("--eval-every", "run", ">= 0", type=int, default=0,
             help="also evaluate on dev every N steps (0: each epoch only)"),
        flag("--save-every", "run", ">= 0", type=int, default=0,
             help="also write the resumable checkpoint every N steps (0: at evaluations)"),
        flag("--log-every", "run", ">= 1", type=int, default=10,
             help="write a loss record to log.jsonl every N steps"),
        flag("--grad-norms", "run", action=argparse.BooleanOptionalAction, default=True,
             help="log each weighted term's gradient norm on logging steps; off: no beta warning"),
        flag("--dev-attribution-gap", "run", action=argparse.BooleanOptionalAction,
             default=True, help="log the student's attribution gap to the teacher per evaluation"),
        flag("--eval-batch-size", "run", ">= 1", type=int, default=64, help="dev, test batch size"),
        flag("--seed", "both", type=int, default=42, help="random seed")]),
    ("run", [
        flag("--resume", "run", action="store_true",
             help="continue the run in --output-dir from wherever it stopped"),
        flag("--predict", "run", action="store_true",
             help="write GLUE test submission files with the best student"),
        flag("--device", "run", default="cuda" if torch.cuda.is_available() else "cpu",
             help="torch device to train and evaluate on: cpu, cuda, cuda:1, ..."),
        flag("--bf16", "both", action="store_true", help="bfloat16 autocast for forwards and IG"),
        flag("--ig-max-rows", "run", ">= 1", type=int,
             help="interpolated rows per IG forward pass (256 on GPU, 32 on CPU)"),
        flag("--teacher-cache", "run", action=argparse.BooleanOptionalAction, default=True,
             help="compute the frozen teacher's maps and logits once per example, reuse them"),
        flag("--teacher-cache-path", "run", help="that cache's file, shareable between runs "
             "(default: <output-dir>/student/teacher_cache.pt)")])]


def all_flags(groups=FLAGS):
    """(dest, name, stage, bounds) of every flag of the table."""
    return [(name[2:].replace("-", "_"), name, stage, bounds)
            for _, rows in groups for name, stage, bounds, _ in rows]


class HelpFormatter(argparse.HelpFormatter):
    def _get_help_string(self, action):
        shown = action.default not in (None, False, argparse.SUPPRESS)
        return action.help + (" (default: %(default)s)" if shown else "")


def shared(name, **changed):
    """FLAGS' row of a flag another command shares (explain), some argparse keywords changed."""
    _, stage, bounds, keywords = next(row for _, rows in FLAGS for row in rows if row[0] == name)
    return flag(name, stage, bounds, **{**keywords, **changed})


def make_parser(groups, **keywords):
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter, **keywords)
    for title, rows in groups:
        group = parser.add_argument_group(title)
        for name, _, _, options in rows:
            group.add_argument(name, **options)
    return parser


def command_name():
    """This program as it was invoked: `adkd` (pip's command) or `python adkd.py`."""
    name = Path(sys.argv[0]).name
    return f"python {name}" if name.endswith(".py") else name


def parse_args(argv=None):
    description = "AD-KD: fine-tune a teacher on a GLUE task, then distil it into a student."
    epilog = f"Per-class attribution maps of checkpoints: {command_name()} explain --help"
    return make_parser(FLAGS, prog=command_name(), description=description,
                       epilog=epilog).parse_args(argv)


def resolve_config(args, teacher_width=None):
    """Every derived default in one place (Table 5, teacher recipe, output folder, teacher's m, IG
    rows per forward); refuses impossible flags before any load. K needs the teacher's width."""
    check_bounds(args)  # flag ranges first: own data's classes come from reading its train file
    task = glue_data.task_from_args(args, say)
    paper = OWN_DATA_STUDENT if task.files else PAPER_STUDENT[task.name]
    recipe = OWN_DATA_TEACHER if task.files else TEACHER_RECIPE[task.name]
    defaults = {name: paper[name] for name in ("lr", "batch_size", "epochs", "alpha", "beta",
                                               "temperature")}
    # IG rows per forward: large chunks are memory-bound on CPU (bench/chunk_sweep.py)
    defaults.update(zip(("teacher_lr", "teacher_batch_size", "teacher_epochs"), recipe),
                    anneal_temperature=paper["anneal"], teacher_ig_steps=args.ig_steps,
                    ig_max_rows=256 if str(args.device).startswith("cuda") else 32)
    for name, value in defaults.items():  # the flags left unset
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.output_dir = str(args.output_dir or Path("runs") / task.name)
    args.stage = "student"
    validate_args(args)
    set_top_k(args, task, teacher_width)
    if task.files:  # --resume compares own train and dev files by content
        args.file_digests = glue_data.file_digests(task)  # own_task checked each file
    return args, task


def set_top_k(args, task, teacher_width):
    """K for a teacher this wide (None: no teacher): Table 5's K scaled, or all of it (own data)."""
    if teacher_width is None:
        return
    if args.top_k is None:
        args.top_k = teacher_width if task.files else scaled_top_k(task.name, teacher_width)
    if args.top_k > teacher_width:
        raise SystemExit(f"error: --top-k {args.top_k} exceeds the teacher's embedding width "
                         f"{teacher_width}")


def scaled_top_k(task_name, width):
    """Table 5's K for a teacher `width` wide: the paper's fraction of a 768-wide teacher."""
    return max(1, round(PAPER_STUDENT[task_name]["top_k"] * width / PAPER_TOP_K_WIDTH))


def check_bounds(args, groups=FLAGS):
    """Refuse a value outside its table bounds, one line (inf and NaN pass most range checks)."""
    for dest, name, _, bounds in all_flags(groups):
        value = getattr(args, dest)
        if bounds is None or value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise SystemExit(f"error: {name} must be finite, got {value}")
        if not BOUNDS[bounds](value):
            raise SystemExit(f"error: {name} must be {bounds}, got {value}")


def validate_args(args):
    """Refuse impossible combinations of flags (their ranges: check_bounds), one line each."""
    if args.teacher_only and args.teacher and not args.teacher_outputs:
        raise SystemExit("error: --teacher-only fine-tunes a teacher; drop --teacher (or add "
                         "--teacher-outputs FILE to write its outputs)")
    if args.beta <= 0 and (args.no_ce or args.alpha == 1) and (args.no_kd or args.alpha == 0):
        raise SystemExit("error: --alpha, --beta, --no-ce and --no-kd leave no loss term to "
                         "train on")
    if args.grad_accum > args.batch_size:
        raise SystemExit(f"error: --grad-accum must lie in [1, --batch-size {args.batch_size}], "
                         f"got {args.grad_accum}")


def adkd_config(args, task, pad_token_id):
    return ADKDConfig(
        alpha=args.alpha, beta=args.beta, temperature=args.temperature, top_k=args.top_k,
        ig_steps=args.ig_steps, teacher_ig_steps=args.teacher_ig_steps, baseline=args.baseline,
        kd_form=args.kd_loss, attr_reduction=args.attr_reduction, use_ce=not args.no_ce,
        use_kd=not args.no_kd, is_regression=task.is_regression, pad_token_id=pad_token_id,
        ig_max_rows=args.ig_max_rows)


def stage_args(args, **overrides):
    return argparse.Namespace(**{**vars(args), **overrides})


def teacher_stage_args(args):
    """The teacher stage: plain fine-tuning (Eq. 12, alpha = beta = 0) by the --teacher-* recipe."""
    stage = stage_args(args, stage="teacher", alpha=0.0, beta=0.0, no_ce=False,
                       anneal_temperature=False)
    for name in ("lr", "batch_size", "epochs"):
        setattr(stage, name, vars(stage).pop(f"teacher_{name}"))
    return stage


# Settings added after runs were started: a settings.json without one was run at this value.
ADDED_SETTINGS = {"grad_accum": 1, "beta_remedy": None, "attr_ratio": 2.0}


def stage_settings(args):
    """What a stage's weights depend on, as saved in its settings.json: the flags of its stage
    and of both (own train and dev files by content); a student's also names its stage."""
    keep = {dest for dest, _, stage, _ in all_flags() if stage in ("both", args.stage)}
    keep |= {"stage"} if args.stage == "student" else set()
    values = {**vars(args), **vars(args).get("file_digests", {})}
    return json.loads(json.dumps({k: v for k, v in sorted(values.items()) if k in keep},
                                 default=str))


# -------------------------------------------------------------- models, data and early checks
@functools.cache
def hub_reachable():
    """One request to the hub: huggingface_hub itself retries 5 times with backoff (~30 s)."""
    try:
        huggingface_hub.get_session().head(huggingface_hub.constants.ENDPOINT,
                                           timeout=HUB_TIMEOUT_S)
        return True
    except Exception:  # any transport failure (DNS, refused, timed out, proxy): unreachable
        return False


def pretrained(loader, name, flag, **kwargs):
    """loader.from_pretrained(name), or one line naming the flag when it cannot be loaded.
    A hub name while the hub cannot be reached loads from the local cache or fails at once."""
    offline = not (Path(name).expanduser().exists() or huggingface_hub.constants.HF_HUB_OFFLINE
                   or hub_reachable())
    try:
        return loader.from_pretrained(name, **kwargs, **({"local_files_only": True} if offline
                                                         else {}))
    except (OSError, ValueError) as error:
        reason = (str(error).strip() or type(error).__name__).splitlines()[0][:200]
        if str(name).startswith((".", "/", "~")) and not Path(name).expanduser().exists():
            reason = "no such folder"
        elif offline:
            reason = f"{huggingface_hub.constants.ENDPOINT} unreachable, not in the local cache"
        raise SystemExit(f"error: {flag} {name}: cannot load it ({reason}). Give a local folder "
                         "with config.json, weights and tokenizer files, or a hub name with "
                         "network access (HF_HUB_OFFLINE=1 forbids the hub)") from None


def load_model(name_or_path, task, flag="--student", pad_token_id=None):
    """A sequence classifier for the task (double-backward-capable attention; pad_token_id, if
    given, its pad id). Refused: one fine-tuned for another label count, or wrong when padded."""
    config = pretrained(AutoConfig, name_or_path, flag)
    fine_tuned = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])
    if fine_tuned and config.num_labels != task.num_labels:
        raise SystemExit(f"error: {flag} {name_or_path} classifies {config.num_labels} labels, "
                         f"task {task.name} has {task.num_labels}")
    labels = task.labels or ("score",)
    model, loading = pretrained(
        AutoModelForSequenceClassification, name_or_path, flag, num_labels=task.num_labels,
        attn_implementation=ATTENTION, id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)}, output_loading_info=True,
        pad_token_id=config.pad_token_id if pad_token_id is None else pad_token_id,
        problem_type="regression" if task.is_regression else "single_label_classification")
    new = sorted(loading["missing_keys"])
    if new:  # a new classifier head, typically: say so in one line
        say(f"{flag} {name_or_path}: newly initialised: {', '.join(new[:SHOWN_KEYS])}"
            + (f" and {len(new) - SHOWN_KEYS} more" if len(new) > SHOWN_KEYS else ""))
    if (pad := model.config.pad_token_id) is None:  # nothing to pad with, nothing to check
        return model
    padded = F.pad((pad + 1 + torch.arange(6))[None] % model.config.vocab_size, (0, 2), value=pad)
    try:  # padded (1, 8): 6 ids, none of them pad, then 2 pads. IG of the logits themselves
        alone = model(input_ids=padded[:, :6]).logits.detach()  # (any label count): as alone?
        ig = integrated_gradients(model, padded, (padded != pad).long(), is_regression=True)[1]
        problem = float((ig - alone).abs().max())
    except (RuntimeError, ValueError) as error:  # XLNet looks its ids up transposed: IG fails
        problem = str(error).splitlines()[0][:200]
    # a difference beyond float rounding: 1e-3 in float32, 0.1 in bfloat16
    if isinstance(problem, str) or problem > torch.finfo(alone.dtype).resolution ** 0.5:
        raise SystemExit(f"error: {flag} {name_or_path}: {type(model).__name__} is not supported: "
                         f"a right-padded row's logits are not the row's alone ({problem})")
    return model


def check_same_tokenizer(teacher_tokenizer, student_tokenizer):
    """Token maps are compared position by position: both models must tokenize identically."""
    names = f"{teacher_tokenizer.name_or_path} and {student_tokenizer.name_or_path}"
    vocab = teacher_tokenizer.get_vocab()
    if vocab != student_tokenizer.get_vocab():
        raise SystemExit(f"error: {names}: vocabularies differ ({len(vocab)} vs "
                         f"{len(student_tokenizer)} tokens); AD-KD compares per-token maps")
    # Capitalised vocabulary words and accents expose casing and normalisation differences.
    words = " ".join(w.capitalize() for w in sorted(t for t in vocab if t.isalpha())[:50])
    probe = "AD-KD compares Token MAPS, doesn't it? Überprüfung 123. " + words
    if teacher_tokenizer(probe)["input_ids"] != student_tokenizer(probe)["input_ids"]:
        raise SystemExit(f"error: {names}: tokenizers split text differently (casing or "
                         "normalisation); AD-KD compares per-token maps and needs one tokenizer")


def check_tokenizer_fits(tokenizer, config, name, flag):
    """A folder without tokenizer files still gives a tokenizer: a few special tokens, each word one
    unknown id. Refuse one far smaller than the embedding matrix or with special ids past it."""
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token  # GPT-2's, Llama's: none
    if tokenizer.pad_token is None:
        raise SystemExit(f"error: {flag} {name}: its tokenizer has no padding or end token")
    rows, special = getattr(config, "vocab_size", None), max(tokenizer.all_special_ids, default=0)
    if rows is not None and (2 * len(tokenizer) < rows or special >= rows):
        raise SystemExit(f"error: {flag} {name}: its tokenizer ({len(tokenizer)} tokens, special "
                         f"ids up to {special}) does not fit the model's {rows} embeddings; are "
                         "its tokenizer files missing?")


def prepare(args, task):
    """K from the teacher's width, then everything that can fail before a model trains, one
    line each: --output-dir writable with room for the checkpoints, the run folders and
    --resume, the models' names, tokenizers and position limits, the data (downloaded when
    absent). Then it locks the stage folders. Returns (tokenizer, data)."""
    saved = load_teacher_outputs(args.teacher_outputs)  # None: no such file (yet)
    training = args.epochs > 0 or args.teacher_only
    if missing := glue_data.missing_file(task, training, args.predict):  # before any model loads
        raise SystemExit(f"error: {missing}")
    source = ((args.teacher, "--teacher") if args.teacher else
              (args.teacher_model, "--teacher-model"))  # the model whose maps the student matches
    teachers = [source] if training and not saved else []  # saved: no teacher is loaded
    width = pretrained(AutoConfig, *teachers[0]).hidden_size if teachers else None
    set_top_k(args, task, saved.meta["width"] if saved else width)
    if task.files:
        shown = ("lr", "batch_size", "epochs", "alpha", "beta", "temperature", "top_k",
                 "anneal_temperature", "teacher_lr", "teacher_batch_size", "teacher_epochs")
        say("own data, no Table 5 row (README): "
            + " ".join(f"--{name.replace('_', '-')} {getattr(args, name)}" for name in shown))
    check_output_dir(args, training)
    check_run_folders(args, training)
    # --teacher-only trains no student: the teacher's tokenizer serves, the student is not read
    models = ([] if args.teacher_only and teachers else [(args.student, "--student")]) + teachers
    tokenizer, *others = [pretrained(AutoTokenizer, name, flag) for name, flag in models]
    for (name, flag), own in zip(models, [tokenizer, *others]):
        config = pretrained(AutoConfig, name, flag)
        check_tokenizer_fits(own, config, name, flag)
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and args.max_length > limit:
            raise SystemExit(f"error: --max-length {args.max_length} exceeds the {limit} "
                             f"positions of {flag} {name}")
    for other in others:  # each fits its own model: now the teacher's against the student's
        check_same_tokenizer(other, tokenizer)
    data = glue_data.read_data(args, task, tokenizer, training, say, world()[1] == 1)
    expected = outputs_meta(args, task, tokenizer, data) if saved else {}  # this run's maps
    wrong = [f"{key} {saved.meta.get(key)} (this run: {value})"
             for key, value in expected.items() if saved.meta.get(key) != value]
    if wrong:
        raise SystemExit(f"error: --teacher-outputs {args.teacher_outputs} was made with another "
                         f"{wrong[0]}; write it again for this run (--teacher-only)")
    data.saved_teacher = saved
    for folder, _ in stage_dirs(args, training):
        if world()[0] == 0 and not (folder / "done.json").exists():
            lock_stage(folder)
    return tokenizer, data


def stage_dirs(args, training):
    """The stage folders this command will train in, with each stage's arguments."""
    output_dir, stages = Path(args.output_dir), []
    if training and args.teacher is None and not (output_dir / "teacher/done.json").exists() \
            and not (args.teacher_outputs and Path(args.teacher_outputs).is_file()):
        stages.append((output_dir / "teacher", teacher_stage_args(args)))
    if args.epochs > 0 and not args.teacher_only:
        teacher = args.teacher or str(output_dir / "teacher" / "best")
        stages.append((output_dir / "student", stage_args(args, teacher=teacher)))
    return stages


def check_run_folders(args, training):
    """A folder with a run is continued only with --resume and the settings it was started with
    (stage_settings): a flag FLAGS files under "run" may change; --teacher-outputs is --teacher."""
    for folder, arguments in stage_dirs(args, training):
        if not any((folder / name).exists() for name in ("log.jsonl", "last", "last.old", "best")):
            continue
        if not args.resume:
            raise SystemExit(f"error: {folder} already holds a run; pass --resume to continue "
                             "it or choose another --output-dir")
        saved_path = folder / "settings.json"
        started = find_checkpoint(folder / "last") or (folder / "done.json").exists()
        if not saved_path.exists() or not started:
            continue  # nothing resumable: the stage starts fresh with the flags given now
        saved = {**ADDED_SETTINGS, **json.loads(saved_path.read_text())}
        now = {**ADDED_SETTINGS, **stage_settings(arguments)}
        keys = (set(saved) | set(now)) - ({"teacher"} if now.get("teacher_outputs") else set())
        changed = [f"--{k.replace('_', '-')} ({saved.get(k)} -> {now.get(k)})" for k in
                   sorted(keys) if not same_setting(saved.get(k), now.get(k))]
        if changed:
            raise SystemExit(f"error: --resume: {folder} was started with other settings: "
                             f"{', '.join(changed)}; resume with the same flags or choose "
                             "another --output-dir")


def same_setting(saved, now):
    """Equal values, or two names of one existing folder (a symlink, a moved working copy)."""
    return saved == now or (isinstance(saved, str) and isinstance(now, str) and Path(saved).exists()
                            and Path(saved).resolve() == Path(now).resolve())


def lock_stage(folder):
    """Hold a stage folder until the stage ends or the process exits: two runs in one folder would
    overwrite each other's files. A gone process's lock (kill -9), or this one's, is taken over."""
    path, me = folder / "lock.json", {"pid": os.getpid(), "host": socket.gethostname()}
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            with open(path, "x") as f:  # atomic: of two runs starting at once, one creates it
                f.write(json.dumps(me))
            return atexit.register(unlock_stage, folder)  # at exit, after an error too
        except FileExistsError:
            holder = read_lock(path)
        if holder not in (None, me) and (holder["host"] != me["host"]
                                         or process_alive(holder["pid"])):
            raise SystemExit(f"error: --output-dir: {folder} is in use by process "
                             f"{holder['pid']} on {holder['host']} ({path}); wait for it to "
                             "end, or delete that file if that process is gone")
        path.unlink(missing_ok=True)


def read_lock(path):
    """A lock file's {"pid", "host"}; None when there is none or it is cut short."""
    try:
        holder = json.loads(Path(path).read_text())
        return holder if {"pid", "host"} <= set(holder) else None
    except (OSError, ValueError, TypeError):
        return None


def process_alive(pid):
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def unlock_stage(folder):
    """Release this process's lock on a stage folder (never another's); emptied, it goes too."""
    path = Path(folder) / "lock.json"
    if read_lock(path) == {"pid": os.getpid(), "host": socket.gethostname()}:
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # a stage that wrote nothing leaves no folder
            path.parent.rmdir()


def check_output_dir(args, training):
    """Training and --predict write into --output-dir: its nearest existing folder must be writable
    and, to train, have room for a checkpoint (weights and AdamW's two moments) and best/'s copy
    of the weights: 4x a local model's weights (a hub model's size is unknown before download)."""
    folder = Path(args.output_dir).resolve()
    while not folder.exists():
        folder = folder.parent
    if (training or args.predict) and not folder.is_dir():
        raise SystemExit(f"error: --output-dir {args.output_dir}: {folder} is a file")
    if (training or args.predict) and not os.access(folder, os.W_OK | os.X_OK):
        raise SystemExit(f"error: --output-dir {args.output_dir}: {folder} is not writable")
    if not training:
        return
    models = [args.teacher_model if a.stage == "teacher" else args.student
              for _, a in stage_dirs(args, training)]
    needed = sum(4 * f.stat().st_size for name in models for f in Path(name).glob("*")
                 if f.suffix in (".safetensors", ".bin"))  # none where no such folder is
    if needed > (free := shutil.disk_usage(folder).free):
        raise SystemExit(f"error: --output-dir {args.output_dir}: {free / 2**20:.0f} MiB free, "
                         f"the checkpoints need about {needed / 2**20:.0f} MiB")


# ------------------------------------------------------------------------------ the teacher cache
class TeacherCache:
    """The frozen teacher's maps and logits per training example: they never change (no dropout),
    so the first epoch computes them and later ones reuse them. Stored ragged in one flat tensor
    (views x real tokens floats per example), whatever the batch padding. The file, its checksum
    and what it catches: docs/reference.md, "The teacher cache"."""
    TENSORS = ("offsets", "maps", "logits", "filled")

    def __init__(self, lengths, views, key="", path=None):
        """Empty, for examples of these lengths: `views` maps and as many logits each."""
        self.key, self.path, self.saved = key, path, -1  # saved: examples in the file
        self.offsets = torch.tensor([0, *lengths], dtype=torch.long).cumsum(0)
        self.maps = torch.zeros(views, int(self.offsets[-1]))  # (views, total tokens)
        self.logits = torch.zeros(len(lengths), views)  # (examples, classes)
        self.filled = torch.zeros(len(lengths), dtype=torch.bool)

    @classmethod
    def for_training(cls, teacher, features, output_dir, args, config):
        """A distillation stage's cache, or None where there is none to keep."""
        if isinstance(teacher, TeacherCache):  # --teacher-outputs: complete, never saved again
            return teacher
        if teacher is None or config.beta <= 0 or not args.teacher_cache:
            return None
        path = Path(args.teacher_cache_path or Path(output_dir) / "teacher_cache.pt")
        return cls.open(path, teacher, features, config)

    @classmethod
    def open(cls, path, teacher, features, config):
        """The cache saved at `path` if read() accepts it, else a new one, saying why."""
        lengths = [len(f["input_ids"]) for f in features]
        views = teacher.config.num_labels  # one view per class, one for regression
        cache = cls(lengths, views, cls.key_for(teacher, features, config), path)
        if not Path(path).exists():
            return cache
        if problem := cache.read(teacher, features, config):
            say(f"teacher cache {path} {problem}: rebuilding it")
            return cls(lengths, views, cache.key, path)
        say(f"teacher cache {path}: {int(cache.filled.sum())}/{len(features)} examples")
        return cache

    @staticmethod
    def key_for(teacher, features, config):
        """A digest of the teacher's weights, the token ids and its IG settings (ADKDConfig)."""
        digest = hashlib.sha256(weights_digest(teacher).encode())
        for feature in features:
            digest.update(np.asarray(feature["input_ids"], dtype=np.int64).tobytes())
            digest.update(np.asarray(feature.get("token_type_ids", []), dtype=np.int64).tobytes())
        digest.update(json.dumps({"m": config.teacher_ig_steps, "top_k": config.top_k,
                                  "baseline": config.baseline}, sort_keys=True).encode())
        return digest.hexdigest()

    def checksum(self):
        digest = hashlib.sha256(self.key.encode())
        for name in self.TENSORS:
            digest.update(getattr(self, name).numpy().tobytes())
        return digest.hexdigest()

    def read(self, teacher, features, config):
        """Take the contents saved at self.path; why they cannot be used, or None. Past the
        checksum (over this run's key), the first cached examples must match the teacher's own."""
        try:
            saved = torch.load(self.path, weights_only=True)  # unpickling more could run code
        except pickle.UnpicklingError:  # weights_only refused it: not loaded, never run
            return "is damaged (it holds more than tensors and plain containers; not loaded)"
        except Exception as error:  # a truncated or garbage file: rebuild it
            return f"is damaged (it cannot be read: {str(error).splitlines()[0][:120]})"
        if not (isinstance(saved, dict) and all(torch.is_tensor(saved.get(name))
                                                for name in self.TENSORS)):
            return "is damaged (it is not a cache)"
        for name in self.TENSORS:
            setattr(self, name, saved[name])
        self.key = self.key or str(saved.get("key"))  # none given: --teacher-outputs' own meta
        if saved.get("checksum") != self.checksum():
            return ("does not match its checksum: made for another teacher, data or IG setting, "
                    "or damaged")
        filled = self.filled.nonzero().flatten()[:4].tolist()
        if not filled or teacher is None:  # teacher None: --teacher-outputs, no teacher to ask
            return None
        batch = glue_data.collate([features[i] for i in filled], config.pad_token_id)
        device = next(teacher.parameters()).device
        fresh = teacher_outputs(teacher, {k: v.to(device) for k, v in batch.items()
                                          if k != "labels"}, config)  # (maps, logits)
        cached = self.lookup(filled, fresh[0].shape[-1])
        if not all(torch.allclose(f.float().cpu(), c, atol=1e-4) for f, c in zip(fresh, cached)):
            return "is damaged (its maps differ from the teacher's own)"
        return None

    def lookup(self, indices, seq):
        """(maps (batch, views, seq), logits (batch, classes)) when all examples are cached."""
        if not bool(self.filled[indices].all()):
            return None
        maps = torch.zeros(len(indices), self.maps.shape[0], seq)
        for row, index in enumerate(indices):
            start, end = int(self.offsets[index]), int(self.offsets[index + 1])
            maps[row, :, :end - start] = self.maps[:, start:end]
        return maps, self.logits[indices]

    def store(self, indices, maps, logits):
        for row, index in enumerate(indices):
            start, end = int(self.offsets[index]), int(self.offsets[index + 1])
            self.maps[:, start:end] = maps[row, :, :end - start].float().cpu()
        self.logits[indices] = logits.float().cpu()
        self.filled[indices] = True

    def teacher_fn(self, indices):
        """distillation_step's teacher_fn for these examples: cached, or computed and stored."""
        def serve(teacher, inputs, config):
            if (cached := self.lookup(indices, inputs["input_ids"].shape[1])) is not None:
                return tuple(t.to(inputs["input_ids"].device) for t in cached)
            maps, logits = teacher_outputs(teacher, inputs, config)
            self.store(indices, maps, logits)
            return maps, logits
        return serve

    def merge(self, device):
        """Each rank filled its own examples; afterwards every rank holds them all."""
        if world()[1] == 1:
            return
        filled = self.filled.float()
        token_filled = filled.repeat_interleave(self.offsets.diff())  # (total tokens,)
        filled_total = all_reduce_sum(filled, device)
        self.maps = (all_reduce_sum(self.maps * token_filled, device)
                     / all_reduce_sum(token_filled, device).clamp_min(1))
        self.logits = (all_reduce_sum(self.logits * filled[:, None], device)
                       / filled_total.clamp_min(1)[:, None])
        self.filled = filled_total > 0

    def save(self):
        """Write the file when the cache has grown since it was last saved."""
        filled = int(self.filled.sum())
        if filled <= self.saved:
            return
        contents = {"key": self.key, "checksum": self.checksum(),
                    **{name: getattr(self, name) for name in self.TENSORS}}
        # One temporary file per process: runs sharing the cache may save it at the same moment.
        temporary = Path(f"{self.path}.{os.getpid()}.tmp")
        try:
            torch.save(contents, temporary)
        except (OSError, RuntimeError) as error:
            temporary.unlink(missing_ok=True)
            raise write_failed(self.path, error) from None
        os.replace(temporary, self.path)
        self.saved = filled


def load_teacher_outputs(path):
    """--teacher-outputs read back: a complete TeacherCache over train, then each dev split,
    whose key is the JSON of what its maps depend on (`meta`); None when there is no file yet."""
    if path is None or not Path(path).is_file():
        return None
    outputs = TeacherCache([], 1, path=path)
    problem = outputs.read(None, [], None)  # the checksum covers the key: the meta too
    if problem is None and not (outputs.key.startswith("{") and bool(outputs.filled.all())):
        problem = "is not a complete teacher-outputs file (a --teacher-cache-path file?)"
    if problem:
        raise SystemExit(f"error: --teacher-outputs {path} {problem}; write it again")
    outputs.meta, outputs.saved = json.loads(outputs.key), len(outputs.filled)
    return outputs


def outputs_meta(args, task, tokenizer, data):
    """What a teacher's saved maps depend on besides its weights; a file must match the run."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items())).encode()
    return {"task": task.name, "labels": list(task.labels or ["score"]),
            "tokenizer": hashlib.sha256(vocab).hexdigest()[:16], "max_length": args.max_length,
            "teacher_ig_steps": args.teacher_ig_steps, "top_k": args.top_k,
            "baseline": args.baseline, "data": {split: hashlib.sha256(json.dumps([[f["input_ids"],
                f.get("token_type_ids")] for f in features]).encode()).hexdigest()[:16]
                for split, features in {"train": data.train, **data.dev}.items()}}


def write_teacher_outputs(teacher, args, task, tokenizer, data):
    """The teacher's maps (as dev_maps takes them) and logits on train, then each dev split,
    saved as one complete cache with its dev metrics; returns it."""
    config, splits, rows = adkd_config(args, task, tokenizer.pad_token_id), [
        data.train, *data.dev.values()], args.eval_batch_size
    meta = {**outputs_meta(args, task, tokenizer, data), "dev_start": len(data.train),
            "dev_metrics": evaluate(teacher, task, data.dev, rows, config.pad_token_id,
                                    args.device), "width": teacher.config.hidden_size,
            "teacher": str(args.teacher), "teacher_weights": weights_digest(teacher)}
    say(f"writing {args.teacher_outputs}: the teacher's maps and logits on train and dev")
    maps = [m for split in splits for m in dev_maps(teacher, split, config, rows, teacher=True)]
    outputs = TeacherCache([m.shape[1] for m in maps], teacher.config.num_labels,
                           json.dumps(meta), args.teacher_outputs)
    outputs.maps, outputs.filled[:] = torch.cat(maps, dim=1), True  # ragged: (views, tokens)
    outputs.logits = torch.from_numpy(np.concatenate([predict_logits(
        teacher, split, rows, config.pad_token_id, args.device) for split in splits]))
    if world()[0] == 0:
        outputs.save()
        say(f"wrote {args.teacher_outputs} ({Path(args.teacher_outputs).stat().st_size:,} bytes)")
    barrier()
    outputs.meta = meta
    return outputs


def frozen_teacher(args, task, data, tokenizer):
    """(teacher, its dev metrics) for the student stage: the outputs read from --teacher-outputs,
    or the fine-tuned model, frozen (its outputs then written to --teacher-outputs if asked)."""
    teacher = data.saved_teacher
    if teacher is None:  # frozen: its maps need input gradients only
        teacher = load_model(args.teacher, task, "--teacher", tokenizer.pad_token_id)
        teacher = teacher.to(args.device).requires_grad_(False)
        if args.teacher_outputs:  # from here on this run distils from the file's contents
            teacher = write_teacher_outputs(teacher, args, task, tokenizer, data)
    metrics = teacher.meta["dev_metrics"] if isinstance(teacher, TeacherCache) else evaluate(
        teacher, task, data.dev, args.eval_batch_size, tokenizer.pad_token_id, args.device)
    say(f"teacher {args.teacher_outputs or args.teacher}: dev {glue_data.format_metrics(metrics)}")
    return teacher, metrics


def weights_digest(model):
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------- the loop's optimizer and order
def make_optimizer(model, lr, weight_decay, warmup, total_steps):
    """AdamW with linear warm-up, then linear decay; no weight decay on biases and normalisation
    layers, found by class name: families name their parameters apart (LayerNorm, ln_1, norm)."""
    norms = [m for m in model.modules() if type(m).__name__.endswith("Norm")]  # LlamaRMSNorm too
    no_decay = {id(p) for m in norms for p in m.parameters()} | {
        id(p) for n, p in model.named_parameters() if n.endswith("bias")}
    params = list(model.parameters())
    groups = [{"params": [p for p in params if id(p) not in no_decay],
               "weight_decay": weight_decay},
              {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup * total_steps), total_steps)
    return optimizer, scheduler


def fit_beta_on_first_batches(student, teacher, features, config, args, teacher_fn_for=None,
                              batches=10):
    """--beta-remedy fit: fit_beta on epoch 1's first `batches` batches, before any update.
    teacher_fn_for(indices): a cache's teacher_fn for those examples (None: the teacher)."""
    order, size = epoch_order(len(features), args.seed, 0), args.batch_size
    chunks = [order[i:i + size] for i in range(0, min(batches * size, len(order)), size)]
    inputs = [{k: v.to(args.device) for k, v in glue_data.collate(
        [features[i] for i in chunk], config.pad_token_id).items()} for chunk in chunks]
    state = rng_state()  # the fit draws dropout masks; training then draws as without it
    beta = gather_objects(fit_beta(student, teacher, inputs, config, args.attr_ratio, [
        teacher_fn_for(chunk) for chunk in chunks] if teacher_fn_for else None))[0]  # rank 0's
    set_rng_state(state)
    student.zero_grad(set_to_none=True)
    say(f"--beta-remedy fit: beta {config.beta:g} -> {beta:.4g} (beta * L_attr's gradient "
        f"{args.attr_ratio:g}x the larger logit term's on {len(chunks)} batches)")
    return beta


def epoch_order(count, seed, epoch):
    """The order of an epoch's examples: (seed, epoch) alone fix it, so --resume sees the same."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed + epoch)).tolist()


# --------------------------------------------------------------------- run folders and checkpoints
class RunFiles:
    """One training stage's folder: settings.json, log.jsonl, last/ (all --resume needs: weights,
    optimizer, scheduler, RNG, step), best/ (best dev checkpoint), done.json. Only rank 0 writes."""
    active = None  # the stage training now, or last: what a Ctrl-C reports

    def __init__(self, output_dir, args, tokenizer, steps_per_epoch):
        self.dir, self.args, self.tokenizer = Path(output_dir), args, tokenizer
        self.steps_per_epoch, self.rank = steps_per_epoch, world()[0]
        self.last_dir, self.best_dir = self.dir / "last", self.dir / "best"
        self.log_path = self.dir / "log.jsonl"

    def start(self, student, optimizer, scheduler):
        """(step, best) of the checkpoint in last/ with --resume; else a fresh start."""
        step, best = 0, {"metric": -math.inf, "metrics": None, "step": 0}
        checkpoint = find_checkpoint(self.last_dir) if self.args.resume else None
        if checkpoint is not None:
            try:  # weights_only: unpickling more than tensors and plain containers could run code
                state = torch.load(checkpoint / "trainer_state.pt", weights_only=True)
            except pickle.UnpicklingError:
                raise SystemExit(f"error: {checkpoint / 'trainer_state.pt'} holds more than "
                                 "tensors and plain containers (or is damaged); refused unread, "
                                 "as loading it could run code") from None
            reloaded = AutoModelForSequenceClassification.from_pretrained(
                checkpoint, attn_implementation=ATTENTION)
            student.load_state_dict(reloaded.state_dict())
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            step, best = state["step"], state["best"]
            set_rng_state(state["rng"][self.rank])
            if self.rank == 0:
                kept = [r for r in read_log(self.log_path) if r["step"] <= step]  # the rest: redone
                self.log_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
                print(f"resumed {self.dir} at step {step}")
        barrier()  # every rank has read before rank 0 writes
        if checkpoint is None and self.rank == 0:
            if self.args.resume and self.dir.exists():
                print(f"{self.dir}: nothing resumable was saved yet; starting it fresh")
            for name in ("log.jsonl", "settings.json", "best", "best.tmp", "best.old", "last",
                         "last.tmp", "last.old"):
                path = self.dir / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "settings.json").write_text(json.dumps(stage_settings(self.args), indent=1))
        self.norms = [r["grad_norm"] for r in read_log(self.log_path) if "grad_norm" in r]
        self.log({"step": step, "started": time.time()})  # epoch wall times are read from it
        self.saved_step = step if checkpoint is not None else None
        return step, best

    def progress_bar(self, total_steps, step):
        RunFiles.active = self
        self.progress = tqdm(total=total_steps, initial=step, desc=self.dir.name,
                             dynamic_ncols=True, disable=self.rank != 0)
        return self.progress

    def log(self, record):
        try:
            if self.rank == 0:
                with open(self.log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
        except OSError as error:
            raise write_failed(self.log_path, error) from None

    def fitted_beta(self, student, teacher, cache, features, config):
        """beta; with --beta-remedy fit, fit_beta_on_first_batches' (logged; --resume reads it)"""
        if self.args.beta_remedy != "fit":
            return config.beta
        logged = [r["fitted_beta"] for r in read_log(self.log_path) if "fitted_beta" in r]
        if not logged:
            logged = [fit_beta_on_first_batches(student, teacher, features, config, self.args,
                                                cache.teacher_fn if cache else None)]
            self.log({"step": 0, "fitted_beta": logged[0]})
        return logged[0]

    def log_losses(self, step, scheduler, temperature, loss, terms, norms):
        self.log({"step": step, "epoch": step / self.steps_per_epoch,
                  "lr": scheduler.get_last_lr()[0], "temperature": temperature,
                  "loss": loss.item(), **{k: v.item() for k, v in terms.items()},
                  "grad_norm": norms})
        self.norms.append(norms)  # the beta warning's window and T: bench/notes/beta_warning.md
        aim = self.args.attr_ratio if self.args.beta_remedy else 1.0  # warn if R passes 2 * aim
        if len(self.norms) == 10 and (ratio := attr_dominance(self.norms, 2 * aim)) is not None:
            self.log({"step": step, "warning": {"attr_dominance": ratio, "logged_steps": 10}})
            say(f"warning: beta*L_attr's gradient is {ratio:.1f}x max(CE's, KD's) (median, 10 "
                f"logged steps): CE and KD get ~1/{ratio:.0f} of each clipped update; lower --beta"
                + (" or --attr-ratio" if self.args.beta_remedy else " or pass --beta-remedy fit"))

    def record_evaluation(self, student, step, metrics, best, main_metric):
        """Log a dev evaluation; save best/ when it improves (a NaN never does)."""
        improved = math.isfinite(metrics[main_metric]) and metrics[main_metric] > best["metric"]
        if improved:
            best = {"metric": metrics[main_metric], "metrics": metrics, "step": step}
            if self.rank == 0:
                save_model_atomically(student, self.tokenizer, self.best_dir)
        self.log({"step": step, "epoch": step / self.steps_per_epoch, "dev": metrics,
                  "best": improved, "time": time.time()})
        say(f"step {step}: dev {glue_data.format_metrics(metrics)}{'  (best)' * improved}")
        return best

    def save_last(self, student, optimizer, scheduler, step, best, cache):
        """Write the resumable checkpoint (and the teacher cache, when it has grown)."""
        if cache is not None:
            cache.merge(self.args.device)  # on every rank
            if self.rank == 0:
                cache.save()
        rng_states = gather_objects(rng_state())
        if self.rank == 0:
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "step": step, "best": best, "rng": rng_states}
            save_model_atomically(student, self.tokenizer, self.last_dir, state)
        barrier()
        self.saved_step = step

    def finish(self, student, best):
        """Check the replicas, write done.json, drop what no later step can use: the
        optimizer state (and the teacher's last weights). Returns `best`."""
        if world()[1] > 1:  # DDP keeps the replicas equal; check it rather than trust it
            digests = gather_objects(weights_digest(student))
            if len(set(digests)) > 1:
                raise RuntimeError(f"ranks ended with different weights: {digests}")
            self.log({"step": -1, "ranks": world()[1], "weights_sha256": digests[0]})
        if best["metrics"] is None:
            raise SystemExit(f"error: no dev evaluation in {self.dir} gave a finite score; its "
                             f"final weights are in {self.last_dir}")
        if self.rank == 0:
            (self.dir / "done.json").write_text(json.dumps(best, indent=1))
            unlock_stage(self.dir)
            if self.args.stage == "teacher":
                shutil.rmtree(self.last_dir, ignore_errors=True)
            else:
                (self.last_dir / "trainer_state.pt").unlink(missing_ok=True)
        barrier()
        return best


def save_model_atomically(model, tokenizer, directory, trainer_state=None):
    """Write a save_pretrained folder (plus trainer state) next to its target, then rename it
    into place: an interruption never leaves a half-written checkpoint where a good one was."""
    directory = Path(directory)
    temporary, previous = Path(f"{directory}.tmp"), Path(f"{directory}.old")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        if trainer_state is not None:
            torch.save(trainer_state, temporary / "trainer_state.pt")
    except (OSError, RuntimeError) as error:
        shutil.rmtree(temporary, ignore_errors=True)
        raise write_failed(directory, error) from None
    if directory.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(directory, previous)
    os.replace(temporary, directory)
    shutil.rmtree(previous, ignore_errors=True)


def write_failed(path, error):
    """One line for a failed write (a full disk makes torch say only "iostream error")."""
    reason = str(error).strip().splitlines()[0][-160:] if str(error).strip() else repr(error)
    return SystemExit(f"error: writing {path} failed ({reason}; is the disk full?); what was "
                      "there before is kept")


def find_checkpoint(directory):
    """The checkpoint at `directory`, or the copy a crash mid-rename left beside it."""
    directory = Path(directory)
    candidates = (directory, directory.with_name(directory.name + ".old"))
    return next((c for c in candidates if (c / "trainer_state.pt").exists()), None)


def read_log(path):
    """The records of a log.jsonl; a partial last line (a full disk leaves one) is dropped."""
    lines = Path(path).read_text().splitlines() if Path(path).exists() else []
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a blank line is skipped, as is a partial last one
            if line.strip() and number < len(lines):
                raise SystemExit(f"error: {path}:{number}: not a JSON record") from None
    return records


def rng_state():
    """Every generator's state, as tensors and plain containers (RunFiles.start loads them)."""
    name, key, *rest = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, key.tolist(), *rest),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    name, key, *rest = state["numpy"]
    np.random.set_state((name, np.array(key, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------- losses: checks and gradients
def check_finite(terms, step, last_dir, device):
    """Stop before the update when a loss term is NaN or infinite, on every rank at once."""
    finite = torch.tensor([float(torch.isfinite(value)) for value in terms.values()])
    finite = all_reduce_sum(finite, device) == world()[1]
    for (name, value), ok in zip(terms.items(), finite):
        if not ok:
            last = last_dir if Path(last_dir).exists() else "not written yet"
            raise FloatingPointError(f"step {step}: loss term '{name}' is {value.item()}; stopped "
                                     f"before the update, the last good checkpoint is {last}")


def term_gradients(terms, config, model, measure):
    """Each weighted term of Eq. 12's gradient w.r.t. the student's weights, before loss.backward()
    frees the graph (logging steps only). In one process the last, costly one (L_attr's double
    backward) is not computed: term_norms derives it from .grad, as the terms sum to the loss."""
    if not measure:
        return None
    weights = term_weights(config.alpha, config.beta, config.use_ce, config.use_kd)
    parameters = [p for p in model.parameters() if p.requires_grad]
    derived = list(terms)[-1] if world()[1] == 1 else None
    grads = {name: torch.autograd.grad(weights[name] * value, parameters, retain_graph=True,
                                       materialize_grads=True)  # zeros where a weight is unused
             for name, value in terms.items() if name != derived}
    return {"parameters": parameters, "grads": grads, "derived": derived}


def term_norms(term_grads, model):
    """{term: gradient norm} from term_gradients, after loss.backward() filled .grad."""
    if term_grads is None:
        return {}
    norms = {name: norm_of(grads) for name, grads in term_grads["grads"].items()}
    if term_grads["derived"] is not None:  # the loss's gradient less the other terms'
        rest = [torch.zeros_like(p) if p.grad is None else p.grad.clone()
                for p in term_grads["parameters"]]
        for grads in term_grads["grads"].values():
            for g, grad in zip(rest, grads):
                g -= grad
        norms[term_grads["derived"]] = norm_of(rest)
    return dict(sorted(norms.items()))


class GradientSum:
    """One optimizer step over --grad-accum micro-batches: each one's loss, weighted by its share
    of the step's examples, is backward()-ed into .grad. CE, KD and L_attr with --attr-reduction
    batch are means over examples, so the sum is the whole batch's gradient (to float rounding;
    dropout draws masks per micro-batch); --attr-reduction entries divides each micro-batch by its
    own non-zero teacher entries, as under DDP each rank's slice. Loss, terms, norms: of the sum."""

    def __init__(self, model, config, measure):
        self.model, self.config, self.measure = model, config, measure
        self.student = getattr(model, "module", model)  # .module: under DDP
        self.loss, self.terms, self.term_grads, self.share = 0.0, {}, None, 1.0

    def micro_batches(self, indices, parts):
        """`indices` in `parts` near-equal micro-batches (fewer if there are fewer examples).
        Under DDP gradients are averaged over ranks once, in the last micro-batch's backward
        (no_sync before it), so ranks with fewer micro-batches than others still meet there."""
        micro = [part.tolist() for part in np.array_split(np.array(indices), parts) if len(part)]
        for number, part in enumerate(micro, 1):
            self.share = len(part) / len(indices)
            last = number == len(micro) or not hasattr(self.model, "no_sync")
            with contextlib.nullcontext() if last else self.model.no_sync():
                yield part

    def backward(self, loss, terms):
        scaled = {name: self.share * value for name, value in terms.items()}
        term_grads = term_gradients(scaled, self.config, self.student, self.measure)
        (self.share * loss).backward()
        self.loss = self.loss + self.share * loss.detach()
        self.terms = {name: self.terms.get(name, 0.0) + value.detach()
                      for name, value in scaled.items()}
        if self.term_grads is None:
            self.term_grads = term_grads
        elif term_grads is not None:  # sum each term's gradients over the micro-batches
            for name, grads in term_grads["grads"].items():
                summed = self.term_grads["grads"][name]
                self.term_grads["grads"][name] = tuple(a + b for a, b in zip(summed, grads))

    def total(self):
        """(loss, terms, {term: gradient norm}) of the step, after every micro-batch."""
        return self.loss, self.terms, term_norms(self.term_grads, self.student)


# ------------------------------------------------------------------------------- several processes
# Under `torchrun --nproc_per_node N adkd.py ...` every process trains a DistributedDataParallel
# copy of the student on its slice of each global batch (--batch-size stays the global batch);
# evaluation is sharded and gathered; only rank 0 writes files. The rank and world size are
# read once, from torchrun's environment, so they hold before the process group is joined too.
WORLD = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def world():
    return WORLD


def init_distributed(args):
    """Join the process group torchrun set up (gloo on CPU, nccl on GPU); a no-op otherwise."""
    if world()[1] == 1 or dist.is_initialized():
        return
    if args.device.startswith("cuda"):
        args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(args.device)
    dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")


class DistributedModel(DistributedDataParallel):
    """DDP's wrapper, which also hands out the input embeddings Eq. 2 starts from."""
    def get_input_embeddings(self):
        return self.module.get_input_embeddings()


def barrier():
    if world()[1] > 1:
        dist.barrier()


def gather_objects(obj):
    if world()[1] == 1:
        return [obj]
    gathered = [None] * world()[1]
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_sum(tensor, device):
    """Sum a CPU tensor over ranks (nccl needs it on the GPU for the trip)."""
    if world()[1] == 1:
        return tensor
    on_device = tensor.to(device, copy=True)  # on the CPU .to() would hand back `tensor` itself
    dist.all_reduce(on_device)
    return on_device.to(tensor.device)


# -------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict_logits(model, features, batch_size, pad_token_id, device):
    """Logits for encoded examples, in order, (examples, classes); sharded over ranks."""
    rank, size = world()
    shard = list(range(rank, len(features), size))
    was_training = model.training
    model.eval()
    outputs = [torch.zeros(0, model.config.num_labels)]
    for start in range(0, len(shard), batch_size):
        batch = glue_data.collate([features[i] for i in shard[start:start + batch_size]],
                                  pad_token_id)
        batch.pop("labels", None)
        outputs.append(model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu())
    model.train(was_training)
    logits = np.zeros((len(features), model.config.num_labels), dtype=np.float32)
    for indices, shard_logits in gather_objects((shard, torch.cat(outputs).numpy())):
        logits[indices] = shard_logits
    return logits


def evaluate(model, task, dev_sets, batch_size, pad_token_id, device):
    """GLUE metrics on every dev split; the first split's are unprefixed (MNLI: matched
    first). Predictions that are not finite give NaN metrics."""
    metrics = {}
    for index, (split, features) in enumerate(dev_sets.items()):
        logits = predict_logits(model, features, batch_size, pad_token_id, device)
        labels = np.array([f["label"] for f in features])
        predictions = glue_data.predictions_from_logits(logits, task)
        for name, value in glue_data.compute_metrics(task, predictions, labels).items():
            metrics[name if index == 0 else f"{split}/{name}"] = value
    return metrics


def dev_maps(model, features, config, batch_size, teacher, completeness=False):
    """Per-example maps (views, length) of a model on encoded examples (model_maps). With
    completeness, per example (maps, class scores (views,), completeness (views, 2)) instead:
    per class the sum of the attributions beside F_c(x) - F_c(x'), which Eq. 1's completeness
    makes equal once m is large enough (explain prints both)."""
    was_training = model.training
    model.eval()
    results = []
    for start in range(0, len(features), batch_size):
        batch = glue_data.collate(features[start:start + batch_size], config.pad_token_id)
        inputs = {k: v.to(next(model.parameters()).device) for k, v in batch.items()
                  if k != "labels"}
        batch_maps, logits, attributions = model_maps(model, inputs, config, teacher)
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        maps = [m[:, :n] for m, n in zip(batch_maps.detach().float().cpu(), lengths)]
        if completeness:
            maps = zip(maps, *ig_completeness(model, inputs, logits, attributions, config))
        results += maps
    model.train(was_training)
    return results


def ig_completeness(model, inputs, logits, attributions, config):
    """Eq. 1 for a batch IG explained: class scores F_c(x) (batch, views), and per class the
    sum of the attributions beside F_c(x) - F_c(x'), x' the baseline at every position."""
    with torch.no_grad():  # E' as integrated_gradients builds it (zeros: baseline="zero")
        base = model.get_input_embeddings()(inputs["input_ids"].clone().fill_(config.pad_token_id))
        base_logits = embedded_forward(model, inputs, base * (config.baseline == "pad"))
    scores = class_scores(logits, config.is_regression).detach()
    rise = scores - class_scores(base_logits, config.is_regression)
    sums = attributions.detach().sum(dim=(2, 3))
    return scores.float().cpu(), torch.stack([sums, rise], -1).float().cpu()


def teacher_dev_maps(teacher, dev_sets, config, args):
    """The teacher's maps on this rank's share of the first dev split, computed once."""
    if teacher is None or not args.dev_attribution_gap:
        return None
    (split, features), (rank, size) = next(iter(dev_sets.items())), world()
    if isinstance(teacher, TeacherCache):  # --teacher-outputs: dev follows train
        mine, first = range(rank, len(features), size), teacher.meta["dev_start"]
        return {"features": features[rank::size], "maps": [teacher.lookup(
            [first + i], len(features[i]["input_ids"]))[0][0] for i in mine]}
    return {"features": features[rank::size], "maps": dev_maps(
        teacher, features[rank::size], config, args.eval_batch_size, teacher=True)}


def attribution_gap(student, teacher_dev, config, args):
    """{"attribution_gap": Eq. 11 between the teacher's and the student's dev maps, per
    example and per view}: 0 for equal maps, at most 2. What AD-KD trains for."""
    if teacher_dev is None:
        return {}
    gaps = map_gaps(teacher_dev["maps"], dev_maps(student, teacher_dev["features"], config,
                                                  args.eval_batch_size, teacher=False))
    totals = gather_objects((sum(gaps), len(gaps)))
    return {"attribution_gap": sum(t for t, _ in totals) / max(1, sum(n for _, n in totals))}


def map_gaps(teacher_maps, student_maps):
    """Eq. 11 per example between two lists of (views, length) maps, divided by the views."""
    return [float(attribution_loss(t[None], s[None], reduction="batch")) / len(t)
            for t, s in zip(teacher_maps, student_maps)]


def write_predictions(model, task, test_sets, args, pad_token_id, output_dir):
    """GLUE submission files, `index<TAB>prediction`, one per test split (MNLI-m, MNLI-mm): a
    line per test row, the file's ids (which read_data checked) in its order, or no file."""
    written = []
    for (split, (examples, features)), stem in zip(test_sets.items(), task.submission_names):
        logits = predict_logits(model, features, args.eval_batch_size, pad_token_id, args.device)
        predictions = glue_data.predictions_from_logits(logits, task)
        if len(predictions) != len(examples) or not np.isfinite(predictions).all():
            raise SystemExit(f"error: {split}: predictions missing or not finite; no file written")
        written.append(Path(output_dir) / f"{stem}.tsv")
        if world()[0] == 0:
            glue_data.write_submission(written[-1], task, examples, predictions)
        say(f"wrote {written[-1]}")
    return written


def say(*message):
    """Print on rank 0, on a line of its own: tqdm.write lifts a progress bar out of the way."""
    if world()[0] == 0:
        tqdm.write(" ".join(map(str, message)))
        sys.stdout.flush()


def stop_interrupted(step=None, checkpoint=None, where=""):
    """Ctrl-C: one line, no traceback, saying where training stopped and how to go on."""
    if world()[0] == 0:
        stopped = "before training started" if step is None else f"at step {step}{where}"
        print(f"\ninterrupted {stopped}; last checkpoint: {checkpoint or 'none yet'}; "
              "run the same command with --resume to continue", file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)


# ----------------------------------------------------------------- explain: maps of a checkpoint
def shown_views(maps, scores, class_names):
    """(view, label) pairs to show: a binary task's two maps are equal, so one stands for both."""
    if not torch.isfinite(scores).all():
        return []
    if len(maps) == 2 and torch.allclose(maps[0], maps[1], atol=1e-6):
        return [(1, f"either class; p({class_names[1]}) = {float(scores[1]):.2f}")]
    return [(view, f"{name} ({float(score):.2f})")
            for view, (name, score) in enumerate(zip(class_names, scores))]


def explanation_html(examples, class_names):
    """A self-contained page: per example, one row of shaded tokens per model and class.
    examples: [(title, [(model name, tokens, maps, scores, completeness), ...]), ...]."""
    def shade(tokens, values):
        top = float(values.max()) or 1.0
        return " ".join(f'<span style="background:rgba(214,39,40,{float(v) / top:.2f})" '
                        f'title="{float(v):.3f}">{html.escape(t)}</span>'
                        for t, v in zip(tokens, values))
    body = []
    for title, rows in examples:
        body.append(f"<h3>{html.escape(title)}</h3><table>")
        for name, tokens, maps, scores, _ in rows:
            views = shown_views(maps, scores, class_names)
            cells = [(html.escape(label), shade(tokens, maps[view])) for view, label in views]
            for label, shaded in cells or [("predictions are not finite", "")]:
                body.append(f"<tr><td><b>{html.escape(name)}</b></td><td>{label}</td>"
                            f"<td>{shaded}</td></tr>")
        body.append("</table>")
    return ("<!doctype html><meta charset='utf-8'><title>AD-KD attribution maps</title><style>"
            "body{font-family:sans-serif}td{padding:3px 8px;vertical-align:top}"
            "span{padding:0 1px}</style><p>Token shade: the class's attribution map (IG, Eq. 6 "
            "over all dimensions, L2-normalised), relative to its largest token (hover for the "
            "value), with the model's probability for the class; one row per model and class. "
            "A binary task's two maps are identical, so one row stands for both.</p>"
            + "\n".join(body))


# ------------------------------------------------ explain --faithfulness: do the maps show reasons?
def top_count(percent, n):
    """How many of n real tokens k % is: rounded up, so every k takes at least one (0 of 0)."""
    return (percent * n + 99) // 100


def ranked(values, positions):
    """`positions` ordered by `values` at them, largest first; ties keep the text order."""
    return positions[torch.sort(values[positions], descending=True, stable=True).indices]


def faithfulness(model, features, special_ids, config, *, reference=None, random_orders=3,
                 seed=0, batch_size=32, percents=(1, 5, 10, 20, 50), desc=None):
    """ERASER's comprehensiveness and sufficiency (DeYoung et al., ACL 2020) of a model's own
    map of its predicted class c (IG with m = config.ig_steps, Eq. 6 over all dimensions), as
    AOPC: the mean over k in `percents` of the fall of p(c) (regression: the absolute change
    of the score) when the top k % of the real tokens (rounded up) are removed from the input
    (comprehensiveness; higher: the map found what the model uses) or are all that is kept
    (sufficiency; lower is better); tokens in `special_ids` stay. "*_random": the same for
    `random_orders` seeded random orders. With `reference`, this function's result for another
    model on the same features, agreement() too. Returns the summary and, per example, the
    maps, the predicted class ("views"), its score and the real tokens' positions."""
    generators = [torch.Generator().manual_seed(seed + r) for r in range(random_orders)]
    device = next(model.parameters()).device
    result, falls = {"maps": [], "views": [], "scores": [], "real": []}, []
    for start in tqdm(range(0, len(features), batch_size), desc=desc, disable=desc is None):
        chunk, erased = features[start:start + batch_size], []
        maps = dev_maps(model, chunk, config, batch_size, teacher=False)
        scores = class_scores(torch.from_numpy(predict_logits(
            model, chunk, batch_size, config.pad_token_id, device)), config.is_regression)
        rows, views = torch.arange(len(chunk)), scores.argmax(-1)  # 0 for regression
        for feature, tokens, view in zip(chunk, maps, views.tolist()):
            special = [i for i, t in enumerate(feature["input_ids"]) if t in special_ids]
            real = torch.tensor(sorted(set(range(len(tokens[0]))) - set(special)), dtype=torch.long)
            orders = [ranked(tokens[view], real)] + [
                real[torch.randperm(len(real), generator=g)] for g in generators]
            for order in orders:  # removed, not masked: every per-token list loses them
                for count in (top_count(percent, len(real)) for percent in percents):
                    for keep in (order[count:], order[:count]):  # removed, kept
                        keep = sorted(special + keep.tolist())
                        erased.append({key: [values[i] for i in keep] for key, values
                                       in feature.items() if isinstance(values, list)})
            result["real"].append(real)
        after = class_scores(torch.from_numpy(predict_logits(
            model, erased, batch_size, config.pad_token_id, device)),
            config.is_regression).view(len(chunk), -1, scores.shape[-1])[rows, :, views]
        fall = scores[rows, views][:, None] - after  # (chunk, orders x k x 2)
        falls.append((fall.abs() if config.is_regression else fall).view(
            len(chunk), 1 + random_orders, len(percents), 2))
        result["maps"] += maps
        result["views"] += views.tolist()
        result["scores"] += scores[rows, views].tolist()
    falls = torch.cat(falls)  # (examples, the map's order + random orders, k, removed / kept)
    result["summary"] = summary = {
        "examples": len(features), "comprehensiveness": float(falls[:, 0, :, 0].mean()),
        "comprehensiveness_random": float(falls[:, 1:, :, 0].mean()),
        "sufficiency": float(falls[:, 0, :, 1].mean()),
        "sufficiency_random": float(falls[:, 1:, :, 1].mean())}
    if reference is not None:
        summary.update(agreement(result, reference, config.is_regression))
    return result


def agreement(result, reference, is_regression):
    """How two faithfulness() results on the same examples agree: the share with the same predicted
    class (regression: the scores' mean absolute difference), the mean Spearman correlation of the
    two maps of the reference's class over the real tokens (skipped where either is constant, as
    under two real tokens) and the mean overlap of their top 20 % real tokens (rounded up)."""
    rhos, overlaps = [], []
    for own, theirs, view, real in zip(result["maps"], reference["maps"], reference["views"],
                                       reference["real"]):
        own, theirs = own[view], theirs[view]
        if len(own[real].unique()) > 1 and len(theirs[real].unique()) > 1:
            rhos.append(glue_data.spearman(own[real].numpy(), theirs[real].numpy()))
        if len(real):
            tops = [set(ranked(m, real)[:top_count(20, len(real))].tolist()) for m in (own, theirs)]
            overlaps.append(len(tops[0] & tops[1]) / top_count(20, len(real)))
    own, theirs = np.array(result["scores"]), np.array(reference["scores"])
    return {**({"score_difference": float(np.abs(own - theirs).mean())} if is_regression else
               {"same_prediction": float(np.mean(np.equal(result["views"], reference["views"])))}),
            "spearman": float(np.mean(rhos)) if rhos else math.nan,
            "top20_overlap": float(np.mean(overlaps)) if overlaps else math.nan}


# explain's flags: its own, and the rows of the training table it shares, with its defaults.
EXPLAIN_FLAGS = [("checkpoints and examples", [
    shared("--task", help="GLUE task the checkpoints were trained on (or own data flags)"),
    flag("--model", "run", action="append", required=True, metavar="[NAME=]PATH",
         help="a checkpoint (repeatable; the first is the reference for agreement)"),
    flag("--text", "run", action="append", nargs="+", default=[], metavar="SENTENCE",
         help="one sentence, or two for a pair task (repeatable)"),
    flag("--dev", "run", nargs="+", default=[], metavar="ROW",
         help="dev rows by 0-based number (0 7: rows 0 and 7), or all"),
    shared("--data-dir"),
    shared("--max-length", help="maximum tokens per example (at most the models' positions)"),
    shared("--ig-steps", default=None, help="m of Eq. 2 (default: 32; 8 with --faithfulness)"),
    shared("--batch-size", default=32, help="examples per IG batch"),
    shared("--device"),
    flag("--html", "run", help="also write the maps to this HTML file")]),
    ("faithfulness of the maps on --dev, one row per model", [
        flag("--faithfulness", "run", action="store_true", help="ERASER's comprehensiveness "
             "and sufficiency (AOPC) beside random orders' and agreement with the first model"),
        flag("--random-orders", "run", ">= 1", type=int, default=3, help="random orders averaged"),
        flag("--json", "run", help="also write the rows to this JSON file")]),
    (OWN_DATA_FLAGS[0], [row for row in OWN_DATA_FLAGS[1]  # not those of test files or metrics
                         if row[0] not in ("--test-file", "--metric", "--id-column")])]


def explain_args(argv):
    p = make_parser(EXPLAIN_FLAGS, prog=f"{command_name()} explain", description="print (and "
                    "draw) the per-class token attribution maps of one or more checkpoints, or "
                    "measure how faithful they are (--faithfulness)")
    args = p.parse_args(argv, argparse.Namespace(test_file=None, metric=None, id_column=None))
    args.ig_steps = (8 if args.faithfulness else 32) if args.ig_steps is None else args.ig_steps
    check_bounds(args, EXPLAIN_FLAGS)
    if args.faithfulness and args.text:
        raise SystemExit("error: --faithfulness measures --dev rows (or all), not --text")
    if not args.dev and (args.faithfulness or not args.text):
        raise SystemExit(f"error: give --dev{'' if args.faithfulness else ' or --text'}")
    return args


def explain_config(args, task, tokenizer):
    """IG as explain runs it: m = --ig-steps, the [PAD] baseline, rows per pass as in training."""
    return ADKDConfig(ig_steps=args.ig_steps, is_regression=task.is_regression,
                      pad_token_id=tokenizer.pad_token_id,
                      ig_max_rows=256 if args.device.startswith("cuda") else 32)


def explain_model(model, tokenizer, examples, args, task):
    """Per example, a model's (tokens, maps, class scores, completeness) (dev_maps), each encoded
    alone (a --text may be one sentence where dev rows are pairs), unlabelled as a --text is."""
    features = [{**glue_data.encode([example], tokenizer, args.max_length)[0], "label": None}
                for example in examples]
    explained = dev_maps(model.to(args.device), features, explain_config(args, task, tokenizer),
                         args.batch_size, teacher=False, completeness=True)
    return [(tokenizer.convert_ids_to_tokens(feature["input_ids"]), *result)
            for feature, result in zip(features, explained)]


def explain_main(argv):
    args = explain_args(argv)
    task = glue_data.task_from_args(args, say)
    examples = glue_data.explain_rows(args, task, say, world()[1] == 1)
    models = [(spec.split("=", 1) if "=" in spec else (spec, spec)) for spec in args.model]
    loaded = []
    for name, path in models:  # each model pads as its tokenizer does
        tokenizer = pretrained(AutoTokenizer, path, "--model")
        check_tokenizer_fits(tokenizer, pretrained(AutoConfig, path, "--model"), path, "--model")
        loaded.append((name, tokenizer, load_model(path, task, "--model", tokenizer.pad_token_id)))
    args.max_length = min([args.max_length] + [model.config.max_position_embeddings
                                                for _, _, model in loaded])
    if args.faithfulness:
        return faithfulness_main(args, task, examples, loaded)
    saved = pretrained(AutoConfig, models[0][1], "--model").id2label  # e.g. own labels no, yes
    class_names = glue_data.class_names(task, saved)
    explained = [explain_model(model, tokenizer, examples, args, task)
                 for _, tokenizer, model in loaded]
    pages = []
    for index, example in enumerate(examples):
        label = example.label
        gold = label if task.is_regression or label is None else class_names[label]
        gold = "" if label is None else f"  (gold: {gold})"
        title = example.text_a + (f"  ||  {example.text_b}" if example.text_b else "") + gold
        print(f"\n== {title}")
        rows = [(name, *per_model[index]) for (name, _, _), per_model in zip(loaded, explained)]
        for name, tokens, maps, scores, completeness in rows:
            views = shown_views(maps, scores, class_names)
            if not views:
                print(f"{name}: predictions are not finite (NaN or inf): no map")
            for view, view_label in views:
                ig_sum, rise = completeness[view].tolist()
                print(f"{name} [{view_label}; sum IG {ig_sum:.3f} vs F(x)-F(x') {rise:.3f}] "
                      + " ".join(f"{t}:{float(v):.2f}" for t, v in zip(tokens, maps[view])))
        pages.append((title, rows))
    if args.html:
        Path(args.html).write_text(explanation_html(pages, class_names))
        print(f"wrote {args.html}")
    return pages


def faithfulness_main(args, task, dev, loaded):
    """One row per model: how faithful its own maps are, and how it agrees with the first."""
    tokenizer = loaded[0][1]
    for _, other, _ in loaded[1:]:
        check_same_tokenizer(tokenizer, other)
    features = glue_data.encode(dev, tokenizer, args.max_length)
    special_ids = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}  # [UNK] is a word
    config = explain_config(args, task, tokenizer)
    rows, reference = [], None
    for spec, (name, _, model) in zip(args.model, loaded):
        result = faithfulness(model.to(args.device), features, special_ids, config,
                              reference=reference, random_orders=args.random_orders,
                              batch_size=args.batch_size, desc=name)
        reference = reference or result
        rows.append({"model": name, "path": spec.split("=", 1)[-1], **result["summary"]})
        print(f"{name}: " + " ".join(f"{key}={value:.4f}" if isinstance(value, float) else
                                     f"{key}={value}" for key, value in result["summary"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"task": task.name, "ig_steps": args.ig_steps, "random_orders": args.random_orders,
             "max_length": args.max_length, "dev_rows": args.dev, "models": rows}, indent=1) + "\n")
        print(f"wrote {args.json}")
    return rows


def cli():  # `python adkd.py ...`, and the `adkd` command that `pip install .` makes
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    # load_model says in one line what a load initialised; transformers' table would repeat it
    hf_logging.get_logger("transformers.modeling_utils").addFilter(
        lambda record: "LOAD REPORT" not in record.getMessage())
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        run = RunFiles.active
        if run is None:
            stop_interrupted()
        saved = None if run.saved_step is None else f"step {run.saved_step}"
        stop_interrupted(run.progress.n, saved, f" of {run.dir}")
    if dist.is_initialized():
        barrier()  # no rank tears the group down while another still writes or gathers
        dist.destroy_process_group()


if __name__ == "__main__":
    cli()
