#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core.h"
#include "numeric.h"

/* The only mutable global state in the library, one copy per thread. */
static _Thread_local char last_error[512];

int vae_fail(int status, const char *fmt, ...)
{
    /* Formatted aside first: an argument may be vae_last_error() itself, as
     * when a caller wraps the message of a call that failed inside it. */
    char msg[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memcpy(last_error, msg, sizeof msg);
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

VAE_CLONES uint32_t vae_max_abs_bits(const float *x, size_t n)
{
    uint32_t mx = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t a = vae_abs_bits(x[i]);
        mx = a > mx ? a : mx;
    }
    return mx;
}

VAE_CLONES uint32_t vae_add_floats(float *dst, const float *src, size_t n, int want_max)
{
    uint32_t mx = 0;
    if (!want_max) {
        for (size_t i = 0; i < n; i++)
            dst[i] += src[i];
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        float s = dst[i] + src[i];
        dst[i] = s;
        uint32_t a = vae_abs_bits(s);
        mx = a > mx ? a : mx;
    }
    return mx;
}

VAE_CLONES int vae_all_finite(const float *x, size_t n, size_t *where)
{
    /* A value is NaN or infinite exactly when its exponent bits are all ones.
     * An integer OR over the bits vectorizes; the search runs only on failure. */
    uint32_t any = 0;
    for (size_t i = 0; i < n; i++) {
        any |= vae_not_finite(x[i]);
    }
    if (!any)
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

int vae_struct_check(const void *s, size_t known, const char *fn, const char *what)
{
    size_t size;
    memcpy(&size, s, sizeof size);
    if (size < sizeof size)
        return vae_fail(VAE_ERR_INVALID, "%s: %s->size is %zu; set it to sizeof the struct", fn,
                        what, size);
    if (size > known + 4096) /* no later version grows a struct by pages */
        return vae_fail(VAE_ERR_INVALID, "%s: %s->size is %zu, not the size of a struct", fn,
                        what, size);
    const unsigned char *b = s;
    for (size_t i = known; i < size; i++)
        if (b[i])
            return vae_fail(VAE_ERR_INVALID,
                            "%s: %s has %zu bytes; byte %zu, past the %zu this library knows, "
                            "is not zero",
                            fn, what, size, i, known);
    return VAE_OK;
}

void vae_struct_put(void *dst, const void *src, size_t known)
{
    size_t size;
    memcpy(&size, dst, sizeof size);
    size_t n = size < known ? size : known;
    if (n > sizeof size)
        memcpy((char *)dst + sizeof size, (const char *)src + sizeof size, n - sizeof size);
}

double vae_seconds(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
