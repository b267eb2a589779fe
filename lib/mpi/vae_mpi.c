/* libvae_mpi: the exchange of vae_trainer_set_distributed over an MPI
 * communicator, and checkpoints, models and comparisons across its ranks.
 * Uses libvae through its public header only. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vae/vae_mpi.h"

/* Bytes one MPI call moves at most, by default: well inside int counts. */
#define DEFAULT_CHUNK ((size_t)1 << 30)

enum { MSG_CAP = 512 };

struct vae_mpi {
    MPI_Comm comm;   /* the duplicate, with MPI_ERRORS_RETURN */
    int rank, size;
    size_t chunk;    /* bytes per MPI call, 1 to INT_MAX */
    int *counts;     /* [size] for MPI_Allgatherv */
    int *displs;     /* [size] */
};

/* The library's only mutable global state, one copy per thread. */
static _Thread_local char last_error[MSG_CAP];

static int fail(int status, const char *fmt, ...)
{
    char msg[MSG_CAP]; /* formatted aside: an argument may be last_error itself */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memcpy(last_error, msg, sizeof msg);
    return status;
}

/* A failed MPI call: VAE_ERR_IO with MPI's own words. */
static int mpi_fail(const char *fn, const char *call, int code)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS || len <= 0)
        snprintf(text, sizeof text, "MPI error %d", code);
    else
        text[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING - 1] = '\0';
    return fail(VAE_ERR_IO, "%s: %s failed: %s", fn, call, text);
}

/* A libvae call failed inside fn: its status, its message after fn's name. */
static int vae_call_fail(int status, const char *fn)
{
    return fail(status, "%s: %s", fn, vae_last_error());
}

const char *vae_mpi_last_error(void)
{
    return last_error;
}

/* ---- the handle --------------------------------------------------------------- */

int vae_mpi_create(vae_mpi **out, MPI_Comm comm)
{
    const char *fn = "vae_mpi_create";
    if (!out)
        return fail(VAE_ERR_INVALID, "%s: out is NULL", fn);
    *out = NULL;
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (!inited || finalized)
        return fail(VAE_ERR_STATE, "%s: MPI is %s; call MPI_Init first and MPI_Finalize after "
                                   "vae_mpi_free",
                    fn, finalized ? "already finalized" : "not initialized");
    if (comm == MPI_COMM_NULL)
        return fail(VAE_ERR_INVALID, "%s: comm is MPI_COMM_NULL", fn);
    int inter = 0, rc = MPI_Comm_test_inter(comm, &inter);
    if (rc != MPI_SUCCESS)
        return mpi_fail(fn, "MPI_Comm_test_inter", rc);
    if (inter)
        return fail(VAE_ERR_INVALID, "%s: comm is an intercommunicator; give an "
                                     "intracommunicator such as MPI_COMM_WORLD",
                    fn);
    vae_mpi *h = calloc(1, sizeof *h);
    if (!h)
        return fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
    h->comm = MPI_COMM_NULL;
    h->chunk = DEFAULT_CHUNK;
    if ((rc = MPI_Comm_dup(comm, &h->comm)) != MPI_SUCCESS) {
        h->comm = MPI_COMM_NULL;
        rc = mpi_fail(fn, "MPI_Comm_dup", rc);
    } else if ((rc = MPI_Comm_set_errhandler(h->comm, MPI_ERRORS_RETURN)) != MPI_SUCCESS) {
        rc = mpi_fail(fn, "MPI_Comm_set_errhandler", rc);
    } else if ((rc = MPI_Comm_rank(h->comm, &h->rank)) != MPI_SUCCESS) {
        rc = mpi_fail(fn, "MPI_Comm_rank", rc);
    } else if ((rc = MPI_Comm_size(h->comm, &h->size)) != MPI_SUCCESS) {
        rc = mpi_fail(fn, "MPI_Comm_size", rc);
    } else {
        h->counts = calloc((size_t)h->size, sizeof *h->counts);
        h->displs = calloc((size_t)h->size, sizeof *h->displs);
        rc = h->counts && h->displs ? VAE_OK
                                    : fail(VAE_ERR_NOMEM, "%s: out of memory for %d ranks", fn,
                                           h->size);
    }
    if (rc != VAE_OK) {
        vae_mpi_free(h);
        return rc;
    }
    *out = h;
    return VAE_OK;
}

