#!/usr/bin/python3
"""The training step and inference of bench/bench.c in PyTorch, for a side-by-side figure.

    /usr/bin/python3 bench/bench_torch.py --threads 1 [--batch 128] [--reps 200] [--infer-reps 20]

Same model and step as vae_bench (b): 784-400-20 VAE, ReLU, Bernoulli
likelihood on logits, loss = mean over the batch of (summed BCE-with-logits
+ analytic KL), eps drawn inside the step, Adam (lr 1e-3, PyTorch defaults),
synthetic data uniform in [0, 1). Prints the median and minimum ms per step
over --reps steps after a warm-up, split into forward+backward and the
optimizer step, and the peak RSS. (libvae cuts the batch into blocks of 64
samples; PyTorch runs it whole.)

Then inference as vae_bench (d), under torch.no_grad(): encode then decode
of the means (sigmoid of the logits), and reconstruct (the same in one
call), at batch 1 (--reps repetitions) and batch 1000 (--infer-reps).

--threads sets torch.set_num_threads (intra-op threads). A PyTorch built
against a generic BLAS (as Debian's is) runs its GEMMs in OpenBLAS, whose
thread count comes from OPENBLAS_NUM_THREADS when the library loads; when
that variable is unset, this script sets it to --threads before importing
torch, so one flag controls both.
"""
import argparse
import os
import resource
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--infer-reps", type=int, default=20)
    args = ap.parse_args()
    if args.threads < 1 or args.batch < 1 or args.reps < 1 or args.infer_reps < 1:
        ap.error("--threads, --batch, --reps and --infer-reps must be positive")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    B, D, H, L = args.batch, 784, 400, 20

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(D, H)
            self.head = nn.Linear(H, 2 * L)  # [mu | logvar], as in libvae
            self.dec1 = nn.Linear(L, H)
            self.dec2 = nn.Linear(H, D)

        def encode(self, x):
            return self.head(F.relu(self.enc(x))).chunk(2, dim=1)

        def decode(self, z):
            return torch.sigmoid(self.dec2(F.relu(self.dec1(z))))

        def reconstruct(self, x):
            return self.decode(self.encode(x)[0])

        def forward(self, x):
            mu, logvar = self.encode(x)
            std = torch.exp(0.5 * logvar)
            z = mu + std * torch.randn_like(std)
            logits = self.dec2(F.relu(self.dec1(z)))
            recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum() / x.shape[0]
            return recon + kl

    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = [torch.rand(B, D) for _ in range(8)]
    n_params = sum(p.numel() for p in model.parameters())

    warmup = max(5, args.reps // 10)
    t_fb, t_opt, t_step = [], [], []
    first_loss = loss = None
    for r in range(-warmup, args.reps):
        x = data[(r + warmup) % len(data)]
        t0 = time.perf_counter()
        loss = model(x)
        loss.backward()
        t1 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        if first_loss is None:
            first_loss = loss.item()
        if r >= 0:
            t_fb.append((t1 - t0) * 1e3)
            t_opt.append((t2 - t1) * 1e3)
            t_step.append((t2 - t0) * 1e3)

    print(f"torch {torch.__version__}, 784-400-20 VAE, batch {B}, {args.reps} reps after "
          f"{warmup} warm-up, torch threads {torch.get_num_threads()}, "
          f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}, {n_params} parameters")
    flops = 2.0 * B * (D * H * 2 + H * 2 * L * 3 + L * H * 3 + H * D * 3)
    for name, t in (("forward+backward", t_fb), ("optimizer step (Adam)", t_opt),
                    ("training step", t_step)):
        med = statistics.median(t)
        gf = "" if name.startswith("optimizer") else f"  {flops / (med * 1e6):7.1f} GFLOP/s"
        print(f"{name:<24} {med:9.4f} ms (min {min(t):.4f}){gf}")
    med = statistics.median(t_step)

    # Inference, as vae_bench (d).
    flops1 = 2.0 * (D * H + H * 2 * L + L * H + H * D)  # forward GEMM FLOPs per image
    infer = []
    with torch.no_grad():
        for n, reps in ((1, args.reps), (1000, args.infer_reps)):
            xi = torch.rand(n, D)
            t_ed, t_rec = [], []
            for r in range(-max(2, reps // 10), reps):
                t0 = time.perf_counter()
                mu, _ = model.encode(xi)
                model.decode(mu)
                t1 = time.perf_counter()
                model.reconstruct(xi)
                t2 = time.perf_counter()
                if r >= 0:
                    t_ed.append((t1 - t0) * 1e3)
                    t_rec.append((t2 - t1) * 1e3)
            infer.append((n, reps, t_ed, t_rec))
    for n, reps, t_ed, t_rec in infer:
        print(f"batch {n}, {reps} reps:")
        for name, t in (("  encode+decode", t_ed), ("  reconstruct", t_rec)):
            m = statistics.median(t)
            print(f"{name:<24} {m:9.4f} ms (min {min(t):.4f})  "
                  f"{flops1 * n / (m * 1e6):7.1f} GFLOP/s")

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"summary: step {med:.3f} ms, {med * 1e-3 * 60000 / B:.2f} s per 60000-image epoch "
          f"at this step time; loss {first_loss:.2f} after the first step, {loss.item():.2f} "
          f"after the last; peak RSS {rss_mb:.1f} MB")
    for n, _, _, t_rec in infer:
        m = statistics.median(t_rec)
        print(f"inference, batch {n}: reconstruct {m:.4f} ms = {m * 1e3 / n:.2f} us per image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
