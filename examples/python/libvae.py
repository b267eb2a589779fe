"""Python binding of libvae 1.x over ctypes (standard library only, Python >= 3.9).

The shared library is found, in order, through:

  1. the environment variable LIBVAE_PATH: the library file itself, or a
     directory holding libvae.so.1 / libvae.so (nothing else is tried when it
     is set);
  2. ctypes.util.find_library("vae");
  3. the names "libvae.so.1" and "libvae.so" (the dynamic loader's search
     path, e.g. LD_LIBRARY_PATH).

Import fails with LibraryNotFoundError (an ImportError) when none loads, and
with VersionMismatchError when vae_version_number() of the loaded library has
another major version than the one this module was written for (1).

The objects mirror the C handles of vae/vae.h:

  Model      architecture and parameters (Model.create_mlp(), or Model(...) +
             add_encoder_layer()/add_decoder_layer() + build(), Model.load())
  Layer      a standalone layer; adding it to a model consumes it
  Context    workspace and worker threads; every inference call takes one
  Elbo       the objective (beta, objective)
  Optimizer  SGD or Adam/AdamW hyperparameters
  Trainer    gradients, optimizer state, generator and counters of training;
             checkpoints (save(), restore(), with metadata) and data-parallel
             training over ranks (set_distributed()) since libvae 1.1
  Dataset    samples in memory (IDX files or floats)
  Rng        the seeded generator

Checkpoints: trainer.save(path) writes the whole training state and the
metadata of set_meta(); to resume, Model.load(path) (it reads the model part
of a checkpoint), a Trainer over that model with an optimizer of the same
kind, then trainer.restore(path). Training continues bit for bit, also from
the middle of an epoch (epoch_position). These need libvae 1.1: with a 1.0
library the module loads and they raise VersionMismatchError.

Inference is done by functions taking a context first, as in C:
encode(ctx, model, x), decode(), reconstruct(), sample(), log_likelihood(),
elbo_evaluate(), evaluate_dataset(); the same are methods of Context
(ctx.encode(model, x), ...).

Errors: every C status becomes an exception VaeError(code, message), with
.code, .strerror (vae_strerror(code)) and .message (vae_last_error() of the
failed call, or a message of this module when the check happens in Python),
and one subclass per status code (InvalidArgument, ShapeError, OutOfMemory,
VaeIOError, FormatError, NumericError, StateError, Cancelled). Each subclass
also derives from the matching built-in exception (ValueError, MemoryError,
OSError, ArithmeticError, RuntimeError), so generic handlers work too.

Lifetimes: objects own their C handles and free them with close(), at the end
of a with-statement, or when garbage-collected; closing twice is harmless and
using a closed object raises InvalidArgument (NULL is never passed to C).
Whatever borrows an object holds a Python reference to it, so the garbage
collector can never free a model, objective, optimizer or context under a
live Trainer, nor a model under one of its layer views or parameter views:

  - a Trainer keeps its model, objective, optimizer and context alive; closing
    any of those closes the trainer first;
  - an object is never freed while a call on it is running (close() from
    another thread, or from a progress callback, takes effect when the call
    returns), nor while a memoryview over its memory (Model.params(),
    Trainer.grads(), Layer.params()) or a view derived from it still exists;
    close() releases the views it handed out, so using them afterwards
    raises ValueError instead of reading freed memory;
  - Model.add_encoder_layer(layer) consumes the Layer as the C call does,
    whether it succeeds or fails: the Python object is closed at once and
    can never reach the freed or model-owned C layer. The model's layers are
    read through Model.layers (ModelLayer objects holding the model).

Float buffers: inputs are any object supporting the buffer protocol with
float32 items ("f"), such as array.array("f"), a memoryview, or a float32
numpy array, or else a flat sequence of numbers or a sequence of rows.
C-contiguous writable buffers are passed without a copy. Outputs are
array.array("f") (array.array("d") for per-sample values), or are written into
an `out=` buffer (writable, C-contiguous, float32, exact size). Sizes are
checked here before the call (ShapeError, a ValueError).

Settings (Elbo.beta, Model.gaussian_sigma, the optimizer's hyperparameters) are
kept by the library as the float32 its computations use: they read back
rounded to float32.

Threads: ctypes releases the GIL during calls. A Context serves one call at a
time; a second concurrent call on it fails with StateError. Contexts with
more than one worker need a single-threaded BLAS: blas_set_threads(1).

Memory: allocations() is the number of blocks the library holds (0 once
every object is freed, a leak check). set_limit() / get_limit() set the
process-wide limits on what input can make it allocate (LIMIT_FILE_BYTES,
LIMIT_MODEL_PARAMS, LIMIT_WORKSPACE_BYTES; beyond one, OutOfMemory).
set_allocator(malloc, realloc, free) routes every allocation of the library
through Python functions, called from any thread of the library (each call
takes the GIL: safe, but slow); it is allowed only while allocations() == 0.
CountingAllocator is one over the C library's malloc that counts blocks and
bytes and can fail allocations on purpose.
"""

import array
import collections
import ctypes
import ctypes.util
import itertools
import operator
import os
import signal
import sys
import threading
import traceback
import weakref
from ctypes import (CFUNCTYPE, POINTER, Structure, byref, c_char_p, c_double, c_float, c_int,
                    c_int32, c_size_t, c_uint, c_uint64, c_void_p)

__all__ = [
    "HEADER_VERSION", "HEADER_VERSION_MAJOR", "library_version", "library_path",
    "VaeError", "InvalidArgument", "ShapeError", "OutOfMemory", "VaeIOError", "FormatError",
    "NumericError", "StateError", "Cancelled", "LibraryNotFoundError", "VersionMismatchError",
    "Rng", "Layer", "ModelLayer", "Model", "TensorInfo", "Context", "Elbo", "Optimizer",
    "Trainer", "Dataset", "EpochStats",
    "encode", "decode", "reconstruct", "sample", "log_likelihood", "elbo_evaluate",
    "evaluate_dataset", "anomaly_score", "blas_threads", "blas_set_threads",
    "allocations", "set_limit", "get_limit", "limits", "set_allocator", "current_allocator",
    "CountingAllocator",
    "LIMIT_FILE_BYTES", "LIMIT_MODEL_PARAMS", "LIMIT_WORKSPACE_BYTES",
    "ACT_IDENTITY", "ACT_RELU", "ACT_LEAKY_RELU", "ACT_TANH", "ACT_SIGMOID", "ACT_SOFTPLUS",
    "ACT_ELU", "LAYER_DENSE", "LAYER_CONV2D", "LAYER_CONV2D_TRANSPOSE",
    "LIKELIHOOD_BERNOULLI", "LIKELIHOOD_GAUSSIAN", "LIKELIHOOD_CONTINUOUS_BERNOULLI",
    "OBJECTIVE_ELBO", "OBJECTIVE_AUTOENCODER", "OBJECTIVE_IWAE",
    "ELBO_BETA", "ELBO_OBJECTIVE", "ELBO_SAMPLES", "ELBO_WARMUP", "ELBO_FREE_BITS",
    "OPTIMIZER_SGD", "OPTIMIZER_ADAM",
    "ANOMALY_NEG_ELBO", "ANOMALY_NEG_LOG_LIKELIHOOD", "ANOMALY_RECON_PROB",
    "ANOMALY_COMPLEXITY",
]

# ---------------------------------------------------------------------------
# Constants mirrored from include/vae/vae.h
# ---------------------------------------------------------------------------

HEADER_VERSION_MAJOR = 1
HEADER_VERSION_MINOR = 2
HEADER_VERSION_PATCH = 1
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

# vae_set_limit() / vae_get_limit()
LIMIT_FILE_BYTES = 1
LIMIT_MODEL_PARAMS = 2
LIMIT_WORKSPACE_BYTES = 3

ACT_IDENTITY = 0
ACT_RELU = 1
ACT_LEAKY_RELU = 2
ACT_TANH = 3
ACT_SIGMOID = 4
ACT_SOFTPLUS = 5
ACT_ELU = 6

LAYER_DENSE = 1
LAYER_CONV2D = 2
LAYER_CONV2D_TRANSPOSE = 3

# vae_layer_get_param()
LAYER_INPUTS = 1
LAYER_OUTPUTS = 2
LAYER_PARAMS = 3
LAYER_IN_CHANNELS = 4
LAYER_IN_HEIGHT = 5
LAYER_IN_WIDTH = 6
LAYER_OUT_CHANNELS = 7
LAYER_OUT_HEIGHT = 8
LAYER_OUT_WIDTH = 9
LAYER_KERNEL_HEIGHT = 10
LAYER_KERNEL_WIDTH = 11
LAYER_STRIDE = 12
LAYER_PADDING = 13
LAYER_OUTPUT_PADDING = 14

LIKELIHOOD_BERNOULLI = 0
LIKELIHOOD_GAUSSIAN = 1
LIKELIHOOD_CONTINUOUS_BERNOULLI = 2

MODEL_GAUSSIAN_SIGMA = 1

OBJECTIVE_ELBO = 0
OBJECTIVE_AUTOENCODER = 1
OBJECTIVE_IWAE = 2  # since 1.2

ELBO_BETA = 1
ELBO_OBJECTIVE = 2
ELBO_SAMPLES = 3  # since 1.2
ELBO_WARMUP = 4  # since 1.2
ELBO_FREE_BITS = 5  # since 1.2

OPTIMIZER_SGD = 1
OPTIMIZER_ADAM = 2

OPT_LR = 1
OPT_WEIGHT_DECAY = 2
OPT_CLIP_NORM = 3
OPT_BETA1 = 4
OPT_BETA2 = 5
OPT_EPS = 6
OPT_MOMENTUM = 7
OPT_NESTEROV = 8
OPT_DAMPENING = 9

# vae_anomaly_score() (since 1.1)
ANOMALY_NEG_ELBO = 0
ANOMALY_NEG_LOG_LIKELIHOOD = 1
ANOMALY_RECON_PROB = 2
ANOMALY_COMPLEXITY = 3

_LIMITS = collections.OrderedDict([
    ("file_bytes", LIMIT_FILE_BYTES), ("model_params", LIMIT_MODEL_PARAMS),
    ("workspace_bytes", LIMIT_WORKSPACE_BYTES)])
_ACTIVATIONS = {"identity": ACT_IDENTITY, "linear": ACT_IDENTITY, "relu": ACT_RELU,
                "leaky_relu": ACT_LEAKY_RELU, "tanh": ACT_TANH, "sigmoid": ACT_SIGMOID,
                "softplus": ACT_SOFTPLUS, "elu": ACT_ELU}
_ACTIVATION_NAMES = {ACT_IDENTITY: "identity", ACT_RELU: "relu", ACT_LEAKY_RELU: "leaky_relu",
                     ACT_TANH: "tanh", ACT_SIGMOID: "sigmoid", ACT_SOFTPLUS: "softplus",
                     ACT_ELU: "elu"}
_LAYER_KIND_NAMES = {LAYER_DENSE: "dense", LAYER_CONV2D: "conv2d",
                     LAYER_CONV2D_TRANSPOSE: "conv2d_transpose"}
_LAYER_PARAMS = collections.OrderedDict([
    ("inputs", LAYER_INPUTS), ("outputs", LAYER_OUTPUTS), ("params", LAYER_PARAMS),
    ("in_channels", LAYER_IN_CHANNELS), ("in_height", LAYER_IN_HEIGHT),
    ("in_width", LAYER_IN_WIDTH), ("out_channels", LAYER_OUT_CHANNELS),
    ("out_height", LAYER_OUT_HEIGHT), ("out_width", LAYER_OUT_WIDTH),
    ("kernel_height", LAYER_KERNEL_HEIGHT), ("kernel_width", LAYER_KERNEL_WIDTH),
    ("stride", LAYER_STRIDE), ("padding", LAYER_PADDING),
    ("output_padding", LAYER_OUTPUT_PADDING)])
_LIKELIHOODS = {"bernoulli": LIKELIHOOD_BERNOULLI, "gaussian": LIKELIHOOD_GAUSSIAN,
                "continuous_bernoulli": LIKELIHOOD_CONTINUOUS_BERNOULLI}
_LIKELIHOOD_NAMES = {v: k for k, v in _LIKELIHOODS.items()}
_MODEL_PARAMS = {"gaussian_sigma": MODEL_GAUSSIAN_SIGMA, "sigma": MODEL_GAUSSIAN_SIGMA}
_OBJECTIVES = {"elbo": OBJECTIVE_ELBO, "autoencoder": OBJECTIVE_AUTOENCODER,
               "iwae": OBJECTIVE_IWAE}
