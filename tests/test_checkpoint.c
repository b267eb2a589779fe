/* Checkpoints: bit-exact resume in a new process (1 and 2 workers, Adam and
 * SGD with momentum, at an epoch boundary, after a cancelled step and from a
 * save inside the progress callback), the model part read by
 * vae_model_load, refusals that leave the trainer untouched (architecture,
 * optimizer kind, model files, crafted and damaged files: every setting,
 * state array, counter, open epoch, gradient and metadata field, every
 * truncation, every byte flipped), non-finite values never saved, chunks a
 * reader does not know, round trips of every part, the metadata API, open
 * epochs, and bad arguments.
 *
 * The resume tests run this program again as a child process (argv[1] is
 * "child"), so that nothing but the checkpoint file carries state over. */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <float.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

#define EXPECT_ERR(call, expected, fn, needle) TU_EXPECT_ERR_MSG(call, expected, fn, needle)
#define OK(call) TU_OK(call)

extern char **environ;

/* ---- the training run every test shares ---------------------------------------- */

enum { COUNT = 250, DIM = 16, BATCH = 32, STEPS = (COUNT + BATCH - 1) / BATCH, EPOCHS = 2 };

static float *make_data(void)
{
    float *x = tu_alloc(COUNT * DIM, sizeof *x);
    tu_rng r = {77};
    for (size_t i = 0; i < COUNT * DIM; i++)
        x[i] = tu_unif(&r) < 0.4 ? 1.0f : 0.0f;
    return x;
}

typedef struct run {
    vae_model *m;
    vae_elbo *e;
    vae_optimizer *opt;
    vae_context *ctx;
    vae_trainer *t;
    vae_dataset *ds;
    float *x;
} run;

/* kind: VAE_OPTIMIZER_ADAM or VAE_OPTIMIZER_SGD (with momentum and
 * dampening); conv: a convolutional model on 4 x 4 images. The model comes
 * from `from` (a checkpoint or model file) when not NULL. */
static run make_run(int kind, int conv, size_t workers, const char *from)
{
    run s;
    memset(&s, 0, sizeof s);
    s.x = make_data();
    OK(vae_dataset_from_floats(&s.ds, s.x, COUNT, DIM, NULL));
    if (from) {
        OK(vae_model_load(&s.m, from));
    } else if (conv == 1) {
        vae_layer *l = NULL;
        OK(vae_model_create(&s.m, DIM, 3, VAE_LIKELIHOOD_BERNOULLI));
        OK(vae_layer_conv2d_create(&l, 1, 4, 4, 3, 3, 3, 1, 1, VAE_ACT_RELU));
        OK(vae_model_add_encoder_layer(s.m, &l));
        OK(vae_layer_dense_create(&l, 3, 3 * 4 * 4, VAE_ACT_RELU));
        OK(vae_model_add_decoder_layer(s.m, &l));
        OK(vae_layer_conv2d_transpose_create(&l, 3, 4, 4, 1, 3, 3, 1, 1, 0, VAE_ACT_IDENTITY));
        OK(vae_model_add_decoder_layer(s.m, &l));
        OK(vae_model_build(s.m, 11));
    } else {
        const size_t hidden[1] = {20};
        OK(vae_model_create_mlp(&s.m, DIM, hidden, 1, 3, VAE_ACT_TANH,
                                VAE_LIKELIHOOD_BERNOULLI, 11));
    }
    OK(vae_elbo_create(&s.e));
    OK(vae_elbo_set_param(s.e, VAE_ELBO_BETA, 0.75));
    if (conv == 2) { /* the MLP with IWAE of 3 draws, warmed up over 13 of its 16 steps */
        OK(vae_elbo_set_param(s.e, VAE_ELBO_OBJECTIVE, VAE_OBJECTIVE_IWAE));
        OK(vae_elbo_set_param(s.e, VAE_ELBO_SAMPLES, 3));
        OK(vae_elbo_set_param(s.e, VAE_ELBO_WARMUP, 13));
    }
    OK(vae_optimizer_create(&s.opt, kind));
    if (kind == VAE_OPTIMIZER_SGD) {
        OK(vae_optimizer_set_param(s.opt, VAE_OPT_LR, 0.05));
        OK(vae_optimizer_set_param(s.opt, VAE_OPT_MOMENTUM, 0.9));
        OK(vae_optimizer_set_param(s.opt, VAE_OPT_DAMPENING, 0.1));
    } else {
        OK(vae_optimizer_set_param(s.opt, VAE_OPT_LR, 3e-3));
        OK(vae_optimizer_set_param(s.opt, VAE_OPT_WEIGHT_DECAY, 1e-3));
    }
    OK(vae_context_create(&s.ctx));
    OK(vae_context_set_threads(s.ctx, workers));
    OK(vae_trainer_create(&s.t, s.m, s.e, s.opt, s.ctx, 99));
    return s;
}

static void free_run(run *s)
{
    vae_trainer_free(s->t);
    vae_context_free(s->ctx);
    vae_optimizer_free(s->opt);
    vae_elbo_free(s->e);
    vae_model_free(s->m);
    vae_dataset_free(s->ds);
    free(s->x);
}

/* What a run reports: each epoch's mean loss, recon and KL, and the final
 * parameters. */
typedef struct record {
    double loss[EPOCHS][3];
    size_t n_params;
    float params[4096];
} record;

typedef struct stopper {
    size_t stop_after;   /* steps of the second epoch, 0: never */
    int save_inside;     /* save from the callback and go on, instead of cancelling */
    const char *path;
    run *s;
    size_t steps;
} stopper;

static int on_progress(void *payload, size_t done, size_t total, double running)
{
    (void)done, (void)total, (void)running;
    stopper *p = payload;
    if (!p->stop_after || ++p->steps != p->stop_after)
        return 0;
    if (p->save_inside) {
        OK(vae_trainer_save(p->s->t, p->path));
        return 0;
    }
    return 1;
}

static vae_train_options options(stopper *p)
{
    vae_train_options o;
    OK(vae_train_options_init(&o, sizeof o));
    o.batch_size = BATCH;
    o.binarize = 1; /* draws from the trainer's generator too */
    o.progress = on_progress;
    o.payload = p;
    return o;
}

static void record_params(run *s, record *rec)
{
    size_t n = 0;
    const float *p = vae_model_params(s->m, &n);
    assert_true(n <= sizeof rec->params / sizeof *rec->params);
    rec->n_params = n;
    memcpy(rec->params, p, n * sizeof *p);
}

static void put_stats(record *rec, int epoch, const vae_epoch_stats *st)
{
    rec->loss[epoch][0] = st->loss;
    rec->loss[epoch][1] = st->recon;
    rec->loss[epoch][2] = st->kl;
}

/* ---- the child: one half of an interrupted run ---------------------------------- */

/* child <phase> <kind> <conv> <workers> <stop_after> <save_inside> <ckpt> <out>
 * phase 1: train epoch 1 and then the second epoch up to the stop (or all
 * of it when stop_after is 0), saving the checkpoint at the stop (or after
 * epoch 1). phase 2: load the checkpoint, restore, finish the epochs. Both
 * write the record of what they reported to <out>. */
static int child_main(int argc, char **argv)
{
    if (argc != 10)
        return 2;
    int phase = atoi(argv[2]), kind = atoi(argv[3]), conv = atoi(argv[4]);
    size_t workers = (size_t)atoi(argv[5]), stop_after = (size_t)atoi(argv[6]);
    int save_inside = atoi(argv[7]);
    const char *ckpt = argv[8], *out = argv[9];
    record *rec = calloc(1, sizeof *rec);
    run s = make_run(kind, conv, workers, phase == 2 ? ckpt : NULL);
    stopper p = {0, save_inside, ckpt, &s, 0};
    vae_train_options o = options(&p);
    vae_epoch_stats st = tu_stats();
    if (phase == 1) {
        OK(vae_trainer_set_meta(s.t, "note", "interrupted run"));
        OK(vae_trainer_train_epoch(s.t, s.ds, &o, &st));
        put_stats(rec, 0, &st);
        p.stop_after = stop_after; /* counts the steps of the second epoch */
        if (!stop_after) {
            OK(vae_trainer_save(s.t, ckpt));
        } else if (save_inside) {
            OK(vae_trainer_train_epoch(s.t, s.ds, &o, &st)); /* saved on the way */
        } else {
            assert_int_equal(vae_trainer_train_epoch(s.t, s.ds, &o, &st), VAE_ERR_CANCELLED);
            size_t done = 0, total = 0;
            OK(vae_trainer_epoch_position(s.t, &done, &total));
            assert_int_equal(done, stop_after * BATCH);
            assert_int_equal(total, COUNT);
            OK(vae_trainer_save(s.t, ckpt));
        }
    } else {
        OK(vae_trainer_restore(s.t, ckpt));
        const char *note = NULL;
        OK(vae_trainer_get_meta(s.t, "note", &note));
        assert_non_null(note);
        assert_string_equal(note, "interrupted run");
        size_t done = 0;
        OK(vae_trainer_epoch_position(s.t, &done, NULL));
        assert_int_equal(done, stop_after * BATCH);
        if (!stop_after)
            assert_int_equal(vae_trainer_epochs(s.t), 1);
        OK(vae_trainer_train_epoch(s.t, s.ds, &o, &st));
        put_stats(rec, 1, &st);
        assert_int_equal(vae_trainer_epochs(s.t), 2);
        assert_int_equal(vae_trainer_steps(s.t), EPOCHS * STEPS);
        record_params(&s, rec);
    }
    FILE *f = fopen(out, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(rec, sizeof *rec, 1, f), 1);
    fclose(f);
    free(rec);
    free_run(&s);
    return 0;
}

/* ---- the parent ---------------------------------------------------------------- */

static char tmpdir[64];

static void make_tmpdir(void)
{
    if (tmpdir[0])
        return;
    assert_int_equal(tu_make_tmpdir(tmpdir, sizeof tmpdir, "vae_ckpt"), 0);
}

static const char *tmp_path(const char *name)
{
    make_tmpdir();
    return tu_path_in(tmpdir, name);
}

static void spawn_child(const char *const args[10])
{
    pid_t pid;
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(len > 0);
    self[len] = '\0';
    char *argv[11];
    argv[0] = self;
    for (int i = 1; i < 10; i++)
        argv[i] = (char *)(uintptr_t)args[i];
    argv[10] = NULL;
    assert_int_equal(posix_spawn(&pid, self, NULL, NULL, argv, environ), 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void read_record(const char *path, record *rec)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(rec, sizeof *rec, 1, f), 1);
    fclose(f);
}

/* ---- helpers of the state tests --------------------------------------------------- */

/* The bytes of a checkpoint or model file, owned (free with blob_free). */
typedef struct blob {
    unsigned char *p;
    size_t n;
} blob;

static void blob_free(blob *b)
{
    free(b->p);
    b->p = NULL;
    b->n = 0;
}

static blob blob_copy(const blob *b)
{
    blob c = {tu_alloc(b->n, 1), b->n};
    memcpy(c.p, b->p, b->n);
    return c;
}

/* What vae_trainer_save_mem writes; the size query must agree with it. */
static blob blob_of(const vae_trainer *t)
{
    blob b = {NULL, 0};
    OK(vae_trainer_save_mem(t, NULL, 0, &b.n));
    b.p = tu_alloc(b.n, 1);
    size_t written = 0;
    OK(vae_trainer_save_mem(t, b.p, b.n, &written));
    assert_int_equal(written, b.n);
    return b;
}

static blob model_blob(const vae_model *m)
{
    blob b = {NULL, 0};
    OK(vae_model_save_mem(m, NULL, 0, &b.n));
    b.p = tu_alloc(b.n, 1);
    OK(vae_model_save_mem(m, b.p, b.n, &b.n));
    return b;
}

static void write_blob(const char *path, const blob *b)
{
    tu_write_file(path, b->p, b->n);
}

static blob read_blob(const char *path)
{
    blob b = {NULL, 0};
    b.p = tu_read_file(path, &b.n);
    return b;
}

static void assert_same_blob(const blob *a, const blob *b, const char *what)
{
    if (a->n != b->n)
        fail_msg("%s: %zu bytes, expected %zu", what, a->n, b->n);
    for (size_t i = 0; i < a->n; i++)
        if (a->p[i] != b->p[i])
            fail_msg("%s: byte %zu is %02x, expected %02x", what, i, a->p[i], b->p[i]);
}

/* ---- editing chunks: type (4) | u64 length | data | u32 CRC of type+length+data ---- */

/* Offset of the chunk of that type, or SIZE_MAX. Walks the headers from the
 * file header to DONE; a walk that leaves the bytes fails the test. */
static size_t chunk_find(const blob *b, const char *type)
{
    size_t off = 16;
    while (off + 16 <= b->n) {
        uint64_t len = tu_get_le64(b->p + off + 4);
        if (len > b->n - off - 16)
            fail_msg("chunk at byte %zu announces %llu bytes, past the end", off,
                     (unsigned long long)len);
        if (memcmp(b->p + off, type, 4) == 0)
            return off;
        if (memcmp(b->p + off, "DONE", 4) == 0)
            break;
        off += 16 + (size_t)len;
    }
    return SIZE_MAX;
}

static unsigned char *chunk_data(const blob *b, const char *type, size_t *len)
{
    size_t off = chunk_find(b, type);
    if (off == SIZE_MAX)
        fail_msg("the bytes have no %s chunk", type);
    if (len)
        *len = (size_t)tu_get_le64(b->p + off + 4);
    return b->p + off + 12;
}

/* Recomputes the CRC of a chunk whose data a test changed in place, so that
 * only the changed field is wrong. */
static void chunk_fix(blob *b, const char *type)
{
    size_t len = 0;
    unsigned char *d = chunk_data(b, type, &len);
    tu_put_le32(d + len, tu_crc32(d - 12, 12 + len));
}

/* Replaces bytes [off, off + old) of b with n bytes from src. */
static void splice(blob *b, size_t off, size_t old, const void *src, size_t n)
{
    unsigned char *p = tu_alloc(b->n - old + n, 1);
    memcpy(p, b->p, off);
    if (n)
        memcpy(p + off, src, n);
    memcpy(p + off + n, b->p + off + old, b->n - off - old);
    free(b->p);
    b->p = p;
    b->n = b->n - old + n;
}

/* A whole chunk, CRC included, as a blob. */
static blob chunk_make(const char *type, const void *data, size_t len)
{
    blob c = {tu_alloc(16 + len, 1), 16 + len};
    memcpy(c.p, type, 4);
    tu_put_le64(c.p + 4, len);
    if (len)
        memcpy(c.p + 12, data, len);
    tu_put_le32(c.p + 12 + len, tu_crc32(c.p, 12 + len));
    return c;
}

/* New data for a chunk (its length and CRC follow). */
static void chunk_replace(blob *b, const char *type, const void *data, size_t len)
{
    size_t off = chunk_find(b, type);
    assert_true(off != SIZE_MAX);
    blob c = chunk_make(type, data, len);
    splice(b, off, 16 + (size_t)tu_get_le64(b->p + off + 4), c.p, c.n);
    blob_free(&c);
}

/* A chunk inserted before the chunk of type `before`. */
static void chunk_insert(blob *b, const char *before, const char *type, const void *data,
                         size_t len)
{
    size_t off = chunk_find(b, before);
    assert_true(off != SIZE_MAX);
    blob c = chunk_make(type, data, len);
    splice(b, off, 0, c.p, c.n);
    blob_free(&c);
}

