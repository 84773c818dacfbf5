"""How the IG chunk size (--ig-max-rows) changes the student's cost at m = 8 on this machine.

    python bench/chunk_sweep.py             # the timings
    python bench/chunk_sweep.py --profile   # torch.profiler tables for 16 and 128 rows

The 3-layer MiniLM student (bench/make_student.py), 3 classes, batch 16, length 64, m = 8:
integrated_gradients with create_graph=True, maps, and the backward through them, timed for
chunks of 16 rows (one Riemann step per forward) up to 128 rows (all 8 steps in one forward),
twice each, after one warm-up. Prints seconds per chunk size.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import adkd  # noqa: E402
import speed  # noqa: E402

torch.set_num_threads(2)
_, student, vocab, _ = speed.build_models(3, quick=False)
student.train()
batch = speed.fixed_batch(16, 64, vocab, 3)


def student_ig_step(max_rows):
    attributions, _ = adkd.integrated_gradients(
        student, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
        steps=8, create_graph=True, max_rows=max_rows)
    adkd.attribution_maps(attributions, batch["attention_mask"]).sum().backward()
    student.zero_grad()


student_ig_step(16)
if "--profile" in sys.argv:
    from torch.profiler import ProfilerActivity, profile
    for rows in (16, 128):
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            student_ig_step(rows)
        print(f"{rows} rows per chunk")
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
    sys.exit()
seconds = {rows: [] for rows in (16, 32, 64, 128)}
for _ in range(2):
    for rows in seconds:
        start = time.perf_counter()
        student_ig_step(rows)
        seconds[rows].append(round(time.perf_counter() - start, 2))
print({f"{rows} rows": times for rows, times in seconds.items()})