void vae_mpi_free(vae_mpi *h)
{
    if (!h)
        return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (h->comm != MPI_COMM_NULL && !finalized)
        MPI_Comm_free(&h->comm);
    free(h->counts);
    free(h->displs);
    free(h);
}

int vae_mpi_rank(const vae_mpi *h)
{
    return h ? h->rank : -1;
}

int vae_mpi_size(const vae_mpi *h)
{
    return h ? h->size : 0;
}

int vae_mpi_set_chunk_bytes(vae_mpi *h, size_t bytes)
{
    const char *fn = "vae_mpi_set_chunk_bytes";
    if (!h)
        return fail(VAE_ERR_INVALID, "%s: handle is NULL", fn);
    if (bytes == 0 || bytes > (size_t)INT_MAX)
        return fail(VAE_ERR_INVALID, "%s: %zu bytes is out of range (1 to %d)", fn, bytes,
                    INT_MAX);
    h->chunk = bytes;
    return VAE_OK;
}

/* ---- moving bytes --------------------------------------------------------------- */

/*
 * The all-gather in windows of at most h->chunk bytes of the whole buffer:
 * window [base, end) carries, of each rank's part, the bytes that fall in
 * it, at their offset from base. Counts and displacements are then below
 * the chunk size, an int, however large the buffer; each call is in place,
 * since every rank's own bytes already sit where they belong.
 */
static int allgather_windows(vae_mpi *h, unsigned char *buf, const size_t *bytes, size_t total,
                             const char *fn)
{
    for (size_t base = 0; base < total; base += h->chunk) {
        size_t end = total - base > h->chunk ? base + h->chunk : total, off = 0;
        for (int r = 0; r < h->size; r++) {
            size_t lo = off > base ? off : base, hi = off + bytes[r] < end ? off + bytes[r] : end;
            h->counts[r] = lo < hi ? (int)(hi - lo) : 0;
            h->displs[r] = lo < hi ? (int)(lo - base) : 0;
            off += bytes[r];
        }
        int rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf + base, h->counts,
                                h->displs, MPI_BYTE, h->comm);
        if (rc != MPI_SUCCESS) {
            char call[96];
            snprintf(call, sizeof call, "MPI_Allgatherv of bytes %zu to %zu of %zu", base, end,
                     total);
            return mpi_fail(fn, call, rc);
        }
    }
    return VAE_OK;
}

int vae_mpi_exchange(void *payload, void *buf, const size_t *bytes)
{
    const char *fn = "vae_mpi_exchange";
    vae_mpi *h = payload;
    if (!h || !bytes)
        return fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, !h ? "payload (the handle)" : "bytes");
    size_t total = 0;
    for (int r = 0; r < h->size; r++) {
        if (bytes[r] > SIZE_MAX - total)
            return fail(VAE_ERR_SHAPE, "%s: the parts add up to more than SIZE_MAX bytes", fn);
        total += bytes[r];
    }
    if (total && !buf)
        return fail(VAE_ERR_INVALID, "%s: buf is NULL with %zu bytes to exchange", fn, total);
    return allgather_windows(h, buf, bytes, total, fn);
}

/* MPI_Bcast of n bytes from root, in calls of at most h->chunk bytes. */
static int bcast_bytes(vae_mpi *h, void *buf, size_t n, int root, const char *fn)
{
    unsigned char *p = buf;
    for (size_t at = 0; at < n; at += h->chunk) {
        size_t len = n - at > h->chunk ? h->chunk : n - at;
        int rc = MPI_Bcast(p + at, (int)len, MPI_BYTE, root, h->comm);
        if (rc != MPI_SUCCESS)
            return mpi_fail(fn, "MPI_Bcast", rc);
    }
    return VAE_OK;
}

