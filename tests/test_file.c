/* Files as the library opens and replaces them, through the public API
 * (vae_model_save, vae_model_load, vae_dataset_load_idx):
 *
 * - loading refuses a FIFO, a device, a socket or a directory at once with
 *   VAE_ERR_IO (a FIFO without a writer would block an ordinary open);
 * - the temporary files `<target>.tmp-XXXXXX` of saves killed half-way are
 *   removed by the next save, while the one of a save in progress (locked)
 *   and every other name are left alone;
 * - a replaced file keeps its permission bits, owner and group; a new file
 *   gets 0666 less the umask;
 * - a save through a symbolic link replaces the file it points to and keeps
 *   the link; a dangling link is refused;
 * - concurrent saves to one path all succeed and leave one complete file.
 *
 * The parts that fork (killed saves, a lock held by another process) are
 * skipped when VAE_TEST_NO_FORK is set (under valgrind); a lock held by
 * another open file of this process stands in for the second process. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* flock */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "vae/vae.h"

#include "test_util.h"

#define EXPECT_ERR(call, expected, fn, needle) TU_EXPECT_ERR_MSG(call, expected, fn, needle)
#define OK(call) TU_OK(call)

/* ---- helpers ------------------------------------------------------------------- */

static char tmpdir[64];

static const char *tpath(const char *name)
{
    return tu_path_in(tmpdir, name);
}

static int setup(void **state)
{
    (void)state;
    return tu_make_tmpdir(tmpdir, sizeof tmpdir, "vae_test_file");
}

static int teardown(void **state)
{
    (void)state;
    return tu_remove_tree(tmpdir);
}

/* Under valgrind (tests/run.sh sets VAE_TEST_NO_FORK) a forked child is
 * reported with its parent's live blocks: the parts that fork are skipped.
 * `what` names a skipped part of a test, NULL the whole test. */
static int fork_skipped(const char *what)
{
    if (getenv("VAE_TEST_NO_FORK")) {
        print_message("skipped%s%s: VAE_TEST_NO_FORK is set (a memory checker runs this)\n",
                      what ? ": " : "", what ? what : "");
        return 1;
    }
    return 0;
}

/* A small Gaussian model: encoder 6 -5 tanh-, head 5 -> 2x3, decoder
 * 3 -4 relu- -6 identity-, weights from `seed`. */
static vae_model *small_model(uint64_t seed)
{
    vae_model *m = NULL;
    const size_t hidden[1] = {5};
    OK(vae_model_create_mlp(&m, 6, hidden, 1, 3, VAE_ACT_TANH, VAE_LIKELIHOOD_GAUSSIAN, seed));
    return m;
}

/* 784 -1000- 20: 1.6 M parameters, a file of 6.5 MB, whose save takes a
 * few milliseconds. */
static vae_model *big_model(void)
{
    vae_model *m = NULL;
    const size_t hidden[1] = {1000};
    OK(vae_model_create_mlp(&m, 784, hidden, 1, 20, VAE_ACT_RELU, VAE_LIKELIHOOD_BERNOULLI, 5));
    return m;
}

/* The file at path holds exactly what vae_model_save_mem gives for m, and
 * loads into a model that saves to the same bytes. */
static void expect_file_is(const char *path, const vae_model *m)
{
    size_t n = 0, fn = 0;
    unsigned char *want = tu_model_bytes(m, &n);
    unsigned char *got = tu_read_file(path, &fn);
    assert_int_equal(fn, n);
    assert_memory_equal(got, want, n);
    vae_model *back = NULL;
    OK(vae_model_load(&back, path));
    size_t bn = 0;
    unsigned char *again = tu_model_bytes(back, &bn);
    assert_int_equal(bn, n);
    assert_memory_equal(again, want, n);
    vae_model_free(back);
    free(again);
    free(got);
    free(want);
}

/* Entries of dir whose name starts with base ".tmp-". */
static int count_tmps(const char *dir, const char *base)
{
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%s.tmp-", base);
    size_t plen = strlen(prefix);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strncmp(e->d_name, prefix, plen) == 0;
    closedir(d);
    return n;
}

static void expect_listing(const char *dir, const char *want)
{
    char got[2048];
    tu_list_dir(dir, got, sizeof got);
    assert_string_equal(got, want);
}

