/*
 * libvae_mpi: data-parallel training of libvae trainers over MPI.
 *
 * A companion library: libvae itself knows nothing of MPI. It gives a
 * trainer the exchange of vae_trainer_set_distributed() over an MPI
 * communicator, and saves, restores, loads and compares what every rank
 * holds. Released under the MIT license; see LICENSE.
 */

/**
 * @file
 * @brief libvae_mpi: data-parallel training over MPI, for C99 and C++ compilers.
 *
 * Include it as `#include <vae/vae_mpi.h>` (it includes `<mpi.h>` and `<vae/vae.h>`) and
 * link `-lvae_mpi -lvae` and the MPI library: `pkg-config --cflags --libs vae-mpi`, or in
 * CMake `find_package(vae 1.1 CONFIG REQUIRED COMPONENTS mpi)` and the target
 * `vae::vae_mpi`.
 *
 * From C++, Open MPI's and MPICH's `<mpi.h>` also declare MPI's old C++ bindings, which
 * need their own library (libmpi_cxx, CMake's MPI::MPI_CXX); a program that does not use
 * them defines `OMPI_SKIP_MPICXX` and `MPICH_SKIP_MPICXX` before including this header.
 */

/**
 * @defgroup mpi Data-parallel training over MPI
 * @brief libvae_mpi: every rank of a communicator trains the same model on its share of
 *        every global batch.
 *
 * Each rank holds the whole model, trainer and data and makes the same calls with the same
 * arguments; vae_mpi_attach() makes its trainer compute only the rank's blocks of 64
 * samples of every global batch and exchange the loss terms and block gradients with the
 * other ranks (vae_trainer_set_distributed()). Every rank then applies the same step, and
 * the parameters, the optimizer state and the reported losses are bit for bit those of
 * one process training alone on the same batches, with any number of ranks and workers.
 * A checkpoint saved with one number of ranks therefore resumes with another.
 *
 * @section mpi_usage Usage
 * @code
 * MPI_Init(&argc, &argv);
 * vae_mpi *h = NULL;
 * int rc = vae_mpi_create(&h, MPI_COMM_WORLD);
 * // ... the same model, objective, optimizer, context and trainer on every rank ...
 * if (!rc) rc = vae_mpi_attach(h, trainer);
 * // ... vae_trainer_step() / vae_trainer_train_epoch() with the same data everywhere ...
 * if (!rc) rc = vae_mpi_check_identical(h, model);
 * if (!rc) rc = vae_mpi_save(h, trainer, "checkpoint.vae");
 * if (rc) {
 *     fprintf(stderr, "%s\n", vae_mpi_last_error());
 *     MPI_Abort(MPI_COMM_WORLD, 1); // the other ranks may be waiting in a collective
 * }
 * vae_trainer_free(trainer); // ... and the rest ...
 * vae_mpi_free(h);
 * MPI_Finalize();
 * @endcode
 *
 * @section mpi_rules Rules
 *
 * - The program initializes MPI (MPI_Init() or MPI_Init_thread()) before vae_mpi_create()
 *   and finalizes it after vae_mpi_free(). The library calls MPI only from the thread that
 *   calls it (a trainer's workers never do), so MPI_THREAD_FUNNELED is enough when that is
 *   the main thread, MPI_THREAD_SERIALIZED otherwise.
 * - Every function here that takes a vae_mpi handle, except vae_mpi_rank(),
 *   vae_mpi_size(), vae_mpi_set_chunk_bytes() and vae_mpi_attach(), is collective: every
 *   rank of the communicator calls it, in the same order, with a valid handle. So are the
 *   trainer calls that train an attached trainer.
 * - Collectives run on a duplicate of the caller's communicator with the error handler
 *   MPI_ERRORS_RETURN, so they never interfere with the program's own messages, and a
 *   failed MPI call makes the function return VAE_ERR_IO instead of aborting inside the
 *   library. A rank that fails in the middle of a collective can leave the others
 *   waiting in it: after a failure that the function does not report as agreed (see
 *   below), end the run with MPI_Abort().
 * - vae_mpi_save(), vae_mpi_restore(), vae_mpi_model_load() and vae_mpi_check_identical()
 *   agree on their outcome: every rank returns the same status, and on failure the same
 *   message, naming the first rank that failed. Only a failure of MPI itself can break
 *   that agreement.
 * - Messages: a failing function of this library records its message for
 *   vae_mpi_last_error() on the calling thread (libvae's vae_last_error() belongs to
 *   libvae's own calls). When the failure came from a libvae call inside, the message
 *   includes that call's message.
 * - Buffers of any size: a collective moves at most vae_mpi_set_chunk_bytes() bytes (by
 *   default 2^30) per MPI call and repeats the call as often as needed, so gradients,
 *   checkpoints and models above 2 GiB (MPI's int counts) move too.
 * - Allocation: libvae_mpi's own buffers (the handle, a file's bytes, the model bytes
 *   vae_mpi_check_identical() hashes) come from malloc(), not from the allocator of
 *   vae_set_allocator(); the libvae calls inside use that one as always.
 * @{
 */
