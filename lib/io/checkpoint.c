/* Checkpoints: a trainer's whole state as a model file with more chunks
 * (format version 2, docs/format.md). */
#include <string.h>

#include "../core/core.h"
#include "../core/numeric.h"
#include "../model/context.h"
#include "../model/elbo.h"
#include "../train/optimizer.h"
#include "../train/trainer.h"
#include "chunk.h"
#include "file.h"
#include "model_file.h"

/* Settings are stored as (key, 0, value) triples, keys as in vae.h. */
#define OPT_KEYS VAE_OPT_DAMPENING
#define ELBO_KEYS VAE_ELBO_FREE_BITS
#define ELBO_KEYS_1_1 VAE_ELBO_OBJECTIVE /* the settings every checkpoint holds */

static void put_rng(vae_writer *w, const vae_rng *g)
{
    for (int i = 0; i < 4; i++)
        vae_put_u64(w, g->s[i]);
    vae_put_u32(w, (uint32_t)g->has_spare);
    vae_put_f32(w, g->has_spare ? g->spare : 0.0f);
}

static int any_nonzero(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (x[i] != 0.0f)
            return 1;
    return 0;
}

static void encode(const vae_trainer *t, vae_writer *w)
{
    const size_t n = t->n;
    vae_put_header(w);
    vae_model_chunks_put(w, t->m);

    /* Beta and the objective always; the settings of 1.2 when they are not
     * the defaults, so that a checkpoint without them stays readable by
     * 1.1. */
    vae_chunk_begin(w, vae_chunk_types[VAE_CK_OBJV]);
    double ev[ELBO_KEYS + 1], dv;
    int keep[ELBO_KEYS + 1];
    const vae_elbo defaults = vae_elbo_defaults();
    uint32_t ecount = 0;
    for (int key = 1; key <= ELBO_KEYS; key++) {
        vae_elbo_get_param(t->e, key, &ev[key]);
        vae_elbo_get_param(&defaults, key, &dv);
        keep[key] = key <= ELBO_KEYS_1_1 || ev[key] != dv;
        ecount += (uint32_t)keep[key];
    }
    vae_put_u32(w, ecount);
    for (int key = 1; key <= ELBO_KEYS; key++) {
        if (!keep[key])
            continue;
        vae_put_u32(w, (uint32_t)key);
        vae_put_u32(w, 0);
        vae_put_f64(w, ev[key]);
    }
    vae_chunk_end(w);

    vae_chunk_begin(w, vae_chunk_types[VAE_CK_OPTM]);
    vae_put_u32(w, (uint32_t)t->kind);
    uint32_t count = 0;
    double v;
    for (int key = 1; key <= OPT_KEYS; key++)
        count += vae_optimizer_get_param(t->opt, key, &v) == VAE_OK;
    vae_put_u32(w, count);
    for (int key = 1; key <= OPT_KEYS; key++)
        if (vae_optimizer_get_param(t->opt, key, &v) == VAE_OK) {
            vae_put_u32(w, (uint32_t)key);
            vae_put_u32(w, 0);
            vae_put_f64(w, v);
        }
    vae_put_u64(w, n);
    vae_put_u32(w, (uint32_t)t->momentum_started);
    vae_put_u32(w, 0);
    vae_put_f32s(w, t->s1, n);
    if (t->s2)
        vae_put_f32s(w, t->s2, n);
    vae_chunk_end(w);

    vae_chunk_begin(w, vae_chunk_types[VAE_CK_TRNR]);
    put_rng(w, &t->rng);
    vae_put_u64(w, t->steps);
    vae_put_u64(w, t->epochs);
    vae_chunk_end(w);

    if (t->ep.open) {
        vae_chunk_begin(w, vae_chunk_types[VAE_CK_EPOC]);
        put_rng(w, &t->ep.rng);
        vae_put_u64(w, t->ep.total);
        vae_put_u64(w, t->ep.done);
        vae_put_u64(w, t->ep.steps);
        vae_put_u32(w, (uint32_t)t->ep.shuffle);
        vae_put_u32(w, 0);
        for (int i = 0; i < 3; i++)
            vae_put_f64(w, t->ep.sums[i]);
        vae_chunk_end(w);
    }
    if (any_nonzero(t->grads, n)) {
        vae_chunk_begin(w, vae_chunk_types[VAE_CK_GRAD]);
        vae_put_u64(w, n);
        vae_put_f32s(w, t->grads, n);
        vae_chunk_end(w);
    }
    if (t->n_meta) {
        vae_chunk_begin(w, vae_chunk_types[VAE_CK_META]);
        vae_put_u32(w, (uint32_t)t->n_meta);
        for (size_t i = 0; i < t->n_meta; i++) {
            size_t kl = strlen(t->meta[i].key), vl = strlen(t->meta[i].value);
            vae_put_u32(w, (uint32_t)kl);
            vae_put_bytes(w, t->meta[i].key, kl);
            vae_put_u32(w, (uint32_t)vl);
            vae_put_bytes(w, t->meta[i].value, vl);
        }
        vae_chunk_end(w);
    }
    vae_chunk_begin(w, "DONE");
    vae_chunk_end(w);
}

