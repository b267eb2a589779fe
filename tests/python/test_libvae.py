"""Tests of the ctypes binding examples/python/libvae.py (standard library only).

Environment:
  LIBVAE_PATH        the shared library to load (see libvae.py)
  VAE_REFERENCE_EXE  tests/python/reference.c built against the same library;
                     without it the test compiles reference.c itself when a C
                     compiler, the header and LIBVAE_PATH are at hand, and is
                     skipped otherwise.

Run: python3 -m unittest discover -s tests/python -v
"""

import array
import collections
import contextlib
import ctypes
import faulthandler
import gc
import gzip
import io
import math
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import unittest
import weakref

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BINDING_DIR = os.path.join(ROOT, "examples", "python")
try:
    import libvae as vae
except ImportError as exc:
    if "LibraryNotFound" in type(exc).__name__ or "VersionMismatch" in type(exc).__name__:
        raise
    sys.path.insert(0, BINDING_DIR)
    import libvae as vae

# The sizes of reference.c: N samples (3 blocks of 64 at most) of dimension D,
# latent L, log-likelihood on NLL samples with K importance samples.
N, D, L, NLL, K = 130, 20, 3, 70, 4


def floats(values):
    return array.array("f", values)


def f32(value):
    """value rounded to float32, as the library stores its settings."""
    return struct.unpack("f", struct.pack("f", value))[0]


def sum_in_order(values):
    """Sum in double, index order: sum_floats() of reference.c."""
    total = 0.0
    for v in values:
        total += v
    return total


def stats5(st):
    """print_stats() of reference.c."""
    return [st.loss, st.recon, st.kl, float(st.samples), float(st.steps)]


def untimed(result):
    """A result without the wall-clock time of EpochStats, for comparisons."""
    if isinstance(result, vae.EpochStats):
        return result._replace(seconds=0.0)
    return result


def single_threaded_blas():
    """Contexts with several workers need it (vae_context_set_threads)."""
    vae.blas_set_threads(1)


class FreeLog:
    """Records the C free functions the binding calls (all go through vae._free_c)."""

    def __enter__(self):
        gc.collect()   # garbage of earlier tests is freed before the log starts
        self.names = []
        self._orig = vae._free_c

        def record(name, ptr):
            self.names.append(name)
            self._orig(name, ptr)

        vae._free_c = record
        return self

    def __exit__(self, *exc_info):
        vae._free_c = self._orig

    def before(self, first, then):
        """Whether every `first` free came before the first `then` free."""
        return self.names.index(first) < self.names.index(then)


# ---------------------------------------------------------------------------
# Bit-for-bit agreement with the C API
# ---------------------------------------------------------------------------


def reference_exe(tmpdir):
    """Path of the reference program: VAE_REFERENCE_EXE, else built here, else None."""
    exe = os.environ.get("VAE_REFERENCE_EXE")
    if exe:
        return exe, None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    libpath = os.environ.get("LIBVAE_PATH")
    include = os.path.join(ROOT, "include")
    if not (cc and libpath and os.path.isfile(libpath)
            and os.path.isfile(os.path.join(include, "vae", "vae.h"))):
        return None, "set VAE_REFERENCE_EXE (or LIBVAE_PATH to a library file and have cc)"
    exe = os.path.join(tmpdir, "py_reference")
    libdir = os.path.dirname(os.path.abspath(libpath))
    cmd = [cc, "-std=c11", "-I", include, os.path.join(HERE, "reference.c"),
           os.path.abspath(libpath), "-Wl,-rpath," + libdir, "-o", exe]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True)
    if proc.returncode:
        raise RuntimeError("cannot build reference.c:\n%s\n%s" % (" ".join(cmd), proc.stdout))
    return exe, None


def parse_reference(text):
    """{workers: {key: [values]}} from the "w<workers>.<key> values..." lines."""
    out = {}
    for line in text.splitlines():
        if line.strip():
            key, *values = line.split()
            prefix, key = key.split(".", 1)
            out.setdefault(int(prefix[1:]), {})[key] = [float(v) for v in values]
    return out


def python_run(workers):
    """run() of reference.c through the binding, with the same calls in the same order."""
    res = {}
    with vae.Rng(2024) as data:
        x = data.uniform(N * D)
    if workers > 1:
        single_threaded_blas()
    with vae.Context(threads=workers) as ctx, vae.Rng(99) as rng:
        with vae.Model.create_mlp(D, [12, 8], L, activation=vae.ACT_TANH,
                                  likelihood=vae.LIKELIHOOD_BERNOULLI, seed=11) as m, \
                vae.Elbo() as e, vae.Optimizer("adam", lr=1e-2) as adam:
            with vae.Trainer(m, e, adam, ctx, seed=7) as t:
                for step in range(5):
                    res["step%d" % step] = stats5(t.step(x))
                eps = rng.normal(N * L)
                res["forward_backward"] = stats5(t.forward_backward(x, eps=eps))
                g = t.grads()
                res["grads"] = [float(len(g)), sum_in_order(g)]
                res["grads_head"] = g[:5].tolist()
                t.apply()
                res["counters"] = [float(t.steps), float(t.epochs)]
            ev = vae.elbo_evaluate(ctx, m, e, x, eps=eps, per_sample=True)
            res["eval"] = stats5(ev)
            res["eval_per_sample"] = list(ev.per_sample)
            p = m.params()
            res["mlp_params"] = [float(len(p)), sum_in_order(p)]
            res["tensor_decoder.2.bias"] = list(m.get_tensor("decoder.2.bias"))
            mu, logvar = ctx.encode(m, memoryview(x)[:3 * D])
            res["mlp_mu"], res["mlp_logvar"] = list(mu), list(logvar)
            res["mlp_reconstruct"] = list(vae.reconstruct(ctx, m, memoryview(x)[:2 * D]))
            res["mlp_sample"] = list(vae.sample(ctx, m, rng, 2))
            res["mlp_loglik"] = list(vae.log_likelihood(ctx, m, memoryview(x)[:NLL * D], K,
                                                        rng))
            res["mlp_file_bytes"] = [float(len(m.save_mem()))]

        with vae.Model(D, L, vae.LIKELIHOOD_GAUSSIAN) as g:
            g.add_encoder_layer(vae.Layer.dense(D, 10, vae.ACT_RELU))
            g.add_decoder_layer(vae.Layer.dense(L, 10, "relu"))
            g.add_decoder_layer(vae.Layer.dense(10, D, vae.ACT_IDENTITY))
            g.build(seed=5)
            g.gaussian_sigma = 0.5
            with vae.Elbo(beta=0.5) as e2, \
                    vae.Optimizer.sgd(0.05, momentum=0.9, nesterov=True,
                                      weight_decay=1e-4) as sgd, \
                    vae.Dataset.from_floats(x, N, D) as ds:
                sgd.clip_norm = 5.0
                with vae.Trainer(g, e2, sgd, ctx, seed=8) as t2:
                    for epoch in range(2):
                        st = t2.train_epoch(ds, batch_size=100, binarize=bool(epoch))
                        res["epoch%d" % epoch] = stats5(st)
                    res["counters2"] = [float(t2.steps), float(t2.epochs)]
                    ev = ctx.evaluate_dataset(g, e2, ds, rng, per_sample=True)
                    res["eval_dataset"] = stats5(ev)
                    res["eval_dataset_per_sample"] = list(ev.per_sample)
                    res["gauss_params"] = [float(g.n_params), sum_in_order(g.params())]
                    e2.objective = vae.OBJECTIVE_AUTOENCODER
                    res["autoencoder"] = stats5(e2.evaluate(ctx, g, x))
                    res["autoencoder_forward_backward"] = stats5(t2.forward_backward(x))
                    res["autoencoder_grads"] = [float(len(t2.grads())),
                                                sum_in_order(t2.grads())]
                    t2.apply()
                    res["autoencoder_params"] = [float(g.n_params), sum_in_order(g.params())]
    return res


class ReferenceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with tempfile.TemporaryDirectory() as tmp:
            exe, why = reference_exe(tmp)
            if exe is None:
                raise unittest.SkipTest(why)
            proc = subprocess.run([exe], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  universal_newlines=True, timeout=120)
        if proc.returncode:
            raise AssertionError("reference program failed:\n%s" % proc.stderr)
        cls.want = parse_reference(proc.stdout)

    def check(self, workers):
        want = self.want[workers]
        got = python_run(workers)
        self.assertEqual(sorted(got), sorted(want))
        for key in want:
            # == on doubles: the same bits, not approximately equal.
            self.assertEqual(got[key], want[key], "%d workers: %s" % (workers, key))

    def test_bit_for_bit_equal_to_c_one_worker(self):
        self.check(1)

    def test_bit_for_bit_equal_to_c_two_workers(self):
        # A deadlock in the worker pool would otherwise hang the whole run.
        faulthandler.dump_traceback_later(120, exit=True)
        self.addCleanup(faulthandler.cancel_dump_traceback_later)
        self.check(2)

    def test_workers_do_not_change_the_c_results(self):
        # The library's promise, checked on its own output: any difference
        # here is a library bug, not a binding bug.
        self.assertEqual(sorted(self.want), [1, 2])
        for key, values in self.want[1].items():
            self.assertEqual(self.want[2][key], values, key)

    def test_same_seed_same_numbers(self):
        self.assertEqual(python_run(1), python_run(1))


# ---------------------------------------------------------------------------
# The binding itself: declarations, versions, exceptions
# ---------------------------------------------------------------------------


def header_prototypes():
    header = os.path.join(ROOT, "include", "vae", "vae.h")
    if not os.path.isfile(header):
        return None
    with open(header) as f:
        text = re.sub(r"/\*.*?\*/", " ", f.read(), flags=re.S)
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return re.findall(r"VAE_API\s+([^;(]*?)\b(vae_\w+)\s*\(([^)]*)\)\s*;", text)


def header_callback_types():
    """(return type, name, parameters) of every function pointer typedef of vae.h."""
    header = os.path.join(ROOT, "include", "vae", "vae.h")
    with open(header) as f:
        text = re.sub(r"/\*.*?\*/", " ", f.read(), flags=re.S)
    return re.findall(r"typedef\s+([^;(]*?)\(\s*\*\s*(vae_\w+)\s*\)\s*\(([^)]*)\)\s*;", text)


