/* A malloc interposer for LD_PRELOAD that fails one allocation of the
 * process, whoever makes it: libvae, the BLAS, libgomp, the C library.
 *
 * It defines malloc, calloc, realloc, free and the aligned allocators
 * (posix_memalign, aligned_alloc, memalign, valloc, pvalloc; libgomp calls
 * memalign) and forwards them to the next definition (glibc's) found with
 * dlsym(RTLD_NEXT). dlsym may itself call calloc/malloc before the real
 * functions are known: those early requests are served from a static
 * bootstrap buffer, and free() ignores pointers into it.
 *
 * Counting starts when the program calls fail_malloc_arm() (found with
 * dlsym(RTLD_DEFAULT), so the program runs unchanged without the
 * preload): from then on every allocating call (a realloc to a nonzero size
 * counts, free does not) is counted across all threads, and the N-th fails
 * once (NULL, errno ENOMEM) when FAIL_MALLOC_AT=N is set. The program asks
 * fail_malloc_calls() how many calls it made and fail_malloc_hit() whether
 * the N-th was reached.
 *
 * The refused call is announced on stderr before NULL is returned, with the
 * object that called the allocator (found with dladdr, which does not
 * allocate), so that a run that dies afterwards says whose allocation it
 * was:
 *
 *   fail_malloc: refused call N (malloc of S bytes) from /path/of/caller.so
 *
 * The caller is the immediate one: an allocation that the C library makes
 * for someone (fopen's FILE, pthread_create's thread block) is the C
 * library's. With FAIL_MALLOC_BACKTRACE=1 the call stack follows
 * (backtrace_symbols_fd; libgcc_s, which backtrace needs, is loaded at
 * arming time, not inside the failing call). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* The functions the program finds with dlsym. */
EXPORT void fail_malloc_arm(void);
EXPORT void fail_malloc_disarm(void);
EXPORT unsigned long fail_malloc_calls(void);
EXPORT int fail_malloc_hit(void);

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);
static void *(*real_valloc)(size_t);
static void *(*real_pvalloc)(size_t);

/* ---- bootstrap: allocations made while dlsym runs ----------------------- */
static _Alignas(max_align_t) unsigned char boot[65536];
static size_t boot_used;
static atomic_int resolving;

static int in_boot(const void *p)
{
    return (const unsigned char *)p >= boot && (const unsigned char *)p < boot + sizeof boot;
}

static void *boot_alloc(size_t n)
{
    /* A size header in front of each block, for realloc. */
    size_t need = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (boot_used + need + sizeof(max_align_t) > sizeof boot)
        return NULL;
    unsigned char *p = boot + boot_used;
    memcpy(p, &n, sizeof n);
    boot_used += need + sizeof(max_align_t);
    return memset(p + sizeof(max_align_t), 0, n);
}

static void resolve(void)
{
    if (real_free)
        return;
    atomic_store(&resolving, 1);
    real_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
    real_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
    real_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
    real_posix_memalign = (int (*)(void **, size_t, size_t))dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "memalign");
    real_valloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "valloc");
    real_pvalloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "pvalloc");
    real_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
    atomic_store(&resolving, 0);
}

__attribute__((constructor)) static void fail_malloc_init(void)
{
    resolve();
}

/* ---- the counter -------------------------------------------------------- */
static atomic_int armed;
static atomic_ulong calls;
static unsigned long fail_at;
static atomic_int hit;
static int want_backtrace;

static void say(const char *s)
{
    ssize_t r = write(2, s, strlen(s));
    (void)r;
}

static void say_num(unsigned long v)
{
    char buf[24];
    int i = sizeof buf;
    buf[--i] = 0;
    do
        buf[--i] = (char)('0' + v % 10);
    while ((v /= 10) && i > 0);
    say(buf + i);
}

