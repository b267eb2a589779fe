#!/usr/bin/python3
"""libvae against PyTorch on the same machine, in alternating runs of one invocation.

    /usr/bin/python3 bench/compare.py [--rounds 3] [--reps 200] [--infer-reps 20]
                                      [--epoch-images 60000] [--batch 128]
                                      [--vae-bench build/bench/vae_bench]
                                      [--torch-bench bench/bench_torch.py]
                                      [--python /usr/bin/python3]
                                      [--torch-threads 1,2] [--openblas-threads 1,2] [--onednn]
                                      [--raw FILE.json] [--out FILE.md]

Each round runs `vae_bench --json` once (workers 1 and 2, OPENBLAS_NUM_THREADS=1,
as a program with two workers needs) and then `bench_torch.py --json` once per
PyTorch setting: torch threads (--torch-threads) times OPENBLAS_NUM_THREADS
(--openblas-threads), and with --onednn oneDNN on and off for each (the
MLP's GEMMs do not go through oneDNN; the flag is there for models that
do). The settings' order rotates from round to round, so that a slow phase
of a shared machine does not always hit the same one. The same --batch,
--reps, --infer-reps and --epoch-images go to both programs.

Per row (training step, forward+backward, optimizer, inference at batch 1
and 1000, the epoch) PyTorch's best setting is the one with the lowest
median over the rounds of its per-round medians; the markdown table then
shows, per round and as the median over rounds, libvae with 1 and 2
workers, PyTorch at that setting, and the ratios PyTorch / libvae (above 1:
libvae is faster). Further tables: libvae's step against its GEMM bounds
(the targets: 1 worker at most 1.10 times its GEMMs on one stream; 2
workers at least 0.85 of the two-stream bound), every PyTorch setting's
median per row, and the peak RSS after the epoch. The raw JSON of every run
(with its settings, environment and wall time) goes to --raw (default
compare_raw.json beside the vae_bench binary). Progress goes to stderr.
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--infer-reps", type=int, default=20)
    ap.add_argument("--epoch-images", type=int, default=60000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--vae-bench", default=os.path.join(ROOT, "build", "bench", "vae_bench"))
    ap.add_argument("--torch-bench", default=os.path.join(ROOT, "bench", "bench_torch.py"))
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="the interpreter with torch (default: Debian's)")
    ap.add_argument("--torch-threads", type=int_list, default=[1, 2])
    ap.add_argument("--openblas-threads", type=int_list, default=[1, 2])
    ap.add_argument("--onednn", action="store_true", help="also sweep oneDNN on and off")
    ap.add_argument("--raw", help="raw JSON of every run (default: compare_raw.json beside "
                    "the vae_bench binary)")
    ap.add_argument("--out", help="also write the markdown here")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be positive")
    if not os.access(args.vae_bench, os.X_OK):
        ap.error(f"{args.vae_bench} is not an executable: build it (cmake --build build "
                 f"--target vae_bench) or pass --vae-bench")
    if not os.path.isfile(args.torch_bench):
        ap.error(f"{args.torch_bench} not found: pass --torch-bench")
    if args.raw is None:
        args.raw = os.path.join(os.path.dirname(os.path.abspath(args.vae_bench)),
                                "compare_raw.json")

    common = ["--batch", str(args.batch), "--reps", str(args.reps),
              "--infer-reps", str(args.infer_reps), "--epoch-images", str(args.epoch_images)]
    settings = [{"torch_threads": t, "openblas_threads": o, "mkldnn": m}
                for t, o, m in itertools.product(args.torch_threads, args.openblas_threads,
                                                 ["on", "off"] if args.onednn else [None])]
    runs = []
    for rnd in range(args.rounds):
        res, wall = run_json([args.vae_bench, "--json", "--model-threads", "2"] + common,
                             {"OPENBLAS_NUM_THREADS": "1"})
        runs.append({"round": rnd, "kind": "libvae", "env": {"OPENBLAS_NUM_THREADS": "1"},
                     "wall_s": wall, "result": res})
        print(f"round {rnd + 1}: libvae step {res['summary']['step_ms_1w']:.3f} / "
              f"{res['summary'].get('step_ms_nw', float('nan')):.3f} ms (1 / 2 workers)",
              file=sys.stderr)
        k = rnd % len(settings)
        for s in settings[k:] + settings[:k]:
            cmd = [args.python, args.torch_bench, "--json", "--threads", str(s["torch_threads"])]
            if s["mkldnn"]:
                cmd += ["--mkldnn", s["mkldnn"]]
            env = {"OPENBLAS_NUM_THREADS": str(s["openblas_threads"])}
            res, wall = run_json(cmd + common, env)
            runs.append({"round": rnd, "kind": "torch", "setting": s, "env": env,
                         "wall_s": wall, "result": res})
            print(f"round {rnd + 1}: torch {setting_name(s)}: step "
                  f"{res['summary']['step_ms']:.3f} ms", file=sys.stderr)

    with open(args.raw, "w") as f:
        json.dump({"args": vars(args), "runs": runs}, f, indent=1)

    lib = [r["result"] for r in runs if r["kind"] == "libvae"]
    torch_runs = [r for r in runs if r["kind"] == "torch"]

    def torch_value(rid, s, rnd):
        for r in torch_runs:
            if r["round"] == rnd and r["setting"] == s:
                row = row_of(r["result"], rid)
                return row["median_ms"] if row else None
        return None

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
    for rid, label, div in ROWS:
        if not any(row_of(r, rid) for r in lib):
            continue
        # PyTorch's best setting: lowest median over rounds of the per-round medians.
        cand = []
        for s in settings:
            vals = [torch_value(rid, s, rnd) for rnd in range(args.rounds)]
            vals = [v for v in vals if v is not None]
            if vals:
                cand.append((statistics.median(vals), s))
        if not cand:
            continue
        best = min(cand, key=lambda c: c[0])[1]
        best_of[rid] = best
        per = {"1": [], "2": [], "t": []}
        for rnd in range(args.rounds + 1):
            if rnd < args.rounds:
                r1 = row_of(lib[rnd], rid, 1)
                r2 = row_of(lib[rnd], rid, 2)
                v1 = r1["median_ms"] / div if r1 else None
                v2 = r2["median_ms"] / div if r2 else None
                tv = torch_value(rid, best, rnd)
                vt = tv / div if tv is not None else None
                for key, v in (("1", v1), ("2", v2), ("t", vt)):
                    if v is not None:
                        per[key].append(v)
                name = label if rnd == 0 else ""
                rlabel = str(rnd + 1)
            else:
                med = {k: statistics.median(v) if v else None for k, v in per.items()}
                v1, v2, vt = med["1"], med["2"], med["t"]
                name, rlabel = "", "**median**"
            ratio1 = f"{vt / v1:.2f}" if v1 and vt else "–"
            ratio2 = f"{vt / v2:.2f}" if v2 and vt else "–"
            if rnd == args.rounds:
                ratio1, ratio2 = (f"**{x}**" if x != "–" else x for x in (ratio1, ratio2))
            out.append(f"| {name} | {rlabel} | {fmt(v1)} | {fmt(v2)} | {fmt(vt)} | "
                       f"{setting_name(best) if rnd == 0 else ''} | {ratio1} | {ratio2} |")

    # libvae against its GEMM bounds.
    out.append("")
    out.append("libvae against its GEMM bounds (targets: 1 worker step / 1-stream GEMMs <= 1.10; "
               "2 workers 2-stream GEMMs / step >= 0.85):")
    out.append("")
    out.append("| round | step 1w (ms) | GEMMs 1 stream | step / GEMMs | step 2w (ms) | "
               "GEMMs 2 streams | efficiency 2w |")
    out.append("|---|---|---|---|---|---|---|")
    for rnd, r in enumerate(lib):
        s = r["summary"]
        out.append(f"| {rnd + 1} | {fmt(s['step_ms_1w'])} | {fmt(s['gemm_1stream_ms'])} | "
                   f"{s['step_over_gemm_1w']:.2f} | {fmt(s.get('step_ms_nw'))} | "
                   f"{fmt(s.get('gemm_nstream_ms'))} | {s.get('efficiency_nw', 0):.2f} |")

    # Every PyTorch setting, median over rounds.
    out.append("")
    out.append("PyTorch, every setting (median over rounds; OB = OPENBLAS_NUM_THREADS):")
    out.append("")
    out.append("| row | " + " | ".join(setting_name(s) for s in settings) + " |")
    out.append("|---|" + "---|" * len(settings))
    for rid, label, div in ROWS:
        cells = []
        for s in settings:
            vals = [torch_value(rid, s, rnd) for rnd in range(args.rounds)]
            vals = [v / div for v in vals if v is not None]
            cell = fmt(statistics.median(vals)) if vals else "–"
            cells.append(f"**{cell}**" if best_of.get(rid) == s else cell)
        out.append(f"| {label} | " + " | ".join(cells) + " |")

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