static void chunk_remove(blob *b, const char *type)
{
    size_t off = chunk_find(b, type);
    assert_true(off != SIZE_MAX);
    splice(b, off, 16 + (size_t)tu_get_le64(b->p + off + 4), NULL, 0);
}

/* The chunk's data with `extra` bytes of 0x00 appended (extra > 0) or its
 * last -extra bytes cut (extra < 0). */
static void chunk_resize(blob *b, const char *type, long extra)
{
    size_t len = 0;
    const unsigned char *d = chunk_data(b, type, &len);
    assert_true(extra >= 0 || (size_t)-extra <= len);
    size_t n = (size_t)((long)len + extra);
    unsigned char *copy = tu_alloc(n, 1);
    memcpy(copy, d, n < len ? n : len);
    chunk_replace(b, type, copy, n);
    free(copy);
}

/* The (u32 key, u32 0, f64 value) triple of a setting in the OBJV or OPTM
 * chunk, found by walking the triples; the test fails when it is absent. */
static unsigned char *setting(const blob *b, const char *type, uint32_t key)
{
    size_t len = 0;
    unsigned char *d = chunk_data(b, type, &len);
    size_t at = strcmp(type, "OPTM") == 0 ? 4 : 0; /* OPTM starts with the kind */
    uint32_t count = tu_get_le32(d + at);
    assert_true(at + 4 + 16 * (size_t)count <= len);
    for (uint32_t i = 0; i < count; i++)
        if (tu_get_le32(d + at + 4 + 16 * i) == key)
            return d + at + 4 + 16 * i;
    fail_msg("no setting %u in the %s chunk", (unsigned)key, type);
    return NULL;
}

/* OPTM: the optimizer state after the settings: u64 n, u32 momentum_started,
 * u32 0, then n floats (Adam m or the momentum buffer) and, for Adam, n
 * floats of v. Returns a pointer to the u64 n. */
static unsigned char *optm_state(const blob *b)
{
    size_t len = 0;
    unsigned char *d = chunk_data(b, "OPTM", &len);
    size_t at = 8 + 16 * (size_t)tu_get_le32(d + 4);
    assert_true(at + 16 <= len);
    return d + at;
}

/* Data of a meta chunk: count, then (u32 klen, key, u32 vlen, value) per
 * entry. keys and values are C strings; lens[i], when not 0, overrides
 * strlen of value i (a value with a NUL byte). */
static blob meta_data(uint32_t count, size_t n, const char *const *keys,
                      const char *const *values, const size_t *lens)
{
    size_t total = 4;
    for (size_t i = 0; i < n; i++)
        total += 8 + strlen(keys[i]) + (lens && lens[i] ? lens[i] : strlen(values[i]));
    blob b = {tu_alloc(total, 1), total};
    tu_put_le32(b.p, count);
    size_t at = 4;
    for (size_t i = 0; i < n; i++) {
        size_t kl = strlen(keys[i]), vl = lens && lens[i] ? lens[i] : strlen(values[i]);
        tu_put_le32(b.p + at, (uint32_t)kl);
        memcpy(b.p + at + 4, keys[i], kl);
        at += 4 + kl;
        tu_put_le32(b.p + at, (uint32_t)vl);
        memcpy(b.p + at + 4, values[i], vl);
        at += 4 + vl;
    }
    return b;
}

/* A version-1 model file (0.1 and 1.0) of the same model: magic, u32 1,
 * u32 0 flags, u64 payload length, the ARCH then PARM data of a version-2
 * model file, and a CRC-32 of everything before it (docs/format.md). */
static blob v1_of(const blob *model_file)
{
    size_t la = 0, lp = 0;
    const unsigned char *a = chunk_data(model_file, "ARCH", &la);
    const unsigned char *p = chunk_data(model_file, "PARM", &lp);
    blob b = {tu_alloc(24 + la + lp + 4, 1), 24 + la + lp + 4};
    memcpy(b.p, model_file->p, 8);
    tu_put_le32(b.p + 8, 1);
    tu_put_le32(b.p + 12, 0);
    tu_put_le64(b.p + 16, la + lp);
    memcpy(b.p + 24, a, la);
    memcpy(b.p + 24 + la, p, lp);
    tu_put_le32(b.p + b.n - 4, tu_crc32(b.p, b.n - 4));
    return b;
}

/* ---- trainers of every architecture the refusals need ------------------------------- */

/* An MLP on DIM inputs (n_hidden hidden layers of `hidden` units on each
 * side), or with conv the convolutional model of make_run; last_act >= 0
 * builds the MLP layer by layer with that activation on the output layer. */
typedef struct spec {
    int kind; /* VAE_OPTIMIZER_* */
    int conv;
    size_t hidden, n_hidden, latent;
    int act, lik, last_act;
} spec;

static const spec BASE = {VAE_OPTIMIZER_ADAM, 0, 20, 1, 3, VAE_ACT_TANH,
                          VAE_LIKELIHOOD_BERNOULLI, -1};
/* A small model (180 parameters) for the byte-by-byte tests. */
static const spec SMALL = {VAE_OPTIMIZER_ADAM, 0, 4, 1, 2, VAE_ACT_TANH,
                           VAE_LIKELIHOOD_BERNOULLI, -1};

static spec with_kind(spec s, int kind)
{
    s.kind = kind;
    return s;
}

static void add_dense(vae_model *m, int encoder, size_t in, size_t out, int act)
{
    vae_layer *l = NULL;
    OK(vae_layer_dense_create(&l, in, out, act));
    if (encoder)
        OK(vae_model_add_encoder_layer(m, &l));
    else
        OK(vae_model_add_decoder_layer(m, &l));
}

/* A trainer (generator seeded with seed) over a model (initialized from
 * seed), on the shared data, one worker. */
static run make_spec_run(spec sp, uint64_t seed)
{
    run s;
    memset(&s, 0, sizeof s);
    s.x = make_data();
    OK(vae_dataset_from_floats(&s.ds, s.x, COUNT, DIM, NULL));
    if (sp.conv) {
        vae_layer *l = NULL;
        OK(vae_model_create(&s.m, DIM, sp.latent, sp.lik));
        OK(vae_layer_conv2d_create(&l, 1, 4, 4, 3, 3, 3, 1, 1, sp.act));
        OK(vae_model_add_encoder_layer(s.m, &l));
        OK(vae_layer_dense_create(&l, sp.latent, 3 * 4 * 4, sp.act));
        OK(vae_model_add_decoder_layer(s.m, &l));
        OK(vae_layer_conv2d_transpose_create(&l, 3, 4, 4, 1, 3, 3, 1, 1, 0, VAE_ACT_IDENTITY));
        OK(vae_model_add_decoder_layer(s.m, &l));
        OK(vae_model_build(s.m, seed));
    } else if (sp.last_act >= 0) {
        OK(vae_model_create(&s.m, DIM, sp.latent, sp.lik));
        add_dense(s.m, 1, DIM, sp.hidden, sp.act);
        add_dense(s.m, 0, sp.latent, sp.hidden, sp.act);
        add_dense(s.m, 0, sp.hidden, DIM, sp.last_act);
        OK(vae_model_build(s.m, seed));
    } else {
        const size_t hidden[2] = {sp.hidden, sp.hidden};
        OK(vae_model_create_mlp(&s.m, DIM, hidden, sp.n_hidden, sp.latent, sp.act, sp.lik,
                                seed));
    }
    OK(vae_elbo_create(&s.e));
    OK(vae_optimizer_create(&s.opt, sp.kind));
    OK(vae_context_create(&s.ctx));
    OK(vae_trainer_create(&s.t, s.m, s.e, s.opt, s.ctx, seed));
    return s;
}

/* Settings away from the defaults, different for salt 0 and 1, so that a
 * restore that writes them (or a refusal that writes some) shows. */
static void set_settings(run *s, int salt)
{
    OK(vae_elbo_set_param(s->e, VAE_ELBO_BETA, salt ? 0.5 : 0.75));
    OK(vae_optimizer_set_param(s->opt, VAE_OPT_CLIP_NORM, salt ? 0.0 : 5.0));
    if (vae_optimizer_kind(s->opt) == VAE_OPTIMIZER_ADAM) {
        OK(vae_optimizer_set_param(s->opt, VAE_OPT_LR, salt ? 2e-3 : 3e-3));
        OK(vae_optimizer_set_param(s->opt, VAE_OPT_WEIGHT_DECAY, salt ? 2e-3 : 1e-3));
        OK(vae_optimizer_set_param(s->opt, VAE_OPT_BETA1, salt ? 0.8 : 0.85));
        OK(vae_optimizer_set_param(s->opt, VAE_OPT_BETA2, salt ? 0.995 : 0.99));
        OK(vae_optimizer_set_param(s->opt, VAE_OPT_EPS, salt ? 1e-6 : 1e-7));
    } else {
        OK(vae_optimizer_set_param(s->opt, VAE_OPT_LR, salt ? 0.04 : 0.05));
        OK(vae_optimizer_set_param(s->opt, VAE_OPT_WEIGHT_DECAY, salt ? 1e-4 : 0.0));
        OK(vae_optimizer_set_param(s->opt, VAE_OPT_MOMENTUM, salt ? 0.8 : 0.9));
        OK(vae_optimizer_set_param(s->opt, VAE_OPT_DAMPENING, salt ? 0.0 : 0.1));
        OK(vae_optimizer_set_param(s->opt, VAE_OPT_NESTEROV, salt ? 1.0 : 0.0));
    }
}

/* A progress callback that cancels after `after` steps (never when 0). */
typedef struct stop_at {
    size_t after, steps;
} stop_at;

static int stop_cb(void *payload, size_t done, size_t total, double running)
{
    (void)done, (void)total, (void)running;
    stop_at *p = payload;
    return ++p->steps == p->after;
}

static vae_train_options plain_options(size_t batch, stop_at *stop)
{
    vae_train_options o;
    OK(vae_train_options_init(&o, sizeof o));
    o.batch_size = batch;
    o.binarize = 1;
    o.progress = stop ? stop_cb : NULL;
    o.payload = stop;
    return o;
}

/* Every part of a checkpoint in use: `stop` steps of an epoch that stays
 * open, a pending gradient, and metadata. */
static void make_busy(run *s, size_t stop, const char *note)
{
    stop_at st = {stop, 0};
    vae_train_options o = plain_options(BATCH, &st);
    assert_int_equal(vae_trainer_train_epoch(s->t, s->ds, &o, NULL), VAE_ERR_CANCELLED);
    OK(vae_trainer_forward_backward(s->t, s->x, BATCH, NULL, NULL));
    OK(vae_trainer_set_meta(s->t, "note", note));
    OK(vae_trainer_set_meta(s->t, "stop", stop == 2 ? "two" : "other"));
}

/* ---- snapshots: everything observable of a trainer ---------------------------------- */

typedef struct snap {
    blob bytes;            /* vae_trainer_save_mem */
    size_t n;
    float *params, *grads; /* [n] */
    int opt_rc[VAE_OPT_DAMPENING + 1];
    double opt[VAE_OPT_DAMPENING + 1];
    double elbo[VAE_ELBO_FREE_BITS + 1], sigma;
    uint64_t steps, epochs;
    size_t done, total;
    size_t n_meta;
    char *meta; /* "key=value\n" per entry, in order */
} snap;

static snap take_snap(run *s)
{
    snap a;
    memset(&a, 0, sizeof a);
    a.bytes = blob_of(s->t);
    const float *p = vae_model_params(s->m, &a.n);
    a.params = tu_copy_floats(p, a.n);
    size_t ng = 0;
    const float *g = vae_trainer_grads(s->t, &ng);
    assert_int_equal(ng, a.n);
    a.grads = tu_copy_floats(g, ng);
    for (int k = 1; k <= VAE_OPT_DAMPENING; k++)
        a.opt_rc[k] = vae_optimizer_get_param(s->opt, k, &a.opt[k]);
    for (int k = VAE_ELBO_BETA; k <= VAE_ELBO_FREE_BITS; k++)
        OK(vae_elbo_get_param(s->e, k, &a.elbo[k]));
    OK(vae_model_get_param(s->m, VAE_MODEL_GAUSSIAN_SIGMA, &a.sigma));
    a.steps = vae_trainer_steps(s->t);
    a.epochs = vae_trainer_epochs(s->t);
    OK(vae_trainer_epoch_position(s->t, &a.done, &a.total));
    a.n_meta = vae_trainer_meta_count(s->t);
    size_t len = 1;
    for (size_t i = 0; i < a.n_meta; i++) {
        const char *k = NULL, *v = NULL;
        OK(vae_trainer_meta_at(s->t, i, &k, &v));
        len += strlen(k) + strlen(v) + 2;
    }
    a.meta = tu_alloc(len, 1);
    for (size_t i = 0; i < a.n_meta; i++) {
        const char *k = NULL, *v = NULL;
        OK(vae_trainer_meta_at(s->t, i, &k, &v));
        strcat(strcat(strcat(strcat(a.meta, k), "="), v), "\n");
    }
    return a;
}

static void free_snap(snap *a)
{
    blob_free(&a->bytes);
    free(a->params);
    free(a->grads);
    free(a->meta);
}

/* The trainer is now exactly as `before` recorded it. */
static void check_snap(run *s, const snap *before, const char *what)
{
    snap now = take_snap(s);
    assert_int_equal(now.n, before->n);
    if (memcmp(now.params, before->params, now.n * sizeof(float)) != 0)
        fail_msg("%s: the parameters changed", what);
    if (memcmp(now.grads, before->grads, now.n * sizeof(float)) != 0)
        fail_msg("%s: the gradient slab changed", what);
    for (int k = 1; k <= VAE_OPT_DAMPENING; k++)
        if (now.opt_rc[k] != before->opt_rc[k] ||
            memcmp(&now.opt[k], &before->opt[k], sizeof(double)) != 0)
            fail_msg("%s: optimizer setting %d changed from %g to %g", what, k, before->opt[k],
                     now.opt[k]);
    if (memcmp(now.elbo, before->elbo, sizeof now.elbo) != 0)
        fail_msg("%s: the objective's settings changed", what);
    if (memcmp(&now.sigma, &before->sigma, sizeof now.sigma) != 0)
        fail_msg("%s: sigma changed", what);
    if (now.steps != before->steps || now.epochs != before->epochs)
        fail_msg("%s: the counters changed", what);
    if (now.done != before->done || now.total != before->total)
        fail_msg("%s: the epoch position changed", what);
    if (now.n_meta != before->n_meta || strcmp(now.meta, before->meta) != 0)
        fail_msg("%s: the metadata changed:\n%s\nwas\n%s", what, now.meta, before->meta);
    assert_same_blob(&now.bytes, &before->bytes, what);
    free_snap(&now);
}

/* Restoring b into s, from memory and from a file, fails with `code` and a
 * fresh message naming the call, the file (or "buffer") and containing
 * needle (and needle2 when not NULL); s is left exactly as it was. */
#define REFUSED(s, b, code, needle, needle2)                                              \
    refused((s), (b), (code), (needle), (needle2), __LINE__)