#ifndef VAE_VAE_MPI_H
#define VAE_VAE_MPI_H

#include <stddef.h>

#include <mpi.h>

#include "vae.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief Marks the functions libvae_mpi exports, as VAE_API does for libvae.
 *
 * The library is built with hidden visibility and a version script; only these functions
 * are exported. On Windows define `VAE_STATIC` when linking static libraries.
 */
#if defined(_WIN32)
#  if defined(VAE_MPI_BUILDING_LIBRARY) && !defined(VAE_STATIC)
#    define VAE_MPI_API __declspec(dllexport)
#  elif !defined(VAE_STATIC)
#    define VAE_MPI_API __declspec(dllimport)
#  else
#    define VAE_MPI_API
#  endif
#elif defined(__GNUC__) && __GNUC__ >= 4
#  define VAE_MPI_API __attribute__((visibility("default")))
#else
#  define VAE_MPI_API
#endif

/**
 * @brief One rank's handle on a communicator: a duplicate of it, this rank, the number
 *        of ranks and the exchange's buffers.
 *
 * Opaque. Created by vae_mpi_create(), released by vae_mpi_free(). Used by one thread at
 * a time.
 */
typedef struct vae_mpi vae_mpi;

/**
 * @brief Creates a handle on a duplicate of `comm`. Collective over comm.
 *
 * Duplicates comm with MPI_Comm_dup() (under comm's own error handler, by default
 * MPI_ERRORS_ARE_FATAL: that one call can abort) and sets MPI_ERRORS_RETURN on the
 * duplicate, on which every later collective of the handle runs.
 * @param[out] out  Receives the new handle, owned by the caller (free it with
 *                  vae_mpi_free() before MPI_Finalize()); set to NULL on failure.
 * @param[in]  comm An intracommunicator, such as MPI_COMM_WORLD.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out is NULL, comm is MPI_COMM_NULL or an intercommunicator.
 * @retval VAE_ERR_STATE   MPI is not initialized, or already finalized.
 * @retval VAE_ERR_IO      an MPI call failed (the message has MPI's error string).
 * @retval VAE_ERR_NOMEM   an allocation failed.
 */
VAE_MPI_API int vae_mpi_create(vae_mpi **out, MPI_Comm comm);
/**
 * @brief Frees a handle and its duplicate communicator (MPI_Comm_free(), collective).
 *
 * Call it before MPI_Finalize(); after it, only the memory is released. A trainer
 * attached to the handle must not train afterwards (detach it with
 * `vae_trainer_set_distributed(t, 0, 1, NULL, NULL)`, or free it first).
 * @param[in] h The handle; NULL is ignored.
 */
VAE_MPI_API void vae_mpi_free(vae_mpi *h);
/**
 * @brief This process's rank in the communicator.
 * @param[in] h The handle, or NULL.
 * @return The rank, 0 to vae_mpi_size() - 1; -1 when h is NULL.
 */
VAE_MPI_API int vae_mpi_rank(const vae_mpi *h);
/**
 * @brief Number of ranks in the communicator.
 * @param[in] h The handle, or NULL.
 * @return The count; 0 when h is NULL.
 */
VAE_MPI_API int vae_mpi_size(const vae_mpi *h);
/**
 * @brief Sets the largest number of bytes one MPI call of the handle moves.
 *
 * Larger buffers are moved by several calls of at most this many bytes. The default,
 * 2^30, keeps every count and displacement within MPI's int. A smaller value trades
 * speed for smaller messages (a transport with a message size limit). Not collective, but
 * every rank must set the same value before the next collective call, or the ranks' calls
 * would not match.
 * @param[in,out] h     The handle.
 * @param[in]     bytes 1 to INT_MAX.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID h is NULL, or bytes is 0 or above INT_MAX.
 */
