/* The synthetic source recovers its ground truth: a small seeded run (Adam, the seed's loss) must
 * reach MMCS >= 0.9 between decoder rows and the true features; before training MMCS is low. Also
 * checks the source itself: unit-norm features, the expected number of active features per row. */
#include "eval.h"
#include "plugin_loader.h"
#include "testtrain.h"
#include "testutil.h"
#include "train.h"

int main(void) {
    char err[1024];
    saefw_synthetic_opts so = {32, 48, 0.04, 1.0, 7};
    saefw_source *src = NULL;
    REQUIRE(saefw_source_synthetic(&so, &src, err, sizeof err) == 0, "%s", err);
    int64_t nf = 0;
    const float *truth = saefw_synthetic_features(src, &nf);
    REQUIRE(truth && nf == 48, "ground truth");
    double worst = 0;
    for (int64_t f = 0; f < nf; f++) {
        double ss = 0;
        for (int i = 0; i < 32; i++) ss += (double)truth[f * 32 + i] * truth[f * 32 + i];
        worst = t_max(worst, fabs(sqrt(ss) - 1));
    }
    CHECK(worst <= 1e-6, "features not unit norm: %g", worst);
    CHECK(fabs(saefw_mmcs(truth, nf, truth, nf, 32) - 1.0) <= 1e-6, "MMCS of the truth with itself is not 1");

    /* Rows are sums of features: the squared norm averages p * n_features * E[mag^2] = 0.04*48/3. */
    static float x[20000 * 32];
    REQUIRE(src->sample(src, x, 20000, err, sizeof err) == 0, "%s", err);
    double sq = 0;
    for (int k = 0; k < 20000 * 32; k++) sq += (double)x[k] * x[k];
    sq /= 20000;
    double expect = 0.04 * 48 / 3.0;
    printf("  mean squared row norm %.4f (expected about %.4f, plus cross terms)\n", sq, expect);
    CHECK(fabs(sq - expect) <= 0.15 * expect, "row norms off: %g vs %g", sq, expect);

    saefw_sae sae;
    REQUIRE(saefw_sae_alloc(&sae, 32, 128, 1e-3f, err, sizeof err) == 0, "%s", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, SAEFW_DEFAULT_SEED);
    saefw_sae_init_params(&sae, &rng);
    double before = saefw_mmcs(truth, nf, sae.p[SAEFW_W_DEC], sae.d_sae, sae.d_in);

    saefw_buffer buf;
    REQUIRE(saefw_buffer_init(&buf, src, 256 * 32, 256, SAEFW_BUF_BF16, 1, err, sizeof err) == 0, "%s", err);
    t_adam adam = t_adam_load(1e-3, 0.9, 0.99);
    saefw_train_opts o = {0};
    o.sae = &sae;
    o.buffer = &buf;
    o.steps = 2500;
    o.optimizer.plugin = adam.plugin;
    o.optimizer.opts = adam.opts;
    o.eval_every = 500;
    o.progress = 0;
    /* MMCS is an evaluator the caller chooses, not something the loop knows of synthetic sources. */
    saefw_mmcs_evaluator mev;
    REQUIRE(saefw_mmcs_evaluator_init(&mev, src, err, sizeof err) == 0, "%s", err);
    saefw_evaluator *evs[1] = {&mev.ev};
    o.evaluators = evs;
    o.n_evaluators = 1;
    saefw_train_result res;
    CHECK(saefw_train(&o, &res, err, sizeof err) == 0, "train: %s", err);
    double after = saefw_mmcs(truth, nf, sae.p[SAEFW_W_DEC], sae.d_sae, sae.d_in);
    printf("  MMCS before training %.4f, after %lld steps %.4f (need >= 0.9); reported at the end %.4f\n", before,
           (long long)res.steps_done, after, saefw_metrics_get(&res.last, "mmcs"));
    CHECK(before <= 0.6, "untrained MMCS suspiciously high: %g", before);
    CHECK(after >= 0.9, "MMCS %g < 0.9", after);
    const double reported = saefw_metrics_get(&res.last, "mmcs");
    CHECK(fabs(reported - after) <= 1e-9, "reported MMCS %g differs from %g", reported, after);

    t_adam_free(&adam);
    saefw_buffer_free(&buf);
    saefw_sae_free(&sae);
    saefw_source_free(src);
    return t_finish("test_synthetic");
}
