/* The run's random generator: xoshiro256** seeded through splitmix64, so every run repeats. */
#ifndef SAEFW_RNG_H
#define SAEFW_RNG_H

#include <stdint.h>

/* The seed recipe's seed: the default of every seed option (SAE init, token shuffle, buffer, run). */
#define SAEFW_DEFAULT_SEED 49

typedef struct {
    uint64_t s[4];
} saefw_rng;

void saefw_rng_seed(saefw_rng *r, uint64_t seed);
uint64_t saefw_rng_u64(saefw_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double saefw_rng_uniform(saefw_rng *r);
/* Standard normal (Box-Muller; one draw per call). */
double saefw_rng_normal(saefw_rng *r);
/* Uniform integer in [0, n) without modulo bias; n > 0. */
uint64_t saefw_rng_below(saefw_rng *r, uint64_t n);
/* Fill idx[0..n) with a uniformly random permutation of 0..n-1. */
void saefw_rng_permutation(saefw_rng *r, int64_t *idx, int64_t n);
/* Shuffle idx[0..n) in place (Fisher-Yates). */
void saefw_rng_shuffle(saefw_rng *r, int64_t *idx, int64_t n);

#endif
