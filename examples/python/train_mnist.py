#!/usr/bin/env python3
"""Train an MLP VAE through the Python binding (libvae.py).

Uses MNIST when the IDX files are in --data (train-images-idx3-ubyte and
friends, optionally .gz; examples/fetch_mnist.sh downloads them), and
otherwise falls back to synthetic 8x8 images, so it always runs:

    LIBVAE_PATH=build/libvae.so.1 python3 examples/python/train_mnist.py
    LIBVAE_PATH=build/libvae.so.1 python3 examples/python/train_mnist.py \\
        --data data --epochs 2 --limit 10000 --threads 2 --save model.vae

Prints the loss per epoch, the test loss, an importance-sampled
log-likelihood estimate, and a few samples as text.
"""

import argparse
import array
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import libvae as vae  # noqa: E402


def find_idx(directory, stem):
    for name in (stem, stem + ".gz"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def load_mnist(directory):
    """(train, test) datasets from directory, or None when the files are absent."""
    files = [find_idx(directory, stem) for stem in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]
    if not all(files):
        return None
    train = vae.Dataset.load_idx(files[0], files[1])
    try:
        test = vae.Dataset.load_idx(files[2], files[3])
    except vae.VaeError:
        train.close()
        raise
    return train, test


def synthetic(rng, count, side=8):
    """count images of side x side in [0, 1]: noisy copies of four bar patterns."""
    dim = side * side
    patterns = []
    for k in range(4):
        img = array.array("f", bytes(4 * dim))
        for r in range(side):
            for c in range(side):
                on = (k == 0 and r == c) or (k == 1 and r + c == side - 1) or \
                     (k == 2 and r == side // 2) or (k == 3 and c == side // 2)
                img[r * side + c] = 0.9 if on else 0.05
        patterns.append(img)
    noise = rng.uniform(count * dim)
    picks = rng.uniform(count)
    data = array.array("f", bytes(4 * count * dim))
    labels = array.array("i", [0]) * count
    for i in range(count):
        k = min(int(picks[i] * 4), 3)
        labels[i] = k
        base = patterns[k]
        for j in range(dim):
            v = base[j] + 0.2 * (noise[i * dim + j] - 0.5)
            data[i * dim + j] = min(max(v, 0.0), 1.0)
    return vae.Dataset.from_floats(data, count, dim, labels=labels)


def ascii_image(values, width):
    shades = " .:-=+*#%@"
    rows = []
    for r in range(len(values) // width):
        row = values[r * width:(r + 1) * width]
        rows.append("".join(shades[min(int(v * len(shades)), len(shades) - 1)] for v in row))
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "data"),
                    help="directory with the MNIST IDX files (default: the repository's data/)")
    ap.add_argument("--synthetic", action="store_true", help="ignore MNIST, use synthetic data")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--hidden", type=int, nargs="+", default=[400])
    ap.add_argument("--latent", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1,
                    help="workers of the context (more than 1 sets the BLAS to 1 thread)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N training images")
    ap.add_argument("--binarize", action="store_true", help="dynamic binarization")
    ap.add_argument("--save", metavar="PATH", help="write the trained model there")
    args = ap.parse_args(argv)

    number, version = vae.library_version()
    print("libvae %s from %s" % (version, vae.library_path()))

    with vae.Rng(args.seed) as rng:
        datasets = None if args.synthetic else load_mnist(args.data)
        if datasets is None:
            if not args.synthetic:
                print("no MNIST files in %s: using synthetic 8x8 images" % args.data)
            datasets = synthetic(rng, 2000), synthetic(rng, 500)
            args.hidden = [h if h != 400 else 64 for h in args.hidden]
            args.latent = min(args.latent, 4)
            args.batch_size = min(args.batch_size, 64)
            args.lr = max(args.lr, 3e-3)
        train, test = datasets
        try:
            if args.limit and args.limit < train.count:
                limited = train.subset(range(args.limit))
                train.close()
                train = limited
            height, width = train.image_size
            if height == 1:  # flat samples (the synthetic data): show them square
                side = int(round(train.dim ** 0.5))
                height, width = (side, side) if side * side == train.dim else (1, train.dim)
            print("train %d x %d (%dx%d), test %d" % (train.count, train.dim, height, width,
                                                   test.count))
            run(args, rng, train, test, width)
        finally:
            train.close()
            test.close()
    return 0


def run(args, rng, train, test, width):
    if args.threads > 1:
        # Several workers run one single-threaded GEMM stream each.
        vae.blas_set_threads(1)
    with vae.Model.create_mlp(train.dim, args.hidden, args.latent, vae.ACT_RELU,
                              vae.LIKELIHOOD_BERNOULLI, seed=args.seed) as model, \
            vae.Context(threads=args.threads) as ctx, vae.Elbo() as elbo, \
            vae.Optimizer.adam(lr=args.lr) as opt, \
            vae.Trainer(model, elbo, opt, ctx, seed=args.seed) as trainer:
        trainer.reserve(args.batch_size)
        print("model %d-%s-%d, %d parameters, %d worker%s" % (
            train.dim, "-".join(map(str, args.hidden)), args.latent, model.n_params,
            ctx.threads, "s" if ctx.threads > 1 else ""))
        last = [0.0]

        def progress(done, total, loss):
            # A running loss on a terminal, at most once a second.
            now = time.monotonic()
            if now - last[0] > 1.0:
                last[0] = now
                print("\r  %6d/%d  loss %.3f " % (done, total, loss), end="", flush=True)

        for epoch in range(1, args.epochs + 1):
            st = trainer.train_epoch(train, batch_size=args.batch_size, binarize=args.binarize,
                                     progress=progress if sys.stdout.isatty() else None)
            ev = ctx.evaluate_dataset(model, elbo, test, rng)
            if sys.stdout.isatty():
                print("\r" + " " * 40 + "\r", end="")
            print("epoch %d: train loss %.3f (recon %.3f, kl %.3f) in %.1f s, test loss %.3f"
                  % (epoch, st.loss, st.recon, st.kl, st.seconds, ev.loss))

        n = min(100, test.count)
        ll = ctx.log_likelihood(model, test.range(0, n), 50, rng)
        print("log p(x) on %d test images, K = 50: %.3f nats" % (n, sum(ll) / n))

        if args.save:
            model.save(args.save)
            with vae.Model.load(args.save) as again:
                x = test.range(0, 4)
                assert ctx.reconstruct(again, x) == ctx.reconstruct(model, x)
            print("saved %s (%d bytes)" % (args.save, os.path.getsize(args.save)))

        samples = ctx.sample(model, rng, 2)
        for i in range(2):
            print(ascii_image(samples[i * train.dim:(i + 1) * train.dim], width))
            print()


if __name__ == "__main__":
    sys.exit(main())
