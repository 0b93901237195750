/* The PyTorch zip checkpoint loader (torchpt.c), one of the formats saefw_tf_open reads. */
#ifndef SAEFW_TORCHPT_H
#define SAEFW_TORCHPT_H

#include <stddef.h>

#include "tensorfile.h"

/* Fill tf->tensors from the PyTorch zip checkpoint mapped at tf->map. Messages do not name the file
 * (the caller prefixes it). */
int saefw_tfi_load_torch(saefw_tensorfile *tf, char *err, size_t errlen);

#endif