/*
 * Every rank's status of one step to a single outcome: VAE_OK when every
 * rank succeeded; otherwise, on every rank, the status of the lowest rank
 * that failed and its message, prefixed with fn and that rank. One
 * all-gather of the statuses, then (on failure) one broadcast of the
 * message. Returns VAE_ERR_IO, this rank only, when MPI fails.
 */
static int agree(vae_mpi *h, int status, const char *fn)
{
    int rc = MPI_Allgather(&status, 1, MPI_INT, h->counts, 1, MPI_INT, h->comm);
    if (rc != MPI_SUCCESS)
        return mpi_fail(fn, "MPI_Allgather", rc);
    int first = -1, failed = 0;
    for (int r = 0; r < h->size; r++) {
        if (h->counts[r] != VAE_OK) {
            if (first < 0)
                first = r;
            failed++;
        }
    }
    if (first < 0)
        return VAE_OK;
    char msg[MSG_CAP];
    if (h->rank == first)
        memcpy(msg, last_error, sizeof msg);
    if ((rc = MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, first, h->comm)) != MPI_SUCCESS)
        return mpi_fail(fn, "MPI_Bcast", rc);
    msg[sizeof msg - 1] = '\0';
    const char *inner = msg;
    size_t fn_len = strlen(fn);
    if (!strncmp(inner, fn, fn_len) && inner[fn_len] == ':' && inner[fn_len + 1] == ' ')
        inner += fn_len + 2; /* "fn: " once, not twice */
    if (failed > 1)
        return fail(h->counts[first], "%s: on rank %d (and %d more rank%s): %s", fn, first,
                    failed - 1, failed > 2 ? "s" : "", inner);
    return fail(h->counts[first], "%s: on rank %d: %s", fn, first, inner);
}

/* ---- files across ranks ----------------------------------------------------------- */

/* The whole of a regular file into a new buffer; no larger than the
 * library's file limit. */
