/* Checkpoints: bit-exact resume in a new process (1 and 2 workers, Adam and
 * SGD with momentum, at an epoch boundary, after a cancelled step and from a
 * save inside the progress callback), the model part read by
 * vae_model_load, refusals that leave the trainer untouched (architecture,
 * optimizer kind, damaged and crafted files), non-finite values never
 * saved, chunks a reader does not know, and bad arguments.
 *
 * The resume tests run this program again as a child process (argv[1] is
 * "child"), so that nothing but the checkpoint file carries state over. */
#define _POSIX_C_SOURCE 200809L

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
    } else if (conv) {
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
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vae_ckpt_XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
}

static char *tmp_path(const char *name)
{
    static char buf[4][160];
    static int at;
    make_tmpdir();
    char *p = buf[at++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", tmpdir, name);
    return p;
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
