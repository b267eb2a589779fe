#!/usr/bin/env python3
"""Writes the seed inputs of tests/fuzz/corpus/ (run from the repository root
with LIBVAE_PATH naming a built libvae.so). Seeds are small valid files in the
framing each target expects (see the comment at the top of each target).
Beside them: inputs the fuzzer failed on, named crash-*, and the corpus the
fuzzer grew from the seeds, reduced with -merge=1 (files named by their SHA-1),
so the replay under ctest covers what fuzzing reached."""
import gzip
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples", "python"))
import libvae as vae  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def model_seeds():
    with vae.Model.mlp(6, [4], 2, likelihood="bernoulli", seed=1) as m:
        write("model_file", "seed-mlp-bernoulli", b"\x00" + m.save_mem())
    with vae.Model.mlp(5, [3, 3], 2, activation="tanh", likelihood="gaussian", seed=2) as m:
        m.set_gaussian_sigma(0.5)
        write("model_file", "seed-mlp-gaussian", b"\x01" + m.save_mem())
    with vae.Model(36, 3, "bernoulli") as m:
        m.add_encoder_layer(vae.Layer.conv2d(1, 6, 6, 2, 3, stride=2, padding=1,
                                             activation="relu"))
        m.add_decoder_layer(vae.Layer.dense(3, 18, "elu"))
        m.add_decoder_layer(vae.Layer.conv2d_transpose(2, 3, 3, 1, 3, stride=2, padding=1,
                                                       output_padding=1))
        m.build(3)
        write("model_file", "seed-conv", b"\x01" + m.save_mem())
    write("model_file", "seed-junk", b"\x00\x89VAE\r\n\x1a\n")


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


model_seeds()
idx_seeds()