/* VAE_ERR_NUMERIC when a value the checkpoint would hold is not finite. */
static int check_finite(const vae_trainer *t, const char *fn)
{
    const struct {
        const float *x;
        const char *what;
    } parts[] = {{t->m->params, "parameter"},
                 {t->s1, t->s2 ? "Adam first moment" : "momentum buffer"},
                 {t->s2, "Adam second moment"},
                 {t->grads, "pending gradient"}};
    for (size_t k = 0; k < sizeof parts / sizeof *parts; k++) {
        if (!parts[k].x)
            continue;
        size_t bad = vae_first_not_finite(parts[k].x, t->n);
        if (bad < t->n)
            return vae_fail(VAE_ERR_NUMERIC, "%s: %s %zu is %g: a state with a value that is "
                                             "not finite is not saved",
                            fn, parts[k].what, bad, (double)parts[k].x[bad]);
    }
    return VAE_OK;
}

int vae_trainer_save_mem(const vae_trainer *t, void *buf, size_t cap, size_t *size)
{
    const char *fn = "vae_trainer_save_mem";
    if (!t || !size)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, t ? "size" : "trainer");
    vae_writer w = {0};
    encode(t, &w);
    *size = w.n;
    if (!buf)
        return VAE_OK;
    if (cap < *size)
        return vae_fail(VAE_ERR_INVALID, "%s: the buffer has %zu bytes, the checkpoint needs %zu",
                        fn, cap, *size);
    int rc = check_finite(t, fn);
    if (rc)
        return rc;
    w = (vae_writer){buf, buf, 0, 0};
    encode(t, &w);
    return VAE_OK;
}

int vae_trainer_save(const vae_trainer *t, const char *path)
{
    const char *fn = "vae_trainer_save";
    if (!t)
        return vae_fail(VAE_ERR_INVALID, "%s: trainer is NULL", fn);
    if (!path || !*path)
        return vae_fail(VAE_ERR_INVALID, "%s: path is %s", fn, path ? "empty" : "NULL");
    int rc = check_finite(t, fn);
    if (rc)
        return rc;
    vae_writer w = {0};
    encode(t, &w);
    unsigned char *buf = vae_malloc(w.n);
    if (!buf)
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory for %zu bytes", fn, w.n);
    w = (vae_writer){buf, buf, 0, 0};
    encode(t, &w);
    rc = vae_file_write_atomic(path, buf, w.n, fn);
    vae_free(buf);
    return rc;
}

/* ---- restoring ---------------------------------------------------------- */

/* Everything a checkpoint restores, read and checked before any of it is
 * written to the trainer. */
typedef struct restored {
    float sigma;
    vae_elbo e;
    vae_optimizer opt;
    int momentum_started;
    const unsigned char *params, *s1, *s2, *grads; /* little-endian floats, n each */
    vae_rng rng;
    uint64_t steps, epochs;
    vae_open_epoch ep;
    vae_meta_entry *meta;
    size_t n_meta;
} restored;

static int get_rng(vae_reader *r, vae_rng *g)
{
    for (int i = 0; i < 4; i++)
        g->s[i] = vae_get_u64(r);
    uint32_t spare = vae_get_u32(r);
    g->spare = vae_get_f32(r);
    g->has_spare = spare == 1;
    /* xoshiro256** never leaves the all-zero state, and is never in it. */
    return !r->err && (g->s[0] | g->s[1] | g->s[2] | g->s[3]) != 0 && spare <= 1 &&
           !vae_not_finite(g->spare);
}

/* n floats at p, all finite: the index of the first that is not, or n. */
static size_t first_bad(const unsigned char *p, size_t n, int nonneg)
{
    for (size_t i = 0; i < n; i++, p += 4) {
        uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24;
        float f = vae_float_of_bits(u);
        if (vae_not_finite(f) || (nonneg && f < 0.0f))
            return i;
    }
    return n;
}

static void get_floats(const unsigned char *p, size_t n, float *out)
{
    vae_reader r = {p, 4 * n, 0};
    for (size_t i = 0; i < n; i++)
        out[i] = vae_get_f32(&r);
}