/* A valid IDX image file: 2 images of 2 x 3 pixels. */
static void write_idx_images(const char *path)
{
    unsigned char b[16 + 12];
    b[0] = b[1] = 0;
    b[2] = 0x08;
    b[3] = 3;
    tu_put_be32(b + 4, 2);
    tu_put_be32(b + 8, 2);
    tu_put_be32(b + 12, 3);
    for (int i = 0; i < 12; i++)
        b[16 + i] = (unsigned char)(20 * i);
    tu_write_file(path, b, sizeof b);
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "test_file: a load blocked for 10 s (a FIFO was opened)\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(1);
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- loading: only regular files ------------------------------------------------ */

/* vae_model_load and vae_dataset_load_idx (as the image and as the label
 * file) on path: VAE_ERR_IO at once, naming the path and what it is. */
static void expect_not_regular(const char *path, const char *kind)
{
    size_t live = vae_allocations();
    char images[512];
    snprintf(images, sizeof images, "%s", tpath("ok-images.idx"));
    vae_model *m = (vae_model *)&m;
    EXPECT_ERR(vae_model_load(&m, path), VAE_ERR_IO, "vae_model_load", kind);
    assert_null(m);
    assert_non_null(strstr(vae_last_error(), path));
    assert_non_null(strstr(vae_last_error(), "not a regular file"));
    vae_dataset *ds = (vae_dataset *)&ds;
    EXPECT_ERR(vae_dataset_load_idx(&ds, path, NULL), VAE_ERR_IO, "vae_dataset_load_idx", kind);
    assert_null(ds);
    assert_non_null(strstr(vae_last_error(), path));
    assert_non_null(strstr(vae_last_error(), "image file"));
    ds = (vae_dataset *)&ds;
    EXPECT_ERR(vae_dataset_load_idx(&ds, images, path), VAE_ERR_IO, "vae_dataset_load_idx",
               kind);
    assert_null(ds);
    assert_non_null(strstr(vae_last_error(), "label file"));
    assert_int_equal(vae_allocations(), live);
}

static void test_load_refuses_non_regular(void **state)
{
    (void)state;
    size_t live = vae_allocations(); /* nonzero only after a failed test */
    void (*old)(int) = signal(SIGALRM, on_alarm);
    alarm(10); /* a regression blocks in open(): fail instead of hanging */
    write_idx_images(tpath("ok-images.idx"));
    vae_dataset *ds = NULL;
    OK(vae_dataset_load_idx(&ds, tpath("ok-images.idx"), NULL));
    assert_int_equal(vae_dataset_count(ds), 2);
    vae_dataset_free(ds);

    /* A FIFO without a writer: an ordinary open would wait for one. */
    assert_int_equal(mkfifo(tpath("fifo"), 0600), 0);
    expect_not_regular(tpath("fifo"), "is a FIFO, not a regular file");
    /* The same through a symbolic link. */
    assert_int_equal(symlink("fifo", tpath("fifo-link")), 0);
    expect_not_regular(tpath("fifo-link"), "is a FIFO");
    /* A FIFO with a writer that has written a whole model: refused too. */
    vae_model *small = small_model(1);
    size_t n = 0;
    unsigned char *bytes = tu_model_bytes(small, &n);
    int wfd = open(tpath("fifo"), O_RDWR | O_NONBLOCK); /* a writer (Linux: RDWR never blocks) */
    assert_true(wfd >= 0);
    assert_int_equal(write(wfd, bytes, n < 4096 ? n : 4096), (ssize_t)(n < 4096 ? n : 4096));
    expect_not_regular(tpath("fifo"), "is a FIFO");
    close(wfd);

    /* A directory, a character device, a socket. */
    assert_int_equal(mkdir(tpath("adir"), 0700), 0);
    expect_not_regular(tpath("adir"), "is a directory, not a regular file");
    expect_not_regular("/dev/null", "is a character device, not a regular file");
    int sfd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(sfd >= 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", tpath("sock"));
    assert_int_equal(bind(sfd, (struct sockaddr *)&sa, sizeof sa), 0);
    expect_not_regular(tpath("sock"), "is a socket, not a regular file");
    close(sfd);
    alarm(0);
    signal(SIGALRM, old);

    /* A missing file: VAE_ERR_IO with the reason. */
    vae_model *m = small;
    EXPECT_ERR(vae_model_load(&m, tpath("missing.vae")), VAE_ERR_IO, "vae_model_load",
               "No such file or directory");
    assert_null(m);
    ds = (vae_dataset *)&ds;
    EXPECT_ERR(vae_dataset_load_idx(&ds, tpath("missing.idx"), NULL), VAE_ERR_IO,
               "vae_dataset_load_idx", "missing.idx: No such file or directory");
    assert_null(ds);
    /* Unreadable (not for root, who reads anything). */
    tu_write_file(tpath("secret.vae"), bytes, n);
    if (geteuid() != 0) {
        assert_int_equal(chmod(tpath("secret.vae"), 0), 0);
        EXPECT_ERR(vae_model_load(&m, tpath("secret.vae")), VAE_ERR_IO, "vae_model_load",
                   "Permission denied");
        assert_int_equal(chmod(tpath("secret.vae"), 0600), 0);
    }
    /* A regular file above the limit: VAE_ERR_NOMEM naming the limit. */
    uint64_t limit = vae_get_limit(VAE_LIMIT_FILE_BYTES);
    OK(vae_set_limit(VAE_LIMIT_FILE_BYTES, n - 1));
    EXPECT_ERR(vae_model_load(&m, tpath("secret.vae")), VAE_ERR_NOMEM, "vae_model_load",
               "VAE_LIMIT_FILE_BYTES");
    assert_null(m);
    OK(vae_set_limit(VAE_LIMIT_FILE_BYTES, limit));
    /* And the regular file loads. */
    expect_file_is(tpath("secret.vae"), small);

    /* Saving onto something that is not a regular file is refused, and the
     * thing stays what it was, with no temporary file beside it. */
    EXPECT_ERR(vae_model_save(small, tpath("fifo")), VAE_ERR_IO, "vae_model_save",
               "is a FIFO, not a regular file");
    EXPECT_ERR(vae_model_save(small, tpath("adir")), VAE_ERR_IO, "vae_model_save",
               "is a directory, not a regular file");
    EXPECT_ERR(vae_model_save(small, tpath("sock")), VAE_ERR_IO, "vae_model_save", "socket");
    struct stat st;
    assert_int_equal(lstat(tpath("fifo"), &st), 0);
    assert_true(S_ISFIFO(st.st_mode));
    assert_int_equal(lstat(tpath("adir"), &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(lstat(tpath("sock"), &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    expect_listing(tmpdir, "adir fifo fifo-link ok-images.idx secret.vae sock");

    free(bytes);
    vae_model_free(small);
    assert_int_equal(unlink(tpath("fifo")), 0);
    assert_int_equal(unlink(tpath("fifo-link")), 0);
    assert_int_equal(unlink(tpath("sock")), 0);
    assert_int_equal(unlink(tpath("secret.vae")), 0);
    assert_int_equal(unlink(tpath("ok-images.idx")), 0);
    assert_int_equal(rmdir(tpath("adir")), 0);
    assert_int_equal(vae_allocations(), live);
}

/* Files whose size is not what fstat says: kernel files. /proc files are
 * regular with size 0 and have content (the file "grew"); sysfs files are
 * regular with size 4096 and shorter content (the file "shrank"). */
static void test_load_size_changed(void **state)
{
    (void)state;
    vae_model *m = (vae_model *)&m;
    if (access("/proc/self/status", R_OK) == 0) {
        EXPECT_ERR(vae_model_load(&m, "/proc/self/status"), VAE_ERR_IO, "vae_model_load",
                   "changed while it was read (it grew");
        assert_null(m);
    } else {
        print_message("skipped: no /proc/self/status\n");
    }
    static const char *const sys[] = {"/sys/kernel/profiling", "/sys/power/state",
                                      "/sys/kernel/mm/transparent_hugepage/enabled"};
    int done = 0;
    for (size_t i = 0; i < sizeof sys / sizeof sys[0] && !done; i++) {
        struct stat st;
        if (stat(sys[i], &st) != 0 || !S_ISREG(st.st_mode) || st.st_size != 4096 ||
            access(sys[i], R_OK) != 0)
            continue;
        m = (vae_model *)&m;
        EXPECT_ERR(vae_model_load(&m, sys[i]), VAE_ERR_IO, "vae_model_load",
                   "changed while it was read (it shrank: 4096 bytes announced");
        assert_null(m);
        done = 1;
    }
    if (!done)
        print_message("skipped: no readable sysfs file of 4096 bytes\n");
}

/* ---- temporary files of killed saves -------------------------------------------- */

/* Saves m to path over and over until killed. */
static void save_forever(const vae_model *m, const char *path)
{
    for (;;)
        if (vae_model_save(m, path) != VAE_OK)
            _exit(3);
}

static void expect_killed(pid_t pid)
{
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
        fail_msg("the saving child ended otherwise than by SIGKILL (status 0x%x): a save failed",
                 (unsigned)status);
}

static void test_killed_saves_leave_no_files(void **state)
{
    (void)state;
    if (fork_skipped(NULL))
        skip();
    assert_int_equal(mkdir(tpath("kill"), 0700), 0);
    char dir[256], path[512];
    snprintf(dir, sizeof dir, "%s", tpath("kill"));
    snprintf(path, sizeof path, "%s/model.vae", dir);
    vae_model *m = big_model();
    struct timespec t0, t1;
    assert_int_equal(clock_gettime(CLOCK_MONOTONIC, &t0), 0);
    OK(vae_model_save(m, path));
    assert_int_equal(clock_gettime(CLOCK_MONOTONIC, &t1), 0);
    /* Kills come after 0..20 ms, or 0..3 saves where a save takes longer
     * (an unoptimized or instrumented build), so that they fall inside
     * saves too. */
    long save_us = (t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000;
    long window_us = 3 * save_us > 20000 ? 3 * save_us : 20000;

    /* Each round: a child saves in a loop, killed after a random time. A
     * kill inside a save leaves that save's temporary file; the next save
     * (the next child's first) removes it, so at most one is ever there. At
     * least 30 rounds, more (up to 300) until 3 kills have hit a save. */
    tu_rng r = {2024};
    int rounds = 0, mid_save = 0, max_left = 0;
    while (rounds < 30 || (mid_save < 3 && rounds < 300)) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            save_forever(m, path);
        sleep_us((long)(tu_u64(&r) % (uint64_t)(window_us + 1)));
        assert_int_equal(kill(pid, SIGKILL), 0);
        expect_killed(pid);
        int left = count_tmps(dir, "model.vae");
        mid_save += left > 0;
        max_left = left > max_left ? left : max_left;
        rounds++;
    }
    print_message("one save %ld us; %d rounds, kills after 0..%ld us, %d inside a save (a "
                  "temporary file left), at most %d temporary file(s) at a time\n",
                  save_us, rounds, window_us, mid_save, max_left);
    assert_true(mid_save >= 3);
    assert_true(max_left <= 1);

    /* One save in this process: it removes what the last child left, and
     * the file is this model, byte for byte. */
    OK(vae_model_save(m, path));
    assert_int_equal(count_tmps(dir, "model.vae"), 0);
    expect_listing(dir, "model.vae");
    expect_file_is(path, m);
    vae_model_free(m);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

/* 1 if path exists and another open file holds a lock on it. */
static int is_locked(const char *path)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW);
    if (fd < 0)
        return 0;
    int locked = flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd);
    return locked;
}

/* The name of the (one) temporary file of base in dir, into out. */
static int find_tmp(const char *dir, const char *base, char *out, size_t cap)
{
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%s.tmp-", base);
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    int found = 0;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, prefix, strlen(prefix))) {
            snprintf(out, cap, "%s/%s", dir, e->d_name);
            found = 1;
        }
    closedir(d);
    return found;
}

/* A save held half-way (its process stopped while its temporary file is
 * locked): another save leaves that file alone; once the process is killed
 * the next save removes it. */
static void test_save_in_progress_kept(void **state)
{
    (void)state;
    if (fork_skipped(NULL))
        skip();
    assert_int_equal(mkdir(tpath("held"), 0700), 0);
    char dir[256], path[512], tmp[600];
    snprintf(dir, sizeof dir, "%s", tpath("held"));
    snprintf(path, sizeof path, "%s/model.vae", dir);
    vae_model *big = big_model(), *small = small_model(7);
    OK(vae_model_save(big, path));

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        save_forever(big, path);
    /* Stop the child at moments until it is stopped inside a save, with
     * its temporary file locked. */
    tu_rng r = {77};
    int held = 0, tries = 0;
    for (; tries < 5000 && !held; tries++) {
        sleep_us((long)(tu_u64(&r) % 3000));
        assert_int_equal(kill(pid, SIGSTOP), 0);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, WUNTRACED), pid);
        assert_true(WIFSTOPPED(status));
        held = find_tmp(dir, "model.vae", tmp, sizeof tmp) && is_locked(tmp);
        if (!held)
            assert_int_equal(kill(pid, SIGCONT), 0);
    }
    print_message("the child was stopped inside a save after %d tries\n", tries);
    assert_true(held);

    /* A save meanwhile: it succeeds and leaves the locked file alone. */
    OK(vae_model_save(small, path));
    expect_file_is(path, small);
    assert_int_equal(access(tmp, F_OK), 0);
    assert_int_equal(count_tmps(dir, "model.vae"), 1);

    /* The child dies: its file stays until the next save, which removes it. */
    assert_int_equal(kill(pid, SIGKILL), 0);
    expect_killed(pid);
    assert_int_equal(access(tmp, F_OK), 0);
    OK(vae_model_save(small, path));
    assert_int_equal(access(tmp, F_OK), -1);
    expect_listing(dir, "model.vae");
    expect_file_is(path, small);

    vae_model_free(big);
    vae_model_free(small);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

/* ---- which files a save removes ----------------------------------------------- */

static void make_file(const char *path, const char *text)
{
    tu_write_file(path, text, strlen(text));
}

static void test_cleanup_rule(void **state)
{
    (void)state;
    assert_int_equal(mkdir(tpath("clean"), 0700), 0);
    char dir[256], path[512];
    snprintf(dir, sizeof dir, "%s", tpath("clean"));
    snprintf(path, sizeof path, "%s/m.vae", dir);
    vae_model *m = small_model(3);

    /* Left by dead writers (no lock): removed. */
    make_file(tpath("clean/m.vae.tmp-BBBBBB"), "dead");
    make_file(tpath("clean/m.vae.tmp-a1Z9q0"), "dead");
    /* Locked by another open file of this process: a save in progress. */
    make_file(tpath("clean/m.vae.tmp-AAAAAA"), "live");
    int lfd = open(tpath("clean/m.vae.tmp-AAAAAA"), O_RDONLY);
    assert_true(lfd >= 0);
    assert_int_equal(flock(lfd, LOCK_EX), 0);
    /* Names that do not match exactly, and matching names that are not
     * regular files: never touched. */
    make_file(tpath("clean/m.vae.tmp-AAAAA"), "x");
    make_file(tpath("clean/m.vae.tmp-AAAAAAA"), "x");
    make_file(tpath("clean/m.vae.tmpx-AAAAAA"), "x");
    make_file(tpath("clean/m.vae.tmp-AAA_AA"), "x");
    make_file(tpath("clean/m.vae.tmp-AAA.AA"), "x");
    make_file(tpath("clean/m.vaetmp-AAAAAA"), "x");
    make_file(tpath("clean/other.tmp-AAAAAA"), "x");
    make_file(tpath("clean/xm.vae.tmp-AAAAAA"), "x");
    make_file(tpath("clean/target"), "the target of a link");
    assert_int_equal(symlink("target", tpath("clean/m.vae.tmp-CCCCCC")), 0);
    assert_int_equal(mkdir(tpath("clean/m.vae.tmp-DDDDDD"), 0700), 0);
    assert_int_equal(mkfifo(tpath("clean/m.vae.tmp-EEEEEE"), 0600), 0);
    /* Another user's file of a matching name (only root can make one). */
    int root = geteuid() == 0;
    if (root) {
        make_file(tpath("clean/m.vae.tmp-FFFFFF"), "theirs");
        assert_int_equal(chown(tpath("clean/m.vae.tmp-FFFFFF"), 12345, 12345), 0);
    }
    char want[1024];
    snprintf(want, sizeof want,
             "m.vae m.vae.tmp-AAA.AA m.vae.tmp-AAAAA m.vae.tmp-AAAAAA m.vae.tmp-AAAAAAA "
             "m.vae.tmp-AAA_AA m.vae.tmp-CCCCCC m.vae.tmp-DDDDDD m.vae.tmp-EEEEEE %s"
             "m.vae.tmpx-AAAAAA m.vaetmp-AAAAAA other.tmp-AAAAAA target xm.vae.tmp-AAAAAA",
             root ? "m.vae.tmp-FFFFFF " : "");

    OK(vae_model_save(m, path));
    expect_listing(dir, want);
    expect_file_is(path, m);
    /* The link's target and the locked file are intact. */
    size_t n = 0;
    unsigned char *t = tu_read_file(tpath("clean/target"), &n);
    assert_int_equal(n, strlen("the target of a link"));
    free(t);
    t = tu_read_file(tpath("clean/m.vae.tmp-AAAAAA"), &n);
    assert_int_equal(n, 4);
    assert_memory_equal(t, "live", 4);
    free(t);

    /* The lock released (the writer gone): the next save removes it. */
    close(lfd);
    OK(vae_model_save(m, path));
    snprintf(want, sizeof want,
             "m.vae m.vae.tmp-AAA.AA m.vae.tmp-AAAAA m.vae.tmp-AAAAAAA "
             "m.vae.tmp-AAA_AA m.vae.tmp-CCCCCC m.vae.tmp-DDDDDD m.vae.tmp-EEEEEE %s"
             "m.vae.tmpx-AAAAAA m.vaetmp-AAAAAA other.tmp-AAAAAA target xm.vae.tmp-AAAAAA",
             root ? "m.vae.tmp-FFFFFF " : "");
    expect_listing(dir, want);

    /* The same with the lock held by another process (a pipe handshake:
     * the child has the lock before the save starts, and keeps it until
     * the parent closes the other pipe). */
    if (!fork_skipped("the lock held by another process")) {
        make_file(tpath("clean/m.vae.tmp-GGGGGG"), "live");
        int ready[2], done[2];
        assert_int_equal(pipe(ready), 0);
        assert_int_equal(pipe(done), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(ready[0]);
            close(done[1]);
            int fd = open(tpath("clean/m.vae.tmp-GGGGGG"), O_RDONLY);
            if (fd < 0 || flock(fd, LOCK_EX) != 0)
                _exit(2);
            char c = 'L';
            if (write(ready[1], &c, 1) != 1)
                _exit(2);
            (void)!read(done[0], &c, 1); /* returns at EOF: the parent closed */
            _exit(0);
        }
        close(ready[1]);
        close(done[0]);
        char c = 0;
        assert_int_equal(read(ready[0], &c, 1), 1);
        assert_int_equal(c, 'L');
        OK(vae_model_save(m, path));
        assert_int_equal(access(tpath("clean/m.vae.tmp-GGGGGG"), F_OK), 0);
        close(done[1]);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        close(ready[0]);
        OK(vae_model_save(m, path));
        assert_int_equal(access(tpath("clean/m.vae.tmp-GGGGGG"), F_OK), -1);
        expect_listing(dir, want);
    }

    expect_file_is(path, m);
    vae_model_free(m);
    assert_int_equal(tu_remove_tree(dir), 0);
}

/* ---- permissions ---------------------------------------------------------------- */

static mode_t mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 07777;
}

