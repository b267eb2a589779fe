#!/usr/bin/python3
"""libvae against PyTorch on the same machine, in alternating runs of one invocation.

    /usr/bin/python3 bench/compare.py [--model mlp|conv|both] [--rounds 3]
                                      [--reps 200] [--infer-reps 20] [--epoch-images 60000]
                                      [--conv-reps 10] [--conv-infer-reps 3] [--batch 128]
                                      [--vae-bench build/bench/vae_bench]
                                      [--vae-bench-conv build/bench/vae_bench_conv]
                                      [--torch-bench bench/bench_torch.py]
                                      [--python /usr/bin/python3]
                                      [--torch-threads 1,2] [--openblas-threads 1,2]
                                      [--onednn [sweep|on|off|default]]
                                      [--raw FILE.json] [--out FILE.md]

--model mlp (the default): the 784-400-20 VAE. Each round runs `vae_bench
--json` once (workers 1 and 2, OPENBLAS_NUM_THREADS=1, as a program with two
workers needs) and then `bench_torch.py --json` once per PyTorch setting:
torch threads (--torch-threads) times OPENBLAS_NUM_THREADS
(--openblas-threads), and with --onednn (or --onednn sweep) oneDNN on and
off for each (the MLP's GEMMs do not go through oneDNN; --onednn on|off
fixes it, default leaves it as PyTorch has it). The settings' order rotates
from round to round, so that a slow phase of a shared machine does not
always hit the same one. The same --batch, --reps, --infer-reps and
--epoch-images go to both programs.

Per row (training step, forward+backward, optimizer, inference at batch 1
and 1000, the epoch) PyTorch's best setting is the one with the lowest
median over the rounds of its per-round medians; the markdown table then
shows, per round and as the median over rounds, libvae with 1 and 2
workers, PyTorch at that setting, and the ratios PyTorch / libvae (above 1:
libvae is faster). Further tables: libvae's step against its GEMM bounds
(the targets: 1 worker at most 1.10 times its GEMMs on one stream; 2
workers at least 0.85 of the two-stream bound), every PyTorch setting's
median per row, and the peak RSS after the epoch.

--model conv: the convolutional VAE of examples/mnist_vae --conv, the same
way: each round runs `vae_bench_conv --json` (--vae-bench-conv; workers 1
and 2, OPENBLAS_NUM_THREADS=1) and then `bench_torch.py --model conv --json`
once per PyTorch setting, which sweep oneDNN on and off by default (PyTorch's
Conv2d runs in oneDNN when it is on, in im2col and OpenBLAS when it is off;
--onednn default, on or off to do otherwise). --conv-reps (default 10)
repetitions of the step and of inference at batch 1, --conv-infer-reps
(default 3) at batch 1000, and --batch go to both; a conv step costs about
ten MLP steps, so that 3 rounds take a few minutes. No epoch. PyTorch's best
setting per row as above; the table shows libvae with 1 and 2 workers,
PyTorch at its best setting and the ratio libvae 2 workers / PyTorch (below
1: libvae is faster; the target: the training step at most 0.50). Then
libvae's step against its GEMM bounds, with the 2-worker efficiency = the
two-stream GEMM bound / the 2-worker step (target: at least 0.75), and
every PyTorch setting's median per row.

--model both: both comparisons, round by round (the MLP's runs, then the
conv model's), and both reports, the MLP's first.

The raw JSON of every run (with its model, settings, environment and wall
time) goes to --raw (default compare_raw.json beside the vae_bench binary;
with --model conv compare_conv_raw.json beside vae_bench_conv). Progress
goes to stderr.
"""
import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Rows compared: (id shared by both programs, label, unit divisor from ms).
ROWS = [
    ("step", "training step (ms)", 1.0),
    ("forward_backward", "forward+backward (ms)", 1.0),
    ("optimizer", "optimizer, Adam (ms)", 1.0),
    ("reconstruct.b1", "reconstruct, batch 1 (ms)", 1.0),
    ("encode_decode.b1", "encode+decode, batch 1 (ms)", 1.0),
    ("reconstruct.b1000", "reconstruct, batch 1000 (ms)", 1.0),
    ("encode_decode.b1000", "encode+decode, batch 1000 (ms)", 1.0),
    ("epoch", "epoch (s)", 1000.0),
]

