/* Whole-file reads and atomic whole-file writes, shared by the model and
 * checkpoint files, and the opening of files that are read as a stream
 * (IDX datasets). Every failure sets the library's error with fn and the
 * path in the message. docs/format.md ("Writing", "Reading") describes the
 * behaviour seen from outside. */
#ifndef VAE_FILE_H
#define VAE_FILE_H

#include <stddef.h>
#include <stdio.h>

/* Reads the regular file at path into a new buffer (vae_malloc, free with
 * vae_free) of *size bytes. Anything but a regular file (a FIFO, a device,
 * a socket, a directory) is refused with VAE_ERR_IO without blocking and
 * without reading from it. A file above VAE_LIMIT_FILE_BYTES is refused
 * with VAE_ERR_NOMEM before it is read; a file whose size changes while it
 * is read gives VAE_ERR_IO. */
int vae_file_read_all(const char *path, const char *fn, unsigned char **buf, size_t *size);

/* Replaces the file at path with buf[0..size) atomically: readers see the
 * old file or the new one, never a part. Through a temporary file
 * `<target>.tmp-XXXXXX` beside the target, locked (flock) until it is
 * renamed over the target; temporary files of the same target left by
 * saves that died are removed first. A replaced file keeps its permission
 * bits (and, where allowed, its owner and group); a new one gets 0666 less
 * the umask. A symbolic link at path stays: the file it points to is
 * replaced; a dangling link is refused (VAE_ERR_IO). An existing target
 * that is not a regular file is refused (VAE_ERR_IO). */
int vae_file_write_atomic(const char *path, const void *buf, size_t size, const char *fn);

/* Opens the regular file at path for reading as a stream (`what` names it
 * in messages: "image" gives "image file <path>"). Anything else is
 * refused as in vae_file_read_all. *regular_size gets the size of the file
 * (-1 on failure). */
int vae_file_open_read(const char *path, const char *fn, const char *what, FILE **out,
                       long long *regular_size);

#endif
