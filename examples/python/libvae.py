"""Python binding of libvae over ctypes (standard library only, Python >= 3.9).

The shared library is found, in order, through:

  1. the environment variable LIBVAE_PATH: the library file itself, or a
     directory holding libvae.so.0.1 / libvae.so (nothing else is tried when
     it is set);
  2. ctypes.util.find_library("vae");
  3. the names "libvae.so.0.1" and "libvae.so" (the dynamic loader's search
     path, e.g. LD_LIBRARY_PATH).

Import fails with LibraryNotFoundError (an ImportError) when none loads, and
with VersionMismatchError when the library's MAJOR.MINOR differs from the
header this module mirrors (HEADER_VERSION).

Every C status becomes an exception: VaeError(code, message), with
.code, .strerror (vae_strerror(code)) and .message (vae_last_error(), or a
message of this module when the check happens in Python), and one subclass
per status code (InvalidArgument, ShapeError, OutOfMemory, VaeIOError,
FormatError, NumericError, StateError, Cancelled). Each subclass also derives
from the matching built-in exception (ValueError, MemoryError, OSError,
ArithmeticError, RuntimeError), so generic handlers work too.

Objects own their C handles and free them deterministically with close(), a
with-statement, or, as a fallback, when garbage-collected. Closing twice is
harmless; using a closed object raises InvalidArgument (never passes NULL).

Float buffers: inputs are any object supporting the buffer protocol with
float32 items ("f"), such as array.array("f"), a memoryview, or a float32
numpy array, or else a flat sequence of numbers or a sequence of rows.
C-contiguous writable buffers are passed without a copy. Outputs are
array.array("f") (array.array("d") for per-sample losses), or are written
into an `out=` buffer (writable, C-contiguous, float32, exact size). Sizes are
checked here before the call (ShapeError, a ValueError).

Borrowed memory: Model.params()/grads() and Layer.params()/grads() return
memoryviews over the library's own memory, without copying. They are valid
only while the owning object is open (and, for a standalone layer, until it
is added to a model). close() releases the views it handed out, so a stale
view raises ValueError instead of reading freed memory; views derived from
them (slices, numpy arrays) are not tracked and must not outlive the owner.

Thread safety follows the C library: one object is used by one thread at a
time. ctypes releases the GIL during calls.
"""

import array
import collections
import ctypes
import ctypes.util
import itertools
import operator
import os
import sys
import weakref
from ctypes import (CFUNCTYPE, POINTER, Structure, byref, c_char_p, c_double, c_float, c_int,
                    c_int32, c_size_t, c_uint, c_uint64, c_void_p)

__all__ = [
    "HEADER_VERSION", "library_version", "library_path",
    "VaeError", "InvalidArgument", "ShapeError", "OutOfMemory", "VaeIOError", "FormatError",
    "NumericError", "StateError", "Cancelled", "LibraryNotFoundError", "VersionMismatchError",
    "Rng", "Layer", "Model", "Elbo", "Optimizer", "Dataset", "Losses", "EpochStats",
    "train_epoch", "evaluate_dataset",
    "ACT_IDENTITY", "ACT_RELU", "ACT_LEAKY_RELU", "ACT_TANH", "ACT_SIGMOID", "ACT_SOFTPLUS",
    "ACT_ELU", "LIKELIHOOD_BERNOULLI", "LIKELIHOOD_GAUSSIAN", "OBJECTIVE_ELBO",
    "OBJECTIVE_AUTOENCODER",
]

# ---------------------------------------------------------------------------
# Constants mirrored from include/vae/vae.h
# ---------------------------------------------------------------------------

HEADER_VERSION_MAJOR = 0
HEADER_VERSION_MINOR = 1
HEADER_VERSION_PATCH = 0
HEADER_VERSION_NUMBER = (HEADER_VERSION_MAJOR * 10000 + HEADER_VERSION_MINOR * 100
                         + HEADER_VERSION_PATCH)
HEADER_VERSION = "%d.%d.%d" % (HEADER_VERSION_MAJOR, HEADER_VERSION_MINOR, HEADER_VERSION_PATCH)

OK = 0
ERR_INVALID = -1
ERR_SHAPE = -2
ERR_NOMEM = -3
ERR_IO = -4
ERR_FORMAT = -5
ERR_NUMERIC = -6
ERR_STATE = -7
ERR_CANCELLED = -8

ACT_IDENTITY = 0
ACT_RELU = 1
ACT_LEAKY_RELU = 2
ACT_TANH = 3
ACT_SIGMOID = 4
ACT_SOFTPLUS = 5
ACT_ELU = 6

LIKELIHOOD_BERNOULLI = 0
LIKELIHOOD_GAUSSIAN = 1

OBJECTIVE_ELBO = 0
OBJECTIVE_AUTOENCODER = 1

_ACTIVATIONS = {"identity": ACT_IDENTITY, "linear": ACT_IDENTITY, "relu": ACT_RELU,
                "leaky_relu": ACT_LEAKY_RELU, "tanh": ACT_TANH, "sigmoid": ACT_SIGMOID,
                "softplus": ACT_SOFTPLUS, "elu": ACT_ELU}
_LIKELIHOODS = {"bernoulli": LIKELIHOOD_BERNOULLI, "gaussian": LIKELIHOOD_GAUSSIAN}
_OBJECTIVES = {"elbo": OBJECTIVE_ELBO, "autoencoder": OBJECTIVE_AUTOENCODER}

# ---------------------------------------------------------------------------
# Exceptions
# ---------------------------------------------------------------------------


class LibraryNotFoundError(ImportError):
    """The libvae shared library could not be loaded."""


class VersionMismatchError(ImportError):
    """The loaded library's MAJOR.MINOR differs from HEADER_VERSION."""


class VaeError(Exception):
    """A libvae status code other than VAE_OK.

    code     -- the negative status code (VAE_ERR_*)
    strerror -- vae_strerror(code), a static description of the code
    message  -- vae_last_error() of the failed call, or the message of a
                check made by this module before calling the library
    """

    code = None

    def __init__(self, code, message=None):
        message = message if message is not None else _last_error()
        super().__init__(message)
        # After the base __init__: OSError's would reset strerror.
        self.code = code
        self.strerror = _strerror(code)
        self.message = message

    def __str__(self):
        if self.message:
            return "%s (%s)" % (self.message, self.strerror)
        return self.strerror

    def __repr__(self):
        return "%s(%r, %r)" % (type(self).__name__, self.code, self.message)

    def __reduce__(self):
        return (type(self), (self.code, self.message))


class InvalidArgument(VaeError, ValueError):
    """VAE_ERR_INVALID: a bad argument (NULL, zero size, out of range), or a closed object."""


class ShapeError(VaeError, ValueError):
    """VAE_ERR_SHAPE: sizes that do not fit together (also buffer sizes checked here)."""


class OutOfMemory(VaeError, MemoryError):
    """VAE_ERR_NOMEM: an allocation failed."""


class VaeIOError(VaeError, OSError):
    """VAE_ERR_IO: a file could not be opened, read or written."""


