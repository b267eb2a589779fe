"""vae_ffi.h through Python cffi in ABI mode: FFI().cdef on the file as it is,
dlopen of the built library, then a model, a context and one vae_encode.

    python3 ffi_cffi.py <vae_ffi.h> <libvae.so>
"""
import math
import sys

import cffi


def main(header_path, lib_path):
    ffi = cffi.FFI()
    with open(header_path, encoding="utf-8") as f:
        ffi.cdef(f.read())
    vae = ffi.dlopen(lib_path)

    def check(cond, what):
        if not cond:
            raise AssertionError(f"{what}: {ffi.string(vae.vae_last_error()).decode()}")

    check(vae.vae_version_number() == vae.VAE_VERSION_NUMBER, "vae_version_number")
    check(vae.VAE_VERSION_NUMBER == vae.VAE_VERSION_MAJOR * 10000
          + vae.VAE_VERSION_MINOR * 100 + vae.VAE_VERSION_PATCH, "VAE_VERSION_NUMBER")
    check(ffi.string(vae.vae_strerror(vae.VAE_ERR_INVALID)) == b"invalid argument",
          "vae_strerror")

    n, d, h, l = 4, 6, 8, 2
    model = ffi.new("vae_model *[1]")
    ctx = ffi.new("vae_context *[1]")
    rng = ffi.new("vae_rng *[1]")
    try:
        hidden = ffi.new("size_t[1]", [h])
        check(vae.vae_model_create_mlp(model, d, hidden, 1, l, vae.VAE_ACT_RELU,
                                       vae.VAE_LIKELIHOOD_BERNOULLI, 42) == vae.VAE_OK,
              "vae_model_create_mlp")
        m = model[0]
        params = vae.vae_model_param_count(m)
        check(params == (d * h + h) + (h * 2 * l + 2 * l) + (l * h + h) + (h * d + d),
              f"vae_model_param_count gives {params}")
        check(vae.vae_model_latent_dim(m) == l, "vae_model_latent_dim")
        check(vae.vae_context_create(ctx) == vae.VAE_OK, "vae_context_create")
        check(vae.vae_rng_create(rng, 7) == vae.VAE_OK, "vae_rng_create")

        x = ffi.new("float[]", n * d)
        check(vae.vae_rng_uniform(rng[0], x, n * d) == vae.VAE_OK, "vae_rng_uniform")
        mu, logvar = ffi.new("float[]", n * l), ffi.new("float[]", n * l)
        check(vae.vae_encode(ctx[0], m, x, n, mu, logvar) == vae.VAE_OK, "vae_encode")
        for i in range(n * l):
            check(math.isfinite(mu[i]) and math.isfinite(logvar[i]),
                  f"vae_encode output {i} not finite")
        # A failure reports through the declared enum and vae_last_error().
        check(vae.vae_encode(ctx[0], ffi.NULL, x, n, mu, logvar) == vae.VAE_ERR_INVALID,
              "vae_encode without a model")
        check(len(ffi.string(vae.vae_last_error())) > 0, "vae_last_error")
        print(f"cffi {cffi.__version__}: libvae "
              f"{ffi.string(vae.vae_version_string()).decode()}, {params} parameters, "
              f"mu[0] = {mu[0]:g}")
    finally:
        vae.vae_rng_free(rng[0])
        vae.vae_context_free(ctx[0])
        vae.vae_model_free(model[0])


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except AssertionError as e:
        print(f"ffi_cffi: {e}", file=sys.stderr)
        sys.exit(1)
