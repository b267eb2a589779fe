/* Loads a golden model file (or checkpoint) with the library under test and checks that
 * it gives the recorded outputs and values bit for bit (tests/golden/README.md).
 *
 *   golden_check MODEL EXPECTED
 *       vae_model_load(MODEL), then vae_encode() of the recorded inputs, and vae_decode()
 *       of the recorded latent codes when EXPECTED has them; every output compared with
 *       the recorded float bits. Also, when EXPECTED records them: the likelihood, the
 *       model's settings, a hash of the parameter slab, and that vae_model_save_mem()
 *       gives the file's bytes again ("resave").
 *   golden_check --checkpoint CHECKPOINT EXPECTED
 *       as above on the model part of the checkpoint (vae_model_load() reads it); then a
 *       second copy of that model, its parameters and settings overwritten, and a trainer
 *       over it (optimizer kind from EXPECTED's "optimizer" line, settings overwritten, a
 *       stale metadata entry) restore the checkpoint with vae_trainer_restore(). Every
 *       value the restore must have written is compared with EXPECTED through the public
 *       getters (settings, counters, open epoch, pending gradient, metadata, parameters,
 *       outputs), and vae_trainer_save_mem() must give the checkpoint's bytes again.
 *
 * Public API only. Prints the host's byte order, pointer width and FLT_EVAL_METHOD
 * first, so a log shows which kind of machine ran the check. Exit status 0 when
 * everything matches, 1 on a mismatch or a failed call, 2 on bad arguments or an
 * unreadable EXPECTED file. */
#include <float.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vae/vae.h>

/* Checkpoints exist since 1.1; against an older header only the model mode is built. */
#if VAE_VERSION_NUMBER >= 10100
#define GOLDEN_CHECKPOINTS 1
#else
#define GOLDEN_CHECKPOINTS 0
#endif

/* ---- the expected-outputs file -------------------------------------------- */

typedef struct section {
    size_t n;             /* samples; 0 when the file has no such section */
    float *in, *out, *out2; /* encode: x, mu, logvar; decode: z, mean, unused */
} section;

enum { SET_MODEL, SET_OPT, SET_ELBO };
static const char *const set_tag[] = {"model", "opt", "elbo"};

typedef struct setting {
    int kind;             /* SET_* */
    int key;
    double value;
} setting;

#define MAX_SETTINGS 96

typedef struct hashed {
    int given;
    size_t n;             /* floats */
    uint64_t hash;        /* FNV-1a 64 of their bits as little-endian bytes */
} hashed;

typedef struct expected {
    size_t input_dim, latent_dim;
    int likelihood;       /* VAE_LIKELIHOOD_*, -1 when not given */
    setting set[MAX_SETTINGS];
    size_t n_set;
    hashed params, grads;
    int resave;
    /* checkpoints */
    int optimizer;        /* VAE_OPTIMIZER_*, 0 when not given */
    int has_steps, has_epochs, has_position, has_meta, has_epoch_steps;
    uint64_t steps, epochs;
    uint64_t done, total, epoch_steps;
    int has_mean[3];      /* the open epoch's mean loss, recon, kl */
    double mean[3];
    size_t n_meta;
    char **meta_key, **meta_value; /* n_meta each, NUL-terminated */
    section enc, dec;
} expected;

static const char *g_path; /* the expected file, for messages */
static size_t g_line;

static int bad(const char *what)
{
    fflush(stdout);
    fprintf(stderr, "golden_check: %s:%zu: %s\n", g_path, g_line, what);
    return 2;
}

/* A line holds at most a metadata value of 65535 bytes as hex, and its key. */
#define LINE_MAX_BYTES (2 * 65535 + 2 * 255 + 64)

/* Next line that is neither blank nor a comment, without its newline; NULL at EOF or
 * when a line is too long (*too_long set). */
static char *next_line(FILE *f, char *buf, size_t cap, int *too_long)
{
    *too_long = 0;
    while (fgets(buf, (int)cap, f)) {
        g_line++;
        size_t len = strlen(buf);
        if (len + 1 == cap && buf[len - 1] != '\n' && !feof(f)) {
            *too_long = 1;
            return NULL;
        }
        buf[strcspn(buf, "\r\n")] = '\0';
        if (buf[0] != '\0' && buf[0] != '#')
            return buf;
    }
    return NULL;
}

static char g_buf[LINE_MAX_BYTES + 2];

static int end_of_file(int too_long, const char *what)
{
    return bad(too_long ? "line too long" : what);
}

/* Reads n * dim value lines `name sample index bits decimal`, in order. */
static int read_values(FILE *f, const char *name, size_t n, size_t dim, float *out)
{
    char tag[32], hex[32], dec[64];
    int too_long;
    for (size_t i = 0; i < n * dim; i++) {
        unsigned long s, j;
        char *buf = next_line(f, g_buf, sizeof g_buf, &too_long);
        if (!buf)
            return end_of_file(too_long, "file ends inside a section");
        if (sscanf(buf, "%31s %lu %lu %31s %63s", tag, &s, &j, hex, dec) != 5)
            return bad("expected 'name sample index bits decimal'");
        if (strcmp(tag, name) != 0 || s != i / dim || j != i % dim) {
            char msg[128];
            snprintf(msg, sizeof msg, "expected %s %zu %zu", name, i / dim, i % dim);
            return bad(msg);
        }
        char *end = NULL;
        unsigned long u = strtoul(hex, &end, 16);
        if (strlen(hex) != 8 || *end != '\0')
            return bad("the bits are not 8 hex digits");
        uint32_t u32 = (uint32_t)u;
        memcpy(&out[i], &u32, sizeof u32);
        /* The decimal is for people; it must still name the same float. */
        float d = strtof(dec, &end);
        if (*end != '\0' || memcmp(&d, &out[i], sizeof d) != 0)
            return bad("the decimal does not name the float of the bits");
    }
    return 0;
}