class FormatError(VaeError, ValueError):
    """VAE_ERR_FORMAT: a file or buffer is not in the expected format."""


class NumericError(VaeError, ArithmeticError):
    """VAE_ERR_NUMERIC: a NaN or infinity in an input, a loss or a gradient."""


class StateError(VaeError, RuntimeError):
    """VAE_ERR_STATE: a call out of order (e.g. training an unbuilt model)."""


class Cancelled(VaeError):
    """VAE_ERR_CANCELLED: the progress callback asked to stop.

    Raised by train_epoch(); .stats holds the EpochStats of the partial epoch.
    """

    stats = None


_EXCEPTIONS = {
    ERR_INVALID: InvalidArgument,
    ERR_SHAPE: ShapeError,
    ERR_NOMEM: OutOfMemory,
    ERR_IO: VaeIOError,
    ERR_FORMAT: FormatError,
    ERR_NUMERIC: NumericError,
    ERR_STATE: StateError,
    ERR_CANCELLED: Cancelled,
}


def _error(code, message=None):
    """The exception object for a status code (VaeError for unknown codes)."""
    return _EXCEPTIONS.get(code, VaeError)(code, message)


# ---------------------------------------------------------------------------
# Loading the library
# ---------------------------------------------------------------------------

_SONAMES = ("libvae.so.%d.%d" % (HEADER_VERSION_MAJOR, HEADER_VERSION_MINOR), "libvae.so")


def _candidates():
    env = os.environ.get("LIBVAE_PATH")
    if env:
        if os.path.isdir(env):
            return [os.path.join(env, name) for name in _SONAMES], True
        return [env], True
    names = []
    found = ctypes.util.find_library("vae")
    if found:
        names.append(found)
    names.extend(name for name in _SONAMES if name not in names)
    return names, False


def _load_library():
    names, from_env = _candidates()
    failures = []
    for name in names:
        try:
            return ctypes.CDLL(name), name
        except OSError as exc:
            failures.append("%s: %s" % (name, exc))
    where = ("LIBVAE_PATH=%r" % os.environ.get("LIBVAE_PATH")) if from_env else (
        "ctypes.util.find_library('vae') and the names %s" % ", ".join(_SONAMES))
    raise LibraryNotFoundError(
        "libvae shared library not found (looked at %s). Build it (cmake --build build) and "
        "set LIBVAE_PATH to the library file, e.g. build/libvae.so.0.1, or install it where "
        "the dynamic loader finds it.\n  %s" % (where, "\n  ".join(failures)))


_lib, _lib_name = _load_library()

#: The raw ctypes library with every exported function declared. Functions
#: that return a status raise VaeError subclasses instead of returning it.
lib = _lib

# ---------------------------------------------------------------------------
# C types
# ---------------------------------------------------------------------------

#: int (*vae_progress_fn)(void *payload, size_t done, size_t total, double running_loss)
ProgressFn = CFUNCTYPE(c_int, c_void_p, c_size_t, c_size_t, c_double)


class TrainOptions(Structure):
    """struct vae_train_options."""
    _fields_ = [
        ("size", c_size_t),
        ("batch_size", c_size_t),
        ("shuffle", c_int),
        ("binarize", c_int),
        ("progress", ProgressFn),
        ("payload", c_void_p),
    ]


class EpochStatsStruct(Structure):
    """struct vae_epoch_stats."""
    _fields_ = [
        ("size", c_size_t),
        ("loss", c_double),
        ("recon", c_double),
        ("kl", c_double),
        ("seconds", c_double),
        ("samples", c_size_t),
        ("steps", c_size_t),
    ]


_FloatP = POINTER(c_float)
_DoubleP = POINTER(c_double)
_SizeP = POINTER(c_size_t)
_HandleP = POINTER(c_void_p)  # T **out
_H = c_void_p                 # opaque handles

