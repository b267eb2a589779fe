/* Whole-file reads, atomic whole-file writes, stream opens (file.h).
 *
 * Reading: only regular files are opened for reading. A FIFO, a device, a
 * socket or a directory is refused with VAE_ERR_IO before anything is read
 * (a FIFO without a writer would otherwise block the open forever).
 *
 * Writing: the new content goes to a temporary file beside the target,
 * named `<target>.tmp-XXXXXX` (6 characters of [A-Za-z0-9]), which is
 * flushed and then renamed over the target. The saver holds flock(LOCK_EX)
 * on its temporary file from creation to rename; the kernel drops the lock
 * when the process dies. Each save first removes the temporary files of the
 * same target whose lock it can take (their writer is gone), so the files
 * of interrupted saves do not pile up. See docs/format.md, "Writing". */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* flock */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../core/core.h"
#include "file.h"

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

/* The suffix of a temporary file: ".tmp-" and 6 characters of ALNUM. */
#define TMP_TAG ".tmp-"
#define TMP_TAG_LEN 5
#define TMP_RAND_LEN 6
#define TMP_SUFFIX_LEN (TMP_TAG_LEN + TMP_RAND_LEN)
/* Names tried before a save gives up (each collision or lost race is one). */
#define TMP_TRIES 100

static const char ALNUM[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/* ---- common helpers ----------------------------------------------------------- */

/* What a file of mode m is, for "... is a FIFO, not a regular file". */
static const char *kind_of(mode_t m)
{
    if (S_ISDIR(m))
        return "a directory";
    if (S_ISFIFO(m))
        return "a FIFO";
    if (S_ISCHR(m))
        return "a character device";
    if (S_ISBLK(m))
        return "a block device";
    if (S_ISSOCK(m))
        return "a socket";
    if (S_ISLNK(m))
        return "a symbolic link";
    return "of an unknown type";
}

/* The status for a failed system call: an exhausted kernel is reported as
 * VAE_ERR_NOMEM, everything else as VAE_ERR_IO. */
static int io_status(int err)
{
    return err == ENOMEM ? VAE_ERR_NOMEM : VAE_ERR_IO;
}

static void close_keep_errno(int fd)
{
    int err = errno;
    (void)close(fd);
    errno = err;
}

/* ---- reading ------------------------------------------------------------------- */

/* Opens the regular file at path read-only into *fd, with its status in
 * *st; anything else is refused. `what` (may be NULL) names the file in
 * messages ("image file"). The open carries O_NONBLOCK, so a FIFO without a
 * writer cannot block it; the flag is cleared once the file is known to be
 * regular. A path that already names something else is refused before it
 * is opened, so opening a device has no side effect. */
static int open_regular(const char *path, const char *fn, const char *what, int *fd,
                        struct stat *st)
{
    /* "image file /x/y" or "/x/y" */
    const char *w = what ? what : "", *wf = what ? " file " : "";
    *fd = -1;
    if (stat(path, st) == 0 && !S_ISREG(st->st_mode))
        return vae_fail(VAE_ERR_IO, "%s: %s%s%s is %s, not a regular file", fn, w, wf, path,
                        kind_of(st->st_mode));
    int f;
    do
        f = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    while (f < 0 && errno == EINTR);
    if (f < 0) {
        int err = errno;
        return vae_fail(io_status(err), "%s: cannot open %s%s%s: %s", fn, w, wf, path,
                        strerror(err));
    }
    if (fstat(f, st) != 0) {
        int err = errno;
        close(f);
        return vae_fail(io_status(err), "%s: cannot read the status of %s: %s", fn, path,
                        strerror(err));
    }
    if (!S_ISREG(st->st_mode)) {
        close(f);
        return vae_fail(VAE_ERR_IO, "%s: %s%s%s is %s, not a regular file", fn, w, wf, path,
                        kind_of(st->st_mode));
    }
    int flags = fcntl(f, F_GETFL);
    if (flags < 0 || fcntl(f, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        int err = errno;
        close(f);
        return vae_fail(io_status(err), "%s: cannot set up reading %s: %s", fn, path,
                        strerror(err));
    }
    *fd = f;
    return VAE_OK;
}

/* read() until n bytes or the end of the file; *got is what was read.
 * -1 with errno on an error. */
static int read_full(int fd, unsigned char *p, size_t n, size_t *got)
{
    *got = 0;
    while (*got < n) {
        size_t want = n - *got;
        if (want > ((size_t)1 << 30))
            want = (size_t)1 << 30;
        ssize_t r = read(fd, p + *got, want);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        *got += (size_t)r;
    }
    return 0;
}

int vae_file_read_all(const char *path, const char *fn, unsigned char **out, size_t *out_size)
{
    *out = NULL;
    *out_size = 0;
    int fd;
    struct stat st;
    int rc = open_regular(path, fn, NULL, &fd, &st);
    if (rc)
        return rc;
    if ((uint64_t)st.st_size > vae_get_limit(VAE_LIMIT_FILE_BYTES)) {
        close(fd);
        return vae_fail(VAE_ERR_NOMEM, "%s: %s has %lld bytes, above the limit "
                                       "VAE_LIMIT_FILE_BYTES = %llu",
                        fn, path, (long long)st.st_size,
                        (unsigned long long)vae_get_limit(VAE_LIMIT_FILE_BYTES));
    }
    size_t size = (size_t)st.st_size;
    unsigned char *buf = vae_malloc(size ? size : 1);
    if (!buf) {
        close(fd);
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory for %zu bytes", fn, size);
    }
    size_t got = 0, extra = 0;
    unsigned char probe;
    /* One byte more than the size fstat gave tells a file that grew. */
    int bad = read_full(fd, buf, size, &got) != 0 || (got == size && read_full(fd, &probe, 1,
                                                                                 &extra) != 0);
    int err = errno;
    close(fd);
    if (bad) {
        rc = vae_fail(io_status(err), "%s: cannot read %s: %s", fn, path, strerror(err));
    } else if (got != size || extra) {
        rc = vae_fail(VAE_ERR_IO, "%s: %s changed while it was read (%s: %zu bytes announced, "
                                  "%s%zu read)",
                      fn, path, got != size ? "it shrank" : "it grew", size,
                      extra ? "more than " : "", got);
    }
    if (rc) {
        vae_free(buf);
        return rc;
    }
    *out = buf;
    *out_size = size;
    return VAE_OK;
}

int vae_file_open_read(const char *path, const char *fn, const char *what, FILE **out,
                       long long *regular_size)
{
    *out = NULL;
    *regular_size = -1;
    int fd;
    struct stat st;
    int rc = open_regular(path, fn, what, &fd, &st);
    if (rc)
        return rc;
    errno = 0;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int err = errno ? errno : ENOMEM;
        close(fd);
        return vae_fail(io_status(err), "%s: cannot open %s file %s: %s", fn, what, path,
                        strerror(err));
    }
    *regular_size = (long long)st.st_size;
    *out = f;
    return VAE_OK;
}

/* ---- writing ------------------------------------------------------------------- */

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        size_t want = n > ((size_t)1 << 30) ? (size_t)1 << 30 : n;
        ssize_t w = write(fd, p, want);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* 6 characters of ALNUM for a temporary name. They need to differ between
 * savers, not to be secret: the file is created with O_EXCL, and a name
 * that exists is retried with the next one. */
static void random_tag(char *p)
{
    static atomic_uint_fast64_t counter;
    struct timespec ts = {0, 0};
    (void)clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t z = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    z ^= (uint64_t)getpid() << 40;
    z += 0x9e3779b97f4a7c15ULL * (atomic_fetch_add(&counter, 1) + 1);
    z ^= (uint64_t)(uintptr_t)&ts; /* differs between threads (their stacks) */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL; /* splitmix64's finalizer */
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    for (int i = 0; i < TMP_RAND_LEN; i++) {
        p[i] = ALNUM[z % (sizeof ALNUM - 1)];
        z /= sizeof ALNUM - 1;
    }
}

/* 1 if name is base followed by ".tmp-" and exactly 6 characters of ALNUM. */
static int is_tmp_name(const char *name, const char *base, size_t blen)
{
    if (strncmp(name, base, blen) != 0 || strncmp(name + blen, TMP_TAG, TMP_TAG_LEN) != 0)
        return 0;
    const char *r = name + blen + TMP_TAG_LEN;
    for (int i = 0; i < TMP_RAND_LEN; i++)
        if (!r[i] || !strchr(ALNUM, r[i]))
            return 0;
    return r[TMP_RAND_LEN] == '\0';
}

/* Removes the temporary files that interrupted saves of `base` left in dir:
 * a file of a matching name, regular, owned by this user, whose lock can be
 * taken (a save in progress holds it). Best effort: every failure only
 * skips a file, and nothing else in the directory is touched. */
static void remove_stale_tmps(const char *dir, const char *base)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    int dfd = dirfd(d);
    size_t blen = strlen(base);
    uid_t me = geteuid();
    struct dirent *e;
    while (dfd >= 0 && (e = readdir(d))) {
        struct stat st, now;
        /* Checked before the open too, so that nothing else is opened. */
        if (!is_tmp_name(e->d_name, base, blen) ||
            fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
            st.st_uid != me)
            continue;
        int fd = openat(dfd, e->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == me &&
            flock(fd, LOCK_EX | LOCK_NB) == 0 &&
            fstatat(dfd, e->d_name, &now, AT_SYMLINK_NOFOLLOW) == 0 &&
            now.st_dev == st.st_dev && now.st_ino == st.st_ino)
            (void)unlinkat(dfd, e->d_name, 0);
        close(fd); /* releases the lock */
    }
    closedir(d);
}