static void refused(run *s, const blob *b, int code, const char *needle, const char *needle2,
                    int line)
{
    char label[80];
    snprintf(label, sizeof label, "the restore of line %d", line);
    snap before = take_snap(s);
    const char *path = tmp_path("refused.ckpt");
    write_blob(path, b);
    for (int from_file = 0; from_file < 2; from_file++) {
        (void)vae_rng_uniform(NULL, NULL, 0); /* a known stale message */
        int rc = from_file ? vae_trainer_restore(s->t, path)
                           : vae_trainer_restore_mem(s->t, b->p, b->n);
        const char *fn = from_file ? "vae_trainer_restore: " : "vae_trainer_restore_mem: ";
        tu_check_error_msg(rc, code, fn, needle, label, __FILE__, line);
        const char *msg = vae_last_error();
        if (needle2 && !strstr(msg, needle2))
            fail_msg("%s: message \"%s\" does not mention \"%s\"", label, msg, needle2);
        if (!strstr(msg, from_file ? path : "buffer"))
            fail_msg("%s: message \"%s\" does not name the %s", label, msg,
                     from_file ? "file" : "buffer");
        check_snap(s, &before, label);
    }
    free_snap(&before);
}

/* The refusals of crafted checkpoints: a source trainer with every part of
 * a checkpoint in use, its clean checkpoint, and a target trainer in
 * another state (other settings, seeds, position, gradient and metadata). */
typedef struct crafted {
    run src, tgt;
    blob clean;
} crafted;

static crafted *crafted_new(spec sp)
{
    crafted *c = tu_alloc(1, sizeof *c);
    c->src = make_spec_run(sp, 5);
    set_settings(&c->src, 0);
    make_busy(&c->src, 3, "source");
    c->tgt = make_spec_run(sp, 6);
    set_settings(&c->tgt, 1);
    make_busy(&c->tgt, 2, "target");
    c->clean = blob_of(c->src.t);
    for (int k = 0; k < 9; k++) {
        const char *types[9] = {"ARCH", "PARM", "OBJV", "OPTM", "TRNR", "EPOC", "GRAD", "meta",
                                "DONE"};
        if (chunk_find(&c->clean, types[k]) == SIZE_MAX)
            fail_msg("the source checkpoint has no %s chunk", types[k]);
    }
    return c;
}

/* After the refusals: the clean checkpoint restores into the target, which
 * then saves the same bytes (so the edits were what the refusals saw). */
static void crafted_free(crafted *c)
{
    OK(vae_trainer_restore_mem(c->tgt.t, c->clean.p, c->clean.n));
    blob now = blob_of(c->tgt.t);
    assert_same_blob(&now, &c->clean, "the target after restoring the clean checkpoint");
    blob_free(&now);
    blob_free(&c->clean);
    free_run(&c->src);
    free_run(&c->tgt);
    free(c);
}

/* Removes the temporary directory and what the tests left in it. */
static int remove_tmpdir(void **state)
{
    (void)state;
    if (!tmpdir[0])
        return 0;
    (void)tu_remove_tree(tmpdir);
    tmpdir[0] = '\0';
    return 0;
}

/* Limits restored after a test that lowers one, even when it failed. */
static uint64_t saved_file_limit;

static int save_limit(void **state)
{
    (void)state;
    saved_file_limit = vae_get_limit(VAE_LIMIT_FILE_BYTES);
    return 0;
}

static int restore_limit(void **state)
{
    (void)state;
    return vae_set_limit(VAE_LIMIT_FILE_BYTES, saved_file_limit) == VAE_OK ? 0 : -1;
}

/* The uninterrupted run: both epochs in this process. */
static void reference(int kind, int conv, size_t workers, record *rec)
{
    run s = make_run(kind, conv, workers, NULL);
    OK(vae_trainer_set_meta(s.t, "note", "interrupted run"));
    stopper p = {0, 0, NULL, &s, 0};
    vae_train_options o = options(&p);
    for (int e = 0; e < EPOCHS; e++) {
        vae_epoch_stats st = tu_stats();
        OK(vae_trainer_train_epoch(s.t, s.ds, &o, &st));
        put_stats(rec, e, &st);
    }
    record_params(&s, rec);
    free_run(&s);
}

static void resume_case(int kind, int conv, size_t workers, size_t stop_after, int save_inside)
{
    char a_kind[8], a_conv[8], a_workers[8], a_stop[8], a_inside[8];
    snprintf(a_kind, sizeof a_kind, "%d", kind);
    snprintf(a_conv, sizeof a_conv, "%d", conv);
    snprintf(a_workers, sizeof a_workers, "%zu", workers);
    snprintf(a_stop, sizeof a_stop, "%zu", stop_after);
    snprintf(a_inside, sizeof a_inside, "%d", save_inside);
    const char *ckpt = tmp_path("run.ckpt"), *out1 = tmp_path("out1"), *out2 = tmp_path("out2");
    remove(ckpt);
    const char *a1[10] = {"", "child", "1", a_kind, a_conv, a_workers, a_stop, a_inside, ckpt, out1};
    spawn_child(a1);
    const char *a2[10] = {"", "child", "2", a_kind, a_conv, a_workers, a_stop, a_inside, ckpt, out2};
    spawn_child(a2);
    record *ref = calloc(1, sizeof *ref), *r1 = calloc(1, sizeof *r1), *r2 = calloc(1, sizeof *r2);
    reference(kind, conv, workers, ref);
    read_record(out1, r1);
    read_record(out2, r2);
    /* Every reported number and every parameter bit. */
    assert_memory_equal(r1->loss[0], ref->loss[0], sizeof ref->loss[0]);
    assert_memory_equal(r2->loss[1], ref->loss[1], sizeof ref->loss[1]);
    assert_int_equal(r2->n_params, ref->n_params);
    assert_memory_equal(r2->params, ref->params, ref->n_params * sizeof(float));
    free(ref);
    free(r1);
    free(r2);
}

/* At the epoch boundary, after a cancelled step 3 of the second epoch, and
 * from a save in the callback after its step 5 (training then goes on in
 * the first process and is thrown away). */
static void resume_all_stops(int kind, int conv, size_t workers)
{
    resume_case(kind, conv, workers, 0, 0);
    resume_case(kind, conv, workers, 3, 0);
    resume_case(kind, conv, workers, 5, 1);
}

static void test_resume_adam_1_worker(void **state)
{
    (void)state;
    resume_all_stops(VAE_OPTIMIZER_ADAM, 0, 1);
}

static void test_resume_adam_2_workers(void **state)
{
    (void)state;
    resume_all_stops(VAE_OPTIMIZER_ADAM, 0, 2);
}

static void test_resume_sgd_1_worker(void **state)
{
    (void)state;
    resume_all_stops(VAE_OPTIMIZER_SGD, 0, 1);
}

static void test_resume_sgd_2_workers(void **state)
{
    (void)state;
    resume_all_stops(VAE_OPTIMIZER_SGD, 0, 2);
}

static void test_resume_conv_2_workers(void **state)
{
    (void)state;
    resume_all_stops(VAE_OPTIMIZER_ADAM, 1, 2);
}

/* IWAE with k = 3 under a KL warm-up that ends mid-run: the schedule
 * follows the restored step counter. */
static void test_resume_iwae_warmup(void **state)
{
    (void)state;
    resume_all_stops(VAE_OPTIMIZER_ADAM, 2, 2);
}

/* ---- refusals of another architecture or kind -------------------------------- */

/* A checkpoint of the `other` architecture or optimizer kind is refused
 * with VAE_ERR_SHAPE naming the difference, the target untouched. */
static void expect_shape(spec target, spec other, const char *needle)
{
    run tgt = make_spec_run(target, 6);
    set_settings(&tgt, 1);
    make_busy(&tgt, 2, "target");
    run src = make_spec_run(other, 5);
    set_settings(&src, 0);
    make_busy(&src, 3, "source");
    blob b = blob_of(src.t);
    REFUSED(&tgt, &b, VAE_ERR_SHAPE, needle, NULL);
    blob_free(&b);
    free_run(&src);
    free_run(&tgt);
}

/* Every architectural difference is caught, the first layer's and the
 * last layer's, and so is each optimizer kind into the other. */
static void test_refuse_other_architecture(void **state)
{
    (void)state;
    spec s = BASE;
    s.latent = 4;
    expect_shape(BASE, s, "latent 4");
    s = BASE;
    s.hidden = 21;
    expect_shape(BASE, s, "layer 0 differs");
    s = BASE;
    s.act = VAE_ACT_RELU;
    expect_shape(BASE, s, "layer 0 differs: kind 1, activation 1");
    s = BASE;
    s.lik = VAE_LIKELIHOOD_GAUSSIAN;
    expect_shape(BASE, s, "likelihood 1");
    s = BASE;
    s.n_hidden = 2;
    expect_shape(BASE, s, "6 layers (2 in the encoder); the trainer's has 4 (1)");
    s = BASE;
    s.conv = 1;
    expect_shape(BASE, s, "layer 0 differs: kind 2");
    /* The same layers as BASE but a sigmoid output layer: only the last
     * record differs. */
    spec manual = BASE, last = BASE;
    manual.last_act = VAE_ACT_IDENTITY;
    last.last_act = VAE_ACT_SIGMOID;
    expect_shape(manual, last, "layer 3 differs");
    expect_shape(BASE, with_kind(BASE, VAE_OPTIMIZER_SGD),
                 "the checkpoint's optimizer is SGD, the trainer's Adam");
    expect_shape(with_kind(BASE, VAE_OPTIMIZER_SGD), BASE,
                 "the checkpoint's optimizer is Adam, the trainer's SGD");
}

/* A model file of format version 2 or 1 holds no trainer state: refused
 * with VAE_ERR_FORMAT, the target untouched; both still load as models. */
static void test_refuse_model_files(void **state)
{
    (void)state;
    run tgt = make_spec_run(BASE, 6);
    make_busy(&tgt, 2, "target");
    run src = make_spec_run(BASE, 5);
    blob v2 = model_blob(src.m), v1 = v1_of(&v2);
    REFUSED(&tgt, &v2, VAE_ERR_FORMAT, "not a checkpoint", "no TRNR chunk");
    REFUSED(&tgt, &v1, VAE_ERR_FORMAT, "a model file of format version 1", NULL);
    /* The hand-made version-1 file is a valid one: it loads bit for bit. */
    vae_model *m = NULL;
    OK(vae_model_load_mem(&m, v1.p, v1.n));
    size_t n = 0, n1 = 0;
    const float *want = vae_model_params(src.m, &n), *got = vae_model_params(m, &n1);
    assert_int_equal(n1, n);
    assert_memory_equal(got, want, n * sizeof *got);
    vae_model_free(m);
    blob_free(&v1);
    blob_free(&v2);
    free_run(&src);
    free_run(&tgt);
}

/* ---- crafted checkpoints ------------------------------------------------------- */

/* OPTM: each out-of-range, unknown, repeated or missing setting, and state
 * that is not finite or does not fit, is refused naming the chunk. */
static void test_crafted_optm(void **state)
{
    (void)state;
    crafted *c = crafted_new(BASE);
    const uint32_t n = (uint32_t)vae_model_param_count(c->src.m);
    double lr = 0;
    OK(vae_optimizer_get_param(c->src.opt, VAE_OPT_LR, &lr));
    blob b = blob_copy(&c->clean);
    assert_true(tu_get_le_f64(setting(&b, "OPTM", VAE_OPT_LR) + 8) == lr); /* the right field */
    const double bad_lr[] = {-1.0, 0.0, 1e30, 1e7, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad_lr / sizeof *bad_lr; i++) {
        blob_free(&b);
        b = blob_copy(&c->clean);
        tu_put_le_f64(setting(&b, "OPTM", VAE_OPT_LR) + 8, bad_lr[i]);
        chunk_fix(&b, "OPTM");
        REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "OPTM chunk: vae_optimizer_set_param: lr must be",
                NULL);
    }
    struct {
        uint32_t key;
        double value;
        const char *needle;
    } bad[] = {
        {VAE_OPT_BETA1, 1.0, "beta1 must be"},
        {VAE_OPT_BETA2, -0.5, "beta2 must be"},
        {VAE_OPT_EPS, 0.0, "eps must be"},
        {VAE_OPT_WEIGHT_DECAY, 2e6, "weight_decay must be"},
        {VAE_OPT_CLIP_NORM, -1.0, "clip_norm must be"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        blob_free(&b);
        b = blob_copy(&c->clean);
        tu_put_le_f64(setting(&b, "OPTM", bad[i].key) + 8, bad[i].value);
        chunk_fix(&b, "OPTM");
        REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, bad[i].needle, "OPTM chunk");
    }
    /* Keys: unknown to every kind (31), out of the key range (32, 0), one
     * of SGD's only (momentum), repeated, and a nonzero reserved word. */
    const struct {
        uint32_t key;
        const char *needle;
    } keys[] = {{31, "Adam has no unknown parameter (parameter 31)"},
                {32, "bad or repeated setting 32"},
                {0, "bad or repeated setting 0"},
                {VAE_OPT_MOMENTUM, "Adam has no momentum"},
                {VAE_OPT_LR, "bad or repeated setting 1"}};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        blob_free(&b);
        b = blob_copy(&c->clean);
        tu_put_le32(setting(&b, "OPTM", VAE_OPT_WEIGHT_DECAY), keys[i].key);
        chunk_fix(&b, "OPTM");
        REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, keys[i].needle, "OPTM chunk");
    }
    blob_free(&b);
    b = blob_copy(&c->clean);
    tu_put_le32(setting(&b, "OPTM", VAE_OPT_EPS) + 4, 1);
    chunk_fix(&b, "OPTM");
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "bad or repeated setting 6", NULL);

    /* One setting fewer: the count alone, and the count with its triple gone
     * (a well-formed chunk that lacks eps). One more: count 7. */
    size_t len = 0;
    for (int variant = 0; variant < 3; variant++) {
        blob_free(&b);
        b = blob_copy(&c->clean);
        unsigned char *d = chunk_data(&b, "OPTM", &len);
        const size_t eps_at = (size_t)(setting(&b, "OPTM", VAE_OPT_EPS) - d);
        assert_int_equal(tu_get_le32(d + 4), 6);
        tu_put_le32(d + 4, variant == 2 ? 7 : 5);
        if (variant == 1) {
            unsigned char *copy = tu_alloc(len, 1);
            memcpy(copy, d, eps_at);
            memcpy(copy + eps_at, d + eps_at + 16, len - eps_at - 16);
            chunk_replace(&b, "OPTM", copy, len - 16);
            free(copy);
        } else {
            chunk_fix(&b, "OPTM");
        }
        REFUSED(&c->tgt, &b, VAE_ERR_FORMAT,
                variant == 2 ? "the OPTM chunk holds 7 settings, this library writes and needs 6"
                             : "the OPTM chunk holds 5 settings, this library writes and needs 6",
                NULL);
    }
    /* An unknown kind is another optimizer: VAE_ERR_SHAPE. */
    blob_free(&b);
    b = blob_copy(&c->clean);
    tu_put_le32(chunk_data(&b, "OPTM", NULL), 7);
    chunk_fix(&b, "OPTM");
    REFUSED(&c->tgt, &b, VAE_ERR_SHAPE, "the checkpoint's optimizer is of an unknown kind", NULL);

    /* The state: m[3] NaN, m[0] infinite, v[4] < 0, v[1] NaN. */
    const struct {
        size_t index; /* into m then v */
        float value;
        const char *needle;
    } st[] = {{3, NAN, "optimizer state value 3 is not finite"},
              {0, -INFINITY, "optimizer state value 0 is not finite"},
              {(size_t)n + 4, -1.0f, "optimizer state value 4 is not finite (or a second moment "
                                     "below 0)"},
              {(size_t)n + 1, NAN, "optimizer state value 1 is not finite"}};
    for (size_t i = 0; i < sizeof st / sizeof *st; i++) {
        blob_free(&b);
        b = blob_copy(&c->clean);
        unsigned char *s = optm_state(&b);
        assert_int_equal(tu_get_le64(s), n);
        tu_put_le_f32(s + 16 + 4 * st[i].index, st[i].value);
        chunk_fix(&b, "OPTM");
        REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, st[i].needle, NULL);
    }
    /* The state's size: another n, momentum_started 2, the reserved word,
     * 4 bytes short, 4 bytes too many. */
    for (int variant = 0; variant < 5; variant++) {
        blob_free(&b);
        b = blob_copy(&c->clean);
        unsigned char *s = optm_state(&b);
        if (variant == 0)
            tu_put_le64(s, (uint64_t)n + 1);
        else if (variant == 1)
            tu_put_le32(s + 8, 2);
        else if (variant == 2)
            tu_put_le32(s + 12, 1);
        if (variant < 3)
            chunk_fix(&b, "OPTM");
        else
            chunk_resize(&b, "OPTM", variant == 3 ? -4 : 4);
        REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "the OPTM chunk's state does not fit", NULL);
    }
    blob_free(&b);
    crafted_free(c);
}

