/* Tests of the test helpers: a NaN must fail every numeric check of testutil.h, wherever it sits
 * (the old t_close forgot a NaN in the first element when a later element matched). */
#include "testutil.h"

int main(void) {
    int bad = 0;
    bad += !isnan(t_max(0.0, NAN));
    bad += !isnan(t_max(NAN, 1.0));
    bad += !isnan(t_max(t_max(0.0, NAN), 0.5)); /* a NaN stays once seen */
    bad += t_max(0.25, 0.5) != 0.5 || t_max(0.5, 0.25) != 0.5;
    CHECK(bad == 0, "t_max drops or misorders values (%d cases)", bad);

    const float want[3] = {1, 1, 1}, good[3] = {1, 1, 1};
    const float nan_first[3] = {NAN, 1, 1}, nan_last[3] = {1, 1, NAN};
    const int saved = t_failures;
    const int ok_good = t_close("identical (must pass)", good, want, 3, 1e-6, 1e-6);
    const int ok_first = t_close("NaN first (must fail)", nan_first, want, 3, 1e-6, 1e-6);
    const int ok_last = t_close("NaN last (must fail)", nan_last, want, 3, 1e-6, 1e-6);
    const int ok_one = t_close1("NaN number (must fail)", NAN, 1.0, 1e-6);
    t_failures = saved; /* the expected failures above are not this test's */
    CHECK(ok_good, "t_close failed identical arrays");
    CHECK(!ok_first && !ok_last, "t_close passed a NaN (first %d, last %d)", ok_first, ok_last);
    CHECK(!ok_one, "t_close1 passed a NaN");
    return t_finish("test_testutil");
}