# name: (restype, argtypes); _STATUS marks a function returning an int status,
# None a void function. Every symbol of lib/libvae.map is here.
_STATUS = object()
_SIGNATURES = {
    "vae_version_number": (c_uint, []),
    "vae_version_string": (c_char_p, []),
    "vae_strerror": (c_char_p, [c_int]),
    "vae_last_error": (c_char_p, []),

    "vae_rng_create": (_STATUS, [_HandleP, c_uint64]),
    "vae_rng_free": (None, [_H]),
    "vae_rng_normal": (_STATUS, [_H, _FloatP, c_size_t]),
    "vae_rng_uniform": (_STATUS, [_H, _FloatP, c_size_t]),

    "vae_layer_dense_create": (_STATUS, [_HandleP, c_size_t, c_size_t, c_int]),
    "vae_layer_conv2d_create": (_STATUS, [_HandleP, c_size_t, c_size_t, c_size_t, c_size_t,
                                          c_size_t, c_size_t, c_size_t, c_size_t, c_int]),
    "vae_layer_conv2d_transpose_create": (_STATUS, [_HandleP, c_size_t, c_size_t, c_size_t,
                                                    c_size_t, c_size_t, c_size_t, c_size_t,
                                                    c_size_t, c_size_t, c_int]),
    "vae_layer_free": (None, [_H]),
    "vae_layer_init": (_STATUS, [_H, _H]),
    "vae_layer_forward": (_STATUS, [_H, _FloatP, c_size_t, _FloatP]),
    "vae_layer_backward": (_STATUS, [_H, _FloatP, _FloatP]),
    "vae_layer_params": (_FloatP, [_H, _SizeP]),
    "vae_layer_grads": (_FloatP, [_H, _SizeP]),
    "vae_layer_input_size": (c_size_t, [_H]),
    "vae_layer_output_size": (c_size_t, [_H]),

    "vae_model_create": (_STATUS, [_HandleP, c_size_t, c_size_t, c_int]),
    "vae_model_free": (None, [_H]),
    "vae_model_add_encoder_layer": (_STATUS, [_H, _H]),
    "vae_model_add_decoder_layer": (_STATUS, [_H, _H]),
    "vae_model_build": (_STATUS, [_H, c_uint64]),
    "vae_model_create_mlp": (_STATUS, [_HandleP, c_size_t, _SizeP, c_size_t, c_size_t, c_int,
                                       c_int, c_uint64]),
    "vae_model_reserve": (_STATUS, [_H, c_size_t]),
    "vae_model_set_threads": (_STATUS, [_H, c_size_t]),
    "vae_model_threads": (c_size_t, [_H]),
    "vae_model_set_gaussian_sigma": (_STATUS, [_H, c_float]),
    "vae_model_input_dim": (c_size_t, [_H]),
    "vae_model_latent_dim": (c_size_t, [_H]),
    "vae_model_likelihood": (c_int, [_H]),
    "vae_model_params": (_FloatP, [_H, _SizeP]),
    "vae_model_grads": (_FloatP, [_H, _SizeP]),
    "vae_model_zero_grads": (_STATUS, [_H]),
    "vae_model_encode": (_STATUS, [_H, _FloatP, c_size_t, _FloatP, _FloatP]),
    "vae_model_decode": (_STATUS, [_H, _FloatP, c_size_t, _FloatP]),
    "vae_model_sample": (_STATUS, [_H, _H, c_size_t, _FloatP]),
    "vae_model_reconstruct": (_STATUS, [_H, _FloatP, c_size_t, _FloatP]),

    "vae_elbo_create": (_STATUS, [_HandleP]),
    "vae_elbo_free": (None, [_H]),
    "vae_elbo_set_beta": (_STATUS, [_H, c_float]),
    "vae_elbo_set_objective": (_STATUS, [_H, c_int]),
    "vae_elbo_forward_backward": (_STATUS, [_H, _H, _FloatP, c_size_t, _FloatP, _H, _DoubleP,
                                            _DoubleP, _DoubleP]),
    "vae_elbo_evaluate": (_STATUS, [_H, _H, _FloatP, c_size_t, _FloatP, _H, _DoubleP, _DoubleP,
                                    _DoubleP, _DoubleP]),

    "vae_optimizer_adam_create": (_STATUS, [_HandleP, c_float, c_float, c_float, c_float,
                                            c_float]),
    "vae_optimizer_sgd_create": (_STATUS, [_HandleP, c_float, c_float, c_int, c_float]),
    "vae_optimizer_free": (None, [_H]),
    "vae_optimizer_set_lr": (_STATUS, [_H, c_float]),
    "vae_optimizer_set_clip_norm": (_STATUS, [_H, c_float]),
    "vae_optimizer_step": (_STATUS, [_H, _H]),

    "vae_dataset_load_idx": (_STATUS, [_HandleP, c_char_p, c_char_p]),
    "vae_dataset_from_floats": (_STATUS, [_HandleP, _FloatP, c_size_t, c_size_t,
                                          POINTER(c_int32)]),
    "vae_dataset_free": (None, [_H]),
    "vae_dataset_count": (c_size_t, [_H]),
    "vae_dataset_dim": (c_size_t, [_H]),
    "vae_dataset_image_size": (_STATUS, [_H, _SizeP, _SizeP]),
    "vae_dataset_has_labels": (c_int, [_H]),
    "vae_dataset_label": (_STATUS, [_H, c_size_t, POINTER(c_int32)]),
    "vae_dataset_subset": (_STATUS, [_HandleP, _H, _SizeP, c_size_t]),
    "vae_dataset_filter_label": (_STATUS, [_HandleP, _H, c_int32, c_int]),
    "vae_dataset_batch": (_STATUS, [_H, _SizeP, c_size_t, c_int, _H, _FloatP]),
    "vae_dataset_range": (_STATUS, [_H, c_size_t, c_size_t, _FloatP]),

    "vae_train_options_init": (None, [POINTER(TrainOptions)]),
    "vae_train_epoch": (_STATUS, [_H, _H, _H, _H, _H, POINTER(TrainOptions),
                                  POINTER(EpochStatsStruct)]),
    "vae_evaluate_dataset": (_STATUS, [_H, _H, _H, _H, c_size_t, _DoubleP, _DoubleP, _DoubleP,
                                       _DoubleP]),
    "vae_model_log_likelihood": (_STATUS, [_H, _FloatP, c_size_t, c_size_t, _H, _DoubleP]),

    "vae_model_save": (_STATUS, [_H, c_char_p]),
    "vae_model_load": (_STATUS, [_HandleP, c_char_p]),
    "vae_model_save_mem": (_STATUS, [_H, c_void_p, c_size_t, _SizeP]),
    "vae_model_load_mem": (_STATUS, [_HandleP, c_void_p, c_size_t]),
}


def _strerror(code):
    return _lib.vae_strerror(code).decode("utf-8", "replace")


def _last_error():
    return _lib.vae_last_error().decode("utf-8", "replace")


def _check_status(result, func, arguments):
    # Runs right after the call on the same thread, so vae_last_error() is
    # the message of this call.
    if result != OK:
        raise _error(result)
    return result


def _check_version():
    # Before any other declaration: a library of another version may lack symbols.
    _lib.vae_version_number.restype = c_uint
    _lib.vae_version_number.argtypes = []
    _lib.vae_version_string.restype = c_char_p
    _lib.vae_version_string.argtypes = []
    number = _lib.vae_version_number()
    if number // 100 != HEADER_VERSION_NUMBER // 100:
        raise VersionMismatchError(
            "libvae %s loaded from %s, but this binding mirrors the %d.%d header: the "
            "MAJOR.MINOR versions must agree"
            % (_lib.vae_version_string().decode("ascii", "replace"), _lib_name,
               HEADER_VERSION_MAJOR, HEADER_VERSION_MINOR))


_check_version()

# Added to the 0.1 API after the first symbols; a library built before them
# still loads, and only the methods that need them raise NotImplementedError.
_OPTIONAL = frozenset(("vae_model_set_threads", "vae_model_threads"))
_MISSING = set()

for _name, (_restype, _argtypes) in _SIGNATURES.items():
    try:
        _func = getattr(_lib, _name)
    except AttributeError:
        if _name not in _OPTIONAL:
            raise VersionMismatchError("%s does not export %s: it is not a libvae %d.%d "
                                       "library" % (_lib_name, _name, HEADER_VERSION_MAJOR,
                                                    HEADER_VERSION_MINOR)) from None
        _MISSING.add(_name)
        continue
    _func.argtypes = _argtypes
    if _restype is _STATUS:
        _func.restype = c_int
        _func.errcheck = _check_status
    else:
        _func.restype = _restype
del _name, _restype, _argtypes, _func


def library_version():
    """(number, string) of the library actually loaded, e.g. (100, "0.1.0")."""
    return _lib.vae_version_number(), _lib.vae_version_string().decode("ascii", "replace")


def _require(name):
    if name in _MISSING:
        raise NotImplementedError("the loaded libvae (%s) has no %s; it predates that "
                                  "function" % (_lib_name, name))
    return getattr(_lib, name)


def library_path():
    """The name or path the shared library was loaded from."""
    return _lib_name


def _check_struct_sizes():
    opts = TrainOptions()
    _lib.vae_train_options_init(byref(opts))
    if opts.size != ctypes.sizeof(TrainOptions):
        raise VersionMismatchError(
            "sizeof(vae_train_options) is %d in %s, %d in this binding"
            % (opts.size, _lib_name, ctypes.sizeof(TrainOptions)))


_check_struct_sizes()

# ---------------------------------------------------------------------------
# Argument helpers
# ---------------------------------------------------------------------------

_FLOAT32_FORMATS = ("f", "<f" if sys.byteorder == "little" else ">f", "=f", "@f")
_INT32_FORMATS = ("i", "l", "<i", "<l", "=i", "=l", "@i", "@l") if sys.byteorder == "little" \
    else ("i", "l", ">i", ">l", "=i", "=l", "@i", "@l")
_INT32_TYPECODE = "i" if array.array("i").itemsize == 4 else "l"


def _size(value, name):
    """A non-negative integer that fits a size_t."""
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError("%s must be an integer, not %s" % (name, type(value).__name__)) from None
    if v < 0 or v >= 1 << (8 * ctypes.sizeof(c_size_t)):
        raise InvalidArgument(ERR_INVALID, "%s must be a non-negative size, got %d" % (name, v))
    return v