static void *alloc_bytes(size_t n)
{
    void *p = calloc(n ? n : 1, 1);
    if (!p) {
        fprintf(stderr, "golden_check: out of memory\n");
        exit(1);
    }
    return p;
}

static float *alloc_floats(size_t n) { return alloc_bytes(n * sizeof(float)); }

static void free_expected(expected *e)
{
    free(e->enc.in);
    free(e->enc.out);
    free(e->enc.out2);
    free(e->dec.in);
    free(e->dec.out);
    for (size_t i = 0; i < e->n_meta; i++) {
        free(e->meta_key ? e->meta_key[i] : NULL);
        free(e->meta_value ? e->meta_value[i] : NULL);
    }
    free(e->meta_key);
    free(e->meta_value);
    memset(e, 0, sizeof *e);
}

/* A 64-bit unsigned decimal (no sign, no spaces) or 16 hex digits. */
static int parse_u64(const char *s, int hex, uint64_t *v)
{
    char *end = NULL;
    if (!*s || *s == '-' || *s == '+' || (hex && strlen(s) != 16))
        return 0;
    unsigned long long u = strtoull(s, &end, hex ? 16 : 10);
    *v = (uint64_t)u;
    return *end == '\0';
}

/* "model|opt|elbo KEY BITS DECIMAL": the double's 16 hex digits, and %.17g naming it. */
static int read_setting(expected *e, int kind, const char *rest)
{
    char k[32], hex[32], dec[64], extra[2];
    uint64_t key = 0, u = 0;
    if (sscanf(rest, "%31s %31s %63s %1s", k, hex, dec, extra) != 3 || !parse_u64(k, 0, &key) ||
        key == 0 || key > 255 || !parse_u64(hex, 1, &u))
        return bad("expected 'model|opt|elbo key bits-16-hex decimal'");
    if (e->n_set == MAX_SETTINGS)
        return bad("too many settings");
    for (size_t i = 0; i < e->n_set; i++)
        if (e->set[i].kind == kind && e->set[i].key == (int)key)
            return bad("setting given twice");
    setting *s = &e->set[e->n_set++];
    s->kind = kind;
    s->key = (int)key;
    memcpy(&s->value, &u, sizeof u);
    char *end = NULL;
    double d = strtod(dec, &end);
    if (*end != '\0' || memcmp(&d, &s->value, sizeof d) != 0)
        return bad("the decimal does not name the double of the bits");
    return 0;
}

static const char *const mean_name[] = {"loss", "recon", "kl"};

/* "epoch_mean loss|recon|kl BITS DECIMAL" */
static int read_mean(expected *e, const char *rest)
{
    char name[32], hex[32], dec[64], extra[2];
    uint64_t u = 0;
    int i = 0;
    if (sscanf(rest, "%31s %31s %63s %1s", name, hex, dec, extra) != 3 || !parse_u64(hex, 1, &u))
        return bad("expected 'epoch_mean loss|recon|kl bits-16-hex decimal'");
    while (i < 3 && strcmp(name, mean_name[i]) != 0)
        i++;
    if (i == 3 || e->has_mean[i])
        return bad("epoch_mean names loss, recon or kl, each once");
    memcpy(&e->mean[i], &u, sizeof u);
    e->has_mean[i] = 1;
    char *end = NULL;
    double d = strtod(dec, &end);
    if (*end != '\0' || memcmp(&d, &e->mean[i], sizeof d) != 0)
        return bad("the decimal does not name the double of the bits");
    return 0;
}

/* "params|grads COUNT HASH" */
static int read_hash(hashed *h, const char *rest)
{
    char n[32], hex[32], extra[2];
    uint64_t count = 0;
    if (h->given)
        return bad("given twice");
    if (sscanf(rest, "%31s %31s %1s", n, hex, extra) != 2 || !parse_u64(n, 0, &count) ||
        count == 0 || count > (1u << 30) || !parse_u64(hex, 1, &h->hash))
        return bad("expected 'params|grads count hash-16-hex'");
    h->n = (size_t)count;
    h->given = 1;
    return 0;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Hex bytes ('-' for none) into a new NUL-terminated string; NULL when malformed or
 * when the bytes hold a NUL. */
static char *unhex(const char *s)
{
    size_t n = strlen(s);
    if (strcmp(s, "-") == 0)
        return alloc_bytes(1);
    if (n == 0 || n % 2)
        return NULL;
    char *out = alloc_bytes(n / 2 + 1);
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hex_digit(s[2 * i]), lo = hex_digit(s[2 * i + 1]);
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(out);
            return NULL;
        }
        out[i] = (char)(hi << 4 | lo);
    }
    return out;
}

/* The next word of *s (split at single spaces, written over with NUL), or NULL. */
static char *next_word(char **s)
{
    char *w = *s;
    if (!w || !*w)
        return NULL;
    char *sp = strchr(w, ' ');
    if (sp) {
        *sp = '\0';
        *s = sp + 1;
    } else {
        *s = w + strlen(w);
    }
    return w;
}