#define BAD(...) vae_fail(VAE_ERR_FORMAT, __VA_ARGS__)

static int read_settings(vae_reader *r, int objective, restored *s, const char *what,
                         const char *fn)
{
    const char *chunk = objective ? "OBJV" : "OPTM";
    uint32_t count = vae_get_u32(r);
    int expected = 0;
    double v;
    for (int key = 1; key <= (objective ? ELBO_KEYS_1_1 : OPT_KEYS); key++)
        expected += objective ? 1 : vae_optimizer_get_param(&s->opt, key, &v) == VAE_OK;
    /* The objective's settings after ELBO_KEYS_1_1 may be left out. */
    if (r->err || count < (uint32_t)expected ||
        count > (uint32_t)(objective ? ELBO_KEYS : expected))
        return objective ? BAD("%s: %s: the OBJV chunk holds %u settings, this library reads "
                               "%d to %d",
                               fn, what, (unsigned)count, expected, ELBO_KEYS)
                         : BAD("%s: %s: the OPTM chunk holds %u settings, this library writes "
                               "and needs %d",
                               fn, what, (unsigned)count, expected);
    uint32_t seen = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t key = vae_get_u32(r), zero = vae_get_u32(r);
        double value = vae_get_f64(r);
        if (r->err || zero != 0 || key == 0 || key > 31 || (seen & (1u << key)))
            return BAD("%s: %s: %s chunk: bad or repeated setting %u", fn, what, chunk,
                       (unsigned)key);
        seen |= 1u << key;
        int rc = objective ? vae_elbo_set_param(&s->e, (int)key, value)
                           : vae_optimizer_set_param(&s->opt, (int)key, value);
        if (rc) {
            char inner[256];
            snprintf(inner, sizeof inner, "%s", vae_last_error());
            return BAD("%s: %s: %s chunk: %s", fn, what, chunk, inner);
        }
    }
    const uint32_t needed = (1u << VAE_ELBO_BETA) | (1u << VAE_ELBO_OBJECTIVE);
    if (objective && (seen & needed) != needed)
        return BAD("%s: %s: the OBJV chunk lacks %s", fn, what,
                   seen & (1u << VAE_ELBO_BETA) ? "the objective" : "beta");
    return VAE_OK;
}