def _seed(value):
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError("seed must be an integer, not %s" % type(value).__name__) from None
    if not 0 <= v < 1 << 64:
        raise InvalidArgument(ERR_INVALID, "seed must be in [0, 2**64), got %d" % v)
    return v


def _int_enum(value, table, name):
    if isinstance(value, str):
        try:
            return table[value.lower()]
        except KeyError:
            raise InvalidArgument(ERR_INVALID, "unknown %s %r (known: %s)"
                                  % (name, value, ", ".join(sorted(table)))) from None
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError("%s must be an int or a name, not %s"
                        % (name, type(value).__name__)) from None


def _int32(value, name):
    v = operator.index(value)
    if not -(1 << 31) <= v < 1 << 31:
        raise InvalidArgument(ERR_INVALID, "%s %d does not fit an int32" % (name, v))
    return v


def _handle(obj, cls, name, optional=False):
    """The C pointer of obj (an open cls), or None (NULL) when optional and obj is None."""
    if obj is None:
        if optional:
            return None
        raise InvalidArgument(ERR_INVALID, "%s is required, got None" % name)
    if not isinstance(obj, cls):
        raise TypeError("%s must be a %s, not %s" % (name, cls.__name__, type(obj).__name__))
    return obj._p()


class _Floats:
    """A float32 buffer ready for C: .ptr (POINTER(c_float)) and .n (floats).

    Keeps the objects the pointer refers to alive while it exists.
    """

    __slots__ = ("ptr", "n", "obj", "_keep")

    def __init__(self, ptr, n, obj, keep):
        self.ptr = ptr
        self.n = n
        self.obj = obj      # what to hand back to the caller for outputs
        self._keep = keep


def _float_view(obj):
    """memoryview of a float32 buffer, or None when obj has no buffer interface."""
    try:
        mv = memoryview(obj)
    except TypeError:
        return None
    if mv.format not in _FLOAT32_FORMATS or mv.itemsize != 4:
        raise TypeError("expected float32 items (format 'f'), got a buffer of format %r; "
                        "convert it, e.g. array.array('f', ...) or numpy .astype('float32')"
                        % mv.format)
    return mv


def _as_input(obj, name):
    """Read-only float32 input: a buffer (no copy when writable and contiguous) or numbers."""
    if obj is None:
        raise InvalidArgument(ERR_INVALID, "%s is required, got None" % name)
    mv = _float_view(obj)
    if mv is None:
        if isinstance(obj, (str, bytes)):
            raise TypeError("%s must be float32 data, not %s" % (name, type(obj).__name__))
        try:
            data = array.array("f", obj)
        except TypeError:
            # A sequence of rows.
            try:
                data = array.array("f", itertools.chain.from_iterable(obj))
            except TypeError:
                raise TypeError("%s must be a float32 buffer, a sequence of numbers or a "
                                "sequence of rows of numbers" % name) from None
        mv = memoryview(data)
    n = mv.nbytes // 4
    if not mv.c_contiguous:
        mv = memoryview(array.array("f", mv.tobytes()))  # C-order copy
    flat = mv.cast("B") if n else mv
    if n == 0:
        arr = (c_float * 1)()       # a valid pointer; the library rejects the size
    elif flat.readonly:
        arr = (c_float * n).from_buffer_copy(flat)
    else:
        arr = (c_float * n).from_buffer(flat)
    return _Floats(ctypes.cast(arr, _FloatP), n, obj, (arr, flat))


def _as_output(out, n, name):
    """A float32 output of exactly n floats: `out` when given, else a new array('f')."""
    if out is None:
        out = array.array("f", bytes(4 * n))
    mv = _float_view(out)
    if mv is None:
        raise TypeError("%s must be a writable float32 buffer such as array.array('f'), not %s"
                        % (name, type(out).__name__))
    if mv.readonly:
        raise TypeError("%s is a read-only buffer" % name)
    if not mv.c_contiguous:
        raise ValueError("%s must be C-contiguous" % name)
    got = mv.nbytes // 4
    if got != n:
        raise ShapeError(ERR_SHAPE, "%s holds %d floats, %d are needed" % (name, got, n))
    if n == 0:
        arr = (c_float * 1)()
        return _Floats(ctypes.cast(arr, _FloatP), 0, out, (arr,))
    flat = mv.cast("B")
    arr = (c_float * n).from_buffer(flat)
    return _Floats(ctypes.cast(arr, _FloatP), n, out, (arr, flat))


def _batch(buf, dim, n, name):
    """The batch size of buf (n when given) after checking buf.n == n * dim."""
    if n is None:
        if dim == 0 or buf.n % dim:
            raise ShapeError(ERR_SHAPE, "%s holds %d floats, not a multiple of %d"
                             % (name, buf.n, dim))
        return buf.n // dim
    n = _size(n, "n")
    if buf.n != n * dim:
        raise ShapeError(ERR_SHAPE, "%s holds %d floats, %d x %d = %d are needed"
                         % (name, buf.n, n, dim, n * dim))
    return n


def _doubles(n):
    out = array.array("d", bytes(8 * n))
    if n == 0:
        return out, None
    arr = (c_double * n).from_buffer(out)
    return out, (arr, ctypes.cast(arr, _DoubleP))


def _path(path, name="path"):
    if path is None:
        return None
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError("%s must be a str, bytes or os.PathLike, not %s"
                        % (name, type(path).__name__))
    return os.fsencode(path)


def _borrowed_view(ptr, count):
    """A float32 memoryview over `count` floats of library memory at ptr.

    The owner caches it and releases it when the memory goes away (close(),
    garbage collection), so the view does not keep the owner alive: that
    keeps freeing deterministic and avoids reference cycles.
    """
    addr = ctypes.cast(ptr, c_void_p).value
    if not addr or count == 0:
        return None
    arr = (c_float * count).from_address(addr)
    return memoryview(arr).cast("B").cast("f")


def _view_alive(view):
    try:
        view.nbytes
        return True
    except ValueError:
        return False


def _release_views(views):
    for view in views.values():
        try:
            view.release()
        except (BufferError, ValueError):
            pass  # exported further (e.g. numpy): cannot revoke, see the module notes
    views.clear()


# ---------------------------------------------------------------------------
# Handles
# ---------------------------------------------------------------------------


class _Handle:
    """Owner of one C object, freed by close(), a with-statement or __del__."""

    _free = None        # name of the C function that frees the handle

    def __init__(self):
        raise TypeError("use the class methods to create a %s" % type(self).__name__)

    @classmethod
    def _wrap(cls, ptr):
        self = cls.__new__(cls)
        self._ptr = ptr
        self._setup()
        return self

    def _setup(self):
        pass

    @property
    def closed(self):
        return not getattr(self, "_ptr", None)

    def _p(self):
        ptr = getattr(self, "_ptr", None)
        if not ptr:
            raise InvalidArgument(ERR_INVALID, "this %s is closed" % type(self).__name__)
        return ptr

    def close(self):
        """Frees the C object now. Safe to call more than once."""
        ptr = getattr(self, "_ptr", None)
        self._ptr = None
        if ptr:
            getattr(_lib, self._free)(ptr)

    def __enter__(self):
        self._p()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        state = "closed" if self.closed else "at 0x%x" % self._ptr
        return "<libvae.%s %s>" % (type(self).__name__, state)