/* SGD's own settings and state layout. */
static void test_crafted_optm_sgd(void **state)
{
    (void)state;
    crafted *c = crafted_new(with_kind(BASE, VAE_OPTIMIZER_SGD));
    const struct {
        uint32_t key;
        double value;
        const char *needle;
    } bad[] = {{VAE_OPT_NESTEROV, 0.5, "nesterov is 0 or 1"},
               {VAE_OPT_MOMENTUM, 1.0, "momentum must be"},
               {VAE_OPT_DAMPENING, -0.1, "dampening must be"},
               {VAE_OPT_LR, -1.0, "lr must be"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        blob b = blob_copy(&c->clean);
        tu_put_le_f64(setting(&b, "OPTM", bad[i].key) + 8, bad[i].value);
        chunk_fix(&b, "OPTM");
        REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, bad[i].needle, "OPTM chunk");
        blob_free(&b);
    }
    /* Adam's key 4 in an SGD chunk. */
    blob b = blob_copy(&c->clean);
    tu_put_le32(setting(&b, "OPTM", VAE_OPT_MOMENTUM), VAE_OPT_BETA1);
    chunk_fix(&b, "OPTM");
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "SGD has no beta1", NULL);
    blob_free(&b);
    /* A second state array, as Adam's: does not fit SGD. */
    const size_t n = vae_model_param_count(c->src.m);
    b = blob_copy(&c->clean);
    chunk_resize(&b, "OPTM", (long)(4 * n));
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "the OPTM chunk's state does not fit", NULL);
    blob_free(&b);
    /* A momentum buffer with an infinity. */
    b = blob_copy(&c->clean);
    tu_put_le_f32(optm_state(&b) + 16 + 4 * 9, INFINITY);
    chunk_fix(&b, "OPTM");
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "optimizer state value 9 is not finite", NULL);
    blob_free(&b);
    crafted_free(c);
}

/* OBJV, PARM and ARCH: bad values, extra bytes, another count. */
static void test_crafted_objv_parm(void **state)
{
    (void)state;
    crafted *c = crafted_new(BASE);
    const struct {
        uint32_t key;
        double value;
        const char *needle;
    } bad[] = {{VAE_ELBO_BETA, NAN, "OBJV chunk: vae_elbo_set_param: beta must be"},
               {VAE_ELBO_BETA, -1.0, "OBJV chunk: vae_elbo_set_param: beta must be"},
               {VAE_ELBO_BETA, 1e39, "OBJV chunk: vae_elbo_set_param: beta must be"},
               {VAE_ELBO_OBJECTIVE, 7.0, "OBJV chunk: vae_elbo_set_param: unknown objective 7"},
               {VAE_ELBO_OBJECTIVE, 0.5, "unknown objective 0.5"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        blob b = blob_copy(&c->clean);
        tu_put_le_f64(setting(&b, "OBJV", bad[i].key) + 8, bad[i].value);
        chunk_fix(&b, "OBJV");
        REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, bad[i].needle, NULL);
        blob_free(&b);
    }
    blob b = blob_copy(&c->clean);
    tu_put_le32(setting(&b, "OBJV", VAE_ELBO_OBJECTIVE), 6);
    chunk_fix(&b, "OBJV");
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "OBJV chunk: vae_elbo_set_param: unknown parameter 6",
            NULL);
    blob_free(&b);
    /* A setting of 1.2 in the place of the objective: valid alone, but the
     * objective is missing. */
    b = blob_copy(&c->clean);
    tu_put_le32(setting(&b, "OBJV", VAE_ELBO_OBJECTIVE), VAE_ELBO_WARMUP);
    chunk_fix(&b, "OBJV");
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "the OBJV chunk lacks the objective", NULL);
    blob_free(&b);
    b = blob_copy(&c->clean);
    tu_put_le32(setting(&b, "OBJV", VAE_ELBO_BETA), VAE_ELBO_FREE_BITS); /* 0.75 nats */
    chunk_fix(&b, "OBJV");
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "the OBJV chunk lacks beta", NULL);
    blob_free(&b);
    for (uint32_t count = 1; count <= 6; count += 5) {
        b = blob_copy(&c->clean);
        tu_put_le32(chunk_data(&b, "OBJV", NULL), count);
        chunk_fix(&b, "OBJV");
        REFUSED(&c->tgt, &b, VAE_ERR_FORMAT,
                count == 1 ? "the OBJV chunk holds 1 settings, this library reads 2 to 5"
                           : "the OBJV chunk holds 6 settings, this library reads 2 to 5",
                NULL);
        blob_free(&b);
    }
    /* Three settings where two are written: the third is past the chunk. */
    b = blob_copy(&c->clean);
    tu_put_le32(chunk_data(&b, "OBJV", NULL), 3);
    chunk_fix(&b, "OBJV");
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "OBJV chunk: bad or repeated setting", NULL);
    blob_free(&b);
    b = blob_copy(&c->clean);
    chunk_resize(&b, "OBJV", 8);
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "8 bytes too many in the OBJV chunk", NULL);
    blob_free(&b);
    b = blob_copy(&c->clean);
    chunk_resize(&b, "OBJV", -8);
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "OBJV chunk: bad or repeated setting", NULL);
    blob_free(&b);

    /* PARM: a NaN, an infinity, another count, a float too many. */
    b = blob_copy(&c->clean);
    tu_put_le_f32(chunk_data(&b, "PARM", NULL) + 8 + 4 * 7, NAN);
    chunk_fix(&b, "PARM");
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "parameter 7 is not finite", NULL);
    blob_free(&b);
    b = blob_copy(&c->clean);
    tu_put_le_f32(chunk_data(&b, "PARM", NULL) + 8, INFINITY);
    chunk_fix(&b, "PARM");
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "parameter 0 is not finite", NULL);
    blob_free(&b);
    b = blob_copy(&c->clean);
    unsigned char *parm = chunk_data(&b, "PARM", NULL);
    tu_put_le64(parm, tu_get_le64(parm) - 1);
    chunk_fix(&b, "PARM");
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "the PARM chunk holds", NULL);
    blob_free(&b);
    b = blob_copy(&c->clean);
    chunk_resize(&b, "PARM", 4);
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "the PARM chunk holds", NULL);
    blob_free(&b);
    /* ARCH: bytes after the last record. */
    b = blob_copy(&c->clean);
    chunk_resize(&b, "ARCH", 8);
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "8 bytes after the last layer record", NULL);
    blob_free(&b);
    b = blob_copy(&c->clean);
    chunk_resize(&b, "ARCH", -8);
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "truncated or bad record of layer 3", NULL);
    blob_free(&b);
    crafted_free(c);
}

/* A Gaussian checkpoint whose sigma is out of bounds: refused, the target's
 * sigma untouched. */
static void test_crafted_sigma(void **state)
{
    (void)state;
    spec g = BASE;
    g.lik = VAE_LIKELIHOOD_GAUSSIAN;
    crafted *c = crafted_new(g);
    const float bad[] = {0.0f, -1.0f, NAN, INFINITY, 2e6f};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        blob b = blob_copy(&c->clean);
        tu_put_le_f32(chunk_data(&b, "ARCH", NULL) + 8, bad[i]);
        chunk_fix(&b, "ARCH");
        REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "bad Gaussian sigma", NULL);
        blob_free(&b);
    }
    crafted_free(c);
}

/* TRNR: a generator that cannot be (all zero), a spare flag other than 0
 * or 1, a NaN spare, bytes too many or too few, a step counter past 2^62
 * (UINT64_MAX would wrap Adam's step number to 0). */
static void test_crafted_trnr(void **state)
{
    (void)state;
    crafted *c = crafted_new(BASE);
    for (int variant = 0; variant < 7; variant++) {
        blob b = blob_copy(&c->clean);
        size_t len = 0;
        unsigned char *d = chunk_data(&b, "TRNR", &len);
        assert_int_equal(len, 56);
        assert_int_equal(tu_get_le64(d + 40), vae_trainer_steps(c->src.t)); /* the right layout */
        if (variant == 0)
            memset(d, 0, 32);
        else if (variant == 1)
            tu_put_le32(d + 32, 2);
        else if (variant == 2) {
            tu_put_le32(d + 32, 1);
            tu_put_le_f32(d + 36, NAN);
        } else if (variant == 5)
            tu_put_le64(d + 40, UINT64_MAX);
        else if (variant == 6)
            tu_put_le64(d + 40, ((uint64_t)1 << 62) + 1);
        if (variant < 3 || variant > 4)
            chunk_fix(&b, "TRNR");
        else
            chunk_resize(&b, "TRNR", variant == 3 ? 8 : -8);
        REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "bad TRNR chunk", NULL);
        blob_free(&b);
    }
    crafted_free(c);
}

/* EPOC: done > total, total 0, steps > done, a NaN or infinite sum, shuffle
 * 2, the reserved word, an all-zero generator, bytes too many or too few.
 * done == total is valid (an epoch whose last step is taken and which has
 * not closed yet): it restores, and the next epoch call closes it without
 * a step. */
static void test_crafted_epoc(void **state)
{
    (void)state;
    crafted *c = crafted_new(BASE);
    for (int variant = 0; variant < 11; variant++) {
        blob b = blob_copy(&c->clean);
        size_t len = 0;
        unsigned char *d = chunk_data(&b, "EPOC", &len);
        assert_int_equal(len, 96);
        assert_int_equal(tu_get_le64(d + 40), COUNT); /* total, done, steps where expected */
        assert_int_equal(tu_get_le64(d + 48), 3 * BATCH);
        assert_int_equal(tu_get_le64(d + 56), 3);
        switch (variant) {
        case 0: tu_put_le64(d + 48, COUNT + 1); break;
        case 1: tu_put_le64(d + 48, COUNT + 5); break;
        case 2: tu_put_le64(d + 40, 0); break;
        case 3: tu_put_le64(d + 56, 3 * BATCH + 1); break;
        case 4: tu_put_le_f64(d + 72, NAN); break;
        case 5: tu_put_le_f64(d + 88, -INFINITY); break;
        case 6: tu_put_le32(d + 64, 2); break;
        case 7: tu_put_le32(d + 68, 1); break;
        case 8: memset(d, 0, 32); break;
        default: break;
        }
        if (variant < 9)
            chunk_fix(&b, "EPOC");
        else
            chunk_resize(&b, "EPOC", variant == 9 ? 8 : -8);
        REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "bad EPOC chunk (the open epoch)", NULL);
        blob_free(&b);
    }
    blob b = blob_copy(&c->clean);
    tu_put_le64(chunk_data(&b, "EPOC", NULL) + 48, COUNT);
    chunk_fix(&b, "EPOC");
    run r = make_spec_run(BASE, 8);
    OK(vae_trainer_restore_mem(r.t, b.p, b.n));
    size_t done = 0, total = 0;
    OK(vae_trainer_epoch_position(r.t, &done, &total));
    assert_int_equal(done, COUNT);
    assert_int_equal(total, COUNT);
    vae_train_options o = plain_options(BATCH, NULL);
    vae_epoch_stats es = tu_stats();
    OK(vae_trainer_train_epoch(r.t, r.ds, &o, &es));
    assert_int_equal(es.samples, COUNT);
    assert_int_equal(es.steps, 3);
    assert_int_equal(vae_trainer_steps(r.t), vae_trainer_steps(c->src.t));
    assert_int_equal(vae_trainer_epochs(r.t), 1);
    free_run(&r);
    blob_free(&b);
    crafted_free(c);
}

/* GRAD: another length (in the count, in the data) or a NaN. */
static void test_crafted_grad(void **state)
{
    (void)state;
    crafted *c = crafted_new(BASE);
    const size_t n = vae_model_param_count(c->src.m);
    for (int variant = 0; variant < 4; variant++) {
        blob b = blob_copy(&c->clean);
        unsigned char *d = chunk_data(&b, "GRAD", NULL);
        assert_int_equal(tu_get_le64(d), n);
        if (variant == 0) {
            tu_put_le64(d, n + 1);
            chunk_fix(&b, "GRAD");
        } else if (variant == 1) {
            tu_put_le64(d, n - 1);
            chunk_fix(&b, "GRAD");
        } else if (variant == 2) { /* a consistent chunk of n - 1 floats */
            tu_put_le64(d, n - 1);
            chunk_resize(&b, "GRAD", -4);
        } else {
            chunk_resize(&b, "GRAD", 4);
        }
        REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "the GRAD chunk does not fit the model's", NULL);
        blob_free(&b);
    }
    blob b = blob_copy(&c->clean);
    tu_put_le_f32(chunk_data(&b, "GRAD", NULL) + 8 + 4 * 2, NAN);
    chunk_fix(&b, "GRAD");
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "pending gradient 2 is not finite", NULL);
    blob_free(&b);
    crafted_free(c);
}

/* meta, the ancillary chunk this library knows: damaged contents are
 * refused (not skipped), naming the entry and the problem. */
