#!/usr/bin/python3
"""vae_bench's (or vae_bench_conv's) training step, inference and epoch in PyTorch, side by side.

    /usr/bin/python3 bench/bench_torch.py --threads 1 [--model mlp|conv] [--batch 128]
                                          [--reps 200] [--infer-reps 20]
                                          [--epoch-images 60000] [--mkldnn on|off] [--json [FILE]]

--model mlp (the default): same model and step as vae_bench (b): 784-400-20
VAE, ReLU, Bernoulli likelihood on logits, loss = mean over the batch of
(summed BCE-with-logits + analytic KL), eps drawn inside the step, Adam (lr
1e-3, PyTorch defaults), synthetic data uniform in [0, 1). Prints the median,
minimum and 90th percentile ms per step over --reps steps after a warm-up,
split into forward+backward and the optimizer step. (libvae cuts the batch
into blocks of 64 samples; PyTorch runs it whole.)

Then inference as vae_bench (d), under torch.no_grad(): encode then decode
of the means (sigmoid of the logits), and reconstruct (the same in one
call), at batch 1 (--reps repetitions) and batch 1000 (--infer-reps).

And, first of all so that the peak RSS after it is its own, one epoch as
vae_bench (e): --epoch-images random byte images (default 60000, the size of
MNIST; 0 skips it), stored as a uint8 tensor as MNIST's files store them,
shuffled with torch.randperm, each batch of --batch converted to floats in
[0, 1], then the training step above. Seconds, and the peak RSS of the
process after it.

--model conv: the same step and inference for the convolutional VAE of
vae_bench_conv (examples/mnist_vae --conv), NCHW: encoder
Conv2d(1, 32, 4, stride 2, padding 1) + ReLU -> Conv2d(32, 64, 4, 2, 1) +
ReLU -> flatten (3136) -> Linear(3136, 256) + ReLU -> Linear(256, 40)
[mu | logvar]; decoder Linear(20, 256) + ReLU -> Linear(256, 3136) + ReLU
-> view 64x7x7 -> ConvTranspose2d(64, 32, 4, 2, 1) + ReLU ->
ConvTranspose2d(32, 1, 4, 2, 1) logits; the same Bernoulli loss, Adam and
batch, synthetic data uniform in [0, 1) of shape (batch, 1, 28, 28) (one
batch, as vae_bench_conv uses). Warm-up as vae_bench_conv's: 3 steps, 3
repetitions at batch 1 and 1 at batch 1000. Defaults --reps 20 and
--infer-reps 3, as vae_bench_conv's; no epoch (--epoch-images is for the
MLP only). GFLOP/s counts the GEMM work of the convolutions and dense layers
as vae_bench_conv counts it.

--threads sets torch.set_num_threads (intra-op threads). A PyTorch built
against a generic BLAS (as Debian's is) runs its GEMMs in OpenBLAS, whose
thread count comes from OPENBLAS_NUM_THREADS when the library loads; when
that variable is unset, this script sets it to --threads before importing
torch, so one flag controls both (bench/compare.py sets both apart).
--mkldnn on|off sets torch.backends.mkldnn.enabled (oneDNN; default: left
as PyTorch has it). The MLP's Linear layers do not go through oneDNN; the
conv model's Conv2d layers do when it is enabled (aten::mkldnn_convolution;
im2col and the BLAS when it is not), while its ConvTranspose2d layers run
aten::slow_conv_transpose2d (the BLAS) either way in PyTorch 1.13.

--json alone prints one JSON object for the run on stdout instead of the
text; --json FILE prints the text and writes the object to FILE ("-" is
stdout). The object holds the machine (CPU model, cores), the settings
(model, torch version, torch threads, OPENBLAS_NUM_THREADS, oneDNN available
and enabled, the BLAS PyTorch was built with and the BLAS libraries mapped
into the process) and the rows, with the ids of vae_bench's rows:
forward_backward, optimizer, step, encode_decode.b1, reconstruct.b1,
encode_decode.b1000, reconstruct.b1000, epoch; for --model conv the same
with the prefix "conv." as vae_bench_conv's (conv.step, ...; no epoch).
"""
import argparse
import json
import math
import os
import re
import resource
import statistics
import sys
import time


