/* The allocator hook: every allocation of the library goes through here. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

static void *std_malloc(void *payload, size_t n)
{
    (void)payload;
    return malloc(n);
}

static void *std_realloc(void *payload, void *p, size_t n)
{
    (void)payload;
    return realloc(p, n);
}

static void std_free(void *payload, void *p)
{
    (void)payload;
    free(p);
}

/* Set only while no allocation of the library is live (checked with the
 * counter), so no block is ever freed by another allocator than its own. */
static vae_allocator current = {sizeof(vae_allocator), std_malloc, std_realloc, std_free, NULL};
static atomic_size_t live;

int vae_set_allocator(const vae_allocator *a)
{
    const char *fn = "vae_set_allocator";
    vae_allocator next = {sizeof next, std_malloc, std_realloc, std_free, NULL};
    if (a) {
        if (vae_struct_check(a, sizeof *a, fn, "allocator"))
            return VAE_ERR_INVALID;
        vae_allocator given;
        memset(&given, 0, sizeof given);
        memcpy(&given, a, a->size < sizeof given ? a->size : sizeof given);
        if (!given.malloc_fn || !given.realloc_fn || !given.free_fn)
            return vae_fail(VAE_ERR_INVALID, "%s: malloc_fn, realloc_fn and free_fn must all be set",
                            fn);
        next = given;
        next.size = sizeof next;
    }
    size_t n = atomic_load(&live);
    if (n)
        return vae_fail(VAE_ERR_STATE,
                        "%s: %zu blocks of the library are still allocated; set the allocator "
                        "before creating any object, or after freeing them all",
                        fn, n);
    current = next;
    return VAE_OK;
}

size_t vae_allocations(void)
{
    return atomic_load(&live);
}

void *vae_malloc(size_t n)
{
    void *p = current.malloc_fn(current.payload, n ? n : 1);
    if (p)
        atomic_fetch_add(&live, 1);
    return p;
}

void *vae_calloc(size_t count, size_t size)
{
    int ovf = 0;
    size_t n = vae_mul_size(count, size, &ovf);
    if (ovf)
        return NULL;
    void *p = vae_malloc(n);
    if (p)
        memset(p, 0, n);
    return p;
}

void *vae_realloc(void *p, size_t n)
{
    if (!p)
        return vae_malloc(n);
    /* The block stays live whether the resize succeeds (same or moved) or
     * fails (the old block is kept). */
    return current.realloc_fn(current.payload, p, n ? n : 1);
}

void vae_free(void *p)
{
    if (!p)
        return;
    current.free_fn(current.payload, p);
    atomic_fetch_sub(&live, 1);
}

/* ---- limits on what input can make the library allocate ---------------- */

static uint64_t limits[4] = {0, (uint64_t)1 << 31, (uint64_t)1 << 28, (uint64_t)1 << 32};

int vae_set_limit(int limit, uint64_t value)
{
    if (limit < VAE_LIMIT_FILE_BYTES || limit > VAE_LIMIT_WORKSPACE_BYTES)
        return vae_fail(VAE_ERR_INVALID, "vae_set_limit: unknown limit %d", limit);
    if (value == 0)
        return vae_fail(VAE_ERR_INVALID, "vae_set_limit: a limit of 0 refuses everything");
    limits[limit] = value;
    return VAE_OK;
}

uint64_t vae_get_limit(int limit)
{
    return limit >= VAE_LIMIT_FILE_BYTES && limit <= VAE_LIMIT_WORKSPACE_BYTES ? limits[limit]
                                                                               : 0;
}
