#!/usr/bin/env python3
"""Writes the seed inputs of tests/fuzz/corpus/ (run from anywhere with
LIBVAE_PATH naming a built libvae.so). Seeds are small valid files in the
framing each target expects (see the comment at the top of each target), and
crafted variants of them. Beside them: inputs the fuzzer failed on, named
crash-*, and the corpus the fuzzer grew from the seeds, reduced with -merge=1
(files named by their SHA-1), so the replay under ctest covers what fuzzing
reached.

Model files (corpus/model_file): version 2 as this library writes them
(seed-v2-*), version 1 as 0.1 and 1.0 wrote them (seed-v1-*: the same models
re-framed, byte for byte what 1.0 wrote), a checkpoint (whose model part
loads) and crafted variants (unknown chunks, truncation).

Checkpoints (corpus/checkpoint): the Python binding has no trainer, so real
checkpoints come from tests/fuzz/make_seeds.c, which this script compiles
with the C compiler named by CC (default cc) against the headers of this
tree and the library of LIBVAE_PATH, and runs in a scratch directory. By
hand:

    cc -std=c11 -Iinclude tests/fuzz/make_seeds.c -Lbuild -lvae \\
       -Wl,-rpath,$PWD/build -o make_seeds && ./make_seeds DIR

Its trainers match those of fuzz_checkpoint.c. Crafted variants cover the
refusals: unknown ancillary and critical chunks, truncation, a chunk twice,
a missing chunk, bytes after DONE, values out of range, another format
version, another architecture or optimizer kind."""
import gzip
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "examples", "python"))
import libvae as vae  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MAGIC = b"\x89VAE\r\n\x1a\n"

# Mode bytes. model_file: odd fixes the checksums up. checkpoint: bit 0 the
# same, bit 1 restores into the SGD trainer instead of the Adam one.
RAW, FIX = 0, 1
ADAM_RAW, ADAM_FIX, SGD_RAW, SGD_FIX = 0, 1, 2, 3


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- format version 2 (docs/format.md) -----------------------------------

def split(data):
    """The writer's version and the (type, data) chunks of a version-2 file."""
    assert data[:8] == MAGIC and struct.unpack_from("<I", data, 8)[0] == 2
    writer = struct.unpack_from("<I", data, 12)[0]
    pos, out = 16, []
    while pos < len(data):
        kind = data[pos:pos + 4]
        (n,) = struct.unpack_from("<Q", data, pos + 4)
        out.append((kind, data[pos + 12:pos + 12 + n]))
        pos += 16 + n
    assert out[-1][0] == b"DONE" and pos == len(data)
    return writer, out[:-1]


def chunk(kind, body):
    head = kind + struct.pack("<Q", len(body))
    return head + body + struct.pack("<I", zlib.crc32(head + body))


def join(chunks, writer=10100, version=2, done=True):
    out = MAGIC + struct.pack("<II", version, writer)
    out += b"".join(chunk(k, b) for k, b in chunks)
    return out + (chunk(b"DONE", b"") if done else b"")


def as_v1(data):
    """A model file of version 2 in version 1's framing (what 1.0 wrote)."""
    chunks = dict(split(data)[1])
    payload = chunks[b"ARCH"] + chunks[b"PARM"]
    head = MAGIC + struct.pack("<IIQ", 1, 0, len(payload)) + payload
    return head + struct.pack("<I", zlib.crc32(head))


def replace(chunks, kind, body):
    return [(k, body if k == kind else b) for k, b in chunks]


# ---- model files -----------------------------------------------------------

