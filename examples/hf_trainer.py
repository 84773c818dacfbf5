"""AD-KD inside the Hugging Face Trainer: `ADKDTrainer` is a Trainer whose training loss is
Eq. 12, computed by adkd.py's `distillation_step`. Copy the class into your own Trainer script;
it needs Part I of adkd.py, `attr_dominance` (the beta warning) and `norm_of` only.

    pip install -r examples/requirements.txt     # accelerate, which the Trainer needs
    python examples/hf_trainer.py --teacher runs/mrpc/teacher/best \
        --student google/bert_uncased_L-6_H-768_A-12 --task mrpc --data-dir glue_data

The command line is adkd.py's (`python adkd.py --help`: a GLUE task or your own files, the
loss and loop flags with the same defaults), with a teacher already fine-tuned on the task
(--teacher); --batch-size is per device here, and --grad-accum must divide it. It writes a
normal Trainer folder into --output-dir (default runs/<task>-trainer): checkpoint-N/ (also
every --save-every steps), the best student by the task's main dev metric, trainer_state.json
whose log history holds ce, kd and attr, eval_results.json, and with --predict adkd.py's
submission files in predictions/.
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import adkd  # noqa: E402
import glue_data  # noqa: E402
from adkd import (attr_dominance, distillation_step, norm_of, teacher_outputs,  # noqa: E402
                  term_weights)


class ADKDTrainer(Trainer):
    """A Trainer whose training loss is AD-KD's Eq. 12; evaluation is the student's own.
    teacher_fn(teacher, inputs, config) -> (maps, logits) may serve the teacher from a cache.
    The step needs only the model's inputs and labels, which remove_unused_columns keeps.
    The first 10 logging steps also measure each weighted term's gradient norm (three more
    backward passes each), as adkd.py logs them: it warns when beta*L_attr's drowns CE and KD."""

    beta_window = 10  # logging steps whose gradient norms decide the beta warning (0: none)
    warn_above = 2.0  # its T; after fit_beta at ratio R, 2 R (adkd.py's rule)

    def __init__(self, *args, teacher, adkd_config, teacher_fn=teacher_outputs, **kwargs):
        super().__init__(*args, **kwargs)
        # frozen, without dropout, beside the student: its maps need input gradients only
        self.teacher = teacher.requires_grad_(False).eval().to(self.args.device)
        self.adkd_config, self.teacher_fn = adkd_config, teacher_fn
        # The loss is each batch's mean, so the Trainer must divide it by the accumulation
        # steps; with loss kwargs it would count num_items_in_batch (tokens, for an LM) instead.
        self.model_accepts_loss_kwargs = False
        self.term_sums, self.term_batches, self.norms = {}, 0, []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:  # evaluation runs without gradients: the student's CE and logits
            return super().compute_loss(model, inputs, return_outputs)
        loss, terms = distillation_step(model, self.teacher, inputs, self.adkd_config,
                                        self.teacher_fn)
        for name, value in terms.items():
            self.term_sums[name] = self.term_sums.get(name, 0.0) + value.item()
        self.term_batches += 1
        step, every = self.state.global_step + 1, self.state.logging_steps
        if step % every == 0 and step <= self.beta_window * every:  # the beta warning's window
            self.norms.append(self.term_norms(model, terms))
        return loss

    def term_norms(self, model, terms):
        """Each weighted term's gradient norm over the student's weights (before clipping)."""
        config = self.adkd_config
        weights = term_weights(config.alpha, config.beta, config.use_ce, config.use_kd)
        parameters = [p for p in model.parameters() if p.requires_grad]
        norms = {}
        for name, value in terms.items():
            grads = torch.autograd.grad(weights[name] * value, parameters, retain_graph=True,
                                        allow_unused=True)
            norms[name] = norm_of(grads)
        return norms

    def log(self, logs, *args, **kwargs):
        """A training record also gets each term of Eq. 12, averaged since the last one; the
        one that ends the beta warning's window gets attr_dominance when it warns."""
        if "loss" in logs and self.term_batches:
            logs.update({name: total / self.term_batches for name, total in self.term_sums.items()})
            self.term_sums, self.term_batches = {}, 0
        window_ends = self.state.global_step == self.beta_window * self.state.logging_steps
        ratio = attr_dominance(self.norms, self.warn_above) if window_ends else None
        if "loss" in logs and ratio is not None:
            logs["attr_dominance"] = ratio
            if self.is_world_process_zero():
                print(f"warning: beta*L_attr's gradient is {ratio:.1f}x max(CE's, KD's) (median, "
                      f"{len(self.norms)} logged batches): CE and KD get ~1/{ratio:.0f} of each "
                      "clipped update; lower --beta (or --attr-ratio), or --beta-remedy fit",
                      flush=True)
        super().log(logs, *args, **kwargs)