static int read_file(const char *path, unsigned char **out, size_t *size, const char *fn)
{
    *out = NULL;
    *size = 0;
    /* O_NONBLOCK: a FIFO without a writer is refused below, not waited on. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return fail(errno == ENOMEM ? VAE_ERR_NOMEM : VAE_ERR_IO, "%s: cannot open %s: %s", fn,
                    path, strerror(errno));
    struct stat st;
    int rc = VAE_OK;
    unsigned char *buf = NULL;
    uint64_t limit = vae_get_limit(VAE_LIMIT_FILE_BYTES);
    if (fstat(fd, &st) != 0) {
        rc = fail(VAE_ERR_IO, "%s: cannot stat %s: %s", fn, path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        rc = fail(VAE_ERR_IO, "%s: %s is not a regular file", fn, path);
    } else if ((uint64_t)st.st_size > limit || (uint64_t)st.st_size > SIZE_MAX) {
        rc = fail(VAE_ERR_NOMEM, "%s: %s has %llu bytes, above VAE_LIMIT_FILE_BYTES (%llu)", fn,
                  path, (unsigned long long)st.st_size, (unsigned long long)limit);
    } else if (!(buf = malloc(st.st_size ? (size_t)st.st_size : 1))) {
        rc = fail(VAE_ERR_NOMEM, "%s: out of memory for the %llu bytes of %s", fn,
                  (unsigned long long)st.st_size, path);
    } else {
        size_t n = (size_t)st.st_size, got = 0;
        while (got < n) {
            ssize_t k = read(fd, buf + got, n - got > ((size_t)1 << 30) ? (size_t)1 << 30
                                                                         : n - got);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0) {
                rc = fail(VAE_ERR_IO, "%s: cannot read %s: %s", fn, path, strerror(errno));
                break;
            }
            if (k == 0) {
                rc = fail(VAE_ERR_IO, "%s: %s ended after %zu of its %zu bytes", fn, path, got,
                          n);
                break;
            }
            got += (size_t)k;
        }
        *size = n;
    }
    close(fd);
    if (rc != VAE_OK) {
        free(buf);
        *size = 0;
        return rc;
    }
    *out = buf;
    return VAE_OK;
}

/* Rank 0 reads path; every rank ends with the same bytes, or every rank
 * with the same failure. *out is freed by the caller. */
static int share_file(vae_mpi *h, const char *path, unsigned char **out, size_t *size,
                      const char *fn)
{
    unsigned char *buf = NULL;
    uint64_t n = 0;
    int rc = VAE_OK;
    *out = NULL;
    *size = 0;
    if (h->rank == 0) {
        size_t got = 0;
        rc = !path ? fail(VAE_ERR_INVALID, "%s: path is NULL", fn)
                   : read_file(path, &buf, &got, fn);
        n = got;
    }
    if ((rc = agree(h, rc, fn)) != VAE_OK) {
        free(buf);
        return rc;
    }
    int mrc = MPI_Bcast(&n, 1, MPI_UINT64_T, 0, h->comm);
    if (mrc != MPI_SUCCESS) {
        free(buf);
        return mpi_fail(fn, "MPI_Bcast", mrc);
    }
    if (h->rank != 0) {
        if (n > SIZE_MAX)
            rc = fail(VAE_ERR_NOMEM, "%s: %llu bytes do not fit in memory", fn,
                      (unsigned long long)n);
        else if (!(buf = malloc(n ? (size_t)n : 1)))
            rc = fail(VAE_ERR_NOMEM, "%s: out of memory for the %llu bytes of the file", fn,
                      (unsigned long long)n);
    }
    if ((rc = agree(h, rc, fn)) != VAE_OK || (rc = bcast_bytes(h, buf, (size_t)n, 0, fn))) {
        free(buf);
        return rc;
    }
    *out = buf;
    *size = (size_t)n;
    return VAE_OK;
}

int vae_mpi_save(vae_mpi *h, const vae_trainer *t, const char *path)
{
    const char *fn = "vae_mpi_save";
    if (!h)
        return fail(VAE_ERR_INVALID, "%s: handle is NULL", fn);
    int rc = VAE_OK;
    if (h->rank == 0) {
        if (!t || !path)
            rc = fail(VAE_ERR_INVALID, "%s: %s is NULL on rank 0", fn, !t ? "trainer" : "path");
        else if ((rc = vae_trainer_save(t, path)) != VAE_OK)
            vae_call_fail(rc, fn);
    }
    return agree(h, rc, fn);
}

int vae_mpi_restore(vae_mpi *h, vae_trainer *t, const char *path)
{
    const char *fn = "vae_mpi_restore";
    if (!h)
        return fail(VAE_ERR_INVALID, "%s: handle is NULL", fn);
    int rc = agree(h, t ? VAE_OK : fail(VAE_ERR_INVALID, "%s: trainer is NULL", fn), fn);
    unsigned char *buf = NULL;
    size_t n = 0;
    if (rc != VAE_OK || (rc = share_file(h, path, &buf, &n, fn)) != VAE_OK)
        return rc;
    if ((rc = vae_trainer_restore_mem(t, buf, n)) != VAE_OK)
        vae_call_fail(rc, fn);
    free(buf);
    return agree(h, rc, fn);
}

int vae_mpi_model_load(vae_mpi *h, vae_model **out, const char *path)
{
    const char *fn = "vae_mpi_model_load";
    if (!h)
        return fail(VAE_ERR_INVALID, "%s: handle is NULL", fn);
    if (out)
        *out = NULL;
    int rc = agree(h, out ? VAE_OK : fail(VAE_ERR_INVALID, "%s: out is NULL", fn), fn);
    unsigned char *buf = NULL;
    size_t n = 0;
    if (rc != VAE_OK || (rc = share_file(h, path, &buf, &n, fn)) != VAE_OK)
        return rc;
    vae_model *m = NULL;
    if ((rc = vae_model_load_mem(&m, buf, n)) != VAE_OK)
        vae_call_fail(rc, fn);
    free(buf);
    if ((rc = agree(h, rc, fn)) != VAE_OK) {
        vae_model_free(m);
        return rc;
    }
    *out = m;
    return VAE_OK;
}

/* ---- comparing ranks ----------------------------------------------------------------- */

/* 64 bits of a buffer: 8-byte words through a multiply-xorshift mix, then
 * the length. */
static uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 0x243F6A8885A308D3u, w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, b + i, 8);
        h = (h ^ w) * 0x9E3779B97F4A7C15u;
        h ^= h >> 29;
    }
    w = 0;
    memcpy(&w, b + i, n - i);
    h = (h ^ w ^ (uint64_t)n) * 0xBF58476D1CE4E5B9u;
    h ^= h >> 31;
    h *= 0x94D049BB133111EBu;
    return h ^ (h >> 32);
}

