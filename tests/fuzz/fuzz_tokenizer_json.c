/* Fuzz target: a Hugging Face tokenizer.json (saefw_tokenizer_load_json: model, vocab, merges, added
 * tokens, normalizer, pre-tokenizer regexes, post-processor, decoder). Input: the tokenizer.json
 * text; when it holds a NUL byte, what follows the first one is a tokenizer_config.json. An accepted
 * tokenizer must keep its promises on a few texts and on the input's own bytes: every id lies in
 * [0, vocab_size), BOS and EOS are -1 or in range, decoding the ids works, and each id's bytes can be
 * asked for. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "tokenizer.h"

static const char *const TEXTS[] = {
    "Hello world, it's 2024!\n\n  indented\tcode();",
    "Gr\xC3\xBC\xC3\x9F"
    "e \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x99\x82 1234567 caf\xC3\xA9",
    "<|endoftext|>x<|BOS|><s></s><|begin_of_text|>",
    "\xFF\xC3 \xE2\x82 bad utf-8 \xED\xA0\x80",
    "",
};

static void check_encode(const saefw_tokenizer *t, saefw_tokenizer_scratch *s, const char *text, size_t len, int flags,
                         int64_t vocab) {
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    char err[1024] = "";
    if (saefw_tokenizer_encode(t, s, text, len, flags, &ids, &n, &cap, err, sizeof err) != 0) {
        fuzz_note("encode refused: %s", err);
        FUZZ_CHECK(err[0] != 0, "encode refused without a message");
        free(ids);
        return;
    }
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < vocab, "id %d outside [0, %lld)", ids[i], (long long)vocab);
    char *out = NULL;
    size_t olen = 0;
    if (saefw_tokenizer_decode(t, ids, n, &out, &olen, err, sizeof err) == 0) {
        FUZZ_CHECK(out && out[olen] == 0, "decode: no NUL at the reported length");
    } else {
        /* An id without a token (a hole in the vocabulary) may be refused, but with a message. */
        FUZZ_CHECK(err[0] != 0, "decode refused without a message");
    }
    free(out);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 20)) return 0;
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    size_t json_len = strlen(text);
    const char *config = json_len < size ? text + json_len + 1 : NULL;
    saefw_tokenizer *t = NULL;
    char err[1024] = "";
    int rc = saefw_tokenizer_load_json(text, json_len, config, "tokenizer.json", &t, err, sizeof err);
    fuzz_note("%s", rc == 0 ? "accepted" : err);
    if (rc != 0) {
        FUZZ_CHECK(err[0] != 0 && !strchr(err, '\n'), "refused without a one-line message: '%s'", err);
        FUZZ_CHECK(t == NULL, "refused but returned a tokenizer");
        free(text);
        return 0;
    }
    int64_t vocab = saefw_tokenizer_vocab_size(t), bos = saefw_tokenizer_bos(t), eos = saefw_tokenizer_eos(t);
    FUZZ_CHECK(vocab > 0 && vocab <= (1ll << 31), "vocab size %lld", (long long)vocab);
    FUZZ_CHECK(bos >= -1 && bos < vocab && eos >= -1 && eos < vocab, "bos %lld / eos %lld of %lld", (long long)bos,
               (long long)eos, (long long)vocab);
    volatile unsigned sink = 0;
    for (int64_t id = 0; id < vocab && id < 4096; id++) {
        size_t n = 0;
        const char *b = saefw_tokenizer_token_bytes(t, id, &n);
        for (size_t k = 0; b && k < n; k++) sink += (unsigned char)b[k]; /* every byte read under ASan */
    }
    (void)sink;
    saefw_tokenizer_scratch *s = saefw_tokenizer_scratch_new(t);
    for (size_t i = 0; i < sizeof TEXTS / sizeof *TEXTS; i++) {
        check_encode(t, s, TEXTS[i], strlen(TEXTS[i]), 0, vocab);
        check_encode(t, s, TEXTS[i], strlen(TEXTS[i]), SAEFW_TOK_SPECIAL | SAEFW_TOK_POSTPROCESS, vocab);
    }
    /* the input's own bytes as text: its token strings and regex pieces meet the encoder */
    check_encode(t, NULL, text, json_len < 4096 ? json_len : 4096, SAEFW_TOK_SPECIAL, vocab);
    saefw_tokenizer_scratch_free(s);
    saefw_tokenizer_free(t);
    free(text);
    return 0;
}
