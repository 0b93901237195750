/* Memory before it is spent: the memory this machine (or cgroup) can still give the process, the
 * user's override, and the check a run makes from its configuration before it allocates. */
#ifndef SAEFW_MEMORY_H
#define SAEFW_MEMORY_H

#include <stddef.h>
#include <stdint.h>

#include "train.h"

/* Bytes the process could use: MemAvailable from /proc/meminfo, lowered to the room left under
 * /sys/fs/cgroup/memory.max when a limit is set, plus the process's own resident memory (which
 * it already holds). what (>= 96 bytes) says where the figure came from. -1 when nothing could be
 * read (then no check is made). */
int64_t saefw_mem_available(char *what, size_t whatlen);

/* Resident memory of this process (VmRSS), and its peak so far (VmHWM); -1 when unknown. */
int64_t saefw_mem_rss(void);
int64_t saefw_mem_peak(void);

/* The user's override: allow = 1 skips the refusal (the estimate is still printed); limit > 0
 * checks against that many bytes instead of the machine's figure. */
void saefw_mem_set_policy(int allow, int64_t limit);

/* Parse a size: a number of bytes with an optional K, M, G or T suffix (powers of 1024). */
int saefw_mem_parse(const char *text, int64_t *bytes, char *err, size_t errlen);

/* "1.23 GiB" into buf. */
const char *saefw_mem_fmt(double bytes, char *buf, size_t n);

/* Refuse (-1 with err naming what, the estimate, the available memory and the override) when
 * `need` bytes cannot fit; 0 when they can, when the policy allows anything, or when the available
 * memory is unknown. Allocates nothing. */
int saefw_mem_check(const char *what, double need, char *err, size_t errlen);

/* A training run's peak memory from its configuration (activation buffer, SAE parameters and
 * gradients, optimizer moments, the step's and the evaluation's scratch, the source's model and
 * forward scratch), printed in one line when print is set, and refused as saefw_mem_check does. */
int saefw_train_memory_check(const saefw_train_opts *o, int print, double *estimate, char *err, size_t errlen);

#endif