static int read_state(const vae_chunks *c, const vae_trainer *t, restored *s, const char *what,
                      const char *fn)
{
    const size_t n = t->n;
    if (!c->at[VAE_CK_TRNR] || !c->at[VAE_CK_OPTM] || !c->at[VAE_CK_OBJV])
        return BAD("%s: %s: a model file, not a checkpoint: it has no trainer state (no %s "
                   "chunk)",
                   fn, what,
                   !c->at[VAE_CK_TRNR] ? "TRNR" : !c->at[VAE_CK_OPTM] ? "OPTM" : "OBJV");
    int rc = vae_arch_match(c->at[VAE_CK_ARCH], c->len[VAE_CK_ARCH], t->m, &s->sigma, what, fn);
    if (rc)
        return rc;
    vae_reader r = {c->at[VAE_CK_PARM], c->len[VAE_CK_PARM], 0};
    uint64_t np = vae_get_u64(&r);
    if (r.err || np != n || r.left != 4 * n)
        return BAD("%s: %s: the PARM chunk holds %llu parameters in %zu bytes, the model has %zu",
                   fn, what, (unsigned long long)np, c->len[VAE_CK_PARM], n);
    s->params = r.p;
    size_t bad = first_bad(s->params, n, 0);
    if (bad < n)
        return BAD("%s: %s: parameter %zu is not finite", fn, what, bad);

    r = (vae_reader){c->at[VAE_CK_OBJV], c->len[VAE_CK_OBJV], 0};
    s->e = vae_elbo_defaults(); /* settings left out have their defaults */
    if ((rc = read_settings(&r, 1, s, what, fn)))
        return rc;
    if (r.left)
        return BAD("%s: %s: %zu bytes too many in the OBJV chunk", fn, what, r.left);

    r = (vae_reader){c->at[VAE_CK_OPTM], c->len[VAE_CK_OPTM], 0};
    uint32_t kind = vae_get_u32(&r);
    if (r.err)
        return BAD("%s: %s: truncated OPTM chunk", fn, what);
    if (kind != (uint32_t)t->kind)
        return vae_fail(VAE_ERR_SHAPE, "%s: %s: the checkpoint's optimizer is %s, the "
                                       "trainer's %s",
                        fn, what,
                        kind == VAE_OPTIMIZER_ADAM  ? "Adam"
                        : kind == VAE_OPTIMIZER_SGD ? "SGD"
                                                    : "of an unknown kind",
                        t->kind == VAE_OPTIMIZER_ADAM ? "Adam" : "SGD");
    s->opt = *t->opt;
    if ((rc = read_settings(&r, 0, s, what, fn)))
        return rc;
    uint64_t ns = vae_get_u64(&r);
    uint32_t started = vae_get_u32(&r), zero = vae_get_u32(&r);
    size_t states = t->s2 ? 2 : 1;
    if (r.err || ns != n || started > 1 || zero != 0 || r.left != 4 * n * states)
        return BAD("%s: %s: the OPTM chunk's state does not fit the model's %zu parameters", fn,
                   what, n);
    s->momentum_started = (int)started;
    s->s1 = r.p;
    s->s2 = t->s2 ? r.p + 4 * n : NULL;
    if ((bad = first_bad(s->s1, n, 0)) < n || (s->s2 && (bad = first_bad(s->s2, n, 1)) < n))
        return BAD("%s: %s: optimizer state value %zu is not finite%s", fn, what, bad,
                   s->s2 ? " (or a second moment below 0)" : "");

    r = (vae_reader){c->at[VAE_CK_TRNR], c->len[VAE_CK_TRNR], 0};
    int rng_ok = get_rng(&r, &s->rng);
    s->steps = vae_get_u64(&r);
    s->epochs = vae_get_u64(&r);
    /* 2^62 steps are beyond any run (at a nanosecond each, 146 years); a
     * counter near 2^64 would wrap Adam's step number t = steps + 1. */
    if (r.err || r.left || !rng_ok || s->steps > ((uint64_t)1 << 62))
        return BAD("%s: %s: bad TRNR chunk (generator state or counters)", fn, what);

    memset(&s->ep, 0, sizeof s->ep);
    if (c->at[VAE_CK_EPOC]) {
        r = (vae_reader){c->at[VAE_CK_EPOC], c->len[VAE_CK_EPOC], 0};
        rng_ok = get_rng(&r, &s->ep.rng);
        uint64_t total = vae_get_u64(&r), done = vae_get_u64(&r), steps = vae_get_u64(&r);
        uint32_t shuffle = vae_get_u32(&r);
        zero = vae_get_u32(&r);
        for (int i = 0; i < 3; i++)
            s->ep.sums[i] = vae_get_f64(&r);
        int sums_ok = 1;
        for (int i = 0; i < 3; i++)
            sums_ok = sums_ok && s->ep.sums[i] - s->ep.sums[i] == 0.0; /* finite */
        if (r.err || r.left || !rng_ok || !sums_ok || shuffle > 1 || zero != 0 || total == 0 ||
            total > SIZE_MAX / sizeof(size_t) || done > total || steps > done)
            return BAD("%s: %s: bad EPOC chunk (the open epoch)", fn, what);
        s->ep.open = 1;
        s->ep.shuffle = (int)shuffle;
        s->ep.total = (size_t)total;
        s->ep.done = (size_t)done;
        s->ep.steps = (size_t)steps;
    }

    s->grads = NULL;
    if (c->at[VAE_CK_GRAD]) {
        r = (vae_reader){c->at[VAE_CK_GRAD], c->len[VAE_CK_GRAD], 0};
        ns = vae_get_u64(&r);
        if (r.err || ns != n || r.left != 4 * n)
            return BAD("%s: %s: the GRAD chunk does not fit the model's %zu parameters", fn,
                       what, n);
        s->grads = r.p;
        if ((bad = first_bad(s->grads, n, 0)) < n)
            return BAD("%s: %s: pending gradient %zu is not finite", fn, what, bad);
    }

    if (c->at[VAE_CK_META]) {
        r = (vae_reader){c->at[VAE_CK_META], c->len[VAE_CK_META], 0};
        uint32_t count = vae_get_u32(&r);
        if (r.err || count > VAE_META_MAX_ENTRIES)
            return BAD("%s: %s: bad meta chunk: %u entries", fn, what, (unsigned)count);
        s->meta = count ? vae_calloc(count, sizeof *s->meta) : NULL;
        if (count && !s->meta)
            return vae_fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
        for (uint32_t i = 0; i < count; i++) {
            uint32_t kl = vae_get_u32(&r);
            const char *k = (const char *)vae_get_bytes(&r, kl);
            uint32_t vl = vae_get_u32(&r);
            const char *v = (const char *)vae_get_bytes(&r, vl);
            const char *why = r.err ? "truncated" : vae_meta_check(k, kl, v, vl);
            for (uint32_t j = 0; !why && j < s->n_meta; j++)
                if (strlen(s->meta[j].key) == kl && memcmp(s->meta[j].key, k, kl) == 0)
                    why = "a key appears twice";
            if (why)
                return BAD("%s: %s: bad meta chunk, entry %u: %s", fn, what, (unsigned)i, why);
            if (!vae_meta_make(&s->meta[s->n_meta], k, kl, v, vl))
                return vae_fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
            s->n_meta++;
        }
        if (r.left)
            return BAD("%s: %s: %zu bytes too many in the meta chunk", fn, what, r.left);
    }
    return VAE_OK;
}

