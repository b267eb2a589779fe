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

Checkpoints (libvae 1.1): the whole training state goes to --checkpoint
(default checkpoint.vae) after every epoch (--checkpoint-every), at the end,
and on Ctrl-C, which stops after the step under way and prints the command
that resumes. --resume CHECKPOINT continues the run with the settings stored
in it, to the same numbers as a run that never stopped; --epochs is then the
total to reach. Files this run did not write are not replaced without --force.
"""

import argparse
import array
import hashlib
import os
import shlex
import signal
import sys
import time

# The binding, imported by main() once the arguments are parsed, so that
# --help works without the library.
vae = None

PROGRAM = "train_mnist.py"
DEFAULTS = {"epochs": 3, "batch_size": 128, "hidden": [400], "latent": 20, "lr": 1e-3,
            "seed": 1, "limit": 0, "binarize": False, "synthetic": False}
# Stored with every checkpoint; a resumed run keeps them (epochs excepted).
SETTINGS = ("batch_size", "hidden", "latent", "lr", "seed", "limit", "binarize", "synthetic")
EVAL_SEED_XOR = 0x9E3779B97F4A7C15   # every evaluation starts from Rng(seed ^ this)


def import_binding():
    global vae
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import libvae
    vae = libvae


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


def fingerprint(ds):
    """'N x D, blake2b ...' of every value, to recognise the same training data again."""
    h = hashlib.blake2b(digest_size=12)
    for first in range(0, ds.count, 1024):
        h.update(ds.range(first, min(1024, ds.count - first)).tobytes())
    return "%d x %d, blake2b %s" % (ds.count, ds.dim, h.hexdigest())


def ascii_image(values, width):
    shades = " .:-=+*#%@"
    rows = []
    for r in range(len(values) // width):
        row = values[r * width:(r + 1) * width]
        rows.append("".join(shades[min(int(v * len(shades)), len(shades) - 1)] for v in row))
    return "\n".join(rows)


def plural(n, word):
    return "%d %s%s" % (n, word, "" if n == 1 else "s")


def parse_every(text):
    """--checkpoint-every: (N, True) for 'Ne' epochs, (N, False) for N steps."""
    epochs = text[-1:] in ("e", "E")
    number = text[:-1] if epochs else text
    if not number.isdigit():
        raise argparse.ArgumentTypeError("%r is not N (steps) or Ne (epochs)" % text)
    return int(number), epochs


def settings_to_meta(s):
    return {"batch_size": str(s["batch_size"]), "hidden": ",".join(map(str, s["hidden"])),
            "latent": str(s["latent"]), "lr": repr(float(s["lr"])), "seed": str(s["seed"]),
            "limit": str(s["limit"]), "binarize": "1" if s["binarize"] else "0",
            "synthetic": "1" if s["synthetic"] else "0"}


def meta_to_settings(meta):
    return {"batch_size": int(meta["batch_size"]),
            "hidden": [int(h) for h in meta["hidden"].split(",")],
            "latent": int(meta["latent"]), "lr": float(meta["lr"]), "seed": int(meta["seed"]),
            "limit": int(meta["limit"]), "binarize": meta["binarize"] == "1",
            "synthetic": meta["synthetic"] == "1"}


class Refused(Exception):
    """A setting or an overwrite this run refuses (exit status 2)."""


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 on success, 1 on a library or file error, 2 on a bad command "
               "line or a refused setting or overwrite, 130 after Ctrl-C (the checkpoint "
               "written).")
    ap.add_argument("--data", default=None,
                    help="directory with the MNIST IDX files (default: the repository's data/; "
                         "with --resume, the run's own)")
    ap.add_argument("--synthetic", action="store_true", default=None,
                    help="ignore MNIST, use synthetic data")
    ap.add_argument("--epochs", type=int, default=None,
                    help="total epochs (default 3; with --resume: the total to reach, "
                         "default the run's own; a larger one extends a finished run)")
    ap.add_argument("--batch-size", type=int, default=None, help="default 128")
    ap.add_argument("--hidden", type=int, nargs="+", default=None, help="default 400")
    ap.add_argument("--latent", type=int, default=None, help="default 20")
    ap.add_argument("--lr", type=float, default=None, help="Adam learning rate, default 1e-3")
    ap.add_argument("--seed", type=int, default=None, help="default 1")
    ap.add_argument("--threads", type=int, default=1,
                    help="workers of the context (more than 1 sets the BLAS to 1 thread)")
    ap.add_argument("--limit", type=int, default=None,
                    help="use only the first N training images")
    ap.add_argument("--binarize", action="store_true", default=None,
                    help="dynamic binarization")
    ap.add_argument("--save", metavar="PATH", help="write the trained model there")
    ap.add_argument("--checkpoint", metavar="PATH",
                    help="where checkpoints go (default: checkpoint.vae, or the --resume file)")
    ap.add_argument("--checkpoint-every", metavar="N", type=parse_every, default=(1, True),
                    help="a checkpoint every N optimizer steps, or every N epochs with the "
                         "suffix e (2e); default 1e; 0: only at the end and on Ctrl-C")
    ap.add_argument("--resume", metavar="CHECKPOINT",
                    help="continue the run of CHECKPOINT where it stopped, with its settings "
                         "(giving one of them with another value is refused)")
    ap.add_argument("--force", action="store_true",
                    help="replace a --save or --checkpoint file this run did not write")
    args = ap.parse_args(argv)
    given = {k for k in DEFAULTS if getattr(args, k) is not None}
    for key, value in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    import_binding()
    number, version = vae.library_version()
    print("libvae %s from %s" % (version, vae.library_path()))
    if args.threads > 1:
        # Several workers run one single-threaded GEMM stream each.
        vae.blas_set_threads(1)
    try:
        with vae.Context(threads=args.threads) as ctx:
            return run(args, given, argv, ctx)
    except Refused as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2


def run(args, given, argv, ctx):
    settings = {k: getattr(args, k) for k in SETTINGS}
    repo_data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data")
    if args.resume:
        # The checkpoint's model part, a trainer over it, then its state.
        model = vae.Model.load(args.resume)
        elbo, opt = vae.Elbo(), vae.Optimizer.adam()
        trainer = vae.Trainer(model, elbo, opt, ctx)
        trainer.restore(args.resume)
        meta = trainer.meta
        if meta.get("program") != PROGRAM:
            raise Refused("%s holds no settings of a %s run" % (args.resume, PROGRAM))
        stored = meta_to_settings(meta)
        conflicts = ["--%s %s (the run has %s)" % (k.replace("_", "-"), settings[k], stored[k])
                     for k in SETTINGS if k in given and settings[k] != stored[k]]
        if conflicts:
            raise Refused("--resume %s continues a run with its own settings; these options "
                          "conflict with them:\n  %s\nDrop them, or start a new run."
                          % (args.resume, "\n  ".join(conflicts)))
        settings = stored
        if args.data is None:
            args.data = meta.get("data_dir")
        if "epochs" not in given:
            args.epochs = int(meta["epochs"])
        run_id = meta.get("run", "")
        ckpt = args.checkpoint or args.resume
    else:
        trainer = None
        run_id = "%s-%d" % (time.strftime("%Y%m%d-%H%M%S"), os.getpid())
        ckpt = args.checkpoint or "checkpoint.vae"
    if args.data is None:
        args.data = os.path.normpath(repo_data)
    try:
        return train(args, settings, run_id, ckpt, argv, ctx, trainer)
    finally:
        if trainer is not None:
            for obj in (trainer, trainer.optimizer, trainer.elbo, trainer.model):
                obj.close()


def check_overwrite(path, args, run_id, what):
    """Refuses to replace a file of another run (or any file, for a new run) without --force."""
    if not os.path.exists(path) or args.force:
        return
    if args.resume:
        if os.path.exists(args.resume) and os.path.samefile(path, args.resume):
            return
        if what == "checkpoint":
            try:
                with vae.Model.load(path) as m, vae.Elbo() as e, vae.Optimizer.adam() as o, \
                        vae.Context() as c, vae.Trainer(m, e, o, c) as t:
                    t.restore(path)
                    if t.get_meta("run") == run_id:
                        return
            except vae.VaeError:
                pass
    hint = "" if args.resume or what != "checkpoint" else \
        " To continue that run: --resume %s." % path
    raise Refused("%s exists and this run did not write it; not replacing it.%s Choose "
                  "another path, or add --force." % (path, hint))


def mnist_available(directory):
    return all(find_idx(directory, stem) for stem in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte"))


def load_data(args, settings):
    """(train, test): MNIST from --data, or the synthetic images of the seed."""
    if settings["synthetic"]:
        with vae.Rng(settings["seed"]) as rng:
            train, test = synthetic(rng, 2000), synthetic(rng, 500)
    else:
        datasets = load_mnist(args.data)
        if datasets is None:
            raise Refused("the run trained on MNIST, and %s does not hold the files"
                          % args.data)
        train, test = datasets
    if settings["limit"] and settings["limit"] < train.count:
        limited = train.subset(range(settings["limit"]))
        train.close()
        train = limited
    return train, test


def train(args, settings, run_id, ckpt, argv, ctx, trainer):
    resumed = trainer is not None
    if not resumed and (settings["synthetic"] or not mnist_available(args.data)):
        if not settings["synthetic"]:
            print("no MNIST files in %s: using synthetic 8x8 images" % args.data)
        settings["synthetic"] = True
        # Smaller sizes suit the synthetic data.
        settings["hidden"] = [h if h != 400 else 64 for h in settings["hidden"]]
        settings["latent"] = min(settings["latent"], 4)
        settings["batch_size"] = min(settings["batch_size"], 64)
        settings["lr"] = max(settings["lr"], 3e-3)
    train_ds, test = load_data(args, settings)
    try:
        data_id = ("synthetic " if settings["synthetic"] else "MNIST ") + fingerprint(train_ds)
        height, width = train_ds.image_size
        if height == 1:  # flat samples (the synthetic data): show them square
            side = int(round(train_ds.dim ** 0.5))
            height, width = (side, side) if side * side == train_ds.dim else (1, train_ds.dim)
        print("train %d x %d (%dx%d), test %d" % (train_ds.count, train_ds.dim, height, width,
                                               test.count))
        check_overwrite(ckpt, args, run_id, "checkpoint")
        if resumed:
            if trainer.get_meta("data") != data_id:
                raise Refused("the training data (%s) differs from the run's (%s)"
                              % (data_id, trainer.get_meta("data")))
            if args.save and os.path.exists(args.save) and not args.force and \
                    trainer.get_meta("save") != os.path.abspath(args.save):
                raise Refused("%s exists and this run did not write it; not replacing it. "
                              "Choose another --save, or add --force." % args.save)
            return loop(args, settings, ctx, trainer.model, trainer.elbo, trainer, train_ds,
                        test, width, ckpt)
        if args.save:
            check_overwrite(args.save, args, run_id, "model")
        with vae.Model.create_mlp(train_ds.dim, settings["hidden"], settings["latent"],
                                  vae.ACT_RELU, vae.LIKELIHOOD_BERNOULLI,
                                  seed=settings["seed"]) as model, \
                vae.Elbo() as elbo, vae.Optimizer.adam(lr=settings["lr"]) as opt, \
                vae.Trainer(model, elbo, opt, ctx, seed=settings["seed"]) as trainer:
            trainer.set_meta("program", PROGRAM)
            trainer.set_meta("run", run_id)
            words = [sys.argv[0]] + list(sys.argv[1:] if argv is None else argv)
            trainer.set_meta("argv", " ".join(shlex.quote(w) for w in words))
            for key, value in settings_to_meta(settings).items():
                trainer.set_meta(key, value)
            trainer.set_meta("data", data_id)
            trainer.set_meta("data_dir", os.path.abspath(args.data))
            return loop(args, settings, ctx, model, elbo, trainer, train_ds, test, width, ckpt)
    finally:
        train_ds.close()
        test.close()


def evaluate(ctx, model, elbo, test, seed):
    with vae.Rng(seed ^ EVAL_SEED_XOR) as rng:
        return ctx.evaluate_dataset(model, elbo, test, rng)


def loop(args, settings, ctx, model, elbo, trainer, train_ds, test, width, ckpt):
    trainer.set_meta("epochs", str(args.epochs))
    if args.save:
        trainer.set_meta("save", os.path.abspath(args.save))
    trainer.reserve(settings["batch_size"])
    every, every_epochs = args.checkpoint_every
    tty = sys.stdout.isatty()
    done_epochs = trainer.epochs
    if done_epochs > args.epochs or (done_epochs == args.epochs and trainer.epoch_position[1]):
        raise Refused("--epochs %d: the run has done %s already; --epochs is the total"
                      % (args.epochs, plural(done_epochs, "epoch")))
    print("model %d-%s-%d, %d parameters, %s, %s, checkpoint %s" % (
        train_ds.dim, "-".join(map(str, settings["hidden"])), settings["latent"],
        model.n_params, plural(args.epochs, "epoch"), plural(ctx.threads, "worker"), ckpt))
    if args.resume:
        done, total = trainer.epoch_position
        print("resuming %s: %s done%s, step %d" % (
            args.resume, plural(done_epochs, "epoch"),
            ", and %d of %s of the next" % (done, plural(total, "image")) if total else "",
            trainer.steps))

    # Ctrl-C raises KeyboardInterrupt (also when the process started with SIGINT
    # ignored, as a background job): the progress callback stops the epoch after
    # the step under way, and the handler below writes the checkpoint.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def resume_command():
        return "%s %s --resume %s" % (shlex.quote(sys.executable), shlex.quote(sys.argv[0]),
                                      shlex.quote(ckpt))

    try:
        for epoch in range(done_epochs + 1, args.epochs + 1):
            start, last = time.monotonic(), [0.0]
            first = trainer.epoch_position[0]

            def progress(done, total, loss):
                now = time.monotonic()
                if tty and (now - last[0] > 0.1 or done == total):
                    last[0] = now
                    rate = (done - first) / max(now - start, 1e-9)
                    print("\r\033[Kepoch %d/%d  %d/%d images  %.0f images/s  loss %.3f  "
                          "%.0f s left" % (epoch, args.epochs, done, total, rate, loss,
                                           (total - done) / max(rate, 1e-9)),
                          end="", flush=True)
                if every and not every_epochs and trainer.steps % every == 0:
                    trainer.save(ckpt)

            st = trainer.train_epoch(train_ds, batch_size=settings["batch_size"],
                                     binarize=settings["binarize"], progress=progress)
            ev = evaluate(ctx, model, elbo, test, settings["seed"])
            if tty:
                print("\r\033[K", end="")
            print("epoch %d/%d: train loss %.3f (recon %.3f, KL %.3f) in %.2f s, test loss "
                  "%.3f nats per image" % (epoch, args.epochs, st.loss, st.recon, st.kl,
                                           st.seconds, ev.loss))
            if every and every_epochs and epoch % every == 0:
                trainer.save(ckpt)
    except KeyboardInterrupt:
        # A second Ctrl-C waits until the checkpoint is written.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if tty:
            print("\r\033[K", end="")
        done, total = trainer.epoch_position
        print("Ctrl-C: stopped after %s%s (step %d); writing %s" % (
            plural(trainer.epochs, "epoch"),
            " and %d of %s of the next" % (done, plural(total, "image")) if total else "",
            trainer.steps, ckpt))
        trainer.save(ckpt)
        print("To continue where it stopped:\n  %s" % resume_command())
        return 130

    trainer.save(ckpt)   # the final checkpoint: --resume with a larger --epochs extends the run
    n = min(100, test.count)
    with vae.Rng(settings["seed"] ^ EVAL_SEED_XOR) as rng:
        ll = ctx.log_likelihood(model, test.range(0, n), 50, rng)
    print("log p(x) on %d test images, K = 50: %.3f nats per image" % (n, sum(ll) / n))

    if args.save:
        model.save(args.save)
        with vae.Model.load(args.save) as again:
            x = test.range(0, 4)
            assert ctx.reconstruct(again, x) == ctx.reconstruct(model, x)
        print("saved %s (%d bytes)" % (args.save, os.path.getsize(args.save)))
    print("checkpoint %s (to train further: %s --epochs TOTAL)" % (ckpt, resume_command()))

    with vae.Rng(settings["seed"] + 1) as rng:
        samples = ctx.sample(model, rng, 2)
    for i in range(2):
        print(ascii_image(samples[i * train_ds.dim:(i + 1) * train_ds.dim], width))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