def cached_teacher():
    """A teacher_fn computing each example's teacher maps and logits once (the teacher is
    frozen: they never change), kept on the CPU. Examples are known by their tokens, so no
    index column has to reach the step."""
    cache = {}

    def teacher_fn(teacher, inputs, config):
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        tokens = torch.stack([inputs[k] for k in ("input_ids", "token_type_ids") if k in inputs], 1)
        keys = [row[:, :n].cpu().numpy().tobytes() for row, n in zip(tokens, lengths)]
        if not all(key in cache for key in keys):  # a batch with a new example: compute it all
            maps, logits = teacher_outputs(teacher, inputs, config)
            for key, row_maps, row_logits, n in zip(keys, maps.detach().cpu(),
                                                    logits.detach().cpu(), lengths):
                cache[key] = (row_maps[:, :n], row_logits)
        seq = tokens.shape[-1]
        maps = torch.stack([F.pad(cache[key][0], (0, seq - cache[key][0].shape[-1]))
                            for key in keys])
        logits = torch.stack([cache[key][1] for key in keys])
        return maps.to(tokens.device), logits.to(tokens.device)
    return teacher_fn


def main(argv=None):
    """adkd.py's command line, trained by ADKDTrainer; returns the best student's dev metrics."""
    args = adkd.parse_args(argv)
    if args.teacher_outputs:  # served by example index, which the Trainer's batches do not carry
        raise SystemExit("error: --teacher-outputs: the Trainer example needs --teacher (its "
                         "batches do not say which examples they hold); adkd.py reads the file")
    if args.teacher is None:
        raise SystemExit("error: --teacher: give a teacher fine-tuned on the task "
                         "(python adkd.py --teacher-only ... makes one)")
    output_dir = args.output_dir
    args, task = adkd.resolve_config(args)
    args.output_dir = output_dir or str(Path("runs") / f"{task.name}-trainer")
    if args.batch_size % args.grad_accum:  # the Trainer accumulates micro-batches of one size
        raise SystemExit(f"error: --grad-accum {args.grad_accum} must divide --batch-size "
                         f"{args.batch_size} in the Trainer")
    tokenizer, data = adkd.prepare(args, task)  # adkd.py's early checks; reads the data
    config = adkd.adkd_config(args, task, tokenizer.pad_token_id)
    teacher = adkd.load_model(args.teacher, task, "--teacher", tokenizer.pad_token_id)
    adkd.seed_everything(args.seed)
    student = adkd.load_model(args.student, task, "--student", tokenizer.pad_token_id)
    every = {"strategy": "steps", "steps": args.eval_every} if args.eval_every else \
        {"strategy": "epoch", "steps": None}
    training_args = TrainingArguments(
        output_dir=args.output_dir, learning_rate=args.lr, num_train_epochs=args.epochs,
        max_steps=args.max_steps or -1, gradient_accumulation_steps=args.grad_accum,
        per_device_train_batch_size=args.batch_size // args.grad_accum,
        per_device_eval_batch_size=args.eval_batch_size, warmup_steps=args.warmup,
        weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm, seed=args.seed,
        bf16=args.bf16, use_cpu=args.device == "cpu", logging_steps=args.log_every,
        eval_strategy=every["strategy"], eval_steps=every["steps"],
        save_strategy=every["strategy"], save_steps=every["steps"], save_total_limit=2,
        load_best_model_at_end=True, metric_for_best_model=task.main_metric, report_to="none")

    def dev_metrics(prediction):
        predictions = glue_data.predictions_from_logits(prediction.predictions, task)
        return glue_data.compute_metrics(task, predictions, prediction.label_ids)

    class AnnealTemperature(TrainerCallback):  # --anneal-temperature: tau falls to 1, per epoch
        def on_epoch_begin(self, _, state, control, **kwargs):
            if args.anneal_temperature:
                config.temperature = adkd.annealed_temperature(args.temperature,
                                                               int(state.epoch or 0), args.epochs)

    class SaveEvery(TrainerCallback):  # --save-every: also a checkpoint every N steps
        def on_step_end(self, _, state, control, **kwargs):
            if args.save_every and state.global_step % args.save_every == 0:
                control.should_save = True

    trainer = ADKDTrainer(
        model=student, args=training_args, train_dataset=data.train,
        eval_dataset=next(iter(data.dev.values())), processing_class=tokenizer,
        data_collator=lambda features: glue_data.collate(features, tokenizer.pad_token_id),
        compute_metrics=dev_metrics, callbacks=[AnnealTemperature(), SaveEvery()], teacher=teacher,
        adkd_config=config, teacher_fn=cached_teacher() if args.teacher_cache else teacher_outputs)
    trainer.beta_window = 10 if args.grad_norms else 0  # --no-grad-norms: no norms, no warning
    if args.beta_remedy == "fit":  # on adkd.py's first batches; --resume fits again, alike
        config.beta = adkd.fit_beta_on_first_batches(
            trainer.model, trainer.teacher, data.train, config, args,
            teacher_fn_for=lambda chunk: trainer.teacher_fn)
        trainer.warn_above = 2 * args.attr_ratio
    try:
        trainer.train(resume_from_checkpoint=args.resume or None)
    except KeyboardInterrupt:  # Ctrl-C: one line, as adkd.py says it
        adkd.stop_interrupted(trainer.state.global_step, get_last_checkpoint(args.output_dir))
    trainer.save_model()  # the best checkpoint, into --output-dir
    trainer.save_state()
    metrics = trainer.evaluate()
    trainer.save_metrics("eval", metrics)
    if args.predict and trainer.is_world_process_zero():  # from the best student, as adkd.py
        adkd.write_predictions(trainer.model, task, data.test, args, tokenizer.pad_token_id,
                               Path(args.output_dir) / "predictions")
    adkd.unlock_stage(Path(args.output_dir) / "student")  # prepare's lock, and its empty folder
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