/* Makes a rename inside dir durable: the new name is on disk once the
 * directory itself is flushed. Best effort: some file systems refuse fsync
 * on a directory, and the file is complete either way. */
static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

/* Creates a new temporary file `tmp` (its last 6 characters are replaced)
 * with the given mode and locks it. The name is checked once the lock is
 * held, since a cleaner may have taken the unlocked file away in between;
 * then another name is tried. *fd gets the file; -1 with errno else. */
static int create_locked(char *tmp, mode_t mode, int *fd)
{
    char *tag = tmp + strlen(tmp) - TMP_RAND_LEN;
    for (int tries = 0; tries < TMP_TRIES; tries++) {
        random_tag(tag);
        int f = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, mode);
        if (f < 0) {
            if (errno == EEXIST || errno == EINTR)
                continue;
            return -1;
        }
        int locked;
        do
            locked = flock(f, LOCK_EX) == 0;
        while (!locked && errno == EINTR);
        /* Without locks (a file system that has none), cleaners cannot lock
         * the file either and leave it alone: carry on unlocked. */
        struct stat mine, named;
        if (fstat(f, &mine) != 0) {
            close_keep_errno(f);
            (void)unlink(tmp);
            return -1;
        }
        if (lstat(tmp, &named) == 0 && named.st_dev == mine.st_dev &&
            named.st_ino == mine.st_ino) {
            *fd = f;
            return 0;
        }
        close(f); /* removed by a cleaner: the name is no longer ours */
    }
    errno = EEXIST;
    return -1;
}

