/* random_model.h - random weights for model tests.
 *
 * random_model_weights(m, seed) draws the model's seeded initialisation,
 * then moves every norm scale and bias off its constant start (N(0, 0.2)
 * added), so a test exercises those parameters' every gradient and effect.
 * Static: include it from the tests that use it.
 */
#ifndef TRL_TESTS_RANDOM_MODEL_H
#define TRL_TESTS_RANDOM_MODEL_H

#include "model.h"
#include "rng.h"

static void random_model_weights(Model *m, uint64_t seed)
{
	model_init_weights(m, seed);
	Rng r;
	rng_seed(&r, seed + 99);
	for (int i = 0; i < m->table.n; i++) {
		const ParamInfo *p = &m->table.p[i];
		if (p->kind == TRL_PARAM_NORM || p->kind == TRL_PARAM_BIAS)
			for (size_t j = 0; j < p->numel; j++)
				m->params[p->offset + j] += (float)(0.2 * rng_normal(&r));
	}
}

#endif