/* "meta N", then N lines "entry I KEY-HEX VALUE-HEX". */
static int read_meta(FILE *f, expected *e, const char *rest)
{
    uint64_t n = 0;
    char num[32], extra[2];
    if (e->has_meta)
        return bad("meta given twice");
    if (sscanf(rest, "%31s %1s", num, extra) != 1 || !parse_u64(num, 0, &n) || n > 1024)
        return bad("expected 'meta count' (0 to 1024)");
    e->has_meta = 1;
    e->meta_key = alloc_bytes((size_t)n * sizeof(char *));
    e->meta_value = alloc_bytes((size_t)n * sizeof(char *));
    e->n_meta = (size_t)n;
    for (size_t i = 0; i < e->n_meta; i++) {
        int too_long;
        char *buf = next_line(f, g_buf, sizeof g_buf, &too_long);
        if (!buf)
            return end_of_file(too_long, "file ends inside the metadata");
        char *tag = next_word(&buf), *idx = next_word(&buf);
        char *k = next_word(&buf), *v = next_word(&buf);
        uint64_t j = 0;
        if (!tag || strcmp(tag, "entry") != 0 || !idx || !parse_u64(idx, 0, &j) || j != i ||
            !k || !v || next_word(&buf)) {
            char msg[96];
            snprintf(msg, sizeof msg, "expected 'entry %zu key-hex value-hex'", i);
            return bad(msg);
        }
        e->meta_key[i] = unhex(k);
        e->meta_value[i] = unhex(v);
        if (!e->meta_key[i] || !e->meta_value[i] || !e->meta_key[i][0])
            return bad("a key or value is not hex bytes without NUL ('-' for an empty value)");
    }
    return 0;
}

/* Reads the file into e; on failure (2) e holds nothing. */
static int read_expected(const char *path, expected *e)
{
    memset(e, 0, sizeof *e);
    e->likelihood = -1;
    g_path = path;
    g_line = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return 2;
    }
    char key[32], word[32];
    int rc = 0, too_long = 0;
    unsigned long v = 0;
    char *buf = next_line(f, g_buf, sizeof g_buf, &too_long);
    if (!buf || strcmp(buf, "libvae-golden 1") != 0) {
        rc = bad("not a 'libvae-golden 1' file");
        goto out;
    }
    for (;;) {
        if (!(buf = next_line(f, g_buf, sizeof g_buf, &too_long))) {
            rc = end_of_file(too_long, "no 'end' line");
            goto out;
        }
        if (strcmp(buf, "end") == 0) {
            if (!e->input_dim || !e->latent_dim)
                rc = bad("no input_dim or latent_dim line");
            break;
        }
        /* The first word, and the rest of the line after one space. */
        size_t kl = strcspn(buf, " ");
        const char *rest = buf[kl] ? buf + kl + 1 : buf + kl;
        if (kl >= sizeof key) {
            rc = bad("unknown key");
            goto out;
        }
        memcpy(key, buf, kl);
        key[kl] = '\0';
        if (strcmp(key, "optimizer") == 0 || strcmp(key, "likelihood") == 0) {
            char extra[2];
            if (sscanf(rest, "%31s %1s", word, extra) != 1) {
                rc = bad("expected one word after the key");
                goto out;
            }
            int *field = key[0] == 'o' ? &e->optimizer : &e->likelihood;
            int value = key[0] == 'o'
                            ? (strcmp(word, "adam") == 0  ? VAE_OPTIMIZER_ADAM
                               : strcmp(word, "sgd") == 0 ? VAE_OPTIMIZER_SGD
                                                          : -1)
                            : (strcmp(word, "bernoulli") == 0  ? VAE_LIKELIHOOD_BERNOULLI
                               : strcmp(word, "gaussian") == 0 ? VAE_LIKELIHOOD_GAUSSIAN
                                                               : -1);
            if (value < 0) {
                rc = bad(key[0] == 'o' ? "optimizer is adam or sgd"
                                       : "likelihood is bernoulli or gaussian");
                goto out;
            }
            if (*field != (key[0] == 'o' ? 0 : -1)) {
                rc = bad("given twice");
                goto out;
            }
            *field = value;
            continue;
        }
        int sk = strcmp(key, "model") == 0 ? SET_MODEL
                 : strcmp(key, "opt") == 0 ? SET_OPT
                 : strcmp(key, "elbo") == 0 ? SET_ELBO
                                            : -1;
        if (sk >= 0) {
            if ((rc = read_setting(e, sk, rest)))
                goto out;
            continue;
        }
        if (strcmp(key, "params") == 0 || strcmp(key, "grads") == 0) {
            if ((rc = read_hash(key[0] == 'p' ? &e->params : &e->grads, rest)))
                goto out;
            continue;
        }
        if (strcmp(key, "resave") == 0) {
            if (*rest || e->resave) {
                rc = bad("'resave' stands alone, once");
                goto out;
            }
            e->resave = 1;
            continue;
        }
        if (strcmp(key, "steps") == 0 || strcmp(key, "epochs") == 0) {
            int *has = key[0] == 's' ? &e->has_steps : &e->has_epochs;
            if (*has || !parse_u64(rest, 0, key[0] == 's' ? &e->steps : &e->epochs)) {
                rc = bad("expected 'steps|epochs count', once");
                goto out;
            }
            *has = 1;
            continue;
        }
        if (strcmp(key, "epoch_position") == 0) {
            char a[32], b[32], extra[2];
            if (e->has_position || sscanf(rest, "%31s %31s %1s", a, b, extra) != 2 ||
                !parse_u64(a, 0, &e->done) || !parse_u64(b, 0, &e->total) ||
                (e->total ? e->done > e->total : e->done != 0)) {
                rc = bad("expected 'epoch_position done total', done <= total, or '0 0', once");
                goto out;
            }
            e->has_position = 1;
            continue;
        }
        if (strcmp(key, "meta") == 0) {
            if ((rc = read_meta(f, e, rest)))
                goto out;
            continue;
        }
        if (strcmp(key, "epoch_steps") == 0) {
            if (e->has_epoch_steps || !parse_u64(rest, 0, &e->epoch_steps)) {
                rc = bad("expected 'epoch_steps count', once");
                goto out;
            }
            e->has_epoch_steps = 1;
            continue;
        }
        if (strcmp(key, "epoch_mean") == 0) {
            if ((rc = read_mean(e, rest)))
                goto out;
            continue;
        }
        if (sscanf(buf, "%31s %lu", key, &v) != 2 || v == 0 || v > 1u << 20) {
            rc = bad("expected 'key count'");
            goto out;
        }
        if (strcmp(key, "input_dim") == 0) {
            e->input_dim = v;
        } else if (strcmp(key, "latent_dim") == 0) {
            e->latent_dim = v;
        } else if (strcmp(key, "encode") == 0 || strcmp(key, "decode") == 0) {
            size_t D = e->input_dim, L = e->latent_dim;
            if (!D || !L) {
                rc = bad("input_dim and latent_dim come before the sections");
                goto out;
            }
            section *s = key[0] == 'e' ? &e->enc : &e->dec;
            if (s->n) {
                rc = bad("section given twice");
                goto out;
            }
            s->n = v;
            if (s == &e->enc) {
                s->in = alloc_floats(v * D);
                s->out = alloc_floats(v * L);
                s->out2 = alloc_floats(v * L);
                if ((rc = read_values(f, "x", v, D, s->in)) ||
                    (rc = read_values(f, "mu", v, L, s->out)) ||
                    (rc = read_values(f, "logvar", v, L, s->out2)))
                    goto out;
            } else {
                s->in = alloc_floats(v * L);
                s->out = alloc_floats(v * D);
                if ((rc = read_values(f, "z", v, L, s->in)) ||
                    (rc = read_values(f, "mean", v, D, s->out)))
                    goto out;
            }
        } else {
            rc = bad("unknown key");
            goto out;
        }
    }