# The conv model's rows (vae_bench_conv and bench_torch.py --model conv).
CONV_ROWS = [
    ("conv.step", "training step (ms)", 1.0),
    ("conv.forward_backward", "forward+backward (ms)", 1.0),
    ("conv.optimizer", "optimizer, Adam (ms)", 1.0),
    ("conv.reconstruct.b1", "reconstruct, batch 1 (ms)", 1.0),
    ("conv.encode_decode.b1", "encode+decode, batch 1 (ms)", 1.0),
    ("conv.reconstruct.b1000", "reconstruct, batch 1000 (ms)", 1.0),
    ("conv.encode_decode.b1000", "encode+decode, batch 1000 (ms)", 1.0),
]
CONV_TARGET_RATIO = 0.50  # libvae's 2-worker conv step / PyTorch's best step, at most
CONV_TARGET_EFF = 0.75    # 2-stream GEMM bound / libvae's 2-worker conv step, at least


def int_list(s):
    try:
        v = [int(x) for x in s.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {s!r}")
    if not v or min(v) < 1:
        raise argparse.ArgumentTypeError("needs positive integers")
    return v


def run_json(cmd, env_extra):
    env = dict(os.environ)
    env.update(env_extra)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        sys.exit(f"compare.py: {' '.join(cmd)} failed with status {p.returncode}")
    try:
        return json.loads(p.stdout), wall
    except json.JSONDecodeError as e:
        sys.exit(f"compare.py: {' '.join(cmd)} printed no JSON object ({e})")


def setting_name(s):
    name = f"threads {s['torch_threads']}, OB {s['openblas_threads']}"
    if s.get("mkldnn"):
        name += f", oneDNN {s['mkldnn']}"
    return name


def row_of(result, rid, workers=None):
    for r in result["rows"]:
        if r["id"] == rid and (workers is None or r.get("workers") == workers):
            return r
    return None


def fmt(x, nd=3):
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.{nd}f}"


def best_setting(rid, settings, torch_value, rounds):
    """PyTorch's best setting for a row: the lowest median over rounds of its per-round
    medians; None when no setting has the row."""
    cand = []
    for s in settings:
        vals = [torch_value(rid, s, rnd) for rnd in range(rounds)]
        vals = [v for v in vals if v is not None]
        if vals:
            cand.append((statistics.median(vals), s))
    if not cand:
        return None
    return min(cand, key=lambda c: c[0])[1]


def rows_with_best(lib, rows, settings, torch_value, rounds, best_of):
    """The rows libvae reported that PyTorch has a best setting for, as
    (id, label, divisor, best setting); records each best in best_of."""
    for rid, label, div in rows:
        if not any(row_of(r, rid) for r in lib):
            continue
        best = best_setting(rid, settings, torch_value, rounds)
        if best is None:
            continue
        best_of[rid] = best
        yield rid, label, div, best


def round_values(lib, rid, best, torch_value, rounds, div):
    """Per round, then the median over rounds: (round label, libvae 1 worker,
    libvae 2 workers, PyTorch at its best setting), each divided by div."""
    per = {"1": [], "2": [], "t": []}
    for rnd in range(rounds):
        r1 = row_of(lib[rnd], rid, 1)
        r2 = row_of(lib[rnd], rid, 2)
        v1 = r1["median_ms"] / div if r1 else None
        v2 = r2["median_ms"] / div if r2 else None
        tv = torch_value(rid, best, rnd)
        vt = tv / div if tv is not None else None
        for key, v in (("1", v1), ("2", v2), ("t", vt)):
            if v is not None:
                per[key].append(v)
        yield str(rnd + 1), v1, v2, vt
    med = {k: statistics.median(v) if v else None for k, v in per.items()}
    yield "**median**", med["1"], med["2"], med["t"]