def model_seeds(checkpoint):
    models = {}
    with vae.Model.mlp(6, [4], 2, likelihood="bernoulli", seed=1) as m:
        models["mlp-bernoulli"] = (RAW, m.save_mem())
    with vae.Model.mlp(5, [3, 3], 2, activation="tanh", likelihood="gaussian", seed=2) as m:
        m.set_gaussian_sigma(0.5)
        models["mlp-gaussian"] = (FIX, m.save_mem())
    with vae.Model(36, 3, "bernoulli") as m:
        m.add_encoder_layer(vae.Layer.conv2d(1, 6, 6, 2, 3, stride=2, padding=1,
                                             activation="relu"))
        m.add_decoder_layer(vae.Layer.dense(3, 18, "elu"))
        m.add_decoder_layer(vae.Layer.conv2d_transpose(2, 3, 3, 1, 3, stride=2, padding=1,
                                                       output_padding=1))
        m.build(3)
        models["conv"] = (FIX, m.save_mem())
    for name, (mode, data) in models.items():
        write("model_file", "seed-v2-" + name, bytes([mode]) + data)
        write("model_file", "seed-v1-" + name, bytes([mode]) + as_v1(data))
    write("model_file", "seed-junk", b"\x00" + MAGIC)

    writer, chunks = split(models["mlp-gaussian"][1])
    # An ancillary chunk of a later version is skipped; a critical one is
    # refused; chunks in another order load.
    write("model_file", "seed-v2-unknown-ancillary",
          bytes([RAW]) + join(chunks[:1] + [(b"hist", b"trained 3 epochs")] + chunks[1:]))
    write("model_file", "seed-v2-unknown-critical",
          bytes([RAW]) + join(chunks + [(b"QUNT", b"\x08\x00\x00\x00")], writer=10200))
    write("model_file", "seed-v2-reordered", bytes([RAW]) + join(chunks[::-1]))
    data = join(chunks)
    write("model_file", "seed-v2-truncated", bytes([RAW]) + data[:len(data) // 2])
    # A checkpoint's model part.
    write("model_file", "seed-v2-checkpoint", bytes([FIX]) + checkpoint)


# ---- checkpoints -----------------------------------------------------------

def build_seeds(out):
    cc = os.environ.get("CC", "cc")
    if not os.environ.get("LIBVAE_PATH"):
        sys.exit("make_corpus.py: set LIBVAE_PATH to a built libvae.so (make_seeds links it)")
    lib = os.path.abspath(os.environ["LIBVAE_PATH"])
    libdir = lib if os.path.isdir(lib) else os.path.dirname(lib)
    exe = os.path.join(out, "make_seeds")
    subprocess.run([cc, "-std=c11", "-I" + os.path.join(ROOT, "include"),
                    os.path.join(HERE, "make_seeds.c"), "-L" + libdir, "-lvae",
                    "-Wl,-rpath," + libdir, "-o", exe], check=True)
    subprocess.run([exe, out], check=True, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    seeds = {}
    for name in os.listdir(out):
        if name != "make_seeds":
            with open(os.path.join(out, name), "rb") as f:
                seeds[name] = f.read()
    return seeds


def checkpoint_seeds(seeds):
    for name in ("ckpt-adam-fresh", "ckpt-adam-stepped", "ckpt-adam-full"):
        write("checkpoint", "seed-" + name[5:], bytes([ADAM_FIX]) + seeds[name])
    for name in ("ckpt-sgd-fresh", "ckpt-sgd-full", "ckpt-sgd-autoencoder"):
        write("checkpoint", "seed-" + name[5:], bytes([SGD_FIX]) + seeds[name])
    # Refused for the trainer: another architecture, another optimizer kind,
    # a model file (no trainer state), the same in version 1.
    write("checkpoint", "seed-other-arch", bytes([ADAM_FIX]) + seeds["ckpt-adam-other-arch"])
    write("checkpoint", "seed-adam-into-sgd", bytes([SGD_FIX]) + seeds["ckpt-adam-full"])
    write("checkpoint", "seed-model-file", bytes([ADAM_FIX]) + seeds["model"])
    write("checkpoint", "seed-model-file-v1", bytes([ADAM_FIX]) + as_v1(seeds["model"]))

    full = seeds["ckpt-adam-full"]
    writer, chunks = split(full)
    at = {k: b for k, b in chunks}
    epoc = lambda done: at[b"EPOC"][:48] + struct.pack("<Q", done) + at[b"EPOC"][56:]
    crafted = {
        # Restored: an unknown ancillary chunk is skipped; the chunks before
        # DONE may come in any order; EPOC, GRAD and meta are optional; an
        # open epoch may have all its samples done (saved from the progress
        # callback after its last step); the step counter may be at its
        # largest (the next Adam step then overflows: VAE_ERR_NUMERIC).
        "unknown-ancillary": chunks + [(b"tags", b"\x01\x02\x03")],
        "reordered": chunks[::-1],
        "no-epoc-meta-grad": [c for c in chunks if c[0] in (b"ARCH", b"PARM", b"OBJV",
                                                            b"OPTM", b"TRNR")],
        "epoch-done": replace(chunks, b"EPOC", epoc(3)),
        "steps-max": replace(chunks, b"TRNR", at[b"TRNR"][:40] + b"\xff" * 8 +
                             at[b"TRNR"][48:]),
        # Refused: an unknown critical chunk, a chunk twice, a missing one,
        # an epoch past its end, a generator stuck at zero, a learning rate
        # out of range (the first OPTM setting), a metadata key with a
        # control character, a metadata key twice.
        "unknown-critical": chunks[:2] + [(b"SCHD", b"\x00" * 8)] + chunks[2:],
        "chunk-twice": chunks + [(b"TRNR", at[b"TRNR"])],
        "no-trnr": [c for c in chunks if c[0] != b"TRNR"],
        "epoch-past-end": replace(chunks, b"EPOC", epoc(4)),
        "trnr-zero-rng": replace(chunks, b"TRNR", b"\x00" * 32 + at[b"TRNR"][32:]),
        "lr-negative": replace(chunks, b"OPTM", at[b"OPTM"][:16] + struct.pack("<d", -1.0) +
                               at[b"OPTM"][24:]),
        "meta-control-key": replace(chunks, b"meta", struct.pack("<I", 1) +
                                    struct.pack("<I", 3) + b"a\nb" + struct.pack("<I", 0)),
        "meta-key-twice": replace(chunks, b"meta", struct.pack("<I", 2) +
                                  2 * (struct.pack("<I", 3) + b"run" + struct.pack("<I", 1) +
                                       b"x")),
    }
    for name, c in crafted.items():
        later = name == "unknown-critical"  # as a later version would write it
        write("checkpoint", "seed-" + name,
              bytes([ADAM_RAW]) + join(c, 10200 if later else writer))
    write("checkpoint", "seed-bytes-after-done", bytes([ADAM_RAW]) + full + b"\x00")
    write("checkpoint", "seed-version-3",
          bytes([ADAM_RAW]) + full[:8] + struct.pack("<I", 3) + full[12:])
    write("checkpoint", "seed-truncated", bytes([ADAM_RAW]) + full[:len(full) * 2 // 3])
    write("checkpoint", "seed-truncated-fixed", bytes([ADAM_FIX]) + full[:len(full) * 2 // 3])
    write("checkpoint", "seed-junk", bytes([ADAM_RAW]) + MAGIC)


# ---- IDX ---------------------------------------------------------------------

def idx(dims, payload):
    return struct.pack(">BBBB", 0, 0, 8, len(dims)) + b"".join(
        struct.pack(">I", d) for d in dims) + bytes(payload)


def idx_seeds():
    images = idx([3, 2, 2], range(0, 240, 20))
    labels = idx([3], [7, 0, 9])
    framed = lambda flags, a, b=b"": bytes([flags]) + struct.pack("<H", len(a)) + a + b
    write("idx", "seed-images-labels", framed(1, images, labels))
    write("idx", "seed-gzip-images-labels",
          framed(1, gzip.compress(images, mtime=0), gzip.compress(labels, mtime=0)))
    write("idx", "seed-rows-no-labels", framed(0, idx([2, 5], [0, 255, 1, 2, 3] * 2)))


scratch = tempfile.mkdtemp(prefix="libvae-seeds-")
try:
    made = build_seeds(scratch)
finally:
    shutil.rmtree(scratch)
model_seeds(made["ckpt-adam-full"])
checkpoint_seeds(made)
idx_seeds()