def _create(func, *args):
    out = c_void_p()
    func(byref(out), *args)
    return out.value


class Rng(_Handle):
    """A seeded xoshiro256** generator: the same seed gives the same stream."""

    _free = "vae_rng_free"

    def __init__(self, seed=0):
        self._ptr = _create(_lib.vae_rng_create, _seed(seed))

    def normal(self, n, out=None):
        """n standard normal draws, as array('f') (or into out)."""
        n = _size(n, "n")
        o = _as_output(out, n, "out")
        _lib.vae_rng_normal(self._p(), o.ptr, n)
        return o.obj

    def uniform(self, n, out=None):
        """n uniform draws in [0, 1), as array('f') (or into out)."""
        n = _size(n, "n")
        o = _as_output(out, n, "out")
        _lib.vae_rng_uniform(self._p(), o.ptr, n)
        return o.obj


class Layer(_Handle):
    """A layer: Layer.dense(), Layer.conv2d() or Layer.conv2d_transpose().

    A new layer belongs to the caller. Once added to a model with
    Model.add_encoder_layer()/add_decoder_layer() the model owns it: closing
    the layer then only detaches this object, and it becomes unusable when the
    model is closed.
    """

    _free = "vae_layer_free"

    def _setup(self):
        self._owner_ref = None  # weakref to the owning Model (no reference cycle)
        self._last_batch = None
        self._views = {}

    @classmethod
    def dense(cls, in_features, out_features, activation=ACT_IDENTITY):
        """y = act(x W^T + b); W is [out][in] then b[out] in params()."""
        return cls._wrap(_create(_lib.vae_layer_dense_create, _size(in_features, "in_features"),
                                 _size(out_features, "out_features"),
                                 _int_enum(activation, _ACTIVATIONS, "activation")))

    @classmethod
    def conv2d(cls, in_channels, in_h, in_w, out_channels, kernel_h, kernel_w=None, stride=1,
               padding=0, activation=ACT_IDENTITY):
        """A 2-D convolution over [in_channels][in_h][in_w] samples (PyTorch's Conv2d)."""
        kernel_w = kernel_h if kernel_w is None else kernel_w
        return cls._wrap(_create(
            _lib.vae_layer_conv2d_create, _size(in_channels, "in_channels"),
            _size(in_h, "in_h"), _size(in_w, "in_w"), _size(out_channels, "out_channels"),
            _size(kernel_h, "kernel_h"), _size(kernel_w, "kernel_w"), _size(stride, "stride"),
            _size(padding, "padding"), _int_enum(activation, _ACTIVATIONS, "activation")))

    @classmethod
    def conv2d_transpose(cls, in_channels, in_h, in_w, out_channels, kernel_h, kernel_w=None,
                         stride=1, padding=0, output_padding=0, activation=ACT_IDENTITY):
        """The transposed convolution (PyTorch's ConvTranspose2d)."""
        kernel_w = kernel_h if kernel_w is None else kernel_w
        return cls._wrap(_create(
            _lib.vae_layer_conv2d_transpose_create, _size(in_channels, "in_channels"),
            _size(in_h, "in_h"), _size(in_w, "in_w"), _size(out_channels, "out_channels"),
            _size(kernel_h, "kernel_h"), _size(kernel_w, "kernel_w"), _size(stride, "stride"),
            _size(padding, "padding"), _size(output_padding, "output_padding"),
            _int_enum(activation, _ACTIVATIONS, "activation")))

    @property
    def owner(self):
        """The Model that owns this layer, or None for a standalone layer."""
        return self._owner_ref() if self._owner_ref is not None else None

    def _owner_gone(self):
        if self._owner_ref is None:
            return False
        model = self._owner_ref()
        return model is None or model.closed

    def _p(self):
        if self._owner_gone():
            raise InvalidArgument(ERR_INVALID, "the Model owning this Layer is closed")
        return super()._p()

    @property
    def closed(self):
        return super().closed or self._owner_gone()

    def _transfer(self, model):
        """Called once the model owns the C layer: never free it from here again."""
        _release_views(self._views)  # its parameters move into the model's slab at build
        self._owner_ref = weakref.ref(model)
        self._last_batch = None

    def close(self):
        """Frees a standalone layer; only detaches a layer owned by a model."""
        _release_views(getattr(self, "_views", {}))
        if getattr(self, "_owner_ref", None) is not None:
            self._ptr = None  # the model frees it
            return
        super().close()

    @property
    def input_size(self):
        return _lib.vae_layer_input_size(self._p())

    @property
    def output_size(self):
        return _lib.vae_layer_output_size(self._p())

    def init(self, rng):
        """Draws weights and biases uniform in +-1/sqrt(fan_in)."""
        _lib.vae_layer_init(self._p(), _handle(rng, Rng, "rng"))

    def forward(self, x, batch=None, out=None):
        """y[batch][out] = layer(x[batch][in]) on a standalone layer."""
        p = self._p()
        xb = _as_input(x, "x")
        batch = _batch(xb, self.input_size, batch, "x")
        o = _as_output(out, batch * self.output_size, "out")
        _lib.vae_layer_forward(p, xb.ptr, batch, o.ptr)
        self._last_batch = batch
        return o.obj

    def backward(self, dy, dx=True):
        """Adds dL/dparams of the last forward() into grads(); returns dx.

        dx=True returns a new array('f'), dx=False or None skips it, and a
        writable float32 buffer receives it.
        """
        p = self._p()
        if self._last_batch is None:
            raise StateError(ERR_STATE, "Layer.backward: no forward() before it")
        batch = self._last_batch
        dyb = _as_input(dy, "dy")
        _batch(dyb, self.output_size, batch, "dy")
        if dx is True:
            dxo = _as_output(None, batch * self.input_size, "dx")
        elif dx is None or dx is False:
            dxo = None
        else:
            dxo = _as_output(dx, batch * self.input_size, "dx")
        _lib.vae_layer_backward(p, dyb.ptr, dxo.ptr if dxo else None)
        return dxo.obj if dxo else None

    def _view(self, kind):
        p = self._p()
        if self._owner_ref is not None and not self.owner.built:
            raise StateError(ERR_STATE, "the parameters of a layer added to a model move into "
                                        "the model's slab at build(); build the model first")
        view = self._views.get(kind)
        if view is not None and _view_alive(view):
            return view
        count = c_size_t()
        func = _lib.vae_layer_params if kind == "params" else _lib.vae_layer_grads
        view = _borrowed_view(func(p, byref(count)), count.value)
        self._views[kind] = view
        return view

    def params(self):
        """Borrowed float32 memoryview of the parameters (W then b); writable.

        Valid while this standalone layer is open and not added to a model,
        or, for a layer owned by a built model, while the model is open.
        """
        return self._view("params")

    def grads(self):
        """Borrowed float32 memoryview of the gradients, same layout as params()."""
        return self._view("grads")