static void test_crafted_meta(void **state)
{
    (void)state;
    crafted *c = crafted_new(BASE);
    char long_key[257], *long_value = tu_alloc(65537, 1);
    memset(long_key, 'k', 256);
    long_key[256] = '\0';
    memset(long_value, 'v', 65536);
    const struct {
        uint32_t count;
        size_t n;
        const char *keys[3], *values[3];
        size_t lens[3];
        size_t trailing;
        const char *needle;
    } bad[] = {
        {2, 2, {"ok", "a\nb"}, {"1", "2"}, {0}, 0, "entry 1: a key has no control characters"},
        {1, 1, {"\x7f"}, {"1"}, {0}, 0, "entry 0: a key has no control characters"},
        {1, 1, {"\x1f"}, {"1"}, {0}, 0, "entry 0: a key has no control characters"},
        {1, 1, {""}, {"1"}, {0}, 0, "entry 0: a key has 1 to 255 bytes"},
        {1, 1, {long_key}, {"1"}, {0}, 0, "entry 0: a key has 1 to 255 bytes"},
        {1, 1, {"big"}, {long_value}, {0}, 0, "entry 0: a value has at most 65535 bytes"},
        {1, 1, {"nul"}, {"a\0b"}, {3}, 0, "entry 0: a value has no NUL byte"},
        {3, 3, {"a", "b", "a"}, {"1", "2", "3"}, {0}, 0, "entry 2: a key appears twice"},
        {3, 2, {"a", "b"}, {"1", "2"}, {0}, 0, "entry 2: truncated"},
        {2, 2, {"a", "b"}, {"1", "2"}, {0}, 3, "3 bytes too many in the meta chunk"},
        {5000, 0, {NULL}, {NULL}, {0}, 0, "bad meta chunk: 5000 entries"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        blob data = meta_data(bad[i].count, bad[i].n, bad[i].keys, bad[i].values, bad[i].lens);
        if (bad[i].trailing) {
            data.p = realloc(data.p, data.n + bad[i].trailing);
            assert_non_null(data.p);
            memset(data.p + data.n, 0, bad[i].trailing);
            data.n += bad[i].trailing;
        }
        blob b = blob_copy(&c->clean);
        chunk_replace(&b, "meta", data.p, data.n);
        REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, bad[i].needle, "meta chunk");
        blob_free(&b);
        blob_free(&data);
    }
    /* A chunk of 2 bytes: not even a count. */
    blob b = blob_copy(&c->clean);
    chunk_replace(&b, "meta", "\1\0", 2);
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "bad meta chunk", NULL);
    blob_free(&b);
    /* At the bounds (255-byte key, 65535-byte value, UTF-8, an empty value)
     * the entries restore as they are. */
    long_key[255] = '\0';
    long_value[65535] = '\0';
    const char *keys[3] = {long_key, "cl\xc3\xa9", "empty"};
    const char *values[3] = {long_value, "\xe2\x82\xac", ""};
    blob data = meta_data(3, 3, keys, values, NULL);
    b = blob_copy(&c->clean);
    chunk_replace(&b, "meta", data.p, data.n);
    OK(vae_trainer_restore_mem(c->tgt.t, b.p, b.n));
    assert_int_equal(vae_trainer_meta_count(c->tgt.t), 3);
    for (size_t i = 0; i < 3; i++) {
        const char *k = NULL, *v = NULL;
        OK(vae_trainer_meta_at(c->tgt.t, i, &k, &v));
        assert_string_equal(k, keys[i]);
        assert_string_equal(v, values[i]);
    }
    blob again = blob_of(c->tgt.t); /* and save as they came */
    assert_same_blob(&again, &b, "the checkpoint with entries at the bounds, saved again");
    blob_free(&again);
    blob_free(&b);
    blob_free(&data);
    free(long_value);
    crafted_free(c);
}

/* The container: unknown ancillary chunks are skipped wherever they are;
 * an unknown critical one is refused naming it and the writer's version;
 * a known chunk twice, a missing required one, a bad type, a length past
 * the end, a missing DONE, data in DONE, bytes after it, another format
 * version, a bad magic. Optional chunks left out restore as absent. */
static void test_crafted_chunks(void **state)
{
    (void)state;
    crafted *c = crafted_new(BASE);
    const char *places[] = {"ARCH", "PARM", "OPTM", "meta", "DONE"};
    for (size_t i = 0; i < sizeof places / sizeof *places; i++) {
        blob b = blob_copy(&c->clean);
        chunk_insert(&b, places[i], "zzTx", "ignored data", 12);
        chunk_insert(&b, places[i], "eMPT", NULL, 0);
        run fresh = make_spec_run(BASE, 8);
        OK(vae_trainer_restore_mem(fresh.t, b.p, b.n));
        blob now = blob_of(fresh.t);
        assert_same_blob(&now, &c->clean, "restored with unknown ancillary chunks");
        blob_free(&now);
        free_run(&fresh);
        blob_free(&b);
    }
    /* An unknown critical chunk, from a writer that says it is 1.2.3. */
    blob b = blob_copy(&c->clean);
    chunk_insert(&b, "TRNR", "ZKIP", "x", 1);
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "unknown critical chunk ZKIP", "written by libvae 1.2.1");
    tu_put_le32(b.p + 12, 10203);
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "unknown critical chunk ZKIP", "written by libvae 1.2.3");
    blob_free(&b);
    /* Known chunks twice. */
    const char *twice[] = {"OBJV", "GRAD", "meta", "ARCH"};
    for (size_t i = 0; i < sizeof twice / sizeof *twice; i++) {
        b = blob_copy(&c->clean);
        size_t len = 0;
        const unsigned char *d = chunk_data(&b, twice[i], &len);
        unsigned char *copy = tu_alloc(len, 1);
        memcpy(copy, d, len);
        chunk_insert(&b, "DONE", twice[i], copy, len);
        free(copy);
        char needle[40];
        snprintf(needle, sizeof needle, "chunk %s appears twice", twice[i]);
        REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, needle, NULL);
        blob_free(&b);
    }
    /* Required chunks missing. */
    const struct {
        const char *type, *needle;
    } missing[] = {{"TRNR", "not a checkpoint: it has no trainer state (no TRNR chunk)"},
                   {"OPTM", "not a checkpoint: it has no trainer state (no OPTM chunk)"},
                   {"OBJV", "not a checkpoint: it has no trainer state (no OBJV chunk)"},
                   {"ARCH", "no ARCH chunk"},
                   {"PARM", "no PARM chunk"},
                   {"DONE", "without its DONE chunk"}};
    for (size_t i = 0; i < sizeof missing / sizeof *missing; i++) {
        b = blob_copy(&c->clean);
        chunk_remove(&b, missing[i].type);
        REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, missing[i].needle, NULL);
        blob_free(&b);
    }
    /* A type that is not 4 letters, with a valid CRC. */
    b = blob_copy(&c->clean);
    memcpy(chunk_data(&b, "TRNR", NULL) - 12, "TR1R", 4);
    chunk_fix(&b, "TR1R");
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "has an invalid type", NULL);
    blob_free(&b);
    /* A length that reaches past the end (the CRC cannot even be read). */
    b = blob_copy(&c->clean);
    tu_put_le64(chunk_data(&b, "GRAD", NULL) - 8, (uint64_t)b.n);
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "chunk GRAD at byte", "(truncated)");
    blob_free(&b);
    /* DONE with data; bytes after DONE. */
    b = blob_copy(&c->clean);
    chunk_replace(&b, "DONE", "abcd", 4);
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "the DONE chunk has 4 bytes of data", NULL);
    blob_free(&b);
    b = blob_copy(&c->clean);
    splice(&b, b.n, 0, "\0\0\0", 3);
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "3 bytes after the DONE chunk", NULL);
    blob_free(&b);
    /* Format version 3; a bad magic. */
    b = blob_copy(&c->clean);
    tu_put_le32(b.p + 8, 3);
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "format version 3 (written by libvae 1.2.1)", NULL);
    blob_free(&b);
    b = blob_copy(&c->clean);
    b.p[1] = 'W';
    REFUSED(&c->tgt, &b, VAE_ERR_FORMAT, "not a libvae checkpoint", NULL);
    blob_free(&b);

    /* Without EPOC, GRAD and meta: no open epoch, a zero slab, no entries
     * (the target had all three). */
    b = blob_copy(&c->clean);
    chunk_remove(&b, "EPOC");
    chunk_remove(&b, "GRAD");
    chunk_remove(&b, "meta");
    OK(vae_trainer_restore_mem(c->tgt.t, b.p, b.n));
    size_t done = 1, total = 1;
    OK(vae_trainer_epoch_position(c->tgt.t, &done, &total));
    assert_int_equal(done, 0);
    assert_int_equal(total, 0);
    TU_ASSERT_ZERO_GRADS(c->tgt.t);
    assert_int_equal(vae_trainer_meta_count(c->tgt.t), 0);
    blob now = blob_of(c->tgt.t);
    assert_same_blob(&now, &b, "restored without EPOC, GRAD and meta, saved again");
    blob_free(&now);
    blob_free(&b);
    crafted_free(c);
}

/* A small checkpoint cut at every length is refused with VAE_ERR_FORMAT
 * (never VAE_ERR_NOMEM, never a crash), the target untouched. */
static void test_every_truncation(void **state)
{
    (void)state;
    crafted *c = crafted_new(SMALL);
    snap before = take_snap(&c->tgt);
    char label[64];
    for (size_t len = 0; len < c->clean.n; len++) {
        unsigned char *cut = tu_alloc(len, 1); /* its own block: ASan sees a read past it */
        memcpy(cut, c->clean.p, len);
        snprintf(label, sizeof label, "the first %zu bytes", len);
        (void)vae_rng_uniform(NULL, NULL, 0);
        int rc = vae_trainer_restore_mem(c->tgt.t, cut, len);
        tu_check_error_msg(rc, VAE_ERR_FORMAT, "vae_trainer_restore_mem", NULL, label, __FILE__,
                           __LINE__);
        free(cut);
        blob now = blob_of(c->tgt.t);
        assert_same_blob(&now, &before.bytes, label);
        blob_free(&now);
    }
    check_snap(&c->tgt, &before, "after every truncation");
    free_snap(&before);
    crafted_free(c);
}

/* Every byte of a small checkpoint changed in turn (one low bit, the top
 * bit, all bits): refused with VAE_ERR_FORMAT, the target untouched, since
 * every byte but the header's lies under a chunk's CRC. The exception is
 * the writer's version (bytes 12 to 15), which is not checked: it only
 * appears in messages, so a flip there restores the same state. */
static void test_every_byte_flipped(void **state)
{
    (void)state;
    crafted *c = crafted_new(SMALL);
    snap before = take_snap(&c->tgt);
    const unsigned char masks[] = {0x01, 0x80, 0xff};
    char label[64];
    blob b = blob_copy(&c->clean);
    for (size_t i = 0; i < b.n; i++)
        for (size_t k = 0; k < sizeof masks; k++) {
            b.p[i] ^= masks[k];
            snprintf(label, sizeof label, "byte %zu ^ 0x%02x", i, masks[k]);
            if (i >= 12 && i < 16) {
                OK(vae_trainer_restore_mem(c->src.t, b.p, b.n));
                blob now = blob_of(c->src.t);
                assert_same_blob(&now, &c->clean, label);
                blob_free(&now);
            } else {
                (void)vae_rng_uniform(NULL, NULL, 0);
                int rc = vae_trainer_restore_mem(c->tgt.t, b.p, b.n);
                tu_check_error_msg(rc, VAE_ERR_FORMAT, "vae_trainer_restore_mem", NULL, label,
                                   __FILE__, __LINE__);
                blob now = blob_of(c->tgt.t);
                assert_same_blob(&now, &before.bytes, label);
                blob_free(&now);
            }
            b.p[i] ^= masks[k];
        }
    check_snap(&c->tgt, &before, "after every flip");
    free_snap(&before);
    blob_free(&b);
    crafted_free(c);
}

/* ---- non-finite values are never saved ---------------------------------------- */

/* How many files of the temporary directory have `part` in their name. */
static int files_containing(const char *part)
{
    int found = 0;
    DIR *d = opendir(tmpdir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        found += strstr(e->d_name, part) != NULL;
    closedir(d);
    return found;
}

/* A NaN or infinite parameter or pending gradient: vae_trainer_save fails
 * with VAE_ERR_NUMERIC and leaves the previous file as it was (no temporary
 * file either); vae_trainer_save_mem fails the same way without writing to
 * the buffer, while the size query still answers. Once the value is
 * finite again the same bytes are saved. */
static void test_save_refuses_non_finite(void **state)
{
    (void)state;
    run s = make_spec_run(BASE, 5);
    make_busy(&s, 2, "finite");
    const char *path = tmp_path("finite.ckpt");
    OK(vae_trainer_save(s.t, path));
    blob good = read_blob(path);
    blob mem = blob_of(s.t);
    assert_same_blob(&mem, &good, "save_mem and save");
    size_t n = 0, ng = 0;
    float *p = vae_model_params(s.m, &n), *g = vae_trainer_grads(s.t, &ng);
    const float bad[] = {NAN, INFINITY, -INFINITY};
    unsigned char *buf = tu_alloc(good.n, 1);
    for (int part = 0; part < 2; part++)
        for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
            float *where = part ? g + 3 : p + 7;
            const char *needle = part ? "pending gradient 3" : "parameter 7";
            const float keep = *where;
            *where = bad[k];
            EXPECT_ERR(vae_trainer_save(s.t, path), VAE_ERR_NUMERIC, "vae_trainer_save", needle);
            blob now = read_blob(path);
            assert_same_blob(&now, &good, "the file after a refused save");
            blob_free(&now);
            assert_int_equal(files_containing("finite.ckpt"), 1);
            size_t size = 0;
            OK(vae_trainer_save_mem(s.t, NULL, 0, &size));
            assert_int_equal(size, good.n);
            memset(buf, 0x5a, good.n);
            EXPECT_ERR(vae_trainer_save_mem(s.t, buf, good.n, &size), VAE_ERR_NUMERIC,
                       "vae_trainer_save_mem", needle);
            assert_int_equal(tu_first_byte_not(buf, good.n, 0x5a), good.n);
            *where = keep;
        }
    OK(vae_trainer_save(s.t, path));
    blob again = read_blob(path);
    assert_same_blob(&again, &good, "the file once the values are finite again");
    blob_free(&again);
    free(buf);
    blob_free(&mem);
    blob_free(&good);
    free_run(&s);
}

/* The reported issue: steps at the largest learning rate (and weight
 * decay) allowed with huge gradients. Each step either fails with
 * VAE_ERR_NUMERIC, changing nothing, or succeeds with finite parameters;
 * no NaN is ever left behind, so a save afterwards succeeds, and its
 * checkpoint loads as a model and restores into a new trainer. */
static void test_huge_steps_never_leave_nan(void **state)
{
    (void)state;
    const float mags[] = {1.0f, 1e10f, 1e19f, 1e30f, FLT_MAX};
    const double decays[] = {0.0, 1e6};
    const int kinds[] = {VAE_OPTIMIZER_ADAM, VAE_OPTIMIZER_SGD};
    for (size_t ki = 0; ki < 2; ki++)
        for (size_t di = 0; di < 2; di++)
            for (size_t mi = 0; mi < sizeof mags / sizeof *mags; mi++) {
                run s = make_spec_run(with_kind(SMALL, kinds[ki]), 5);
                OK(vae_optimizer_set_param(s.opt, VAE_OPT_LR, 1e6));
                OK(vae_optimizer_set_param(s.opt, VAE_OPT_WEIGHT_DECAY, decays[di]));
                if (kinds[ki] == VAE_OPTIMIZER_SGD)
                    OK(vae_optimizer_set_param(s.opt, VAE_OPT_MOMENTUM, 0.9));
                int failed = 0;
                for (int step = 0; step < 8; step++) {
                    size_t n = 0;
                    float *g = vae_trainer_grads(s.t, &n);
                    for (size_t i = 0; i < n; i++)
                        g[i] = (i + (size_t)step) % 3 ? mags[mi] : -mags[mi];
                    float *before = tu_copy_floats(vae_model_params(s.m, NULL), n);
                    const uint64_t steps = vae_trainer_steps(s.t);
                    int rc = vae_trainer_apply(s.t);
                    const float *p = vae_model_params(s.m, NULL);
                    if (rc == VAE_OK) {
                        assert_true(tu_all_finite(p, n));
                        assert_int_equal(vae_trainer_steps(s.t), steps + 1);
                        TU_ASSERT_ZERO_GRADS(s.t);
                    } else {
                        if (rc != VAE_ERR_NUMERIC)
                            fail_msg("kind %d, decay %g, gradient %g: vae_trainer_apply gave %d "
                                     "(%s)",
                                     kinds[ki], decays[di], (double)mags[mi], rc,
                                     vae_last_error());
                        assert_memory_equal(p, before, n * sizeof *p);
                        assert_int_equal(vae_trainer_steps(s.t), steps);
                        OK(vae_trainer_zero_grads(s.t));
                        failed++;
                    }
                    free(before);
                }
                /* The smallest case trains; the largest never does. */
                if (mi == 0 && di == 0)
                    assert_int_equal(failed, 0);
                if (mags[mi] == FLT_MAX)
                    assert_true(failed > 0);
                const char *path = tmp_path("huge.ckpt");
                OK(vae_trainer_save(s.t, path));
                vae_model *m = NULL;
                OK(vae_model_load(&m, path));
                run fresh = make_spec_run(with_kind(SMALL, kinds[ki]), 9);
                OK(vae_trainer_restore(fresh.t, path));
                blob a = blob_of(s.t), b = blob_of(fresh.t);
                assert_same_blob(&b, &a, "restored after huge steps");
                blob_free(&a);
                blob_free(&b);
                vae_model_free(m);
                free_run(&fresh);
                free_run(&s);
            }
}