class BindingTest(unittest.TestCase):
    def test_every_exported_symbol_is_declared(self):
        mapfile = os.path.join(ROOT, "lib", "libvae.map")
        if not os.path.isfile(mapfile):
            self.skipTest("lib/libvae.map not found")
        with open(mapfile) as f:
            text = re.sub(r"/\*.*?\*/", " ", f.read(), flags=re.S)
        exported = set(re.findall(r"^\s*(vae_\w+)\s*;", text, flags=re.M))
        self.assertTrue(exported)
        self.assertEqual(exported, set(vae._SIGNATURES))
        for name in exported:
            self.assertIsNotNone(getattr(vae.lib, name).argtypes, name)

    def test_declarations_match_the_header(self):
        protos = header_prototypes()
        if protos is None:
            self.skipTest("include/vae/vae.h not found")
        declared = {name for _, name, _ in protos}
        self.assertEqual(declared, set(vae._SIGNATURES))
        P = ctypes.POINTER
        scalars = {"void": None, "unsigned": ctypes.c_uint, "int": ctypes.c_int,
                   "size_t": ctypes.c_size_t, "uint64_t": ctypes.c_uint64,
                   "int32_t": ctypes.c_int32, "float": ctypes.c_float,
                   "double": ctypes.c_double}
        structs = {"vae_train_options": vae.TrainOptions,
                   "vae_epoch_stats": vae.EpochStatsStruct,
                   "vae_allocator": vae.AllocatorStruct}
        callbacks = {"vae_exchange_fn": vae.ExchangeFn}   # function pointer typedefs

        def ctype(decl, is_param):
            """The ctypes type a C declaration (return type, or parameter) maps to."""
            tokens = re.sub(r"\bconst\b", " ", decl).replace("*", " * ").split()
            stars = 0
            if is_param and tokens != ["void"]:
                if "[" in tokens[-1]:
                    stars += 1  # size_t shape[4] is a pointer
                tokens = tokens[:-1]  # the parameter name
            stars += tokens.count("*")
            base = " ".join(t for t in tokens if t != "*")
            if (base, stars) == ("char", 1):
                return ctypes.c_char_p
            if (base, stars) == ("char", 2):  # const char **value: a string out-parameter
                return P(ctypes.c_char_p)
            if (base, stars) == ("void", 1):
                return ctypes.c_void_p
            if base in structs and stars == 1:
                return P(structs[base])
            if base in callbacks and stars == 0:
                return callbacks[base]
            if base.startswith("vae_"):  # opaque handles
                self.assertIn(stars, (1, 2), decl)
                return ctypes.c_void_p if stars == 1 else P(ctypes.c_void_p)
            self.assertIn(base, scalars, decl)
            self.assertIn(stars, (0, 1), decl)
            return scalars[base] if stars == 0 else P(scalars[base])

        for ret, name, params in protos:
            restype, argtypes = vae._SIGNATURES[name]
            want_ret = ctype(ret, False)
            if restype is vae._STATUS:
                self.assertIs(want_ret, ctypes.c_int, name)
            else:
                self.assertIs(restype, want_ret, name)
            params = [] if params.strip() == "void" else params.split(",")
            self.assertEqual(len(argtypes), len(params), name)
            for got, decl in zip(argtypes, params):
                self.assertIs(got, ctype(decl, True), "%s: %s" % (name, decl))

        # The callback types: every one is bound, with the header's prototype.
        typedefs = header_callback_types()
        self.assertEqual({name for _, name, _ in typedefs},
                         {"vae_progress_fn", "vae_exchange_fn"})
        callbacks["vae_progress_fn"] = vae.ProgressFn
        for ret, name, params in typedefs:
            cfunc = callbacks[name]
            self.assertIs(cfunc._restype_, ctype(ret, False), name)
            params = params.split(",")
            self.assertEqual(len(cfunc._argtypes_), len(params), name)
            for got, decl in zip(cfunc._argtypes_, params):
                self.assertIs(got, ctype(decl, True), "%s: %s" % (name, decl))

    def test_constants_match_the_header(self):
        header = os.path.join(ROOT, "include", "vae", "vae.h")
        if not os.path.isfile(header):
            self.skipTest("include/vae/vae.h not found")
        with open(header) as f:
            text = f.read()
        found = dict((name, int(value)) for name, value in
                     re.findall(r"\bVAE_([A-Z0-9_]+)\s*=\s*(-?\d+)", text))
        self.assertGreater(len(found), 50)
        for name, value in found.items():
            self.assertEqual(getattr(vae, name), value, name)

    def test_version(self):
        number, string = vae.library_version()
        self.assertEqual(number // 10000, 1)
        self.assertEqual(vae.HEADER_VERSION_MAJOR, 1)
        self.assertTrue(string.startswith("1."), string)
        self.assertEqual(number, vae.lib.vae_version_number())
        self.assertTrue(vae._compatible(10000))
        self.assertTrue(vae._compatible(10203))
        self.assertFalse(vae._compatible(100))    # 0.1.0
        self.assertFalse(vae._compatible(20000))
        header = os.path.join(ROOT, "include", "vae", "vae.h")
        if os.path.isfile(header):
            with open(header) as f:
                text = f.read()
            for part, value in (("MAJOR", vae.HEADER_VERSION_MAJOR),
                                ("MINOR", vae.HEADER_VERSION_MINOR),
                                ("PATCH", vae.HEADER_VERSION_PATCH)):
                self.assertIn("#define VAE_VERSION_%s %d\n" % (part, value), text)

    def import_with(self, libpath):
        env = dict(os.environ, LIBVAE_PATH=libpath, PYTHONPATH=BINDING_DIR)
        return subprocess.run([sys.executable, "-c", "import libvae"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=60)

    def test_import_refuses_another_major_version(self):
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if not cc:
            self.skipTest("no C compiler for the fake library")
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "fake.c")
            with open(src, "w") as f:
                f.write("unsigned vae_version_number(void) { return 100; }\n"
                        "const char *vae_version_string(void) { return \"0.1.0\"; }\n")
            lib = os.path.join(tmp, "libvae.so.1")
            proc = subprocess.run([cc, "-shared", "-fPIC", src, "-o", lib],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  universal_newlines=True)
            if proc.returncode:
                self.skipTest("cannot build a shared library: %s" % proc.stdout)
            proc = self.import_with(lib)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("VersionMismatchError", proc.stderr)
        self.assertIn("0.1.0", proc.stderr)

    def test_import_without_the_library(self):
        proc = self.import_with(os.path.join(HERE, "no-such-libvae.so"))
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("LibraryNotFoundError", proc.stderr)

    def test_struct_layouts(self):
        self.assertEqual(ctypes.sizeof(vae.TrainOptions), 4 * ctypes.sizeof(ctypes.c_size_t)
                         + 2 * ctypes.sizeof(ctypes.c_int))
        self.assertEqual(vae.EpochStatsStruct.samples.offset,
                         ctypes.sizeof(ctypes.c_size_t) + 4 * ctypes.sizeof(ctypes.c_double))
        opts = vae.TrainOptions()
        vae.lib.vae_train_options_init(ctypes.byref(opts), ctypes.sizeof(opts))
        self.assertEqual((opts.size, opts.batch_size, opts.shuffle, opts.binarize),
                         (ctypes.sizeof(opts), 128, 1, 0))
        with self.assertRaises(vae.InvalidArgument):
            vae.lib.vae_train_options_init(ctypes.byref(opts), 1)
        # struct vae_allocator: size, three function pointers, payload.
        ptr = ctypes.sizeof(ctypes.c_void_p)
        self.assertEqual(ctypes.sizeof(vae.AllocatorStruct), ctypes.sizeof(ctypes.c_size_t)
                         + 4 * ptr)
        self.assertEqual([getattr(vae.AllocatorStruct, f).offset for f in
                          ("malloc_fn", "realloc_fn", "free_fn", "payload")],
                         [ptr, 2 * ptr, 3 * ptr, 4 * ptr])
        self.assertEqual(vae.AllocatorStruct.malloc_fn.size, ptr)

    def test_exception_hierarchy(self):
        table = {vae.ERR_INVALID: (vae.InvalidArgument, ValueError),
                 vae.ERR_SHAPE: (vae.ShapeError, ValueError),
                 vae.ERR_NOMEM: (vae.OutOfMemory, MemoryError),
                 vae.ERR_IO: (vae.VaeIOError, OSError),
                 vae.ERR_FORMAT: (vae.FormatError, ValueError),
                 vae.ERR_NUMERIC: (vae.NumericError, ArithmeticError),
                 vae.ERR_STATE: (vae.StateError, RuntimeError),
                 vae.ERR_CANCELLED: (vae.Cancelled, vae.VaeError)}
        for code, (cls, builtin) in table.items():
            exc = vae._error(code, "detail")
            self.assertIs(type(exc), cls)
            self.assertIsInstance(exc, vae.VaeError)
            self.assertIsInstance(exc, builtin)
            self.assertEqual(exc.code, code)
            self.assertEqual(exc.strerror, vae.lib.vae_strerror(code).decode())
            self.assertIn("detail", str(exc))
            again = pickle.loads(pickle.dumps(exc))
            self.assertIs(type(again), cls)
            self.assertEqual((again.code, again.message), (code, "detail"))
        self.assertIs(type(vae._error(-99, "x")), vae.VaeError)

    def test_blas_threads(self):
        self.assertGreaterEqual(vae.blas_threads(), 1)
        for bad in (0, 1025):
            with self.assertRaises(vae.InvalidArgument) as cm:
                vae.blas_set_threads(bad)
            self.assertEqual(cm.exception.code, vae.ERR_INVALID)
            self.assertIn("vae_blas_set_threads", cm.exception.message)
        single_threaded_blas()
        self.assertEqual(vae.blas_threads(), 1)


class ErrorAssertions(unittest.TestCase):
    def assertVaeError(self, cls, func, *args, **kwargs):
        """func(*args) raises exactly cls, with a message and the matching code."""
        with self.assertRaises(cls) as cm:
            func(*args, **kwargs)
        exc = cm.exception
        self.assertIs(type(exc), cls)
        self.assertTrue(exc.message, "empty message")
        self.assertIn(exc.message, str(exc))
        self.assertEqual(exc.code, {vae.InvalidArgument: vae.ERR_INVALID,
                                    vae.ShapeError: vae.ERR_SHAPE,
                                    vae.OutOfMemory: vae.ERR_NOMEM,
                                    vae.VaeIOError: vae.ERR_IO,
                                    vae.FormatError: vae.ERR_FORMAT,
                                    vae.NumericError: vae.ERR_NUMERIC,
                                    vae.StateError: vae.ERR_STATE,
                                    vae.Cancelled: vae.ERR_CANCELLED}[cls])
        self.assertEqual(exc.strerror, vae.lib.vae_strerror(exc.code).decode())
        return exc

    def assertCError(self, cls, function, func, *args, **kwargs):
        """As assertVaeError, and the message is vae_last_error() of `function`."""
        exc = self.assertVaeError(cls, func, *args, **kwargs)
        self.assertTrue(exc.message.startswith(function), exc.message)
        return exc


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------


class LayerTest(ErrorAssertions):
    def test_standalone_dense(self):
        with vae.Layer.dense(3, 2, vae.ACT_IDENTITY) as layer, vae.Rng(1) as rng:
            self.assertEqual((layer.input_size, layer.output_size), (3, 2))
            self.assertEqual((layer.kind, layer.kind_name), (vae.LAYER_DENSE, "dense"))
            self.assertEqual(layer.activation, vae.ACT_IDENTITY)
            self.assertEqual(layer.n_params, 3 * 2 + 2)
            p = layer.params()
            self.assertEqual(len(p), 3 * 2 + 2)
            self.assertFalse(any(p))
            layer.init(rng)
            self.assertTrue(all(abs(v) <= 1 / math.sqrt(3) for v in p))
            p[:] = floats([1, 2, 3, 4, 5, 6, 0.5, -0.5])
            y = layer.forward([1, 0, 1, 0, 1, 0], batch=2)
            self.assertEqual(list(y), [4.5, 9.5, 2.5, 4.5])
            dx = layer.backward([1, 0, 0, 1])
            self.assertEqual(list(dx), [1, 2, 3, 4, 5, 6])
            self.assertEqual(list(layer.grads()), [1, 0, 1, 0, 1, 0, 1, 1])
            self.assertIsNone(layer.backward([1, 0, 0, 1], dx=None))
            with self.assertRaises(vae.ShapeError):
                layer.backward([1, 0, 0])

    def test_geometry(self):
        with vae.Layer.dense(5, 7, "sigmoid") as dense:
            g = dense.geometry
            self.assertEqual((g["inputs"], g["outputs"], g["params"]), (5, 7, 5 * 7 + 7))
            self.assertEqual(g["stride"], 0)
            self.assertEqual(dense.activation_name, "sigmoid")
            self.assertEqual(dense.get_param("outputs"), 7)
            self.assertEqual(dense.get_param(vae.LAYER_INPUTS), 5)
            self.assertCError(vae.InvalidArgument, "vae_layer_get_param", dense.get_param, 99)
            self.assertVaeError(vae.InvalidArgument, dense.get_param, "no_such_param")
        with vae.Layer.conv2d(2, 8, 6, 4, 3, stride=2, padding=1, activation="elu") as conv:
            self.assertEqual(conv.kind, vae.LAYER_CONV2D)
            self.assertEqual(conv.activation, vae.ACT_ELU)
            g = conv.geometry
            self.assertEqual((g["in_channels"], g["in_height"], g["in_width"]), (2, 8, 6))
            self.assertEqual((g["out_channels"], g["out_height"], g["out_width"]), (4, 4, 3))
            self.assertEqual((g["kernel_height"], g["kernel_width"]), (3, 3))
            self.assertEqual((g["stride"], g["padding"], g["output_padding"]), (2, 1, 0))
            self.assertEqual((g["inputs"], g["outputs"]), (2 * 8 * 6, 4 * 4 * 3))
            self.assertEqual(g["params"], 4 * 2 * 3 * 3 + 4)
        with vae.Layer.conv2d_transpose(4, 4, 3, 2, 3, stride=2, padding=1,
                                        output_padding=1) as convt:
            self.assertEqual(convt.kind_name, "conv2d_transpose")
            self.assertEqual((convt.get_param("out_height"), convt.get_param("out_width")),
                             (8, 6))
            self.assertEqual(convt.get_param("output_padding"), 1)

    def test_backward_before_forward(self):
        with vae.Layer.dense(3, 2) as layer:
            with self.assertRaises(vae.StateError):
                layer.backward([0.0, 0.0])

    def test_conv_model(self):
        with vae.Model(64, 2, "bernoulli") as m:
            conv = vae.Layer.conv2d(1, 8, 8, 4, 4, stride=2, padding=1, activation="relu")
            self.assertEqual(conv.output_size, 4 * 4 * 4)
            m.add_encoder_layer(conv)
            m.add_decoder_layer(vae.Layer.dense(2, 4 * 4 * 4, "relu"))
            convt = vae.Layer.conv2d_transpose(4, 4, 4, 1, 4, stride=2, padding=1)
            self.assertEqual(convt.output_size, 64)
            m.add_decoder_layer(convt)
            m.build(seed=1)
            self.assertEqual(m.tensor_shape("encoder.0.weight"), (4, 1, 4, 4))
            self.assertEqual(m.tensor_shape("decoder.1.weight"), (4, 1, 4, 4))  # [in, out, kh, kw]
            self.assertEqual(m.tensor_shape("decoder.1.bias"), (1,))
            self.assertEqual([layer.kind for layer in m.layers],
                             [vae.LAYER_CONV2D, vae.LAYER_DENSE, vae.LAYER_DENSE,
                              vae.LAYER_CONV2D_TRANSPOSE])
            with vae.Rng(2) as rng, vae.Context() as ctx, vae.Elbo() as e, \
                    vae.Optimizer.adam() as opt, vae.Trainer(m, e, opt, ctx, seed=3) as t:
                x = rng.uniform(3 * 64)
                losses = [t.step(x).loss for _ in range(2)]
                self.assertTrue(all(math.isfinite(v) for v in losses))
                self.assertEqual(len(ctx.reconstruct(m, x)), 3 * 64)
        with self.assertRaises(vae.ShapeError) as cm:
            vae.Layer.conv2d(1, 2, 2, 1, 5)
        self.assertIn("vae_layer_conv2d_create", cm.exception.message)

    def test_add_consumes_the_layer(self):
        with vae.Model(4, 2) as m:
            enc = vae.Layer.dense(4, 3, "tanh")
            m.add_encoder_layer(enc)
            self.assertTrue(enc.closed)
            self.assertIn("consumed by Model.add_encoder_layer", repr(enc))
            for use in (lambda: enc.input_size, lambda: enc.kind, lambda: enc.params(),
                        lambda: enc.forward([0.0] * 4), lambda: enc.get_param("inputs")):
                exc = self.assertVaeError(vae.InvalidArgument, use)
                self.assertIn("consumed", exc.message)
            # A consumed layer cannot be added again (the C layer belongs to m).
            exc = self.assertVaeError(vae.InvalidArgument, m.add_decoder_layer, enc)
            self.assertIn("consumed", exc.message)
            enc.close()
            enc.close()
            m.add_decoder_layer(vae.Layer.dense(2, 4))
            self.assertEqual((m.layer_count, m.encoder_layer_count), (2, 1))
            m.build(3)
            # The model's copy is read through Model.layers.
            self.assertEqual((m.layers[0].kind, m.layers[0].activation, m.layers[0].input_size),
                             (vae.LAYER_DENSE, vae.ACT_TANH, 4))

    def test_failed_add_consumes_the_layer_too(self):
        with vae.Model.create_mlp(4, [3], 2) as m, FreeLog() as log:
            late = vae.Layer.dense(4, 4)
            exc = self.assertCError(vae.StateError, "vae_model_add_encoder_layer",
                                    m.add_encoder_layer, late)
            self.assertTrue(late.closed)
            self.assertVaeError(vae.InvalidArgument, late.forward, [0.0] * 4)
            self.assertEqual(m.layer_count, 4)
            # The library freed the layer: the binding must not free it again.
            self.assertNotIn("vae_layer_free", log.names)
            late.close()
            del late
            gc.collect()
            self.assertNotIn("vae_layer_free", log.names)
            self.assertIn("built", exc.message)

    def test_add_to_a_closed_model_consumes_and_frees(self):
        m = vae.Model(4, 2)
        m.close()
        with FreeLog() as log:
            layer = vae.Layer.dense(2, 4)
            self.assertVaeError(vae.InvalidArgument, m.add_decoder_layer, layer)
            self.assertTrue(layer.closed)
            self.assertEqual(log.names, ["vae_layer_free"])

    def test_add_refused_while_a_view_is_exported(self):
        with vae.Model(4, 2) as m:
            layer = vae.Layer.dense(2, 4)
            part = layer.params()[0:3]  # a derived view: keeps the layer's memory
            exc = self.assertVaeError(vae.StateError, m.add_decoder_layer, layer)
            self.assertIn("memoryview", exc.message)
            self.assertFalse(layer.closed)   # not consumed: the C call was not made
            self.assertEqual(m.layer_count, 0)
            part[0] = 1.5
            self.assertEqual(layer.params()[0], 1.5)
            del part
            params = layer.params()          # the cached view itself is fine:
            m.add_decoder_layer(layer)       # add releases it
            self.assertTrue(layer.closed)
            with self.assertRaises(ValueError):
                params[0]
            self.assertEqual(m.layer_count, 1)

    def test_wrong_layer_type(self):
        with vae.Model(4, 2) as m, vae.Rng(1) as rng:
            with self.assertRaises(TypeError):
                m.add_encoder_layer(rng)
            self.assertFalse(rng.closed)
            with self.assertRaises(TypeError):
                m.add_encoder_layer(m.layers)


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


class ModelTest(ErrorAssertions):
    def setUp(self):
        self.rng = vae.Rng(7)
        self.ctx = vae.Context()
        self.model = vae.Model.create_mlp(D, [12], L, seed=3)
        self.x = self.rng.uniform(4 * D)

    def tearDown(self):
        for obj in (self.model, self.ctx, self.rng):
            obj.close()

    def test_properties(self):
        m = self.model
        self.assertEqual((m.input_dim, m.latent_dim, m.likelihood), (D, L, 0))
        self.assertTrue(m.built)
        self.assertEqual(m.n_params, (D * 12 + 12) + (12 * 2 * L + 2 * L) + (L * 12 + 12)
                         + (12 * D + D))
        self.assertEqual(m.param_count, m.n_params)
        self.assertEqual(m.gaussian_sigma, 1.0)
        self.assertIn("parameters", repr(m))
        self.assertEqual(vae.Model.mlp, vae.Model.create_mlp)

    def test_layers(self):
        m = self.model
        self.assertEqual((m.layer_count, m.encoder_layer_count), (4, 1))
        layers = m.layers
        self.assertEqual([layer.name for layer in layers],
                         ["encoder.0", "head", "decoder.0", "decoder.1"])
        self.assertEqual([layer.part for layer in layers],
                         ["encoder", "head", "decoder", "decoder"])
        self.assertEqual([(layer.input_size, layer.output_size) for layer in layers],
                         [(D, 12), (12, 2 * L), (L, 12), (12, D)])
        self.assertEqual([layer.activation for layer in layers],
                         [vae.ACT_RELU, vae.ACT_IDENTITY, vae.ACT_RELU, vae.ACT_IDENTITY])
        self.assertTrue(all(layer.kind == vae.LAYER_DENSE for layer in layers))
        self.assertEqual(sum(layer.n_params for layer in layers), m.n_params)
        self.assertEqual(layers[1].geometry["params"], 12 * 2 * L + 2 * L)
        self.assertEqual(m.layer(-1).name, "decoder.1")
        self.assertVaeError(vae.InvalidArgument, m.layer, 4)
        self.assertIn("head", repr(layers[1]))
        with vae.Model(D, L) as unbuilt:
            unbuilt.add_encoder_layer(vae.Layer.dense(D, 6))
            unbuilt.add_decoder_layer(vae.Layer.dense(L, D))
            self.assertEqual([layer.name for layer in unbuilt.layers],
                             ["encoder.0", "decoder.0"])
            first = unbuilt.layers
            unbuilt.build(1)
            self.assertEqual([layer.name for layer in unbuilt.layers],
                             ["encoder.0", "head", "decoder.0"])
            # A ModelLayer keeps its C layer, not its index, across build().
            self.assertEqual(first[1].input_size, L)

    def test_named_tensors(self):
        m = self.model
        names = m.tensor_names
        self.assertEqual(names, ["encoder.0.weight", "encoder.0.bias", "head.weight",
                                 "head.bias", "decoder.0.weight", "decoder.0.bias",
                                 "decoder.1.weight", "decoder.1.bias"])
        self.assertEqual(m.tensor_count, 8)
        shapes = [m.tensor_shape(name) for name in names]
        self.assertEqual(shapes, [(12, D), (12,), (2 * L, 12), (2 * L,), (12, L), (12,),
                                  (D, 12), (D,)])
        tensors = m.tensors
        self.assertEqual(list(tensors), names)
        offset = 0
        params = m.params()
        for index, name in enumerate(names):
            info = tensors[name]
            self.assertEqual((info.name, info.index, info.offset), (name, index, offset))
            self.assertEqual(info.count, math.prod(info.shape))
            self.assertEqual(m.tensor_index(name), index)
            self.assertEqual(m.tensor_info(index), info)
            # Dense weights are [out][in] in the slab too: the same floats.
            self.assertEqual(m.get_tensor(name).tolist(),
                             params[offset:offset + info.count].tolist())
            offset += info.count
        self.assertEqual(offset, m.n_params)

    def test_set_tensor(self):
        m = self.model
        info = m.tensor_info("head.bias")
        values = floats(range(info.count))
        m.set_tensor("head.bias", values)
        self.assertEqual(m.get_tensor(info.index), values)
        self.assertEqual(m.params()[info.offset:info.offset + info.count].tolist(),
                         values.tolist())
        m.set_tensor(info.index, [0.0] * info.count)
        out = floats([9.0] * info.count)
        self.assertIs(m.get_tensor("head.bias", out=out), out)
        self.assertFalse(any(out))
        # Bad input: the right status, nothing changed.
        self.assertCError(vae.ShapeError, "vae_model_tensor_set", m.set_tensor, "head.bias",
                          [1.0] * (info.count + 1))
        bad = [1.0] * info.count
        bad[2] = float("nan")
        self.assertCError(vae.NumericError, "vae_model_tensor_set", m.set_tensor,
                          "head.bias", bad)
        self.assertFalse(any(m.get_tensor("head.bias")))
        self.assertCError(vae.InvalidArgument, "vae_model_tensor_find", m.set_tensor,
                          "head.gamma", [0.0])
        self.assertCError(vae.InvalidArgument, "vae_model_tensor_find", m.tensor_index,
                          "nope")
        self.assertCError(vae.InvalidArgument, "vae_model_tensor_info", m.tensor_info, 8)
        self.assertVaeError(vae.ShapeError, m.get_tensor, "head.bias",
                            out=floats([0.0] * (info.count - 1)))
        with vae.Model(D, L) as unbuilt:
            self.assertEqual((unbuilt.tensor_count, unbuilt.tensor_names), (0, []))
            self.assertCError(vae.StateError, "vae_model_tensor_find", unbuilt.tensor_index,
                              "head.bias")
            self.assertCError(vae.StateError, "vae_model_tensor_info", unbuilt.tensor_info, 0)
            self.assertVaeError(vae.StateError, unbuilt.params)

    def test_model_params(self):
        m = self.model
        m.gaussian_sigma = 0.25
        self.assertEqual(m.gaussian_sigma, 0.25)
        self.assertEqual(m.get_param("gaussian_sigma"), 0.25)
        for bad in (0.0, -1.0, float("nan"), float("inf")):
            self.assertCError(vae.InvalidArgument, "vae_model_set_param", setattr, m,
                              "gaussian_sigma", bad)
            self.assertEqual(m.gaussian_sigma, 0.25)
        self.assertCError(vae.InvalidArgument, "vae_model_set_param", m.set_param, 42, 1.0)
        self.assertCError(vae.InvalidArgument, "vae_model_get_param", m.get_param, 42)
        with self.assertRaises(TypeError):
            m.set_param("gaussian_sigma", "big")

    def test_inputs_of_every_kind_agree(self):
        m, x, ctx = self.model, self.x, self.ctx
        want = vae.reconstruct(ctx, m, x)
        self.assertIsInstance(want, array.array)
        self.assertEqual(want.typecode, "f")
        self.assertEqual(len(want), 4 * D)
        rows = [list(x[i * D:(i + 1) * D]) for i in range(4)]
        readonly = memoryview(bytes(memoryview(x).cast("B"))).cast("f")
        for given in (list(x), tuple(x), rows, memoryview(x), readonly,
                      memoryview(x).cast("B").cast("f", (4, D))):
            self.assertEqual(vae.reconstruct(ctx, m, given), want)
        self.assertEqual(ctx.reconstruct(m, x, n=4), want)

    def test_out_buffers_are_written_in_place(self):
        m, ctx = self.model, self.ctx
        out = array.array("f", bytes(4 * 2 * D))
        self.assertIs(vae.sample(ctx, m, self.rng, 2, out=out), out)
        self.assertTrue(any(out))
        mu, lv = array.array("f", [0.0]) * (4 * L), bytearray(16 * L)
        got = vae.encode(ctx, m, self.x, mu=mu, logvar=memoryview(lv).cast("f"))
        self.assertIs(got[0], mu)
        self.assertEqual(memoryview(lv).cast("f").tolist(), list(ctx.encode(m, self.x)[1]))
        self.assertEqual(mu, ctx.encode(m, self.x)[0])
        dec = vae.decode(ctx, m, mu)
        self.assertEqual(len(dec), 4 * D)
        self.assertTrue(all(0.0 <= v <= 1.0 for v in dec))
        # vae_sample draws the codes as vae_rng_normal would, then decodes.
        with vae.Rng(5) as a, vae.Rng(5) as b:
            self.assertEqual(vae.sample(ctx, m, a, 3), vae.decode(ctx, m, b.normal(3 * L)))

    def test_params_are_a_zero_copy_view(self):
        m, ctx = self.model, self.ctx
        p = m.params()
        self.assertEqual((p.format, len(p), p.readonly), ("f", m.n_params, False))
        self.assertIs(m.params(), p)
        before = vae.reconstruct(ctx, m, self.x)
        saved = p.tolist()
        for i in range(len(p)):
            p[i] = 0.0
        self.assertTrue(all(v == 0.5 for v in vae.reconstruct(ctx, m, self.x)))  # sigmoid(0)
        p[:] = array.array("f", saved)
        self.assertEqual(vae.reconstruct(ctx, m, self.x), before)

    def test_save_load_file_and_bytes(self):
        m, x, ctx = self.model, self.x, self.ctx
        with vae.Elbo() as e, vae.Optimizer.adam() as opt, vae.Trainer(m, e, opt, ctx) as t:
            for _ in range(3):
                t.step(x)
        want = vae.reconstruct(ctx, m, x)
        mu = vae.encode(ctx, m, x)[0]
        with tempfile.TemporaryDirectory() as tmp:
            for path in (os.path.join(tmp, "model.vae"),
                         os.fsencode(os.path.join(tmp, "m2.vae"))):
                m.save(path)
                with vae.Model.load(path) as loaded:
                    self.assertTrue(loaded.built)
                    self.assertEqual(vae.reconstruct(ctx, loaded, x), want)
                    self.assertEqual(vae.encode(ctx, loaded, x)[0], mu)
                    self.assertEqual(loaded.params().tolist(), m.params().tolist())
                    self.assertEqual(loaded.tensor_names, m.tensor_names)
            import pathlib
            m.save(pathlib.Path(tmp) / "m3.vae")
            with open(os.path.join(tmp, "m3.vae"), "rb") as f:
                on_disk = f.read()
        data = m.save_mem()
        self.assertIsInstance(data, bytes)
        self.assertEqual(data, on_disk)
        for blob in (data, bytearray(data), memoryview(data)):
            with vae.Model.load_mem(blob) as loaded:
                self.assertEqual(vae.reconstruct(ctx, loaded, x), want)
                self.assertEqual(loaded.save_mem(), data)
        # The Gaussian sigma travels with the file.
        with vae.Model(D, L, "gaussian") as g:
            g.add_decoder_layer(vae.Layer.dense(L, D))
            g.build(2)
            g.gaussian_sigma = 0.75
            with vae.Model.load_mem(g.save_mem()) as again:
                self.assertEqual((again.likelihood, again.gaussian_sigma),
                                 (vae.LIKELIHOOD_GAUSSIAN, 0.75))

    def test_continuous_bernoulli(self):
        logits = [-30.0, -8.0, -1.0, -1e-3, 0.0, 1e-5, 0.3, 1.5, 5.0, 40.0] * 2
        self.assertEqual(len(logits), D)
        with vae.Model.create_mlp(D, [6], L, activation="tanh",
                                  likelihood="continuous_bernoulli", seed=4) as m:
            self.assertEqual(m.likelihood, vae.LIKELIHOOD_CONTINUOUS_BERNOULLI)
            self.assertEqual(vae.LIKELIHOOD_CONTINUOUS_BERNOULLI, 2)
            self.assertIn("continuous_bernoulli", repr(m))
            # A decoder that ignores z: its output is the logits.
            m.set_tensor("decoder.1.weight", [0.0] * (D * 6))
            m.set_tensor("decoder.1.bias", logits)
            out = vae.decode(self.ctx, m, [0.5] * L)
            for l, mean in zip(logits, out):
                want = 0.5 + l / 12 if abs(l) < 1e-6 else 1 / -math.expm1(-l) - 1 / l
                self.assertTrue(0.0 <= mean <= 1.0, (l, mean))
                self.assertAlmostEqual(mean, want, delta=3e-7 * want)
            with vae.Model.load_mem(m.save_mem()) as again:
                self.assertEqual(again.likelihood, vae.LIKELIHOOD_CONTINUOUS_BERNOULLI)
                self.assertEqual(vae.decode(self.ctx, again, [0.5] * L), out)
        with vae.Model(D, L, vae.LIKELIHOOD_CONTINUOUS_BERNOULLI) as u:
            self.assertEqual(u.likelihood, 2)
        self.assertCError(vae.InvalidArgument, "vae_model_create", vae.Model, D, L, 3)
        with self.assertRaises(vae.InvalidArgument):
            vae.Model(D, L, "poisson")

    def test_log_likelihood(self):
        ll = vae.log_likelihood(self.ctx, self.model, self.x, 8, self.rng)
        self.assertEqual((ll.typecode, len(ll)), ("d", 4))
        self.assertTrue(all(v < 0 and math.isfinite(v) for v in ll))

    def test_anomaly_score(self):
        # -log p(x) is the negated log_likelihood with the same seed, bit for bit.
        with vae.Rng(5) as r1, vae.Rng(5) as r2:
            got = vae.anomaly_score(self.ctx, self.model, self.x, "nll", 8, r1)
            ll = vae.log_likelihood(self.ctx, self.model, self.x, 8, r2)
        self.assertEqual((got.typecode, len(got)), ("d", 4))
        self.assertEqual(list(got), [-v for v in ll])
        # The -ELBO with one draw is elbo_evaluate's per-sample loss with the same noise.
        with vae.Rng(6) as r1, vae.Rng(6) as r2, vae.Elbo() as e:
            got = self.ctx.anomaly_score(self.model, self.x, vae.ANOMALY_NEG_ELBO, 1, r1)
            st = vae.elbo_evaluate(self.ctx, self.model, e, self.x, rng=r2, per_sample=True)
        self.assertEqual(list(got), list(st.per_sample))
        # Every kind gives n finite scores; the complexity term lowers -log p(x).
        with vae.Rng(9) as r1, vae.Rng(9) as r2:
            nll = vae.anomaly_score(self.ctx, self.model, self.x, "nll", 4, r1)
            cx = vae.anomaly_score(self.ctx, self.model, self.x, "complexity", 4, r2)
        self.assertTrue(all(c < v for c, v in zip(cx, nll)))
        rp = vae.anomaly_score(self.ctx, self.model, self.x, "recon_prob", 3, self.rng)
        self.assertTrue(all(v > 0 and math.isfinite(v) for v in rp))
        self.assertCError(vae.InvalidArgument, "vae_anomaly_score", vae.anomaly_score,
                          self.ctx, self.model, self.x, 7, 1, self.rng)
        self.assertCError(vae.InvalidArgument, "vae_anomaly_score", vae.anomaly_score,
                          self.ctx, self.model, self.x, "nll", 0, self.rng)
        with self.assertRaises(vae.InvalidArgument):
            vae.anomaly_score(self.ctx, self.model, self.x, "poisson", 1, self.rng)


# ---------------------------------------------------------------------------
# Contexts
# ---------------------------------------------------------------------------


class ContextTest(ErrorAssertions):
    def setUp(self):
        self.rng = vae.Rng(3)
        self.model = vae.Model.create_mlp(D, [16], L, seed=4)
        self.x = self.rng.uniform(150 * D)   # 3 blocks of 50

    def tearDown(self):
        for obj in (self.model, self.rng):
            obj.close()

    def test_threads(self):
        faulthandler.dump_traceback_later(120, exit=True)
        self.addCleanup(faulthandler.cancel_dump_traceback_later)
        single_threaded_blas()
        with vae.Context() as one, vae.Context(threads=3) as three, vae.Elbo() as e:
            self.assertEqual((one.threads, three.threads), (1, 3))
            eps = self.rng.normal(150 * L)
            for func, args in ((vae.reconstruct, (self.x,)), (vae.encode, (self.x,)),
                               (vae.elbo_evaluate, (e, self.x, None, eps, None, True))):
                self.assertEqual(untimed(func(one, self.model, *args)),
                                 untimed(func(three, self.model, *args)))
            with vae.Rng(9) as a, vae.Rng(9) as b:
                self.assertEqual(vae.log_likelihood(one, self.model, self.x, 3, a),
                                 vae.log_likelihood(three, self.model, self.x, 3, b))
            three.threads = 2
            self.assertEqual(three.threads, 2)
            for bad in (0, 65):
                self.assertCError(vae.InvalidArgument, "vae_context_set_threads", setattr,
                                  three, "threads", bad)
                self.assertEqual(three.threads, 2)
            three.set_threads(1)
            self.assertEqual(three.threads, 1)

    def test_more_workers_need_a_single_threaded_blas(self):
        try:
            vae.blas_set_threads(4)
            if vae.blas_threads() == 1:
                self.skipTest("this BLAS runs one thread whatever it is told")
            with vae.Context() as ctx:
                exc = self.assertCError(vae.StateError, "vae_context_set_threads",
                                        ctx.set_threads, 2)
                self.assertIn("BLAS", exc.message)
                self.assertEqual(ctx.threads, 1)
                self.assertVaeError(vae.StateError, vae.Context, 2)
        finally:
            single_threaded_blas()

    def test_reserve(self):
        with vae.Context() as ctx:
            ctx.reserve(self.model, 256)
            self.assertEqual(len(ctx.reconstruct(self.model, self.x)), 150 * D)
            self.assertCError(vae.InvalidArgument, "vae_context_reserve", ctx.reserve,
                              self.model, 0)
            self.assertCError(vae.InvalidArgument, "vae_context_reserve", ctx.reserve,
                              self.model, (1 << 20) + 1)
            with vae.Model(D, L) as unbuilt:
                self.assertCError(vae.StateError, "vae_context_reserve", ctx.reserve,
                                  unbuilt, 4)
            # One context serves several models in turn.
            with vae.Model.create_mlp(D, [40, 30], 5, seed=1) as big:
                self.assertEqual(len(ctx.encode(big, self.x)[0]), 150 * 5)
            self.assertEqual(len(ctx.encode(self.model, self.x)[0]), 150 * L)

    def test_one_caller_at_a_time(self):
        # The progress callback runs inside a call on the trainer's context:
        # another call on that context is refused with VAE_ERR_STATE, another
        # context works.
        seen = []
        with vae.Context() as ctx, vae.Context() as other, vae.Elbo() as e, \
                vae.Optimizer.adam() as opt, vae.Trainer(self.model, e, opt, ctx) as t, \
                vae.Dataset.from_floats(self.x, dim=D) as ds:
            probe = self.x[:2 * D]

            single_threaded_blas()
            in_use = []

            def progress(done, total, loss):
                for call in (lambda: vae.reconstruct(ctx, self.model, probe),
                             lambda: ctx.reserve(self.model, 8),
                             lambda: ctx.set_threads(2),
                             lambda: t.reserve(8)):
                    try:
                        call()
                    except vae.StateError as exc:
                        in_use.append(exc)
                seen.append(len(vae.reconstruct(other, self.model, probe)))
                return True   # one step is enough

            with self.assertRaises(vae.Cancelled):
                t.train_epoch(ds, batch_size=50, progress=progress)
            self.assertEqual([exc.code for exc in in_use], [vae.ERR_STATE] * 4)
            self.assertEqual(seen, [2 * D])
            self.assertEqual(ctx.threads, 1)
            # Free again once the epoch returned.
            self.assertEqual(len(vae.reconstruct(ctx, self.model, probe)), 2 * D)


# ---------------------------------------------------------------------------
# Objective and optimizers
# ---------------------------------------------------------------------------


class ElboOptimizerTest(ErrorAssertions):
    def test_elbo_settings(self):
        with vae.Elbo() as e:
            self.assertEqual((e.beta, e.objective), (1.0, vae.OBJECTIVE_ELBO))
            e.beta = 0.25
            e.objective = "autoencoder"
            self.assertEqual((e.beta, e.objective), (0.25, vae.OBJECTIVE_AUTOENCODER))
            self.assertEqual(e.get_param("beta"), 0.25)
            e.beta = 0.1
            self.assertEqual(e.beta, f32(0.1))   # kept as a float, as sigma and the optimizer's
            e.beta = 0.25
            self.assertEqual(e.get_param(vae.ELBO_OBJECTIVE), 1.0)
            for bad in (-1.0, float("nan"), float("inf")):
                self.assertCError(vae.InvalidArgument, "vae_elbo_set_param", setattr, e,
                                  "beta", bad)
            for bad in (5, -1, 0.5):
                self.assertCError(vae.InvalidArgument, "vae_elbo_set_param", e.set_param,
                                  vae.ELBO_OBJECTIVE, bad)
            self.assertEqual((e.beta, e.objective), (0.25, vae.OBJECTIVE_AUTOENCODER))
            self.assertCError(vae.InvalidArgument, "vae_elbo_set_param", e.set_param, 9, 1.0)
            self.assertCError(vae.InvalidArgument, "vae_elbo_get_param", e.get_param, 9)
            self.assertVaeError(vae.InvalidArgument, setattr, e, "objective", "vae")
        with vae.Elbo(beta=2.0, objective=vae.OBJECTIVE_AUTOENCODER) as e:
            self.assertEqual((e.beta, e.objective), (2.0, vae.OBJECTIVE_AUTOENCODER))
        self.assertVaeError(vae.InvalidArgument, vae.Elbo, -3.0)

    def test_elbo_settings_1_2(self):
        with vae.Elbo() as e:
            self.assertEqual((e.samples, e.warmup, e.free_bits), (1, 0, 0.0))
        with vae.Elbo(objective="iwae", samples=5, warmup=100, free_bits=0.5) as e:
            self.assertEqual((e.objective, e.samples, e.warmup, e.free_bits),
                             (vae.OBJECTIVE_IWAE, 5, 100, 0.5))
            self.assertEqual(e.get_param("samples"), 5.0)
            for name, bad in (("samples", 0), ("samples", 4097), ("samples", 2.5),
                              ("warmup", -1), ("warmup", 0.5), ("free_bits", -0.1),
                              ("free_bits", float("nan"))):
                self.assertCError(vae.InvalidArgument, "vae_elbo_set_param", setattr, e, name,
                                  bad)
            self.assertEqual((e.samples, e.warmup, e.free_bits), (5, 100, 0.5))

    def test_iwae_evaluate(self):
        """IWAE's bound over k draws is at least as tight as the k-draw ELBO on average, and
        eps holds n * k rows."""
        with vae.Context() as ctx, vae.Model.mlp(12, [8], 3, seed=4) as m, \
                vae.Elbo(objective="iwae", samples=6) as iw, vae.Elbo(samples=6) as el:
            n = 40
            x = [((i * 7) % 11) / 10.0 for i in range(n * 12)]
            eps = [((i * 13) % 17 - 8) / 5.0 for i in range(n * 6 * 3)]
            a = vae.elbo_evaluate(ctx, m, iw, x, eps=eps)
            b = vae.elbo_evaluate(ctx, m, el, x, eps=eps)
            self.assertEqual((a.recon, a.kl), (b.recon, b.kl))
            self.assertLess(a.loss, b.loss)
            self.assertVaeError(vae.ShapeError, vae.elbo_evaluate, ctx, m, iw, x,
                                eps=eps[:n * 3])

    def test_optimizer_defaults(self):
        with vae.Optimizer.adam() as adam, vae.Optimizer("sgd") as sgd:
            self.assertEqual((adam.kind, adam.kind_name), (vae.OPTIMIZER_ADAM, "adam"))
            self.assertEqual((sgd.kind, sgd.kind_name), (vae.OPTIMIZER_SGD, "sgd"))
            # The library keeps hyperparameters as the floats its updates use.
            self.assertEqual(adam.params, {"lr": f32(1e-3), "weight_decay": 0.0,
                                           "clip_norm": 0.0, "beta1": f32(0.9),
                                           "beta2": f32(0.999), "eps": f32(1e-8)})
            self.assertEqual(sgd.params, {"lr": f32(1e-2), "weight_decay": 0.0,
                                          "clip_norm": 0.0, "momentum": 0.0, "nesterov": 0.0,
                                          "dampening": 0.0})
            self.assertIs(sgd.nesterov, False)

    def test_optimizer_settings(self):
        with vae.Optimizer.sgd(lr=0.1, momentum=0.5, nesterov=True, dampening=0.0,
                               weight_decay=1e-3, clip_norm=2.0) as sgd:
            self.assertEqual((sgd.lr, sgd.momentum, sgd.nesterov, sgd.weight_decay,
                              sgd.clip_norm), (f32(0.1), 0.5, True, f32(1e-3), 2.0))
            sgd.lr = 0.3
            sgd.dampening = 0.25
            self.assertEqual((sgd.get_param("lr"), sgd.get_param(vae.OPT_DAMPENING)),
                             (f32(0.3), 0.25))
            self.assertIn("sgd", repr(sgd))
        with vae.Optimizer(vae.OPTIMIZER_ADAM, lr=2e-3, beta1=0.8, eps=1e-6) as adam:
            self.assertEqual((adam.lr, adam.beta1, adam.beta2, adam.eps),
                             (f32(2e-3), f32(0.8), f32(0.999), f32(1e-6)))

    def test_optimizer_bad_values(self):
        with vae.Optimizer.adam(lr=0.01) as adam, vae.Optimizer.sgd(lr=0.1) as sgd:
            for name, bad in (("lr", 0.0), ("lr", -1.0), ("lr", float("nan")),
                              ("lr", float("inf")), ("beta1", 1.0), ("beta2", -0.1),
                              ("beta1", 0.99999999),   # 1.0 as the float the update uses
                              ("lr", 1e-50),           # 0 as a float
                              ("eps", 0.0), ("weight_decay", -1.0),
                              ("clip_norm", float("inf")), ("clip_norm", -1.0)):
                before = adam.get_param(name)
                self.assertCError(vae.InvalidArgument, "vae_optimizer_set_param", setattr,
                                  adam, name, bad)
                self.assertEqual(adam.get_param(name), before, name)
            for name, bad in (("momentum", 1.0), ("momentum", -0.5), ("nesterov", 2.0),
                              ("nesterov", 0.5), ("dampening", 1.0)):
                before = sgd.get_param(name)
                self.assertCError(vae.InvalidArgument, "vae_optimizer_set_param",
                                  sgd.set_param, name, bad)
                self.assertEqual(sgd.get_param(name), before, name)
            # A hyperparameter of the other kind.
            for name in ("momentum", "nesterov", "dampening"):
                self.assertCError(vae.InvalidArgument, "vae_optimizer_set_param",
                                  adam.set_param, name, 0.5)
                self.assertCError(vae.InvalidArgument, "vae_optimizer_get_param",
                                  getattr, adam, name)
            for name in ("beta1", "beta2", "eps"):
                self.assertCError(vae.InvalidArgument, "vae_optimizer_get_param",
                                  sgd.get_param, name)
            self.assertCError(vae.InvalidArgument, "vae_optimizer_set_param", sgd.set_param,
                              99, 1.0)
            self.assertVaeError(vae.InvalidArgument, sgd.set_param, "speed", 1.0)
        self.assertCError(vae.InvalidArgument, "vae_optimizer_create", vae.Optimizer, 7)
        self.assertVaeError(vae.InvalidArgument, vae.Optimizer, "rmsprop")
        self.assertCError(vae.InvalidArgument, "vae_optimizer_set_param", vae.Optimizer.adam,
                          0.0)
        self.assertCError(vae.InvalidArgument, "vae_optimizer_set_param", vae.Optimizer,
                          "adam", momentum=0.9)


# ---------------------------------------------------------------------------
# Trainers
# ---------------------------------------------------------------------------


class TrainerTest(ErrorAssertions):
    def setUp(self):
        self.rng = vae.Rng(11)
        self.ctx = vae.Context()
        self.model = vae.Model.create_mlp(D, [8], L, seed=2)
        self.elbo = vae.Elbo()
        self.opt = vae.Optimizer.adam(1e-2)
        self.trainer = vae.Trainer(self.model, self.elbo, self.opt, self.ctx, seed=5)
        self.x = self.rng.uniform(40 * D)
        self.ds = vae.Dataset.from_floats(self.x, dim=D)

    def tearDown(self):
        for obj in (self.ds, self.trainer, self.opt, self.elbo, self.model, self.ctx,
                    self.rng):
            obj.close()

    def epoch(self, **kwargs):
        return self.trainer.train_epoch(self.ds, batch_size=8, **kwargs)

    def test_attributes(self):
        t = self.trainer
        self.assertIs(t.model, self.model)
        self.assertIs(t.elbo, self.elbo)
        self.assertIs(t.optimizer, self.opt)
        self.assertIs(t.context, self.ctx)
        self.assertEqual((t.steps, t.epochs), (0, 0))
        self.assertIn("0 steps", repr(t))

    def test_step(self):
        t = self.trainer
        before = self.model.params().tolist()
        st = t.step(self.x)
        self.assertEqual((st.samples, st.steps), (40, 1))
        self.assertTrue(math.isfinite(st.loss))
        self.assertAlmostEqual(st.loss, st.recon + st.kl, places=9)
        self.assertGreaterEqual(st.seconds, 0.0)
        self.assertIsNone(st.per_sample)
        self.assertNotEqual(self.model.params().tolist(), before)
        self.assertFalse(any(t.grads()))   # apply() zeroes the slab
        self.assertEqual(t.steps, 1)
        t.step(self.x, n=40)
        self.assertEqual(t.steps, 2)

    def test_step_is_forward_backward_then_apply(self):
        with vae.Model.create_mlp(D, [8], L, seed=2) as m2, \
                vae.Optimizer.adam(1e-2) as opt2, \
                vae.Trainer(m2, self.elbo, opt2, self.ctx, seed=5) as t2:
            for _ in range(3):
                a = self.trainer.step(self.x)
                b = t2.forward_backward(self.x)
                t2.apply()
                self.assertEqual(stats5(a)[:4], stats5(b)[:4])
            self.assertEqual(self.model.params().tolist(), m2.params().tolist())
            self.assertEqual((self.trainer.steps, t2.steps), (3, 3))

    def test_gradients_accumulate(self):
        t = self.trainer
        eps = self.rng.normal(40 * L)
        first = t.forward_backward(self.x, eps=eps)
        g = t.grads()
        self.assertEqual((len(g), g.format, g.readonly), (self.model.n_params, "f", False))
        self.assertIs(t.grads(), g)
        once = g.tolist()
        self.assertTrue(any(once))
        again = t.forward_backward(self.x, eps=eps)
        self.assertEqual(stats5(first)[:4], stats5(again)[:4])
        self.assertEqual(g.tolist(), [2 * v for v in once])
        self.assertEqual(t.steps, 0)
        t.zero_grads()
        self.assertFalse(any(g))
        # The same loss as the evaluation with the same noise.
        ev = vae.elbo_evaluate(self.ctx, self.model, self.elbo, self.x, eps=eps)
        self.assertEqual(ev.loss, first.loss)

    def test_custom_gradient_terms(self):
        with vae.Optimizer.sgd(lr=0.5) as sgd, \
                vae.Trainer(self.model, self.elbo, sgd, self.ctx) as t:
            before = self.model.params().tolist()
            g = t.grads()
            g[:] = floats([1.0] * len(g))   # a caller-made gradient
            t.apply()
            after = self.model.params().tolist()
            self.assertTrue(all(abs((b - a) - 0.5) < 1e-6 for a, b in zip(after, before)))
            self.assertFalse(any(g))
            self.assertEqual(t.steps, 1)

    def test_non_finite_gradient_changes_nothing(self):
        t = self.trainer
        t.forward_backward(self.x)
        before = self.model.params().tolist()
        t.grads()[0] = float("inf")
        self.assertCError(vae.NumericError, "vae_trainer_apply", t.apply)
        self.assertEqual(self.model.params().tolist(), before)
        self.assertEqual(t.steps, 0)
        t.zero_grads()
        t.apply()
        self.assertEqual(t.steps, 1)

    def test_nesterov_needs_momentum(self):
        with vae.Optimizer.sgd(lr=0.1, nesterov=True) as sgd, \
                vae.Trainer(self.model, self.elbo, sgd, self.ctx) as t:
            before = self.model.params().tolist()
            exc = self.assertCError(vae.InvalidArgument, "vae_trainer_", t.step, self.x)
            self.assertIn("esterov", exc.message)
            self.assertEqual(self.model.params().tolist(), before)
            self.assertFalse(any(t.grads()))
            sgd.momentum = 0.9
            t.step(self.x)

    def test_bad_batches(self):
        t = self.trainer
        before = self.model.params().tolist()
        exc = self.assertCError(vae.InvalidArgument, "vae_trainer_", t.step, [2.0] * D)
        self.assertIn("[0, 1]", exc.message)
        bad = array.array("f", self.x)
        bad[D + 3] = float("nan")
        self.assertCError(vae.NumericError, "vae_trainer_", t.step, bad)
        self.assertCError(vae.NumericError, "vae_trainer_forward_backward",
                          t.forward_backward, self.x, eps=[float("inf")] * (40 * L))
        self.assertVaeError(vae.ShapeError, t.step, self.x[:-1])
        self.assertVaeError(vae.ShapeError, t.forward_backward, self.x, eps=[0.0] * L)
        self.assertCError(vae.InvalidArgument, "vae_trainer_", t.step, [])
        self.assertEqual(self.model.params().tolist(), before)
        self.assertFalse(any(t.grads()))
        self.assertEqual(t.steps, 0)
        self.assertCError(vae.InvalidArgument, "vae_trainer_reserve", t.reserve, 0)
        t.reserve(64)

    def test_trainer_needs_a_built_model(self):
        with vae.Model(D, L) as unbuilt:
            self.assertCError(vae.StateError, "vae_trainer_create", vae.Trainer, unbuilt,
                              self.elbo, self.opt, self.ctx)
            # The failed constructor borrowed nothing: the model closes and frees.
            with FreeLog() as log:
                unbuilt.close()
            self.assertEqual(log.names, ["vae_model_free"])
        self.assertVaeError(vae.InvalidArgument, vae.Trainer, None, self.elbo, self.opt,
                            self.ctx)
        with self.assertRaises(TypeError):
            vae.Trainer(self.model, self.opt, self.elbo, self.ctx)
        self.assertVaeError(vae.InvalidArgument, vae.Trainer, self.model, self.elbo,
                            self.opt, self.ctx, -1)

    def test_epoch_progress_and_stats(self):
        calls = []
        st = self.epoch(progress=lambda done, total, loss: calls.append((done, total, loss)))
        self.assertEqual([c[:2] for c in calls], [(8, 40), (16, 40), (24, 40), (32, 40),
                                                  (40, 40)])
        self.assertEqual((st.samples, st.steps), (40, 5))
        self.assertEqual(calls[-1][2], st.loss)
        self.assertAlmostEqual(st.loss, st.recon + st.kl, places=9)
        self.assertEqual((self.trainer.steps, self.trainer.epochs), (5, 1))
        first = st.loss
        for _ in range(5):
            st = self.epoch(shuffle=False, binarize=True)
        self.assertLess(st.loss, first)
        self.assertEqual((self.trainer.steps, self.trainer.epochs), (30, 6))
        ev = vae.evaluate_dataset(self.ctx, self.model, self.elbo, self.ds, self.rng,
                                  per_sample=True)
        self.assertEqual((len(ev.per_sample), ev.samples), (40, 40))
        self.assertAlmostEqual(sum(ev.per_sample) / 40, ev.loss, places=9)

    def test_callback_cancels(self):
        calls = []

        def stop_after_two(done, total, loss):
            calls.append(done)
            return len(calls) == 2

        exc = self.assertCError(vae.Cancelled, "vae_trainer_train_epoch", self.epoch,
                                progress=stop_after_two)
        self.assertEqual(calls, [8, 16])
        self.assertEqual((exc.stats.samples, exc.stats.steps), (16, 2))
        self.assertEqual((self.trainer.steps, self.trainer.epochs), (2, 0))
        self.assertEqual(self.epoch().samples, 40)  # still usable
        self.assertEqual(self.trainer.epochs, 1)

    def test_callback_may_change_settings(self):
        def progress(done, total, loss):
            self.opt.lr = self.opt.lr / 2
            self.elbo.beta = 0.5

        self.epoch(progress=progress)
        self.assertEqual(self.opt.lr, f32(1e-2) / 32)
        self.assertEqual(self.elbo.beta, 0.5)

    def test_callback_exception_propagates(self):
        class Boom(Exception):
            pass

        calls = []

        def explode(done, total, loss):
            calls.append(done)
            raise Boom("from the callback at %d" % done)

        with self.assertRaises(Boom) as cm:
            self.epoch(progress=explode)
        self.assertEqual(str(cm.exception), "from the callback at 8")
        self.assertEqual(calls, [8])  # the epoch stopped at once
        self.assertEqual(self.epoch().steps, 5)

        def interrupt(done, total, loss):
            raise KeyboardInterrupt

        with self.assertRaises(KeyboardInterrupt):
            self.epoch(progress=interrupt)
        with self.assertRaises(TypeError):
            self.epoch(progress=42)

    def test_failing_step_ends_the_epoch(self):
        calls = []
        self.epoch()
        self.model.params()[-1] = float("nan")  # a bias of the output: the loss is NaN
        self.assertCError(vae.NumericError, "vae_trainer_", self.epoch,
                          progress=lambda *args: calls.append(args))
        self.assertEqual(calls, [])
        self.assertEqual(self.trainer.epochs, 1)

    def test_epoch_errors(self):
        self.assertCError(vae.InvalidArgument, "vae_trainer_train_epoch",
                          self.trainer.train_epoch, self.ds, batch_size=0)
        self.assertCError(vae.InvalidArgument, "vae_trainer_train_epoch",
                          self.trainer.train_epoch, self.ds, batch_size=(1 << 20) + 1)
        with vae.Dataset.from_floats([0.5] * (3 * (D + 1)), dim=D + 1) as wrong:
            self.assertCError(vae.ShapeError, "vae_trainer_train_epoch",
                              self.trainer.train_epoch, wrong)
        with vae.Dataset.from_floats([3.0] * (2 * D), dim=D) as outside:
            self.assertCError(vae.InvalidArgument, "vae_trainer_", self.trainer.train_epoch,
                              outside)
        self.assertEqual(self.trainer.epochs, 0)
        self.assertVaeError(vae.InvalidArgument, self.trainer.train_epoch, None)

    def test_evaluation_errors(self):
        ctx, m, e = self.ctx, self.model, self.elbo
        exc = self.assertCError(vae.InvalidArgument, "vae_elbo_evaluate", vae.elbo_evaluate,
                                ctx, m, e, self.x)   # neither eps nor rng
        self.assertTrue("rng" in exc.message or "eps" in exc.message, exc.message)
        self.assertCError(vae.InvalidArgument, "vae_evaluate_dataset", vae.evaluate_dataset,
                          ctx, m, e, self.ds)        # the ELBO needs rng
        with vae.Elbo(objective="autoencoder") as ae:
            st = vae.evaluate_dataset(ctx, m, ae, self.ds)   # the autoencoder does not
            self.assertEqual((st.kl, st.samples), (0.0, 40))
            self.assertAlmostEqual(st.loss, vae.elbo_evaluate(ctx, m, ae, self.x).loss,
                                   places=9)
        with vae.Dataset.from_floats([0.5] * (D + 1), dim=D + 1) as wrong:
            self.assertCError(vae.ShapeError, "vae_evaluate_dataset", vae.evaluate_dataset,
                              ctx, m, e, wrong, self.rng)


# ---------------------------------------------------------------------------
# Checkpoints, metadata and open epochs (libvae 1.1)
# ---------------------------------------------------------------------------


class CheckpointTest(ErrorAssertions):
    """Trainer.save/save_mem/restore/restore_mem, set_meta/get_meta/meta,
    epoch_position and discard_epoch."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.ctx = vae.Context()
        with vae.Rng(21) as rng:
            self.x = rng.uniform(40 * D)
        self.ds = vae.Dataset.from_floats(self.x, dim=D)
        self.parts = []
        self.model, self.trainer = self.make(seed=5)

    def tearDown(self):
        for obj in reversed(self.parts):
            obj.close()
        self.ds.close()
        self.ctx.close()
        self.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def make(self, seed=5, model=None, kind="adam", hidden=(8,)):
        """A model (new, or `model`), objective, optimizer (lr 1e-2) and trainer."""
        m = model if model is not None else vae.Model.create_mlp(D, list(hidden), L, seed=2)
        e = vae.Elbo()
        opt = vae.Optimizer(kind, lr=1e-2)
        t = vae.Trainer(m, e, opt, self.ctx, seed=seed)
        self.parts.extend((m, e, opt, t))
        return m, t

    def resumed(self, source):
        """A trainer over Model.load(source) restored from source (a path or bytes):
        elbo and optimizer are fresh, with the defaults, and a different seed."""
        if isinstance(source, bytes):
            m = vae.Model.load_mem(source)
        else:
            m = vae.Model.load(source)
        e, opt = vae.Elbo(), vae.Optimizer.adam()
        t = vae.Trainer(m, e, opt, self.ctx, seed=999)
        self.parts.extend((m, e, opt, t))
        if isinstance(source, bytes):
            t.restore_mem(source)
        else:
            t.restore(source)
        return m, t

    @staticmethod
    def stop_at(n):
        return lambda done, total, loss: done >= n

    def epoch(self, trainer, **kwargs):
        return trainer.train_epoch(self.ds, batch_size=8, **kwargs)

    def test_resume_bit_for_bit_from_a_file_and_from_bytes(self):
        t = self.trainer
        t.set_meta("run", "a")
        self.epoch(t)
        with self.assertRaises(vae.Cancelled) as cm:
            self.epoch(t, progress=self.stop_at(16))
        self.assertEqual((cm.exception.stats.samples, cm.exception.stats.steps), (16, 2))
        self.assertEqual(t.epoch_position, (16, 40))
        t.save(self.path("ckpt.vae"))
        blob = t.save_mem()
        self.assertIsInstance(blob, bytes)
        with open(self.path("ckpt.vae"), "rb") as f:
            self.assertEqual(f.read(), blob)
        saved_params = self.model.params().tolist()
        # The uninterrupted trainer finishes the open epoch, then one more.
        rest = untimed(self.epoch(t))
        self.assertEqual((rest.samples, rest.steps), (40, 5))  # the whole epoch's stats
        after = untimed(self.epoch(t))
        want = self.model.params().tolist()
        self.assertEqual((t.steps, t.epochs), (15, 3))
        for source in (self.path("ckpt.vae"), blob):
            m, r = self.resumed(source)
            self.assertEqual(m.params().tolist(), saved_params)  # Model.load reads the model
            self.assertEqual((r.steps, r.epochs, r.epoch_position), (7, 1, (16, 40)))
            self.assertEqual(r.optimizer.lr, f32(1e-2))          # restored settings
            self.assertEqual(r.get_meta("run"), "a")
            self.assertEqual(untimed(self.epoch(r)), rest)
            self.assertEqual(r.epoch_position, (0, 0))
            self.assertEqual(untimed(self.epoch(r)), after)
            self.assertEqual(m.params().tolist(), want)
            self.assertEqual((r.steps, r.epochs), (15, 3))

    def test_save_from_the_progress_callback(self):
        t = self.trainer
        path = self.path("inside.vae")

        def progress(done, total, loss):
            if done == 24:
                t.save(path)   # between two steps: resumes after the third

        self.epoch(t, progress=progress)
        end_of_epoch = self.model.params().tolist()
        m, r = self.resumed(path)
        self.assertEqual((r.steps, r.epochs, r.epoch_position), (3, 0, (24, 40)))
        st = self.epoch(r)
        self.assertEqual((st.samples, st.steps, r.epochs), (40, 5, 1))
        self.assertEqual(m.params().tolist(), end_of_epoch)

    def test_metadata(self):
        t = self.trainer
        self.assertEqual(t.meta, {})
        self.assertIsNone(t.get_meta("absent"))
        self.assertEqual(t.get_meta("absent", "fallback"), "fallback")
        t.set_meta("argv", "mnist_vae --epochs 2")
        t.set_meta(b"data", "60000 images \u00e9")
        t.set_meta("lr", "0.001")
        t.set_meta("argv", "replaced")          # keeps its place
        t.set_meta("lr", None)                  # removed
        t.set_meta("never-set", None)           # removing a missing key is fine
        t.set_meta("empty", "")
        self.assertEqual(list(t.meta.items()), [("argv", "replaced"),
                                                ("data", "60000 images \u00e9"),
                                                ("empty", "")])
        self.assertEqual(t.get_meta("data"), "60000 images \u00e9")
        self.assertIsNone(t.get_meta("lr"))
        long_value = "v" * 65535
        t.set_meta("long", long_value)
        # Saved and restored with the checkpoint; a restore replaces the target's entries.
        blob = t.save_mem()
        _, other = self.make(seed=1)
        other.set_meta("only-here", "x")
        other.restore_mem(blob)
        self.assertEqual(other.meta, t.meta)
        self.assertIsNone(other.get_meta("only-here"))
        self.assertEqual(other.get_meta("long"), long_value)
        # Bad keys and values: InvalidArgument from the library, nothing changed.
        before = t.meta
        for key in ("", "a\nb", "tab\there", "k" * 256, "del\x7f"):
            self.assertCError(vae.InvalidArgument, "vae_trainer_set_meta", t.set_meta, key, "v")
        self.assertCError(vae.InvalidArgument, "vae_trainer_set_meta", t.set_meta, "big",
                          "v" * 65536)
        t.set_meta("k" * 255, "longest key")
        self.assertEqual(t.get_meta("k" * 255), "longest key")
        t.set_meta("k" * 255, None)
        self.assertEqual(t.meta, before)
        self.assertVaeError(vae.InvalidArgument, t.set_meta, "nul\0key", "v")
        self.assertVaeError(vae.InvalidArgument, t.set_meta, "key", "nul\0value")
        with self.assertRaises(TypeError):
            t.set_meta(1, "v")
        with self.assertRaises(TypeError):
            t.set_meta("k", 1.5)

    def test_meta_entries_are_limited_to_1024(self):
        t = self.trainer
        for i in range(1024):
            t.set_meta("k%d" % i, str(i))
        exc = self.assertCError(vae.InvalidArgument, "vae_trainer_set_meta", t.set_meta,
                                "one-more", "v")
        self.assertIn("1024", exc.message)
        t.set_meta("k7", "replacing is fine")
        self.assertEqual(len(t.meta), 1024)

    def test_epoch_position_and_discard(self):
        t = self.trainer
        self.assertEqual(t.epoch_position, (0, 0))
        t.discard_epoch()                       # nothing open: nothing happens
        with self.assertRaises(vae.Cancelled):
            self.epoch(t, progress=self.stop_at(8))
        self.assertEqual(t.epoch_position, (8, 40))
        calls = []
        self.epoch(t, progress=lambda done, total, loss: calls.append(done))
        self.assertEqual(calls, [16, 24, 32, 40])    # continued, not restarted
        self.assertEqual((t.epoch_position, t.epochs), ((0, 0), 1))
        with self.assertRaises(vae.Cancelled):
            self.epoch(t, progress=self.stop_at(16))
        t.discard_epoch()
        self.assertEqual((t.epoch_position, t.epochs, t.steps), ((0, 0), 1, 7))
        calls = []
        self.epoch(t, progress=lambda done, total, loss: calls.append(done))
        self.assertEqual(calls, [8, 16, 24, 32, 40])  # a new epoch
        # An open epoch continues only on a dataset of its size.
        with self.assertRaises(vae.Cancelled):
            self.epoch(t, progress=self.stop_at(8))
        with vae.Dataset.from_floats(self.x[:20 * D], dim=D) as half:
            exc = self.assertCError(vae.ShapeError, "vae_trainer_train_epoch",
                                    t.train_epoch, half)
            self.assertIn("vae_trainer_discard_epoch", exc.message)
        # Not from inside the epoch: the context is in use.
        t.discard_epoch()
        self.assertCError(vae.StateError, "vae_trainer_discard_epoch", self.epoch, t,
                          progress=lambda *args: t.discard_epoch())
        self.assertEqual(t.epoch_position, (8, 40))

    def test_restore_errors_change_nothing(self):
        t = self.trainer
        self.epoch(t)
        with self.assertRaises(vae.Cancelled):
            self.epoch(t, progress=self.stop_at(8))
        t.set_meta("kept", "yes")
        good = t.save_mem()
        params = self.model.params().tolist()
        state = (t.steps, t.epochs, t.epoch_position, t.meta)

        def unchanged():
            self.assertEqual(self.model.params().tolist(), params)
            self.assertEqual((t.steps, t.epochs, t.epoch_position, t.meta), state)

        self.model.save(self.path("model.vae"))       # a model file has no trainer state
        exc = self.assertCError(vae.FormatError, "vae_trainer_restore", t.restore,
                                self.path("model.vae"))
        self.assertIn("not a checkpoint", exc.message)
        unchanged()
        self.assertCError(vae.VaeIOError, "vae_trainer_restore", t.restore,
                          self.path("missing.vae"))
        self.assertCError(vae.FormatError, "vae_trainer_restore_mem", t.restore_mem,
                          b"not a checkpoint at all")
        self.assertCError(vae.FormatError, "vae_trainer_restore_mem", t.restore_mem,
                          good[:len(good) // 2])
        damaged = bytearray(good)
        damaged[len(damaged) // 2] ^= 0x40
        self.assertCError(vae.FormatError, "vae_trainer_restore_mem", t.restore_mem, damaged)
        unchanged()
        # Another architecture, another optimizer kind: ShapeError.
        _, wider = self.make(hidden=(9,))
        exc = self.assertCError(vae.ShapeError, "vae_trainer_restore_mem", wider.restore_mem,
                                good)
        _, sgd = self.make(kind="sgd")
        self.assertCError(vae.ShapeError, "vae_trainer_restore_mem", sgd.restore_mem, good)
        self.assertEqual((wider.steps, sgd.steps), (0, 0))
        # The good bytes still restore.
        t.restore_mem(good)
        unchanged()

    def test_save_errors(self):
        t = self.trainer
        t.step(self.x)
        self.assertCError(vae.VaeIOError, "vae_trainer_save", t.save,
                          self.path("no/such/dir/ckpt.vae"))
        self.assertCError(vae.InvalidArgument, "vae_trainer_save", t.save, "")
        self.model.params()[0] = float("nan")
        path = self.path("nan.vae")
        self.assertCError(vae.NumericError, "vae_trainer_save", t.save, path)
        self.assertFalse(os.path.exists(path))        # nothing written
        self.assertCError(vae.NumericError, "vae_trainer_save_mem", t.save_mem)
        with self.assertRaises(TypeError):
            t.save(42)

    def test_ctrl_c_stops_the_epoch_after_the_step(self):
        if threading.current_thread() is not threading.main_thread() or \
                signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            self.skipTest("needs the main thread under Python's default SIGINT handler")
        t = self.trainer
        seen = []

        def ctrl_c_at_16(done, total, loss):
            seen.append(done)
            if done == 16:
                os.kill(os.getpid(), signal.SIGINT)

        with self.assertRaises(KeyboardInterrupt) as cm:
            self.epoch(t, progress=ctrl_c_at_16)
        # The handler runs at the next bytecode: the epoch stops after step 2 or 3,
        # never inside a step, and stays open.
        done, total = t.epoch_position
        self.assertIn(done, (16, 24))
        self.assertEqual((total, seen[-1], cm.exception.stats.samples), (40, done, done))
        self.assertIs(signal.getsignal(signal.SIGINT), signal.default_int_handler)
        blob = t.save_mem()
        st = self.epoch(t)
        self.assertEqual((st.samples, t.epochs), (40, 1))
        m, r = self.resumed(blob)
        self.epoch(r)
        self.assertEqual(m.params().tolist(), self.model.params().tolist())
        # A program's own handler is left in charge: the epoch goes on.
        calls = []
        previous = signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
        try:
            st = self.epoch(t, progress=lambda done, total, loss:
                            os.kill(os.getpid(), signal.SIGINT) if done == 8 else None)
        finally:
            signal.signal(signal.SIGINT, previous)
        self.assertEqual((calls, st.samples, t.epochs), ([signal.SIGINT], 40, 2))

    def test_closed_trainer_and_an_old_library(self):
        _, t = self.make()
        blob = t.save_mem()
        t.close()
        for call, args in ((t.save, (self.path("x.vae"),)), (t.save_mem, ()),
                           (t.restore_mem, (blob,)), (t.set_meta, ("k", "v")),
                           (t.get_meta, ("k",)), (t.discard_epoch, ())):
            self.assertVaeError(vae.InvalidArgument, call, *args)
        with self.assertRaises(vae.InvalidArgument):
            t.epoch_position
        with self.assertRaises(vae.InvalidArgument):
            t.meta
        # With a 1.0 library the binding loads and these calls say what is needed.
        vae._MISSING.add("vae_trainer_save_mem")
        try:
            with self.assertRaises(vae.VersionMismatchError) as cm:
                self.trainer.save_mem()
            self.assertIn("libvae 1.1 or newer", str(cm.exception))
        finally:
            vae._MISSING.discard("vae_trainer_save_mem")
        self.assertEqual(self.trainer.save_mem()[:4], blob[:4])


# ---------------------------------------------------------------------------
# Data-parallel training (libvae 1.1)
# ---------------------------------------------------------------------------

#: Samples of the distributed runs and the global batch sizes of their steps:
#: three blocks (44 + 43 + 43), one sample (rank 0 of 2 gets no block), one
#: full block, two blocks of 33 + 32, four blocks, three samples.
DIST_COUNT = 200
DIST_SIZES = (130, 1, 64, 65, 200, 3)


class ThreadRanks:
    """An in-place all-gather for ranks that are threads of this process.

    exchange(rank) is the callable of rank for Trainer.set_distributed(): each
    rank copies its part into a shared bytearray, then every rank copies the
    whole of it back, with a threading.Barrier between the phases. A rank
    whose exchange fails aborts the barrier, so that the others fail too
    instead of waiting; the timeout ends a run that would hang.
    """

    def __init__(self, world):
        self.world = world
        self.barrier = threading.Barrier(world, timeout=60)
        self.stage = bytearray()
        self.sizes = [[] for _ in range(world)]   # the sizes each rank's calls saw

    def exchange(self, rank):
        def exchange(buf, sizes):
            try:
                self.sizes[rank].append(list(sizes))
                total, mine = sum(sizes), sum(sizes[:rank])
                if len(buf) != total or len(sizes) != self.world:
                    raise AssertionError("buf of %d bytes for sizes %s" % (len(buf), sizes))
                if rank == 0 and len(self.stage) < total:
                    self.stage = bytearray(total)
                self.barrier.wait()
                self.stage[mine:mine + sizes[rank]] = buf[mine:mine + sizes[rank]]
                self.barrier.wait()
                buf[:] = self.stage[:total]
                self.barrier.wait()
            except BaseException:
                self.barrier.abort()
                raise
        return exchange


def loopback(calls, fail_at=None, error=None):
    """An exchange for rank 0 of 2 alone: zeros for the other rank's part.

    Records the sizes of every call in calls; call number fail_at (from 1)
    raises error.
    """
    def exchange(buf, sizes):
        calls.append(list(sizes))
        if len(calls) == fail_at:
            raise error
        buf[sizes[0]:] = bytes(sum(sizes[1:]))
    return exchange


class DistributedTest(ErrorAssertions):
    """Trainer.set_distributed: ranks as Python threads against one trainer alone."""

    def setUp(self):
        single_threaded_blas()
        with vae.Rng(23) as rng:
            self.x = rng.uniform(DIST_COUNT * D)

    @staticmethod
    def trainer(stack, workers=1):
        """A trainer of its own objects, the same on every call; closed with stack."""
        ctx = stack.enter_context(vae.Context(threads=workers))
        m = stack.enter_context(vae.Model.create_mlp(D, [12], L, seed=8))
        e = stack.enter_context(vae.Elbo())
        opt = stack.enter_context(vae.Optimizer.adam(lr=1e-2))
        return stack.enter_context(vae.Trainer(m, e, opt, ctx, seed=9))

    def batch(self, first, n):
        return memoryview(self.x)[first * D:(first + n) * D]

    def schedule(self, t, ds):
        """Steps of uneven global batches, forward_backward + apply, an epoch.

        Returns the losses reported, the parameters' bytes and the counters.
        """
        out = []
        for k, n in enumerate(DIST_SIZES):
            out.append(untimed(t.step(self.batch((k * 37) % (DIST_COUNT - n + 1), n))))
        out.append(untimed(t.forward_backward(self.batch(5, 70))))
        t.apply()
        # 200 samples in batches of 72, 72 and 56, binarized from the generator.
        out.append(untimed(t.train_epoch(ds, batch_size=72, binarize=True)))
        return out, t.model.params().tobytes(), (t.steps, t.epochs)

    def alone(self):
        with contextlib.ExitStack() as stack:
            ds = stack.enter_context(vae.Dataset.from_floats(self.x, dim=D))
            return self.schedule(self.trainer(stack), ds)

    def test_two_thread_ranks_equal_one_trainer_bit_for_bit(self):
        want = self.alone()
        ranks = ThreadRanks(2)
        results, errors = [None, None], []

        def rank_main(rank):
            try:
                with contextlib.ExitStack() as stack:
                    # Each rank has its own objects, as a process of its own would.
                    ds = stack.enter_context(vae.Dataset.from_floats(self.x, dim=D))
                    t = self.trainer(stack)
                    t.set_distributed(rank, 2, ranks.exchange(rank))
                    results[rank] = self.schedule(t, ds)
            except BaseException as exc:  # noqa: B902 - reported below
                errors.append(exc)

        # ctypes releases the GIL: both threads are inside trainer calls at once.
        threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        self.assertFalse(any(th.is_alive() for th in threads))
        self.assertEqual(errors, [])
        for rank in range(2):
            losses, params, counters = results[rank]
            self.assertEqual(losses, want[0], "rank %d: the reported losses" % rank)
            self.assertTrue(params == want[1], "rank %d: the parameters differ" % rank)
            self.assertEqual(counters, want[2])
            self.assertEqual(counters, (len(DIST_SIZES) + 1 + 3, 1))
        # Two exchanges per training pass (6 steps, forward_backward, 3 batches),
        # with the same sizes on both ranks.
        self.assertEqual(len(ranks.sizes[0]), 2 * (len(DIST_SIZES) + 1 + 3))
        self.assertEqual(ranks.sizes[0], ranks.sizes[1])
        # The step on one sample: the loss terms (overflow flag, rec, kl in
        # doubles) of no sample on rank 0 and one on rank 1, then the
        # gradient of its one block from rank 1 only.
        n_params = len(want[1]) // 4
        self.assertEqual(ranks.sizes[0][2:4], [[8, 24], [0, 4 * n_params]])
        # The first step: 130 samples in blocks of 44, 43 and 43; rank 0 has
        # block 0, rank 1 blocks 1 and 2.
        self.assertEqual(ranks.sizes[0][0:2], [[8 * (1 + 2 * 44), 8 * (1 + 2 * 86)],
                                               [4 * n_params, 8 * n_params]])

    def test_world_one_needs_no_function(self):
        want = self.alone()
        with contextlib.ExitStack() as stack:
            ds = stack.enter_context(vae.Dataset.from_floats(self.x, dim=D))
            t = self.trainer(stack)
            calls = []
            t.set_distributed(0, 1)
            t.set_distributed(0, 2, loopback(calls))
            t.set_distributed(0, 1)      # a trainer of its own again
            t.set_distributed(0, 1, loopback(calls))   # world 1 never exchanges
            self.assertEqual(self.schedule(t, ds), want)
            self.assertEqual(calls, [])

    def test_bad_arguments(self):
        with contextlib.ExitStack() as stack:
            t = self.trainer(stack)
            calls = []
            fn = "vae_trainer_set_distributed"
            exc = self.assertCError(vae.InvalidArgument, fn, t.set_distributed, 0, 0,
                                    loopback(calls))
            self.assertIn("world", exc.message)
            exc = self.assertCError(vae.InvalidArgument, fn, t.set_distributed, 2, 2,
                                    loopback(calls))
            self.assertIn("rank 2 of 2", exc.message)
            exc = self.assertCError(vae.InvalidArgument, fn, t.set_distributed, 0, 65537,
                                    loopback(calls))
            self.assertIn("65536", exc.message)
            exc = self.assertCError(vae.InvalidArgument, fn, t.set_distributed, 0, 2)
            self.assertIn("without a function", exc.message)
            exc = self.assertVaeError(vae.InvalidArgument, t.set_distributed, -1, 2,
                                      loopback(calls))
            self.assertIn("rank", exc.message)
            with self.assertRaises(TypeError):
                t.set_distributed(0, 2, 42)
            with self.assertRaises(TypeError):
                t.set_distributed("0", 2, loopback(calls))
            self.assertEqual(calls, [])
            # A refused call keeps the exchange set before it.
            t.set_distributed(0, 2, loopback(calls))
            self.assertCError(vae.InvalidArgument, fn, t.set_distributed, 0, 2)
            t.step(self.batch(0, 10))    # one block, rank 1's
            self.assertEqual(calls, [[8, 8 * (1 + 2 * 10)], [0, 4 * t.model.n_params]])
            # Not while the trainer's context is in use.
            with vae.Dataset.from_floats(self.x, dim=D) as ds:
                seen = []

                def progress(done, total, loss):
                    seen.append(self.assertCError(vae.StateError, fn, t.set_distributed, 0, 1))

                t.train_epoch(ds, batch_size=100, progress=progress)
            self.assertEqual(len(seen), 2)
            self.assertEqual(len(calls), 2 + 4)   # still distributed
        self.assertVaeError(vae.InvalidArgument, t.set_distributed, 0, 1)   # closed

    def test_the_trainer_keeps_the_exchange_alive(self):
        with contextlib.ExitStack() as stack:
            t = self.trainer(stack)
            calls = []
            exchange = loopback(calls)
            ref = weakref.ref(exchange)
            t.set_distributed(0, 2, exchange)
            del exchange
            gc.collect()
            self.assertIsNotNone(ref())
            t.step(self.batch(0, 3))
            self.assertEqual(len(calls), 2)
            t.set_distributed(0, 1)      # the library no longer calls it: let go
            gc.collect()
            self.assertIsNone(ref())
            t.step(self.batch(0, 3))
            self.assertEqual(len(calls), 2)

    def test_a_raising_exchange_fails_the_call_and_changes_nothing(self):
        class LinkDown(Exception):
            pass

        with contextlib.ExitStack() as stack:
            t = self.trainer(stack)
            ds = stack.enter_context(vae.Dataset.from_floats(self.x, dim=D))
            t.step(self.batch(0, 64))    # Adam's moments are not zero any more
            before, state = t.model.params().tobytes(), t.save_mem()
            cases = (  # the call, the exchange that raises, what it exchanged
                (lambda: t.step(self.batch(3, 128)), "vae_trainer_step", 2, "gradients"),
                (lambda: t.step(self.batch(3, 128)), "vae_trainer_step", 1, "loss terms"),
                (lambda: t.forward_backward(self.batch(0, 9)), "vae_trainer_forward_backward",
                 2, "gradients"),
            )
            for call, fn, fail_at, what in cases:
                calls, error = [], LinkDown("link down at %d" % fail_at)
                t.set_distributed(0, 2, loopback(calls, fail_at, error))
                exc = self.assertCError(vae.VaeIOError, fn, call)
                self.assertIn("the exchange of the %s failed (1) on rank 0 of 2" % what,
                              exc.message)
                self.assertIs(exc.__cause__, error)
                self.assertEqual(len(calls), fail_at)
                self.assertEqual(t.model.params().tobytes(), before)
                self.assertEqual(t.save_mem(), state)   # generator, counters, slab, moments
            # KeyboardInterrupt (Ctrl-C in a barrier's wait) is raised as it is.
            t.set_distributed(0, 2, loopback([], 1, KeyboardInterrupt()))
            with self.assertRaises(KeyboardInterrupt):
                t.step(self.batch(0, 5))
            self.assertEqual(t.save_mem(), state)
            # The same trainer trains on once the exchange works.
            calls = []
            t.set_distributed(0, 2, loopback(calls))
            t.step(self.batch(0, 5))
            self.assertEqual((len(calls), t.steps), (2, 2))
            self.assertNotEqual(t.model.params().tobytes(), before)
            # An epoch whose second step fails: the first step stays taken and
            # the epoch open, as with any failing step (see train_epoch).
            calls, error = [], LinkDown("link down in the epoch")
            t.set_distributed(0, 2, loopback(calls, 4, error))
            exc = self.assertCError(vae.VaeIOError, "vae_trainer_", t.train_epoch, ds,
                                    batch_size=64)
            self.assertIn("the exchange of the gradients failed", exc.message)
            self.assertIs(exc.__cause__, error)
            self.assertEqual((len(calls), t.steps, t.epochs), (4, 3, 0))
            self.assertEqual(t.epoch_position, (64, DIST_COUNT))

    def test_an_old_library(self):
        with contextlib.ExitStack() as stack:
            t = self.trainer(stack)
            vae._MISSING.add("vae_trainer_set_distributed")
            try:
                with self.assertRaises(vae.VersionMismatchError) as cm:
                    t.set_distributed(0, 1)
                self.assertIn("libvae 1.1 or newer", str(cm.exception))
            finally:
                vae._MISSING.discard("vae_trainer_set_distributed")
            t.set_distributed(0, 1)


# ---------------------------------------------------------------------------
# examples/python/train_mnist.py: help without the library, resume, refusals
# ---------------------------------------------------------------------------


class TrainScriptTest(unittest.TestCase):
    SCRIPT = os.path.join(BINDING_DIR, "train_mnist.py")

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def script(self, *args, env=None):
        env = dict(os.environ, **(env or {}))
        return subprocess.run([sys.executable, self.SCRIPT] + list(args), cwd=self.tmp.name,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=300)

    @staticmethod
    def epoch_line(output, epoch):
        """The losses printed for an epoch, without its time."""
        for line in output.splitlines():
            if line.startswith("epoch %s:" % epoch):
                return re.sub(r" in [0-9.]+ s", "", line)
        return None

    def test_help_needs_no_library(self):
        proc = self.script("--help", env={"LIBVAE_PATH": os.path.join(HERE, "no-such.so")})
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("--resume CHECKPOINT", proc.stdout)
        self.assertIn("--checkpoint-every", proc.stdout)

    def test_resume_gives_the_numbers_of_a_straight_run(self):
        common = ("--synthetic", "--checkpoint-every", "7")
        straight = self.script(*common, "--epochs", "3", "--checkpoint", "straight.vae")
        self.assertEqual(straight.returncode, 0, straight.stderr)
        first = self.script(*common, "--epochs", "1", "--checkpoint", "part.vae")
        self.assertEqual(first.returncode, 0, first.stderr)
        rest = self.script("--resume", "part.vae", "--epochs", "3")
        self.assertEqual(rest.returncode, 0, rest.stderr)
        self.assertIn("resuming part.vae: 1 epoch done", rest.stdout)
        self.assertIsNone(self.epoch_line(rest.stdout, "1/3"))
        self.assertIsNotNone(self.epoch_line(straight.stdout, "3/3"))
        for epoch in ("2/3", "3/3"):
            self.assertEqual(self.epoch_line(rest.stdout, epoch),
                             self.epoch_line(straight.stdout, epoch))
        # The run's settings are kept: another value is refused, and nothing is written.
        with open(os.path.join(self.tmp.name, "part.vae"), "rb") as f:
            before = f.read()
        proc = self.script("--resume", "part.vae", "--epochs", "4", "--lr", "0.5")
        self.assertEqual(proc.returncode, 2)
        self.assertIn("--lr 0.5 (the run has", proc.stderr)
        proc = self.script("--resume", "part.vae", "--epochs", "2")
        self.assertEqual(proc.returncode, 2)
        self.assertIn("--epochs is the total", proc.stderr)
        # A new run does not replace another run's checkpoint without --force.
        proc = self.script("--synthetic", "--epochs", "1", "--checkpoint", "part.vae")
        self.assertEqual(proc.returncode, 2)
        self.assertIn("part.vae exists and this run did not write it", proc.stderr)
        with open(os.path.join(self.tmp.name, "part.vae"), "rb") as f:
            self.assertEqual(f.read(), before)


# ---------------------------------------------------------------------------
# Lifetimes: closing, borrowing, garbage collection
# ---------------------------------------------------------------------------


def make_trainer(seed=1):
    """A trainer whose model, objective, optimizer and context only it references."""
    return vae.Trainer(vae.Model.create_mlp(D, [6], L, seed=seed), vae.Elbo(),
                       vae.Optimizer.adam(), vae.Context(), seed=seed)


class LifetimeTest(ErrorAssertions):
    def setUp(self):
        with vae.Rng(4) as rng:
            self.x = rng.uniform(8 * D)

    def test_close_twice_and_closed_use(self):
        cases = [(vae.Rng(1), lambda o: o.uniform(3)),
                 (vae.Model.create_mlp(4, [3], 2), lambda o: o.input_dim),
                 (vae.Layer.dense(2, 2), lambda o: o.output_size),
                 (vae.Elbo(), lambda o: setattr(o, "beta", 2.0)),
                 (vae.Optimizer.sgd(0.1), lambda o: o.lr),
                 (vae.Context(), lambda o: o.threads),
                 (make_trainer(), lambda o: o.steps),
                 (vae.Dataset.from_floats([0.5] * 4, dim=2), lambda o: o.count)]
        for obj, use in cases:
            use(obj)
            self.assertFalse(obj.closed)
            obj.close()
            self.assertTrue(obj.closed)
            obj.close()
            exc = self.assertVaeError(vae.InvalidArgument, use, obj)
            self.assertIn("closed", exc.message)
            self.assertIn("closed", repr(obj))

    def test_closed_argument(self):
        rng = vae.Rng(1)
        rng.close()
        with vae.Model.create_mlp(4, [3], 2) as m, vae.Context() as ctx:
            self.assertVaeError(vae.InvalidArgument, vae.sample, ctx, m, rng, 1)
            ctx2 = vae.Context()
            ctx2.close()
            self.assertVaeError(vae.InvalidArgument, vae.reconstruct, ctx2, m, [0.5] * 4)

    def test_with_statement(self):
        with vae.Rng(3) as rng:
            self.assertFalse(rng.closed)
        self.assertTrue(rng.closed)
        with self.assertRaises(vae.InvalidArgument):
            with rng:
                pass

    def test_direct_construction_refused(self):
        for cls in (vae.Layer, vae.Dataset):
            with self.assertRaises(TypeError):
                cls()

    def test_trainer_keeps_what_it_borrows_alive(self):
        t = make_trainer()
        refs = [weakref.ref(obj) for obj in (t.model, t.elbo, t.optimizer, t.context)]
        gc.collect()
        self.assertTrue(all(ref() is not None for ref in refs))
        self.assertEqual(t.step(self.x).samples, 8)
        self.assertEqual(len(vae.reconstruct(t.context, t.model, self.x)), 8 * D)
        with FreeLog() as log:
            del t
            gc.collect()
        self.assertTrue(all(ref() is None for ref in refs))
        self.assertEqual(log.names[0], "vae_trainer_free")
        self.assertEqual(sorted(log.names[1:]), ["vae_context_free", "vae_elbo_free",
                                                 "vae_model_free", "vae_optimizer_free"])

    def test_cyclic_garbage_frees_the_trainer_first(self):
        # In a reference cycle the collector runs the finalizers in any order;
        # the model, objective, optimizer and context must still be freed
        # after the trainer.
        for _ in range(5):
            t = make_trainer()
            t.model.partner = t        # model <-> trainer
            t.context.partner = t      # context <-> trainer
            t.cycle = t
            with FreeLog() as log:
                del t
                gc.collect()
            self.assertEqual(len(log.names), 5, log.names)
            self.assertEqual(log.names[0], "vae_trainer_free", log.names)

    def test_borrowed_objects_outlive_the_trainer_without_the_cascade(self):
        # What the collector does to a cycle: the weak references behind the
        # cascade are cleared before the finalizers run, in any order. The
        # borrow count alone must then keep the model until the trainer goes.
        t = make_trainer()
        model = t.model
        model._dependents.discard(t)
        with FreeLog() as log:
            model.close()
            self.assertEqual(log.names, [])
            self.assertFalse(t.closed)
            self.assertVaeError(vae.InvalidArgument, t.step, self.x)  # refused in Python
            t.close()
            self.assertEqual(log.names, ["vae_trainer_free", "vae_model_free"])

    def test_closing_a_borrowed_object_closes_the_trainer(self):
        for victim in ("model", "elbo", "optimizer", "context"):
            t = make_trainer()
            obj = getattr(t, victim)
            with FreeLog() as log:
                obj.close()
            self.assertEqual(log.names[:2], ["vae_trainer_free", "vae_%s_free" % victim])
            self.assertTrue(t.closed)
            exc = self.assertVaeError(vae.InvalidArgument, t.step, self.x)
            self.assertIn("closed with its %s" % type(obj).__name__, exc.message)
            with FreeLog() as log:
                del t, obj
                gc.collect()
            self.assertEqual(len(log.names), 3, log.names)  # the three others

    def test_close_inside_a_call_waits_for_it(self):
        t = make_trainer()
        model = t.model
        with vae.Dataset.from_floats(self.x, dim=D) as ds, FreeLog() as log:
            during = []

            def progress(done, total, loss):
                model.close()      # closes the trainer first: both are in use
                during.extend(log.names)

            with self.assertRaises(vae.Cancelled):   # a closed trainer stops its epoch
                t.train_epoch(ds, batch_size=4, progress=progress)
            self.assertEqual(during, [])
            self.assertEqual(log.names, ["vae_trainer_free", "vae_model_free"])
        self.assertTrue(t.closed and model.closed)

    def test_views_keep_memory_alive(self):
        m = vae.Model.create_mlp(4, [3], 2)
        ref = weakref.ref(m)
        p = m.params()
        saved = p.tolist()
        del m
        gc.collect()
        self.assertIsNotNone(ref())          # the view holds the model
        self.assertEqual(p.tolist(), saved)
        p[0] = 1.0
        with FreeLog() as log:
            del p
            gc.collect()
        self.assertIsNone(ref())
        self.assertEqual(log.names, ["vae_model_free"])

    def test_close_releases_views_and_waits_for_derived_ones(self):
        m = vae.Model.create_mlp(4, [3], 2)
        p = m.params()
        part = p[2:6]
        with FreeLog() as log:
            m.close()
            with self.assertRaises(ValueError):
                p[0]                         # released by close()
            self.assertEqual(log.names, [])  # part still points into the slab
            self.assertEqual(len(part.tolist()), 4)
            del part
            gc.collect()
            self.assertEqual(log.names, ["vae_model_free"])

    def test_trainer_grads_view(self):
        t = make_trainer()
        g = t.grads()
        keep = g[:3]
        model_ref = weakref.ref(t.model)
        with FreeLog() as log:
            t.close()
            with self.assertRaises(ValueError):
                g[0]
            self.assertEqual(log.names, [])
            self.assertEqual(keep.tolist(), [0.0, 0.0, 0.0])
            del keep
            gc.collect()
            self.assertEqual(log.names, ["vae_trainer_free"])
            del t, g
            gc.collect()
        self.assertIsNone(model_ref())
        self.assertEqual(len(log.names), 5, log.names)

    def test_model_layers_keep_the_model_alive(self):
        layers = vae.Model.create_mlp(D, [5], L).layers
        gc.collect()
        self.assertEqual([layer.input_size for layer in layers], [D, 5, L, 5])
        model = layers[0].model
        self.assertIs(layers[3].model, model)
        with FreeLog() as log:
            model.close()
            self.assertEqual(log.names, ["vae_model_free"])
        exc = self.assertVaeError(vae.InvalidArgument, lambda: layers[0].kind)
        self.assertIn("Model", exc.message)
        self.assertIn("closed Model", repr(layers[0]))

    def test_garbage_collection_frees(self):
        with FreeLog() as log:
            for _ in range(50):
                m = vae.Model.create_mlp(8, [4], 2)
                m.params()
                layer = vae.Layer.dense(3, 3)
                layer.params()
                vae.Dataset.from_floats([0.0] * 8, dim=4)
                make_trainer().grads()
            del m, layer
            gc.collect()
        counts = {name: log.names.count(name) for name in set(log.names)}
        self.assertEqual(counts, {"vae_model_free": 100, "vae_layer_free": 50,
                                  "vae_dataset_free": 50, "vae_trainer_free": 50,
                                  "vae_elbo_free": 50, "vae_optimizer_free": 50,
                                  "vae_context_free": 50})

    def test_threads_share_a_model(self):
        # Inference reads a model through a const pointer: any number of
        # threads, each with its own context.
        with vae.Model.create_mlp(D, [16], L, seed=6) as m, vae.Context() as ctx:
            want = vae.reconstruct(ctx, m, self.x)
            results, errors = [], []

            def work():
                try:
                    with vae.Context() as own:
                        for _ in range(20):
                            results.append(vae.reconstruct(own, m, self.x) == want)
                except Exception as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=work) for _ in range(4)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            self.assertEqual(errors, [])
            self.assertEqual(results, [True] * 80)


# ---------------------------------------------------------------------------
# Memory: live blocks, limits and the allocator
# ---------------------------------------------------------------------------

#: Hidden sizes of an MLP whose 11 layers outgrow the 8 a model has room for at first.
DEEP = [12, 10, 8, 6, 4]
DEFAULT_LIMITS = {"file_bytes": 1 << 31, "model_params": 1 << 28, "workspace_bytes": 1 << 32}


def c_library():
    """malloc, realloc and free of the C library, through a private ctypes handle."""
    libc = ctypes.CDLL(None)
    malloc, realloc, free = libc.malloc, libc.realloc, libc.free
    malloc.restype, malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    realloc.restype, realloc.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t]
    free.restype, free.argtypes = None, [ctypes.c_void_p]
    return malloc, realloc, free


def training_run(workers, check=None):
    """Every kind of object and call on a context of `workers`; results to compare.

    check() is called while everything is alive.
    """
    single_threaded_blas()
    out = {}
    with vae.Rng(3) as rng:
        x = rng.uniform(N * D)
    with vae.Context(threads=workers) as ctx, \
            vae.Model.create_mlp(D, [12, 8], L, seed=4) as m, vae.Elbo() as e, \
            vae.Optimizer.adam(lr=1e-2) as opt, vae.Trainer(m, e, opt, ctx, seed=5) as t, \
            vae.Dataset.from_floats(x, dim=D) as ds, vae.Rng(6) as rng:
        out["steps"] = [t.step(x).loss for _ in range(3)]
        out["epoch"] = t.train_epoch(ds, batch_size=64).loss
        out["loglik"] = list(ctx.log_likelihood(m, memoryview(x)[:4 * D], 3, rng))
        data = m.save_mem()
        with vae.Model.load_mem(data) as again:
            out["loaded"] = list(again.params())
        out["params"] = list(m.params())
        if check is not None:
            check()
    return out


class MemoryTest(ErrorAssertions):
    def setUp(self):
        gc.collect()
        # Whatever the earlier tests created is freed: the library holds no block.
        self.assertEqual(vae.allocations(), 0)
        self.assertIsNone(vae.current_allocator())
        self.addCleanup(self.restore)

    def restore(self):
        """The C library's allocator and the default limits again, even after a failure."""
        gc.collect()
        installed = vae.current_allocator()
        if installed is not None:
            owner = getattr(installed[0], "__self__", None)
            if isinstance(owner, vae.CountingAllocator):
                owner.fail_after = owner.max_bytes = None   # later tests must allocate
            try:
                vae.set_allocator()
            except vae.StateError:
                pass  # a leak, which the failing test reports
        for name, value in DEFAULT_LIMITS.items():
            vae.set_limit(name, value)

    def test_allocations_count_live_blocks(self):
        m = vae.Model.create_mlp(D, [8], L)
        with_model = vae.allocations()
        self.assertGreater(with_model, 0)
        self.assertEqual(vae.allocations(), vae.lib.vae_allocations())
        with vae.Context() as ctx:
            ctx.reserve(m, 64)
            self.assertGreater(vae.allocations(), with_model)
        self.assertEqual(vae.allocations(), with_model)
        m.close()
        self.assertEqual(vae.allocations(), 0)
        vae.Model.create_mlp(D, [8], L)       # garbage at once
        vae.Trainer(vae.Model.create_mlp(D, [8], L), vae.Elbo(), vae.Optimizer("sgd"),
                    vae.Context())
        gc.collect()
        self.assertEqual(vae.allocations(), 0)

    def test_limits_defaults_and_names(self):
        self.assertEqual(list(vae.limits().items()), sorted(DEFAULT_LIMITS.items()))
        for name, limit in (("file_bytes", vae.LIMIT_FILE_BYTES),
                            ("model_params", vae.LIMIT_MODEL_PARAMS),
                            ("workspace_bytes", vae.LIMIT_WORKSPACE_BYTES)):
            self.assertEqual(vae.get_limit(limit), DEFAULT_LIMITS[name])
            self.assertEqual(vae.get_limit(name.upper()), DEFAULT_LIMITS[name])
            vae.set_limit(limit, 12345)
            self.assertEqual(vae.get_limit(name), 12345)
            self.assertEqual(vae.lib.vae_get_limit(limit), 12345)
            vae.set_limit(name, DEFAULT_LIMITS[name])
            self.assertEqual(vae.lib.vae_get_limit(limit), DEFAULT_LIMITS[name])
        for value in (1, (1 << 64) - 1):
            vae.set_limit("file_bytes", value)
            self.assertEqual(vae.get_limit("file_bytes"), value)

    def test_limit_bad_input(self):
        for limit in (0, 4, 99, -1):
            exc = self.assertCError(vae.InvalidArgument, "vae_set_limit", vae.set_limit,
                                    limit, 5)
            self.assertIn("unknown limit %d" % limit, exc.message)
            self.assertEqual(vae.lib.vae_get_limit(limit), 0)
            exc = self.assertVaeError(vae.InvalidArgument, vae.get_limit, limit)
            self.assertIn("unknown limit %d" % limit, exc.message)
        for limit in (vae.LIMIT_FILE_BYTES, "model_params", "workspace_bytes"):
            exc = self.assertCError(vae.InvalidArgument, "vae_set_limit", vae.set_limit,
                                    limit, 0)
            self.assertIn("limit of 0", exc.message)
        for func, args in ((vae.set_limit, ("nope", 5)), (vae.get_limit, ("nope",)),
                           (vae.set_limit, (1 << 31, 5)),            # not an int
                           (vae.set_limit, ("file_bytes", -1)),
                           (vae.set_limit, ("file_bytes", 1 << 64))):
            self.assertVaeError(vae.InvalidArgument, func, *args)
        for func, args in ((vae.set_limit, ("file_bytes", "5")),
                           (vae.set_limit, ("file_bytes", 1.5)),
                           (vae.set_limit, ("file_bytes", None)),
                           (vae.get_limit, (1.0,))):
            with self.assertRaises(TypeError):
                func(*args)
        # Nothing was changed by the refused calls.
        self.assertEqual(dict(vae.limits()), DEFAULT_LIMITS)

    def test_limits_refuse_input_with_out_of_memory(self):
        with vae.Model.create_mlp(D, [8], L, seed=1) as m:
            n_params = m.n_params
            data = m.save_mem()
        vae.set_limit("model_params", n_params - 1)
        for func, args in ((vae.Model.create_mlp, (D, [8], L)), (vae.Model.load_mem, (data,))):
            exc = self.assertVaeError(vae.OutOfMemory, func, *args)
            self.assertIn("VAE_LIMIT_MODEL_PARAMS", exc.message)
            self.assertEqual(vae.allocations(), 0)
        vae.set_limit("model_params", n_params)
        with vae.Model.create_mlp(D, [8], L, seed=1) as m:
            self.assertEqual(m.n_params, n_params)

        vae.set_limit("file_bytes", len(data) - 1)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.vae")
            with open(path, "wb") as f:
                f.write(data)
            for func, arg in ((vae.Model.load_mem, data), (vae.Model.load, path)):
                exc = self.assertVaeError(vae.OutOfMemory, func, arg)
                self.assertIn("VAE_LIMIT_FILE_BYTES", exc.message)
                self.assertEqual(vae.allocations(), 0)
            vae.set_limit("file_bytes", len(data))
            with vae.Model.load(path) as m, vae.Model.load_mem(data) as m2:
                self.assertEqual(list(m.params()), list(m2.params()))

        with vae.Model.create_mlp(D, [8], L) as m, vae.Context() as ctx, vae.Rng(1) as rng:
            x = rng.uniform(64 * D)
            held = vae.allocations()
            vae.set_limit("workspace_bytes", 64)
            for func, args in ((ctx.reserve, (m, 64)), (ctx.reconstruct, (m, x))):
                exc = self.assertVaeError(vae.OutOfMemory, func, *args)
                self.assertIn("VAE_LIMIT_WORKSPACE_BYTES", exc.message)
                self.assertEqual(vae.allocations(), held)
            vae.set_limit("workspace_bytes", DEFAULT_LIMITS["workspace_bytes"])
            ctx.reserve(m, 64)
            self.assertEqual(len(ctx.reconstruct(m, x)), 64 * D)
        self.assertEqual(vae.allocations(), 0)

    def test_set_allocator_refused_while_blocks_are_live(self):
        counter = vae.CountingAllocator()
        m = vae.Model.create_mlp(D, [8], L)
        exc = self.assertCError(vae.StateError, "vae_set_allocator", counter.install)
        self.assertIn("%d blocks" % vae.allocations(), exc.message)
        self.assertIsNone(vae.current_allocator())
        self.assertFalse(counter.installed)
        m.close()
        self.assertEqual(counter.calls, 0)

        counter.install()
        self.assertTrue(counter.installed)
        self.assertEqual(vae.current_allocator(),
                         (counter.malloc, counter.realloc, counter.free))
        m = vae.Model.create_mlp(D, [8], L)
        self.assertGreater(counter.blocks, 0)
        self.assertEqual(counter.blocks, vae.allocations())
        # Neither another allocator nor the C library's while its blocks are live:
        other = vae.CountingAllocator()
        for func in (other.install, vae.set_allocator):
            self.assertCError(vae.StateError, "vae_set_allocator", func)
            self.assertTrue(counter.installed)
        with self.assertRaises(vae.StateError):
            with counter:     # the with statement's end refuses too
                pass
        self.assertTrue(counter.installed)
        m.close()
        # The counter itself freed them: it stayed installed.
        self.assertEqual((counter.blocks, counter.bytes), (0, 0))
        calls = counter.calls
        counter.uninstall()
        self.assertIsNone(vae.current_allocator())
        counter.uninstall()    # not installed: nothing to do
        with vae.Model.create_mlp(D, [8], L):
            pass
        self.assertEqual(counter.calls, calls)
        self.assertEqual(other.calls, 0)

    def test_set_allocator_needs_all_three(self):
        counter = vae.CountingAllocator()
        for given in ((counter.malloc,), (counter.malloc, counter.realloc),
                      (None, counter.realloc, counter.free),
                      (counter.malloc, None, counter.free)):
            self.assertCError(vae.InvalidArgument, "vae_set_allocator", vae.set_allocator,
                              *given)
            self.assertIsNone(vae.current_allocator())
        for given in ((1, counter.realloc, counter.free),
                      (counter.malloc, "realloc", counter.free)):
            with self.assertRaises(TypeError):
                vae.set_allocator(*given)
            self.assertIsNone(vae.current_allocator())
        vae.set_allocator()                   # the default again: harmless
        vae.set_allocator(None, None, None)
        self.assertIsNone(vae.current_allocator())
        with vae.Model.create_mlp(D, [8], L):
            pass
        self.assertEqual(counter.calls, 0)

    def test_counting_allocator_sees_every_block(self):
        plain = training_run(2)
        gc.collect()
        self.assertEqual(vae.allocations(), 0)
        seen = []
        with vae.CountingAllocator() as counter:
            self.assertTrue(counter.installed)
            counted = training_run(2, lambda: seen.append(
                (counter.blocks, vae.allocations(), counter.bytes)))
        self.assertFalse(counter.installed)
        # The same bits whoever allocates.
        self.assertEqual(counted, plain)
        (blocks, live, nbytes), = seen
        self.assertGreater(blocks, 0)
        self.assertEqual(blocks, live)
        self.assertGreater(nbytes, 4 * len(plain["params"]))
        self.assertGreaterEqual(counter.peak_bytes, nbytes)
        self.assertGreater(counter.calls, blocks)
        self.assertEqual((counter.blocks, counter.bytes, counter.failures), (0, 0, 0))
        self.assertEqual(vae.allocations(), 0)

    def test_python_functions_are_called_and_stay_alive(self):
        malloc, realloc, free = c_library()
        live, threads, calls = {}, set(), collections.Counter()
        lock = threading.Lock()

        def py_malloc(n):
            p = malloc(n)
            with lock:
                live[p] = n
                threads.add(threading.get_ident())
                calls["malloc"] += 1
            return p

        def py_realloc(p, n):
            q = realloc(p, n)
            with lock:
                if q:
                    del live[p]
                    live[q] = n
                threads.add(threading.get_ident())
                calls["realloc"] += 1
            return q

        def py_free(p):
            with lock:
                del live[p]
                threads.add(threading.get_ident())
                calls["free"] += 1
            free(p)

        plain = training_run(2)
        vae.set_allocator(py_malloc, py_realloc, py_free)
        self.assertEqual(vae.current_allocator(), (py_malloc, py_realloc, py_free))
        self.assertEqual(len(vae._allocator_installed.thunks), 3)
        # Only the binding holds them now: the C entry points must stay valid.
        del py_malloc, py_realloc, py_free
        gc.collect()
        self.assertEqual(training_run(2), plain)
        self.assertEqual(calls["realloc"], 0)
        # 11 layers: the model's array of layers (8 at first) grows.
        with vae.Model.create_mlp(D, DEEP, L):
            pass
        self.assertGreater(calls["realloc"], 0)
        gc.collect()
        self.assertEqual(live, {})
        self.assertEqual(vae.allocations(), 0)
        self.assertEqual(calls["malloc"], calls["free"])
        vae.set_allocator()
        self.assertIsNone(vae.current_allocator())
        calls.clear()
        with vae.Model.create_mlp(D, [8], L):
            pass
        self.assertEqual(calls, {})

    def test_failing_allocator_raises_out_of_memory_and_leaks_nothing(self):
        with vae.CountingAllocator(fail_after=0) as counter:
            exc = self.assertVaeError(vae.OutOfMemory, vae.Model.create_mlp, D, [12, 8], L)
            self.assertIn("out of memory", exc.message)
            self.assertGreaterEqual(counter.failures, 1)
            self.assertEqual((counter.blocks, counter.bytes, vae.allocations()), (0, 0, 0))
            counter.fail_after = None
            with vae.Model.create_mlp(D, [12, 8], L) as m:
                n_params = m.n_params
            counter.max_bytes = 4 * n_params - 1   # the parameters do not fit
            exc = self.assertVaeError(vae.OutOfMemory, vae.Model.create_mlp, D, [12, 8], L)
            self.assertIn("out of memory", exc.message)
            self.assertEqual((counter.blocks, counter.bytes, vae.allocations()), (0, 0, 0))
        self.assertEqual(vae.allocations(), 0)

    def sweep(self, counter, flow):
        """flow() with its k-th allocation failing, for every k: OutOfMemory, no leak.

        Returns the number of allocations flow() makes.
        """
        counter.fail_after = None
        calls = counter.calls
        want = flow()
        needed = counter.calls - calls
        self.assertGreater(needed, 0)
        for k in range(needed):
            counter.fail_after = k
            with self.assertRaises(vae.OutOfMemory, msg="allocation %d of %d" % (k, needed)) as cm:
                flow()
            self.assertIn("out of memory", cm.exception.message)
            self.assertEqual(cm.exception.code, vae.ERR_NOMEM)
            counter.fail_after = None
            gc.collect()
            self.assertEqual((counter.blocks, counter.bytes, vae.allocations()), (0, 0, 0),
                             "allocation %d of %d failed" % (k, needed))
        counter.fail_after = needed
        self.assertEqual(flow(), want)
        counter.fail_after = None
        return needed

    def test_every_failed_allocation_of_creation_and_training(self):
        single_threaded_blas()
        with vae.Rng(3) as rng:
            x = rng.uniform(N * D)

        def create():
            # 11 layers: the array of layers is reallocated, which may fail too.
            with vae.Model.create_mlp(D, DEEP, L, seed=1) as m:
                return list(m.params())

        def train():
            with vae.Model.create_mlp(D, [12, 8], L, seed=1) as m, vae.Elbo() as e, \
                    vae.Context(threads=2) as ctx, vae.Optimizer.adam() as opt, \
                    vae.Trainer(m, e, opt, ctx, seed=2) as t:
                loss = t.step(x).loss
                with vae.Model.load_mem(m.save_mem()) as again:
                    return loss, list(again.params())

        with vae.CountingAllocator() as counter:
            self.assertGreater(self.sweep(counter, create), 5)
            self.assertGreater(self.sweep(counter, train), 10)
        self.assertEqual(vae.allocations(), 0)

    def test_failed_step_leaves_the_trainer_as_it_was(self):
        with vae.Rng(3) as rng:
            x = rng.uniform(N * D)
        with vae.CountingAllocator() as counter:
            with vae.Model.create_mlp(D, [8], L, seed=1) as m, vae.Elbo() as e, \
                    vae.Context() as ctx, vae.Optimizer.adam() as opt, \
                    vae.Trainer(m, e, opt, ctx, seed=2) as t:
                params = list(m.params())
                held = counter.blocks
                counter.fail_after = 0        # the workspace cannot be allocated
                self.assertVaeError(vae.OutOfMemory, t.step, x)
                self.assertEqual((t.steps, list(m.params())), (0, params))
                self.assertEqual(counter.blocks, held)
                counter.fail_after = None
                t.step(x)
                self.assertEqual(t.steps, 1)
                t.reserve(N)
                calls = counter.calls
                t.step(x)
                self.assertEqual(counter.calls, calls)   # a reserved step allocates nothing
        self.assertEqual(vae.allocations(), 0)

    def test_python_exceptions_are_failed_allocations(self):
        malloc, realloc, free = c_library()
        mode = {"malloc": None, "free": None}

        def py_malloc(n):
            how = mode["malloc"]
            if how == "MemoryError":
                raise MemoryError
            if how == "RuntimeError":
                raise RuntimeError("a bug in the allocator")
            if how in ("None", "0"):
                return None if how == "None" else 0
            return malloc(n)

        def py_free(p):
            free(p)
            if mode["free"]:
                raise ValueError("a bug after the free")

        # The ctypes functions of the C library are Python callables too.
        vae.set_allocator(py_malloc, realloc, py_free)
        for how, printed in (("None", None), ("0", None), ("MemoryError", None),
                             ("RuntimeError", "RuntimeError: a bug in the allocator")):
            mode["malloc"] = how
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                exc = self.assertVaeError(vae.OutOfMemory, vae.Model.create_mlp, D, [8], L)
            self.assertIn("out of memory", exc.message)
            self.assertEqual(vae.allocations(), 0, how)
            if printed:
                self.assertIn("libvae: exception in the allocator's malloc", err.getvalue())
                self.assertIn(printed, err.getvalue())
            else:
                self.assertEqual(err.getvalue(), "", how)
        mode["malloc"] = None
        m = vae.Model.create_mlp(D, [8], L)
        mode["free"] = True
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            m.close()          # the exception does not escape into C nor into close()
        self.assertIn("ValueError: a bug after the free", err.getvalue())
        self.assertEqual(vae.allocations(), 0)
        mode["free"] = None
        vae.set_allocator()

    def test_python_threads_share_the_allocator(self):
        plain = training_run(2)
        results, errors = [], []

        def work():
            try:
                for _ in range(3):
                    results.append(training_run(2) == plain)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        with vae.CountingAllocator() as counter:
            threads = [threading.Thread(target=work) for _ in range(4)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            self.assertEqual(errors, [])
            self.assertEqual(results, [True] * 12)
            self.assertEqual((counter.blocks, counter.bytes, counter.failures), (0, 0, 0))
        self.assertEqual(vae.allocations(), 0)

    def test_called_from_threads_python_did_not_start(self):
        # The library's worker threads are C threads: a call from one takes
        # the GIL (while the Python caller waits inside a ctypes call).
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        include = os.path.join(ROOT, "include")
        if not cc or not os.path.isfile(os.path.join(include, "vae", "vae.h")):
            self.skipTest("no C compiler or header for the thread shim")
        source = textwrap.dedent("""\
            #include <pthread.h>
            #include <vae/vae.h>
            static const vae_allocator *A;
            static int rounds;
            static void *work(void *arg)
            {
                (void)arg;
                for (int i = 0; i < rounds; i++) {
                    void *p = A->malloc_fn(A->payload, 16), *q;
                    if (!p)
                        return (void *)1;
                    if (!(q = A->realloc_fn(A->payload, p, 4096))) {
                        A->free_fn(A->payload, p);
                        return (void *)1;
                    }
                    A->free_fn(A->payload, q);
                }
                return NULL;
            }
            int run(const vae_allocator *a, int threads, int n)
            {
                pthread_t t[16];
                int started = 0, failed = 0;
                A = a;
                rounds = n;
                for (; started < threads && started < 16; started++)
                    if (pthread_create(&t[started], NULL, work, NULL))
                        break;
                for (int i = 0; i < started; i++) {
                    void *r;
                    pthread_join(t[i], &r);
                    failed += r != NULL;
                }
                return started == threads ? failed : -1;
            }
            """)
        with tempfile.TemporaryDirectory() as tmp:
            src, lib = os.path.join(tmp, "shim.c"), os.path.join(tmp, "libshim.so")
            with open(src, "w") as f:
                f.write(source)
            proc = subprocess.run([cc, "-std=c11", "-shared", "-fPIC", "-I", include, src,
                                   "-o", lib, "-pthread"], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, universal_newlines=True)
            if proc.returncode:
                self.skipTest("cannot build the thread shim: %s" % proc.stdout)
            shim = ctypes.CDLL(lib)
        shim.run.restype = ctypes.c_int
        shim.run.argtypes = [ctypes.POINTER(vae.AllocatorStruct), ctypes.c_int, ctypes.c_int]
        threads = set()

        class Recording(vae.CountingAllocator):
            def malloc(self, n):
                threads.add(threading.get_ident())
                return super().malloc(n)

        with Recording() as counter:
            installed = ctypes.byref(vae._allocator_installed.struct)
            self.assertEqual(shim.run(installed, 8, 200), 0)
            self.assertEqual((counter.calls, counter.failures), (8 * 200 * 2, 0))
            self.assertEqual((counter.blocks, counter.bytes), (0, 0))
            self.assertEqual(counter.peak_bytes % 16, 0)
            self.assertTrue(threads - {threading.get_ident()}, threads)
            counter.fail_after = 100       # failures seen by the threads, no leak
            self.assertEqual(shim.run(installed, 4, 100), 4)
            self.assertEqual((counter.blocks, counter.bytes), (0, 0))
        self.assertEqual(vae.allocations(), 0)

    def test_installed_at_interpreter_exit(self):
        # Objects alive at exit, and worker threads that start (and free
        # their start-up block through Python) while the interpreter ends.
        script = textwrap.dedent("""\
            import threading
            import libvae as vae
            vae.blas_set_threads(1)
            counter = vae.CountingAllocator().install()
            model = vae.Model.create_mlp(20, [8], 3)
            ctx = vae.Context(threads=4)
            print(len(ctx.reconstruct(model, [0.5] * 40)), counter.blocks > 0)

            def busy():
                with vae.Context(threads=3) as c:
                    while True:
                        c.reconstruct(model, [0.5] * 40)

            threading.Thread(target=busy, daemon=True).start()
            last = vae.Context(threads=8)
            """)
        env = dict(os.environ, PYTHONPATH=BINDING_DIR)
        for _ in range(3):
            proc = subprocess.run([sys.executable, "-c", script], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  universal_newlines=True, timeout=60)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertEqual(proc.stdout.split(), ["40", "True"])
            self.assertEqual(proc.stderr, "")


# ---------------------------------------------------------------------------
# Errors of inference calls
# ---------------------------------------------------------------------------


class ErrorTest(ErrorAssertions):
    def setUp(self):
        self.rng = vae.Rng(5)
        self.ctx = vae.Context()
        self.model = vae.Model.create_mlp(D, [8], L, seed=1)
        self.elbo = vae.Elbo()
        self.x = self.rng.uniform(2 * D)

    def tearDown(self):
        for obj in (self.elbo, self.model, self.ctx, self.rng):
            obj.close()

    def test_zero_sizes(self):
        for func, args, name in ((vae.Model, (0, 2), "vae_model_create"),
                                 (vae.Model, (4, 0), "vae_model_create"),
                                 (vae.Layer.dense, (0, 3), "vae_layer_dense_create"),
                                 (vae.Model.create_mlp, (4, [0], 2), "vae_model_create_mlp"),
                                 (vae.Layer.conv2d, (1, 0, 8, 1, 3), "vae_layer_conv2d_create")):
            self.assertCError(vae.InvalidArgument, name, func, *args)
        ctx, m = self.ctx, self.model
        self.assertCError(vae.InvalidArgument, "vae_encode", vae.encode, ctx, m, [])
        self.assertCError(vae.InvalidArgument, "vae_sample", vae.sample, ctx, m, self.rng, 0)
        self.assertCError(vae.InvalidArgument, "vae_log_likelihood", vae.log_likelihood, ctx,
                          m, self.x, 0, self.rng)
        self.assertCError(vae.InvalidArgument, "vae_dataset_from_floats",
                          vae.Dataset.from_floats, [], dim=D)
        self.assertVaeError(vae.InvalidArgument, vae.Dataset.from_floats, self.x, dim=0)

    def test_out_of_range_arguments(self):
        self.assertCError(vae.InvalidArgument, "vae_layer_dense_create", vae.Layer.dense,
                          3, 3, 99)
        self.assertVaeError(vae.InvalidArgument, vae.Layer.dense, 3, 3, "swish")
        self.assertCError(vae.InvalidArgument, "vae_model_create", vae.Model, 4, 2, 7)
        self.assertVaeError(vae.InvalidArgument, vae.Rng, -1)
        self.assertVaeError(vae.InvalidArgument, vae.Rng, 1 << 64)
        self.assertVaeError(vae.InvalidArgument, vae.sample, self.ctx, self.model,
                            self.rng, -3)
        # Bernoulli data must lie in [0, 1].
        exc = self.assertCError(vae.InvalidArgument, "vae_encode", vae.encode, self.ctx,
                                self.model, [2.0] * D)
        self.assertIn("[0, 1]", exc.message)

    def test_null_like_misuse(self):
        ctx, m = self.ctx, self.model
        self.assertVaeError(vae.InvalidArgument, vae.sample, ctx, m, None, 2)
        self.assertVaeError(vae.InvalidArgument, vae.encode, ctx, m, None)
        self.assertVaeError(vae.InvalidArgument, vae.encode, None, m, self.x)
        self.assertVaeError(vae.InvalidArgument, vae.decode, ctx, None, [0.0] * L)
        with self.assertRaises(TypeError):
            vae.sample(ctx, m, self.elbo, 2)  # a handle of the wrong type
        with self.assertRaises(TypeError):
            vae.encode(m, ctx, self.x)        # arguments swapped

    def test_wrong_buffers(self):
        ctx, m = self.ctx, self.model
        exc = self.assertVaeError(vae.ShapeError, vae.encode, ctx, m, self.x[:-1])
        self.assertIsInstance(exc, ValueError)
        self.assertVaeError(vae.ShapeError, vae.encode, ctx, m, self.x, n=3)
        self.assertVaeError(vae.ShapeError, vae.decode, ctx, m, [0.0] * (L + 1))
        self.assertVaeError(vae.ShapeError, vae.sample, ctx, m, self.rng, 2,
                            out=array.array("f", [0.0] * (2 * D - 1)))
        self.assertVaeError(vae.ShapeError, vae.encode, ctx, m, self.x,
                            mu=array.array("f", [0.0]))
        self.assertVaeError(vae.ShapeError, vae.elbo_evaluate, ctx, m, self.elbo, self.x,
                            eps=[0.0] * L)
        self.assertVaeError(vae.ShapeError, self.rng.normal, 3, out=array.array("f", [0.0]))
        with self.assertRaises(TypeError):
            vae.encode(ctx, m, array.array("d", self.x))  # float64
        with self.assertRaises(TypeError):
            vae.encode(ctx, m, bytes(4 * D))
        with self.assertRaises(TypeError):
            vae.encode(ctx, m, "abc")
        with self.assertRaises(TypeError):
            vae.sample(ctx, m, self.rng, 1, out=bytes(4 * D))  # read-only
        with self.assertRaises(TypeError):
            vae.encode(ctx, m, [[0.5] * D, ["a"] * D])

    def test_numeric(self):
        ctx, m = self.ctx, self.model
        bad = array.array("f", self.x)
        bad[D + 3] = float("nan")
        exc = self.assertCError(vae.NumericError, "vae_encode", vae.encode, ctx, m, bad)
        self.assertIsInstance(exc, ArithmeticError)
        self.assertCError(vae.NumericError, "vae_decode", vae.decode, ctx, m,
                          [float("inf")] * L)
        self.assertCError(vae.NumericError, "vae_dataset_from_floats",
                          vae.Dataset.from_floats, bad, dim=D)
        eps = [0.0] * (2 * L)
        eps[1] = float("nan")
        self.assertCError(vae.NumericError, "vae_elbo_evaluate", vae.elbo_evaluate, ctx, m,
                          self.elbo, self.x, eps=eps)
        self.assertCError(vae.NumericError, "vae_log_likelihood", vae.log_likelihood, ctx,
                          m, bad, 2, self.rng)

    def test_state(self):
        ctx = self.ctx
        with vae.Model(D, L) as m:
            self.assertFalse(m.built)
            self.assertEqual((m.n_params, m.layer_count), (0, 0))
            for func, args, name in ((vae.encode, (ctx, m, self.x), "vae_encode"),
                                     (vae.reconstruct, (ctx, m, self.x), "vae_reconstruct"),
                                     (vae.decode, (ctx, m, [0.0] * L), "vae_decode"),
                                     (vae.sample, (ctx, m, self.rng, 1), "vae_sample"),
                                     (vae.log_likelihood, (ctx, m, self.x, 2, self.rng),
                                      "vae_log_likelihood"),
                                     (vae.elbo_evaluate, (ctx, m, self.elbo, self.x, None,
                                                          None, self.rng),
                                      "vae_elbo_evaluate"),
                                     (ctx.reserve, (m, 4), "vae_context_reserve"),
                                     (m.save_mem, (), "vae_model_save_mem")):
                exc = self.assertCError(vae.StateError, name, func, *args)
                self.assertIsInstance(exc, RuntimeError)
            exc = self.assertCError(vae.ShapeError, "vae_model_build", m.build)  # no decoder
            self.assertIn("decoder", exc.message)
            self.assertFalse(m.built)
            m.add_decoder_layer(vae.Layer.dense(L, D))
            m.build()
            self.assertTrue(m.built)
            self.assertCError(vae.StateError, "vae_model_build", m.build)
            with tempfile.TemporaryDirectory() as tmp:
                self.assertCError(vae.StateError, "vae_model_save", vae.Model(D, L).save,
                                  os.path.join(tmp, "x.vae"))
        with vae.Model(D, L) as m:
            m.add_encoder_layer(vae.Layer.dense(D + 1, 4))
            m.add_decoder_layer(vae.Layer.dense(L, D))
            exc = self.assertCError(vae.ShapeError, "vae_model_build", m.build)
            self.assertIn("encoder layer 0", exc.message)

    def test_corrupted_bytes(self):
        data = bytearray(self.model.save_mem())
        self.assertVaeError(vae.FormatError, vae.Model.load_mem, b"")
        self.assertVaeError(vae.FormatError, vae.Model.load_mem, b"not a model at all")
        self.assertVaeError(vae.FormatError, vae.Model.load_mem, data[:len(data) // 2])
        damaged = bytearray(data)
        damaged[len(damaged) // 2] ^= 0x40
        exc = self.assertCError(vae.FormatError, "vae_model_load_mem", vae.Model.load_mem,
                                damaged)
        self.assertIsInstance(exc, ValueError)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "damaged.vae")
            with open(path, "wb") as f:
                f.write(damaged)
            self.assertCError(vae.FormatError, "vae_model_load", vae.Model.load, path)

    def test_missing_files(self):
        with tempfile.TemporaryDirectory() as tmp:
            missing = os.path.join(tmp, "nope", "model.vae")
            exc = self.assertCError(vae.VaeIOError, "vae_model_load", vae.Model.load, missing)
            self.assertIsInstance(exc, OSError)
            self.assertIn("nope", exc.message)
            self.assertCError(vae.VaeIOError, "vae_model_save", self.model.save, missing)
            self.assertCError(vae.VaeIOError, "vae_dataset_load_idx", vae.Dataset.load_idx,
                              missing)
        self.assertCError(vae.InvalidArgument, "vae_model_save", self.model.save, "")
        with self.assertRaises(TypeError):
            self.model.save(42)

    def test_dataset_errors(self):
        with vae.Dataset.from_floats(self.x, dim=D) as ds:
            self.assertFalse(ds.has_labels)
            self.assertCError(vae.StateError, "vae_dataset_label", ds.label, 0)
            self.assertCError(vae.StateError, "vae_dataset_filter_label", ds.filter_label, 1)
            self.assertCError(vae.InvalidArgument, "vae_dataset_subset", ds.subset, [0, 2])
            self.assertCError(vae.InvalidArgument, "vae_dataset_subset", ds.subset, [])
            self.assertCError(vae.InvalidArgument, "vae_dataset_range", ds.range, 1, 2)
            self.assertCError(vae.InvalidArgument, "vae_dataset_batch", ds.batch, [0],
                              binarize=True)
        self.assertVaeError(vae.ShapeError, vae.Dataset.from_floats, self.x, dim=D,
                            labels=[1])
        with vae.Dataset.from_floats(self.x, dim=D, labels=[3, 3]) as ds:
            self.assertCError(vae.InvalidArgument, "vae_dataset_filter_label",
                              ds.filter_label, 3, keep=False)

    def test_last_error_is_per_thread(self):
        messages = []

        def other():
            try:
                vae.Model(0, 1)
            except vae.InvalidArgument as exc:
                messages.append(exc.message)

        with self.assertRaises(vae.NumericError) as cm:
            vae.decode(self.ctx, self.model, [float("nan")] * L)
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        self.assertIn("vae_model_create", messages[0])
        self.assertIn("vae_decode", vae.lib.vae_last_error().decode())
        self.assertIn("vae_decode", cm.exception.message)


# ---------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------


class DatasetTest(unittest.TestCase):
    def write_idx(self, tmp, count, rows, cols, compress=False):
        pixels = bytes((i * 37) % 256 for i in range(count * rows * cols))
        labels = bytes(i % 3 for i in range(count))
        opener = gzip.open if compress else open
        img = os.path.join(tmp, "img%s" % (".gz" if compress else ""))
        lab = os.path.join(tmp, "lab%s" % (".gz" if compress else ""))
        with opener(img, "wb") as f:
            f.write(struct.pack(">IIII", 0x803, count, rows, cols) + pixels)
        with opener(lab, "wb") as f:
            f.write(struct.pack(">II", 0x801, count) + labels)
        return img, lab, pixels

    def test_load_idx(self):
        with tempfile.TemporaryDirectory() as tmp:
            for compress in (False, True):
                img, lab, pixels = self.write_idx(tmp, 6, 3, 2, compress)
                with vae.Dataset.load_idx(img, lab) as ds:
                    self.assertEqual((ds.count, len(ds), ds.dim), (6, 6, 6))
                    self.assertEqual(ds.image_size, (3, 2))
                    self.assertTrue(ds.has_labels)
                    self.assertEqual(list(ds.labels()), [0, 1, 2, 0, 1, 2])
                    self.assertEqual(ds.label(4), 1)
                    first = ds.range(0, 2)
                    self.assertEqual(list(first), [float(array.array("f", [p / 255])[0])
                                                   for p in pixels[:12]])
                    with ds.filter_label(2) as twos:
                        self.assertEqual(twos.count, 2)
                        self.assertEqual(list(twos.range(0, 1)), list(ds.range(2, 1)))
                    with ds.filter_label(2, keep=False) as rest:
                        self.assertEqual(list(rest.labels()), [0, 1, 0, 1])
                    with ds.subset([5, 5, 0]) as sub:
                        self.assertEqual(list(sub.labels()), [2, 2, 0])
                        self.assertEqual(sub.range(0, 3), ds.batch([5, 5, 0]))
                    with vae.Rng(1) as rng:
                        binary = ds.batch([1, 2, 3], binarize=True, rng=rng)
                    self.assertTrue(set(binary) <= {0.0, 1.0})
                with vae.Dataset.load_idx(img) as ds:
                    self.assertFalse(ds.has_labels)
            with open(os.path.join(tmp, "bad"), "wb") as f:
                f.write(struct.pack(">IIII", 0x801, 1, 2, 2))
            with self.assertRaises(vae.FormatError):
                vae.Dataset.load_idx(os.path.join(tmp, "bad"))
            img, lab, _ = self.write_idx(tmp, 6, 3, 2)
            with open(img, "r+b") as f:
                f.truncate(20)
            with self.assertRaises(vae.FormatError):
                vae.Dataset.load_idx(img, lab)

    def test_from_floats(self):
        rows = [[0.0, 0.5], [1.0, 0.25], [0.75, 0.125]]
        with vae.Dataset.from_floats(rows, labels=array.array("i", [1, 2, 3])) as ds:
            self.assertEqual((ds.count, ds.dim), (3, 2))
            self.assertEqual(ds.image_size, (1, 2))
            self.assertEqual(list(ds.range(0, 3)), [v for row in rows for v in row])
            self.assertEqual(list(ds.labels()), [1, 2, 3])
        flat = floats([v for row in rows for v in row])
        for kwargs in ({"dim": 2}, {"count": 3}, {"count": 3, "dim": 2}):
            with vae.Dataset.from_floats(flat, **kwargs) as ds:
                self.assertEqual((ds.count, ds.dim), (3, 2))
        with self.assertRaises(vae.ShapeError):
            vae.Dataset.from_floats(flat, dim=4)
        with self.assertRaises(TypeError):
            vae.Dataset.from_floats(flat, dim=2, labels=array.array("d", [1, 2, 3]))


if __name__ == "__main__":
    unittest.main()