Losses = collections.namedtuple("Losses", "loss recon kl per_sample", defaults=(None,))
Losses.__doc__ = """Mean loss (recon + beta * kl), recon and KL, in nats per sample;
per_sample is an array('d') of each sample's loss when asked for, else None."""

EpochStats = collections.namedtuple("EpochStats", "loss recon kl seconds samples steps")
EpochStats.__doc__ = "What one pass of train_epoch() measured (struct vae_epoch_stats)."


class Model(_Handle):
    """A VAE: Model(input_dim, latent_dim, likelihood) then layers and build(),
    or Model.mlp(...), Model.load(path), Model.load_mem(data)."""

    _free = "vae_model_free"

    def __init__(self, input_dim, latent_dim, likelihood=LIKELIHOOD_BERNOULLI):
        self._ptr = _create(_lib.vae_model_create, _size(input_dim, "input_dim"),
                            _size(latent_dim, "latent_dim"),
                            _int_enum(likelihood, _LIKELIHOODS, "likelihood"))
        self._setup()

    def _setup(self):
        self._layers = []
        self._views = {}

    @classmethod
    def mlp(cls, input_dim, hidden, latent_dim, activation=ACT_RELU,
            likelihood=LIKELIHOOD_BERNOULLI, seed=0):
        """A built symmetric MLP VAE; hidden=[400] gives 784-400-20 with latent_dim=20."""
        hidden = [_size(h, "hidden[%d]" % i) for i, h in enumerate(hidden)]
        harr = (c_size_t * max(len(hidden), 1))(*hidden)
        return cls._wrap(_create(_lib.vae_model_create_mlp, _size(input_dim, "input_dim"),
                                 harr if hidden else None, len(hidden),
                                 _size(latent_dim, "latent_dim"),
                                 _int_enum(activation, _ACTIVATIONS, "activation"),
                                 _int_enum(likelihood, _LIKELIHOODS, "likelihood"),
                                 _seed(seed)))

    def close(self):
        """Frees the model and every layer it owns; their views become invalid."""
        _release_views(getattr(self, "_views", {}))
        for layer in getattr(self, "_layers", ()):
            _release_views(layer._views)  # layer._p() now refuses: its owner is closed
        self._layers = []
        super().close()

    # -- construction --------------------------------------------------------

    def _add(self, func, layer):
        p = self._p()
        if not isinstance(layer, Layer):
            raise TypeError("layer must be a Layer, not %s" % type(layer).__name__)
        if layer._owner_ref is not None:
            raise InvalidArgument(ERR_INVALID, "the layer already belongs to a model")
        func(p, layer._p())     # raises on failure: the caller still owns the layer
        layer._transfer(self)
        self._layers.append(layer)

    def add_encoder_layer(self, layer):
        """Appends a layer to the encoder; on success the model owns it."""
        self._add(_lib.vae_model_add_encoder_layer, layer)

    def add_decoder_layer(self, layer):
        """Appends a layer to the decoder; on success the model owns it."""
        self._add(_lib.vae_model_add_decoder_layer, layer)

    def build(self, seed=0):
        """Checks the shapes, adds the Gaussian head and draws the weights from seed."""
        _lib.vae_model_build(self._p(), _seed(seed))

    def reserve(self, max_batch):
        """Grows the workspace so that steps up to max_batch never allocate."""
        _lib.vae_model_reserve(self._p(), _size(max_batch, "max_batch"))

    def set_threads(self, n):
        """Splits training and evaluation batches over n worker threads (1 to 64).

        Losses do not depend on n; gradients are bit-identical for the same n
        and seed. Use a single-threaded BLAS (OPENBLAS_NUM_THREADS=1) when n > 1.
        """
        _require("vae_model_set_threads")(self._p(), _size(n, "n"))

    @property
    def threads(self):
        """Worker threads set by set_threads() (1 by default)."""
        return _require("vae_model_threads")(self._p())

    @threads.setter
    def threads(self, n):
        self.set_threads(n)

    def set_gaussian_sigma(self, sigma):
        """Sigma of the Gaussian likelihood (default 1)."""
        _lib.vae_model_set_gaussian_sigma(self._p(), float(sigma))

    # -- properties ----------------------------------------------------------

    @property
    def input_dim(self):
        return _lib.vae_model_input_dim(self._p())

    @property
    def latent_dim(self):
        return _lib.vae_model_latent_dim(self._p())

    @property
    def likelihood(self):
        return _lib.vae_model_likelihood(self._p())

    @property
    def built(self):
        return bool(_lib.vae_model_params(self._p(), None))

    @property
    def n_params(self):
        count = c_size_t()
        _lib.vae_model_params(self._p(), byref(count))
        return count.value

    def _view(self, kind):
        p = self._p()
        view = self._views.get(kind)
        if view is not None and _view_alive(view):
            return view
        count = c_size_t()
        func = _lib.vae_model_params if kind == "params" else _lib.vae_model_grads
        ptr = func(p, byref(count))
        if not ptr:
            raise StateError(ERR_STATE, "Model.%s: build the model first" % kind)
        view = _borrowed_view(ptr, count.value)
        self._views[kind] = view
        return view

    def params(self):
        """Borrowed, writable float32 memoryview of the parameter slab (no copy).

        Valid while the model is open; close() releases it. Layout: encoder
        layers, the head ([mu | logvar] rows), decoder layers; each dense
        layer W[out][in] then b[out].
        """
        return self._view("params")

    def grads(self):
        """Borrowed float32 memoryview of the gradient slab, same layout as params()."""
        return self._view("grads")

    def zero_grads(self):
        _lib.vae_model_zero_grads(self._p())

    # -- inference -----------------------------------------------------------

    def encode(self, x, n=None, mu=None, logvar=None):
        """(mu, logvar) of q(z|x), each n * latent_dim floats."""
        p = self._p()
        xb = _as_input(x, "x")
        n = _batch(xb, self.input_dim, n, "x")
        L = self.latent_dim
        mo = _as_output(mu, n * L, "mu")
        lo = _as_output(logvar, n * L, "logvar")
        _lib.vae_model_encode(p, xb.ptr, n, mo.ptr, lo.ptr)
        return mo.obj, lo.obj

    def decode(self, z, n=None, out=None):
        """p(x|z): probabilities (Bernoulli) or means (Gaussian), n * input_dim floats."""
        p = self._p()
        zb = _as_input(z, "z")
        n = _batch(zb, self.latent_dim, n, "z")
        o = _as_output(out, n * self.input_dim, "out")
        _lib.vae_model_decode(p, zb.ptr, n, o.ptr)
        return o.obj

    def sample(self, rng, n, out=None):
        """Decodes n draws of z ~ N(0, I) from rng."""
        p = self._p()
        r = _handle(rng, Rng, "rng")
        n = _size(n, "n")
        o = _as_output(out, n * self.input_dim, "out")
        _lib.vae_model_sample(p, r, n, o.ptr)
        return o.obj

    def reconstruct(self, x, n=None, out=None):
        """decode(mu(x)) for each input."""
        p = self._p()
        xb = _as_input(x, "x")
        n = _batch(xb, self.input_dim, n, "x")
        o = _as_output(out, n * self.input_dim, "out")
        _lib.vae_model_reconstruct(p, xb.ptr, n, o.ptr)
        return o.obj

    def log_likelihood(self, x, k, rng, n=None):
        """Importance-sampled log p(x_i) with k samples, array('d') of n values (nats)."""
        p = self._p()
        r = _handle(rng, Rng, "rng")
        xb = _as_input(x, "x")
        n = _batch(xb, self.input_dim, n, "x")
        k = _size(k, "k")
        out, keep = _doubles(n)
        _lib.vae_model_log_likelihood(p, xb.ptr, n, k, r, keep[1] if keep else None)
        return out

    # -- files ---------------------------------------------------------------

    def save(self, path):
        """Writes the model to path atomically (temporary file, then rename)."""
        _lib.vae_model_save(self._p(), _path(path))

    @classmethod
    def load(cls, path):
        """Reads a model written by save()."""
        return cls._wrap(_create(_lib.vae_model_load, _path(path)))

    def save_mem(self):
        """The bytes save() would write."""
        p = self._p()
        size = c_size_t()
        _lib.vae_model_save_mem(p, None, 0, byref(size))
        buf = ctypes.create_string_buffer(max(size.value, 1))
        _lib.vae_model_save_mem(p, buf, size.value, byref(size))
        return buf.raw[:size.value]

    @classmethod
    def load_mem(cls, data):
        """A model from bytes (any bytes-like object) produced by save_mem() or save()."""
        mv = memoryview(data).cast("B") if not isinstance(data, bytes) else None
        raw = data if mv is None else mv.tobytes()
        return cls._wrap(_create(_lib.vae_model_load_mem, raw, len(raw)))