out:
    fclose(f);
    if (rc)
        free_expected(e);
    return rc;
}

/* ---- comparisons ------------------------------------------------------------ */

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

/* FNV-1a, 64 bits, over the floats' bit patterns as little-endian bytes: the same
 * number on every machine for the same values. */
static uint64_t fnv(const float *v, size_t n)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 4; k++) {
            h ^= (bits(v[i]) >> (8 * k)) & 0xffu;
            h *= 0x100000001b3u;
        }
    return h;
}

/* Prints every value whose bits differ; returns the number of them. */
static size_t compare(const char *what, const char *name, const float *got, const float *want,
                      size_t n, size_t dim)
{
    size_t diffs = 0;
    for (size_t i = 0; i < n * dim; i++) {
        if (bits(got[i]) == bits(want[i]))
            continue;
        if (diffs++ == 0)
            printf("golden_check: %s: %s differs from the recorded values:\n", what, name);
        printf("  %s[%zu][%zu]: got %08lx (%.9g), expected %08lx (%.9g)", name, i / dim,
               i % dim, (unsigned long)bits(got[i]), (double)got[i],
               (unsigned long)bits(want[i]), (double)want[i]);
        if ((bits(got[i]) ^ bits(want[i])) >> 31)
            printf(", signs differ\n");
        else /* same sign: the distance of the bit patterns counts floats between */
            printf(", %lld ulp apart\n", llabs((long long)bits(got[i]) - (long long)bits(want[i])));
    }
    return diffs;
}

static int failed(const char *call, int rc)
{
    printf("golden_check: %s failed: %s (%s)\n", call, vae_strerror(rc), vae_last_error());
    return 1;
}

/* Encodes and decodes what EXPECTED records with model m; returns the mismatch count, or
 * -1 after a failed call. */
static long run_model(const char *what, vae_context *ctx, const vae_model *m,
                      const expected *e)
{
    const size_t D = e->input_dim, L = e->latent_dim;
    if (vae_model_input_dim(m) != D || vae_model_latent_dim(m) != L) {
        printf("golden_check: %s: the model has input_dim %zu and latent_dim %zu, the "
               "expected file %zu and %zu\n", what, vae_model_input_dim(m),
               vae_model_latent_dim(m), D, L);
        return -1;
    }
    long diffs = 0;
    int rc;
    if (e->enc.n) {
        float *mu = alloc_floats(e->enc.n * L), *lv = alloc_floats(e->enc.n * L);
        rc = vae_encode(ctx, m, e->enc.in, e->enc.n, mu, lv);
        if (rc != VAE_OK) {
            failed("vae_encode", rc);
            diffs = -1;
        } else {
            diffs += (long)compare(what, "mu", mu, e->enc.out, e->enc.n, L);
            diffs += (long)compare(what, "logvar", lv, e->enc.out2, e->enc.n, L);
        }
        free(mu);
        free(lv);
    }
    if (diffs >= 0 && e->dec.n) {
        float *mean = alloc_floats(e->dec.n * D);
        rc = vae_decode(ctx, m, e->dec.in, e->dec.n, mean);
        if (rc != VAE_OK) {
            failed("vae_decode", rc);
            diffs = -1;
        } else {
            diffs += (long)compare(what, "mean", mean, e->dec.out, e->dec.n, D);
        }
        free(mean);
    }
    return diffs;
}