int vae_file_write_atomic(const char *path, const void *buf, size_t size, const char *fn)
{
    const char *target = path;
    char *resolved = NULL;
    struct stat st;
    int exists = 0;

    /* A symbolic link: the file it points to is replaced, the link stays. */
    if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
        resolved = vae_malloc(PATH_MAX);
        if (!resolved)
            return vae_fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
        if (!realpath(path, resolved)) {
            int err = errno;
            int rc;
            if (err == ENOENT) {
                ssize_t n = readlink(path, resolved, PATH_MAX - 1);
                resolved[n > 0 ? n : 0] = '\0';
                rc = vae_fail(VAE_ERR_IO,
                              "%s: %s is a dangling symbolic link (to \"%s\", which does not "
                              "exist); nothing was written",
                              fn, path, resolved);
            } else {
                rc = vae_fail(io_status(err), "%s: cannot resolve the symbolic link %s: %s", fn,
                              path, strerror(err));
            }
            vae_free(resolved);
            return rc;
        }
        target = resolved;
    }
    if (stat(target, &st) == 0) {
        if (!S_ISREG(st.st_mode)) {
            int rc = vae_fail(VAE_ERR_IO, "%s: %s is %s, not a regular file; nothing was written",
                              fn, path, kind_of(st.st_mode));
            vae_free(resolved);
            return rc;
        }
        exists = 1;
    }

    /* One buffer: the temporary name, then the directory of the target. */
    size_t tlen = strlen(target);
    char *tmp = vae_malloc(2 * (tlen + TMP_SUFFIX_LEN + 1));
    if (!tmp) {
        vae_free(resolved);
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
    }
    char *dir = tmp + tlen + TMP_SUFFIX_LEN + 1;
    memcpy(tmp, target, tlen);
    memcpy(tmp + tlen, TMP_TAG "XXXXXX", TMP_SUFFIX_LEN + 1);
    const char *slash = strrchr(target, '/');
    const char *base = slash ? slash + 1 : target;
    if (!slash) {
        strcpy(dir, ".");
    } else if (slash == target) {
        strcpy(dir, "/");
    } else {
        memcpy(dir, target, (size_t)(slash - target));
        dir[slash - target] = '\0';
    }

    if (*base)
        remove_stale_tmps(dir, base);

    /* A new file gets 0666 less the umask (applied by the kernel); a
     * replaced one keeps its mode, and starts at 0600 until then. */
    int rc = VAE_OK, fd = -1;
    if (create_locked(tmp, exists ? 0600 : 0666, &fd) != 0) {
        int err = errno;
        rc = vae_fail(io_status(err), "%s: cannot create a temporary file beside %s: %s", fn,
                      path, strerror(err));
    } else {
        const char *failed = NULL; /* the step that failed */
        if (exists) {
            /* Owner and group, where allowed (changing the owner takes
             * privilege); before the mode, as fchown clears set-id bits. */
            (void)!fchown(fd, st.st_uid, st.st_gid);
            if (fchmod(fd, st.st_mode & 07777) != 0)
                failed = "cannot set the mode of the temporary file for";
        }
        if (!failed && write_all(fd, buf, size) != 0)
            failed = "cannot write";
        if (!failed && fsync(fd) != 0)
            failed = "cannot flush";
        if (!failed && rename(tmp, target) != 0)
            failed = "cannot rename the temporary file over";
        int err = errno;
        if (failed)
            (void)unlink(tmp); /* still ours: the lock keeps cleaners away */
        /* Closed only now, after the rename, so the lock covers the whole
         * save. The data is on disk (fsync), so an error of close changes
         * nothing: the file is in place. */
        close(fd);
        if (failed)
            rc = vae_fail(io_status(err), "%s: %s %s: %s", fn, failed, path, strerror(err));
        else
            sync_dir(dir);
    }
    vae_free(tmp);
    vae_free(resolved);
    return rc;
}
