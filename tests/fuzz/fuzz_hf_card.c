/* Fuzz target: the model card the Hub client writes from a checkpoint's cfg.json (hf_model_card),
 * and the repo card's merge into an existing README.md (hf_repo_card), fed the same bytes. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "hf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 20)) return 0;
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    char *card = NULL, err[1024] = "";
    int rc = hf_model_card(text, "org/name", &card, err, sizeof err);
    const char *ids[] = {"a", "b/c", "new"};
    char *merged = NULL, merr[1024] = "";
    int mrc = hf_repo_card(text, "org/name", ids, 3, "new", text, &merged, merr, sizeof merr);
    FUZZ_CHECK(mrc == 0, "repo card merge failed: %s", merr);
    if (merged) {
        const char *list = strstr(merged, "<!-- saefw:saes -->");
        FUZZ_CHECK(list && strstr(list, "- `new`") && strstr(list, "- `a`") && strstr(list, "<!-- /saefw:saes -->"),
                   "the merged card lost its list or an SAE");
        free(merged);
    }
    free(text);
    fuzz_note("%s", rc == 0 ? "card written" : err);
    if (rc != 0) {
        FUZZ_CHECK(card == NULL && err[0] != 0, "refused cfg.json without a message, or left a card");
        return 0;
    }
    FUZZ_CHECK(card != NULL && strncmp(card, "---\n", 4) == 0, "card without its front matter");
    free(card);
    return 0;
}