/* A recorded double against the one a getter gave; prints a mismatch. */
static long compare_setting(const char *what, const setting *s, int rc, double got)
{
    if (rc != VAE_OK) {
        printf("golden_check: %s: %s setting %d: ", what, set_tag[s->kind], s->key);
        failed("get_param", rc);
        return 1;
    }
    if (dbits(got) == dbits(s->value))
        return 0;
    printf("golden_check: %s: %s setting %d: got %016llx (%.17g), expected %016llx (%.17g)\n",
           what, set_tag[s->kind], s->key, (unsigned long long)dbits(got), got,
           (unsigned long long)dbits(s->value), s->value);
    return 1;
}

/* Likelihood, model settings and the parameter hash of m; returns the mismatch count. */
static long check_model(const char *what, vae_model *m, const expected *e)
{
    long diffs = 0;
    if (e->likelihood >= 0 && vae_model_likelihood(m) != e->likelihood) {
        printf("golden_check: %s: likelihood %d, expected %d\n", what, vae_model_likelihood(m),
               e->likelihood);
        diffs++;
    }
    for (size_t i = 0; i < e->n_set; i++) {
        if (e->set[i].kind != SET_MODEL)
            continue;
        double v = 0;
        int rc = vae_model_get_param(m, e->set[i].key, &v);
        diffs += compare_setting(what, &e->set[i], rc, v);
    }
    if (e->params.given) {
        size_t n = 0;
        const float *p = vae_model_params(m, &n);
        uint64_t h = p ? fnv(p, n) : 0;
        if (n != e->params.n || h != e->params.hash) {
            printf("golden_check: %s: parameters: %zu with hash %016llx, expected %zu with "
                   "%016llx\n", what, n, (unsigned long long)h, e->params.n,
                   (unsigned long long)e->params.hash);
            diffs++;
        }
    }
    return diffs;
}

#if GOLDEN_CHECKPOINTS
static unsigned char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        unsigned char *grown = realloc(buf, cap * 2);
        if (!grown) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = grown;
        cap *= 2;
    }
    if (!buf || ferror(f)) {
        fprintf(stderr, "golden_check: cannot read %s\n", path);
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *size = n;
    return buf;
}

/* The bytes a save gave against the file's. Bytes 12 to 15 of the header hold the
 * writer's version: there the save must hold this library's, whatever the file holds
 * (so the check keeps passing in later releases); everything else must be identical.
 * Returns 0 when it is. */
