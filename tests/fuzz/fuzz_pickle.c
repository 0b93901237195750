/* Fuzz target: the PyTorch reader's pickle machine and tensor checks on a bare data.pkl image,
 * through saefw_tfi_unpickle_check (no zip, so every mutation reaches the unpickler). */
#include "fuzz_common.h"
#include "torch_pickle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 20)) return 0;
    char err[1024] = "";
    int n = -1;
    int rc = saefw_tfi_unpickle_check(data, size, &n, err, sizeof err);
    fuzz_note("%s", rc == 0 ? "accepted" : err);
    if (rc == 0) FUZZ_CHECK(n >= 0, "accepted pickle with %d tensors", n);
    else FUZZ_CHECK(err[0] != 0, "refused pickle without a message");
    return 0;
}
