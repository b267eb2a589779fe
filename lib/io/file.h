/* Whole-file reads and atomic whole-file writes, shared by the model and
 * checkpoint files, and the opening of files that are read as a stream
 * (IDX datasets). Every failure sets the library's error with fn and the
 * path in the message. */
#ifndef VAE_FILE_H
#define VAE_FILE_H

#include <stddef.h>
#include <stdio.h>

/* Reads the regular file at path into a new buffer (vae_malloc, free with
 * vae_free) of *size bytes. A file above VAE_LIMIT_FILE_BYTES is refused
 * with VAE_ERR_NOMEM before it is read. */
int vae_file_read_all(const char *path, const char *fn, unsigned char **buf, size_t *size);

/* Replaces the file at path with buf[0..size) atomically: readers see the
 * old file or the new one, never a part. */
int vae_file_write_atomic(const char *path, const void *buf, size_t size, const char *fn);

/* Opens path for reading as a stream. *regular_size gets the size of a
 * regular file, or -1 for anything else. */
int vae_file_open_read(const char *path, const char *fn, const char *what, FILE **out,
                       long long *regular_size);

#endif
