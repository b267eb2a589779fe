/* A trainer's key/value metadata, saved with its checkpoints. */
#define _POSIX_C_SOURCE 200809L /* strnlen */

#include <string.h>

#include "../core/core.h"
#include "trainer.h"

void vae_meta_free(vae_meta_entry *meta, size_t n)
{
    for (size_t i = 0; i < n; i++)
        vae_free(meta[i].key);
    vae_free(meta);
}

const char *vae_meta_check(const char *key, size_t klen, const char *value, size_t vlen)
{
    if (klen == 0 || klen > VAE_META_MAX_KEY)
        return "a key has 1 to 255 bytes";
    for (size_t i = 0; i < klen; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x20 || c == 0x7f)
            return "a key has no control characters";
    }
    if (vlen > VAE_META_MAX_VALUE)
        return "a value has at most 65535 bytes";
    if (value && memchr(value, '\0', vlen))
        return "a value has no NUL byte";
    return NULL;
}

int vae_meta_make(vae_meta_entry *e, const char *key, size_t klen, const char *value,
                  size_t vlen)
{
    char *block = vae_malloc(klen + vlen + 2);
    if (!block)
        return 0;
    memcpy(block, key, klen);
    block[klen] = '\0';
    if (vlen)
        memcpy(block + klen + 1, value, vlen);
    block[klen + 1 + vlen] = '\0';
    e->key = block;
    e->value = block + klen + 1;
    return 1;
}

static size_t find(const vae_trainer *t, const char *key)
{
    size_t i = 0;
    while (i < t->n_meta && strcmp(t->meta[i].key, key) != 0)
        i++;
    return i;
}

int vae_trainer_set_meta(vae_trainer *t, const char *key, const char *value)
{
    const char *fn = "vae_trainer_set_meta";
    if (!t || !key)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, t ? "key" : "trainer");
    size_t klen = strnlen(key, VAE_META_MAX_KEY + 1);
    size_t vlen = value ? strnlen(value, VAE_META_MAX_VALUE + 1) : 0;
    const char *bad = vae_meta_check(key, klen, value, vlen);
    if (bad)
        return vae_fail(VAE_ERR_INVALID, "%s: %s", fn, bad);
    size_t i = find(t, key);
    if (!value) { /* remove, keeping the order of the rest */
        if (i < t->n_meta) {
            vae_free(t->meta[i].key);
            memmove(t->meta + i, t->meta + i + 1, (t->n_meta - i - 1) * sizeof *t->meta);
            t->n_meta--;
        }
        return VAE_OK;
    }
    if (i == t->n_meta && t->n_meta == VAE_META_MAX_ENTRIES)
        return vae_fail(VAE_ERR_INVALID, "%s: the trainer already has %d entries", fn,
                        VAE_META_MAX_ENTRIES);
    vae_meta_entry e;
    if (!vae_meta_make(&e, key, klen, value, vlen))
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
    if (i == t->n_meta) {
        /* Grown one entry at a time: at most 1024, set rarely. */
        vae_meta_entry *grown = vae_realloc(t->meta, (t->n_meta + 1) * sizeof *grown);
        if (!grown) {
            vae_free(e.key);
            return vae_fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
        }
        t->meta = grown;
        t->meta[t->n_meta++] = e;
    } else {
        vae_free(t->meta[i].key);
        t->meta[i] = e;
    }
    return VAE_OK;
}

int vae_trainer_get_meta(const vae_trainer *t, const char *key, const char **value)
{
    const char *fn = "vae_trainer_get_meta";
    if (!t || !key || !value)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn,
                        !t ? "trainer" : !key ? "key" : "value");
    size_t i = find(t, key);
    *value = i < t->n_meta ? t->meta[i].value : NULL;
    return VAE_OK;
}

size_t vae_trainer_meta_count(const vae_trainer *t)
{
    return t ? t->n_meta : 0;
}

int vae_trainer_meta_at(const vae_trainer *t, size_t i, const char **key, const char **value)
{
    const char *fn = "vae_trainer_meta_at";
    if (!t)
        return vae_fail(VAE_ERR_INVALID, "%s: trainer is NULL", fn);
    if (i >= t->n_meta)
        return vae_fail(VAE_ERR_INVALID, "%s: index %zu, the trainer has %zu entries", fn, i,
                        t->n_meta);
    if (key)
        *key = t->meta[i].key;
    if (value)
        *value = t->meta[i].value;
    return VAE_OK;
}