static int compare_bytes(const char *what, const unsigned char *file, size_t fsize,
                         const unsigned char *mem, size_t size)
{
    const unsigned v = vae_version_number();
    const unsigned char mine[4] = {(unsigned char)v, (unsigned char)(v >> 8),
                                   (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    size_t at = 0, lim = size < fsize ? size : fsize;
    while (at < lim && (mem[at] == file[at] || (at >= 12 && at < 16 && mem[at] == mine[at - 12])))
        at++;
    if (at == lim && size == fsize && size >= 16 && memcmp(mem + 12, mine, 4) == 0) {
        unsigned fv = (unsigned)file[12] | (unsigned)file[13] << 8 | (unsigned)file[14] << 16 |
                      (unsigned)file[15] << 24;
        if (fv == v)
            printf("golden_check: %s: saved again, %zu bytes identical\n", what, size);
        else
            printf("golden_check: %s: saved again, %zu bytes identical but for the writer's "
                   "version (file %u, this library %u)\n", what, size, fv, v);
        return 0;
    }
    printf("golden_check: %s: saved again: %zu bytes, the file %zu; first difference at "
           "byte %zu\n", what, size, fsize, at);
    size_t from = at >= 8 ? at - 8 : 0;
    printf("  file: ");
    for (size_t i = from; i < fsize && i < at + 8; i++)
        printf(i == at ? "[%02x]" : "%02x ", file[i]);
    printf("\n  save: ");
    for (size_t i = from; i < size && i < at + 8; i++)
        printf(i == at ? "[%02x]" : "%02x ", mem[i]);
    printf("\n");
    return 1;
}

/* vae_model_save_mem() of m against the file. */
static int check_model_resave(const char *path, const vae_model *m)
{
    size_t fsize = 0, size = 0;
    unsigned char *file = read_file(path, &fsize), *mem = NULL;
    int rc, result = 1;
    if (!file)
        return 1;
    if ((rc = vae_model_save_mem(m, NULL, 0, &size)) != VAE_OK)
        failed("vae_model_save_mem (size)", rc);
    else if (!(mem = malloc(size ? size : 1)))
        printf("golden_check: out of memory\n");
    else if ((rc = vae_model_save_mem(m, mem, size, &size)) != VAE_OK)
        failed("vae_model_save_mem", rc);
    else
        result = compare_bytes(path, file, fsize, mem, size);
    free(mem);
    free(file);
    return result;
}

/* Setting s of the objects, read or written through their getter and setter. */
typedef struct objects {
    vae_model *m;
    vae_optimizer *opt;
    vae_elbo *obj;
} objects;

static int get_setting(const objects *o, const setting *s, double *v)
{
    switch (s->kind) {
    case SET_MODEL: return vae_model_get_param(o->m, s->key, v);
    case SET_OPT: return vae_optimizer_get_param(o->opt, s->key, v);
    default: return vae_elbo_get_param(o->obj, s->key, v);
    }
}

static int set_setting(const objects *o, const setting *s, double v)
{
    switch (s->kind) {
    case SET_MODEL: return vae_model_set_param(o->m, s->key, v);
    case SET_OPT: return vae_optimizer_set_param(o->opt, s->key, v);
    default: return vae_elbo_set_param(o->obj, s->key, v);
    }
}

/* Before the restore every recorded setting gets another value, so that only the
 * restore can bring the recorded one back: the first of a few candidates that the setter
 * accepts and that reads back different. */
static void scramble_setting(const objects *o, const setting *s)
{
    const double r = s->value;
    const double cand[] = {r * 0.5, r * 2.0, 0.5, 0.25, 0.0, 1.0, 2.0};
    for (size_t i = 0; i < sizeof cand / sizeof *cand; i++) {
        double got = 0;
        if (set_setting(o, s, cand[i]) == VAE_OK && get_setting(o, s, &got) == VAE_OK &&
            dbits(got) != dbits(r))
            return;
    }
    printf("golden_check: note: %s setting %d could not be given another value before the "
           "restore\n", set_tag[s->kind], s->key);
}

/* Everything the restore wrote, through the public getters; returns the mismatch count. */
static long check_trainer(const char *what, const objects *o, const vae_trainer *t,
                          const expected *e)
{
    long diffs = 0;
    for (size_t i = 0; i < e->n_set; i++) {
        double v = 0;
        int rc = get_setting(o, &e->set[i], &v);
        diffs += compare_setting(what, &e->set[i], rc, v);
    }
    if (vae_trainer_steps(t) != e->steps || vae_trainer_epochs(t) != e->epochs) {
        printf("golden_check: %s: %llu steps and %llu epochs, expected %llu and %llu\n", what,
               (unsigned long long)vae_trainer_steps(t), (unsigned long long)vae_trainer_epochs(t),
               (unsigned long long)e->steps, (unsigned long long)e->epochs);
        diffs++;
    }
    size_t done = 0, total = 0;
    int rc = vae_trainer_epoch_position(t, &done, &total);
    if (rc != VAE_OK) {
        failed("vae_trainer_epoch_position", rc);
        diffs++;
    } else if (done != e->done || total != e->total) {
        printf("golden_check: %s: epoch position %zu of %zu, expected %llu of %llu\n", what, done,
               total, (unsigned long long)e->done, (unsigned long long)e->total);
        diffs++;
    }
    size_t ng = 0;
    const float *g = vae_trainer_grads((vae_trainer *)t, &ng);
    uint64_t h = g ? fnv(g, ng) : 0;
    if (ng != e->grads.n || h != e->grads.hash) {
        printf("golden_check: %s: pending gradient: %zu floats with hash %016llx, expected %zu "
               "with %016llx\n", what, ng, (unsigned long long)h, e->grads.n,
               (unsigned long long)e->grads.hash);
        diffs++;
    }
    size_t nm = vae_trainer_meta_count(t);
    if (nm != e->n_meta) {
        printf("golden_check: %s: %zu metadata entries, expected %zu\n", what, nm, e->n_meta);
        diffs++;
    }
    for (size_t i = 0; i < nm && i < e->n_meta; i++) {
        const char *k = NULL, *v = NULL, *found = NULL;
        if ((rc = vae_trainer_meta_at(t, i, &k, &v)) != VAE_OK) {
            failed("vae_trainer_meta_at", rc);
            diffs++;
            continue;
        }
        if (strcmp(k, e->meta_key[i]) != 0 || strcmp(v, e->meta_value[i]) != 0) {
            printf("golden_check: %s: metadata entry %zu is \"%s\" = \"%s\", expected \"%s\" = "
                   "\"%s\"\n", what, i, k, v, e->meta_key[i], e->meta_value[i]);
            diffs++;
        }
        if ((rc = vae_trainer_get_meta(t, e->meta_key[i], &found)) != VAE_OK ||
            !found || strcmp(found, e->meta_value[i]) != 0) {
            printf("golden_check: %s: vae_trainer_get_meta(\"%s\") does not give the recorded "
                   "value\n", what, e->meta_key[i]);
            diffs++;
        }
    }
    return diffs;
}

/* The open epoch's record (EPOC) field by field. A continued epoch whose first step fails
 * reports through its stats what the epoch held before the call: the samples done, the
 * steps, and the sums of loss, recon and kl divided by the samples done (exact, so the
 * same double everywhere, when that is a power of two as in the golden files). The data
 * make the step fail without changing anything but the pending gradient, which is zeroed:
 * values outside [0, 1] for a Bernoulli model (VAE_ERR_INVALID), values whose squares
 * overflow for a Gaussian one (VAE_ERR_NUMERIC). An epoch saved after its last step (done
 * equals total) takes no step: the call closes it (VAE_OK, one more epoch) and reports the
 * same stats. Run after the comparison of the saved bytes. Returns the mismatch count, or
 * -1 after an unexpected result. */
static long check_open_epoch(const char *what, vae_trainer *t, const vae_model *m,
                             const expected *e)
{
    if (!e->total)
        return 0;
    const size_t D = vae_model_input_dim(m), N = (size_t)e->total;
    const int bernoulli = vae_model_likelihood(m) == VAE_LIKELIHOOD_BERNOULLI;
    const int complete = e->done == e->total;
    const int want = complete ? VAE_OK : bernoulli ? VAE_ERR_INVALID : VAE_ERR_NUMERIC;
    float *data = alloc_floats(N * D);
    for (size_t i = 0; i < N * D; i++)
        data[i] = bernoulli ? 2.0f : 3.0e38f;
    vae_dataset *ds = NULL;
    vae_train_options o;
    vae_epoch_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    long diffs = -1;
    int rc = vae_dataset_from_floats(&ds, data, N, D, NULL);
    if (rc != VAE_OK) {
        failed("vae_dataset_from_floats", rc);
        goto out;
    }
    if ((rc = vae_train_options_init(&o, sizeof o)) != VAE_OK) {
        failed("vae_train_options_init", rc);
        goto out;
    }
    o.batch_size = 1;
    rc = vae_trainer_train_epoch(t, ds, &o, &st);
    if (rc != want) {
        printf("golden_check: %s: continuing the open epoch%s gave \"%s\" (%s), expected "
               "\"%s\"\n", what, complete ? "" : " with data that fail its first step",
               vae_strerror(rc), rc ? vae_last_error() : "", vae_strerror(want));
        goto out;
    }
    diffs = 0;
    if (st.samples != e->done || st.steps != e->epoch_steps) {
        printf("golden_check: %s: the open epoch reports %zu samples in %zu steps, expected "
               "%llu in %llu\n", what, st.samples, st.steps, (unsigned long long)e->done,
               (unsigned long long)e->epoch_steps);
        diffs++;
    }
    const double got[3] = {st.loss, st.recon, st.kl};
    for (int i = 0; i < 3; i++)
        if (dbits(got[i]) != dbits(e->mean[i])) {
            printf("golden_check: %s: the open epoch's mean %s is %016llx (%.17g), expected "
                   "%016llx (%.17g)\n", what, mean_name[i], (unsigned long long)dbits(got[i]),
                   got[i], (unsigned long long)dbits(e->mean[i]), e->mean[i]);
            diffs++;
        }
    size_t done = 0, total = 0;
    if (vae_trainer_epoch_position(t, &done, &total) != VAE_OK ||
        done != (complete ? 0 : e->done) || total != (complete ? 0 : e->total) ||
        vae_trainer_steps(t) != e->steps || vae_trainer_epochs(t) != e->epochs + complete) {
        printf("golden_check: %s: continuing the epoch moved it or the counters otherwise "
               "than expected\n", what);
        diffs++;
    }
    if (!diffs)
        printf("golden_check: %s: open epoch: %llu samples in %llu steps, mean loss %.17g, "
               "recon %.17g, kl %.17g as recorded\n", what, (unsigned long long)e->done,
               (unsigned long long)e->epoch_steps, e->mean[0], e->mean[1], e->mean[2]);
out:
    vae_dataset_free(ds);
    free(data);
    return diffs;
}

/* Restores the checkpoint into a trainer over a scrambled second copy of its model,
 * checks what the restore wrote, and compares vae_trainer_save_mem() with the file's
 * bytes. Returns 0 when everything matches. */
static int check_restore(const char *path, const expected *e)
{
    size_t fsize = 0, size = 0;
    unsigned char *file = read_file(path, &fsize), *mem = NULL;
    objects o = {NULL, NULL, NULL};
    vae_context *ctx = NULL;
    vae_trainer *t = NULL;
    int rc, result = 1;
    long diffs = 0;
    if (!file)
        return 1;
    if ((rc = vae_model_load(&o.m, path)) != VAE_OK) {
        failed("vae_model_load (the trainer's copy)", rc);
        goto out;
    }
    if ((rc = vae_context_create(&ctx)) != VAE_OK || (rc = vae_elbo_create(&o.obj)) != VAE_OK ||
        (rc = vae_optimizer_create(&o.opt, e->optimizer)) != VAE_OK) {
        failed("creating the trainer's objects", rc);
        goto out;
    }
    /* Parameters and settings other than the file's: the restore must write them all. */
    size_t n = 0;
    float *p = vae_model_params(o.m, &n);
    for (size_t i = 0; i < n; i++)
        p[i] = 0.125f;
    for (size_t i = 0; i < e->n_set; i++)
        scramble_setting(&o, &e->set[i]);
    if ((rc = vae_trainer_create(&t, o.m, o.obj, o.opt, ctx, 1)) != VAE_OK) {
        failed("vae_trainer_create", rc);
        goto out;
    }
    if ((rc = vae_trainer_set_meta(t, "stale", "replaced by the restore")) != VAE_OK) {
        failed("vae_trainer_set_meta", rc);
        goto out;
    }
    if ((rc = vae_trainer_restore(t, path)) != VAE_OK) {
        failed("vae_trainer_restore", rc);
        goto out;
    }
    char what[4200];
    snprintf(what, sizeof what, "%s (restored)", path);
    diffs += check_trainer(what, &o, t, e);
    diffs += check_model(what, o.m, e);
    long out_diffs = run_model(what, ctx, o.m, e);
    if (out_diffs < 0)
        goto out;
    diffs += out_diffs;
    if (diffs) {
        printf("golden_check: %s: %ld differing values\n", what, diffs);
        goto out;
    }
    printf("golden_check: %s: restored: %llu steps, %llu epochs, epoch at %llu of %llu, %zu "
           "settings, pending gradient of %zu, %zu metadata entries%s as recorded\n",
           path, (unsigned long long)e->steps, (unsigned long long)e->epochs,
           (unsigned long long)e->done, (unsigned long long)e->total, e->n_set, e->grads.n,
           e->n_meta, e->params.given ? ", parameters" : "");
    if ((rc = vae_trainer_save_mem(t, NULL, 0, &size)) != VAE_OK) {
        failed("vae_trainer_save_mem (size)", rc);
        goto out;
    }
    if (!(mem = malloc(size ? size : 1))) {
        printf("golden_check: out of memory\n");
        goto out;
    }
    if ((rc = vae_trainer_save_mem(t, mem, size, &size)) != VAE_OK) {
        failed("vae_trainer_save_mem", rc);
        goto out;
    }
    if ((result = compare_bytes(path, file, fsize, mem, size)) != 0)
        goto out;
    long epoch_diffs = check_open_epoch(path, t, o.m, e);
    if (epoch_diffs > 0)
        printf("golden_check: %s: %ld differing values\n", path, epoch_diffs);
    result = epoch_diffs != 0;
out:
    vae_trainer_free(t);
    vae_optimizer_free(o.opt);
    vae_elbo_free(o.obj);
    vae_context_free(ctx);
    vae_model_free(o.m);
    free(mem);
    free(file);
    return result;
}
#endif

static int usage(void)
{
    fprintf(stderr, "usage: golden_check MODEL EXPECTED\n"
                    "       golden_check --checkpoint CHECKPOINT EXPECTED\n");
    return 2;
}

/* The keys each mode needs or refuses. */
static int refuse(const char *path, const char *why)
{
    fflush(stdout);
    fprintf(stderr, "golden_check: %s: %s\n", path, why);
    return 2;
}

static int check_keys(const expected *e, int checkpoint, const char *path)
{
    const int trainer_keys = e->optimizer || e->has_steps || e->has_epochs ||
                             e->has_position || e->grads.given || e->has_meta ||
                             e->has_epoch_steps || e->has_mean[0] || e->has_mean[1] ||
                             e->has_mean[2];
    int has_trainer_settings = 0;
    for (size_t i = 0; i < e->n_set; i++)
        has_trainer_settings |= e->set[i].kind != SET_MODEL;
    if (!checkpoint) {
        if (trainer_keys || has_trainer_settings)
            return refuse(path, "a model's expected file records trainer values "
                                "(use --checkpoint)");
        if (!e->enc.n && !e->dec.n)
            return refuse(path, "records no outputs to check");
        return 0;
    }
    if (!e->optimizer || !e->has_steps || !e->has_epochs || !e->has_position ||
        !e->grads.given || !e->has_meta)
        return refuse(path, "a checkpoint's expected file needs optimizer, steps, epochs, "
                   "epoch_position, grads and meta lines");
    if (e->resave)
        return refuse(path, "'resave' is for model files (a checkpoint is always saved again)");
    const int open = e->total != 0;
    if ((open && !(e->has_epoch_steps && e->has_mean[0] && e->has_mean[1] && e->has_mean[2])) ||
        (!open && (e->has_epoch_steps || e->has_mean[0] || e->has_mean[1] || e->has_mean[2])))
        return refuse(path, "epoch_steps and the three epoch_mean lines come with an open "
                            "epoch, and only with one");
    if (open && e->epoch_steps > e->done)
        return refuse(path, "epoch_steps exceeds the samples done");
    return 0;
}

int main(int argc, char **argv)
{
    int checkpoint = 0;
    if (argc == 4 && strcmp(argv[1], "--checkpoint") == 0) {
        checkpoint = 1;
        argv++;
        argc--;
    }
    if (argc != 3)
        return usage();
    const char *path = argv[1];

    const uint32_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    printf("golden_check: host %s-endian, %zu-bit pointers, FLT_EVAL_METHOD %d, libvae %s\n",
           first ? "little" : "big", sizeof(void *) * 8, (int)FLT_EVAL_METHOD,
           vae_version_string());
#if !GOLDEN_CHECKPOINTS
    if (checkpoint) {
        fprintf(stderr, "golden_check: built against libvae %d, which has no checkpoints\n",
                VAE_VERSION_NUMBER);
        return 2;
    }
#endif

    expected e;
    int rc = read_expected(argv[2], &e);
    if (rc)
        return rc;
    if ((rc = check_keys(&e, checkpoint, argv[2]))) {
        free_expected(&e);
        return rc;
    }

    vae_model *m = NULL;
    vae_context *ctx = NULL;
    long diffs = -1;
    int result = 1;
    if ((rc = vae_model_load(&m, path)) != VAE_OK) {
        failed("vae_model_load", rc);
        goto out;
    }
    if ((rc = vae_context_create(&ctx)) != VAE_OK) {
        failed("vae_context_create", rc);
        goto out;
    }
    diffs = check_model(path, m, &e);
    long out_diffs = run_model(path, ctx, m, &e);
    if (out_diffs < 0 || (diffs += out_diffs) != 0)
        goto out;
    if (e.enc.n || e.dec.n)
        printf("golden_check: %s: %zu encodings and %zu decodings bit-identical to %s\n",
               path, e.enc.n, e.dec.n, argv[2]);
#if GOLDEN_CHECKPOINTS
    if (e.resave && check_model_resave(path, m) != 0)
        goto out;
    if (checkpoint && check_restore(path, &e) != 0)
        goto out;
#else
    if (e.resave)
        printf("golden_check: note: 'resave' needs a library from 1.1 on; not checked\n");
#endif
    result = 0;
out:
    if (diffs > 0)
        printf("golden_check: %s: %ld differing values\n", path, diffs);
    vae_context_free(ctx);
    vae_model_free(m);
    free_expected(&e);
    return result;
}
