/* Byte-level BPE tokenizers read from a Hugging Face tokenizer.json (GPT-2, GPT-NeoX, Llama 3,
 * cl100k-style): added/special tokens, NFC, the pre-tokenizer's regexes (PCRE2 with JIT), BPE merges
 * by rank, and the post-processor's BOS rule. Text in and out is UTF-8. */
#ifndef SAEFW_TOKENIZER_H
#define SAEFW_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct saefw_tokenizer saefw_tokenizer;
/* Per-thread scratch of an encoder: regex match data, buffers and a cache from pre-token to ids.
 * A tokenizer is read-only after loading, so threads encode at once, each with its own scratch. */
typedef struct saefw_tokenizer_scratch saefw_tokenizer_scratch;

/* Flags of saefw_tokenizer_encode. */
enum {
    /* Special added tokens written literally in the text ("<|endoftext|>") become their ids; without
     * this flag they are ordinary text. Non-special added tokens are always matched. */
    SAEFW_TOK_SPECIAL = 1,
    /* Apply the post-processor: prepend the BOS id when the tokenizer's post-processor adds one
     * (saefw_tokenizer_add_bos). */
    SAEFW_TOK_POSTPROCESS = 2,
};

/* Load `path`: a tokenizer.json file, or a folder holding one (a tokenizer_config.json beside it
 * gives the bos_token/eos_token conventions). Only byte-level BPE is supported: another model type,
 * pre-tokenizer, normalizer, decoder or post-processor is a one-line error naming the file and the
 * type. The caller frees the result with saefw_tokenizer_free. */
int saefw_tokenizer_load(const char *path, saefw_tokenizer **out, char *err, size_t errlen);
/* The same from tokenizer.json text in memory; `name` is used in error messages. config_json (may be
 * NULL) is the text of a tokenizer_config.json. */
int saefw_tokenizer_load_json(const char *json, size_t len, const char *config_json, const char *name,
                              saefw_tokenizer **out, char *err, size_t errlen);
void saefw_tokenizer_free(saefw_tokenizer *t);

/* Resolve a tokenizer name into a path for saefw_tokenizer_load: an existing file or folder; the
 * bundled model's name "tiny-1l"; a known model (gelu-1l .. gelu-4l: the Hub repo
 * NeelNanda/gpt-neox-tokenizer-digits); a Hub repo id ORG/NAME, found in the huggingface_hub cache.
 * When the file is absent the error says where it was looked for and the `saefw download` command
 * that fetches it. */
int saefw_tokenizer_resolve(const char *name, char *path, size_t n, char *err, size_t errlen);

/* One past the largest id (model vocab and added tokens). */
int64_t saefw_tokenizer_vocab_size(const saefw_tokenizer *t);
/* The BOS id: from the post-processor's template when it adds one, else the tokenizer_config.json's
 * bos_token, else a known name among the added tokens (<|endoftext|>, <|begin_of_text|>, <s>, ...);
 * -1 if none. */
int64_t saefw_tokenizer_bos(const saefw_tokenizer *t);
/* The EOS id by the same conventions (eos_token, <|endoftext|>, <|end_of_text|>, </s>); -1 if none. */
int64_t saefw_tokenizer_eos(const saefw_tokenizer *t);
/* 1 when the post-processor prepends BOS to every encoded text (Llama 3's TemplateProcessing). */
int saefw_tokenizer_add_bos(const saefw_tokenizer *t);

/* A fresh scratch for one thread; NULL when out of memory. Free with saefw_tokenizer_scratch_free. */
saefw_tokenizer_scratch *saefw_tokenizer_scratch_new(const saefw_tokenizer *t);
void saefw_tokenizer_scratch_free(saefw_tokenizer_scratch *s);

/* Encode `len` bytes of UTF-8 text and append the ids to *ids (n used, cap allocated; the array is
 * grown with realloc and owned by the caller; *ids may start NULL with n = cap = 0). Invalid UTF-8
 * is read as U+FFFD per maximal invalid subsequence (as a UTF-8 decoder with replacement does).
 * `s` is the calling thread's scratch (NULL: a temporary one without a word cache, slower). A text
 * is at most 1 GiB; split longer ones at line starts. */
int saefw_tokenizer_encode(const saefw_tokenizer *t, saefw_tokenizer_scratch *s, const char *text, size_t len,
                           int flags, int32_t **ids, size_t *n, size_t *cap, char *err, size_t errlen);

/* The text of n ids as a malloc'd NUL-terminated UTF-8 string (*len excludes the NUL). The tokens'
 * bytes are joined and, as Hugging Face's ByteLevel decoder does, a byte sequence that is not valid
 * UTF-8 becomes U+FFFD per maximal invalid subsequence. An id outside the vocabulary is an error. */
int saefw_tokenizer_decode(const saefw_tokenizer *t, const int32_t *ids, size_t n, char **out, size_t *len, char *err,
                           size_t errlen);

/* The raw bytes of one token after byte-level decoding (an added token: its content), not
 * NUL-terminated and owned by the tokenizer; NULL for an id that has no token. */
const char *saefw_tokenizer_token_bytes(const saefw_tokenizer *t, int64_t id, size_t *len);

#endif