_ELBO_PARAMS = {"beta": ELBO_BETA, "objective": ELBO_OBJECTIVE, "samples": ELBO_SAMPLES,
                "warmup": ELBO_WARMUP, "free_bits": ELBO_FREE_BITS}
_OPTIMIZERS = {"sgd": OPTIMIZER_SGD, "adam": OPTIMIZER_ADAM, "adamw": OPTIMIZER_ADAM}
_OPTIMIZER_NAMES = {OPTIMIZER_SGD: "sgd", OPTIMIZER_ADAM: "adam"}
_ANOMALY_KINDS = {"neg_elbo": ANOMALY_NEG_ELBO, "elbo": ANOMALY_NEG_ELBO,
                  "neg_log_likelihood": ANOMALY_NEG_LOG_LIKELIHOOD,
                  "nll": ANOMALY_NEG_LOG_LIKELIHOOD, "recon_prob": ANOMALY_RECON_PROB,
                  "recon": ANOMALY_RECON_PROB, "complexity": ANOMALY_COMPLEXITY}
_OPT_PARAMS = collections.OrderedDict([
    ("lr", OPT_LR), ("weight_decay", OPT_WEIGHT_DECAY), ("clip_norm", OPT_CLIP_NORM),
    ("beta1", OPT_BETA1), ("beta2", OPT_BETA2), ("eps", OPT_EPS), ("momentum", OPT_MOMENTUM),
    ("nesterov", OPT_NESTEROV), ("dampening", OPT_DAMPENING)])
#: The hyperparameters each optimizer kind accepts (the others fail with InvalidArgument).
OPTIMIZER_PARAMS = {
    OPTIMIZER_SGD: ("lr", "weight_decay", "clip_norm", "momentum", "nesterov", "dampening"),
    OPTIMIZER_ADAM: ("lr", "weight_decay", "clip_norm", "beta1", "beta2", "eps"),
}

# ---------------------------------------------------------------------------
# Exceptions
# ---------------------------------------------------------------------------


class LibraryNotFoundError(ImportError):
    """The libvae shared library could not be loaded."""


class VersionMismatchError(ImportError):
    """The loaded library's major version differs from HEADER_VERSION_MAJOR."""


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
    """VAE_ERR_STATE: a call out of order (an unbuilt model), or a context in use."""


class Cancelled(VaeError):
    """VAE_ERR_CANCELLED: the progress callback asked to stop.

    Raised by Trainer.train_epoch(); .stats holds the EpochStats of the
    partial epoch.
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

_SONAMES = ("libvae.so.%d" % HEADER_VERSION_MAJOR, "libvae.so")


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
        "set LIBVAE_PATH to the library file, e.g. build/libvae.so.%d, or install it where "
        "the dynamic loader finds it.\n  %s"
        % (where, HEADER_VERSION_MAJOR, "\n  ".join(failures)))


_lib, _lib_name = _load_library()

#: The raw ctypes library with every exported function declared. Functions
#: that return a status raise VaeError subclasses instead of returning it.
lib = _lib

# ---------------------------------------------------------------------------
# C types
# ---------------------------------------------------------------------------

#: int (*vae_progress_fn)(void *payload, size_t done, size_t total, double running_loss)
ProgressFn = CFUNCTYPE(c_int, c_void_p, c_size_t, c_size_t, c_double)
#: int (*vae_exchange_fn)(void *payload, void *buf, const size_t *bytes)
ExchangeFn = CFUNCTYPE(c_int, c_void_p, c_void_p, POINTER(c_size_t))


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


#: void *(*malloc_fn)(void *payload, size_t n)
MallocFn = CFUNCTYPE(c_void_p, c_void_p, c_size_t)
#: void *(*realloc_fn)(void *payload, void *p, size_t n)
ReallocFn = CFUNCTYPE(c_void_p, c_void_p, c_void_p, c_size_t)
#: void (*free_fn)(void *payload, void *p)
FreeFn = CFUNCTYPE(None, c_void_p, c_void_p)


class AllocatorStruct(Structure):
    """struct vae_allocator."""
    _fields_ = [
        ("size", c_size_t),
        ("malloc_fn", MallocFn),
        ("realloc_fn", ReallocFn),
        ("free_fn", FreeFn),
        ("payload", c_void_p),
    ]


_FloatP = POINTER(c_float)
_DoubleP = POINTER(c_double)
_SizeP = POINTER(c_size_t)
_HandleP = POINTER(c_void_p)  # T **out (and vae_layer ** of the add functions)
_H = c_void_p                 # opaque handles
_StatsP = POINTER(EpochStatsStruct)

# name: (restype, argtypes); _STATUS marks a function returning an int status,
# None a void function. Every function of include/vae/vae.h is here.
_STATUS = object()
_SIGNATURES = {
    "vae_version_number": (c_uint, []),
    "vae_version_string": (c_char_p, []),
    "vae_strerror": (c_char_p, [c_int]),
    "vae_last_error": (c_char_p, []),

    "vae_set_allocator": (_STATUS, [POINTER(AllocatorStruct)]),
    "vae_set_limit": (_STATUS, [c_int, c_uint64]),
    "vae_get_limit": (c_uint64, [c_int]),
    "vae_allocations": (c_size_t, []),

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
    "vae_layer_kind": (c_int, [_H]),
    "vae_layer_activation": (c_int, [_H]),
    "vae_layer_get_param": (_STATUS, [_H, c_int, _SizeP]),

    "vae_model_create": (_STATUS, [_HandleP, c_size_t, c_size_t, c_int]),
    "vae_model_free": (None, [_H]),
    "vae_model_add_encoder_layer": (_STATUS, [_H, _HandleP]),
    "vae_model_add_decoder_layer": (_STATUS, [_H, _HandleP]),
    "vae_model_build": (_STATUS, [_H, c_uint64]),
    "vae_model_create_mlp": (_STATUS, [_HandleP, c_size_t, _SizeP, c_size_t, c_size_t, c_int,
                                       c_int, c_uint64]),
    "vae_model_set_param": (_STATUS, [_H, c_int, c_double]),
    "vae_model_get_param": (_STATUS, [_H, c_int, _DoubleP]),
    "vae_model_input_dim": (c_size_t, [_H]),
    "vae_model_latent_dim": (c_size_t, [_H]),
    "vae_model_likelihood": (c_int, [_H]),
    "vae_model_is_built": (c_int, [_H]),
    "vae_model_layer_count": (c_size_t, [_H]),
    "vae_model_encoder_layer_count": (c_size_t, [_H]),
    "vae_model_layer": (c_void_p, [_H, c_size_t]),
    "vae_model_params": (_FloatP, [_H, _SizeP]),
    "vae_model_param_count": (c_size_t, [_H]),
    "vae_model_tensor_count": (c_size_t, [_H]),
    "vae_model_tensor_name": (c_char_p, [_H, c_size_t]),
    "vae_model_tensor_find": (_STATUS, [_H, c_char_p, _SizeP]),
    "vae_model_tensor_info": (_STATUS, [_H, c_size_t, _SizeP, _SizeP, _SizeP, _SizeP]),
    "vae_model_tensor_get": (_STATUS, [_H, c_size_t, _FloatP, c_size_t]),
    "vae_model_tensor_set": (_STATUS, [_H, c_size_t, _FloatP, c_size_t]),

    "vae_context_create": (_STATUS, [_HandleP]),
    "vae_context_free": (None, [_H]),
    "vae_context_set_threads": (_STATUS, [_H, c_size_t]),
    "vae_context_threads": (c_size_t, [_H]),
    "vae_context_reserve": (_STATUS, [_H, _H, c_size_t]),
    "vae_blas_threads": (c_size_t, []),
    "vae_blas_set_threads": (_STATUS, [c_size_t]),

    "vae_elbo_create": (_STATUS, [_HandleP]),
    "vae_elbo_free": (None, [_H]),
    "vae_elbo_set_param": (_STATUS, [_H, c_int, c_double]),
    "vae_elbo_get_param": (_STATUS, [_H, c_int, _DoubleP]),

    "vae_encode": (_STATUS, [_H, _H, _FloatP, c_size_t, _FloatP, _FloatP]),
    "vae_decode": (_STATUS, [_H, _H, _FloatP, c_size_t, _FloatP]),
    "vae_reconstruct": (_STATUS, [_H, _H, _FloatP, c_size_t, _FloatP]),
    "vae_sample": (_STATUS, [_H, _H, _H, c_size_t, _FloatP]),
    "vae_log_likelihood": (_STATUS, [_H, _H, _FloatP, c_size_t, c_size_t, _H, _DoubleP]),
    "vae_elbo_evaluate": (_STATUS, [_H, _H, _H, _FloatP, c_size_t, _FloatP, _H, _DoubleP,
                                    _StatsP]),

    "vae_optimizer_create": (_STATUS, [_HandleP, c_int]),
    "vae_optimizer_free": (None, [_H]),
    "vae_optimizer_kind": (c_int, [_H]),
    "vae_optimizer_set_param": (_STATUS, [_H, c_int, c_double]),
    "vae_optimizer_get_param": (_STATUS, [_H, c_int, _DoubleP]),

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

    "vae_train_options_init": (_STATUS, [POINTER(TrainOptions), c_size_t]),
    "vae_trainer_create": (_STATUS, [_HandleP, _H, _H, _H, _H, c_uint64]),
    "vae_trainer_free": (None, [_H]),
    "vae_trainer_reserve": (_STATUS, [_H, c_size_t]),
    "vae_trainer_forward_backward": (_STATUS, [_H, _FloatP, c_size_t, _FloatP, _StatsP]),
    "vae_trainer_apply": (_STATUS, [_H]),
    "vae_trainer_step": (_STATUS, [_H, _FloatP, c_size_t, _StatsP]),
    "vae_trainer_train_epoch": (_STATUS, [_H, _H, POINTER(TrainOptions), _StatsP]),
    "vae_trainer_grads": (_FloatP, [_H, _SizeP]),
    "vae_trainer_zero_grads": (_STATUS, [_H]),
    "vae_trainer_steps": (c_uint64, [_H]),
    "vae_trainer_epochs": (c_uint64, [_H]),
    "vae_evaluate_dataset": (_STATUS, [_H, _H, _H, _H, _H, _DoubleP, _StatsP]),

    "vae_model_save": (_STATUS, [_H, c_char_p]),
    "vae_model_load": (_STATUS, [_HandleP, c_char_p]),
    "vae_model_save_mem": (_STATUS, [_H, c_void_p, c_size_t, _SizeP]),
    "vae_model_load_mem": (_STATUS, [_HandleP, c_void_p, c_size_t]),

    # Since 1.1: open epochs and checkpoints.
    "vae_trainer_epoch_position": (_STATUS, [_H, _SizeP, _SizeP]),
    "vae_trainer_discard_epoch": (_STATUS, [_H]),
    "vae_trainer_save": (_STATUS, [_H, c_char_p]),
    "vae_trainer_save_mem": (_STATUS, [_H, c_void_p, c_size_t, _SizeP]),
    "vae_trainer_restore": (_STATUS, [_H, c_char_p]),
    "vae_trainer_restore_mem": (_STATUS, [_H, c_void_p, c_size_t]),
    "vae_trainer_set_meta": (_STATUS, [_H, c_char_p, c_char_p]),
    "vae_trainer_get_meta": (_STATUS, [_H, c_char_p, POINTER(c_char_p)]),
    "vae_trainer_meta_count": (c_size_t, [_H]),
    "vae_trainer_meta_at": (_STATUS, [_H, c_size_t, POINTER(c_char_p), POINTER(c_char_p)]),
    "vae_trainer_set_distributed": (_STATUS, [_H, c_size_t, c_size_t, ExchangeFn, c_void_p]),
    "vae_anomaly_score": (_STATUS, [_H, _H, _FloatP, c_size_t, c_int, c_size_t, _H,
                                    _DoubleP]),
}

#: The library version (MAJOR*10000 + MINOR*100) that added each function
#: after 1.0. A 1.0 library lacks them: the binding loads all the same and
#: the methods that need them raise VersionMismatchError when called.
_SINCE = {name: 10100 for name in (
    "vae_trainer_epoch_position", "vae_trainer_discard_epoch", "vae_trainer_save",
    "vae_trainer_save_mem", "vae_trainer_restore", "vae_trainer_restore_mem",
    "vae_trainer_set_meta", "vae_trainer_get_meta", "vae_trainer_meta_count",
    "vae_trainer_meta_at", "vae_trainer_set_distributed", "vae_anomaly_score")}


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


def _compatible(number):
    """Whether a library of version `number` (vae_version_number()) fits this binding."""
    return number // 10000 == HEADER_VERSION_MAJOR


def _check_version():
    # Before any other declaration: a library of another version may lack symbols.
    try:
        number_fn, string_fn = _lib.vae_version_number, _lib.vae_version_string
    except AttributeError:
        raise VersionMismatchError("%s exports no vae_version_number: it is not libvae"
                                   % _lib_name) from None
    number_fn.restype, number_fn.argtypes = c_uint, []
    string_fn.restype, string_fn.argtypes = c_char_p, []
    number = number_fn()
    if not _compatible(number):
        raise VersionMismatchError(
            "libvae %s (version number %d) loaded from %s, but this binding was written for "
            "libvae %d.x: the major versions must agree"
            % (string_fn().decode("ascii", "replace"), number, _lib_name,
               HEADER_VERSION_MAJOR))


_check_version()

#: Functions of _SINCE that the loaded library does not export (an older 1.x).
_MISSING = set()

for _name, (_restype, _argtypes) in _SIGNATURES.items():
    try:
        _func = getattr(_lib, _name)
    except AttributeError:
        if _name in _SINCE and _lib.vae_version_number() < _SINCE[_name]:
            _MISSING.add(_name)
            continue
        raise VersionMismatchError("%s does not export %s: it is not a libvae %d.x library"
                                   % (_lib_name, _name, HEADER_VERSION_MAJOR)) from None
    _func.argtypes = _argtypes
    if _restype is _STATUS:
        _func.restype = c_int
        _func.errcheck = _check_status
    else:
        _func.restype = _restype
del _name, _restype, _argtypes, _func


def _need(name):
    """The C function `name`; VersionMismatchError when the library predates it."""
    if name in _MISSING:
        since = _SINCE[name]
        raise VersionMismatchError(
            "%s needs libvae %d.%d or newer; the library loaded from %s is %s"
            % (name, since // 10000, since // 100 % 100, _lib_name, library_version()[1]))
    return getattr(_lib, name)


def library_version():
    """(number, string) of the library actually loaded, e.g. (10000, "1.0.0")."""
    return _lib.vae_version_number(), _lib.vae_version_string().decode("ascii", "replace")


def library_path():
    """The name or path the shared library was loaded from."""
    return _lib_name


def blas_threads():
    """Threads the BLAS uses inside one call, process-wide (vae_blas_threads())."""
    return _lib.vae_blas_threads()


def blas_set_threads(n):
    """Sets the BLAS's process-wide thread count (1 to 1024).

    Contexts with more than one worker need blas_set_threads(1) first.
    """
    _lib.vae_blas_set_threads(_size(n, "n"))


# ---------------------------------------------------------------------------
# Argument helpers
# ---------------------------------------------------------------------------

_FLOAT32_FORMATS = ("f", "<f" if sys.byteorder == "little" else ">f", "=f", "@f")
_INT32_FORMATS = ("i", "l", "<i", "<l", "=i", "=l", "@i", "@l") if sys.byteorder == "little" \
    else ("i", "l", ">i", ">l", "=i", "=l", "@i", "@l")
_INT32_TYPECODE = "i" if array.array("i").itemsize == 4 else "l"
_SIZE_MAX = (1 << (8 * ctypes.sizeof(c_size_t))) - 1


def _size(value, name):
    """A non-negative integer that fits a size_t."""
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError("%s must be an integer, not %s" % (name, type(value).__name__)) from None
    if v < 0 or v > _SIZE_MAX:
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
        v = operator.index(value)
    except TypeError:
        raise TypeError("%s must be an int or a name, not %s"
                        % (name, type(value).__name__)) from None
    if not -(1 << 31) <= v < 1 << 31:
        raise InvalidArgument(ERR_INVALID, "%s %d does not fit an int" % (name, v))
    return v


def _int32(value, name):
    v = operator.index(value)
    if not -(1 << 31) <= v < 1 << 31:
        raise InvalidArgument(ERR_INVALID, "%s %d does not fit an int32" % (name, v))
    return v


def _number(value, name):
    """A real number for a double parameter (bool is accepted, as 0 or 1)."""
    if isinstance(value, (str, bytes)):
        raise TypeError("%s must be a number, not %s" % (name, type(value).__name__))
    try:
        return float(value)
    except TypeError:
        raise TypeError("%s must be a number, not %s" % (name, type(value).__name__)) from None


def _check(obj, cls, name, optional=False):
    """obj after checking its type; None is refused unless optional."""
    if obj is None:
        if optional:
            return None
        raise InvalidArgument(ERR_INVALID, "%s is required, got None" % name)
    if not isinstance(obj, cls):
        raise TypeError("%s must be a %s, not %s" % (name, cls.__name__, type(obj).__name__))
    return obj


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
    """(array('d') of n zeros, POINTER(c_double) into it or None when n is 0, keep-alive)."""
    out = array.array("d", bytes(8 * n))
    if n == 0:
        return out, None, None
    arr = (c_double * n).from_buffer(out)
    return out, ctypes.cast(arr, _DoubleP), arr


def _path(path, name="path"):
    if path is None:
        return None
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError("%s must be a str, bytes or os.PathLike, not %s"
                        % (name, type(path).__name__))
    return os.fsencode(path)


def _text(value, name):
    """The bytes of a C string: a str (UTF-8) or bytes, without NUL."""
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogateescape")
    elif isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    else:
        raise TypeError("%s must be a str or bytes, not %s" % (name, type(value).__name__))
    if b"\0" in raw:
        raise InvalidArgument(ERR_INVALID, "%s contains a NUL character" % name)
    return raw


def _untext(raw):
    return raw.decode("utf-8", "surrogateescape")


def _new_stats():
    st = EpochStatsStruct()
    st.size = ctypes.sizeof(EpochStatsStruct)
    return st


EpochStats = collections.namedtuple("EpochStats",
                                    "loss recon kl seconds samples steps per_sample",
                                    defaults=(None,))
EpochStats.__doc__ = """What a step, an evaluation or an epoch measured (struct vae_epoch_stats).

