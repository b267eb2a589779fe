#!/usr/bin/env python3
"""Communication against computation for data-parallel training, on paper.

Measures the time of one training step of a 64-sample block (one worker,
one BLAS thread) with bench/vae_step_time for the default MLP and the conv
VAE, then projects the step time of P ranks (up to 100) on 10, 25 and
100 Gbit/s links for three ways of combining the gradients:

  gather  every block's gradient to every rank, added in block order
          (what libvae does: bit-identical to one process);
  ring    ring all-reduce of per-rank sums (the usual way; the sum's
          association depends on the rank count, so not bit-identical);
  chain   a segmented, pipelined reduction in rank order, then a broadcast
          (bit-identical like gather, with the traffic of ring; not built).

Only the block times are measured; everything else is arithmetic, printed
with the formula. Usage: python3 bench/cost_model.py BUILD_DIR
"""
import subprocess
import sys

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build/release"
PARAMS = {"mlp": 652824, "conv": 1691369}     # vae_model_param_count of each
LINKS = {"10 Gbit/s": 10e9 / 8, "25 Gbit/s": 25e9 / 8, "100 Gbit/s": 100e9 / 8}
ALPHA = 5e-6                                   # per-message latency, s (assumed)
RANKS = [2, 4, 8, 16, 32, 64, 100]


def block_ms(model):
    out = subprocess.run(
        [f"{BUILD}/bench/vae_step_time", "--model", model, "--workers", "1", "--batch", "64",
         "--reps", "30" if model == "mlp" else "10"],
        env={"OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True).stdout
    # "... step 2.421 ms median, 2.334 min"
    return float(out.split("step ")[1].split(" ms")[0]), out.strip()


def comm_s(kind, p, k, g, bw):
    """Seconds to combine the gradients of k blocks per rank over p ranks."""
    if kind == "gather":
        return (p - 1) * (k * g / bw + ALPHA)
    if kind == "ring":
        return 2 * (p - 1) * (g / (p * bw) + ALPHA)
    # chain: the gradient cut into S segments that follow each other down the
    # chain of p ranks, then back up as a broadcast; S minimizes
    # (p - 1 + S) (g / (S bw) + ALPHA), the time of each of the two phases.
    segments = max(1, round(((p - 1) * g / (bw * ALPHA)) ** 0.5))
    return 2 * (p - 1 + segments) * (g / (segments * bw) + ALPHA)


def main():
    for model, n in PARAMS.items():
        t_blk, raw = block_ms(model)
        g = 4 * n
        print(f"\n## {model}: {n} parameters, {g / 1e6:.2f} MB of gradient per block")
        print(f"measured: {raw}  ->  t_block = {t_blk:.2f} ms per 64-sample block")
        print("formulas (G bytes of gradient, k blocks per rank, P ranks, B bytes/s):")
        print("  gather (P-1) (k G / B + a);  ring 2 (P-1) (G / (P B) + a);"
              "  chain 2 (P-1+S) (G / (S B) + a), S = sqrt((P-1) G / (B a));"
              f"  a = {ALPHA * 1e6:.0f} us per message")
        print("  gather grows with k as the computation does: more blocks per rank never make it"
              " smaller than the computation when it is larger at k = 1")
        for link, bw in LINKS.items():
            print(f"\n{link}: communication ms per step at one block per rank (k = 1), "
                  f"against {t_blk:.2f} ms of computation")
            print("| ranks | gather | ring | chain | per-rank batch where communication stops "
                  "dominating: gather | ring | chain |")
            print("|---|---|---|---|---|---|---|")
            for p in RANKS:
                ga, ri, ch = (1e3 * comm_s(kd, p, 1, g, bw) for kd in ("gather", "ring", "chain"))
                # smallest k with k * t_block >= comm (ring/chain do not grow with k)
                k_ring = max(1, -(-ri // t_blk))
                k_chain = max(1, -(-ch // t_blk))
                k_gather = "64" if ga <= t_blk else "never"
                print(f"| {p} | {ga:.1f} | {ri:.2f} | {ch:.2f} | {k_gather} | "
                      f"{int(k_ring) * 64} | {int(k_chain) * 64} |")


if __name__ == "__main__":
    main()
