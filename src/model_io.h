/* model_io.h - model folders: config.json (Hugging Face keys) and
 * model.safetensors (fp32, Hugging Face tensor names), written and read back.
 *
 * model_save_dir writes DIR/config.json and DIR/model.safetensors (each to a
 * temporary name, then renamed). model_load_dir reads them into an
 * uninitialised Model (it calls model_init); on failure the model is freed.
 * Tied models store no lm_head.weight, as Hugging Face does.
 */
#ifndef TRL_MODEL_IO_H
#define TRL_MODEL_IO_H

#include "model.h"
#include "trl.h"

int model_save_dir(const Model *m, const char *dir, TrlErr *err);
int model_load_dir(Model *m, const char *dir, TrlErr *err);

/* Reads DIR/config.json into mc (architecture from model_type). */
int model_config_load_json(ModelConfig *mc, const char *path, TrlErr *err);

#endif
