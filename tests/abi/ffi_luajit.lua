-- vae_ffi.h through LuaJIT's FFI: ffi.cdef on the file as it is, ffi.load of
-- the built library, then a model, a context and one vae_encode.
--   luajit ffi_luajit.lua <vae_ffi.h> <libvae.so>
local ffi = require("ffi")
local header_path, lib_path = arg[1], arg[2]
assert(header_path and lib_path, "usage: luajit ffi_luajit.lua <vae_ffi.h> <libvae.so>")

local f = assert(io.open(header_path, "rb"))
ffi.cdef(f:read("*a"))
f:close()
local vae = ffi.load(lib_path)

local function check(cond, what)
  if not cond then
    error(what .. ": " .. ffi.string(vae.vae_last_error()), 2)
  end
end
local function finite(v) return v == v and v - v == 0 end

check(vae.vae_version_number() == vae.VAE_VERSION_NUMBER, "vae_version_number")
check(vae.VAE_VERSION_NUMBER == vae.VAE_VERSION_MAJOR * 10000 + vae.VAE_VERSION_MINOR * 100
      + vae.VAE_VERSION_PATCH, "VAE_VERSION_NUMBER")
check(ffi.string(vae.vae_strerror(vae.VAE_ERR_INVALID)) == "invalid argument", "vae_strerror")

local N, D, H, L = 4, 6, 8, 2
local model = ffi.new("vae_model *[1]")
local ctx = ffi.new("vae_context *[1]")
local rng = ffi.new("vae_rng *[1]")
local ok, err = pcall(function()
  local hidden = ffi.new("size_t[1]", H)
  check(vae.vae_model_create_mlp(model, D, hidden, 1, L, vae.VAE_ACT_RELU,
                                 vae.VAE_LIKELIHOOD_BERNOULLI, 42) == vae.VAE_OK,
        "vae_model_create_mlp")
  local m = model[0]
  local params = tonumber(vae.vae_model_param_count(m))
  check(params == (D * H + H) + (H * 2 * L + 2 * L) + (L * H + H) + (H * D + D),
        "vae_model_param_count gives " .. params)
  check(tonumber(vae.vae_model_latent_dim(m)) == L, "vae_model_latent_dim")
  check(vae.vae_context_create(ctx) == vae.VAE_OK, "vae_context_create")
  check(vae.vae_rng_create(rng, 7) == vae.VAE_OK, "vae_rng_create")

  local x = ffi.new("float[?]", N * D)
  check(vae.vae_rng_uniform(rng[0], x, N * D) == vae.VAE_OK, "vae_rng_uniform")
  local mu, logvar = ffi.new("float[?]", N * L), ffi.new("float[?]", N * L)
  check(vae.vae_encode(ctx[0], m, x, N, mu, logvar) == vae.VAE_OK, "vae_encode")
  for i = 0, N * L - 1 do
    check(finite(mu[i]) and finite(logvar[i]), "vae_encode output " .. i .. " not finite")
  end
  -- A failure reports through the declared enum and vae_last_error().
  check(vae.vae_encode(ctx[0], nil, x, N, mu, logvar) == vae.VAE_ERR_INVALID,
        "vae_encode without a model")
  check(#ffi.string(vae.vae_last_error()) > 0, "vae_last_error")
  print(string.format("luajit: libvae %s, %d parameters, mu[0] = %g",
                      ffi.string(vae.vae_version_string()), params, mu[0]))
end)
vae.vae_rng_free(rng[0])
vae.vae_context_free(ctx[0])
vae.vae_model_free(model[0])
if not ok then
  io.stderr:write("ffi_luajit: ", tostring(err), "\n")
  os.exit(1)
end