loss (recon + beta * kl), recon and kl are means in nats per sample; seconds
the wall-clock time; samples and steps the samples seen and optimizer steps
taken; per_sample an array('d') of each sample's loss when asked for, else None."""


def _stats(s, per_sample=None):
    return EpochStats(s.loss, s.recon, s.kl, s.seconds, s.samples, s.steps, per_sample)


# ---------------------------------------------------------------------------
# Memory: live blocks, input limits and the allocator
# ---------------------------------------------------------------------------


def allocations():
    """Blocks the library has allocated and not yet freed (vae_allocations()).

    0 once every object is freed, so after closing everything (and
    gc.collect() for objects left to the garbage collector) it tells whether
    anything leaked. Safe to call from any thread.
    """
    return _lib.vae_allocations()


def _uint64(value, name):
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError("%s must be an integer, not %s" % (name, type(value).__name__)) from None
    if not 0 <= v < 1 << 64:
        raise InvalidArgument(ERR_INVALID, "%s must be in [0, 2**64), got %d" % (name, v))
    return v


def set_limit(limit, value):
    """Sets a process-wide limit for every later call (vae_set_limit()).

    limit is a LIMIT_* value or its name: "file_bytes" (bytes a reader takes
    from one file or buffer, after decompression; default 2**31),
    "model_params" (parameters of a model built or loaded; default 2**28) or
    "workspace_bytes" (bytes of one context's workspace; default 2**32). A
    file or model beyond a limit is refused with OutOfMemory before anything
    of its size is allocated. An unknown limit or a value of 0 raises
    InvalidArgument. Not thread-safe with other calls: set limits at start-up.
    """
    limit = _int_enum(limit, _LIMITS, "limit")
    value = _uint64(value, "value")
    _lib.vae_set_limit(limit, value)


def get_limit(limit):
    """The current value of a limit (a LIMIT_* value or its name, as set_limit())."""
    limit = _int_enum(limit, _LIMITS, "limit")
    value = _lib.vae_get_limit(limit)
    if value == 0:    # what vae_get_limit() returns for an unknown limit
        raise InvalidArgument(ERR_INVALID, "get_limit: unknown limit %d (known: %s)"
                              % (limit, ", ".join("%s = %d" % kv for kv in _LIMITS.items())))
    return value


def limits():
    """Dict name -> current value of every limit."""
    return collections.OrderedDict((name, get_limit(limit)) for name, limit in _LIMITS.items())


_allocator_lock = threading.Lock()
#: The Python allocator installed, or None for the C library's: an object
#: with .callables (malloc, realloc, free) and .thunks (the CFUNCTYPE objects
#: the library calls), kept as long as it is installed.
_allocator_installed = None
_pythonapi = getattr(ctypes, "pythonapi", None)


class _InstalledAllocator:
    __slots__ = ("callables", "thunks", "struct")

    def __init__(self, callables, thunks, struct):
        self.callables = callables
        self.thunks = thunks
        self.struct = struct

    def pin(self, delta):
        """Adds delta to the reference count of the thunks (CPython).

        A module's globals are cleared at interpreter shutdown while library
        blocks (and daemon threads inside library calls) may remain: the
        extra reference keeps the C entry points valid until the process
        ends, not only until this module's dictionary is cleared.
        """
        if _pythonapi is None:
            return
        func = _pythonapi.Py_IncRef if delta > 0 else _pythonapi.Py_DecRef
        for thunk in self.thunks:
            func(ctypes.py_object(thunk))


def _report_callback_error(what):
    """Prints the exception being handled, as ctypes does for its callbacks."""
    try:
        sys.stderr.write("libvae: exception in the allocator's %s function:\n" % what)
        traceback.print_exc()
    except BaseException:  # noqa: B902 - nothing may propagate into C
        pass


def _c_address(value):
    """What a Python malloc/realloc returned, as an address for C (None: failure)."""
    if value is None:
        return None
    if isinstance(value, c_void_p):
        return value.value
    return operator.index(value) or None


def _malloc_thunk(malloc):
    def malloc_fn(_payload, n):
        # Nothing may propagate into C: an exception is a failed allocation.
        try:
            return _c_address(malloc(n))
        except MemoryError:
            return None
        except BaseException:  # noqa: B902
            _report_callback_error("malloc")
            return None
    return MallocFn(malloc_fn)


def _realloc_thunk(realloc):
    def realloc_fn(_payload, p, n):
        try:
            return _c_address(realloc(p, n))
        except MemoryError:
            return None
        except BaseException:  # noqa: B902
            _report_callback_error("realloc")
            return None
    return ReallocFn(realloc_fn)


def _free_thunk(free):
    def free_fn(_payload, p):
        try:
            free(p)
        except BaseException:  # noqa: B902
            _report_callback_error("free (the block is leaked)")
    return FreeFn(free_fn)


def set_allocator(malloc=None, realloc=None, free=None):
    """Sets the allocator of every later allocation of the library (vae_set_allocator()).

    malloc(n) returns the address (an int) of n new bytes, or None (or 0)
    when it fails; realloc(p, n) resizes the block at address p and returns
    its new address, or None leaving p as it was; free(p) releases it. Give
    all three, or none to restore the C library's malloc, realloc and free.
    CountingAllocator is a ready-made one over the C library's functions.

    The library allows the change only while none of its blocks is live:
    before the first object is created, or once every object is freed
    (allocations() == 0); otherwise it raises StateError and the previous
    allocator stays. A partial set (one or two functions) raises
    InvalidArgument. Not thread-safe with other calls of the library.

    The functions are called from whatever thread allocates, including the
    library's worker threads; each call takes the GIL, so they run safely
    but every allocation costs a Python call (a trainer or context reserved
    beforehand allocates nothing per step). They must be thread-safe and
    must not call the library. A failure (None, or an exception: MemoryError
    silently, any other printed to stderr) makes the library call that
    needed the block raise OutOfMemory, with every object as it was. An
    exception raised by free is printed and the block is leaked.

    The binding keeps the three functions alive for as long as they are
    installed, up to the end of the process.
    """
    given = (malloc, realloc, free)
    for name, func in zip(("malloc", "realloc", "free"), given):
        if func is not None and not callable(func):
            raise TypeError("%s must be callable or None, not %s" % (name, type(func).__name__))
    global _allocator_installed
    with _allocator_lock:
        if all(func is None for func in given):
            new, arg = None, None
        else:
            st = AllocatorStruct()
            st.size = ctypes.sizeof(AllocatorStruct)
            thunks = []
            # A missing function stays NULL: the library refuses the struct.
            for field, make, func in (("malloc_fn", _malloc_thunk, malloc),
                                      ("realloc_fn", _realloc_thunk, realloc),
                                      ("free_fn", _free_thunk, free)):
                if func is not None:
                    thunk = make(func)
                    setattr(st, field, thunk)
                    thunks.append(thunk)
            new, arg = _InstalledAllocator(given, tuple(thunks), st), byref(st)
        _lib.vae_set_allocator(arg)   # raises, keeping the old one, when refused
        old, _allocator_installed = _allocator_installed, new
        if new is not None:
            new.pin(+1)
        if old is not None:
            # The library no longer calls them: nothing it allocated is live.
            old.pin(-1)