def bounds_table(out, lib, title):
    """Each round's libvae steps against their GEMM bounds, and the median."""
    out.append("")
    out.append(title)
    out.append("")
    out.append("| round | step 1w (ms) | GEMMs 1 stream | step / GEMMs | step 2w (ms) | "
               "GEMMs 2 streams | efficiency 2w |")
    out.append("|---|---|---|---|---|---|---|")
    effs = []
    for rnd, r in enumerate(lib):
        s = r["summary"]
        eff = s.get("efficiency_nw")
        if eff is not None:
            effs.append(eff)
        out.append(f"| {rnd + 1} | {fmt(s['step_ms_1w'])} | {fmt(s['gemm_1stream_ms'])} | "
                   f"{s['step_over_gemm_1w']:.2f} | {fmt(s.get('step_ms_nw'))} | "
                   f"{fmt(s.get('gemm_nstream_ms'))} | "
                   f"{f'{eff:.2f}' if eff is not None else '–'} |")
    if len(lib) > 1:
        med = {k: statistics.median(r["summary"][k] for r in lib)
               for k in ("step_ms_1w", "gemm_1stream_ms", "step_over_gemm_1w")}
        nw = {k: statistics.median(r["summary"][k] for r in lib)
              for k in ("step_ms_nw", "gemm_nstream_ms") if k in lib[0]["summary"]}
        out.append(f"| **median** | {fmt(med['step_ms_1w'])} | {fmt(med['gemm_1stream_ms'])} | "
                   f"{med['step_over_gemm_1w']:.2f} | {fmt(nw.get('step_ms_nw'))} | "
                   f"{fmt(nw.get('gemm_nstream_ms'))} | "
                   f"{f'**{statistics.median(effs):.2f}**' if effs else '–'} |")
    return statistics.median(effs) if effs else None


def every_setting_table(out, rows, settings, best_of, torch_value, rounds):
    """Every PyTorch setting, median over rounds; the best per row in bold."""
    out.append("")
    out.append("PyTorch, every setting (median over rounds; OB = OPENBLAS_NUM_THREADS):")
    out.append("")
    out.append("| row | " + " | ".join(setting_name(s) for s in settings) + " |")
    out.append("|---|" + "---|" * len(settings))
    for rid, label, div in rows:
        cells = []
        for s in settings:
            vals = [torch_value(rid, s, rnd) for rnd in range(rounds)]
            vals = [v / div for v in vals if v is not None]
            cell = fmt(statistics.median(vals)) if vals else "–"
            cells.append(f"**{cell}**" if best_of.get(rid) == s else cell)
        out.append(f"| {label} | " + " | ".join(cells) + " |")


def mlp_report(args, lib, torch_runs, settings, torch_value):
    """The markdown of the MLP comparison, as lines."""
    out = []
    first = lib[0]
    tver = torch_runs[0]["result"]["settings"]
    out.append(f"libvae {first['version']} against PyTorch {tver['torch_version']}, "
               f"{first['machine']['cpu']}, {first['machine']['cores']} cores, "
               f"{first['machine']['blas']['config'] or first['machine']['blas']['vendor']}; "
               f"batch {args.batch}, {args.reps} reps ({args.infer_reps} at batch 1000), "
               f"epoch of {args.epoch_images} images, {args.rounds} rounds of alternating runs. "
               f"Medians; ratio = PyTorch / libvae (above 1: libvae faster).")
    out.append("")
    out.append("| row | round | libvae 1 worker | libvae 2 workers | PyTorch best | "
               "PyTorch setting | ratio 1w | ratio 2w |")
    out.append("|---|---|---|---|---|---|---|---|")
    best_of = {}
    for rid, label, div, best in rows_with_best(lib, ROWS, settings, torch_value, args.rounds,
                                                best_of):
        for rnd, (rlabel, v1, v2, vt) in enumerate(
                round_values(lib, rid, best, torch_value, args.rounds, div)):
            name = label if rnd == 0 else ""
            ratio1 = f"{vt / v1:.2f}" if v1 and vt else "–"
            ratio2 = f"{vt / v2:.2f}" if v2 and vt else "–"
            if rnd == args.rounds:
                ratio1, ratio2 = (f"**{x}**" if x != "–" else x for x in (ratio1, ratio2))
            out.append(f"| {name} | {rlabel} | {fmt(v1)} | {fmt(v2)} | {fmt(vt)} | "
                       f"{setting_name(best) if rnd == 0 else ''} | {ratio1} | {ratio2} |")

    bounds_table(out, lib, "libvae against its GEMM bounds (targets: 1 worker step / 1-stream "
                 "GEMMs <= 1.10; 2 workers 2-stream GEMMs / step >= 0.85):")

    every_setting_table(out, ROWS, settings, best_of, torch_value, args.rounds)

    # Memory.
    if args.epoch_images > 0:
        lrss = [r["summary"].get("epoch_peak_rss_mb") for r in lib]
        cells = []
        for s in settings:
            v = [r["result"]["summary"]["epoch_peak_rss_mb"] for r in torch_runs
                 if r["setting"] == s and "epoch_peak_rss_mb" in r["result"]["summary"]]
            if v:
                cells.append(f"{setting_name(s)} {fmt(statistics.median(v), 1)}")
        out.append("")
        out.append("Peak RSS after the epoch (MB, median over rounds): libvae (2 workers) "
                   f"{fmt(statistics.median(lrss), 1)}; PyTorch " + "; ".join(cells) + ".")
    return out


