"""Peak memory and time per optimizer step of the paper's configuration, to plan hardware.

    python bench/memory.py                      # every configuration below (tens of GB, hours)
    python bench/memory.py --only adkd_m1_cached,vanilla_kd --steps 2 --warmup 1
    python bench/memory.py --quick              # tiny random BERTs (seconds; what the tests run)

Models: random weights of the paper's shapes, nothing is downloaded: a 12-layer, 768-wide BERT
teacher and a 6-layer, 768-wide student (BertConfig's defaults otherwise: 12 heads, 3072-wide
feed-forward, vocabulary 30522; dropout on in the student, as in training), 2 classes, K = 768.
One full-length random batch of --batch 32 x --length 128 tokens (seed 0; speed.fixed_batch).
A step is train()'s: GradientSum over the micro-batches, distillation_step with the teacher
cache's teacher_fn, gradient clipping, AdamW (make_optimizer); no per-term gradient norms
(a logging step with --grad-norms also holds a copy of the student's gradient per term).

Configurations (--only picks some):
  vanilla_kd[_bf16]                     beta = 0: the time reference (ratios are to vanilla_kd)
  adkd_m{1,8}_{fresh,cached}[_accum4][_bf16]
      m            the Riemann steps of IG (Eq. 2), student's and teacher's
      fresh        the teacher's maps computed in the step: the first epoch, --no-teacher-cache
      cached       served by the teacher cache: every later epoch (filled here with unit maps,
                   so its peak never includes a fresh step's)
      accum4       --grad-accum 4: four micro-batches of 8 per optimizer step (any _accumN works)
      bf16         --bf16 autocast

Each configuration runs in its own process, which caps its address space at --cap-gib
(RLIMIT_AS; default 20 GiB, or the memory available at the start if less): one that needs more
stops at its first failed allocation and is reported as "does not fit in N GiB" instead of
swapping or being killed. The address space exceeds the resident memory by the libraries'
mappings (the `peak_vm_mb` field shows by how much). Peak memory (`peak_mb`) is the process's
resident high-water mark, models, optimizer state and Python included (VmHWM: ru_maxrss would
also count the launching process, whose memory a child inherits until exec); `before_step_mb`
is the same before the first step, so the difference is what the step itself holds. On a GPU
(--device cuda) both are torch.cuda.max_memory_allocated instead, and a configuration that does
not fit is one that raises out-of-memory. Writes JSON, prints a markdown table.
"""
import argparse
import json
import math
import re
import resource
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402  (puts the repository root on sys.path, sets HF_HUB_OFFLINE)

import torch  # noqa: E402

import adkd  # noqa: E402
import glue_data  # noqa: E402

CASES = ["vanilla_kd", "vanilla_kd_bf16"] + [
    f"adkd_m{m}_{teacher}{accum}{bf16}" for m in (1, 8) for teacher in ("cached", "fresh")
    for accum in ("", "_accum4") for bf16 in ("", "_bf16")]
OUT_OF_MEMORY = ("can't allocate memory", "cannot allocate memory", "out of memory",
                 "memoryerror", "bad_alloc", "failed to allocate")


def case_settings(name):
    """(m, teacher maps "fresh"/"cached"/None, micro-batches, bf16) from a case's name."""
    match = re.fullmatch(r"(?:vanilla_kd|adkd_m(\d+)_(fresh|cached))(?:_accum(\d+))?(_bf16)?",
                         name)
    if match is None:
        raise SystemExit(f"error: --only: unknown configuration {name!r} (see --help)")
    m, teacher, accum, bf16 = match.groups()
    return int(m or 0), teacher, int(accum or 1), bool(bf16)


def settings_row(name, options):
    m, teacher_maps, accum, bf16 = case_settings(name)
    return {"case": name, "m": m or None, "teacher_maps": teacher_maps, "grad_accum": accum,
            "bf16": bf16, "cap_gib": options.cap_gib, "fits": True}


