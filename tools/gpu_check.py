#!/usr/bin/env python
"""The GPU check (``make gpu-check``): on a CUDA machine, everything this project has only measured
or tested on the CPU, in one run that writes one JSON.

    python tools/gpu_check.py --output gpu_check.json                 # on the GPU machine
    python tools/gpu_check.py --output cpu.json --table-size 32 --table-iters 1 \\
        --method-size 32 --method-iters 2 --tables losses --methods ce disalign   # a quick CPU run

1. The benchmark tables of PERFORMANCE.md at their sizes (tools/benchmark_training.py and
   tools/benchmark_losses.py, the same commands; their JSON or table goes into the output).
2. Every method trained --method-iters iterations (default 200) at --method-size px (512) with the
   real R-50 configs (ADE20K DeepLabV3+: CE, BLV, PAT, MEDOE stage 1, DisAlign and MEDOE's MOE on
   them; LVIS Mask R-CNN: baseline, cosine, BLV, DisAlign on baseline and cosine) on synthetic
   sets with ADE20K's 150 and LVIS v1's 1203 class profiles (tools/make_synthetic_data.py
   --profile), random initial weights, with SOLVER.AMP.ENABLED False and True: exit status,
   seconds per iteration, the last losses and whether they are finite, the final evaluation.
3. A 2-GPU launch (tools/train_net.py --num-gpus 2) of the CE model.

Without CUDA it runs all it can on the CPU: the tables and the fp32 runs (at the sizes given), and
records each skipped part with the reason ("skipped": "needs CUDA ..."), so that the check runs in
the test suite and cannot rot. Exit status 0 when every part that ran succeeded, 1 otherwise.
"""
import argparse
import datetime
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, "tools")

# PERFORMANCE.md's commands: (name, tool, arguments). --size / --iters (--shape / --repeats for the
# losses) are replaced by --table-size / --table-iters when given.
_ADE = ["configs/ade20k/deeplab_v3_plus_R_50.yaml", "configs/ade20k/blv_deeplab.yaml",
        "configs/ade20k/pat_deeplab.yaml", "configs/ade20k/disalign_deeplab.yaml",
        "configs/ade20k/medoe_deeplab.yaml", "configs/ade20k/medoe_deeplab_moe.yaml"]
_LVIS = ["configs/lvis/mask_rcnn_R_50_FPN_baseline.yaml", "configs/lvis/mask_rcnn_R_50_FPN_cosine.yaml",
         "configs/lvis/mask_rcnn_R_50_FPN_blv.yaml", "configs/lvis/mask_rcnn_R_50_FPN_disalign.yaml",
         "configs/lvis/mask_rcnn_R_50_FPN_cosine_disalign.yaml"]


def _configs(paths):
    return [a for p in paths for a in ("--config-file", p)]