/* ---- round trips ------------------------------------------------------------- */

/* A trainer's checkpoint restored into a trainer of another seed, other
 * settings, other parameters and other metadata makes it save the same
 * bytes; both then train on (the open epoch, then one more) to the same
 * parameters and losses, bit for bit. */
static void test_round_trip_into_fresh(void **state)
{
    (void)state;
    const int kinds[] = {VAE_OPTIMIZER_ADAM, VAE_OPTIMIZER_SGD};
    for (size_t ki = 0; ki < 2; ki++) {
        spec sp = with_kind(BASE, kinds[ki]);
        run a = make_spec_run(sp, 5), b = make_spec_run(sp, 6);
        set_settings(&a, 0);
        make_busy(&a, 3, "original");
        set_settings(&b, 1);
        OK(vae_trainer_set_meta(b.t, "other", "entry"));
        blob ck = blob_of(a.t);
        OK(vae_trainer_restore_mem(b.t, ck.p, ck.n));
        blob again = blob_of(b.t);
        assert_same_blob(&again, &ck, "the restored trainer's checkpoint");
        blob_free(&again);
        OK(vae_trainer_apply(a.t)); /* the pending gradient */
        OK(vae_trainer_apply(b.t));
        vae_train_options o = plain_options(BATCH, NULL);
        for (int e = 0; e < 2; e++) {
            vae_epoch_stats sa = tu_stats(), sb = tu_stats();
            OK(vae_trainer_train_epoch(a.t, a.ds, &o, &sa));
            OK(vae_trainer_train_epoch(b.t, b.ds, &o, &sb));
            assert_memory_equal(&sa.loss, &sb.loss, sizeof sa.loss);
            assert_memory_equal(&sa.kl, &sb.kl, sizeof sa.kl);
            assert_int_equal(sa.samples, sb.samples);
        }
        size_t n = 0;
        const float *pa = vae_model_params(a.m, &n), *pb = vae_model_params(b.m, NULL);
        assert_memory_equal(pa, pb, n * sizeof *pa);
        assert_int_equal(vae_trainer_steps(a.t), vae_trainer_steps(b.t));
        assert_int_equal(vae_trainer_epochs(a.t), 2);
        assert_int_equal(vae_trainer_epochs(b.t), 2);
        blob_free(&ck);
        free_run(&a);
        free_run(&b);
    }
}

/* A gradient added by vae_trainer_forward_backward and not yet applied is
 * saved (GRAD chunk, its exact bits) and restored: the apply that follows
 * gives the parameters of the uninterrupted run. Once applied there is no
 * GRAD chunk, and restoring that checkpoint clears a pending gradient. */
static void test_pending_gradient_survives(void **state)
{
    (void)state;
    run a = make_spec_run(BASE, 5), b = make_spec_run(BASE, 6);
    OK(vae_trainer_step(a.t, a.x, BATCH, NULL));
    OK(vae_trainer_forward_backward(a.t, a.x + BATCH * DIM, BATCH, NULL, NULL));
    size_t n = 0;
    const float *g = vae_trainer_grads(a.t, &n);
    assert_true(tu_first_nonzero(g, n) < n);
    blob ck = blob_of(a.t);
    size_t len = 0;
    const unsigned char *d = chunk_data(&ck, "GRAD", &len);
    assert_int_equal(len, 8 + 4 * n);
    assert_int_equal(tu_get_le64(d), n);
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &g[i], 4);
        assert_int_equal(tu_get_le32(d + 8 + 4 * i), bits);
    }
    OK(vae_trainer_restore_mem(b.t, ck.p, ck.n));
    assert_memory_equal(vae_trainer_grads(b.t, NULL), g, n * sizeof *g);
    OK(vae_trainer_apply(a.t));
    OK(vae_trainer_apply(b.t));
    assert_memory_equal(vae_model_params(b.m, NULL), vae_model_params(a.m, NULL),
                        n * sizeof(float));
    assert_int_equal(vae_trainer_steps(b.t), 2);
    blob after = blob_of(a.t);
    assert_true(chunk_find(&after, "GRAD") == SIZE_MAX);
    OK(vae_trainer_forward_backward(b.t, b.x, BATCH, NULL, NULL));
    OK(vae_trainer_restore_mem(b.t, after.p, after.n));
    TU_ASSERT_ZERO_GRADS(b.t);
    blob_free(&after);
    blob_free(&ck);
    free_run(&a);
    free_run(&b);
}

/* Every setting of the objective and the optimizer comes from the file,
 * whatever the target had: beta and the objective kind; Adam's lr, weight
 * decay, clip norm, betas and eps; SGD's momentum, dampening and Nesterov
 * (set and cleared). */
static void expect_settings_restored(run *src, run *tgt)
{
    blob ck = blob_of(src->t);
    OK(vae_trainer_restore_mem(tgt->t, ck.p, ck.n));
    for (int k = 1; k <= VAE_OPT_DAMPENING; k++) {
        double want = -7, got = -8;
        int rc_want = vae_optimizer_get_param(src->opt, k, &want);
        int rc_got = vae_optimizer_get_param(tgt->opt, k, &got);
        assert_int_equal(rc_got, rc_want);
        if (rc_want == VAE_OK && memcmp(&want, &got, sizeof want) != 0)
            fail_msg("optimizer setting %d: %.17g after the restore, %.17g in the file", k, got,
                     want);
    }
    for (int k = VAE_ELBO_BETA; k <= VAE_ELBO_FREE_BITS; k++) {
        double want = -7, got = -8;
        OK(vae_elbo_get_param(src->e, k, &want));
        OK(vae_elbo_get_param(tgt->e, k, &got));
        if (memcmp(&want, &got, sizeof want) != 0)
            fail_msg("objective setting %d: %.17g after the restore, %.17g in the file", k, got,
                     want);
    }
    blob_free(&ck);
}

static void test_restore_sets_settings(void **state)
{
    (void)state;
    run a = make_spec_run(BASE, 5), b = make_spec_run(BASE, 6);
    OK(vae_elbo_set_param(a.e, VAE_ELBO_BETA, 0.3));
    OK(vae_elbo_set_param(a.e, VAE_ELBO_OBJECTIVE, VAE_OBJECTIVE_AUTOENCODER));
    OK(vae_optimizer_set_param(a.opt, VAE_OPT_LR, 0.02));
    OK(vae_optimizer_set_param(a.opt, VAE_OPT_WEIGHT_DECAY, 0.01));
    OK(vae_optimizer_set_param(a.opt, VAE_OPT_CLIP_NORM, 2.5));
    OK(vae_optimizer_set_param(a.opt, VAE_OPT_BETA1, 0.8));
    OK(vae_optimizer_set_param(a.opt, VAE_OPT_BETA2, 0.95));
    OK(vae_optimizer_set_param(a.opt, VAE_OPT_EPS, 1e-6));
    expect_settings_restored(&a, &b);
    double v = 0;
    OK(vae_optimizer_get_param(b.opt, VAE_OPT_BETA2, &v));
    assert_true(v == (double)0.95f); /* not the default */
    OK(vae_elbo_get_param(b.e, VAE_ELBO_OBJECTIVE, &v));
    assert_true(v == VAE_OBJECTIVE_AUTOENCODER);
    /* The settings of 1.2 are written when they are not the defaults, and
     * a checkpoint without them restores the defaults. */
    OK(vae_elbo_set_param(a.e, VAE_ELBO_OBJECTIVE, VAE_OBJECTIVE_IWAE));
    OK(vae_elbo_set_param(a.e, VAE_ELBO_SAMPLES, 5));
    OK(vae_elbo_set_param(a.e, VAE_ELBO_WARMUP, 1000));
    OK(vae_elbo_set_param(a.e, VAE_ELBO_FREE_BITS, 0.25));
    blob ck = blob_of(a.t);
    assert_int_equal(tu_get_le32(chunk_data(&ck, "OBJV", NULL)), 5);
    blob_free(&ck);
    expect_settings_restored(&a, &b);
    OK(vae_elbo_get_param(b.e, VAE_ELBO_SAMPLES, &v));
    assert_true(v == 5.0);
    OK(vae_elbo_set_param(a.e, VAE_ELBO_SAMPLES, 1));
    OK(vae_elbo_set_param(a.e, VAE_ELBO_WARMUP, 0));
    OK(vae_elbo_set_param(a.e, VAE_ELBO_FREE_BITS, 0));
    ck = blob_of(a.t);
    assert_int_equal(tu_get_le32(chunk_data(&ck, "OBJV", NULL)), 2);
    blob_free(&ck);
    expect_settings_restored(&a, &b);
    OK(vae_elbo_get_param(b.e, VAE_ELBO_WARMUP, &v));
    assert_true(v == 0.0);
    free_run(&a);
    free_run(&b);

    spec sgd = with_kind(BASE, VAE_OPTIMIZER_SGD);
    a = make_spec_run(sgd, 5);
    b = make_spec_run(sgd, 6);
    OK(vae_optimizer_set_param(a.opt, VAE_OPT_LR, 0.04));
    OK(vae_optimizer_set_param(a.opt, VAE_OPT_WEIGHT_DECAY, 1e-4));
    OK(vae_optimizer_set_param(a.opt, VAE_OPT_CLIP_NORM, 1.5));
    OK(vae_optimizer_set_param(a.opt, VAE_OPT_MOMENTUM, 0.7));
    OK(vae_optimizer_set_param(a.opt, VAE_OPT_NESTEROV, 1));
    OK(vae_optimizer_set_param(b.opt, VAE_OPT_MOMENTUM, 0.2));
    OK(vae_optimizer_set_param(b.opt, VAE_OPT_DAMPENING, 0.3));
    expect_settings_restored(&a, &b);
    OK(vae_optimizer_get_param(b.opt, VAE_OPT_NESTEROV, &v));
    assert_true(v == 1.0);
    OK(vae_optimizer_get_param(b.opt, VAE_OPT_DAMPENING, &v));
    assert_true(v == 0.0);
    /* And back: Nesterov cleared, dampening set. */
    OK(vae_optimizer_set_param(a.opt, VAE_OPT_NESTEROV, 0));
    OK(vae_optimizer_set_param(a.opt, VAE_OPT_DAMPENING, 0.25));
    OK(vae_optimizer_set_param(a.opt, VAE_OPT_MOMENTUM, 0.6));
    expect_settings_restored(&a, &b);
    OK(vae_optimizer_get_param(b.opt, VAE_OPT_NESTEROV, &v));
    assert_true(v == 0.0);
    free_run(&a);
    free_run(&b);
}

/* A Gaussian model's sigma comes from the checkpoint. */
static void test_restore_sets_sigma(void **state)
{
    (void)state;
    spec g = BASE;
    g.lik = VAE_LIKELIHOOD_GAUSSIAN;
    run a = make_spec_run(g, 5), b = make_spec_run(g, 6);
    OK(vae_model_set_param(a.m, VAE_MODEL_GAUSSIAN_SIGMA, 0.37));
    OK(vae_model_set_param(b.m, VAE_MODEL_GAUSSIAN_SIGMA, 2.0));
    blob ck = blob_of(a.t);
    OK(vae_trainer_restore_mem(b.t, ck.p, ck.n));
    double sigma = 0;
    OK(vae_model_get_param(b.m, VAE_MODEL_GAUSSIAN_SIGMA, &sigma));
    assert_true(sigma == (double)0.37f);
    blob_free(&ck);
    free_run(&a);
    free_run(&b);
}

/* vae_model_load and vae_model_load_mem of a checkpoint give its model:
 * the same architecture, parameters and sigma, saving as the checkpoint's
 * ARCH and PARM chunks. */
static void test_model_load_of_checkpoint(void **state)
{
    (void)state;
    spec g = BASE;
    g.lik = VAE_LIKELIHOOD_GAUSSIAN;
    const spec specs[] = {BASE, g, with_kind(BASE, VAE_OPTIMIZER_SGD)};
    for (size_t i = 0; i < 3; i++) {
        run a = make_spec_run(specs[i], 5);
        if (i == 1)
            OK(vae_model_set_param(a.m, VAE_MODEL_GAUSSIAN_SIGMA, 0.37));
        make_busy(&a, 2, "model part");
        const char *path = tmp_path("model_part.ckpt");
        OK(vae_trainer_save(a.t, path));
        blob ck = blob_of(a.t), want = model_blob(a.m);
        vae_model *m[2] = {NULL, NULL};
        OK(vae_model_load(&m[0], path));
        OK(vae_model_load_mem(&m[1], ck.p, ck.n));
        for (int k = 0; k < 2; k++) {
            size_t n = 0, n1 = 0;
            const float *p = vae_model_params(a.m, &n), *q = vae_model_params(m[k], &n1);
            assert_int_equal(n1, n);
            assert_memory_equal(q, p, n * sizeof *p);
            assert_int_equal(vae_model_layer_count(m[k]), vae_model_layer_count(a.m));
            double s0 = 0, s1 = 0;
            OK(vae_model_get_param(a.m, VAE_MODEL_GAUSSIAN_SIGMA, &s0));
            OK(vae_model_get_param(m[k], VAE_MODEL_GAUSSIAN_SIGMA, &s1));
            assert_true(s0 == s1);
            blob got = model_blob(m[k]);
            assert_same_blob(&got, &want, "the model of the checkpoint, saved");
            blob_free(&got);
            vae_model_free(m[k]);
        }
        blob_free(&ck);
        blob_free(&want);
        free_run(&a);
    }
}

/* ---- metadata ---------------------------------------------------------------- */

/* The entries as "k=v,k=v", in order. */
static void meta_list(const vae_trainer *t, char *out, size_t cap)
{
    out[0] = '\0';
    for (size_t i = 0; i < vae_trainer_meta_count(t); i++) {
        const char *k = NULL, *v = NULL;
        OK(vae_trainer_meta_at(t, i, &k, &v));
        size_t at = strlen(out);
        snprintf(out + at, cap - at, "%s%s=%s", i ? "," : "", k, v);
    }
}