static ino_t inode_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_ino;
}

static void test_permissions(void **state)
{
    (void)state;
    assert_int_equal(mkdir(tpath("perm"), 0700), 0);
    char path[512];
    snprintf(path, sizeof path, "%s", tpath("perm/m.vae"));
    vae_model *a = small_model(11), *b = small_model(12);

    /* New files: 0666 less the umask. */
    mode_t old = umask(022);
    OK(vae_model_save(a, path));
    assert_int_equal(mode_of(path), 0644);
    assert_int_equal(unlink(path), 0);
    umask(077);
    OK(vae_model_save(a, path));
    assert_int_equal(mode_of(path), 0600);
    assert_int_equal(unlink(path), 0);
    umask(002);
    OK(vae_model_save(a, path));
    assert_int_equal(mode_of(path), 0664);
    assert_int_equal(unlink(path), 0);
    umask(0);
    OK(vae_model_save(a, path));
    assert_int_equal(mode_of(path), 0666);
    assert_int_equal(unlink(path), 0);
    umask(027);
    OK(vae_model_save(a, path));
    assert_int_equal(mode_of(path), 0640);

    /* A replaced file keeps its mode, whatever the umask; it is a new file
     * (another inode), renamed into place. */
    umask(022);
    static const mode_t modes[] = {0640, 0600, 0664, 0444, 0755, 0604};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        assert_int_equal(chmod(path, modes[i]), 0);
        ino_t before = inode_of(path);
        OK(vae_model_save(i % 2 ? a : b, path));
        assert_int_equal(mode_of(path), modes[i]);
        assert_true(inode_of(path) != before);
        expect_file_is(path, i % 2 ? a : b);
    }
    umask(old);

    /* Owner and group: kept where the saver may set them (root may set any;
     * others keep their own uid and may keep a group they belong to). */
    struct stat st;
    if (geteuid() == 0) {
        assert_int_equal(chown(path, 12345, 23456), 0);
        assert_int_equal(chmod(path, 0640), 0);
        OK(vae_model_save(a, path));
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_uid, 12345);
        assert_int_equal(st.st_gid, 23456);
        assert_int_equal(st.st_mode & 07777, 0640);
    } else {
        gid_t groups[64];
        int ng = getgroups(64, groups);
        for (int i = 0; i < ng; i++)
            if (groups[i] != getegid() && chown(path, (uid_t)-1, groups[i]) == 0) {
                OK(vae_model_save(b, path));
                assert_int_equal(stat(path, &st), 0);
                assert_int_equal(st.st_gid, groups[i]);
                break;
            }
    }
    expect_listing(tpath("perm"), "m.vae");
    vae_model_free(a);
    vae_model_free(b);
    assert_int_equal(tu_remove_tree(tpath("perm")), 0);
}