int vae_mpi_check_identical(vae_mpi *h, const vae_model *m)
{
    const char *fn = "vae_mpi_check_identical";
    if (!h)
        return fail(VAE_ERR_INVALID, "%s: handle is NULL", fn);
    /* This rank's model as a model file holds it: its size and hash. */
    uint64_t mine[2] = {0, 0}, *all = malloc((size_t)h->size * sizeof mine);
    unsigned char *file = NULL;
    size_t size = 0;
    int rc = VAE_OK;
    if (!m)
        rc = fail(VAE_ERR_INVALID, "%s: the model is NULL", fn);
    else if ((rc = vae_model_save_mem(m, NULL, 0, &size)) != VAE_OK)
        vae_call_fail(rc, fn);
    else if (!all || !(file = malloc(size)))
        rc = fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
    else if ((rc = vae_model_save_mem(m, file, size, &size)) != VAE_OK)
        vae_call_fail(rc, fn);
    if (rc == VAE_OK) {
        mine[0] = size;
        mine[1] = hash_bytes(file, size);
    }
    free(file);
    if ((rc = agree(h, rc, fn)) != VAE_OK) {
        free(all);
        return rc;
    }
    int mrc = MPI_Allgather(mine, 2, MPI_UINT64_T, all, 2, MPI_UINT64_T, h->comm);
    if (mrc != MPI_SUCCESS) {
        free(all);
        return mpi_fail(fn, "MPI_Allgather", mrc);
    }
    int differ = 0, first = -1;
    for (int r = 1; r < h->size; r++) {
        if (all[2 * r] != all[0] || all[2 * r + 1] != all[1]) {
            if (first < 0)
                first = r;
            differ++;
        }
    }
    if (differ && all[2 * first] != all[0])
        rc = fail(VAE_ERR_STATE, "%s: the models of %d of %d ranks differ from rank 0's (the "
                                 "first: rank %d, whose model file has %llu bytes, rank 0's "
                                 "%llu)",
                  fn, differ, h->size, first, (unsigned long long)all[2 * first],
                  (unsigned long long)all[0]);
    else if (differ)
        rc = fail(VAE_ERR_STATE, "%s: the models of %d of %d ranks differ from rank 0's (the "
                                 "first: rank %d)",
                  fn, differ, h->size, first);
    free(all);
    return rc;
}

/* ---- trainers -------------------------------------------------------------------------- */

int vae_mpi_attach(vae_mpi *h, vae_trainer *t)
{
    const char *fn = "vae_mpi_attach";
    if (!h || !t)
        return fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, !h ? "handle" : "trainer");
    int rc = vae_trainer_set_distributed(t, (size_t)h->rank, (size_t)h->size, vae_mpi_exchange,
                                         h);
    return rc == VAE_OK ? rc : vae_call_fail(rc, fn);
}
