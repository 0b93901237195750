/* Several SAEs trained on one activation buffer: each batch is drawn once (the model runs once per
 * refill) and every SAE steps on it, each with its own trainer (optimizer, plugins, generator,
 * metrics.jsonl, evaluations and checkpoints in its own folder under the run folder). */
#ifndef SAEFW_TRAIN_MULTI_H
#define SAEFW_TRAIN_MULTI_H

#include <stddef.h>
#include <stdint.h>

#include "train.h"

/* Most SAEs one group trains. */
#define SAEFW_MAX_MULTI 64

typedef struct saefw_multi saefw_multi;

/* The generator seed of the SAE named `name` in a run seeded with `seed`: a hash of the name mixed
 * into the seed, so that an SAE's plugin draws depend on its name, not on the other SAEs of the run
 * or its place in the list. */
uint64_t saefw_multi_seed(uint64_t seed, const char *name);

/* Check the group and open one trainer per SAE. opts[i] is as for saefw_trainer_open, except that
 * the group sets buffer, next_batch, batch_size, run_dir (<run_dir>/<names[i]>, or none without
 * run_dir), label (names[i]) and no_memory_check (the group estimates the memory of all of them
 * together and refuses the run when the total does not fit); resume_from must be NULL. All must
 * have the same steps, log_every, eval_every and checkpoint_every. eval_source NULL: the buffer's
 * source (the SAEs' evaluation draws then follow one another; give each its own source, e.g.
 * saefw_source_model_eval_copy, for results that do not depend on the other SAEs). Names are
 * non-empty, unique, and plain folder names. With resume, every SAE continues from its newest
 * intact checkpoint; these must all be at the same step, where the group's buffer state
 * (<run_dir>/buffer-<step>.safetensors) is restored too. opts, names and everything they point to
 * must outlive the group. 0, or -1 with err (nothing is left open then). */
int saefw_multi_open(saefw_buffer *buffer, const char *run_dir, int resume, const char *const *names,
                     const saefw_train_opts *opts, int n, saefw_multi **out, char *err, size_t errlen);
/* Draw one batch and step every SAE on it. 1 when a step ran, 0 when none is left (all steps done,
 * SIGINT/SIGTERM, or every SAE's event callback asked to stop), -1 with err (then only close). */
int saefw_multi_step(saefw_multi *g, char *err, size_t errlen);
/* Close every trainer (saefw_trainer_close: final evaluations and checkpoints, or after a signal a
 * checkpoint of each SAE and of the buffer to resume from), fill res[0 .. n-1] (may be NULL) and free
 * the group. 0 when every SAE finished; -1 with err (the first failure, named by its SAE). */
int saefw_multi_close(saefw_multi *g, saefw_train_result *res, char *err, size_t errlen);
/* Open, step to the end, close. */
int saefw_multi_train(saefw_buffer *buffer, const char *run_dir, int resume, const char *const *names,
                      const saefw_train_opts *opts, int n, saefw_train_result *res, char *err, size_t errlen);

#endif
