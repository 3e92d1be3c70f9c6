/* rng.h - a small deterministic random number generator (SplitMix64 seeding a
 * xoshiro256** stream). Same seed => same sequence on every machine; the state
 * is four words, so it can be saved in a checkpoint. */
#ifndef TRL_RNG_H
#define TRL_RNG_H

#include <stdint.h>

typedef struct Rng {
	uint64_t s[4];
} Rng;

void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_next(Rng *r);
/* Uniform in [0, 1). */
double rng_uniform(Rng *r);
/* Standard normal (Box-Muller). */
double rng_normal(Rng *r);
/* Uniform integer in [0, n). */
uint64_t rng_below(Rng *r, uint64_t n);

#endif
