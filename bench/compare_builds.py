#!/usr/bin/python3
"""Two builds of libvae side by side: the MLP and conv training steps against their GEMM bounds.

    /usr/bin/python3 bench/compare_builds.py OLD_BUILD NEW_BUILD [--rounds 3] [--names A,B]

OLD_BUILD and NEW_BUILD are CMake build directories of two revisions (each
with bench/vae_bench and bench/vae_bench_conv), for instance an older
revision checked out with `git worktree add`. Each round runs, for the old
build and then the new one, `vae_bench --json` (200 steps, an epoch of 60,000
images) and `vae_bench_conv` (10 steps), with OPENBLAS_NUM_THREADS=1, and
prints one markdown row per build: the MLP step with 1 worker and its ratio
to its GEMMs on one stream, the MLP step with 2 workers and its efficiency
(the two-stream GEMM bound over the step), the epoch, and the conv step with
2 workers and its efficiency. Alternating the builds within a round lets the
noise of a shared machine hit both alike; compare the rows of one round.
"""
import argparse
import json
import os
import re
import subprocess


def run(cmd, env):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--names", default="old,new", help="labels of the two builds")
    args = ap.parse_args()
    names = args.names.split(",")
    if len(names) != 2:
        ap.error("--names takes two labels")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    print("| round | build | MLP step 1w (ms) | / GEMMs | MLP step 2w (ms) | efficiency 2w "
          "| epoch (s) | conv step 2w (ms) | conv efficiency 2w |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in range(args.rounds):
        for name, build in zip(names, (args.old, args.new)):
            d = json.loads(run([os.path.join(build, "bench", "vae_bench"), "--reps", "200",
                                "--infer-reps", "2", "--json"], env))
            ms = {(x["id"], x["workers"]): x["median_ms"] for x in d["rows"]}
            text = run([os.path.join(build, "bench", "vae_bench_conv"), "--reps", "10",
                        "--infer-reps", "1"], env)
            c2 = float(re.search(r"training step, 2 workers\s+([0-9.]+)", text).group(1))
            cb = float(re.search(r"same, 2 streams at once\s+([0-9.]+)", text).group(1))
            s1, s2 = ms[("step", 1)], ms[("step", 2)]
            print(f"| {r + 1} | {name} | {s1:.3f} | {s1 / ms[('gemm.step.1stream', 0)]:.2f} "
                  f"| {s2:.3f} | {ms[('gemm.step.2streams', 0)] / s2:.2f} "
                  f"| {ms[('epoch', 2)] / 1e3:.3f} | {c2:.1f} | {cb / c2:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
