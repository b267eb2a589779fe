#include <stdarg.h>
#include <stdio.h>

#include "core.h"

/* The only mutable global state in the library, one copy per thread. */
static _Thread_local char last_error[512];

int vae_fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

const char *vae_last_error(void)
{
    return last_error;
}

const char *vae_strerror(int status)
{
    switch (status) {
    case VAE_OK: return "success";
    case VAE_ERR_INVALID: return "invalid argument";
    case VAE_ERR_SHAPE: return "shapes do not fit";
    case VAE_ERR_NOMEM: return "out of memory";
    case VAE_ERR_IO: return "input/output error";
    case VAE_ERR_FORMAT: return "bad file format";
    case VAE_ERR_NUMERIC: return "non-finite value";
    case VAE_ERR_STATE: return "call out of order";
    case VAE_ERR_CANCELLED: return "cancelled by callback";
    default: return "unknown status";
    }
}

int vae_all_finite(const float *x, size_t n, size_t *where)
{
    /* Summing x*0 turns any NaN or inf into NaN; one cheap vectorizable pass
     * for the common all-finite case, then a search only when it fails. */
    float acc = 0.0f;
    for (size_t i = 0; i < n; i++)
        acc += x[i] * 0.0f;
    if (acc == 0.0f)
        return 1;
    for (size_t i = 0; i < n; i++) {
        if (!(x[i] - x[i] == 0.0f)) {
            if (where)
                *where = i;
            return 0;
        }
    }
    return 1;
}