TABLES = [
    ("ade20k_training", "benchmark_training.py", _configs(_ADE) + ["--size", "256", "--iters", "15"]),
    ("ade20k_inference", "benchmark_training.py",
     ["--inference"] + _configs([_ADE[0], _ADE[3], _ADE[4], _ADE[5]]) + ["--size", "512", "--iters", "15"]),
    ("lvis_training", "benchmark_training.py", _configs(_LVIS) + ["--backbone-forward", "--size", "256", "--iters", "15"]),
    ("lvis_stage2_128", "benchmark_training.py",
     _configs([_LVIS[0], _LVIS[3]]) + ["--backbone-forward", "--size", "128", "--iters", "15"]),
    ("lvis_stage2_512", "benchmark_training.py",
     _configs([_LVIS[0], _LVIS[3]]) + ["--backbone-forward", "--size", "512", "--iters", "9"]),
    ("losses", "benchmark_losses.py", ["--shape", "2", "150", "128", "128", "--repeats", "20", "--no-progress"]),
    ("segformer_training", "benchmark_training.py",
     _configs([f"configs/ade20k/{n}segformer_mit_b3.yaml" for n in ("", "blv_", "pat_", "medoe_", "disalign_")])
     + ["--size", "512", "--batch", "1", "--warmup", "1", "--iters", "3", "--backbone-forward",
        "MODEL.SEM_SEG_HEAD.NORM", "BN"]),
    ("segformer_inference", "benchmark_training.py",
     ["--inference"] + _configs([f"configs/ade20k/{n}.yaml" for n in
                                 ("segformer_mit_b3", "medoe_segformer_mit_b3", "medoe_segformer_mit_b3_moe")])
     + ["--size", "512", "--batch", "1", "--warmup", "1", "--iters", "2", "MODEL.SEM_SEG_HEAD.NORM", "BN"]),
    ("cascade_methods", "benchmark_training.py",
     _configs([f"configs/lvis/cascade_mask_rcnn_R_50_FPN_{n}.yaml" for n in ("baseline", "blv", "eqlv2", "fed_loss_rfs")])
     + ["--size", "512", "--iters", "5", "--warmup", "1"]),
    ("cascade_stage2", "benchmark_training.py",
     _configs([f"configs/lvis/cascade_mask_rcnn_R_50_FPN_{n}.yaml" for n in
               ("baseline", "cosine", "disalign", "cosine_disalign")])
     + ["--backbone-forward", "--size", "512", "--iters", "5", "--warmup", "1"]),
    ("pat_unet_losses", "benchmark_training.py",
     _configs([f"configs/nyuv2/unet{n}.yaml" for n in
               ("", "_focal", "_cb", "_cbfocal", "_bms", "_ldam", "_blv", "_pat")])
     + ["--size", "64", "--batch", "2", "--iters", "15", "--warmup", "2"]),
]

# (name, config, the method whose final weights it starts from, data profile)
METHODS = [
    ("ce", _ADE[0], None, "ade20k"), ("blv", _ADE[1], None, "ade20k"), ("pat", _ADE[2], None, "ade20k"),
    ("medoe", _ADE[4], None, "ade20k"), ("disalign", _ADE[3], "ce", "ade20k"),
    ("medoe_moe", _ADE[5], "medoe", "ade20k"),
    ("lvis_baseline", _LVIS[0], None, "lvis_v1"), ("lvis_cosine", _LVIS[1], None, "lvis_v1"),
    ("lvis_blv", _LVIS[2], None, "lvis_v1"), ("lvis_disalign", _LVIS[3], "lvis_baseline", "lvis_v1"),
    ("lvis_cosine_disalign", _LVIS[4], "lvis_cosine", "lvis_v1"),
]
_DATASETS = {"ade20k": ("synthetic_ade20k_profile_sem_seg_train", "synthetic_ade20k_profile_sem_seg_val"),
             "lvis_v1": ("synthetic_lvis_v1_profile_train", "synthetic_lvis_v1_profile_val")}


def table_command(tool, arguments, size=None, iters=None):
    """The table's command line, with its sizes and iterations replaced when given."""
    arguments = list(arguments)
    for flag, value in (("--size", size), ("--iters", iters), ("--repeats", iters)):
        if value is not None and flag in arguments:
            arguments[arguments.index(flag) + 1] = str(value)
    if size is not None and "--shape" in arguments:
        i = arguments.index("--shape")
        arguments[i + 3:i + 5] = [str(size), str(size)]
    return [sys.executable, os.path.join(TOOLS, tool)] + arguments


def _run(command, log_path, env=None, timeout=None):
    """Run ``command`` (output into ``log_path``); (exit status, seconds, the last error line)."""
    start = time.perf_counter()
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "w") as log:
        try:
            code = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    seconds = round(time.perf_counter() - start, 1)
    with open(log_path, errors="replace") as log:
        lines = log.read().strip().splitlines()
    error = next((line for line in reversed(lines) if line.startswith(("error:", "Traceback", "RuntimeError"))),
                 lines[-1] if lines and code != 0 else None)
    return code, seconds, error