#define EXPECT_META(t, want)                                                              \
    do {                                                                                  \
        char got_[512];                                                                   \
        meta_list((t), got_, sizeof got_);                                                \
        if (strcmp(got_, (want)) != 0)                                                    \
            fail_msg("%s:%d: entries \"%s\", expected \"%s\"", __FILE__, __LINE__, got_,  \
                     (want));                                                             \
    } while (0)

/* Set, get, replace (in place), remove (the rest keep their order),
 * remove of a missing key; pointers stay valid while their entry is not
 * set or removed. */
static void test_meta_basics(void **state)
{
    (void)state;
    run s = make_spec_run(SMALL, 5);
    assert_int_equal(vae_trainer_meta_count(s.t), 0);
    const char *v = "stale";
    OK(vae_trainer_get_meta(s.t, "a", &v));
    assert_null(v);
    OK(vae_trainer_set_meta(s.t, "a", "1"));
    OK(vae_trainer_set_meta(s.t, "b", "2"));
    OK(vae_trainer_set_meta(s.t, "c", "3"));
    EXPECT_META(s.t, "a=1,b=2,c=3");
    const char *pa = NULL, *ka = NULL;
    OK(vae_trainer_get_meta(s.t, "a", &pa));
    OK(vae_trainer_meta_at(s.t, 0, &ka, NULL));
    assert_string_equal(pa, "1");
    OK(vae_trainer_set_meta(s.t, "b", "two"));
    EXPECT_META(s.t, "a=1,b=two,c=3");
    OK(vae_trainer_set_meta(s.t, "d", ""));
    EXPECT_META(s.t, "a=1,b=two,c=3,d=");
    OK(vae_trainer_set_meta(s.t, "b", NULL));
    EXPECT_META(s.t, "a=1,c=3,d=");
    OK(vae_trainer_set_meta(s.t, "zz", NULL)); /* missing: nothing to do */
    EXPECT_META(s.t, "a=1,c=3,d=");
    OK(vae_trainer_set_meta(s.t, "b", "again")); /* a new entry goes last */
    EXPECT_META(s.t, "a=1,c=3,d=,b=again");
    /* Entry "a" was never set or removed since: its pointers still read. */
    assert_string_equal(pa, "1");
    assert_string_equal(ka, "a");
    OK(vae_trainer_get_meta(s.t, "b", &v));
    assert_string_equal(v, "again");
    const char *k = NULL;
    OK(vae_trainer_meta_at(s.t, 3, &k, &v));
    assert_string_equal(k, "b");
    assert_string_equal(v, "again");
    OK(vae_trainer_meta_at(s.t, 3, NULL, NULL));
    EXPECT_ERR(vae_trainer_meta_at(s.t, 4, &k, &v), VAE_ERR_INVALID, "vae_trainer_meta_at",
               "index 4, the trainer has 4 entries");
    free_run(&s);
}

/* The bounds of keys and values, and of the number of entries; a refused
 * call changes no entry. */
static void test_meta_bounds(void **state)
{
    (void)state;
    run s = make_spec_run(SMALL, 5);
    OK(vae_trainer_set_meta(s.t, "first", "1"));
    char key[257];
    memset(key, 'k', 256);
    key[256] = '\0';
    EXPECT_ERR(vae_trainer_set_meta(s.t, key, "v"), VAE_ERR_INVALID, "vae_trainer_set_meta",
               "a key has 1 to 255 bytes");
    EXPECT_ERR(vae_trainer_set_meta(s.t, key, NULL), VAE_ERR_INVALID, "vae_trainer_set_meta",
               "a key has 1 to 255 bytes");
    EXPECT_ERR(vae_trainer_set_meta(s.t, "", "v"), VAE_ERR_INVALID, "vae_trainer_set_meta",
               "a key has 1 to 255 bytes");
    key[255] = '\0';
    OK(vae_trainer_set_meta(s.t, key, "255"));
    const char *bad_keys[] = {"tab\there", "nl\n", "\x01", "\x1f", "del\x7f", "\x7f"};
    for (size_t i = 0; i < sizeof bad_keys / sizeof *bad_keys; i++)
        EXPECT_ERR(vae_trainer_set_meta(s.t, bad_keys[i], "v"), VAE_ERR_INVALID,
                   "vae_trainer_set_meta", "a key has no control characters");
    OK(vae_trainer_set_meta(s.t, "cl\xc3\xa9 \xe2\x82\xac", "utf-8"));
    OK(vae_trainer_set_meta(s.t, "\x80\xff", "high bytes"));
    OK(vae_trainer_set_meta(s.t, " ~", "space and tilde"));
    char *value = tu_alloc(65537, 1);
    memset(value, 'v', 65536);
    EXPECT_ERR(vae_trainer_set_meta(s.t, "big", value), VAE_ERR_INVALID, "vae_trainer_set_meta",
               "a value has at most 65535 bytes");
    EXPECT_ERR(vae_trainer_set_meta(s.t, "first", value), VAE_ERR_INVALID,
               "vae_trainer_set_meta", "a value has at most 65535 bytes");
    value[65535] = '\0';
    OK(vae_trainer_set_meta(s.t, "big", value));
    const char *v = NULL;
    OK(vae_trainer_get_meta(s.t, "big", &v));
    assert_int_equal(strlen(v), 65535);
    OK(vae_trainer_get_meta(s.t, "first", &v));
    assert_string_equal(v, "1");
    assert_int_equal(vae_trainer_meta_count(s.t), 6);
    OK(vae_trainer_get_meta(s.t, "\x80\xff", &v));
    assert_string_equal(v, "high bytes");

    /* 1024 entries; the 1025th is refused, replacing and removing still work. */
    OK(vae_trainer_set_meta(s.t, "big", NULL));
    char k[16];
    for (size_t i = vae_trainer_meta_count(s.t); i < 1024; i++) {
        snprintf(k, sizeof k, "k%04zu", i);
        OK(vae_trainer_set_meta(s.t, k, k));
    }
    assert_int_equal(vae_trainer_meta_count(s.t), 1024);
    EXPECT_ERR(vae_trainer_set_meta(s.t, "one more", "x"), VAE_ERR_INVALID,
               "vae_trainer_set_meta", "already has 1024 entries");
    assert_int_equal(vae_trainer_meta_count(s.t), 1024);
    OK(vae_trainer_set_meta(s.t, "k0500", "replaced"));
    OK(vae_trainer_get_meta(s.t, "k0500", &v));
    assert_string_equal(v, "replaced");
    const char *at = NULL;
    OK(vae_trainer_meta_at(s.t, 500, &at, NULL));
    assert_string_equal(at, "k0500");
    /* A full set saves and restores, in order. */
    blob ck = blob_of(s.t);
    run b = make_spec_run(SMALL, 6);
    OK(vae_trainer_restore_mem(b.t, ck.p, ck.n));
    assert_int_equal(vae_trainer_meta_count(b.t), 1024);
    for (size_t i = 0; i < 1024; i++) {
        const char *k1 = NULL, *v1 = NULL, *k2 = NULL, *v2 = NULL;
        OK(vae_trainer_meta_at(s.t, i, &k1, &v1));
        OK(vae_trainer_meta_at(b.t, i, &k2, &v2));
        assert_string_equal(k2, k1);
        assert_string_equal(v2, v1);
    }
    OK(vae_trainer_set_meta(s.t, "first", NULL));
    OK(vae_trainer_set_meta(s.t, "one more", "x"));
    OK(vae_trainer_meta_at(s.t, 1023, &at, &v));
    assert_string_equal(at, "one more");
    blob_free(&ck);
    free(value);
    free_run(&b);
    free_run(&s);
}

/* NULL arguments; the count of a NULL trainer. */
static void test_meta_null_arguments(void **state)
{
    (void)state;
    run s = make_spec_run(SMALL, 5);
    const char *v = NULL, *k = NULL;
    EXPECT_ERR(vae_trainer_set_meta(NULL, "a", "b"), VAE_ERR_INVALID, "vae_trainer_set_meta",
               "trainer is NULL");
    EXPECT_ERR(vae_trainer_set_meta(s.t, NULL, "b"), VAE_ERR_INVALID, "vae_trainer_set_meta",
               "key is NULL");
    EXPECT_ERR(vae_trainer_get_meta(NULL, "a", &v), VAE_ERR_INVALID, "vae_trainer_get_meta",
               "trainer is NULL");
    EXPECT_ERR(vae_trainer_get_meta(s.t, NULL, &v), VAE_ERR_INVALID, "vae_trainer_get_meta",
               "key is NULL");
    EXPECT_ERR(vae_trainer_get_meta(s.t, "a", NULL), VAE_ERR_INVALID, "vae_trainer_get_meta",
               "value is NULL");
    EXPECT_ERR(vae_trainer_meta_at(NULL, 0, &k, &v), VAE_ERR_INVALID, "vae_trainer_meta_at",
               "trainer is NULL");
    EXPECT_ERR(vae_trainer_meta_at(s.t, 0, &k, &v), VAE_ERR_INVALID, "vae_trainer_meta_at",
               "index 0, the trainer has 0 entries");
    assert_int_equal(vae_trainer_meta_count(NULL), 0);
    assert_int_equal(vae_trainer_meta_count(s.t), 0);
    free_run(&s);
}

/* Entries travel with the checkpoint, and a restore replaces the target's
 * entries with the file's: the target's own disappear, also when the
 * checkpoint has none. */
static void test_meta_restore_replaces(void **state)
{
    (void)state;
    run a = make_spec_run(SMALL, 5), b = make_spec_run(SMALL, 6);
    OK(vae_trainer_set_meta(a.t, "cmd", "train --epochs 3"));
    OK(vae_trainer_set_meta(a.t, "empty", ""));
    OK(vae_trainer_set_meta(a.t, "sha", "0123abcd"));
    OK(vae_trainer_set_meta(b.t, "sha", "ffff"));
    OK(vae_trainer_set_meta(b.t, "own", "entry"));
    OK(vae_trainer_set_meta(b.t, "more", "entries"));
    const char *path = tmp_path("meta.ckpt");
    OK(vae_trainer_save(a.t, path));
    OK(vae_trainer_restore(b.t, path));
    EXPECT_META(b.t, "cmd=train --epochs 3,empty=,sha=0123abcd");
    const char *v = "stale";
    OK(vae_trainer_get_meta(b.t, "own", &v));
    assert_null(v);
    run c = make_spec_run(SMALL, 7); /* no entries */
    blob none = blob_of(c.t);
    assert_true(chunk_find(&none, "meta") == SIZE_MAX);
    OK(vae_trainer_restore_mem(b.t, none.p, none.n));
    assert_int_equal(vae_trainer_meta_count(b.t), 0);
    blob_free(&none);
    free_run(&c);
    free_run(&a);
    free_run(&b);
}

/* ---- open epochs ------------------------------------------------------------- */

/* The position: none open (0, 0), after a cancel (the samples of the
 * steps taken), after completion (0, 0). */
static void test_epoch_position(void **state)
{
    (void)state;
    run s = make_spec_run(BASE, 5);
    size_t done = 77, total = 77;
    OK(vae_trainer_epoch_position(s.t, &done, &total));
    assert_int_equal(done, 0);
    assert_int_equal(total, 0);
    OK(vae_trainer_epoch_position(s.t, NULL, NULL));
    stop_at st = {3, 0};
    vae_train_options o = plain_options(BATCH, &st);
    vae_epoch_stats es = tu_stats();
    assert_int_equal(vae_trainer_train_epoch(s.t, s.ds, &o, &es), VAE_ERR_CANCELLED);
    OK(vae_trainer_epoch_position(s.t, &done, &total));
    assert_int_equal(done, 3 * BATCH);
    assert_int_equal(total, COUNT);
    assert_int_equal(es.samples, 3 * BATCH);
    assert_int_equal(es.steps, 3);
    o.progress = NULL;
    es = tu_stats();
    OK(vae_trainer_train_epoch(s.t, s.ds, &o, &es));
    assert_int_equal(es.samples, COUNT);
    assert_int_equal(es.steps, STEPS);
    OK(vae_trainer_epoch_position(s.t, &done, &total));
    assert_int_equal(done, 0);
    assert_int_equal(total, 0);
    assert_int_equal(vae_trainer_epochs(s.t), 1);
    assert_int_equal(vae_trainer_steps(s.t), STEPS);
    free_run(&s);
}

/* Continued with another batch size, the open epoch covers exactly the
 * samples left: 3 batches of 32, then 154 in batches of 50 (4 steps). */
static void test_epoch_continue_other_batch(void **state)
{
    (void)state;
    run s = make_spec_run(BASE, 5);
    stop_at st = {3, 0};
    vae_train_options o = plain_options(BATCH, &st);
    assert_int_equal(vae_trainer_train_epoch(s.t, s.ds, &o, NULL), VAE_ERR_CANCELLED);
    o = plain_options(50, NULL);
    vae_epoch_stats es = tu_stats();
    OK(vae_trainer_train_epoch(s.t, s.ds, &o, &es));
    assert_int_equal(es.samples, COUNT);
    assert_int_equal(es.steps, 3 + 4);
    assert_int_equal(vae_trainer_steps(s.t), 3 + 4);
    assert_int_equal(vae_trainer_epochs(s.t), 1);
    free_run(&s);
}

/* vae_trainer_discard_epoch closes the open epoch: the next one starts
 * afresh over all samples, in a new order, so its parameters differ from
 * those of the continued epoch; a discard with none open changes nothing. */
static void test_epoch_discard(void **state)
{
    (void)state;
    run a = make_spec_run(BASE, 5), b = make_spec_run(BASE, 5);
    blob fresh = blob_of(b.t);
    OK(vae_trainer_discard_epoch(b.t));
    blob same = blob_of(b.t);
    assert_same_blob(&same, &fresh, "a discard with no open epoch");
    for (int k = 0; k < 2; k++) {
        run *s = k ? &b : &a;
        stop_at st = {3, 0};
        vae_train_options o = plain_options(BATCH, &st);
        assert_int_equal(vae_trainer_train_epoch(s->t, s->ds, &o, NULL), VAE_ERR_CANCELLED);
    }
    OK(vae_trainer_discard_epoch(b.t));
    size_t done = 1, total = 1;
    OK(vae_trainer_epoch_position(b.t, &done, &total));
    assert_int_equal(done, 0);
    assert_int_equal(total, 0);
    assert_int_equal(vae_trainer_steps(b.t), 3);
    assert_int_equal(vae_trainer_epochs(b.t), 0);
    vae_train_options o = plain_options(BATCH, NULL);
    vae_epoch_stats ea = tu_stats(), eb = tu_stats();
    OK(vae_trainer_train_epoch(a.t, a.ds, &o, &ea));
    OK(vae_trainer_train_epoch(b.t, b.ds, &o, &eb));
    assert_int_equal(ea.samples, COUNT);
    assert_int_equal(ea.steps, STEPS);
    assert_int_equal(eb.samples, COUNT);
    assert_int_equal(eb.steps, STEPS);
    assert_int_equal(vae_trainer_steps(a.t), STEPS);
    assert_int_equal(vae_trainer_steps(b.t), 3 + STEPS);
    assert_int_equal(vae_trainer_epochs(b.t), 1);
    size_t n = 0;
    const float *pa = vae_model_params(a.m, &n), *pb = vae_model_params(b.m, NULL);
    assert_true(memcmp(pa, pb, n * sizeof *pa) != 0);
    blob_free(&same);
    blob_free(&fresh);
    free_run(&a);
    free_run(&b);
}