def current_allocator():
    """(malloc, realloc, free) given to set_allocator() and installed now, or None."""
    installed = _allocator_installed
    return installed.callables if installed is not None else None


_libc_funcs = None


def _libc():
    """(malloc, realloc, free) of the C library, through ctypes."""
    global _libc_funcs
    if _libc_funcs is None:
        failures = []
        for name in (None, ctypes.util.find_library("c")):
            try:
                libc = ctypes.CDLL(name)    # a private instance: its prototypes are ours
                malloc, realloc, free = libc.malloc, libc.realloc, libc.free
            except (OSError, AttributeError, TypeError) as exc:
                failures.append("%s: %s" % (name, exc))
                continue
            malloc.restype, malloc.argtypes = c_void_p, [c_size_t]
            realloc.restype, realloc.argtypes = c_void_p, [c_void_p, c_size_t]
            free.restype, free.argtypes = None, [c_void_p]
            _libc_funcs = (malloc, realloc, free)
            break
        else:
            raise OSError("the C library's malloc is not reachable through ctypes: %s"
                          % "; ".join(failures))
    return _libc_funcs


class CountingAllocator:
    """An allocator for set_allocator() over the C library's malloc, realloc and free.

    Counts the library's blocks and bytes, and fails allocations on purpose:

      max_bytes   an allocation that would take the live bytes above it fails
      fail_after  the next fail_after allocations (malloc and realloc calls)
                  succeed, every later one fails; 0 fails them all

    Both may be changed at any time (None: no limit); setting fail_after
    starts its count again. Counters: blocks and
    bytes (live now), peak_bytes, calls (malloc and realloc calls), failures
    (those that returned NULL). Install it with install() (or a with
    statement, which restores the C library's allocator at its end: free
    every object inside it) and remove it with uninstall(); both follow the
    rules of set_allocator().

        with vae.CountingAllocator() as counter:
            with vae.Model.create_mlp(784, [400], 20) as m:
                print(counter.blocks, counter.bytes)
    """

    def __init__(self, max_bytes=None, fail_after=None):
        self._lock = threading.RLock()   # reentrant: a finalizer may free inside malloc
        self._sizes = {}
        self._granted = 0
        self._fail_after = None
        self.max_bytes = max_bytes
        self.fail_after = fail_after
        self.blocks = 0
        self.bytes = 0
        self.peak_bytes = 0
        self.calls = 0
        self.failures = 0
        self._libc = _libc()

    @property
    def fail_after(self):
        return self._fail_after

    @fail_after.setter
    def fail_after(self, value):
        if value is not None:
            value = _size(value, "fail_after")
        with self._lock:
            self._fail_after = value
            self._granted = 0

    def _refused(self, extra):
        fail_after, max_bytes = self._fail_after, self.max_bytes
        return ((fail_after is not None and self._granted >= fail_after)
                or (max_bytes is not None and self.bytes + extra > max_bytes))

    def _granted_now(self):
        self._granted += 1
        if self.bytes > self.peak_bytes:
            self.peak_bytes = self.bytes

    def malloc(self, n):
        with self._lock:
            self.calls += 1
            p = None if self._refused(n) else self._libc[0](n)
            if not p:
                self.failures += 1
                return None
            self._sizes[p] = n
            self.blocks += 1
            self.bytes += n
            self._granted_now()
            return p

    def realloc(self, p, n):
        with self._lock:
            self.calls += 1
            old = self._sizes.get(p)
            if old is None:
                raise ValueError("realloc of 0x%x, a block this allocator did not allocate"
                                 % (p or 0))
            q = None if self._refused(n - old) else self._libc[1](p, n)
            if not q:
                self.failures += 1
                return None
            del self._sizes[p]
            self._sizes[q] = n
            self.bytes += n - old
            self._granted_now()
            return q

    def free(self, p):
        with self._lock:
            n = self._sizes.pop(p, None)
            if n is None:
                raise ValueError("free of 0x%x, a block this allocator did not allocate"
                                 % (p or 0))
            self._libc[2](p)
            self.blocks -= 1
            self.bytes -= n

    @property
    def installed(self):
        """Whether this allocator is the library's now."""
        return current_allocator() == (self.malloc, self.realloc, self.free)

    def install(self):
        set_allocator(self.malloc, self.realloc, self.free)
        return self

    def uninstall(self):
        """Restores the C library's allocator if this one is installed."""
        if self.installed:
            set_allocator()

    def __enter__(self):
        return self.install()

    def __exit__(self, exc_type, exc, tb):
        try:
            self.uninstall()
        except StateError:
            if exc_type is None:
                raise
            # Do not hide the exception in flight; this allocator stays installed.

    def __repr__(self):
        return "<libvae.CountingAllocator %d blocks, %d bytes%s>" % (
            self.blocks, self.bytes, " (installed)" if self.installed else "")


# ---------------------------------------------------------------------------
# Lifetimes
#
# Every handle counts its borrows: calls running on it, memoryviews over its
# memory, and (for models, objectives, optimizers and contexts) the trainers
# using it. close() marks the object closed at once; the C object is freed
# when the last borrow ends. A Trainer holds a Python reference to what it
# borrows, so nothing it uses can be collected first, and in cyclic garbage
# (where finalizers run in any order) the borrow count still defers the free
# of a model until its trainer is gone.
# ---------------------------------------------------------------------------

_lock = threading.RLock()


def _free_c(func_name, ptr):
    """Calls the C free function; the one place handles are freed (tests wrap it)."""
    getattr(_lib, func_name)(ptr)


class _Handle:
    """Owner of one C object, freed by close(), a with-statement or __del__."""

    _free = None            # name of the C function that frees the handle
    # Class-level defaults keep close() and __del__ safe on half-made objects.
    _ptr = None             # the C pointer, until it is freed
    _open = False           # False once closed (or consumed)
    _borrows = 0
    _dependents = ()
    _closed_why = None

    def __init__(self):
        raise TypeError("use the class methods to create a %s" % type(self).__name__)

    @classmethod
    def _wrap(cls, ptr):
        self = cls.__new__(cls)
        self._adopt(ptr)
        return self

    def _adopt(self, ptr):
        self._ptr = ptr
        self._borrows = 0
        self._dependents = weakref.WeakSet()   # trainers to close before this object
        self._closed_why = None
        self._setup()
        self._open = True

    def _setup(self):
        pass

    @property
    def closed(self):
        """True once close() was called (or the object was consumed or cascaded)."""
        return not self._open

    def _closed_error(self):
        return InvalidArgument(ERR_INVALID, "this %s %s" % (
            type(self).__name__, self._closed_why or "is closed"))

    def _p(self):
        """The C pointer of an open object (for calls that need no borrow)."""
        if not self._open:
            raise self._closed_error()
        return self._ptr

    def close(self):
        """Closes the object: unusable from now on, freed as soon as nothing borrows it.

        Closes the trainers that use it first. Safe to call more than once.
        """
        self._close(None)

    def _close(self, why):
        with _lock:
            if not self._open:
                return
            self._open = False
            self._closed_why = why
            dependents = list(self._dependents)
        for dep in dependents:
            dep._close("was closed with its %s" % type(self).__name__)
        self._release_views()
        with _lock:
            self._maybe_free()

    def _release_views(self):
        pass

    def _maybe_free(self):
        # With _lock held.
        if self._open or self._borrows or not self._ptr:
            return
        ptr, self._ptr = self._ptr, None
        _free_c(self._free, ptr)
        self._freed()

    def _freed(self):
        """After the C object is freed (with _lock held)."""

    def __enter__(self):
        self._p()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __del__(self):
        try:
            self._close("was garbage-collected")
        except Exception:  # noqa: BLE001 - nothing may escape a finalizer
            pass

    def __repr__(self):
        if not self._open:
            state = "closed"
        else:
            state = "at 0x%x" % self._ptr
        return "<libvae.%s %s>" % (type(self).__name__, state)


def _borrow(objs):
    """Borrows every handle of objs (None entries are skipped) and returns their pointers.

    Raises the closed-object error, without borrowing anything, when one is closed.
    """
    with _lock:
        for obj in objs:
            if obj is not None and not obj._open:
                raise obj._closed_error()
        for obj in objs:
            if obj is not None:
                obj._borrows += 1
        return [None if obj is None else obj._ptr for obj in objs]


def _unborrow(objs):
    with _lock:
        for obj in objs:
            if obj is not None:
                obj._borrows -= 1
                obj._maybe_free()


class _Use:
    """with _Use(a, b) as (pa, pb): the objects cannot be freed during the block."""

    __slots__ = ("objs",)

    def __init__(self, *objs):
        self.objs = objs

    def __enter__(self):
        return _borrow(self.objs)

    def __exit__(self, *exc_info):
        _unborrow(self.objs)


_view_types = {}


def _view_type(count):
    """A ctypes float array type of `count` items whose instances hold a borrow."""
    t = _view_types.get(count)
    if t is None:
        class _BorrowedFloats(c_float * count):
            def __del__(self):
                try:
                    _unborrow((self._owner,))
                except Exception:  # noqa: BLE001 - nothing may escape a finalizer
                    pass
        t = _view_types[count] = _BorrowedFloats
    return t


def _borrowed_view(owner, ptr, count):
    """A float32 memoryview over `count` floats of library memory at ptr, owned by owner.

    The ctypes array under the view holds owner and a borrow of it, so the C
    memory stays allocated while any view derived from it exists, even after
    owner.close(). Call with owner borrowed (inside _Use).
    """
    addr = ctypes.cast(ptr, c_void_p).value
    if not addr or count == 0:
        return memoryview(array.array("f"))
    arr = _view_type(count).from_address(addr)
    _borrow((owner,))
    arr._owner = owner
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
            pass  # exported further (numpy, memoryview(view)): its borrow defers the free
    views.clear()


def _create(func, *args):
    out = c_void_p()
    func(byref(out), *args)
    return out.value


# ---------------------------------------------------------------------------
# Random numbers
# ---------------------------------------------------------------------------


class Rng(_Handle):
    """A seeded xoshiro256** generator: the same seed gives the same stream."""

    _free = "vae_rng_free"

    def __init__(self, seed=0):
        self._adopt(_create(_lib.vae_rng_create, _seed(seed)))

    def normal(self, n, out=None):
        """n standard normal draws, as array('f') (or into out)."""
        n = _size(n, "n")
        o = _as_output(out, n, "out")
        with _Use(self) as (r,):
            _lib.vae_rng_normal(r, o.ptr, n)
        return o.obj

    def uniform(self, n, out=None):
        """n uniform draws in [0, 1), as array('f') (or into out)."""
        n = _size(n, "n")
        o = _as_output(out, n, "out")
        with _Use(self) as (r,):
            _lib.vae_rng_uniform(r, o.ptr, n)
        return o.obj


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------


class _LayerInfo:
    """The layer getters shared by Layer and ModelLayer; _layer_ptr() gives the C layer."""

    def _get(self, func, *args):
        with self._layer_use() as ptr:
            return func(ptr, *args)

    @property
    def kind(self):
        """LAYER_DENSE, LAYER_CONV2D or LAYER_CONV2D_TRANSPOSE."""
        return self._get(_lib.vae_layer_kind)

    @property
    def kind_name(self):
        """"dense", "conv2d" or "conv2d_transpose"."""
        kind = self.kind
        return _LAYER_KIND_NAMES.get(kind, str(kind))

    @property
    def activation(self):
        """The fused activation, an ACT_* value."""
        return self._get(_lib.vae_layer_activation)

    @property
    def activation_name(self):
        act = self.activation
        return _ACTIVATION_NAMES.get(act, str(act))

    @property
    def input_size(self):
        return self._get(_lib.vae_layer_input_size)

    @property
    def output_size(self):
        return self._get(_lib.vae_layer_output_size)

    def get_param(self, param):
        """One number of the geometry: a LAYER_* value or a name such as "stride"."""
        param = _int_enum(param, _LAYER_PARAMS, "layer parameter")
        value = c_size_t()
        self._get(_lib.vae_layer_get_param, param, byref(value))
        return value.value

    @property
    def n_params(self):
        """Number of parameters (weights then biases)."""
        return self.get_param(LAYER_PARAMS)

    @property
    def geometry(self):
        """Every vae_layer_get_param() value, as an ordered dict name -> int."""
        value = c_size_t()
        out = collections.OrderedDict()
        with self._layer_use() as ptr:
            for name, param in _LAYER_PARAMS.items():
                _lib.vae_layer_get_param(ptr, param, byref(value))
                out[name] = value.value
        return out


