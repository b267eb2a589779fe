#!/usr/bin/python3
"""Where a training step's time goes, by kind of work, from perf samples.

    /usr/bin/python3 bench/profile.py [--step-time build/bench/vae_step_time]
                                      [--workers 1,2] [--model mlp] [--reps 1500]

For each worker count, runs vae_step_time under `perf record` (user and
kernel samples of every thread) and sorts the samples' symbols into groups:

  GEMM            OpenBLAS's or BLIS's kernels and packing (sgemm_*, *copy*,
                  bli_*), and the memset the BLAS does for beta = 0
  loss            the likelihood's loss and gradient (vae_recon_loss)
  activations     bias and activation forward and backward (vae_act_*)
  im2col          the convolutions' im2col and col2im (their gathers and the
                  padded copies of the images) and the layout changes between
                  NCHW and one matrix per chunk (vae_nchw_to_cn,
                  vae_cn_to_nchw, which copy with memcpy)
  reductions      the fold of the workers' private gradients into the slab
                  and the largest gradient found with it, bias gradients and
                  the head's KL terms (fold_*, vae_add_floats, vae_max_abs_bits,
                  dense_backward, block_terms, head_gradient, reparameterize)
  optimizer       Adam or SGD and the scans before it (vae_adam_*, vae_sgd_*,
                  step_part, vae_all_finite)
  synchronisation the worker pool: waiting, waking, the kernel's scheduler
  noise and input the generator (eps) and its transforms, the input checks,
                  libm
  other           everything else

and prints each group's share of the samples and, with the step's median
wall time from the same run, its milliseconds per step. With several
workers the shares are of CPU time summed over the threads, so a group's
"ms" is CPU ms spread over the workers, and time a worker spends asleep
(not sampled) shows as the gap between the step and the CPU total divided
by the workers. Needs `perf` (Debian: linux-perf) and permission to use it.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

GROUPS = [
    ("GEMM", re.compile(r"^(sgemm|cblas_sgemm|bli_|gemm|blas_memory|__memset|memset)|copy_")),
    ("loss", re.compile(r"^vae_recon_loss|^vae_cb_mean|^vae_sigmoid")),
    ("activations", re.compile(r"^vae_act_")),
    ("im2col", re.compile(r"^(vae_im2col|vae_col2im|gather_row|gather_sums|im2col_rows|"
                          r"col2im_rows|vae_nchw_to_cn|vae_cn_to_nchw|__memmove|__memcpy|"
                          r"memcpy)")),
    ("reductions", re.compile(r"^(fold_|vae_add_floats|vae_max_abs_bits|dense_backward|conv|"
                              r"block_terms|head_gradient|reparameterize|weigh_rows|"
                              r"vae_grad_store)")),
    ("optimizer", re.compile(r"^(vae_adam_|vae_sgd_|max_abs_bits|step_part|vae_all_finite|"
                             r"sum_squares)")),
    ("synchronisation", re.compile(r"^(vae_pool|pool_|worker_main|pthread_|__pthread|futex|"
                                   r"sched_|__sched|do_sched|syscall|do_syscall|entry_SYSCALL|"
                                   r"finish_task_switch|schedule|__schedule|native_|"
                                   r"_raw_spin|try_to_wake|__futex|futex_)")),
    ("noise and input", re.compile(r"^(vae_rng_|vae_gauss_|box_muller|draw_noise|__sincos|"
                                   r"__ieee754_log|log|__log|__expf|__ieee754_exp|exp|"
                                   r"vae_check_input|all_in_unit_range|vae_dataset)")),
]


def group_of(symbol):
    for name, rx in GROUPS:
        if rx.search(symbol):
            return name
    return "other"


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, **kw)


def profile(step_time, model, workers, reps):
    env = dict(os.environ)
    if workers > 1:
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
    else:
        env["OPENBLAS_NUM_THREADS"] = env.get("OPENBLAS_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        out = run(["perf", "record", "-q", "-F", "4000", "-o", data, step_time,
                   "--model", model, "--workers", str(workers), "--reps", str(reps)],
                  env=env, capture_output=True).stdout
        m = re.search(r"step ([0-9.]+) ms median", out)
        if not m:
            sys.exit("profile.py: no step time in the output of vae_step_time:\n" + out)
        step_ms = float(m.group(1))
        rep = run(["perf", "report", "-i", data, "--no-children", "--sort", "symbol",
                   "--stdio", "--percent-limit", "0"], capture_output=True).stdout
    shares = {}
    for line in rep.splitlines():
        m = re.match(r"\s*([0-9.]+)%\s+\[[.k]\]\s+(\S+)", line)
        if m:
            g = group_of(m.group(2))
            shares[g] = shares.get(g, 0.0) + float(m.group(1))
    return step_ms, shares


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step-time", default="build/bench/vae_step_time")
    ap.add_argument("--model", default="mlp", choices=["mlp", "conv"])
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--reps", type=int, default=1500)
    args = ap.parse_args()
    names = [g for g, _ in GROUPS] + ["other"]
    results = []
    for w in [int(v) for v in args.workers.split(",")]:
        step_ms, shares = profile(args.step_time, args.model, w, args.reps)
        results.append((w, step_ms, shares))
    print("| group | " + " | ".join("%d worker%s: %% of CPU | CPU ms per step / workers"
                                     % (w, "" if w == 1 else "s") for w, _, _ in results) + " |")
    print("|---|" + "---|---|" * len(results))
    for g in names:
        cells = []
        for w, step_ms, shares in results:
            share = shares.get(g, 0.0)
            cells.append("%.1f | %.3f" % (share, share / 100.0 * step_ms))
        print("| %s | %s |" % (g, " | ".join(cells)))
    print("| step (median wall ms) | " +
          " | ".join("– | %.3f" % step_ms for _, step_ms, _ in results) + " |")
    print()
    print("The ms column is the group's share times the step's wall time: with one "
          "worker the groups add up to the step; with several, a worker asleep is not "
          "sampled, so the shares are of the CPU time the threads did use.")


if __name__ == "__main__":
    main()