/* 1 when this call is the one to fail; `caller` is the return address. */
static int refuse(const char *what, size_t size, const void *caller)
{
    if (!atomic_load_explicit(&armed, memory_order_relaxed))
        return 0;
    unsigned long k = atomic_fetch_add(&calls, 1) + 1;
    if (k != fail_at)
        return 0;
    atomic_store(&hit, 1);
    Dl_info info;
    say("fail_malloc: refused call ");
    say_num(k);
    say(" (");
    say(what);
    say(" of ");
    say_num(size);
    say(" bytes) from ");
    say(dladdr(caller, &info) && info.dli_fname ? info.dli_fname : "?");
    say("\n");
    if (want_backtrace) {
        void *frames[64];
        int n = backtrace(frames, 64);
        say("fail_malloc: refusing this allocation:\n");
        backtrace_symbols_fd(frames, n, 2);
    }
    errno = ENOMEM;
    return 1;
}

EXPORT void fail_malloc_arm(void)
{
    const char *s = getenv("FAIL_MALLOC_AT");
    const char *b = getenv("FAIL_MALLOC_BACKTRACE");
    fail_at = s ? strtoul(s, NULL, 10) : 0;
    want_backtrace = b && *b == '1';
    if (want_backtrace) { /* loads libgcc_s now, not inside the failing call */
        void *f[2];
        backtrace(f, 2);
    }
    atomic_store(&calls, 0);
    atomic_store(&hit, 0);
    atomic_store(&armed, 1);
}

EXPORT void fail_malloc_disarm(void)
{
    atomic_store(&armed, 0);
}

EXPORT unsigned long fail_malloc_calls(void)
{
    return atomic_load(&calls);
}

EXPORT int fail_malloc_hit(void)
{
    return atomic_load(&hit);
}

/* ---- the allocator ------------------------------------------------------ */
#define RET __builtin_return_address(0)

EXPORT void *malloc(size_t n)
{
    if (!real_malloc) {
        if (atomic_load(&resolving))
            return boot_alloc(n);
        resolve();
    }
    return refuse("malloc", n, RET) ? NULL : real_malloc(n);
}

EXPORT void *calloc(size_t k, size_t n)
{
    if (!real_calloc) {
        if (atomic_load(&resolving))
            return n && k > SIZE_MAX / n ? NULL : boot_alloc(k * n);
        resolve();
    }
    return refuse("calloc", k * n, RET) ? NULL : real_calloc(k, n);
}

EXPORT void *realloc(void *p, size_t n)
{
    if (p && in_boot(p)) { /* move out of the bootstrap buffer */
        size_t old;
        memcpy(&old, (unsigned char *)p - sizeof(max_align_t), sizeof old);
        void *q = malloc(n);
        if (q)
            memcpy(q, p, old < n ? old : n);
        return q;
    }
    if (!real_realloc) {
        if (atomic_load(&resolving))
            return boot_alloc(n);
        resolve();
    }
    if (n && refuse("realloc", n, RET))
        return NULL;
    return real_realloc(p, n);
}

EXPORT void free(void *p)
{
    if (!p || in_boot(p))
        return;
    if (!real_free) {
        if (atomic_load(&resolving))
            return; /* a block of glibc's, while dlsym runs: kept */
        resolve();
    }
    real_free(p);
}

EXPORT int posix_memalign(void **out, size_t align, size_t n)
{
    resolve();
    return refuse("posix_memalign", n, RET) ? ENOMEM : real_posix_memalign(out, align, n);
}

EXPORT void *aligned_alloc(size_t align, size_t n)
{
    resolve();
    return refuse("aligned_alloc", n, RET) ? NULL : real_aligned_alloc(align, n);
}

EXPORT void *memalign(size_t align, size_t n)
{
    resolve();
    return refuse("memalign", n, RET) ? NULL : real_memalign(align, n);
}

EXPORT void *valloc(size_t n)
{
    resolve();
    return refuse("valloc", n, RET) ? NULL : real_valloc(n);
}

EXPORT void *pvalloc(size_t n)
{
    resolve();
    return refuse("pvalloc", n, RET) ? NULL : real_pvalloc(n);
}
