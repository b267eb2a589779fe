/* Whole-file reads, atomic whole-file writes, stream opens (file.h). */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/core.h"
#include "file.h"

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Makes a rename inside the directory of `path` durable: the new name is
 * on disk once the directory itself is flushed. Best effort: some file
 * systems refuse fsync on a directory, and the file is complete either way.
 * `path` is scratch space (the temporary name, no longer in use). */
static void sync_parent(char *path)
{
    char *slash = strrchr(path, '/');
    const char *dir = ".";
    if (slash == path)
        dir = "/";
    else if (slash) {
        *slash = '\0';
        dir = path;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

int vae_file_write_atomic(const char *path, const void *buf, size_t size, const char *fn)
{
    size_t plen = strlen(path);
    char *tmp = vae_malloc(plen + 8);
    if (!tmp)
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
    /* Temporary file beside the target, so the rename stays in one file
     * system and readers see either the old file or the complete new one. */
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".XXXXXX", 8);
    int rc = VAE_OK, fd = mkstemp(tmp);
    if (fd < 0) {
        rc = vae_fail(VAE_ERR_IO, "%s: cannot create a temporary file beside %s: %s", fn, path,
                      strerror(errno));
    } else {
        int bad = write_all(fd, buf, size) || fsync(fd) != 0;
        int err = errno;
        bad = close(fd) != 0 || bad;
        if (!bad && chmod(tmp, 0644) != 0) /* mkstemp makes 0600 */
            bad = 1, err = errno;
        if (!bad && rename(tmp, path) != 0)
            bad = 1, err = errno;
        if (bad) {
            unlink(tmp);
            rc = vae_fail(VAE_ERR_IO, "%s: cannot write %s: %s", fn, path, strerror(err));
        } else {
            sync_parent(tmp);
        }
    }
    vae_free(tmp);
    return rc;
}

int vae_file_read_all(const char *path, const char *fn, unsigned char **out, size_t *out_size)
{
    *out = NULL;
    *out_size = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return vae_fail(VAE_ERR_IO, "%s: cannot open %s: %s", fn, path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return vae_fail(VAE_ERR_IO, "%s: %s is not a regular file", fn, path);
    }
    if ((uint64_t)st.st_size > vae_get_limit(VAE_LIMIT_FILE_BYTES)) {
        fclose(f);
        return vae_fail(VAE_ERR_NOMEM, "%s: %s has %lld bytes, above the limit "
                                       "VAE_LIMIT_FILE_BYTES = %llu",
                        fn, path, (long long)st.st_size,
                        (unsigned long long)vae_get_limit(VAE_LIMIT_FILE_BYTES));
    }
    size_t size = (size_t)st.st_size;
    unsigned char *buf = vae_malloc(size ? size : 1);
    if (!buf) {
        fclose(f);
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory for %zu bytes", fn, size);
    }
    size_t got = fread(buf, 1, size, f);
    int err = ferror(f);
    fclose(f);
    if (err || got != size) {
        vae_free(buf);
        return vae_fail(VAE_ERR_IO, "%s: cannot read %s", fn, path);
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
    errno = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int err = errno;
        return vae_fail(err == ENOMEM ? VAE_ERR_NOMEM : VAE_ERR_IO, "%s: cannot open %s file %s: %s",
                        fn, what, path, err ? strerror(err) : "unknown error");
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode))
        *regular_size = (long long)st.st_size;
    *out = f;
    return VAE_OK;
}