class Elbo(_Handle):
    """The objective: negative ELBO with a KL weight beta, or a plain autoencoder."""

    _free = "vae_elbo_free"

    def __init__(self, beta=1.0, objective=OBJECTIVE_ELBO):
        self._ptr = _create(_lib.vae_elbo_create)
        self._beta = 1.0
        self._objective = OBJECTIVE_ELBO
        if beta != 1.0:
            self.beta = beta
        if objective != OBJECTIVE_ELBO:
            self.objective = objective

    @property
    def beta(self):
        """Weight of the KL term (the library keeps it; this is the last value set)."""
        return self._beta

    @beta.setter
    def beta(self, beta):
        _lib.vae_elbo_set_beta(self._p(), float(beta))
        self._beta = float(c_float(beta).value)

    @property
    def objective(self):
        return self._objective

    @objective.setter
    def objective(self, objective):
        value = _int_enum(objective, _OBJECTIVES, "objective")
        _lib.vae_elbo_set_objective(self._p(), value)
        self._objective = value

    def _args(self, model, x, n, eps, rng):
        p = self._p()
        m = _handle(model, Model, "model")
        r = _handle(rng, Rng, "rng", optional=True)
        xb = _as_input(x, "x")
        n = _batch(xb, model.input_dim, n, "x")
        if eps is not None:
            eb = _as_input(eps, "eps")
            _batch(eb, model.latent_dim, n, "eps")
            eps_ptr = eb.ptr
        else:
            eb = eps_ptr = None
        return p, m, xb, n, eps_ptr, r, eb

    def forward_backward(self, model, x, n=None, eps=None, rng=None):
        """One step's losses; ADDS the gradient of the loss into model.grads().

        The noise comes from eps (n * latent_dim floats) when given, else from rng.
        """
        p, m, xb, n, eps_ptr, r, _keep = self._args(model, x, n, eps, rng)
        loss, recon, kl = c_double(), c_double(), c_double()
        _lib.vae_elbo_forward_backward(p, m, xb.ptr, n, eps_ptr, r, byref(loss), byref(recon),
                                       byref(kl))
        return Losses(loss.value, recon.value, kl.value)

    def evaluate(self, model, x, n=None, eps=None, rng=None, per_sample=False):
        """The same losses without gradients; per_sample=True adds each sample's loss."""
        p, m, xb, n, eps_ptr, r, _keep = self._args(model, x, n, eps, rng)
        loss, recon, kl = c_double(), c_double(), c_double()
        ps, keep = _doubles(n) if per_sample else (None, None)
        _lib.vae_elbo_evaluate(p, m, xb.ptr, n, eps_ptr, r, byref(loss), byref(recon),
                               byref(kl), keep[1] if keep else None)
        return Losses(loss.value, recon.value, kl.value, ps)