static void commit(vae_trainer *t, restored *s)
{
    vae_model *m = t->m;
    const size_t n = t->n;
    get_floats(s->params, n, m->params);
    m->param_max_known = 0; /* the next step scans the new parameters */
    if (m->likelihood == VAE_LIKELIHOOD_GAUSSIAN)
        m->sigma = s->sigma;
    *t->e = s->e;
    *t->opt = s->opt;
    get_floats(s->s1, n, t->s1);
    if (t->s2)
        get_floats(s->s2, n, t->s2);
    /* The overflow test of the next step reads these bounds (trainer.h). */
    t->state_max[0] = t->state_max[1] = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float a = t->s1[i] < 0.0f ? -t->s1[i] : t->s1[i];
        t->state_max[0] = a > t->state_max[0] ? a : t->state_max[0];
        if (t->s2)
            t->state_max[1] = t->s2[i] > t->state_max[1] ? t->s2[i] : t->state_max[1];
    }
    t->momentum_started = s->momentum_started;
    if (s->grads) {
        get_floats(s->grads, n, t->grads);
        t->grad_max_known = 0; /* the next step scans it */
    } else {
        vae_trainer_clear_grads(t);
    }
    t->rng = s->rng;
    t->steps = s->steps;
    t->epochs = s->epochs;
    t->ep = s->ep;
    vae_meta_free(t->meta, t->n_meta);
    t->meta = s->meta;
    t->n_meta = s->n_meta;
    s->meta = NULL;
    s->n_meta = 0;
}

static int restore(vae_trainer *t, const unsigned char *buf, size_t size, const char *what,
                   const char *fn)
{
    if (size < VAE_FILE_HEADER_BYTES || memcmp(buf, vae_file_magic, VAE_FILE_MAGIC_BYTES) != 0)
        return BAD("%s: %s: not a libvae checkpoint (bad magic or too short)", fn, what);
    vae_reader r = {buf + VAE_FILE_MAGIC_BYTES, 4, 0};
    uint32_t version = vae_get_u32(&r);
    if (version != 2) {
        vae_reader rw = {buf + 12, 4, 0};
        char wv[16];
        vae_version_text(vae_get_u32(&rw), wv);
        return version == 1
                   ? BAD("%s: %s: a model file of format version 1, which holds no trainer "
                         "state",
                         fn, what)
                   : BAD("%s: %s: format version %u (written by libvae %s); this library reads "
                         "checkpoints of version 2",
                         fn, what, (unsigned)version, wv);
    }
    vae_chunks c;
    int rc = vae_chunks_parse(&c, buf, size, what, fn);
    if (rc)
        return rc;
    if ((rc = vae_ctx_enter(t->ctx, fn)))
        return rc;
    restored s;
    memset(&s, 0, sizeof s);
    rc = read_state(&c, t, &s, what, fn);
    if (!rc)
        commit(t, &s);
    vae_meta_free(s.meta, s.n_meta);
    vae_ctx_leave(t->ctx);
    return rc;
}

int vae_trainer_restore_mem(vae_trainer *t, const void *buf, size_t size)
{
    const char *fn = "vae_trainer_restore_mem";
    if (!t || !buf)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, t ? "buf" : "trainer");
    if ((uint64_t)size > vae_get_limit(VAE_LIMIT_FILE_BYTES))
        return vae_fail(VAE_ERR_NOMEM, "%s: %zu bytes, above the limit VAE_LIMIT_FILE_BYTES = %llu",
                        fn, size, (unsigned long long)vae_get_limit(VAE_LIMIT_FILE_BYTES));
    return restore(t, buf, size, "buffer", fn);
}

int vae_trainer_restore(vae_trainer *t, const char *path)
{
    const char *fn = "vae_trainer_restore";
    if (!t || !path)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, t ? "path" : "trainer");
    unsigned char *buf = NULL;
    size_t size = 0;
    int rc = vae_file_read_all(path, fn, &buf, &size);
    if (!rc)
        rc = restore(t, buf, size, path, fn);
    vae_free(buf);
    return rc;
}