def build_models(classes, quick):
    """(teacher, student, vocabulary size, task): the paper's shapes, or speed.py's tiny BERTs."""
    if quick:
        return speed.build_models(classes, quick=True)
    from transformers import BertConfig, BertForSequenceClassification

    def bert(layers, seed):
        torch.manual_seed(seed)
        return BertForSequenceClassification(BertConfig(
            num_hidden_layers=layers, num_labels=classes, attn_implementation=adkd.ATTENTION))
    task = glue_data.get_task("mnli" if classes == 3 else "mrpc")
    return bert(12, 0), bert(6, 1), BertConfig().vocab_size, task


def memory_status(key):
    """A /proc/self/status field in MB (VmHWM: resident high-water mark, VmPeak: address
    space high-water mark); None where there is no /proc."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def available_gib():
    try:
        with open("/proc/meminfo") as meminfo:
            return next(int(line.split()[1]) for line in meminfo
                        if line.startswith("MemAvailable:")) / 2**20
    except (OSError, StopIteration):
        return math.inf


def peak_mb(device):
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    hwm = memory_status("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(name, options):
    """One configuration in this process: its JSON row."""
    m, teacher_maps, accum, bf16 = case_settings(name)
    device = options.device
    torch.set_num_threads(options.threads)
    if not device.startswith("cuda"):
        cap = int(options.cap_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    row = settings_row(name, options)
    try:
        row.update(measure(m, teacher_maps, accum, bf16, options))
    except (MemoryError, RuntimeError) as error:  # torch.cuda.OutOfMemoryError is one
        message = f"{type(error).__name__}: {error}".splitlines()[0]
        if not any(words in message.lower() for words in OUT_OF_MEMORY):
            raise
        row.update(fits=False, error=message[:300])
    return row


def measure(m, teacher_maps, accum, bf16, options):
    device = options.device
    teacher, student, vocab, task = build_models(options.classes, options.quick)
    teacher.to(device).eval().requires_grad_(False)
    student.to(device).train()
    batch = {k: v.to(device) for k, v in
             speed.fixed_batch(options.batch, options.length, vocab, options.classes).items()}
    width = teacher.config.hidden_size
    ig_max_rows = options.ig_max_rows or (256 if device.startswith("cuda") else 32)
    config = adkd.ADKDConfig(alpha=0.9, beta=10.0 if m else 0.0, temperature=2.0, top_k=width,
                             ig_steps=max(m, 1), teacher_ig_steps=max(m, 1),
                             is_regression=task.is_regression, ig_max_rows=ig_max_rows)
    indices = list(range(options.batch))
    cache = None
    if teacher_maps == "cached":  # unit maps and zero logits: the cost of serving, not of filling
        views = task.num_labels
        cache = adkd.TeacherCache([options.length] * options.batch, views)
        maps = adkd.normalise_maps(torch.rand(options.batch, views, options.length),
                                   torch.ones(options.batch, options.length))
        cache.store(indices, maps, torch.zeros(options.batch, views))
    total = options.warmup + options.steps
    optimizer, scheduler = adkd.make_optimizer(student, 1e-5, 0.01, 0.1, total)

    def one_step():  # train()'s inner loop, less its files and logs
        summed = adkd.GradientSum(student, config, measure=False)
        for micro in summed.micro_batches(indices, accum):
            micro_batch = {k: v[micro] for k, v in batch.items()}
            teacher_fn = cache.teacher_fn(micro) if cache else adkd.teacher_outputs
            with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=bf16):
                loss, terms = adkd.distillation_step(student, teacher, micro_batch, config,
                                                     teacher_fn)
            summed.backward(loss, terms)
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    before = peak_mb(device)
    for _ in range(options.warmup):
        one_step()
    times = [speed.timed(one_step, device) for _ in range(options.steps)]
    return {"ms_per_step": round(1000 * statistics.median(times), 1),
            "ms_all": [round(1000 * t, 1) for t in times],
            "peak_mb": round(peak_mb(device), 1), "before_step_mb": round(before, 1),
            "peak_vm_mb": None if device.startswith("cuda") else memory_status("VmPeak"),
            "peak_kind": ("cuda max allocated" if device.startswith("cuda")
                          else "process resident high-water mark (VmHWM)")}


def launch(name, options, argv):
    """Run one configuration in a child process; a child that died of memory is a row too."""
    command = [sys.executable, __file__, "--case", name, *argv]
    output = subprocess.run(command, capture_output=True, text=True)
    lines = output.stdout.strip().splitlines()
    if output.returncode == 0 and lines:
        return json.loads(lines[-1])
    if any(words in output.stderr.lower() for words in OUT_OF_MEMORY):
        return {**settings_row(name, options), "fits": False,
                "error": output.stderr.strip().splitlines()[-1][:300]}
    raise SystemExit(f"configuration {name} failed:\n{output.stderr[-3000:]}")


def table(results, options):
    cap = "the GPU" if options.device.startswith("cuda") else f"{options.cap_gib:g} GiB"
    lines = ["| configuration | m | teacher maps | micro-batches | bf16 | peak memory (GB) "
             "| before the first step (GB) | s per step | x vanilla KD |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        settings = (f"| {r['case']} | {r['m'] or '-'} | {r['teacher_maps'] or 'no maps'} "
                    f"| {r['grad_accum']} | {'yes' if r['bf16'] else 'no'} ")
        if not r["fits"]:
            lines.append(settings + f"| does not fit in {cap} | | | |")
            continue
        ratio = f"{r['x_vanilla_kd']:.2f}" if r.get("x_vanilla_kd") is not None else "-"
        lines.append(settings + f"| {r['peak_mb'] / 1024:.2f} | {r['before_step_mb'] / 1024:.2f} "
                     f"| {r['ms_per_step'] / 1000:.2f} | {ratio} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny random BERTs (the tests)")
    parser.add_argument("--batch", type=int, default=32, help="examples per optimizer step")
    parser.add_argument("--length", type=int, default=128, help="tokens per example")
    parser.add_argument("--classes", type=int, choices=[2, 3], default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ig-max-rows", type=int, default=None,
                        help="interpolated rows per IG forward (adkd.py's: 256 GPU, 32 CPU)")
    parser.add_argument("--cap-gib", type=float, default=None,
                        help="address-space cap per configuration (CPU), GiB; default 20, or "
                             "the memory available now if that is less")
    parser.add_argument("--only", default=None, help="comma-separated configuration names")
    parser.add_argument("--json", default=str(speed.ROOT / "bench" / "memory.json"),
                        help="where to write the results")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.cap_gib is None:  # never more than is free: swapping would time nothing
        options.cap_gib = min(20.0, round(available_gib(), 1))
    if options.steps < 1 or options.warmup < 0 or options.cap_gib <= 0:
        parser.error("--steps must be >= 1, --warmup >= 0, --cap-gib > 0")
    if options.case:  # a child process: one configuration, one JSON line
        print(json.dumps(run_case(options.case, options)))
        return None
    names = options.only.split(",") if options.only else CASES
    for name in names:
        case_settings(name)  # an unknown name stops here, before anything runs
    passthrough = [f"--{key.replace('_', '-')}={value}" for key, value in vars(options).items()
                   if key in ("batch", "length", "classes", "steps", "warmup", "threads",
                              "device", "cap_gib") or (key == "ig_max_rows" and value)]
    passthrough += ["--quick"] if options.quick else []
    results = []
    for name in names:
        results.append(launch(name, options, passthrough))
        r = results[-1]
        shown = (f"{r['peak_mb'] / 1024:.2f} GB peak, {r['ms_per_step'] / 1000:.2f} s/step"
                 if r["fits"] else f"does not fit: {r['error']}")
        print(f"  {name:<28} {shown}", flush=True)
    vanilla = next((r["ms_per_step"] for r in results if r["case"] == "vanilla_kd" and r["fits"]),
                   None)
    for r in results:
        r["x_vanilla_kd"] = (round(r["ms_per_step"] / vanilla, 2) if r["fits"] and vanilla
                             else None)
    setup = {"quick": options.quick, "batch": options.batch, "length": options.length,
             "classes": options.classes, "device": options.device, "threads": options.threads,
             "steps": options.steps, "warmup": options.warmup, "cap_gib": options.cap_gib,
             "torch": torch.__version__}
    print(f"\nsetup: {json.dumps(setup)}\n\n{table(results, options)}")
    Path(options.json).write_text(json.dumps({"setup": setup, "results": results}, indent=1)
                                  + "\n")
    print(f"wrote {options.json}")
    return results


if __name__ == "__main__":
    main()
