/* The run folder: one writer at a time (a lock file held with flock for the whole run), what a fresh
 * start or a resume may do with what the folder holds, and the run's recorded configuration, whose
 * changes a resume must name. */
#ifndef SAEFW_RUNDIR_H
#define SAEFW_RUNDIR_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "train.h"

/* The lock file inside a run folder; it holds the PID of the process that has the lock. */
#define SAEFW_RUN_LOCK "saefw.lock"

/* Take the run folder's lock (the folder must exist): *fd gets the lock's descriptor, to close when
 * the run ends (the kernel also releases it when the process dies). When another process holds it,
 * returns -1 with an error naming that process's PID. */
int saefw_rundir_lock(const char *dir, int *fd, char *err, size_t errlen);

/* Prepare `dir` for a run and lock it (*lock_fd, -1 on error). Without resume, the folder must be
 * absent (it is created) or empty (but for the lock). With resume, it must exist: a finished run, a folder that
 * is not a run, or checkpoints none of which can be resumed are refused, nothing changed; otherwise
 * resume_from gets the newest intact checkpoint with a training state, or stays "" when the run
 * stopped before its first checkpoint (it then starts over, said through log). Leftovers of
 * checkpoint writers that were killed are removed first. */
int saefw_rundir_open(const char *dir, int resume, int *lock_fd, char *resume_from, size_t n,
                      void (*log)(const char *msg), char *err, size_t errlen);

/* The run's configuration as a JSON object: the script's config (less the keys that do not change
 * the results: run_dir, threads, progress), the loop's own settings ("train") and the optimizer and
 * plugins in order with their options ("plugins"). NULL when out of memory. Caller frees. */
cJSON *saefw_run_record(const saefw_train_opts *o);

/* Compare a recorded configuration with the current one. Each difference has a name: a config key
 * ("lr"), "train.<setting>", "<plugin>.<option>", or "plugins" (the list itself); it is allowed when
 * `allow` holds that name or its last part ("lr" allows "adam.lr"). Allowed differences are appended
 * to `changes` as {"step", "key", "from", "to"}; any other gives -1 with an error listing them. */
int saefw_run_record_diff(const cJSON *recorded, const cJSON *current, const char *const *allow, int n_allow,
                          int64_t step, cJSON *changes, char *err, size_t errlen);

/* Check that metrics.jsonl (an open stream) still holds what a checkpoint recorded: at least `bytes`
 * bytes, the first of which are `lines` whole lines (lines < 0: not recorded). -1 with an error
 * naming the file and what is missing otherwise. */
int saefw_rundir_check_metrics(FILE *f, const char *path, int64_t bytes, int64_t lines, char *err, size_t errlen);

#endif