VAE_MPI_API int vae_mpi_set_chunk_bytes(vae_mpi *h, size_t bytes);
/**
 * @brief The exchange of vae_trainer_set_distributed() over the handle's communicator: an
 *        in-place all-gather of bytes. Collective.
 *
 * Has the shape of ::vae_exchange_fn with a vae_mpi handle as payload; vae_mpi_attach()
 * passes it to the trainer. A program may call it from its own exchange function (to
 * count or time the traffic, for instance) or use it on its own. buf holds one part per
 * rank, concatenated in rank order, part r of bytes[r] bytes; every rank passes the same
 * bytes array and has filled its own part. On return every part holds what its rank put
 * there. Done with MPI_Allgatherv() of MPI_BYTE in place, over windows of the buffer of
 * at most vae_mpi_set_chunk_bytes() bytes; no call when every part is empty.
 * @param[in]     payload The vae_mpi handle.
 * @param[in,out] buf     The parts; may be NULL when every part is empty.
 * @param[in]     bytes   bytes[r]: the size of rank r's part; vae_mpi_size() entries.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID payload or bytes is NULL, or buf is NULL with a nonempty part
 *                         (no MPI call is made: the other ranks may be left waiting).
 * @retval VAE_ERR_SHAPE   the parts add up to more than SIZE_MAX bytes.
 * @retval VAE_ERR_IO      MPI_Allgatherv() failed (the message has MPI's error string).
 */
VAE_MPI_API int vae_mpi_exchange(void *payload, void *buf, const size_t *bytes);
/**
 * @brief Makes the trainer this rank's part of a data-parallel run over the handle.
 *
 * vae_trainer_set_distributed(t, rank, size, vae_mpi_exchange, h). Not itself collective,
 * but every rank attaches its trainer before the first training call. Afterwards every
 * training call on the trainer (vae_trainer_step(), vae_trainer_forward_backward(),
 * vae_trainer_train_epoch()) is collective and must get the same arguments on every
 * rank; a failed exchange makes it fail with VAE_ERR_IO and vae_mpi_last_error() gives
 * MPI's reason. The handle must outlive the trainer's training.
 * @param[in]     h The handle.
 * @param[in,out] t The trainer.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID h or t is NULL, or the communicator has more than 65536 ranks.
 * @retval VAE_ERR_STATE   the trainer's context is in use.
 * @retval VAE_ERR_NOMEM   an allocation failed.
 */
VAE_MPI_API int vae_mpi_attach(vae_mpi *h, vae_trainer *t);
/**
 * @brief Rank 0 writes the trainer's checkpoint to `path` with vae_trainer_save(); every
 *        rank returns its status. Collective.
 *
 * Only rank 0's trainer and path are read (the others may pass NULL): with identical
 * trainers on every rank (vae_mpi_check_identical()), its state is every rank's. The
 * file is replaced atomically, as by vae_trainer_save().
 * @param[in,out] h    The handle.
 * @param[in]     t    The trainer (read on rank 0 only).
 * @param[in]     path Destination path (read on rank 0 only).
 * @retval VAE_OK          success, on every rank.
 * @retval VAE_ERR_INVALID h is NULL (this rank only, no MPI call), or t or path is NULL
 *                         on rank 0.
 * @retval VAE_ERR_NUMERIC as vae_trainer_save() on rank 0.
 * @retval VAE_ERR_IO      as vae_trainer_save() on rank 0 (the message on every rank
 *                         says "on rank 0" and gives its message), or an MPI call failed.
 * @retval VAE_ERR_NOMEM   as vae_trainer_save() on rank 0.
 */
