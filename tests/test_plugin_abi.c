/* ABI compatibility in both directions: a plugin compiled against the frozen ABI 2.0 header
 * (tests/abi/plugin_2_0.c) and one compiled against a newer header with one more field in every
 * struct (tests/abi/plugin_next.c) load in this engine and run a short training together. The 2.0
 * plugin is a schedule: it sets the engine's learning rate and L1 coefficient to 0, so the encoder
 * must not move and the L1 loss must vanish. The newer plugin must get its longer option entries
 * read right, its unknown callback never called, its longer saefw_param filled only up to the
 * engine's size, and SAEFW_HOST_HAS false for the host field this engine lacks. The sanitizer build
 * runs this test under AddressSanitizer. */
#include "plugin_loader.h"
#include "sae.h"
#include "testutil.h"
#include "train.h"

#define D_IN 16
#define D_SAE 64
#define BATCH 64
#define STEPS 12
#define LR 0.05

static saefw_metrics g_log[STEPS];
static int g_logged[STEPS];

static int on_event(void *ud, saefw_event event, const saefw_metrics *m, char *err, size_t errlen) {
    if (event == SAEFW_EVENT_LOG && m->step >= 0 && m->step < STEPS) g_log[m->step] = *m, g_logged[m->step] = 1;
    return 0;
}

static double metric(const saefw_metrics *m, const char *name) {
    for (int i = 0; i < m->n_extra; i++)
        if (!strcmp(m->extra_name[i], name)) return m->extra_value[i];
    return NAN;
}

static saefw_loaded_plugin *load(const char *dir, const char *name) {
    char path[1200], err[1024];
    snprintf(path, sizeof path, "%s/%s.so", dir, name);
    saefw_loaded_plugin *lp = NULL;
    REQUIRE(saefw_plugin_load(path, saefw_host_table(), &lp, err, sizeof err) == 0, "%s", err);
    return lp;
}

static void set_num(saefw_opts *o, const saefw_loaded_plugin *lp, const char *k, double v) {
    char err[1024];
    REQUIRE(saefw_opts_set_number(o, lp, k, v, err, sizeof err) == 0, "%s", err);
}

/* One training run of STEPS steps with SGD and the two plugins; returns saefw_train's status. */
static int run(saefw_sae *sae, saefw_loaded_plugin *sgd, saefw_opts *so, saefw_plugin_use *uses, char *err,
               size_t errlen) {
    saefw_synthetic_opts syn = {D_IN, 24, 0.1, 1.0, 3};
    saefw_source *src = NULL;
    saefw_buffer buf;
    REQUIRE(saefw_source_synthetic(&syn, &src, err, errlen) == 0, "%s", err);
    REQUIRE(saefw_buffer_init(&buf, src, BATCH * 8, BATCH, SAEFW_BUF_F32, 1, err, errlen) == 0, "%s", err);
    saefw_train_opts o = {0};
    o.sae = sae;
    o.buffer = &buf;
    o.steps = STEPS;
    o.optimizer.plugin = sgd;
    o.optimizer.opts = so;
    o.plugins = uses;
    o.n_plugins = 2;
    o.log_every = 1;
    o.seed = 1;
    o.on_event = on_event;
    saefw_train_result res;
    int rc = saefw_train(&o, &res, err, errlen);
    saefw_buffer_free(&buf);
    saefw_source_free(src);
    return rc;
}