def run_tables(args, work, env):
    results = []
    for name, tool, arguments in TABLES:
        if args.tables is not None and name not in args.tables:
            continue
        command = table_command(tool, arguments, args.table_size, args.table_iters)
        json_path = os.path.join(work, f"table_{name}.json")
        if tool == "benchmark_training.py":
            command += ["--json", json_path]
        log_path = os.path.join(work, f"table_{name}.log")
        code, seconds, error = _run(command, log_path, env)
        entry = {"name": name, "command": shlex.join(command[1:]), "returncode": code, "seconds": seconds}
        if code != 0:
            entry["error"] = error
        elif os.path.isfile(json_path):
            with open(json_path) as f:
                entry["rows"] = json.load(f)
        else:  # benchmark_losses prints its table
            with open(log_path) as f:
                entry["table"] = [line for line in f.read().splitlines() if line.startswith("|")]
        results.append(entry)
        print(f"table {name}: {'ok' if code == 0 else 'FAILED: ' + str(error)} ({seconds} s)", flush=True)
    return results


def make_data(args, work, env, profiles):
    """Synthetic sets of the profiles at --method-size px; DETECTRON2_DATASETS for the runs."""
    root = os.path.join(work, "datasets")
    for profile in sorted(profiles):
        folder = os.path.join(root, f"synthetic_{profile}_profile")
        if os.path.isfile(os.path.join(folder, "synthetic_classes.json")):
            continue
        code, _, error = _run([sys.executable, os.path.join(TOOLS, "make_synthetic_data.py"), "--root", folder,
                               "--profile", profile, "--size", str(args.method_size)]
                              + (["--num-images", str(args.data_images)] if args.data_images else [])
                              + (["--num-val-images", str(args.data_val_images)] if args.data_val_images else []),
                              os.path.join(work, f"data_{profile}.log"), env)
        if code != 0:
            raise SystemExit(f"error: making the {profile} set failed: {error}")
    return root


def _train_opts(args, profile, iters, num_gpus=1):
    train_set, val_set = _DATASETS[profile]
    size = args.method_size
    opts = ["DATASETS.TRAIN", f"('{train_set}',)", "DATASETS.TEST", f"('{val_set}',)",
            "INPUT.MIN_SIZE_TRAIN", f"({size},)", "INPUT.MAX_SIZE_TRAIN", str(size),
            "INPUT.MIN_SIZE_TEST", str(size), "INPUT.MAX_SIZE_TEST", str(size),
            "SOLVER.IMS_PER_BATCH", str(args.batch * num_gpus), "SOLVER.MAX_ITER", str(iters),
            "SOLVER.CHECKPOINT_PERIOD", str(10 ** 7), "TEST.EVAL_PERIOD", "0",
            "DATALOADER.NUM_WORKERS", str(args.workers), "SEED", "0"]
    if not _cuda():
        opts += ["MODEL.DEVICE", "cpu"]  # the real configs name the GPU
    if profile == "ade20k":
        opts += ["INPUT.CROP.SIZE", f"({size}, {size})"]
    else:  # every image of the small set is seen; the repeat factors need the full LVIS
        opts += ["DATALOADER.SAMPLER_TRAIN", "TrainingSampler"]
    return opts


def _cuda():
    import torch

    return torch.cuda.is_available()