VAE_MPI_API int vae_mpi_save(vae_mpi *h, const vae_trainer *t, const char *path);
/**
 * @brief Restores every rank's trainer from one checkpoint that rank 0 reads. Collective.
 *
 * Rank 0 reads the file's bytes (a regular file of at most VAE_LIMIT_FILE_BYTES bytes;
 * a FIFO or device is refused without blocking), broadcasts its size and bytes, and every
 * rank calls vae_trainer_restore_mem() with them. The checkpoint may have been written
 * with any number of ranks. The trainer keeps its attachment. Every rank returns the
 * status of the first rank that failed, and a trainer is left as it was when its own
 * restore failed; when only some ranks' restores failed, the others' trainers are
 * restored, and the program should stop or restore again.
 * @param[in,out] h    The handle.
 * @param[in,out] t    This rank's trainer, of the checkpoint's architecture.
 * @param[in]     path Path of the checkpoint (read on rank 0 only).
 * @retval VAE_OK          success, on every rank.
 * @retval VAE_ERR_INVALID h is NULL (this rank only, no MPI call), path is NULL on rank 0,
 *                         or t is NULL on a rank.
 * @retval VAE_ERR_IO      rank 0 cannot open or read the file, or it is not a regular
 *                         file; or an MPI call failed.
 * @retval VAE_ERR_SHAPE   as vae_trainer_restore_mem(): a trainer of another architecture
 *                         or optimizer on some rank (the message names the rank).
 * @retval VAE_ERR_FORMAT  as vae_trainer_restore_mem(): damaged, or not a checkpoint.
 * @retval VAE_ERR_STATE   a trainer's context is in use.
 * @retval VAE_ERR_NOMEM   an allocation failed, or the file is above VAE_LIMIT_FILE_BYTES
 *                         (on rank 0).
 */
VAE_MPI_API int vae_mpi_restore(vae_mpi *h, vae_trainer *t, const char *path);
/**
 * @brief Loads one model file (or a checkpoint's model) on every rank from the bytes rank 0
 *        reads. Collective.
 *
 * As vae_mpi_restore(), with vae_model_load_mem() on every rank. Every rank gets a model
 * of its own, with the same parameters; or every rank gets NULL and the same status.
 * @param[in,out] h    The handle.
 * @param[out]    out  Receives this rank's new model, owned by the caller (free it with
 *                     vae_model_free()); set to NULL on failure.
 * @param[in]     path Path of the model file or checkpoint (read on rank 0 only).
 * @retval VAE_OK          success, on every rank.
 * @retval VAE_ERR_INVALID h is NULL (this rank only, no MPI call), out is NULL on a rank,
 *                         or path is NULL on rank 0.
 * @retval VAE_ERR_IO      rank 0 cannot open or read the file, or it is not a regular
 *                         file; or an MPI call failed.
 * @retval VAE_ERR_FORMAT  as vae_model_load_mem().
 * @retval VAE_ERR_NOMEM   an allocation failed, or the file is above
 *                         VAE_LIMIT_FILE_BYTES, or the model above
 *                         VAE_LIMIT_MODEL_PARAMS.
 */
VAE_MPI_API int vae_mpi_model_load(vae_mpi *h, vae_model **out, const char *path);
/**
 * @brief Checks that every rank's model is the same, architecture and parameters, bit for
 *        bit. Collective.
 *
 * Each rank hashes its model to 64 bits as vae_model_save_mem() writes it (architecture,
 * Gaussian sigma and parameters); the ranks compare their sizes and hashes with rank 0's.
 * Two different models hash alike with probability about 2^-64. Allocates a buffer of the
 * model file's size and 16 bytes per rank. Does not modify the model.
 * @param[in,out] h The handle.
 * @param[in]     m This rank's model, built.
 * @retval VAE_OK          every rank's model is rank 0's.
 * @retval VAE_ERR_INVALID h is NULL (this rank only, no MPI call), or m is NULL on a rank
 *                         (the message names the first).
 * @retval VAE_ERR_STATE   the models of some ranks differ from rank 0's (the message says
 *                         how many ranks and names the first); or a model is not built.
 * @retval VAE_ERR_NUMERIC a parameter is not finite on some rank (as
 *                         vae_model_save_mem()).
 * @retval VAE_ERR_IO      an MPI call failed.
 * @retval VAE_ERR_NOMEM   an allocation failed.
 */
VAE_MPI_API int vae_mpi_check_identical(vae_mpi *h, const vae_model *m);
/**
 * @brief Detailed message of the last failure of a libvae_mpi function on the calling
 *        thread.
 *
 * Starts with the name of the failing function, such as "vae_mpi_save: on rank 0:
 * vae_trainer_save: ...". Only failures set it; each thread has its own; messages longer
 * than 511 bytes are truncated.
 * @return The message, or an empty string when nothing has failed on this thread; never
 *         NULL, never freed; valid while the thread lives, its contents until the next
 *         failure of a libvae_mpi function on this thread.
 */
VAE_MPI_API const char *vae_mpi_last_error(void);

#ifdef __cplusplus
}
#endif

/** @} */

#endif /* VAE_VAE_MPI_H */
