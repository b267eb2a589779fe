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
import faulthandler
import gc
import gzip
import math
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
try:
    import libvae as vae
except ImportError as exc:
    if "LibraryNotFound" in type(exc).__name__ or "VersionMismatch" in type(exc).__name__:
        raise
    sys.path.insert(0, os.path.join(ROOT, "examples", "python"))
    import libvae as vae

N, D, L = 16, 20, 3


def floats(values):
    return array.array("f", values)


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
    out = {}
    for line in text.splitlines():
        if line.strip():
            key, *values = line.split()
            out[key] = [float(v) for v in values]
    return out


def python_run():
    """The calls of reference.c, through the binding, in the same order."""
    res = {}
    with vae.Rng(2024) as rng:
        x = rng.uniform(N * D)

        with vae.Model.mlp(D, [12, 8], L, activation=vae.ACT_TANH,
                           likelihood=vae.LIKELIHOOD_BERNOULLI, seed=11) as m, \
                vae.Elbo() as e, \
                vae.Optimizer.adam(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8) as adam:
            for step in range(5):
                loss = e.forward_backward(m, x, rng=rng)
                adam.step(m)
                res["step%d" % step] = [loss.loss, loss.recon, loss.kl]
            eps = rng.normal(N * L)
            ev = e.evaluate(m, x, eps=eps, per_sample=True)
            res["eval"] = [ev.loss, ev.recon, ev.kl]
            res["eval_per_sample"] = list(ev.per_sample)
            p = m.params()
            total = 0.0
            for value in p:
                total += value
            res["mlp_params"] = [float(len(p)), total]
            res["mlp_sample"] = list(m.sample(rng, 2))
            res["mlp_loglik"] = list(m.log_likelihood(memoryview(x)[:3 * D], 4, rng))
            res["mlp_file_bytes"] = [float(len(m.save_mem()))]

        with vae.Model(D, L, vae.LIKELIHOOD_GAUSSIAN) as g:
            g.add_encoder_layer(vae.Layer.dense(D, 10, vae.ACT_RELU))
            g.add_decoder_layer(vae.Layer.dense(L, 10, "relu"))
            g.add_decoder_layer(vae.Layer.dense(10, D, vae.ACT_IDENTITY))
            g.build(seed=5)
            g.set_gaussian_sigma(0.5)
            with vae.Elbo(beta=0.5) as e2, \
                    vae.Optimizer.sgd(0.05, momentum=0.9, nesterov=True,
                                      weight_decay=1e-4) as sgd, \
                    vae.Dataset.from_floats(x, N, D) as ds:
                sgd.clip_norm = 5.0
                for epoch in range(2):
                    st = vae.train_epoch(g, e2, sgd, ds, rng, batch_size=5,
                                         binarize=bool(epoch))
                    res["epoch%d" % epoch] = [st.loss, st.recon, st.kl, float(st.samples),
                                              float(st.steps)]
                ev = vae.evaluate_dataset(g, e2, ds, rng, batch_size=7, per_sample=True)
                res["eval_dataset"] = [ev.loss, ev.recon, ev.kl]
                res["eval_dataset_per_sample"] = list(ev.per_sample)
                total = 0.0
                for value in g.params():
                    total += value
                res["gauss_params"] = [float(g.n_params), total]
                e2.objective = vae.OBJECTIVE_AUTOENCODER
                ae = e2.forward_backward(g, x)
                res["autoencoder"] = [ae.loss, ae.recon, ae.kl]
    return res