int main(void) {
    const char *dir = getenv("SAEFW_TEST_PLUGINS");
    REQUIRE(dir && *dir, "SAEFW_TEST_PLUGINS is not set (run under ctest)");
    char err[1024];
    saefw_loaded_plugin *v20 = load(dir, "plugin_2_0"), *nx = load(dir, "plugin_next");
    saefw_loaded_plugin *sgd = NULL;
    REQUIRE(saefw_plugin_load("sgd", saefw_host_table(), &sgd, err, sizeof err) == 0, "%s", err);

    /* The engine's copies of the descriptors, in the engine's layout. */
    CHECK(!strcmp(v20->p.name, "plugin_2_0") && v20->p.after_backward && v20->p.after_step, "2.0 descriptor");
    CHECK(!strcmp(nx->p.name, "plugin_next") && nx->p.after_step && !nx->p.after_backward, "newer descriptor");
    CHECK(nx->p.struct_size == sizeof(saefw_plugin) && nx->p.option_size == sizeof(saefw_option),
          "the newer descriptor was not cut to the engine's size: %u, options %u", nx->p.struct_size,
          nx->p.option_size);
    int n_opts = 0;
    while (nx->p.options && nx->p.options[n_opts].name) n_opts++;
    CHECK(n_opts == 3 && !strcmp(nx->p.options[1].name, "beta") && nx->p.options[1].type == SAEFW_OPT_INTEGER &&
              nx->p.options[1].def_number == 3 && !strcmp(nx->p.options[2].help, "a boolean"),
          "the newer plugin's longer option entries were misread (%d options)", n_opts);

    saefw_opts *so = NULL, *vo = NULL, *no = NULL;
    REQUIRE(saefw_opts_new(sgd, &so, err, sizeof err) == 0 && saefw_opts_new(v20, &vo, err, sizeof err) == 0 &&
                saefw_opts_new(nx, &no, err, sizeof err) == 0,
            "%s", err);
    set_num(so, sgd, "lr", LR);
    set_num(vo, v20, "from", 0);
    set_num(vo, v20, "lr", 0);
    set_num(vo, v20, "l1", 0);
    set_num(no, nx, "beta", 7);
    saefw_plugin_use uses[2] = {{.plugin = v20, .opts = vo}, {.plugin = nx, .opts = no}};

    saefw_sae sae;
    REQUIRE(saefw_sae_alloc(&sae, D_IN, D_SAE, 1e-2f, err, sizeof err) == 0, "%s", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, 49);
    saefw_sae_init_params(&sae, &rng);
    static float w_enc0[D_IN * D_SAE], b_dec0[D_IN];
    memcpy(w_enc0, sae.p[SAEFW_W_ENC], sizeof w_enc0);
    memcpy(b_dec0, sae.p[SAEFW_B_DEC], sizeof b_dec0);
    CHECK(run(&sae, sgd, so, uses, err, sizeof err) == 0, "train: %s", err);
    REQUIRE(g_logged[0] && g_logged[STEPS - 1], "missing log events");

    /* The 2.0 schedule: learning rate and L1 coefficient 0 from step 0 on. */
    const saefw_metrics *first = &g_log[0], *last = &g_log[STEPS - 1];
    int enc_moved = memcmp(w_enc0, sae.p[SAEFW_W_ENC], sizeof w_enc0) != 0;
    int bdec_moved = memcmp(b_dec0, sae.p[SAEFW_B_DEC], sizeof b_dec0) != 0;
    printf("  2.0 plugin: lr %g (started at %g), l1 coefficient %g; W_enc moved %d, b_dec moved %d; l1 loss %g at "
           "step 0, %g at step %d\n",
           metric(last, "v20_lr"), metric(last, "v20_lr0"), metric(last, "v20_l1"), enc_moved, bdec_moved, first->l1,
           last->l1, STEPS - 1);
    CHECK(metric(last, "v20_lr") == 0 && metric(last, "v20_lr0") == LR, "learning rate not engine-owned");
    CHECK(metric(last, "v20_l1") == 0 && sae.l1_coeff == 0.0f, "L1 coefficient not set");
    CHECK(!enc_moved && !bdec_moved, "SGD did not use the engine's learning rate of 0");
    CHECK(first->l1 > 0 && last->l1 == 0, "the L1 coefficient did not reach the loss: %g, %g", first->l1, last->l1);
    CHECK(metric(last, "v20_label_ok") == 1, "the 2.0 plugin's string option default was lost");
    CHECK(metric(last, "v20_param_bytes") == sizeof(saefw_param), "2.0 saefw_param filled with %g bytes",
          metric(last, "v20_param_bytes"));
    CHECK(metric(last, "v20_plugin_bytes") <= sizeof(saefw_plugin), "the 2.0 descriptor is larger than the engine's");
    CHECK(metric(last, "v20_unknown_coeff") == 1, "loss_coeff accepted an unknown name");

    /* The newer plugin. */
    printf("  newer plugin: options %g %g %g; saefw_param filled %g of its bytes, extra field untouched %g; "
           "SAEFW_HOST_HAS(future_call) %g, (free_tensor) %g; unknown callback called %g times\n",
           metric(last, "next_alpha"), metric(last, "next_beta"), metric(last, "next_gamma"),
           metric(last, "next_param_bytes"), metric(last, "next_stride_untouched"),
           metric(last, "next_host_has_future"), metric(last, "next_host_has_free_tensor"),
           metric(last, "next_before_forward_calls"));
    CHECK(metric(last, "next_alpha") == 1.5 && metric(last, "next_beta") == 7 && metric(last, "next_gamma") == 0,
          "the newer plugin's options are wrong");
    CHECK(metric(last, "next_param_bytes") == sizeof(saefw_param) && metric(last, "next_stride_untouched") == 1,
          "the host wrote past its own saefw_param");
    CHECK(metric(last, "next_param_numel") == D_SAE * D_IN, "W_dec numel %g", metric(last, "next_param_numel"));
    CHECK(metric(last, "next_host_has_future") == 0 && metric(last, "next_host_has_free_tensor") == 1,
          "SAEFW_HOST_HAS is wrong");
    CHECK(metric(last, "next_before_forward_calls") == 0, "a callback the engine does not know was called");

    /* A schedule's bad value stops the run with the plugin's name and the host's message. */
    set_num(vo, v20, "lr", -1);
    CHECK(run(&sae, sgd, so, uses, err, sizeof err) != 0 && strstr(err, "plugin plugin_2_0: set_learning_rate"),
          "a negative learning rate was accepted: %s", err);
    printf("  negative learning rate -> %s\n", err);

    saefw_sae_free(&sae);
    saefw_opts_free(so);
    saefw_opts_free(vo);
    saefw_opts_free(no);
    saefw_plugin_unload(sgd);
    saefw_plugin_unload(v20);
    saefw_plugin_unload(nx);
    return t_finish("test_plugin_abi");
}