/* An open epoch over 250 samples cannot continue on a dataset of 240:
 * VAE_ERR_SHAPE pointing to vae_trainer_discard_epoch, the trainer
 * untouched; after the discard the other dataset trains. */
static void test_epoch_other_count(void **state)
{
    (void)state;
    run s = make_spec_run(BASE, 5);
    make_busy(&s, 3, "other count");
    vae_dataset *ds = NULL;
    OK(vae_dataset_from_floats(&ds, s.x, COUNT - 10, DIM, NULL));
    vae_train_options o = plain_options(BATCH, NULL);
    snap before = take_snap(&s);
    vae_epoch_stats es = tu_stats();
    EXPECT_ERR(vae_trainer_train_epoch(s.t, ds, &o, &es), VAE_ERR_SHAPE,
               "vae_trainer_train_epoch", "vae_trainer_discard_epoch");
    check_snap(&s, &before, "an epoch on a dataset of another count");
    free_snap(&before);
    OK(vae_trainer_discard_epoch(s.t));
    OK(vae_trainer_zero_grads(s.t));
    es = tu_stats();
    OK(vae_trainer_train_epoch(s.t, ds, &o, &es));
    assert_int_equal(es.samples, COUNT - 10);
    vae_dataset_free(ds);
    free_run(&s);
}

/* From inside the progress callback: discard and restore fail with
 * VAE_ERR_STATE (the context is in use) and change nothing; save_mem works
 * and its checkpoint holds the position the callback was told. */
typedef struct inside {
    run *s;
    const blob *ck;
    size_t at_step, steps, done;
    int rc_discard, rc_restore;
    char msg_discard[256], msg_restore[256];
    blob saved;
} inside;

static int inside_cb(void *payload, size_t done, size_t total, double running)
{
    (void)total, (void)running;
    inside *p = payload;
    if (++p->steps != p->at_step)
        return 0;
    p->rc_discard = vae_trainer_discard_epoch(p->s->t);
    snprintf(p->msg_discard, sizeof p->msg_discard, "%s", vae_last_error());
    p->rc_restore = vae_trainer_restore_mem(p->s->t, p->ck->p, p->ck->n);
    snprintf(p->msg_restore, sizeof p->msg_restore, "%s", vae_last_error());
    p->saved = blob_of(p->s->t);
    p->done = done;
    return 0;
}

static void test_epoch_callback(void **state)
{
    (void)state;
    run s = make_spec_run(BASE, 5), other = make_spec_run(BASE, 6);
    blob ck = blob_of(other.t);
    inside p = {&s, &ck, 4, 0, 0, 0, 0, "", "", {NULL, 0}};
    vae_train_options o = plain_options(BATCH, NULL);
    o.progress = inside_cb;
    o.payload = &p;
    vae_epoch_stats es = tu_stats();
    OK(vae_trainer_train_epoch(s.t, s.ds, &o, &es));
    assert_int_equal(es.samples, COUNT); /* the epoch went on undisturbed */
    assert_int_equal(vae_trainer_epochs(s.t), 1);
    assert_int_equal(p.rc_discard, VAE_ERR_STATE);
    assert_non_null(strstr(p.msg_discard, "vae_trainer_discard_epoch"));
    assert_int_equal(p.rc_restore, VAE_ERR_STATE);
    assert_non_null(strstr(p.msg_restore, "vae_trainer_restore_mem"));
    assert_int_equal(p.done, 4 * BATCH);
    OK(vae_trainer_restore_mem(other.t, p.saved.p, p.saved.n));
    size_t done = 0, total = 0;
    OK(vae_trainer_epoch_position(other.t, &done, &total));
    assert_int_equal(done, p.done);
    assert_int_equal(total, COUNT);
    assert_int_equal(vae_trainer_steps(other.t), 4);
    /* The restored trainer finishes the epoch as the original did. */
    o = plain_options(BATCH, NULL);
    OK(vae_trainer_train_epoch(other.t, other.ds, &o, NULL));
    size_t n = 0;
    assert_memory_equal(vae_model_params(other.m, &n), vae_model_params(s.m, NULL),
                        vae_model_param_count(s.m) * sizeof(float));
    blob_free(&p.saved);
    blob_free(&ck);
    free_run(&s);
    free_run(&other);
}

/* An epoch whose last step has been taken but which has not closed yet --
 * seen from the progress callback after the last step, or left open when
 * that callback cancels there -- is saved with done == total. Such a
 * checkpoint restores (1.1.0 as first written refused it); the next epoch
 * call closes the epoch without a step, and training then goes on as from
 * the original. */
typedef struct last_step {
    run *s;
    int cancel;
    blob saved;
} last_step;

static int last_step_cb(void *payload, size_t done, size_t total, double running)
{
    (void)running;
    last_step *p = payload;
    if (done != total)
        return 0;
    if (p->cancel)
        return 1;
    p->saved = blob_of(p->s->t);
    return 0;
}

static void test_checkpoint_after_last_step(void **state)
{
    (void)state;
    for (int cancel = 0; cancel < 2; cancel++) {
        run s = make_spec_run(BASE, 5), r = make_spec_run(BASE, 6);
        last_step p = {&s, cancel, {NULL, 0}};
        vae_train_options o = plain_options(BATCH, NULL);
        o.progress = last_step_cb;
        o.payload = &p;
        int rc = vae_trainer_train_epoch(s.t, s.ds, &o, NULL);
        if (cancel) {
            assert_int_equal(rc, VAE_ERR_CANCELLED);
            size_t done = 0, total = 0;
            OK(vae_trainer_epoch_position(s.t, &done, &total));
            assert_int_equal(done, COUNT);
            assert_int_equal(total, COUNT);
            p.saved = blob_of(s.t);
        } else {
            OK(rc);
        }
        rc = vae_trainer_restore_mem(r.t, p.saved.p, p.saved.n);
        if (rc != VAE_OK)
            fail_msg("%s: the checkpoint taken after the last step of an epoch does not "
                     "restore: %s",
                     cancel ? "cancelled at the last step" : "saved from the callback",
                     vae_last_error());
        size_t done = 0, total = 0;
        OK(vae_trainer_epoch_position(r.t, &done, &total));
        assert_int_equal(done, COUNT);
        assert_int_equal(total, COUNT);
        assert_int_equal(vae_trainer_epochs(r.t), 0);
        /* Close the epoch on whichever trainer still has it open (without a
         * step), then both train one more epoch: the same parameters. */
        o = plain_options(BATCH, NULL);
        for (int k = 0; k < 2; k++) {
            run *t = k ? &r : &s;
            OK(vae_trainer_epoch_position(t->t, &done, NULL));
            if (done) {
                const uint64_t steps = vae_trainer_steps(t->t);
                vae_epoch_stats es = tu_stats();
                OK(vae_trainer_train_epoch(t->t, t->ds, &o, &es));
                assert_int_equal(es.samples, COUNT);
                assert_int_equal(es.steps, STEPS);
                assert_int_equal(vae_trainer_steps(t->t), steps);
            }
            assert_int_equal(vae_trainer_epochs(t->t), 1);
            OK(vae_trainer_train_epoch(t->t, t->ds, &o, NULL));
        }
        size_t n = 0;
        assert_memory_equal(vae_model_params(r.m, &n), vae_model_params(s.m, NULL),
                            vae_model_param_count(s.m) * sizeof(float));
        assert_int_equal(vae_trainer_steps(r.t), vae_trainer_steps(s.t));
        blob_free(&p.saved);
        free_run(&s);
        free_run(&r);
    }
}

/* ---- bad arguments ------------------------------------------------------------- */

/* Every new function refuses NULL and impossible arguments with its own
 * message, and leaves the trainer as it was. */
static void test_bad_arguments(void **state)
{
    (void)state;
    run s = make_spec_run(SMALL, 5);
    make_busy(&s, 2, "arguments");
    snap before = take_snap(&s);
    const blob *ck = &before.bytes;
    const char *path = tmp_path("args.ckpt");
    write_blob(path, ck);

    EXPECT_ERR(vae_trainer_save(NULL, path), VAE_ERR_INVALID, "vae_trainer_save",
               "trainer is NULL");
    EXPECT_ERR(vae_trainer_save(s.t, NULL), VAE_ERR_INVALID, "vae_trainer_save",
               "path is NULL");
    EXPECT_ERR(vae_trainer_save(s.t, ""), VAE_ERR_INVALID, "vae_trainer_save", "path is empty");
    EXPECT_ERR(vae_trainer_save(s.t, tmp_path("no/such/dir.ckpt")), VAE_ERR_IO,
               "vae_trainer_save", NULL);

    size_t size = 0;
    unsigned char *buf = tu_alloc(ck->n, 1);
    EXPECT_ERR(vae_trainer_save_mem(NULL, buf, ck->n, &size), VAE_ERR_INVALID,
               "vae_trainer_save_mem", "trainer is NULL");
    EXPECT_ERR(vae_trainer_save_mem(s.t, buf, ck->n, NULL), VAE_ERR_INVALID,
               "vae_trainer_save_mem", "size is NULL");
    EXPECT_ERR(vae_trainer_save_mem(s.t, NULL, 0, NULL), VAE_ERR_INVALID,
               "vae_trainer_save_mem", "size is NULL");
    const size_t caps[] = {0, 1, ck->n - 1};
    for (size_t i = 0; i < 3; i++) {
        memset(buf, 0xa5, ck->n);
        size = 0;
        EXPECT_ERR(vae_trainer_save_mem(s.t, buf, caps[i], &size), VAE_ERR_INVALID,
                   "vae_trainer_save_mem", "the buffer has");
        assert_int_equal(size, ck->n); /* the size needed, also when too small */
        assert_int_equal(tu_first_byte_not(buf, ck->n, 0xa5), ck->n);
    }

    EXPECT_ERR(vae_trainer_restore(NULL, path), VAE_ERR_INVALID, "vae_trainer_restore",
               "trainer is NULL");
    EXPECT_ERR(vae_trainer_restore(s.t, NULL), VAE_ERR_INVALID, "vae_trainer_restore",
               "path is NULL");
    EXPECT_ERR(vae_trainer_restore(s.t, ""), VAE_ERR_IO, "vae_trainer_restore", NULL);
    EXPECT_ERR(vae_trainer_restore(s.t, tmp_path("missing.ckpt")), VAE_ERR_IO,
               "vae_trainer_restore", "missing.ckpt");
    EXPECT_ERR(vae_trainer_restore(s.t, tmpdir), VAE_ERR_IO, "vae_trainer_restore",
               "not a regular file");
    EXPECT_ERR(vae_trainer_restore_mem(NULL, ck->p, ck->n), VAE_ERR_INVALID,
               "vae_trainer_restore_mem", "trainer is NULL");
    EXPECT_ERR(vae_trainer_restore_mem(s.t, NULL, ck->n), VAE_ERR_INVALID,
               "vae_trainer_restore_mem", "buf is NULL");
    EXPECT_ERR(vae_trainer_restore_mem(s.t, ck->p, 0), VAE_ERR_FORMAT, "vae_trainer_restore_mem",
               NULL);

    EXPECT_ERR(vae_trainer_epoch_position(NULL, &size, &size), VAE_ERR_INVALID,
               "vae_trainer_epoch_position", "trainer is NULL");
    EXPECT_ERR(vae_trainer_discard_epoch(NULL), VAE_ERR_INVALID, "vae_trainer_discard_epoch",
               "trainer is NULL");
    check_snap(&s, &before, "after the bad arguments");
    free(buf);
    free_snap(&before);
    free_run(&s);
}

/* A checkpoint above VAE_LIMIT_FILE_BYTES is refused with VAE_ERR_NOMEM
 * naming the limit, from memory and from a file; at the limit it restores.
 * (The limit is restored by the teardown.) */
static void test_file_limit(void **state)
{
    (void)state;
    run a = make_spec_run(SMALL, 5), b = make_spec_run(SMALL, 6);
    make_busy(&a, 2, "limit");
    blob ck = blob_of(a.t);
    const char *path = tmp_path("limit.ckpt");
    write_blob(path, &ck);
    snap before = take_snap(&b);
    OK(vae_set_limit(VAE_LIMIT_FILE_BYTES, ck.n - 1));
    EXPECT_ERR(vae_trainer_restore_mem(b.t, ck.p, ck.n), VAE_ERR_NOMEM,
               "vae_trainer_restore_mem", "VAE_LIMIT_FILE_BYTES");
    EXPECT_ERR(vae_trainer_restore(b.t, path), VAE_ERR_NOMEM, "vae_trainer_restore",
               "VAE_LIMIT_FILE_BYTES");
    check_snap(&b, &before, "a checkpoint above the file limit");
    OK(vae_set_limit(VAE_LIMIT_FILE_BYTES, ck.n));
    OK(vae_trainer_restore(b.t, path));
    OK(vae_set_limit(VAE_LIMIT_FILE_BYTES, saved_file_limit));
    free_snap(&before);
    blob_free(&ck);
    free_run(&a);
    free_run(&b);
}

int main(int argc, char **argv)
{
    OK(vae_blas_set_threads(1)); /* so that contexts may have 2 workers */
    if (argc > 1 && strcmp(argv[1], "child") == 0)
        return child_main(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_adam_1_worker),
        cmocka_unit_test(test_resume_adam_2_workers),
        cmocka_unit_test(test_resume_sgd_1_worker),
        cmocka_unit_test(test_resume_sgd_2_workers),
        cmocka_unit_test(test_resume_conv_2_workers),
        cmocka_unit_test(test_resume_iwae_warmup),
        cmocka_unit_test(test_refuse_other_architecture),
        cmocka_unit_test(test_refuse_model_files),
        cmocka_unit_test(test_crafted_optm),
        cmocka_unit_test(test_crafted_optm_sgd),
        cmocka_unit_test(test_crafted_objv_parm),
        cmocka_unit_test(test_crafted_sigma),
        cmocka_unit_test(test_crafted_trnr),
        cmocka_unit_test(test_crafted_epoc),
        cmocka_unit_test(test_crafted_grad),
        cmocka_unit_test(test_crafted_meta),
        cmocka_unit_test(test_crafted_chunks),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_every_byte_flipped),
        cmocka_unit_test(test_save_refuses_non_finite),
        cmocka_unit_test(test_huge_steps_never_leave_nan),
        cmocka_unit_test(test_round_trip_into_fresh),
        cmocka_unit_test(test_pending_gradient_survives),
        cmocka_unit_test(test_restore_sets_settings),
        cmocka_unit_test(test_restore_sets_sigma),
        cmocka_unit_test(test_model_load_of_checkpoint),
        cmocka_unit_test(test_meta_basics),
        cmocka_unit_test(test_meta_bounds),
        cmocka_unit_test(test_meta_null_arguments),
        cmocka_unit_test(test_meta_restore_replaces),
        cmocka_unit_test(test_epoch_position),
        cmocka_unit_test(test_epoch_continue_other_batch),
        cmocka_unit_test(test_epoch_discard),
        cmocka_unit_test(test_epoch_other_count),
        cmocka_unit_test(test_epoch_callback),
        cmocka_unit_test(test_checkpoint_after_last_step),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test_setup_teardown(test_file_limit, save_limit, restore_limit),
    };
    return cmocka_run_group_tests(tests, NULL, remove_tmpdir);
}
