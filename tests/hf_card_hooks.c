/* The model card names the hook site in the engine's own vocabulary (engine/model.h): short site
 * names with a layer become TransformerLens names, a full name stays, a name the engine does not
 * know is shown as given. */
#include "hf.h"
#include "testutil.h"

static void expect(const char *cfg, const char *phrase) {
    char *card = NULL, err[512] = "";
    int rc = hf_model_card(cfg, "org/repo", &card, err, sizeof err);
    CHECK(rc == 0 && card && strstr(card, phrase), "card of %s lacks '%s' (rc %d, %s)", cfg, phrase, rc, err);
    if (rc == 0 && card && strstr(card, phrase)) printf("  ok: %s -> %s\n", cfg, phrase);
    free(card);
}

int main(void) {
    expect("{\"site\": \"post\", \"layer\": 0}", "`blocks.0.mlp.hook_post`");
    expect("{\"site\": \"mlp_post\", \"layer\": 1}", "`blocks.1.mlp.hook_post`");
    expect("{\"site\": \"resid_pre\", \"layer\": 2}", "`blocks.2.hook_resid_pre`");
    expect("{\"site\": \"mlp_out\"}", "`blocks.0.hook_mlp_out`");
    expect("{\"site\": \"blocks.3.hook_resid_mid\", \"layer\": 3}", "`blocks.3.hook_resid_mid`");
    expect("{\"site\": \"no_such_site\", \"layer\": 0}", "`no_such_site`");
    expect("{\"hook_name\": \"blocks.0.mlp.hook_post\", \"site\": \"resid_pre\"}", "`blocks.0.mlp.hook_post`");
    return t_failures ? 1 : 0;
}