class _LayerUse:
    __slots__ = ("use", "ptr_fn")

    def __init__(self, use, ptr_fn):
        self.use, self.ptr_fn = use, ptr_fn

    def __enter__(self):
        self.use.__enter__()
        return self.ptr_fn()

    def __exit__(self, *exc_info):
        self.use.__exit__(*exc_info)


class Layer(_LayerInfo, _Handle):
    """A standalone layer: Layer.dense(), Layer.conv2d() or Layer.conv2d_transpose().

    It can run on its own (init, forward, backward, params, grads) or be handed
    to a model with Model.add_encoder_layer()/add_decoder_layer(), which
    consume it: this object is then closed, whether the call succeeded (the
    model owns the C layer) or failed (the C layer is freed). Read a model's
    layers through Model.layers.
    """

    _free = "vae_layer_free"

    def _setup(self):
        self._last_batch = None
        self._views = {}

    def _layer_use(self):
        return _LayerUse(_Use(self), lambda: self._ptr)

    def _release_views(self):
        _release_views(self._views)

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

    def init(self, rng):
        """Draws weights and biases uniform in +-1/sqrt(fan_in)."""
        _check(rng, Rng, "rng")
        with _Use(self, rng) as (p, r):
            _lib.vae_layer_init(p, r)

    def forward(self, x, batch=None, out=None):
        """y[batch][out] = layer(x[batch][in])."""
        xb = _as_input(x, "x")
        batch = _batch(xb, self.input_size, batch, "x")
        o = _as_output(out, batch * self.output_size, "out")
        with _Use(self) as (p,):
            _lib.vae_layer_forward(p, xb.ptr, batch, o.ptr)
        self._last_batch = batch
        return o.obj

    def backward(self, dy, dx=True):
        """Adds dL/dparams of the last forward() into grads(); returns dx.

        dx=True returns a new array('f'), dx=False or None skips it, and a
        writable float32 buffer receives it.
        """
        self._p()
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
        with _Use(self) as (p,):
            _lib.vae_layer_backward(p, dyb.ptr, dxo.ptr if dxo else None)
        return dxo.obj if dxo else None

    def _view(self, kind):
        with _Use(self) as (p,):
            view = self._views.get(kind)
            if view is not None and _view_alive(view):
                return view
            count = c_size_t()
            func = _lib.vae_layer_params if kind == "params" else _lib.vae_layer_grads
            view = _borrowed_view(self, func(p, byref(count)), count.value)
            self._views[kind] = view
            return view

    def params(self):
        """Borrowed, writable float32 memoryview of the parameters (W then b), no copy.

        Valid until the layer is closed or added to a model; adding it fails
        with StateError while a view derived from this one still exists.
        """
        return self._view("params")

    def grads(self):
        """Borrowed float32 memoryview of the gradients, same layout as params()."""
        return self._view("grads")

    def _consume(self, why):
        """Takes the C pointer out of this object, which is closed from now on.

        Returns the pointer; raises StateError (and keeps the layer) while a
        view over its memory or a call on it is alive.
        """
        with _lock:
            if not self._open:
                raise self._closed_error()
        self._release_views()
        with _lock:
            if not self._open:
                raise self._closed_error()
            if self._borrows:
                raise StateError(ERR_STATE, "the Layer cannot be handed to a model while a "
                                            "memoryview over its params() or grads() (or a "
                                            "call on it) is alive")
            ptr, self._ptr = self._ptr, None
            self._open = False
            self._closed_why = why
            return ptr

    def __repr__(self):
        if not self._open:
            return "<libvae.Layer %s>" % (self._closed_why or "closed")
        return "<libvae.Layer %s %d -> %d, %s>" % (self.kind_name, self.input_size,
                                                    self.output_size, self.activation_name)


class ModelLayer(_LayerInfo):
    """A layer of a model, read-only (from Model.layers or Model.layer(i)).

    Holds a reference to its model, so the model outlives it; once the model is
    closed, every getter raises InvalidArgument.
    """

    __slots__ = ("model", "_ptr", "index", "part", "name")

    def __init__(self, model, ptr, index, part, name):
        self.model = model
        self._ptr = ptr
        self.index = index      # position in Model.layers when it was read
        self.part = part        # "encoder", "head" or "decoder"
        self.name = name        # "encoder.0", "head", "decoder.1": prefix of its tensors

    def _layer_use(self):
        return _LayerUse(_Use(self.model), lambda: self._ptr)

    def __repr__(self):
        if self.model.closed:
            return "<libvae.ModelLayer %s of a closed Model>" % self.name
        return "<libvae.ModelLayer %s: %s %d -> %d, %s>" % (
            self.name, self.kind_name, self.input_size, self.output_size, self.activation_name)


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------

TensorInfo = collections.namedtuple("TensorInfo", "name index shape offset count")
TensorInfo.__doc__ = """A named tensor of a built model: its name ("encoder.0.weight"),
index, PyTorch shape (a tuple), offset of its first float in Model.params() and
number of floats."""


