"""The ruler for AD-KD's cost: training-step time of vanilla KD and AD-KD, same batches,
same models.

    python bench/speed.py                 # MiniLM 6-layer teacher, 3-layer student,
                                          # batch 16, length 64
    python bench/speed.py --quick         # tiny random BERTs (seconds; what the tests run)
    python bench/speed.py --flops         # also count each step's matrix-product FLOPs

Every case runs in its own process (so its peak memory is its own), times --steps training
steps (forward, backward, optimizer) after --warmup untimed ones, on one fixed batch, and
reports the median. Cases:
  vanilla_kd         beta = 0: teacher forward + student forward/backward
  adkd_m{m}_fresh    AD-KD, teacher maps computed in the step (the first epoch, or
                     --no-teacher-cache)
  adkd_m{m}_cached   AD-KD, teacher maps and logits from the cache (every epoch after the first)
  adkd_m8_unbatched  as adkd_m8_cached, but one Riemann step per forward pass
                     (--ig-max-rows = batch)
  adkd_m8_rows32     as adkd_m8_cached, with adkd.py's CPU default of 32 rows (2 steps) per forward
  teacher_ig_m{m}    the teacher's Integrated Gradients and maps alone
  public_m{m}        a re-creation of the public AD-KD code's step structure: a separate forward
                     for CE/KD, per Riemann step a forward of both models with the embedding output
                     scaled by a, one backward per class (one view for two classes), no cache
Ratios are to vanilla_kd with the same number of classes. Prints a table, writes JSON.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.flop_counter import flop_registry  # noqa: E402

import adkd  # noqa: E402
import glue_data  # noqa: E402

CASES = [(name, classes) for classes in (2, 3) for name in (
    "vanilla_kd", "adkd_m1_fresh", "adkd_m1_cached", "adkd_m8_fresh", "adkd_m8_cached",
    "public_m1", "public_m8")]
CASES += [("adkd_m8_unbatched", 3), ("adkd_m8_rows32", 3),
          ("teacher_ig_m1", 3), ("teacher_ig_m8", 3), ("teacher_ig_m32", 3)]


class MatmulFlops(TorchDispatchMode):
    """Sums torch's FLOP formulas (matrix products, attention) over every op run inside it.

    torch's own FlopCounterMode also tracks modules with global backward hooks, which
    autograd.grad (the IG gradients) refuses, so this counts without module tracking.
    """

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func._overloadpacket in flop_registry:
            self.total += flop_registry[func._overloadpacket](*args, **kwargs, out_val=out)
        return out


def build_models(classes, quick):
    """(teacher, student, vocab size): MiniLM 6-layer and its 3-layer cut, or tiny random BERTs."""
    task = glue_data.get_task("mnli" if classes == 3 else "mrpc")
    if quick:
        from transformers import BertConfig, BertForSequenceClassification
        def tiny(layers, seed):
            torch.manual_seed(seed)
            return BertForSequenceClassification(BertConfig(
                vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                intermediate_size=64, num_labels=classes, attn_implementation=adkd.ATTENTION))
        return tiny(2, 0), tiny(1, 1), 100, task
    import make_student
    source = make_student.minilm_folder()
    student_dir = ROOT / "bench" / "models" / "minilm-l3"
    if not (student_dir / "config.json").exists():
        make_student.make_student(source, str(student_dir))
    torch.manual_seed(0)
    teacher, student = adkd.load_model(source, task), adkd.load_model(str(student_dir), task)
    return teacher, student, teacher.config.vocab_size, task


def fixed_batch(batch_size, length, vocab, classes):
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000 if vocab > 1000 else 5, vocab, (batch_size, length),
                              generator=generator)
    input_ids[:, 0], input_ids[:, -1] = 101 if vocab > 1000 else 2, 102 if vocab > 1000 else 3
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, length // 2:] = 1
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "token_type_ids": token_type_ids,
            "labels": torch.randint(0, classes, (batch_size,), generator=generator)}


def scaled(embedding_output, a):
    out = embedding_output * a
    # a frozen teacher still needs d/d(input)
    return out if out.requires_grad else out.requires_grad_(True)


def public_style_step(student, teacher, batch, classes, steps, top_k, beta=10.0, alpha=0.9,
                      temperature=2.0):
    """The public code's structure, re-created for timing (see the module docstring)."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    # At m = 1 the public code takes the saliency from this forward; at m > 1 it runs m more.
    hooks = [m.bert.embeddings.register_forward_hook(lambda mod, i, out: scaled(out, 1.0))
             for m in (teacher, student)]
    student_out = student(**inputs, output_hidden_states=True)
    teacher_out = teacher(**inputs, output_hidden_states=True)
    for hook in hooks:
        hook.remove()
    loss = ((1 - alpha) * F.cross_entropy(student_out.logits, batch["labels"])
            + alpha * adkd.kd_loss(student_out.logits, teacher_out.logits.detach(), temperature))
    views = 1 if classes == 2 else classes
    teacher_sum, student_sum = [0] * views, [0] * views
    for k in range(1, steps + 1):
        if steps == 1:
            t_out, s_out = teacher_out, student_out
        else:
            hooks = [m.bert.embeddings.register_forward_hook(
                         lambda mod, i, out, a=k / steps: scaled(out, a))
                     for m in (teacher, student)]
            t_out = teacher(**inputs, output_hidden_states=True)
            s_out = student(**inputs, output_hidden_states=True)
            for hook in hooks:
                hook.remove()
        t_hidden, s_hidden = t_out.hidden_states[0], s_out.hidden_states[0]
        t_log_probs, s_log_probs = t_out.logits.log_softmax(-1), s_out.logits.log_softmax(-1)
        for c in range(views):
            teacher_sum[c] = teacher_sum[c] + torch.autograd.grad(
                -t_log_probs[:, c].mean(), t_hidden, retain_graph=True)[0]
            student_sum[c] = student_sum[c] + torch.autograd.grad(
                -s_log_probs[:, c].mean(), s_hidden, create_graph=True, retain_graph=True)[0]
    for c in range(views):
        t_map = ((teacher_sum[c] / steps * t_hidden.detach()).abs()
                 .topk(top_k, dim=-1).values.norm(dim=-1))
        s_map = (student_sum[c] / steps * s_hidden).norm(dim=-1)
        t_map, s_map = F.normalize(t_map, dim=1), F.normalize(s_map, dim=1)
        loss = loss + beta * F.mse_loss(t_map, s_map, reduction="sum") / (t_map != 0).sum()
    return loss