class ReferenceTest(unittest.TestCase):
    def test_bit_for_bit_equal_to_c(self):
        with tempfile.TemporaryDirectory() as tmp:
            exe, why = reference_exe(tmp)
            if exe is None:
                self.skipTest(why)
            proc = subprocess.run([exe], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  universal_newlines=True, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        want = parse_reference(proc.stdout)
        got = python_run()
        self.assertEqual(sorted(got), sorted(want))
        for key in want:
            # == on doubles: the same bits, not approximately equal.
            self.assertEqual(got[key], want[key], key)

    def test_same_seed_same_numbers(self):
        self.assertEqual(python_run(), python_run())


# ---------------------------------------------------------------------------
# The binding itself
# ---------------------------------------------------------------------------


class BindingTest(unittest.TestCase):
    def test_every_exported_symbol_is_declared(self):
        mapfile = os.path.join(ROOT, "lib", "libvae.map")
        if not os.path.isfile(mapfile):
            self.skipTest("lib/libvae.map not found")
        with open(mapfile) as f:
            text = f.read()
        exported = set()
        for line in text.split("global:")[1].split("local:")[0].splitlines():
            name = line.strip().rstrip(";")
            if name:
                exported.add(name)
        # Every exported function is declared; the binding may know a few
        # newer ones (_OPTIONAL) that an older tree does not export yet.
        self.assertLessEqual(exported, set(vae._SIGNATURES))
        self.assertLessEqual(set(vae._SIGNATURES) - exported, vae._OPTIONAL)
        for name in exported - vae._MISSING:
            self.assertIsNotNone(getattr(vae.lib, name).argtypes, name)
        self.assertLessEqual(vae._MISSING, vae._OPTIONAL)

    def test_declarations_match_the_header(self):
        header = os.path.join(ROOT, "include", "vae", "vae.h")
        if not os.path.isfile(header):
            self.skipTest("include/vae/vae.h not found")
        import ctypes
        import re
        with open(header) as f:
            text = re.sub(r"/\*.*?\*/", " ", f.read(), flags=re.S)
        text = "\n".join(line for line in text.splitlines()
                         if not line.lstrip().startswith("#"))
        protos = re.findall(r"VAE_API\s+([^;(]*?)\b(vae_\w+)\s*\(([^)]*)\)\s*;", text)
        declared = {name for _, name, _ in protos}
        self.assertLessEqual(declared, set(vae._SIGNATURES))
        self.assertLessEqual(set(vae._SIGNATURES) - declared, vae._OPTIONAL)
        P = ctypes.POINTER
        scalars = {"void": None, "unsigned": ctypes.c_uint, "int": ctypes.c_int,
                   "size_t": ctypes.c_size_t, "uint64_t": ctypes.c_uint64,
                   "int32_t": ctypes.c_int32, "float": ctypes.c_float,
                   "double": ctypes.c_double}
        structs = {"vae_train_options": vae.TrainOptions,
                   "vae_epoch_stats": vae.EpochStatsStruct}

        def ctype(decl, is_param):
            """The ctypes type a C declaration (return type, or parameter) maps to."""
            tokens = re.sub(r"\bconst\b", " ", decl).replace("*", " * ").split()
            if is_param and tokens != ["void"]:
                tokens = tokens[:-1]  # the parameter name
            stars = tokens.count("*")
            base = " ".join(t for t in tokens if t != "*")
            if (base, stars) == ("char", 1):
                return ctypes.c_char_p
            if (base, stars) == ("void", 1):
                return ctypes.c_void_p
            if base in structs and stars == 1:
                return P(structs[base])
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

    def test_version(self):
        number, string = vae.library_version()
        self.assertEqual(number // 100, vae.HEADER_VERSION_NUMBER // 100)
        self.assertEqual(string.split(".")[:2], vae.HEADER_VERSION.split(".")[:2])
        header = os.path.join(ROOT, "include", "vae", "vae.h")
        if os.path.isfile(header):
            with open(header) as f:
                text = f.read()
            for part, value in (("MAJOR", vae.HEADER_VERSION_MAJOR),
                                ("MINOR", vae.HEADER_VERSION_MINOR),
                                ("PATCH", vae.HEADER_VERSION_PATCH)):
                self.assertIn("#define VAE_VERSION_%s %d\n" % (part, value), text)

    def test_struct_layouts(self):
        import ctypes
        self.assertEqual(ctypes.sizeof(vae.TrainOptions), 4 * ctypes.sizeof(ctypes.c_size_t)
                         + 2 * ctypes.sizeof(ctypes.c_int))
        self.assertEqual(vae.EpochStatsStruct.samples.offset,
                         ctypes.sizeof(ctypes.c_size_t) + 4 * ctypes.sizeof(ctypes.c_double))

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


class ModelTest(unittest.TestCase):
    def setUp(self):
        self.rng = vae.Rng(7)
        self.model = vae.Model.mlp(D, [12], L, seed=3)
        self.x = self.rng.uniform(4 * D)

    def tearDown(self):
        self.model.close()
        self.rng.close()

    def test_properties(self):
        m = self.model
        self.assertEqual((m.input_dim, m.latent_dim, m.likelihood), (D, L, 0))
        self.assertTrue(m.built)
        self.assertEqual(m.n_params, (D * 12 + 12) + (12 * 2 * L + 2 * L) + (L * 12 + 12)
                         + (12 * D + D))

    def test_inputs_of_every_kind_agree(self):
        m, x = self.model, self.x
        want = m.reconstruct(x)
        self.assertIsInstance(want, array.array)
        self.assertEqual(want.typecode, "f")
        self.assertEqual(len(want), 4 * D)
        rows = [list(x[i * D:(i + 1) * D]) for i in range(4)]
        readonly = memoryview(bytes(memoryview(x).cast("B"))).cast("f")
        for given in (list(x), tuple(x), rows, memoryview(x), readonly,
                      memoryview(x).cast("B").cast("f", (4, D))):
            self.assertEqual(m.reconstruct(given), want)
        self.assertEqual(m.reconstruct(x, n=4), want)

    def test_out_buffers_are_written_in_place(self):
        m = self.model
        out = array.array("f", bytes(4 * 2 * D))
        self.assertIs(m.sample(self.rng, 2, out=out), out)
        self.assertTrue(any(out))
        mu, lv = array.array("f", [0.0]) * (4 * L), bytearray(16 * L)
        got = m.encode(self.x, mu=mu, logvar=memoryview(lv).cast("f"))
        self.assertIs(got[0], mu)
        self.assertEqual(memoryview(lv).cast("f").tolist(), list(m.encode(self.x)[1]))
        self.assertEqual(mu, m.encode(self.x)[0])
        dec = m.decode(mu)
        self.assertEqual(len(dec), 4 * D)
        self.assertTrue(all(0.0 <= v <= 1.0 for v in dec))

    def test_params_are_a_zero_copy_view(self):
        m = self.model
        p, g = m.params(), m.grads()
        self.assertEqual((p.format, len(p), p.readonly), ("f", m.n_params, False))
        self.assertIs(m.params(), p)
        self.assertFalse(any(g))
        before = m.reconstruct(self.x)
        saved = p.tolist()
        for i in range(len(p)):
            p[i] = 0.0
        self.assertNotEqual(m.reconstruct(self.x), before)
        self.assertTrue(all(v == 0.5 for v in m.reconstruct(self.x)))  # sigmoid(0)
        p[:] = array.array("f", saved)
        self.assertEqual(m.reconstruct(self.x), before)
        with vae.Elbo() as e:
            e.forward_backward(m, self.x, rng=self.rng)
        self.assertTrue(any(g))
        m.zero_grads()
        self.assertFalse(any(g))

    def test_views_are_released_on_close(self):
        m = vae.Model.mlp(4, [3], 2)
        p = m.params()
        self.assertEqual(len(p), m.n_params)
        m.close()
        with self.assertRaises(ValueError):
            p[0]
        m2 = vae.Model.mlp(4, [3], 2)
        q = m2.params()
        del m2
        gc.collect()
        with self.assertRaises(ValueError):
            q[0]

    def test_save_load_file_and_bytes(self):
        m, x = self.model, self.x
        with vae.Elbo() as e, vae.Optimizer.adam() as opt:
            for _ in range(3):
                e.forward_backward(m, x, rng=self.rng)
                opt.step(m)
        want = m.reconstruct(x)
        mu = m.encode(x)[0]
        with tempfile.TemporaryDirectory() as tmp:
            for path in (os.path.join(tmp, "model.vae"),
                         os.fsencode(os.path.join(tmp, "m2.vae"))):
                m.save(path)
                with vae.Model.load(path) as loaded:
                    self.assertEqual(loaded.reconstruct(x), want)
                    self.assertEqual(loaded.encode(x)[0], mu)
                    self.assertEqual(loaded.params().tolist(), m.params().tolist())
            import pathlib
            m.save(pathlib.Path(tmp) / "m3.vae")
            with open(os.path.join(tmp, "m3.vae"), "rb") as f:
                on_disk = f.read()
        data = m.save_mem()
        self.assertIsInstance(data, bytes)
        self.assertEqual(data, on_disk)
        for blob in (data, bytearray(data), memoryview(data)):
            with vae.Model.load_mem(blob) as loaded:
                self.assertEqual(loaded.reconstruct(x), want)
                self.assertEqual(loaded.save_mem(), data)

    def test_threads(self):
        if "vae_model_set_threads" in vae._MISSING:
            with self.assertRaises(NotImplementedError):
                self.model.set_threads(2)
            self.skipTest("the loaded library predates vae_model_set_threads")
        m, x = self.model, self.x
        self.assertEqual(m.threads, 1)
        # A deadlock in the worker pool would otherwise hang the whole run:
        # print where it hangs and exit instead.
        faulthandler.dump_traceback_later(120, exit=True)
        self.addCleanup(faulthandler.cancel_dump_traceback_later)
        with vae.Elbo() as e:
            eps = self.rng.normal(4 * L)
            want = e.forward_backward(m, x, eps=eps)
            grads = m.grads().tolist()
            m.zero_grads()
            m.threads = 2
            self.assertEqual(m.threads, 2)
            self.assertEqual(e.forward_backward(m, x, eps=eps), want)
            self.assertTrue(any(m.grads()))
            self.assertEqual(len(m.grads().tolist()), len(grads))
        with self.assertRaises(vae.InvalidArgument):
            m.set_threads(0)
        with self.assertRaises(vae.InvalidArgument):
            m.set_threads(65)
        with vae.Model(D, L) as unbuilt:
            with self.assertRaises(vae.StateError):
                unbuilt.set_threads(2)

    def test_log_likelihood(self):
        ll = self.model.log_likelihood(self.x, 8, self.rng)
        self.assertEqual((ll.typecode, len(ll)), ("d", 4))
        self.assertTrue(all(v < 0 and math.isfinite(v) for v in ll))


class LayerTest(unittest.TestCase):
    def test_standalone_dense(self):
        with vae.Layer.dense(3, 2, vae.ACT_IDENTITY) as layer, vae.Rng(1) as rng:
            self.assertEqual((layer.input_size, layer.output_size), (3, 2))
            self.assertIsNone(layer.owner)
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
            with vae.Rng(2) as rng, vae.Elbo() as e, vae.Optimizer.adam() as opt:
                x = rng.uniform(3 * 64)
                losses = [e.forward_backward(m, x, rng=rng).loss for _ in range(2)
                          if opt.step(m) is None]
                self.assertTrue(all(math.isfinite(v) for v in losses))
            self.assertEqual(len(conv.params()), 4 * 1 * 4 * 4 + 4)
        with self.assertRaises(vae.ShapeError) as cm:
            vae.Layer.conv2d(1, 2, 2, 1, 5)
        self.assertIn("vae_layer_conv2d_create", cm.exception.message)

    def test_ownership_transfer(self):
        m = vae.Model(4, 2)
        enc = vae.Layer.dense(4, 3, "tanh")
        m.add_encoder_layer(enc)
        self.assertIs(enc.owner, m)
        with self.assertRaises(vae.StateError):
            enc.params()  # its parameters move at build
        with self.assertRaises(vae.InvalidArgument):
            m.add_decoder_layer(enc)  # already owned
        dec = vae.Layer.dense(2, 4)
        m.add_decoder_layer(dec)
        m.build(3)
        # The model drives its layers; their parameters are views into the slab.
        with self.assertRaises(vae.StateError):
            enc.forward([0.0] * 4)
        self.assertEqual(enc.params().tolist(), m.params()[:4 * 3 + 3].tolist())
        enc.close()   # only detaches: the model still owns and frees it
        self.assertTrue(enc.closed)
        self.assertEqual(len(m.reconstruct([0.5] * 4)), 4)
        late = vae.Layer.dense(4, 4)
        with self.assertRaises(vae.StateError):
            m.add_encoder_layer(late)  # after build; the caller keeps the layer
        self.assertIsNone(late.owner)
        self.assertEqual(len(late.forward([1.0] * 4)), 4)
        late.close()
        view = dec.params()
        m.close()
        self.assertTrue(dec.closed)
        with self.assertRaises(vae.InvalidArgument):
            dec.input_size
        with self.assertRaises(ValueError):
            view[0]
        dec.close()
        dec.close()

    def test_owner_collected(self):
        m = vae.Model(4, 2)
        dec = vae.Layer.dense(2, 4)
        m.add_decoder_layer(dec)
        del m
        gc.collect()
        with self.assertRaises(vae.InvalidArgument) as cm:
            dec.output_size
        self.assertIn("closed", str(cm.exception))


class LifetimeTest(unittest.TestCase):
    def test_close_twice_and_closed_use(self):
        cases = [(vae.Rng(1), lambda o: o.uniform(3)),
                 (vae.Model.mlp(4, [3], 2), lambda o: o.input_dim),
                 (vae.Layer.dense(2, 2), lambda o: o.output_size),
                 (vae.Elbo(), lambda o: setattr(o, "beta", 2.0)),
                 (vae.Optimizer.sgd(0.1), lambda o: o.set_lr(0.2)),
                 (vae.Dataset.from_floats([0.5] * 4, dim=2), lambda o: o.count)]
        for obj, use in cases:
            use(obj)
            self.assertFalse(obj.closed)
            obj.close()
            self.assertTrue(obj.closed)
            obj.close()
            with self.assertRaises(vae.InvalidArgument) as cm:
                use(obj)
            self.assertIn("closed", cm.exception.message)
            self.assertIn("closed", repr(obj))

    def test_closed_argument(self):
        rng = vae.Rng(1)
        rng.close()
        with vae.Model.mlp(4, [3], 2) as m:
            with self.assertRaises(vae.InvalidArgument):
                m.sample(rng, 1)

    def test_with_statement(self):
        with vae.Rng(3) as rng:
            self.assertFalse(rng.closed)
        self.assertTrue(rng.closed)
        with self.assertRaises(vae.InvalidArgument):
            with rng:
                pass

    def test_garbage_collection_frees(self):
        for _ in range(200):
            m = vae.Model.mlp(8, [4], 2)
            m.params()
            layer = vae.Layer.dense(3, 3)
            layer.params()
            vae.Dataset.from_floats([0.0] * 8, dim=4)
        del m, layer
        gc.collect()

    def test_direct_construction_refused(self):
        for cls in (vae.Layer, vae.Optimizer, vae.Dataset):
            with self.assertRaises(TypeError):
                cls()


class ErrorTest(unittest.TestCase):
    def setUp(self):
        self.rng = vae.Rng(5)
        self.model = vae.Model.mlp(D, [8], L, seed=1)
        self.elbo = vae.Elbo()
        self.x = self.rng.uniform(2 * D)

    def tearDown(self):
        for obj in (self.elbo, self.model, self.rng):
            obj.close()

    def assertVaeError(self, cls, func, *args, **kwargs):
        with self.assertRaises(cls) as cm:
            func(*args, **kwargs)
        exc = cm.exception
        self.assertIs(type(exc), cls)
        self.assertTrue(exc.message, "empty message")
        self.assertIn(exc.message, str(exc))
        self.assertEqual(exc.strerror, vae.lib.vae_strerror(exc.code).decode())
        return exc

    def test_zero_sizes(self):
        for func, args in ((vae.Model, (0, 2)), (vae.Model, (4, 0)),
                           (vae.Layer.dense, (0, 3)), (vae.Model.mlp, (4, [0], 2)),
                           (vae.Layer.conv2d, (1, 0, 8, 1, 3))):
            exc = self.assertVaeError(vae.InvalidArgument, func, *args)
            self.assertTrue(exc.message.startswith("vae_"), exc.message)
        self.assertVaeError(vae.InvalidArgument, self.model.encode, [])
        self.assertVaeError(vae.InvalidArgument, self.model.sample, self.rng, 0)
        self.assertVaeError(vae.InvalidArgument, self.model.reserve, 0)
        self.assertVaeError(vae.InvalidArgument, self.model.log_likelihood, self.x, 0, self.rng)
        self.assertVaeError(vae.InvalidArgument, vae.Dataset.from_floats, [], dim=D)
        self.assertVaeError(vae.InvalidArgument, vae.Dataset.from_floats, self.x, dim=0)
        with vae.Dataset.from_floats(self.x, dim=D) as ds, vae.Optimizer.adam() as opt:
            self.assertVaeError(vae.InvalidArgument, vae.train_epoch, self.model, self.elbo,
                                opt, ds, self.rng, batch_size=0)
            self.assertVaeError(vae.InvalidArgument, vae.evaluate_dataset, self.model,
                                self.elbo, ds, self.rng, batch_size=0)

    def test_out_of_range_arguments(self):
        self.assertVaeError(vae.InvalidArgument, vae.Layer.dense, 3, 3, 99)
        self.assertVaeError(vae.InvalidArgument, vae.Layer.dense, 3, 3, "swish")
        self.assertVaeError(vae.InvalidArgument, vae.Model, 4, 2, 7)
        self.assertVaeError(vae.InvalidArgument, vae.Rng, -1)
        self.assertVaeError(vae.InvalidArgument, vae.Rng, 1 << 64)
        self.assertVaeError(vae.InvalidArgument, self.model.sample, self.rng, -3)
        self.assertVaeError(vae.InvalidArgument, vae.Optimizer.adam, 0.0)
        self.assertVaeError(vae.InvalidArgument, vae.Optimizer.adam, 1e-3, 1.5)
        self.assertVaeError(vae.InvalidArgument, vae.Optimizer.sgd, float("nan"))
        self.assertVaeError(vae.InvalidArgument, setattr, self.elbo, "beta", -1.0)
        self.assertEqual(self.elbo.beta, 1.0)
        self.assertVaeError(vae.InvalidArgument, setattr, self.elbo, "objective", 5)
        self.assertVaeError(vae.InvalidArgument, self.model.set_gaussian_sigma, 0.0)
        with vae.Optimizer.sgd(0.1) as opt:
            self.assertVaeError(vae.InvalidArgument, setattr, opt, "lr", -1.0)
            self.assertVaeError(vae.InvalidArgument, opt.clip, float("inf"))
            opt.lr = 0.5
            self.assertEqual(opt.lr, 0.5)
        # Bernoulli data must lie in [0, 1].
        exc = self.assertVaeError(vae.InvalidArgument, self.elbo.forward_backward, self.model,
                                  [2.0] * D, rng=self.rng)
        self.assertIn("[0, 1]", exc.message)

    def test_null_like_misuse(self):
        exc = self.assertVaeError(vae.InvalidArgument, self.elbo.forward_backward, self.model,
                                  self.x)  # neither eps nor rng
        self.assertIn("NULL", exc.message)
        self.assertVaeError(vae.InvalidArgument, self.model.sample, None, 2)
        self.assertVaeError(vae.InvalidArgument, self.elbo.evaluate, None, self.x)
        self.assertVaeError(vae.InvalidArgument, self.model.encode, None)
        with vae.Optimizer.adam() as opt:
            self.assertVaeError(vae.InvalidArgument, opt.step, None)
            with vae.Dataset.from_floats(self.x, dim=D) as ds:
                self.assertVaeError(vae.InvalidArgument, vae.train_epoch, self.model,
                                    self.elbo, opt, ds, None)
                # evaluate_dataset takes a NULL rng: the ELBO then needs it.
                self.assertVaeError(vae.InvalidArgument, vae.evaluate_dataset, self.model,
                                    self.elbo, ds, None)
        with self.assertRaises(TypeError):
            self.model.sample(self.elbo, 2)  # a handle of the wrong type
        with self.assertRaises(TypeError):
            self.model.add_encoder_layer(self.rng)

    def test_wrong_buffers(self):
        m = self.model
        exc = self.assertVaeError(vae.ShapeError, m.encode, self.x[:-1])
        self.assertIsInstance(exc, ValueError)
        self.assertVaeError(vae.ShapeError, m.encode, self.x, n=3)
        self.assertVaeError(vae.ShapeError, m.decode, [0.0] * (L + 1))
        self.assertVaeError(vae.ShapeError, m.sample, self.rng, 2,
                            out=array.array("f", [0.0] * (2 * D - 1)))
        self.assertVaeError(vae.ShapeError, m.encode, self.x, mu=array.array("f", [0.0]))
        self.assertVaeError(vae.ShapeError, self.elbo.forward_backward, m, self.x,
                            eps=[0.0] * L)
        self.assertVaeError(vae.ShapeError, self.rng.normal, 3, out=array.array("f", [0.0]))
        with self.assertRaises(TypeError):
            m.encode(array.array("d", self.x))  # float64
        with self.assertRaises(TypeError):
            m.encode(bytes(4 * D))
        with self.assertRaises(TypeError):
            m.encode("abc")
        with self.assertRaises(TypeError):
            m.sample(self.rng, 1, out=bytes(4 * D))  # read-only
        with self.assertRaises(TypeError):
            m.encode([[0.5] * D, ["a"] * D])

    def test_numeric(self):
        bad = array.array("f", self.x)
        bad[D + 3] = float("nan")
        exc = self.assertVaeError(vae.NumericError, self.model.encode, bad)
        self.assertIn("x[1][3]", exc.message)
        self.assertIsInstance(exc, ArithmeticError)
        self.assertVaeError(vae.NumericError, self.elbo.forward_backward, self.model, bad,
                            rng=self.rng)
        self.assertVaeError(vae.NumericError, self.model.decode, [float("inf")] * L)
        self.assertVaeError(vae.NumericError, vae.Dataset.from_floats, bad, dim=D)
        eps = [0.0] * (2 * L)
        eps[1] = float("nan")
        self.assertVaeError(vae.NumericError, self.elbo.evaluate, self.model, self.x, eps=eps)
        grads = self.model.grads()
        grads[0] = float("inf")
        with vae.Optimizer.adam() as opt:
            before = self.model.params().tolist()
            self.assertVaeError(vae.NumericError, opt.step, self.model)
            self.assertEqual(self.model.params().tolist(), before)

    def test_state(self):
        with vae.Model(D, L) as m, vae.Optimizer.adam() as opt:
            self.assertFalse(m.built)
            for func, args in ((m.encode, (self.x,)), (m.reconstruct, (self.x,)),
                               (m.sample, (self.rng, 1)), (m.reserve, (4,)),
                               (m.save_mem, ()), (m.zero_grads, ()), (m.params, ()),
                               (opt.step, (m,)),
                               (self.elbo.forward_backward, (m, self.x, None, None, self.rng))):
                exc = self.assertVaeError(vae.StateError, func, *args)
                self.assertIsInstance(exc, RuntimeError)
            exc = self.assertVaeError(vae.ShapeError, m.build)  # no decoder
            self.assertIn("decoder", exc.message)
            m.add_decoder_layer(vae.Layer.dense(L, D))
            m.build()
            self.assertVaeError(vae.StateError, m.build)
            with tempfile.TemporaryDirectory() as tmp:
                self.assertVaeError(vae.StateError, vae.Model(D, L).save,
                                    os.path.join(tmp, "x.vae"))
        with vae.Model(D, L) as m:
            m.add_encoder_layer(vae.Layer.dense(D + 1, 4))
            m.add_decoder_layer(vae.Layer.dense(L, D))
            exc = self.assertVaeError(vae.ShapeError, m.build)
            self.assertIn("encoder layer 0", exc.message)

    def test_optimizer_binds_to_one_model(self):
        with vae.Optimizer.adam() as opt, vae.Model.mlp(D, [8], L) as other:
            self.elbo.forward_backward(self.model, self.x, rng=self.rng)
            opt.step(self.model)
            self.elbo.forward_backward(other, self.x, rng=self.rng)
            self.assertVaeError(vae.StateError, opt.step, other)
            self.model.close()
            # A new model of the same layout, likely at the closed one's address.
            with vae.Model.mlp(D, [8], L, seed=1) as again:
                self.elbo.forward_backward(again, self.x, rng=self.rng)
                exc = self.assertVaeError(vae.StateError, opt.step, again)
                self.assertIn("another model", exc.message)
                with vae.Optimizer.sgd(lr=0.1) as fresh:
                    fresh.step(again)

    def test_corrupted_bytes(self):
        data = bytearray(self.model.save_mem())
        self.assertVaeError(vae.FormatError, vae.Model.load_mem, b"")
        self.assertVaeError(vae.FormatError, vae.Model.load_mem, b"not a model at all")
        self.assertVaeError(vae.FormatError, vae.Model.load_mem, data[:len(data) // 2])
        damaged = bytearray(data)
        damaged[len(damaged) // 2] ^= 0x40
        exc = self.assertVaeError(vae.FormatError, vae.Model.load_mem, damaged)
        self.assertIsInstance(exc, ValueError)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "damaged.vae")
            with open(path, "wb") as f:
                f.write(damaged)
            self.assertVaeError(vae.FormatError, vae.Model.load, path)

    def test_missing_files(self):
        with tempfile.TemporaryDirectory() as tmp:
            missing = os.path.join(tmp, "nope", "model.vae")
            exc = self.assertVaeError(vae.VaeIOError, vae.Model.load, missing)
            self.assertIsInstance(exc, OSError)
            self.assertIn("nope", exc.message)
            self.assertVaeError(vae.VaeIOError, self.model.save, missing)
            self.assertVaeError(vae.VaeIOError, vae.Dataset.load_idx, missing)
        self.assertVaeError(vae.InvalidArgument, self.model.save, "")
        with self.assertRaises(TypeError):
            self.model.save(42)

    def test_dataset_errors(self):
        with vae.Dataset.from_floats(self.x, dim=D) as ds:
            self.assertFalse(ds.has_labels)
            self.assertVaeError(vae.StateError, ds.label, 0)
            self.assertVaeError(vae.StateError, ds.filter_label, 1)
            self.assertVaeError(vae.InvalidArgument, ds.subset, [0, 2])
            self.assertVaeError(vae.InvalidArgument, ds.subset, [])
            self.assertVaeError(vae.InvalidArgument, ds.range, 1, 2)
            self.assertVaeError(vae.InvalidArgument, ds.batch, [0], binarize=True)
            with vae.Model.mlp(D + 1, [4], 2) as wrong, vae.Optimizer.adam() as opt:
                self.assertVaeError(vae.ShapeError, vae.train_epoch, wrong, self.elbo, opt, ds,
                                    self.rng)
        self.assertVaeError(vae.ShapeError, vae.Dataset.from_floats, self.x, dim=D,
                            labels=[1])
        with vae.Dataset.from_floats(self.x, dim=D, labels=[3, 3]) as ds:
            self.assertVaeError(vae.InvalidArgument, ds.filter_label, 3, keep=False)

    def test_last_error_is_per_thread(self):
        messages = []

        def other():
            try:
                vae.Model(0, 1)
            except vae.InvalidArgument as exc:
                messages.append(exc.message)

        with self.assertRaises(vae.NumericError) as cm:
            self.model.decode([float("nan")] * L)
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        self.assertIn("vae_model_create", messages[0])
        self.assertIn("vae_model_decode", vae.lib.vae_last_error().decode())
        self.assertIn("vae_model_decode", cm.exception.message)


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


class TrainingTest(unittest.TestCase):
    def setUp(self):
        self.rng = vae.Rng(11)
        self.model = vae.Model.mlp(D, [8], L, seed=2)
        self.elbo = vae.Elbo()
        self.opt = vae.Optimizer.adam(1e-2)
        self.ds = vae.Dataset.from_floats(self.rng.uniform(40 * D), dim=D)

    def tearDown(self):
        for obj in (self.ds, self.opt, self.elbo, self.model, self.rng):
            obj.close()

    def epoch(self, **kwargs):
        return vae.train_epoch(self.model, self.elbo, self.opt, self.ds, self.rng,
                               batch_size=8, **kwargs)

    def test_progress_and_stats(self):
        calls = []
        st = self.epoch(progress=lambda done, total, loss: calls.append((done, total, loss)))
        self.assertEqual([c[:2] for c in calls], [(8, 40), (16, 40), (24, 40), (32, 40),
                                                  (40, 40)])
        self.assertEqual((st.samples, st.steps), (40, 5))
        self.assertEqual(calls[-1][2], st.loss)
        self.assertGreaterEqual(st.seconds, 0.0)
        self.assertAlmostEqual(st.loss, st.recon + st.kl, places=9)
        first = st.loss
        for _ in range(5):
            st = self.epoch()
        self.assertLess(st.loss, first)
        ev = vae.evaluate_dataset(self.model, self.elbo, self.ds, self.rng, per_sample=True)
        self.assertEqual(len(ev.per_sample), 40)
        self.assertAlmostEqual(sum(ev.per_sample) / 40, ev.loss, places=9)

    def test_callback_cancels(self):
        calls = []

        def stop_after_two(done, total, loss):
            calls.append(done)
            return len(calls) == 2

        exc = None
        with self.assertRaises(vae.Cancelled) as cm:
            self.epoch(progress=stop_after_two)
        exc = cm.exception
        self.assertEqual(calls, [8, 16])
        self.assertEqual((exc.stats.samples, exc.stats.steps), (16, 2))
        self.assertIn("progress callback", exc.message)
        self.assertEqual(exc.code, vae.ERR_CANCELLED)
        self.assertEqual(self.epoch().samples, 40)  # still usable

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
        with self.assertRaises(vae.NumericError) as cm:
            self.epoch(progress=lambda *args: calls.append(args))
        self.assertEqual(calls, [])
        self.assertIn("not finite", cm.exception.message)


if __name__ == "__main__":
    unittest.main()