class Model(_Handle):
    """A VAE: architecture and parameters.

    Model(input_dim, latent_dim, likelihood) then add_encoder_layer(),
    add_decoder_layer() and build(); or Model.create_mlp(...), Model.load(path),
    Model.load_mem(data).
    """

    _free = "vae_model_free"

    def __init__(self, input_dim, latent_dim, likelihood=LIKELIHOOD_BERNOULLI):
        self._adopt(_create(_lib.vae_model_create, _size(input_dim, "input_dim"),
                            _size(latent_dim, "latent_dim"),
                            _int_enum(likelihood, _LIKELIHOODS, "likelihood")))

    def _setup(self):
        self._views = {}

    def _release_views(self):
        _release_views(self._views)

    @classmethod
    def create_mlp(cls, input_dim, hidden, latent_dim, activation=ACT_RELU,
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

    mlp = create_mlp

    # -- construction --------------------------------------------------------

    def _add(self, func, layer, what):
        if not isinstance(layer, Layer):
            raise TypeError("layer must be a Layer, not %s" % type(layer).__name__)
        why = "was consumed by Model.%s()" % what
        try:
            borrowed = _borrow((self,))
        except InvalidArgument:
            # As the C call with a NULL model: the layer is consumed (freed) all the same.
            ptr = layer._consume(why)
            _free_c(Layer._free, ptr)
            raise
        try:
            holder = c_void_p(layer._consume(why))
            try:
                func(borrowed[0], byref(holder))
            finally:
                if holder.value:
                    # The library sets it to NULL in every case; should it not,
                    # vae_layer_free() is documented as harmless here.
                    _free_c(Layer._free, holder.value)
        finally:
            _unborrow((self,))

    def add_encoder_layer(self, layer):
        """Appends a Layer to the encoder. Consumes it: `layer` is closed afterwards,
        whether the call succeeds (the model owns it) or fails (it is freed)."""
        self._add(_lib.vae_model_add_encoder_layer, layer, "add_encoder_layer")

    def add_decoder_layer(self, layer):
        """Appends a Layer to the decoder; consumes it as add_encoder_layer() does."""
        self._add(_lib.vae_model_add_decoder_layer, layer, "add_decoder_layer")

    def build(self, seed=0):
        """Checks the shapes, appends the Gaussian head, draws the weights from seed."""
        seed = _seed(seed)
        with _Use(self) as (m,):
            _lib.vae_model_build(m, seed)

    # -- settings ------------------------------------------------------------

    def set_param(self, param, value):
        """Sets a MODEL_* setting (or its name, "gaussian_sigma")."""
        param = _int_enum(param, _MODEL_PARAMS, "model parameter")
        value = _number(value, "value")
        with _Use(self) as (m,):
            _lib.vae_model_set_param(m, param, value)

    def get_param(self, param):
        param = _int_enum(param, _MODEL_PARAMS, "model parameter")
        value = c_double()
        with _Use(self) as (m,):
            _lib.vae_model_get_param(m, param, byref(value))
        return value.value

    @property
    def gaussian_sigma(self):
        """Sigma of the Gaussian likelihood (default 1)."""
        return self.get_param(MODEL_GAUSSIAN_SIGMA)

    @gaussian_sigma.setter
    def gaussian_sigma(self, sigma):
        self.set_param(MODEL_GAUSSIAN_SIGMA, sigma)

    def set_gaussian_sigma(self, sigma):
        self.set_param(MODEL_GAUSSIAN_SIGMA, sigma)

    # -- properties ----------------------------------------------------------

    def _get(self, func, *args):
        with _Use(self) as (m,):
            return func(m, *args)

    @property
    def input_dim(self):
        return self._get(_lib.vae_model_input_dim)

    @property
    def latent_dim(self):
        return self._get(_lib.vae_model_latent_dim)

    @property
    def likelihood(self):
        return self._get(_lib.vae_model_likelihood)

    @property
    def built(self):
        return bool(self._get(_lib.vae_model_is_built))

    @property
    def n_params(self):
        """Number of parameters of a built model (0 before build())."""
        return self._get(_lib.vae_model_param_count)

    param_count = n_params

    @property
    def layer_count(self):
        """Encoder layers, then (once built) the head, then decoder layers."""
        return self._get(_lib.vae_model_layer_count)

    @property
    def encoder_layer_count(self):
        """Encoder layers, the head not included."""
        return self._get(_lib.vae_model_encoder_layer_count)

    def layer(self, index):
        """ModelLayer number `index` (negative indices count from the end)."""
        with _Use(self) as (m,):
            count = _lib.vae_model_layer_count(m)
            i = operator.index(index)
            if i < 0:
                i += count
            if not 0 <= i < count:
                raise InvalidArgument(ERR_INVALID, "layer index %d out of range: the model has "
                                                   "%d layers" % (index, count))
            enc = _lib.vae_model_encoder_layer_count(m)
            built = _lib.vae_model_is_built(m)
            if i < enc:
                part, name = "encoder", "encoder.%d" % i
            elif built and i == enc:
                part, name = "head", "head"
            else:
                part = "decoder"
                name = "decoder.%d" % (i - enc - (1 if built else 0))
            ptr = _lib.vae_model_layer(m, i)
            if not ptr:
                raise InvalidArgument(ERR_INVALID, "vae_model_layer returned NULL for "
                                                   "layer %d" % i)
            return ModelLayer(self, ptr, i, part, name)

    @property
    def layers(self):
        """Tuple of ModelLayer: encoder layers, the head (once built), decoder layers."""
        return tuple(self.layer(i) for i in range(self.layer_count))

    def params(self):
        """Borrowed, writable float32 memoryview of the parameter slab (no copy).

        Layout: layers in Model.layers order, each its weights then biases.
        Valid while the model is open; close() releases it, and the model's
        memory stays allocated while a view derived from it exists.
        """
        with _Use(self) as (m,):
            view = self._views.get("params")
            if view is not None and _view_alive(view):
                return view
            count = c_size_t()
            ptr = _lib.vae_model_params(m, byref(count))
            if not ptr:
                raise StateError(ERR_STATE, "Model.params: the model is not built")
            view = _borrowed_view(self, ptr, count.value)
            self._views["params"] = view
            return view

    # -- named tensors -------------------------------------------------------

    @property
    def tensor_count(self):
        return self._get(_lib.vae_model_tensor_count)

    @property
    def tensor_names(self):
        """Names in slab order: encoder.<i>.weight/bias, head.weight/bias, decoder.<j>.*."""
        with _Use(self) as (m,):
            return [_lib.vae_model_tensor_name(m, i).decode("utf-8")
                    for i in range(_lib.vae_model_tensor_count(m))]

    def _tensor_index(self, m, key):
        if isinstance(key, str):
            index = c_size_t()
            _lib.vae_model_tensor_find(m, key.encode("utf-8"), byref(index))
            return index.value
        return _size(key, "tensor index")

    def tensor_index(self, name):
        """Index of the tensor called name."""
        if not isinstance(name, str):
            raise TypeError("name must be a str, not %s" % type(name).__name__)
        with _Use(self) as (m,):
            return self._tensor_index(m, name)

    def tensor_info(self, key):
        """TensorInfo of a tensor given by name or index."""
        with _Use(self) as (m,):
            index = self._tensor_index(m, key)
            shape = (c_size_t * 4)()
            ndim, offset, count = c_size_t(), c_size_t(), c_size_t()
            _lib.vae_model_tensor_info(m, index, shape, byref(ndim), byref(offset),
                                       byref(count))
            name = _lib.vae_model_tensor_name(m, index).decode("utf-8")
            return TensorInfo(name, index, tuple(shape[:ndim.value]), offset.value, count.value)

    def tensor_shape(self, key):
        """PyTorch shape of a tensor, as a tuple."""
        return self.tensor_info(key).shape

    @property
    def tensors(self):
        """Ordered dict name -> TensorInfo of every tensor."""
        return collections.OrderedDict((info.name, info) for info in
                                       (self.tensor_info(i) for i in range(self.tensor_count)))

    def get_tensor(self, key, out=None):
        """A copy of a tensor (by name or index) in its PyTorch layout, array('f')."""
        with _Use(self) as (m,):
            info = self.tensor_info(key)
            o = _as_output(out, info.count, "out")
            _lib.vae_model_tensor_get(m, info.index, o.ptr, info.count)
        return o.obj

    def set_tensor(self, key, values):
        """Copies values (finite floats, the tensor's count) into a tensor."""
        vb = _as_input(values, "values")
        with _Use(self) as (m,):
            index = self._tensor_index(m, key)
            _lib.vae_model_tensor_set(m, index, vb.ptr, vb.n)

    # -- files ---------------------------------------------------------------

    def save(self, path):
        """Writes the model to path atomically (temporary file, then rename)."""
        path = _path(path)
        with _Use(self) as (m,):
            _lib.vae_model_save(m, path)

    @classmethod
    def load(cls, path):
        """Reads a model written by save(), or the model part of a checkpoint written by
        Trainer.save(); the model is built."""
        return cls._wrap(_create(_lib.vae_model_load, _path(path)))

    def save_mem(self):
        """The bytes save() would write."""
        with _Use(self) as (m,):
            size = c_size_t()
            _lib.vae_model_save_mem(m, None, 0, byref(size))
            buf = ctypes.create_string_buffer(max(size.value, 1))
            _lib.vae_model_save_mem(m, buf, size.value, byref(size))
            return buf.raw[:size.value]

    @classmethod
    def load_mem(cls, data):
        """A model from bytes (any bytes-like object) produced by save_mem() or save()."""
        raw = data if isinstance(data, bytes) else memoryview(data).cast("B").tobytes()
        return cls._wrap(_create(_lib.vae_model_load_mem, raw, len(raw)))

    def __repr__(self):
        if not self._open:
            return "<libvae.Model closed>"
        return "<libvae.Model %d -> %d, %s, %s>" % (
            self.input_dim, self.latent_dim,
            _LIKELIHOOD_NAMES.get(self.likelihood, "likelihood %d" % self.likelihood),
            "%d parameters" % self.n_params if self.built else "not built")


# ---------------------------------------------------------------------------
# Contexts and inference
# ---------------------------------------------------------------------------


class Context(_Handle):
    """Workspace and worker threads: every inference and training call runs on one.

    One caller at a time: a concurrent second call (another thread, or a
    progress callback of a training epoch running on it) fails with StateError.
    """

    _free = "vae_context_free"

    def __init__(self, threads=1):
        self._adopt(_create(_lib.vae_context_create))
        if threads != 1:
            try:
                self.threads = threads
            except BaseException:
                self.close()
                raise

    @property
    def threads(self):
        """Number of workers sharing each batch (1 to 64; results do not depend on it).

        More than one needs a single-threaded BLAS: blas_set_threads(1).
        """
        with _Use(self) as (c,):
            return _lib.vae_context_threads(c)

    @threads.setter
    def threads(self, n):
        self.set_threads(n)

    def set_threads(self, n):
        n = _size(n, "n")
        with _Use(self) as (c,):
            _lib.vae_context_set_threads(c, n)

    def reserve(self, model, max_batch):
        """Sizes the workspace for batches up to max_batch of this model."""
        _check(model, Model, "model")
        max_batch = _size(max_batch, "max_batch")
        with _Use(self, model) as (c, m):
            _lib.vae_context_reserve(c, m, max_batch)

    def encode(self, model, x, n=None, mu=None, logvar=None):
        return encode(self, model, x, n, mu, logvar)

    def decode(self, model, z, n=None, out=None):
        return decode(self, model, z, n, out)

    def reconstruct(self, model, x, n=None, out=None):
        return reconstruct(self, model, x, n, out)

    def sample(self, model, rng, n, out=None):
        return sample(self, model, rng, n, out)

    def log_likelihood(self, model, x, k, rng, n=None):
        return log_likelihood(self, model, x, k, rng, n)

    def elbo_evaluate(self, model, elbo, x, n=None, eps=None, rng=None, per_sample=False):
        return elbo_evaluate(self, model, elbo, x, n, eps, rng, per_sample)

    def evaluate_dataset(self, model, elbo, dataset, rng=None, per_sample=False):
        return evaluate_dataset(self, model, elbo, dataset, rng, per_sample)

    def anomaly_score(self, model, x, kind, k, rng, n=None):
        return anomaly_score(self, model, x, kind, k, rng, n)

    for _f in (encode, decode, reconstruct, sample, log_likelihood, elbo_evaluate,
               evaluate_dataset, anomaly_score):
        _f.__doc__ = "The module function %s() with this context." % _f.__name__
    del _f


def _model_dims(model):
    with _Use(model) as (m,):
        return _lib.vae_model_input_dim(m), _lib.vae_model_latent_dim(m)


def encode(ctx, model, x, n=None, mu=None, logvar=None):
    """(mu, logvar) of q(z|x), each n * latent_dim floats."""
    _check(ctx, Context, "ctx")
    _check(model, Model, "model")
    input_dim, latent_dim = _model_dims(model)
    xb = _as_input(x, "x")
    n = _batch(xb, input_dim, n, "x")
    mo = _as_output(mu, n * latent_dim, "mu")
    lo = _as_output(logvar, n * latent_dim, "logvar")
    with _Use(ctx, model) as (c, m):
        _lib.vae_encode(c, m, xb.ptr, n, mo.ptr, lo.ptr)
    return mo.obj, lo.obj


def decode(ctx, model, z, n=None, out=None):
    """Mean of p(x|z), n * input_dim floats: probabilities sigmoid(l) (Bernoulli), means
    (Gaussian) or 1/(1 - e^-l) - 1/l, in [0, 1] (continuous Bernoulli)."""
    _check(ctx, Context, "ctx")
    _check(model, Model, "model")
    input_dim, latent_dim = _model_dims(model)
    zb = _as_input(z, "z")
    n = _batch(zb, latent_dim, n, "z")
    o = _as_output(out, n * input_dim, "out")
    with _Use(ctx, model) as (c, m):
        _lib.vae_decode(c, m, zb.ptr, n, o.ptr)
    return o.obj


def reconstruct(ctx, model, x, n=None, out=None):
    """decode(mu(x)) for each input, n * input_dim floats."""
    _check(ctx, Context, "ctx")
    _check(model, Model, "model")
    input_dim, _ = _model_dims(model)
    xb = _as_input(x, "x")
    n = _batch(xb, input_dim, n, "x")
    o = _as_output(out, n * input_dim, "out")
    with _Use(ctx, model) as (c, m):
        _lib.vae_reconstruct(c, m, xb.ptr, n, o.ptr)
    return o.obj


def sample(ctx, model, rng, n, out=None):
    """Decodes n draws of z ~ N(0, I) from rng, n * input_dim floats."""
    _check(ctx, Context, "ctx")
    _check(model, Model, "model")
    _check(rng, Rng, "rng")
    input_dim, _ = _model_dims(model)
    n = _size(n, "n")
    o = _as_output(out, n * input_dim, "out")
    with _Use(ctx, model, rng) as (c, m, r):
        _lib.vae_sample(c, m, r, n, o.ptr)
    return o.obj


def log_likelihood(ctx, model, x, k, rng, n=None):
    """Importance-sampled log p(x_i) with k samples: array('d') of n values, in nats."""
    _check(ctx, Context, "ctx")
    _check(model, Model, "model")
    _check(rng, Rng, "rng")
    input_dim, _ = _model_dims(model)
    xb = _as_input(x, "x")
    n = _batch(xb, input_dim, n, "x")
    k = _size(k, "k")
    out, ptr, _keep = _doubles(n)
    with _Use(ctx, model, rng) as (c, m, r):
        _lib.vae_log_likelihood(c, m, xb.ptr, n, k, r, ptr)
    return out


def anomaly_score(ctx, model, x, kind, k, rng, n=None):
    """Anomaly score of each input (higher = less like the training data): array('d') of n
    values, in nats. Since libvae 1.1.

    kind is ANOMALY_NEG_ELBO ("neg_elbo" or "elbo"), ANOMALY_NEG_LOG_LIKELIHOOD
    ("neg_log_likelihood" or "nll"), ANOMALY_RECON_PROB ("recon_prob" or "recon") or
    ANOMALY_COMPLEXITY ("complexity"); k is the number of draws of z (importance samples for
    the likelihood kinds). See vae_anomaly_score() in vae/vae.h for each definition.
    """
    fn = _need("vae_anomaly_score")
    _check(ctx, Context, "ctx")
    _check(model, Model, "model")
    _check(rng, Rng, "rng")
    kind = _int_enum(kind, _ANOMALY_KINDS, "kind")
    input_dim, _ = _model_dims(model)
    xb = _as_input(x, "x")
    n = _batch(xb, input_dim, n, "x")
    k = _size(k, "k")
    out, ptr, _keep = _doubles(n)
    with _Use(ctx, model, rng) as (c, m, r):
        fn(c, m, xb.ptr, n, kind, k, r, ptr)
    return out


def _draws(elbo):
    """Rows of noise per input that a pass of the objective takes."""
    if elbo.objective == OBJECTIVE_AUTOENCODER or _lib.vae_version_number() < 10200:
        return 1
    return elbo.samples


def elbo_evaluate(ctx, model, elbo, x, n=None, eps=None, rng=None, per_sample=False):
    """The loss without gradients: EpochStats (per_sample=True adds each sample's loss).

    The noise comes from eps (n * samples * latent_dim floats, draw j of input i in row
    i * samples + j) when given, else from rng.
    """
    _check(ctx, Context, "ctx")
    _check(model, Model, "model")
    _check(elbo, Elbo, "elbo")
    _check(rng, Rng, "rng", optional=True)
    input_dim, latent_dim = _model_dims(model)
    xb = _as_input(x, "x")
    n = _batch(xb, input_dim, n, "x")
    eb = None
    if eps is not None:
        eb = _as_input(eps, "eps")
        _batch(eb, latent_dim * _draws(elbo), n, "eps")
    ps, ps_ptr, _keep = _doubles(n) if per_sample else (None, None, None)
    st = _new_stats()
    with _Use(ctx, model, elbo, rng) as (c, m, e, r):
        _lib.vae_elbo_evaluate(c, m, e, xb.ptr, n, eb.ptr if eb else None, r, ps_ptr,
                               byref(st))
    return _stats(st, ps)


def evaluate_dataset(ctx, model, elbo, dataset, rng=None, per_sample=False):
    """Means over a whole dataset (not binarized): EpochStats, with each sample's loss
    when per_sample is true. rng gives the noise (None only for the autoencoder)."""
    _check(ctx, Context, "ctx")
    _check(model, Model, "model")
    _check(elbo, Elbo, "elbo")
    _check(dataset, Dataset, "dataset")
    _check(rng, Rng, "rng", optional=True)
    with _Use(ctx, model, elbo, dataset, rng) as (c, m, e, d, r):
        ps, ps_ptr, _keep = (_doubles(_lib.vae_dataset_count(d)) if per_sample
                             else (None, None, None))
        st = _new_stats()
        _lib.vae_evaluate_dataset(c, m, e, d, r, ps_ptr, byref(st))
    return _stats(st, ps)


# ---------------------------------------------------------------------------
# Objective
# ---------------------------------------------------------------------------


class Elbo(_Handle):
    """The objective: negative ELBO with a KL weight beta, the importance-weighted bound
    (IWAE), or a plain autoencoder; with draws per input, KL warm-up and free bits."""

    _free = "vae_elbo_free"

    def __init__(self, beta=None, objective=None, samples=None, warmup=None, free_bits=None):
        self._adopt(_create(_lib.vae_elbo_create))
        try:
            for name, value in (("beta", beta), ("objective", objective),
                                ("samples", samples), ("warmup", warmup),
                                ("free_bits", free_bits)):
                if value is not None:
                    setattr(self, name, value)
        except BaseException:
            self.close()
            raise

    def set_param(self, param, value):
        """Sets an ELBO_* setting (or its name: "beta", "objective", "samples", "warmup",
        "free_bits"); the next call uses it."""
        param = _int_enum(param, _ELBO_PARAMS, "objective parameter")
        value = _number(value, "value")
        with _Use(self) as (e,):
            _lib.vae_elbo_set_param(e, param, value)

    def get_param(self, param):
        param = _int_enum(param, _ELBO_PARAMS, "objective parameter")
        value = c_double()
        with _Use(self) as (e,):
            _lib.vae_elbo_get_param(e, param, byref(value))
        return value.value

    @property
    def beta(self):
        """Weight of the KL term (finite, >= 0; default 1)."""
        return self.get_param(ELBO_BETA)

    @beta.setter
    def beta(self, beta):
        self.set_param(ELBO_BETA, beta)

    @property
    def objective(self):
        """OBJECTIVE_ELBO (default), OBJECTIVE_AUTOENCODER or OBJECTIVE_IWAE; a name
        ("elbo", "autoencoder", "iwae") is accepted when set."""
        return int(self.get_param(ELBO_OBJECTIVE))

    @objective.setter
    def objective(self, objective):
        self.set_param(ELBO_OBJECTIVE, _int_enum(objective, _OBJECTIVES, "objective"))

    @property
    def samples(self):
        """Draws of z per input, 1 to 4096 (default 1); IWAE's k. Since 1.2."""
        return int(self.get_param(ELBO_SAMPLES))

    @samples.setter
    def samples(self, k):
        self.set_param(ELBO_SAMPLES, k)

    @property
    def warmup(self):
        """KL warm-up over this many trainer steps; 0 (default) is off. Since 1.2."""
        return int(self.get_param(ELBO_WARMUP))

    @warmup.setter
    def warmup(self, steps):
        self.set_param(ELBO_WARMUP, steps)

    @property
    def free_bits(self):
        """Free bits in nats per latent dimension for training; 0 (default) is off.
        Since 1.2."""
        return self.get_param(ELBO_FREE_BITS)

    @free_bits.setter
    def free_bits(self, nats):
        self.set_param(ELBO_FREE_BITS, nats)

    def evaluate(self, ctx, model, x, n=None, eps=None, rng=None, per_sample=False):
        """elbo_evaluate(ctx, model, self, ...)."""
        return elbo_evaluate(ctx, model, self, x, n, eps, rng, per_sample)


# ---------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------


def _opt_property(param, doc, as_bool=False):
    def fget(self):
        value = self.get_param(param)
        return bool(value) if as_bool else value

    def fset(self, value):
        self.set_param(param, value)
    return property(fget, fset, doc=doc)


class Optimizer(_Handle):
    """The kind of update and its hyperparameters (the state lives in a Trainer).

    Optimizer("adam", lr=1e-3) or Optimizer(OPTIMIZER_SGD, lr=0.1, momentum=0.9);
    also Optimizer.adam(...) and Optimizer.sgd(...). Keyword arguments are
    hyperparameter names (see OPTIMIZER_PARAMS); those not given keep PyTorch's
    defaults. A hyperparameter of the other kind raises InvalidArgument.
    """

    _free = "vae_optimizer_free"

    def __init__(self, kind, **params):
        self._adopt(_create(_lib.vae_optimizer_create,
                            _int_enum(kind, _OPTIMIZERS, "optimizer kind")))
        try:
            for name, value in params.items():
                if value is not None:
                    self.set_param(name, value)
        except BaseException:
            self.close()
            raise

    @classmethod
    def adam(cls, lr=None, beta1=None, beta2=None, eps=None, weight_decay=None,
             clip_norm=None):
        """Adam (AdamW when weight_decay > 0); defaults 1e-3, 0.9, 0.999, 1e-8, 0, 0."""
        return cls(OPTIMIZER_ADAM, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                   weight_decay=weight_decay, clip_norm=clip_norm)

    @classmethod
    def sgd(cls, lr=None, momentum=None, nesterov=None, weight_decay=None, dampening=None,
            clip_norm=None):
        """SGD as torch.optim.SGD; defaults lr 1e-2, no momentum, no decay."""
        return cls(OPTIMIZER_SGD, lr=lr, momentum=momentum, nesterov=nesterov,
                   weight_decay=weight_decay, dampening=dampening, clip_norm=clip_norm)

    @property
    def kind(self):
        """OPTIMIZER_SGD or OPTIMIZER_ADAM."""
        with _Use(self) as (o,):
            return _lib.vae_optimizer_kind(o)

    @property
    def kind_name(self):
        return _OPTIMIZER_NAMES.get(self.kind, "unknown")

    def set_param(self, param, value):
        """Sets an OPT_* hyperparameter (or its name, such as "lr"); the next step uses it.

        A bad value raises InvalidArgument and leaves the old one.
        """
        param = _int_enum(param, _OPT_PARAMS, "optimizer parameter")
        value = _number(value, "value")
        with _Use(self) as (o,):
            _lib.vae_optimizer_set_param(o, param, value)

    def get_param(self, param):
        param = _int_enum(param, _OPT_PARAMS, "optimizer parameter")
        value = c_double()
        with _Use(self) as (o,):
            _lib.vae_optimizer_get_param(o, param, byref(value))
        return value.value

    @property
    def params(self):
        """Dict name -> value of every hyperparameter this kind accepts."""
        return {name: self.get_param(name) for name in OPTIMIZER_PARAMS.get(self.kind, ())}

    lr = _opt_property(OPT_LR, "Learning rate (> 0, at most 1e6).")
    weight_decay = _opt_property(OPT_WEIGHT_DECAY, "Weight decay (AdamW for Adam, L2 for SGD).")
    clip_norm = _opt_property(OPT_CLIP_NORM, "Global gradient norm limit; 0 does not clip.")
    beta1 = _opt_property(OPT_BETA1, "Adam's beta1, in [0, 1).")
    beta2 = _opt_property(OPT_BETA2, "Adam's beta2, in [0, 1).")
    eps = _opt_property(OPT_EPS, "Adam's epsilon (finite, > 0).")
    momentum = _opt_property(OPT_MOMENTUM, "SGD momentum, in [0, 1).")
    nesterov = _opt_property(OPT_NESTEROV, "SGD Nesterov momentum (a bool).", as_bool=True)
    dampening = _opt_property(OPT_DAMPENING, "SGD dampening, in [0, 1).")

    def __repr__(self):
        if not self._open:
            return "<libvae.Optimizer closed>"
        return "<libvae.Optimizer %s lr=%g>" % (self.kind_name, self.lr)


# ---------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------


class Dataset(_Handle):
    """Samples in memory: Dataset.load_idx(...) or Dataset.from_floats(...). Immutable."""

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

    def _get(self, func, *args):
        with _Use(self) as (d,):
            return func(d, *args)

    @property
    def count(self):
        return self._get(_lib.vae_dataset_count)

    def __len__(self):
        return self.count

    @property
    def dim(self):
        return self._get(_lib.vae_dataset_dim)

    @property
    def image_size(self):
        """(height, width) of a sample."""
        h, w = c_size_t(), c_size_t()
        self._get(_lib.vae_dataset_image_size, byref(h), byref(w))
        return h.value, w.value

    @property
    def has_labels(self):
        return bool(self._get(_lib.vae_dataset_has_labels))

    def label(self, index):
        value = c_int32()
        self._get(_lib.vae_dataset_label, _size(index, "index"), byref(value))
        return value.value

    def labels(self):
        """All labels as array('i') (int32)."""
        out = array.array(_INT32_TYPECODE)
        value = c_int32()
        with _Use(self) as (d,):
            for i in range(_lib.vae_dataset_count(d)):
                _lib.vae_dataset_label(d, i, byref(value))
                out.append(value.value)
        return out

    def subset(self, indices):
        """A new dataset with the samples indices (repeats allowed)."""
        idx = _size_array(indices)
        with _Use(self) as (d,):
            return Dataset._wrap(_create(_lib.vae_dataset_subset, d, idx, len(idx)))

    def filter_label(self, label, keep=True):
        """A new dataset with the samples labelled `label` (keep) or all the others."""
        label = _int32(label, "label")
        with _Use(self) as (d,):
            return Dataset._wrap(_create(_lib.vae_dataset_filter_label, d, label,
                                         1 if keep else 0))

    def batch(self, indices, binarize=False, rng=None, out=None):
        """The samples indices as floats (len(indices) * dim); binarize draws from rng."""
        idx = _size_array(indices)
        _check(rng, Rng, "rng", optional=True)
        o = _as_output(out, len(idx) * self.dim, "out")
        with _Use(self, rng) as (d, r):
            _lib.vae_dataset_batch(d, idx, len(idx), 1 if binarize else 0, r, o.ptr)
        return o.obj

    def range(self, first, n, out=None):
        """Samples first .. first+n-1 as floats (n * dim)."""
        first, n = _size(first, "first"), _size(n, "n")
        o = _as_output(out, n * self.dim, "out")
        with _Use(self) as (d,):
            _lib.vae_dataset_range(d, first, n, o.ptr)
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
        values = memoryview(mv.tobytes()).cast("i").tolist()
    else:
        values = [_int32(v, "label") for v in labels]
    if len(values) != count:
        raise ShapeError(ERR_SHAPE, "%d labels for %d samples" % (len(values), count))
    return (c_int32 * max(count, 1))(*values)


# ---------------------------------------------------------------------------
# Trainers
# ---------------------------------------------------------------------------


class _CtrlC:
    """Ctrl-C during Trainer.train_epoch() on the main thread.

    Python raises KeyboardInterrupt at whatever bytecode runs when SIGINT
    arrives; inside the progress callback ctypes cannot pass it on (it prints
    it and the callback's result is undefined). So while an epoch runs under
    Python's default SIGINT handler, the handler only records the interrupt;
    the callback stops the epoch after the step under way, and train_epoch()
    raises KeyboardInterrupt once the library has returned. Other handlers
    (the program's own, SIG_IGN) and other threads are left alone.
    """

    active = False      # a guard is installed (one at a time: nested epochs share it)
    hit = False         # SIGINT arrived while it was installed

    def __init__(self):
        self.installed = False
        self.previous = None

    @staticmethod
    def _handler(signum, frame):
        _CtrlC.hit = True

    def __enter__(self):
        if _CtrlC.active or threading.current_thread() is not threading.main_thread():
            return self
        try:
            if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
                return self
            self.previous = signal.signal(signal.SIGINT, _CtrlC._handler)
        except (ValueError, OSError):   # no signals here (an embedded interpreter)
            return self
        _CtrlC.active, _CtrlC.hit, self.installed = True, False, True
        return self

    def __exit__(self, *exc_info):
        if self.installed:
            signal.signal(signal.SIGINT, self.previous)
            _CtrlC.active = False

    @property
    def interrupted(self):
        return self.installed and _CtrlC.hit


class _Exchange:
    """The exchange of a distributed trainer: the C thunk over a Python callable.

    .thunk is what the library calls; .pending collects what the callable
    raised, for the trainer's call to raise once the library has returned.
    The thunk holds no reference to the trainer.
    """

    __slots__ = ("exchange", "world", "pending", "thunk")

    def __init__(self, exchange, world):
        pending = []

        def exchange_fn(_payload, buf, counts):
            # Nothing may propagate into C: any exception fails the exchange.
            view = None
            try:
                sizes = [counts[r] for r in range(world)]
                total = sum(sizes)
                if total and buf:
                    view = memoryview((ctypes.c_ubyte * total).from_address(buf)).cast("B")
                else:
                    view = memoryview(bytearray())
                exchange(view, sizes)
                return 0
            except BaseException as exc:  # noqa: B902 - raised after the call
                pending.append(exc)
                return 1
            finally:
                if view is not None:
                    try:
                        view.release()  # buf is the library's only during the call
                    except BaseException:  # noqa: B902 - exported further: left to it
                        pass

        self.exchange = exchange
        self.world = world
        self.pending = pending
        self.thunk = ExchangeFn(exchange_fn)


class _ExchangeErrors:
    """with _ExchangeErrors(trainer): a call failed by its exchange raises what it raised.

    The library fails the call with VAE_ERR_IO; that VaeIOError is raised
    with the callable's exception as its __cause__. KeyboardInterrupt,
    SystemExit and other BaseExceptions that are not Exceptions are raised
    themselves instead.
    """

    __slots__ = ("pending",)

    def __init__(self, trainer):
        exchange = trainer._exchange
        self.pending = exchange.pending if exchange is not None else None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.pending:
            return False
        errors = self.pending[:]
        del self.pending[:]
        if exc is None:
            return False
        first = errors[0]
        if not isinstance(first, Exception):
            raise first from None
        if isinstance(exc, VaeError):
            exc.__cause__ = first
        return False


class Trainer(_Handle):
    """Everything training mutates: gradient slab, optimizer state, generator, counters.

    Trainer(model, elbo, optimizer, context, seed=0) borrows the four objects:
    it keeps them alive (attributes .model, .elbo, .optimizer, .context) and
    is closed first when any of them is closed. The noise, shuffles and
    binarization of its steps and epochs come from its own generator, seeded
    here. save() and restore() write and read checkpoints of all of it.
    """

    _free = "vae_trainer_free"

    def __init__(self, model, elbo, optimizer, context, seed=0):
        _check(model, Model, "model")
        _check(elbo, Elbo, "elbo")
        _check(optimizer, Optimizer, "optimizer")
        _check(context, Context, "context")
        seed = _seed(seed)
        borrowed = (model, elbo, optimizer, context)
        m, e, o, c = _borrow(borrowed)      # held until the trainer is freed
        try:
            ptr = _create(_lib.vae_trainer_create, m, e, o, c, seed)
        except BaseException:
            _unborrow(borrowed)
            raise
        self.model, self.elbo, self.optimizer, self.context = borrowed
        self._borrowed = borrowed
        self._adopt(ptr)
        with _lock:
            for obj in borrowed:
                obj._dependents.add(self)

    def _setup(self):
        self._views = {}
        self._exchange = None   # the _Exchange of set_distributed(), while world > 1

    def _release_views(self):
        _release_views(self._views)

    def _freed(self):
        borrowed, self._borrowed = self._borrowed, ()
        self._exchange = None
        _unborrow(borrowed)

    def reserve(self, max_batch):
        """Sizes the context's workspace for steps of up to max_batch samples."""
        max_batch = _size(max_batch, "max_batch")
        with _Use(self) as (t,):
            _lib.vae_trainer_reserve(t, max_batch)

    def _input(self, x, n):
        self._p()
        xb = _as_input(x, "x")
        return xb, _batch(xb, self.model.input_dim, n, "x")

    def step(self, x, n=None):
        """One training step on a batch (noise from the trainer's generator): EpochStats."""
        xb, n = self._input(x, n)
        st = _new_stats()
        with _Use(self) as (t,), _ExchangeErrors(self):
            _lib.vae_trainer_step(t, xb.ptr, n, byref(st))
        return _stats(st)

    def forward_backward(self, x, n=None, eps=None):
        """Adds the gradient of the batch's mean loss into grads(), without stepping.

        The noise is eps (n * samples * latent_dim floats) when given, else drawn from
        the trainer's generator. Returns EpochStats.
        """
        xb, n = self._input(x, n)
        eb = None
        if eps is not None:
            eb = _as_input(eps, "eps")
            _batch(eb, self.model.latent_dim * _draws(self.elbo), n, "eps")
        st = _new_stats()
        with _Use(self) as (t,), _ExchangeErrors(self):
            _lib.vae_trainer_forward_backward(t, xb.ptr, n, eb.ptr if eb else None, byref(st))
        return _stats(st)

    def apply(self):
        """One optimizer step with the gradient slab, which is then zeroed."""
        with _Use(self) as (t,):
            _lib.vae_trainer_apply(t)

    def grads(self):
        """Borrowed, writable float32 memoryview of the gradient slab (no copy).

        In the layout of Model.params(). Valid while the trainer is open;
        close() releases it.
        """
        with _Use(self) as (t,):
            view = self._views.get("grads")
            if view is not None and _view_alive(view):
                return view
            count = c_size_t()
            view = _borrowed_view(self, _lib.vae_trainer_grads(t, byref(count)), count.value)
            self._views["grads"] = view
            return view

    def zero_grads(self):
        with _Use(self) as (t,):
            _lib.vae_trainer_zero_grads(t)

    @property
    def steps(self):
        """Optimizer steps taken."""
        with _Use(self) as (t,):
            return _lib.vae_trainer_steps(t)

    @property
    def epochs(self):
        """Epochs completed by train_epoch()."""
        with _Use(self) as (t,):
            return _lib.vae_trainer_epochs(t)

    def train_epoch(self, dataset, batch_size=128, shuffle=True, binarize=False,
                    progress=None):
        """One pass over dataset; returns EpochStats.

        progress(done, total, running_loss) is called after every step; a true
        return value stops the epoch with Cancelled (whose .stats has the
        partial epoch). An exception raised by progress stops the epoch too
        and is re-raised here once the library has returned. The callback runs
        while the trainer's context is in use: inference from it needs another
        context (save() works from it).

        Ctrl-C (SIGINT under Python's default handler, on the main thread)
        stops the epoch after the step under way, with or without a progress
        callback, and raises KeyboardInterrupt here (its .stats: the partial
        epoch); a checkpoint saved then resumes exactly there.

        An epoch stopped early (by the callback, Ctrl-C, or a failing step)
        stays open: the next call continues it at the next sample of the same order,
        whatever its batch size, and its EpochStats cover the whole epoch so
        far (seconds: this call only). See epoch_position and discard_epoch();
        a checkpoint (save()) keeps the open epoch. 1.0 libraries started a
        new epoch instead.
        """
        _check(dataset, Dataset, "dataset")
        opts = TrainOptions()
        _lib.vae_train_options_init(byref(opts), ctypes.sizeof(TrainOptions))
        opts.batch_size = _size(batch_size, "batch_size")
        opts.shuffle = 1 if shuffle else 0
        opts.binarize = 1 if binarize else 0
        pending = []
        if progress is not None and not callable(progress):
            raise TypeError("progress must be callable")

        def trampoline(_payload, done, total, running_loss):
            # Nothing may propagate into C: any exception stops the epoch.
            try:
                stop = progress(done, total, running_loss) if progress is not None else 0
                # A trainer closed by the callback (its free waits for this
                # call to return), or Ctrl-C, stops its epoch too.
                return 1 if stop or not self._open or _CtrlC.hit else 0
            except BaseException as exc:  # noqa: B902 - re-raised after the call
                pending.append(exc)
                return 1

        st = _new_stats()
        with _Use(self, dataset) as (t, d), _CtrlC() as ctrl_c, _ExchangeErrors(self):
            if progress is not None or ctrl_c.installed:
                opts.progress = ProgressFn(trampoline)
            try:
                _lib.vae_trainer_train_epoch(t, d, byref(opts), byref(st))
            except Cancelled as exc:
                exc.stats = _stats(st)
                if pending:
                    raise pending[0] from None
                if not ctrl_c.interrupted:
                    raise
            if ctrl_c.interrupted:
                interrupt = KeyboardInterrupt()
                interrupt.stats = _stats(st)
                raise interrupt
        return _stats(st)

    # -- open epochs, checkpoints and metadata (libvae 1.1) --------------------

    @property
    def epoch_position(self):
        """(done, total) samples of the open epoch, (0, 0) when none is open.

        An epoch is open when train_epoch() stopped part-way (Cancelled, or a
        failing step) or restore() brought one back; the next train_epoch()
        continues it.
        """
        fn = _need("vae_trainer_epoch_position")
        done, total = c_size_t(), c_size_t()
        with _Use(self) as (t,):
            fn(t, byref(done), byref(total))
        return done.value, total.value

    def discard_epoch(self):
        """Closes an open epoch without finishing it: the next train_epoch() starts anew.

        StateError from inside a progress callback (the context is in use).
        """
        fn = _need("vae_trainer_discard_epoch")
        with _Use(self) as (t,):
            fn(t)

    def save(self, path):
        """Writes the whole training state to path atomically: a checkpoint.

        It holds the model (Model.load(path) reads that part), the optimizer's
        settings and state, the objective's settings, the generator, the
        counters, the open epoch, pending gradients and the metadata, so that
        restore() continues bit for bit. Works from a progress callback.
        NumericError (nothing written) when a value is not finite.
        """
        fn = _need("vae_trainer_save")
        path = _path(path)
        with _Use(self) as (t,):
            fn(t, path)

    def save_mem(self):
        """The bytes save() would write."""
        fn = _need("vae_trainer_save_mem")
        with _Use(self) as (t,):
            size = c_size_t()
            fn(t, None, 0, byref(size))
            buf = ctypes.create_string_buffer(max(size.value, 1))
            fn(t, buf, size.value, byref(size))
            return buf.raw[:size.value]

    def restore(self, path):
        """Restores a checkpoint written by save() into this trainer.

        The trainer's model must have the checkpoint's architecture (load it
        with Model.load(path)) and its optimizer the checkpoint's kind;
        otherwise ShapeError. The model's parameters, the optimizer's and the
        objective's settings (shared with other trainers that use them), the
        state, generator, counters, open epoch and metadata are replaced; on
        any failure nothing changes.
        """
        fn = _need("vae_trainer_restore")
        path = _path(path)
        with _Use(self) as (t,):
            fn(t, path)

    def restore_mem(self, data):
        """restore() from the bytes (any bytes-like object) of a checkpoint."""
        fn = _need("vae_trainer_restore_mem")
        raw = data if isinstance(data, bytes) else memoryview(data).cast("B").tobytes()
        with _Use(self) as (t,):
            fn(t, raw, len(raw))

    def set_meta(self, key, value):
        """Sets (value a str or bytes) or removes (value None) a metadata entry.

        Entries are saved with the checkpoint and keep the order they were
        first set in. Keys are 1 to 255 bytes without control characters,
        values up to 65535 bytes (UTF-8 for str); InvalidArgument otherwise.
        """
        fn = _need("vae_trainer_set_meta")
        k = _text(key, "key")
        v = None if value is None else _text(value, "value")
        with _Use(self) as (t,):
            fn(t, k, v)

    def get_meta(self, key, default=None):
        """The value of a metadata entry as a str, or default when it is absent."""
        fn = _need("vae_trainer_get_meta")
        k = _text(key, "key")
        value = c_char_p()
        with _Use(self) as (t,):
            fn(t, k, byref(value))
            return default if value.value is None else _untext(value.value)

    @property
    def meta(self):
        """Every metadata entry, {key: value} as str, in the order first set (a copy)."""
        count_fn, at_fn = _need("vae_trainer_meta_count"), _need("vae_trainer_meta_at")
        out = collections.OrderedDict()
        with _Use(self) as (t,):
            for i in range(count_fn(t)):
                k, v = c_char_p(), c_char_p()
                at_fn(t, i, byref(k), byref(v))
                out[_untext(k.value)] = _untext(v.value)
        return out

    # -- data-parallel training (libvae 1.1) -----------------------------------

    def set_distributed(self, rank, world, exchange=None):
        """Makes this trainer rank `rank` of `world` ranks of a data-parallel run.

        world 1 (exchange not needed) makes it a trainer of its own again.
        Every rank holds the same state (same seeds, or one checkpoint
        restored everywhere) and makes the same calls with the same global
        batches; each computes its share of the batch's blocks of 64 samples
        and the ranks swap loss terms and block gradients through exchange,
        so every rank applies the step one trainer alone would apply, bit for
        bit. step(), forward_backward() and train_epoch() are distributed;
        inference and evaluation are not.

        exchange(buf, sizes) is an in-place all-gather: buf is a writable
        memoryview of sum(sizes) bytes holding one part per rank in rank
        order, part r of sizes[r] bytes (sizes: a list of world ints, the
        same on every rank, some may be 0). On entry this rank's part is
        filled; on return every part must hold what its rank put there. It
        is called twice per training pass, from the thread that called the
        trainer; buf is valid only during the call (do not keep it or views
        of it). Its return value is ignored. An exception it raises fails
        the call with VaeIOError, whose __cause__ is that exception
        (KeyboardInterrupt and SystemExit are raised as they are), and
        leaves this trainer as it was; the other ranks may then be waiting
        inside their exchange: end the run, or make them fail too (e.g.
        threading.Barrier.abort()).

        The trainer keeps exchange alive while it is set. InvalidArgument
        for world 0 or above 65536, rank >= world, or no exchange with
        world > 1 (nothing changes then); StateError while the trainer's
        context is in use (from a progress callback).
        """
        fn = _need("vae_trainer_set_distributed")
        rank, world = _size(rank, "rank"), _size(world, "world")
        if exchange is not None and not callable(exchange):
            raise TypeError("exchange must be callable or None, not %s"
                            % type(exchange).__name__)
        new = _Exchange(exchange, world) if exchange is not None and world > 1 else None
        with _Use(self) as (t,):
            fn(t, rank, world, new.thunk if new is not None else ExchangeFn(), None)
            # The library now calls the new thunk (or none): the old one may go.
            self._exchange = new

    def __repr__(self):
        if not self._open:
            return "<libvae.Trainer %s>" % (self._closed_why or "closed")
        return "<libvae.Trainer %d steps, %d epochs>" % (self.steps, self.epochs)