class Optimizer(_Handle):
    """Optimizer.adam(...) or Optimizer.sgd(...). One optimizer per model: it
    binds to the first model it steps and raises StateError on any other."""

    _free = "vae_optimizer_free"

    def _setup(self):
        self._lr = None
        self._clip = 0.0

    @classmethod
    def adam(cls, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        """Adam (AdamW when weight_decay > 0); PyTorch's defaults."""
        self = cls._wrap(_create(_lib.vae_optimizer_adam_create, float(lr), float(beta1),
                                 float(beta2), float(eps), float(weight_decay)))
        self._lr = float(c_float(lr).value)
        return self

    @classmethod
    def sgd(cls, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        """SGD with momentum, optional Nesterov and L2 weight decay (as PyTorch)."""
        self = cls._wrap(_create(_lib.vae_optimizer_sgd_create, float(lr), float(momentum),
                                 1 if nesterov else 0, float(weight_decay)))
        self._lr = float(c_float(lr).value)
        return self

    @property
    def lr(self):
        """The learning rate (the last value set, as a float32)."""
        return self._lr

    @lr.setter
    def lr(self, lr):
        self.set_lr(lr)

    def set_lr(self, lr):
        _lib.vae_optimizer_set_lr(self._p(), float(lr))
        self._lr = float(c_float(lr).value)

    @property
    def clip_norm(self):
        """Global L2 norm the gradient is rescaled to when larger; 0 disables."""
        return self._clip

    @clip_norm.setter
    def clip_norm(self, max_norm):
        self.set_clip_norm(max_norm)

    def set_clip_norm(self, max_norm):
        _lib.vae_optimizer_set_clip_norm(self._p(), float(max_norm))
        self._clip = float(c_float(max_norm).value)

    clip = set_clip_norm

    def step(self, model):
        """Updates the parameters from the gradients, then zeroes the gradients."""
        p = self._p()
        _lib.vae_optimizer_step(p, _handle(model, Model, "model"))


class Dataset(_Handle):
    """Samples in memory: Dataset.load_idx(...) or Dataset.from_floats(...)."""

    _free = "vae_dataset_free"

    @classmethod
    def load_idx(cls, images, labels=None):
        """Reads IDX images (MNIST format, optionally gzip-compressed) and labels."""
        return cls._wrap(_create(_lib.vae_dataset_load_idx, _path(images, "images"),
                                 _path(labels, "labels")))

    @classmethod
    def from_floats(cls, data, count=None, dim=None, labels=None):
        """A copy of data[count][dim] (float32 buffer or numbers) and labels[count].

        Give dim (or count); with a sequence of rows both are inferred.
        """
        if dim is None and count is None and not isinstance(data, (str, bytes)) and \
                _float_view(data) is None:
            rows = list(data)
            dim = len(rows[0]) if rows and hasattr(rows[0], "__len__") else None
            data = rows
        buf = _as_input(data, "data")
        if dim is None:
            if count is None:
                raise InvalidArgument(ERR_INVALID, "Dataset.from_floats: give dim or count")
            count = _size(count, "count")
            if count == 0 or buf.n % count:
                raise ShapeError(ERR_SHAPE, "data holds %d floats, not a multiple of count %d"
                                 % (buf.n, count))
            dim = buf.n // count
        dim = _size(dim, "dim")
        count = _batch(buf, dim, count, "data") if dim else _size(count or 0, "count")
        lab = None
        if labels is not None:
            lab = _int32_array(labels, count)
        return cls._wrap(_create(_lib.vae_dataset_from_floats, buf.ptr, count, dim,
                                 ctypes.cast(lab, POINTER(c_int32)) if lab is not None
                                 else None))

    @property
    def count(self):
        return _lib.vae_dataset_count(self._p())

    def __len__(self):
        return self.count

    @property
    def dim(self):
        return _lib.vae_dataset_dim(self._p())

    @property
    def image_size(self):
        """(height, width) of a sample."""
        h, w = c_size_t(), c_size_t()
        _lib.vae_dataset_image_size(self._p(), byref(h), byref(w))
        return h.value, w.value

    @property
    def has_labels(self):
        return bool(_lib.vae_dataset_has_labels(self._p()))

    def label(self, index):
        value = c_int32()
        _lib.vae_dataset_label(self._p(), _size(index, "index"), byref(value))
        return value.value

    def labels(self):
        """All labels as array('i') (int32)."""
        p = self._p()
        out = array.array(_INT32_TYPECODE)
        value = c_int32()
        for i in range(_lib.vae_dataset_count(p)):
            _lib.vae_dataset_label(p, i, byref(value))
            out.append(value.value)
        return out

    def subset(self, indices):
        """A new dataset with the samples indices (repeats allowed)."""
        idx = _size_array(indices)
        return Dataset._wrap(_create(_lib.vae_dataset_subset, self._p(), idx, len(idx)))

    def filter_label(self, label, keep=True):
        """A new dataset with the samples labelled `label` (keep) or all the others."""
        return Dataset._wrap(_create(_lib.vae_dataset_filter_label, self._p(),
                                     _int32(label, "label"), 1 if keep else 0))

    def batch(self, indices, binarize=False, rng=None, out=None):
        """The samples indices as floats (len(indices) * dim); binarize draws from rng."""
        p = self._p()
        idx = _size_array(indices)
        r = _handle(rng, Rng, "rng", optional=True)
        o = _as_output(out, len(idx) * _lib.vae_dataset_dim(p), "out")
        _lib.vae_dataset_batch(p, idx, len(idx), 1 if binarize else 0, r, o.ptr)
        return o.obj

    def range(self, first, n, out=None):
        """Samples first .. first+n-1 as floats (n * dim)."""
        p = self._p()
        first, n = _size(first, "first"), _size(n, "n")
        o = _as_output(out, n * _lib.vae_dataset_dim(p), "out")
        _lib.vae_dataset_range(p, first, n, o.ptr)
        return o.obj


def _size_array(indices):
    values = [_size(i, "index") for i in indices]
    return (c_size_t * max(len(values), 1))(*values) if values else (c_size_t * 0)()


def _int32_array(labels, count):
    try:
        mv = memoryview(labels)
    except TypeError:
        mv = None
    if mv is not None:
        if mv.format not in _INT32_FORMATS or mv.itemsize != 4:
            raise TypeError("labels must hold int32 items, got format %r" % mv.format)
        values = mv.cast("B").cast("i").tolist() if mv.c_contiguous else \
            memoryview(mv.tobytes()).cast("i").tolist()
    else:
        values = [_int32(v, "label") for v in labels]
    if len(values) != count:
        raise ShapeError(ERR_SHAPE, "%d labels for %d samples" % (len(values), count))
    return (c_int32 * max(count, 1))(*values)


# ---------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------


def _stats(s):
    return EpochStats(s.loss, s.recon, s.kl, s.seconds, s.samples, s.steps)


def train_epoch(model, elbo, optimizer, dataset, rng, batch_size=128, shuffle=True,
                binarize=False, progress=None):
    """One pass over dataset; returns EpochStats.

    progress(done, total, running_loss) is called after every step; a true
    return value stops the epoch with Cancelled (whose .stats has the partial
    epoch). An exception raised by progress stops the epoch too and is
    re-raised here once the library has returned.
    """
    m = _handle(model, Model, "model")
    e = _handle(elbo, Elbo, "elbo")
    o = _handle(optimizer, Optimizer, "optimizer")
    d = _handle(dataset, Dataset, "dataset")
    r = _handle(rng, Rng, "rng")
    opts = TrainOptions()
    _lib.vae_train_options_init(byref(opts))
    opts.batch_size = _size(batch_size, "batch_size")
    opts.shuffle = 1 if shuffle else 0
    opts.binarize = 1 if binarize else 0
    pending = []
    if progress is not None:
        if not callable(progress):
            raise TypeError("progress must be callable")

        def trampoline(_payload, done, total, running_loss):
            # Nothing may propagate into C: any exception stops the epoch.
            try:
                return 1 if progress(done, total, running_loss) else 0
            except BaseException as exc:  # noqa: B902 - re-raised after the call
                pending.append(exc)
                return 1

        opts.progress = ProgressFn(trampoline)
    stats = EpochStatsStruct()
    stats.size = ctypes.sizeof(EpochStatsStruct)
    try:
        _lib.vae_train_epoch(m, e, o, d, r, byref(opts), byref(stats))
    except Cancelled as exc:
        exc.stats = _stats(stats)
        if pending:
            raise pending[0] from None
        raise
    return _stats(stats)


def evaluate_dataset(model, elbo, dataset, rng=None, batch_size=128, per_sample=False):
    """Mean losses over a whole dataset (not binarized); per_sample adds each sample's loss."""
    m = _handle(model, Model, "model")
    e = _handle(elbo, Elbo, "elbo")
    d = _handle(dataset, Dataset, "dataset")
    r = _handle(rng, Rng, "rng", optional=True)
    loss, recon, kl = c_double(), c_double(), c_double()
    ps, keep = _doubles(_lib.vae_dataset_count(d)) if per_sample else (None, None)
    _lib.vae_evaluate_dataset(m, e, d, r, _size(batch_size, "batch_size"), byref(loss),
                              byref(recon), byref(kl), keep[1] if keep else None)
    return Losses(loss.value, recon.value, kl.value, ps)