def summarize(t):
    """Median, min, max and nearest-rank p10/p90 of a list of ms, as vae_bench's."""
    s = sorted(t)
    n = len(s)

    def pct(p):
        k = math.ceil(p / 100.0 * n) - 1
        return s[min(max(k, 0), n - 1)]

    return {"median_ms": statistics.median(s), "min_ms": s[0], "p10_ms": pct(10),
            "p90_ms": pct(90), "max_ms": s[-1], "reps": n}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def loaded_blas():
    """The BLAS/LAPACK shared libraries mapped into this process (resolved paths)."""
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                name = os.path.basename(path)
                if re.match(r"lib(open)?blas|libblis|libmkl", name):
                    libs.add(os.path.realpath(path))
    except OSError:
        pass
    return sorted(libs)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", choices=("mlp", "conv"), default="mlp")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, help="default 200 (mlp), 20 (conv)")
    ap.add_argument("--infer-reps", type=int, help="default 20 (mlp), 3 (conv)")
    ap.add_argument("--epoch-images", type=int, help="default 60000 (mlp only)")
    ap.add_argument("--mkldnn", choices=("on", "off"))
    ap.add_argument("--json", nargs="?", const="", metavar="FILE",
                    help="JSON object on stdout instead of the text, or in FILE besides it")
    args = ap.parse_args()
    conv = args.model == "conv"
    if args.reps is None:
        args.reps = 20 if conv else 200
    if args.infer_reps is None:
        args.infer_reps = 3 if conv else 20
    if args.epoch_images is None:
        args.epoch_images = 0 if conv else 60000
    elif conv and args.epoch_images > 0:
        ap.error("--epoch-images is for --model mlp only")
    if args.threads < 1 or args.batch < 1 or args.reps < 1 or args.infer_reps < 1:
        ap.error("--threads, --batch, --reps and --infer-reps must be positive")
    if args.epoch_images < 0:
        ap.error("--epoch-images must be 0 or more")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    json_only = args.json == ""
    out = open(os.devnull, "w") if json_only else sys.stdout

    def say(*a, **k):
        print(*a, file=out, **k)

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    if args.mkldnn is not None:
        torch.backends.mkldnn.enabled = args.mkldnn == "on"
    torch.manual_seed(42)
    B, D, H, L = args.batch, 784, 400, 20
    prefix = "conv." if conv else ""  # of the row ids, as vae_bench_conv's

    CH = 256  # the conv model's dense width

    class Base(nn.Module):
        """What both models share: the decoder's mean, reconstruction and the
        loss (Bernoulli on the logits plus the analytic KL, mean over the
        batch); each model gives encode (mu, logvar) and logits."""

        def decode(self, z):
            return torch.sigmoid(self.logits(z))

        def reconstruct(self, x):
            return self.decode(self.encode(x)[0])

        def forward(self, x):
            mu, logvar = self.encode(x)
            std = torch.exp(0.5 * logvar)
            z = mu + std * torch.randn_like(std)
            logits = self.logits(z)
            recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum() / x.shape[0]
            return recon + kl

    class VAE(Base):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(D, H)
            self.head = nn.Linear(H, 2 * L)  # [mu | logvar], as in libvae
            self.dec1 = nn.Linear(L, H)
            self.dec2 = nn.Linear(H, D)

        def encode(self, x):
            return self.head(F.relu(self.enc(x))).chunk(2, dim=1)

        def logits(self, z):
            return self.dec2(F.relu(self.dec1(z)))

    class ConvVAE(Base):
        """vae_bench_conv's model (examples/mnist_vae --conv), NCHW."""

        def __init__(self):
            super().__init__()
            self.enc1 = nn.Conv2d(1, 32, 4, stride=2, padding=1)
            self.enc2 = nn.Conv2d(32, 64, 4, stride=2, padding=1)
            self.enc3 = nn.Linear(64 * 7 * 7, CH)
            self.head = nn.Linear(CH, 2 * L)  # [mu | logvar], as in libvae
            self.dec1 = nn.Linear(L, CH)
            self.dec2 = nn.Linear(CH, 64 * 7 * 7)
            self.dec3 = nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1)
            self.dec4 = nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1)

        def encode(self, x):
            h = F.relu(self.enc2(F.relu(self.enc1(x))))
            return self.head(F.relu(self.enc3(h.flatten(1)))).chunk(2, dim=1)

        def logits(self, z):
            h = F.relu(self.dec2(F.relu(self.dec1(z)))).view(-1, 64, 7, 7)
            return self.dec4(F.relu(self.dec3(h)))

    def step(model, opt, x):
        loss = model(x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    if conv:
        # GEMM FLOPs per sample as vae_bench_conv counts them: a convolution's
        # forward 2 C_out (H_out W_out) (C_in k k), the transposed one with input
        # and output swapped; backward twice that but for the first layer (no dX).
        convs = [2.0 * 32 * 14 * 14 * (1 * 16), 2.0 * 64 * 7 * 7 * (32 * 16),
                 2.0 * 64 * 7 * 7 * (32 * 16), 2.0 * 32 * 14 * 14 * (1 * 16)]
        dense = [2.0 * i * o for i, o in ((3136, CH), (CH, 2 * L), (L, CH), (CH, 3136))]
        flops = B * (2 * convs[0] + 3 * sum(convs[1:]) + 3 * sum(dense))
        flops1 = sum(convs) + sum(dense)  # forward GEMM FLOPs per image
        shape = (1, 28, 28)
        Model = ConvVAE
        model_name = "conv 1x28x28-32x14x14-64x7x7-256-20, relu, bernoulli"
        text_name = "conv VAE of mnist_vae --conv"
    else:
        flops = 2.0 * B * (D * H * 2 + H * 2 * L * 3 + L * H * 3 + H * D * 3)  # GEMMs of a step
        flops1 = 2.0 * (D * H + H * 2 * L + L * H + H * D)  # forward GEMM FLOPs per image
        shape = (D,)
        Model = VAE
        model_name = "mlp 784-400-20, relu, bernoulli"
        text_name = "784-400-20 VAE"
    rows = []

    def row(rid, name, t, f):
        r = {"id": rid, "name": name}
        r.update(summarize(t))
        r["gflops"] = f / (r["median_ms"] * 1e6) if f else None
        rows.append(r)
        return r

    # The epoch first: its peak RSS is then the process's so far.
    epoch = None
    if args.epoch_images > 0:
        N = args.epoch_images
        g = torch.Generator().manual_seed(1234)
        images = torch.randint(0, 256, (N, D), dtype=torch.uint8, generator=g)
        model = VAE()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        t0 = time.perf_counter()
        total = 0.0
        perm = torch.randperm(N)
        for first in range(0, N, B):
            idx = perm[first:first + B]
            x = images[idx].float().div_(255.0)
            total += step(model, opt, x).item() * x.shape[0]
        sec = time.perf_counter() - t0
        steps = (N + B - 1) // B
        epoch = {"seconds": sec, "loss": total / N, "steps": steps, "peak_rss_mb": peak_rss_mb()}
        del images, model, opt

    model = Model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = [torch.rand(B, *shape) for _ in range(1 if conv else 8)]
    n_params = sum(p.numel() for p in model.parameters())

    warmup = 3 if conv else max(5, args.reps // 10)
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

    mkldnn = {"available": torch.backends.mkldnn.is_available(),
              "enabled": bool(torch.backends.mkldnn.enabled)}
    m = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    blas = m.group(1) if m else None
    blas_libs = loaded_blas()
    say(f"torch {torch.__version__}, {text_name}, batch {B}, {args.reps} reps after "
        f"{warmup} warm-up, torch threads {torch.get_num_threads()}, "
        f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}, oneDNN "
        f"{'enabled' if mkldnn['enabled'] else 'disabled'}"
        f"{'' if mkldnn['available'] else ' (not available)'}, BLAS {blas} "
        f"({', '.join(blas_libs) or 'no BLAS library mapped'}), "
        f"{n_params} parameters")
    for rid, name, t, f in (("forward_backward", "forward+backward", t_fb, flops),
                            ("optimizer", "optimizer step (Adam)", t_opt, 0),
                            ("step", "training step", t_step, flops)):
        r = row(prefix + rid, name, t, f)
        gf = f"  {r['gflops']:7.1f} GFLOP/s" if f else ""
        say(f"{name:<24} {r['median_ms']:9.4f} ms (min {r['min_ms']:.4f}, "
            f"p90 {r['p90_ms']:.4f}){gf}")
    med = statistics.median(t_step)

    # Inference, as vae_bench (d) (vae_bench_conv (c)).
    infer = []
    with torch.no_grad():
        for n, reps in ((1, args.reps), (1000, args.infer_reps)):
            xi = torch.rand(n, *shape)
            t_ed, t_rec = [], []
            wk = (3 if n == 1 else 1) if conv else max(2, reps // 10)
            for r in range(-wk, reps):
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
        say(f"batch {n}, {reps} reps:")
        for rid, name, t in ((f"{prefix}encode_decode.b{n}", "  encode+decode", t_ed),
                             (f"{prefix}reconstruct.b{n}", "  reconstruct", t_rec)):
            r = row(rid, name.strip() + f", batch {n}", t, flops1 * n)
            say(f"{name:<24} {r['median_ms']:9.4f} ms (min {r['min_ms']:.4f}, "
                f"p90 {r['p90_ms']:.4f})  {r['gflops']:7.1f} GFLOP/s")

    if epoch:
        N = args.epoch_images
        f_epoch = flops * (N // B) + flops / B * (N % B)
        row("epoch", "epoch", [epoch["seconds"] * 1e3], f_epoch)
        say(f"epoch of {N} synthetic images, batch {B}: {epoch['seconds']:.2f} s "
            f"({epoch['steps']} steps), loss {epoch['loss']:.2f}, peak RSS "
            f"{epoch['peak_rss_mb']:.1f} MB after it")

    rss_mb = peak_rss_mb()
    say(f"summary: step {med:.3f} ms, {med * 1e-3 * 60000 / B:.2f} s per 60000-image epoch "
        f"at this step time; loss {first_loss:.2f} after the first step, {loss.item():.2f} "
        f"after the last; peak RSS {rss_mb:.1f} MB")
    for n, _, _, t_rec in infer:
        m = statistics.median(t_rec)
        say(f"inference, batch {n}: reconstruct {m:.4f} ms = {m * 1e3 / n:.2f} us per image")

    if args.json is not None:
        doc = {
            "program": "bench_torch.py",
            "library": "pytorch",
            "version": torch.__version__,
            "model": model_name,
            "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
            "settings": {
                "model": args.model, "batch": B, "reps": args.reps, "warmup": warmup,
                "infer_reps": args.infer_reps,
                "epoch_images": args.epoch_images, "torch_version": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "torch_interop_threads": torch.get_num_interop_threads(),
                "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                "mkldnn": mkldnn, "blas": blas, "blas_libraries": blas_libs, "params": n_params,
            },
            "rows": rows,
            "summary": {
                "step_ms": med, "loss_first": first_loss, "loss_last": loss.item(),
                "peak_rss_mb": rss_mb,
            },
        }
        if epoch:
            doc["summary"].update({"epoch_s": epoch["seconds"], "epoch_loss": epoch["loss"],
                                   "epoch_peak_rss_mb": epoch["peak_rss_mb"]})
        text = json.dumps(doc, indent=2) + "\n"
        if args.json in ("", "-"):
            sys.stdout.write(text)
        else:
            with open(args.json, "w") as f:
                f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