def timed(one_step, device):
    """Seconds one call of one_step takes (a GPU's queue drained before and after)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    one_step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run_case(name, classes, options):
    torch.set_num_threads(options.threads)
    teacher, student, vocab, task = build_models(classes, options.quick)
    device = options.device
    teacher.to(device).eval().requires_grad_(False)
    student.to(device).train()
    cpu_batch = fixed_batch(options.batch, options.length, vocab, classes)
    batch = {k: v.to(device) for k, v in cpu_batch.items()}
    width = teacher.config.hidden_size
    steps = int(name.split("_m")[1].split("_")[0]) if "_m" in name else 1
    config = adkd.ADKDConfig(alpha=0.9, beta=10.0, temperature=2.0, top_k=width, ig_steps=steps,
                             teacher_ig_steps=steps, is_regression=task.is_regression,
                             ig_max_rows=256)
    cache = None
    if name == "vanilla_kd":
        config.beta = 0.0
    if name.endswith(("_cached", "_unbatched", "_rows32")):
        lengths = [options.length] * options.batch
        cache = adkd.TeacherCache(lengths, task.num_labels)
    if name.endswith("_unbatched"):
        config.ig_max_rows = options.batch
    if name.endswith("_rows32"):
        config.ig_max_rows = 32
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)
    indices = list(range(options.batch))

    def one_step():
        if name.startswith("teacher_ig"):
            attributions, _ = adkd.integrated_gradients(
                teacher, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                steps=steps, max_rows=256)
            adkd.attribution_maps(attributions, batch["attention_mask"], width)
            return
        if name.startswith("public"):
            loss = public_style_step(student, teacher, batch, classes, steps, width)
        else:
            teacher_fn = cache.teacher_fn(indices) if cache else adkd.teacher_outputs
            loss, _ = adkd.distillation_step(student, teacher, batch, config, teacher_fn)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if cache is not None:  # fill the cache as the first epoch would
        one_step()
    for _ in range(options.warmup):
        one_step()
    times = [timed(one_step, device) for _ in range(options.steps)]
    flops = None
    if options.flops:  # matrix-product FLOPs of one more step: what the arithmetic alone costs
        with MatmulFlops() as counter:
            one_step()
        flops = counter.total
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"case": name, "classes": classes,
            "ms_per_step": 1000 * statistics.median(times) if times else None,
            "ms_all": [round(1000 * t, 1) for t in times], "peak_mb": round(peak_mb, 1),
            "peak_kind": "cuda allocated" if device.startswith("cuda") else "process RSS",
            "flop_per_step": flops,
            "gflop_per_step": None if flops is None else round(flops / 1e9, 2)}


def milliseconds(result, width):
    return (f"{result['ms_per_step']:{width}.1f}" if result["ms_per_step"] is not None
            else f"{'-':>{width}}")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny random BERTs instead of MiniLM")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6,
                        help="timed steps per case (median reported); "
                             "0 with --flops counts FLOPs only")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--flops", action="store_true",
                        help="also count one step's matrix-product FLOPs "
                             "(torch.utils.flop_counter)")
    parser.add_argument("--only", default=None, help="comma-separated case names to run")
    parser.add_argument("--json", default=str(ROOT / "bench" / "speed.json"),
                        help="where to write the results")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--classes", type=int, default=2, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.steps < 1 and not options.flops:
        parser.error("--steps must be at least 1 (0 only together with --flops)")
    if options.case:  # a child process: one case, one JSON line
        print(json.dumps(run_case(options.case, options.classes, options)))
        return
    cases = [(n, c) for n, c in CASES if not options.only or n in options.only.split(",")]
    results = []
    passthrough = [f"--batch={options.batch}", f"--length={options.length}",
                   f"--steps={options.steps}", f"--warmup={options.warmup}",
                   f"--threads={options.threads}", f"--device={options.device}"]
    passthrough += ["--flops"] if options.flops else []
    for name, classes in cases:
        command = [sys.executable, __file__, "--case", name, "--classes", str(classes),
                   *passthrough]
        command += ["--quick"] if options.quick else []
        output = subprocess.run(command, capture_output=True, text=True)
        if output.returncode != 0:
            raise SystemExit(f"case {name} ({classes} classes) failed:\n{output.stderr[-3000:]}")
        results.append(json.loads(output.stdout.strip().splitlines()[-1]))
        print(f"  {name:<18} {classes} classes  {milliseconds(results[-1], 9)} ms/step", flush=True)
    vanilla = {r["classes"]: r["ms_per_step"] for r in results if r["case"] == "vanilla_kd"}
    vanilla_flop = {r["classes"]: r["flop_per_step"] for r in results if r["case"] == "vanilla_kd"}
    for r in results:
        r["x_vanilla_kd"] = (round(r["ms_per_step"] / vanilla[r["classes"]], 2)
                             if r["ms_per_step"] and vanilla.get(r["classes"]) else None)
        if options.flops and vanilla_flop.get(r["classes"]):
            r["flop_x_vanilla_kd"] = round(r["flop_per_step"] / vanilla_flop[r["classes"]], 2)
    setup = {"quick": options.quick, "batch": options.batch, "length": options.length,
             "device": options.device, "threads": options.threads, "torch": torch.__version__,
             "steps": options.steps}
    print(f"\nsetup: {json.dumps(setup)}")
    print(f"{'case':<18} {'classes':>7} {'ms/step':>10} {'x vanilla KD':>13} {'peak MB':>9}")
    for r in results:
        ratio = f"{r['x_vanilla_kd']:.2f}" if r["x_vanilla_kd"] is not None else "-"
        flop = (f"  {r['gflop_per_step']:8.1f} GFLOP ({r['flop_x_vanilla_kd']:.2f}x)"
                if r.get("flop_x_vanilla_kd") is not None else "")
        print(f"{r['case']:<18} {r['classes']:>7} {milliseconds(r, 10)} {ratio:>13} "
              f"{r['peak_mb']:>9.0f}{flop}")
    Path(options.json).write_text(json.dumps({"setup": setup, "results": results}, indent=1) + "\n")
    print(f"wrote {options.json}")


if __name__ == "__main__":
    main()