/* ---- symbolic links -------------------------------------------------------------- */

static void expect_link(const char *link, const char *to)
{
    struct stat st;
    assert_int_equal(lstat(link, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    char buf[512];
    ssize_t n = readlink(link, buf, sizeof buf - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_string_equal(buf, to);
}

static void test_symlinks(void **state)
{
    (void)state;
    size_t live = vae_allocations();
    assert_int_equal(mkdir(tpath("real"), 0700), 0);
    assert_int_equal(mkdir(tpath("links"), 0700), 0);
    vae_model *a = small_model(21), *b = small_model(22);
    OK(vae_model_save(a, tpath("real/m.vae")));
    assert_int_equal(chmod(tpath("real/m.vae"), 0640), 0);

    /* A relative link in another directory, and a link to that link. */
    assert_int_equal(symlink("../real/m.vae", tpath("links/m.vae")), 0);
    assert_int_equal(symlink("m.vae", tpath("links/chain.vae")), 0);
    OK(vae_model_save(b, tpath("links/m.vae")));
    expect_link(tpath("links/m.vae"), "../real/m.vae");
    expect_file_is(tpath("real/m.vae"), b);
    assert_int_equal(mode_of(tpath("real/m.vae")), 0640);
    expect_listing(tpath("real"), "m.vae");
    expect_listing(tpath("links"), "chain.vae m.vae");

    /* Through the chain, with a stale temporary file beside the target:
     * the temporary files live beside the file the link points to. */
    make_file(tpath("real/m.vae.tmp-Stale1"), "dead");
    OK(vae_model_save(a, tpath("links/chain.vae")));
    expect_link(tpath("links/chain.vae"), "m.vae");
    expect_link(tpath("links/m.vae"), "../real/m.vae");
    expect_file_is(tpath("real/m.vae"), a);
    expect_file_is(tpath("links/chain.vae"), a);
    expect_listing(tpath("real"), "m.vae");
    expect_listing(tpath("links"), "chain.vae m.vae");

    /* An absolute link. */
    char abs[512];
    snprintf(abs, sizeof abs, "%s", tpath("real/m.vae"));
    assert_int_equal(symlink(abs, tpath("links/abs.vae")), 0);
    OK(vae_model_save(b, tpath("links/abs.vae")));
    expect_link(tpath("links/abs.vae"), abs);
    expect_file_is(tpath("real/m.vae"), b);

    /* A dangling link: refused, nothing created, the link unchanged. */
    assert_int_equal(symlink("../real/none.vae", tpath("links/dangling.vae")), 0);
    EXPECT_ERR(vae_model_save(a, tpath("links/dangling.vae")), VAE_ERR_IO, "vae_model_save",
               "is a dangling symbolic link");
    assert_non_null(strstr(vae_last_error(), "../real/none.vae"));
    assert_non_null(strstr(vae_last_error(), "links/dangling.vae"));
    expect_link(tpath("links/dangling.vae"), "../real/none.vae");
    expect_listing(tpath("real"), "m.vae");
    /* Into a directory that does not exist: dangling as well. */
    assert_int_equal(symlink("../nowhere/m.vae", tpath("links/nodir.vae")), 0);
    EXPECT_ERR(vae_model_save(a, tpath("links/nodir.vae")), VAE_ERR_IO, "vae_model_save",
               "dangling");
    /* A loop of links: refused with the reason. */
    assert_int_equal(symlink("loop2.vae", tpath("links/loop1.vae")), 0);
    assert_int_equal(symlink("loop1.vae", tpath("links/loop2.vae")), 0);
    EXPECT_ERR(vae_model_save(a, tpath("links/loop1.vae")), VAE_ERR_IO, "vae_model_save",
               "Too many levels of symbolic links");
    /* A link to a directory: refused as a directory. */
    assert_int_equal(symlink("../real", tpath("links/dir.vae")), 0);
    EXPECT_ERR(vae_model_save(a, tpath("links/dir.vae")), VAE_ERR_IO, "vae_model_save",
               "is a directory, not a regular file");
    expect_listing(tpath("real"), "m.vae");
    expect_listing(tpath("links"),
                   "abs.vae chain.vae dangling.vae dir.vae loop1.vae loop2.vae m.vae nodir.vae");
    expect_file_is(tpath("real/m.vae"), b);

    vae_model_free(a);
    vae_model_free(b);
    assert_int_equal(tu_remove_tree(tpath("links")), 0);
    assert_int_equal(tu_remove_tree(tpath("real")), 0);
    assert_int_equal(vae_allocations(), live);
}

/* ---- other failures of a save ------------------------------------------------------ */

static void test_save_failures(void **state)
{
    (void)state;
    assert_int_equal(mkdir(tpath("fail"), 0700), 0);
    vae_model *a = small_model(31), *b = small_model(32);

    EXPECT_ERR(vae_model_save(a, tpath("fail/no-such-dir/m.vae")), VAE_ERR_IO, "vae_model_save",
               "cannot create a temporary file beside");
    assert_non_null(strstr(vae_last_error(), "no-such-dir/m.vae: No such file or directory"));
    /* A path component that is a file. */
    make_file(tpath("fail/plain"), "x");
    EXPECT_ERR(vae_model_save(a, tpath("fail/plain/m.vae")), VAE_ERR_IO, "vae_model_save",
               "Not a directory");
    assert_int_equal(unlink(tpath("fail/plain")), 0);

    /* A directory this user cannot write to (root can write anywhere): the
     * old file stays, nothing is added. */
    OK(vae_model_save(a, tpath("fail/m.vae")));
    if (geteuid() != 0) {
        assert_int_equal(chmod(tpath("fail"), 0500), 0);
        EXPECT_ERR(vae_model_save(b, tpath("fail/m.vae")), VAE_ERR_IO, "vae_model_save",
                   "Permission denied");
        assert_int_equal(chmod(tpath("fail"), 0700), 0);
    }
    expect_listing(tpath("fail"), "m.vae");
    expect_file_is(tpath("fail/m.vae"), a);

    /* A relative path without a directory part (the current directory). */
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(tpath("fail")), 0);
    make_file("m.vae.tmp-Zz0123", "dead");
    OK(vae_model_save(b, "m.vae"));
    assert_int_equal(chdir(cwd), 0);
    expect_listing(tpath("fail"), "m.vae");
    expect_file_is(tpath("fail/m.vae"), b);

    vae_model_free(a);
    vae_model_free(b);
    assert_int_equal(tu_remove_tree(tpath("fail")), 0);
}

/* ---- concurrent saves -------------------------------------------------------------- */

typedef struct saver {
    const vae_model *m;
    const char *path;
    int failures;
    char msg[256];
} saver;

static void *save_many(void *arg)
{
    saver *s = arg;
    for (int i = 0; i < 40; i++)
        if (vae_model_save(s->m, s->path) != VAE_OK && !s->failures++)
            snprintf(s->msg, sizeof s->msg, "%s", vae_last_error());
    return NULL;
}

/* Threads of one process saving to one path: each save succeeds (none
 * removes another's temporary file), and one complete file remains. */
static void test_concurrent_saves(void **state)
{
    (void)state;
    assert_int_equal(mkdir(tpath("conc"), 0700), 0);
    char path[512];
    snprintf(path, sizeof path, "%s", tpath("conc/m.vae"));
    vae_model *m[3] = {small_model(41), small_model(42), small_model(43)};
    saver s[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        s[i] = (saver){m[i], path, 0, ""};
        assert_int_equal(pthread_create(&t[i], NULL, save_many, &s[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        if (s[i].failures)
            fail_msg("thread %d: %d saves failed, first: %s", i, s[i].failures, s[i].msg);
    }
    expect_listing(tpath("conc"), "m.vae");
    size_t n = 0, fn = 0;
    unsigned char *got = tu_read_file(path, &fn);
    int same = 0;
    for (int i = 0; i < 3; i++) {
        unsigned char *want = tu_model_bytes(m[i], &n);
        same += n == fn && memcmp(want, got, n) == 0;
        free(want);
        vae_model_free(m[i]);
    }
    assert_int_equal(same, 1);
    free(got);
    assert_int_equal(tu_remove_tree(tpath("conc")), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_refuses_non_regular),
        cmocka_unit_test(test_load_size_changed),
        cmocka_unit_test(test_killed_saves_leave_no_files),
        cmocka_unit_test(test_save_in_progress_kept),
        cmocka_unit_test(test_cleanup_rule),
        cmocka_unit_test(test_permissions),
        cmocka_unit_test(test_symlinks),
        cmocka_unit_test(test_save_failures),
        cmocka_unit_test(test_concurrent_saves),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