def conv_report(args, lib, torch_runs, settings, torch_value):
    """The markdown of the conv comparison, as lines."""
    out = []
    first = lib[0]
    tver = torch_runs[0]["result"]["settings"]
    out.append(f"Conv VAE (examples/mnist_vae --conv): libvae {first['version']} "
               f"(vae_bench_conv) against PyTorch {tver['torch_version']}, "
               f"{first['machine']['cpu']}, {first['machine']['cores']} cores, "
               f"{first['machine']['blas']['config'] or first['machine']['blas']['vendor']}; "
               f"batch {args.batch}, {args.conv_reps} reps ({args.conv_infer_reps} at batch "
               f"1000), {args.rounds} rounds of alternating runs. Medians; ratio = libvae "
               f"2 workers / PyTorch best (below 1: libvae faster; target for the training "
               f"step <= {CONV_TARGET_RATIO:.2f}).")
    out.append("")
    out.append("| row | round | libvae 1 worker | libvae 2 workers | PyTorch best | "
               "PyTorch setting | libvae 2w / PyTorch |")
    out.append("|---|---|---|---|---|---|---|")
    best_of = {}
    step_ratio = None
    for rid, label, div, best in rows_with_best(lib, CONV_ROWS, settings, torch_value,
                                                args.rounds, best_of):
        for rnd, (rlabel, v1, v2, vt) in enumerate(
                round_values(lib, rid, best, torch_value, args.rounds, div)):
            name = label if rnd == 0 else ""
            ratio = f"{v2 / vt:.2f}" if v2 and vt else "–"
            if rnd == args.rounds:
                if rid == "conv.step" and v2 and vt:
                    step_ratio = v2 / vt
                ratio = f"**{ratio}**" if ratio != "–" else ratio
            out.append(f"| {name} | {rlabel} | {fmt(v1)} | {fmt(v2)} | {fmt(vt)} | "
                       f"{setting_name(best) if rnd == 0 else ''} | {ratio} |")
    if step_ratio is not None:
        out.append("")
        out.append(f"Training step, libvae 2 workers / PyTorch best: {step_ratio:.2f} "
                   f"(target <= {CONV_TARGET_RATIO:.2f}: "
                   f"{'met' if step_ratio <= CONV_TARGET_RATIO else 'not met'}).")

    eff = bounds_table(out, lib, "libvae against its GEMM bounds (2-worker efficiency = 2-stream "
                       f"GEMMs / 2-worker step, target >= {CONV_TARGET_EFF:.2f}):")
    if eff is not None:
        out.append("")
        out.append(f"2-worker efficiency (median over rounds): {eff:.2f} (target >= "
                   f"{CONV_TARGET_EFF:.2f}: {'met' if eff >= CONV_TARGET_EFF else 'not met'}).")

    every_setting_table(out, CONV_ROWS, settings, best_of, torch_value, args.rounds)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("mlp", "conv", "both"), default="mlp")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--infer-reps", type=int, default=20)
    ap.add_argument("--epoch-images", type=int, default=60000)
    ap.add_argument("--conv-reps", type=int, default=10,
                    help="conv model: repetitions of the step and of inference at batch 1")
    ap.add_argument("--conv-infer-reps", type=int, default=3,
                    help="conv model: repetitions of inference at batch 1000")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--vae-bench", default=os.path.join(ROOT, "build", "bench", "vae_bench"))
    ap.add_argument("--vae-bench-conv",
                    default=os.path.join(ROOT, "build", "bench", "vae_bench_conv"))
    ap.add_argument("--torch-bench", default=os.path.join(ROOT, "bench", "bench_torch.py"))
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="the interpreter with torch (default: Debian's)")
    ap.add_argument("--torch-threads", type=int_list, default=[1, 2])
    ap.add_argument("--openblas-threads", type=int_list, default=[1, 2])
    ap.add_argument("--onednn", nargs="?", const="sweep", choices=("sweep", "on", "off", "default"),
                    help="oneDNN in PyTorch: sweep on and off (--onednn alone; the default "
                    "for the conv model), fix it on or off, or leave PyTorch's default (the "
                    "default for the MLP)")
    ap.add_argument("--raw", help="raw JSON of every run (default: compare_raw.json beside "
                    "the vae_bench binary; compare_conv_raw.json beside vae_bench_conv "
                    "with --model conv)")
    ap.add_argument("--out", help="also write the markdown here")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be positive")
    if args.conv_reps < 1 or args.conv_infer_reps < 1:
        ap.error("--conv-reps and --conv-infer-reps must be positive")
    models = ["mlp", "conv"] if args.model == "both" else [args.model]
    bench_of = {"mlp": args.vae_bench, "conv": args.vae_bench_conv}
    for model in models:
        prog = bench_of[model]
        if not os.access(prog, os.X_OK):
            flag = "--vae-bench" if model == "mlp" else "--vae-bench-conv"
            target = os.path.basename(prog) if model == "mlp" else "vae_bench_conv"
            ap.error(f"{prog} is not an executable: build it (cmake --build build "
                     f"--target {target}) or pass {flag}")
    if not os.path.isfile(args.torch_bench):
        ap.error(f"{args.torch_bench} not found: pass --torch-bench")
    if args.raw is None:
        if args.model == "conv":
            args.raw = os.path.join(os.path.dirname(os.path.abspath(args.vae_bench_conv)),
                                    "compare_conv_raw.json")
        else:
            args.raw = os.path.join(os.path.dirname(os.path.abspath(args.vae_bench)),
                                    "compare_raw.json")

    # Per model: the arguments both programs get, and PyTorch's settings.
    common = {
        "mlp": ["--batch", str(args.batch), "--reps", str(args.reps),
                "--infer-reps", str(args.infer_reps), "--epoch-images", str(args.epoch_images)],
        "conv": ["--batch", str(args.batch), "--reps", str(args.conv_reps),
                 "--infer-reps", str(args.conv_infer_reps)],
    }
    settings = {}
    for model in models:
        onednn = args.onednn or ("sweep" if model == "conv" else "default")
        mk = {"sweep": ["on", "off"], "on": ["on"], "off": ["off"], "default": [None]}[onednn]
        settings[model] = [{"torch_threads": t, "openblas_threads": o, "mkldnn": m}
                           for t, o, m in itertools.product(args.torch_threads,
                                                            args.openblas_threads, mk)]
    runs = []
    for rnd in range(args.rounds):
        for model in models:
            tag = "" if model == "mlp" else "conv "
            res, wall = run_json([bench_of[model], "--json", "--model-threads", "2"]
                                 + common[model], {"OPENBLAS_NUM_THREADS": "1"})
            runs.append({"round": rnd, "model": model, "kind": "libvae",
                         "env": {"OPENBLAS_NUM_THREADS": "1"}, "wall_s": wall, "result": res})
            print(f"round {rnd + 1}: {tag}libvae step {res['summary']['step_ms_1w']:.3f} / "
                  f"{res['summary'].get('step_ms_nw', float('nan')):.3f} ms (1 / 2 workers)",
                  file=sys.stderr)
            ss = settings[model]
            k = rnd % len(ss)
            for s in ss[k:] + ss[:k]:
                cmd = [args.python, args.torch_bench, "--json", "--threads",
                       str(s["torch_threads"])]
                if model == "conv":
                    cmd += ["--model", "conv"]
                if s["mkldnn"]:
                    cmd += ["--mkldnn", s["mkldnn"]]
                env = {"OPENBLAS_NUM_THREADS": str(s["openblas_threads"])}
                res, wall = run_json(cmd + common[model], env)
                runs.append({"round": rnd, "model": model, "kind": "torch", "setting": s,
                             "env": env, "wall_s": wall, "result": res})
                print(f"round {rnd + 1}: {tag}torch {setting_name(s)}: step "
                      f"{res['summary']['step_ms']:.3f} ms", file=sys.stderr)

    with open(args.raw, "w") as f:
        json.dump({"args": vars(args), "runs": runs}, f, indent=1)

    out = []
    for model in models:
        lib = [r["result"] for r in runs if r["model"] == model and r["kind"] == "libvae"]
        torch_runs = [r for r in runs if r["model"] == model and r["kind"] == "torch"]

        def torch_value(rid, s, rnd, torch_runs=torch_runs):
            for r in torch_runs:
                if r["round"] == rnd and r["setting"] == s:
                    row = row_of(r["result"], rid)
                    return row["median_ms"] if row else None
            return None

        if out:
            out.append("")
        report = mlp_report if model == "mlp" else conv_report
        out += report(args, lib, torch_runs, settings[model], torch_value)
    out.append("")
    out.append(f"Raw JSON of every run: {args.raw}")
    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