def _metrics(output_dir):
    """Seconds per iteration (median of Detectron2's "time") and the last total_loss / losses."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        return {}
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    times = sorted(r["time"] for r in rows if "time" in r)
    losses = [r for r in rows if "total_loss" in r]
    last = losses[-1] if losses else {}
    loss_values = {k: v for k, v in last.items() if "loss" in k}
    out = {"median_iter_time": times[len(times) // 2] if times else None, "last_iteration": last.get("iteration"),
           "last_losses": loss_values,
           "losses_finite": bool(loss_values) and all(math.isfinite(v) for v in loss_values.values())}
    evaluation = [r for r in rows if any("/" in k for k in r)]
    if evaluation:  # the summary metrics and head / body / tail groups, not the per-class ones
        out["evaluation"] = {k: v for k, v in evaluation[-1].items() if "/" in k and (
            "-" not in k.split("/", 1)[1] or k.split("/", 1)[1].split("-")[0] in ("mIoU", "mACC"))}
    return out


def _training_speed(log_path):
    """Detectron2's "Overall training speed: N iterations in T (S s / it)" from the run's log."""
    try:
        with open(log_path, errors="replace") as f:
            found = re.findall(r"Overall training speed: \d+ iterations in \S+ \(([\d.]+) s / it\)", f.read())
    except OSError:
        return None
    return float(found[-1]) if found else None


def run_methods(args, work, env, cuda):
    results = []
    wanted = [m for m in METHODS if args.methods is None or m[0] in args.methods]
    missing = {m[2] for m in wanted if m[2]} - {m[0] for m in wanted}
    if missing:
        raise SystemExit(f"error: --methods needs the stage-1 methods {', '.join(sorted(missing))} too")
    if not wanted:
        return results
    env = dict(env, DETECTRON2_DATASETS=make_data(args, work, env, {m[3] for m in wanted}))
    for amp in (False, True):
        done = {}
        for name, config, stage1, profile in wanted:
            entry = {"method": name, "config": config, "amp": amp, "size": args.method_size,
                     "iterations": args.method_iters}
            results.append(entry)
            if amp and not cuda:
                entry["skipped"] = "needs CUDA (SOLVER.AMP on the GPU: fp16 with a gradient scaler)"
                continue
            if stage1 and done.get(stage1) is None:
                entry["skipped"] = f"its stage 1 ({stage1}) did not train"
                continue
            out = os.path.join(work, "runs", f"{name}{'_amp' if amp else ''}")
            weights = done[stage1] if stage1 else ""
            command = [sys.executable, os.path.join(TOOLS, "train_net.py"), "--config-file", config,
                       *_train_opts(args, profile, args.method_iters), "MODEL.WEIGHTS", weights,
                       "SOLVER.AMP.ENABLED", str(amp), "OUTPUT_DIR", out]
            code, seconds, error = _run(command, out + ".log", env)
            entry.update(command=shlex.join(command[1:]), returncode=code, seconds=seconds, **_metrics(out),
                         s_per_iter=_training_speed(out + ".log"))
            if code != 0:
                entry["error"] = error
            final = os.path.join(out, "model_final.pth")
            done[name] = final if code == 0 and os.path.isfile(final) else None
            print(f"{name} amp={amp}: {'ok' if code == 0 else 'FAILED: ' + str(error)} ({seconds} s, "
                  f"{entry.get('s_per_iter')} s/iter, finite losses: {entry.get('losses_finite')})", flush=True)
    return results


def run_launch(args, work, env, cuda):
    import torch

    entry = {"name": "two_gpu_launch", "num_gpus": 2}
    if not cuda or torch.cuda.device_count() < 2:
        entry["skipped"] = (f"needs 2 CUDA devices ({torch.cuda.device_count() if cuda else 0} here); "
                            "the same launch on 2 CPU processes is in the test suite")
        return entry
    env = dict(env, DETECTRON2_DATASETS=make_data(args, work, env, {"ade20k"}))
    out = os.path.join(work, "runs", "two_gpu_launch")
    command = [sys.executable, os.path.join(TOOLS, "train_net.py"), "--config-file", _ADE[0], "--num-gpus", "2",
               "--dist-url", "auto", *_train_opts(args, "ade20k", args.launch_iters, num_gpus=2),
               "MODEL.WEIGHTS", "", "OUTPUT_DIR", out]
    code, seconds, error = _run(command, out + ".log", env)
    entry.update(command=shlex.join(command[1:]), returncode=code, seconds=seconds, **_metrics(out),
                 s_per_iter=_training_speed(out + ".log"))
    with open(out + ".log", errors="replace") as f:
        entry["world_size_2"] = "World size: 2" in f.read()
    if code != 0:
        entry["error"] = error
    print(f"2-GPU launch: {'ok' if code == 0 else 'FAILED: ' + str(error)} ({seconds} s)", flush=True)
    return entry


def environment():
    import detectron2
    import torch

    cuda = torch.cuda.is_available()
    return {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
            "detectron2": detectron2.__version__, "cuda": cuda, "cuda_version": torch.version.cuda,
            "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
            "cpu_count": os.cpu_count(), "git_commit": _git_commit()}


def _git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0], epilog=__doc__.split("\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="gpu_check.json", help="the JSON to write (default gpu_check.json)")
    parser.add_argument("--work-dir", default="output/gpu_check", help="data, runs and logs (default output/gpu_check)")
    parser.add_argument("--tables", nargs="*", default=None, metavar="NAME",
                        help=f"only these tables (default all: {', '.join(t[0] for t in TABLES)}); none: no table")
    parser.add_argument("--table-size", type=int, default=None, help="replace the tables' sizes (default: theirs)")
    parser.add_argument("--table-iters", type=int, default=None, help="replace the tables' iterations")
    parser.add_argument("--methods", nargs="*", default=None, metavar="NAME",
                        help=f"only these methods (default all: {', '.join(m[0] for m in METHODS)}); none: no method")
    parser.add_argument("--method-size", type=int, default=512, help="image side of the method runs (default 512)")
    parser.add_argument("--method-iters", type=int, default=200, help="iterations of each method run (default 200)")
    parser.add_argument("--launch-iters", type=int, default=20, help="iterations of the 2-GPU launch (default 20)")
    parser.add_argument("--batch", type=int, default=2, help="images per GPU and iteration (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="DATALOADER.NUM_WORKERS (default 2)")
    parser.add_argument("--data-images", type=int, default=None,
                        help="training images per synthetic set (default: the profile's, 300 ADE20K, 1000 LVIS)")
    parser.add_argument("--data-val-images", type=int, default=None,
                        help="validation images per synthetic set (default: the profile's, 100 ADE20K, 400 LVIS)")
    parser.add_argument("--no-launch", action="store_true", help="skip the 2-GPU launch")
    args = parser.parse_args(argv)
    for name in ("table_size", "table_iters", "method_size", "method_iters", "launch_iters", "batch",
                 "data_images", "data_val_images"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    known_tables, known_methods = {t[0] for t in TABLES}, {m[0] for m in METHODS}
    for option, given, known in (("--tables", args.tables, known_tables), ("--methods", args.methods, known_methods)):
        unknown = sorted(set(given or []) - known)
        if unknown:
            parser.error(f"{option}: unknown {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    return args


def main(argv=None):
    args = parse_args(argv)
    import torch

    from longtailseg.io import write_json_atomically

    work = os.path.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    report = {"environment": environment()}
    cuda = torch.cuda.is_available()
    if not cuda:
        report["note"] = "no CUDA: the CPU ran the tables and the fp32 runs; AMP runs and the 2-GPU launch skipped"
    report["tables"] = run_tables(args, work, env)
    report["methods"] = run_methods(args, work, env, cuda)
    report["launch"] = ({"name": "two_gpu_launch", "skipped": "--no-launch"} if args.no_launch
                        else run_launch(args, work, env, cuda))
    ran = report["tables"] + [m for m in report["methods"] if "skipped" not in m] + \
        ([report["launch"]] if "skipped" not in report["launch"] else [])
    failed = [r.get("name") or f"{r['method']}{' amp' if r.get('amp') else ''}" for r in ran
              if r.get("returncode") != 0 or r.get("losses_finite") is False]
    report["failed"] = failed
    write_json_atomically(report, args.output)
    print(f"wrote {args.output}: {len(ran)} parts ran, {len(failed)} failed{': ' + ', '.join(failed) if failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
