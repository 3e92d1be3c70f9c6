/* ckpt_files.c - the checkpoint files of an output folder: the `latest`
 * pointer, rotation under save_total_limit, leftovers of interrupted saves,
 * and what resume_from_checkpoint names. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_h5.h"

/* The step of a name checkpoint-<step>.h5, or -1. */
static long name_step(const char *name)
{
	const char *p = name;
	if (strncmp(p, "checkpoint-", 11) != 0)
		return -1;
	char *end;
	long s = strtol(p + 11, &end, 10);
	return end != p + 11 && strcmp(end, ".h5") == 0 && s >= 0 ? s : -1;
}

/* Removes checkpoint-<step>.h5 and its companions (ppo's value model). */
static void remove_step(const char *output_dir, long step)
{
	char path[TRL_PATH_MAX + 48];
	snprintf(path, sizeof path, "%s/checkpoint-%ld.h5", output_dir, step);
	unlink(path);
	snprintf(path, sizeof path, "%s/checkpoint-%ld.value.h5", output_dir, step);
	unlink(path);
}

static int cmp_long(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;
	return (x > y) - (x < y);
}

int ckpt_publish(const char *output_dir, const char *name, int keep, TrlErr *err)
{
	char path[TRL_PATH_MAX + 32], tmp[TRL_PATH_MAX + 32];
	snprintf(path, sizeof path, "%s/latest", output_dir);
	snprintf(tmp, sizeof tmp, "%s/latest.tmp", output_dir);
	FILE *f = fopen(tmp, "w");
	int ok = f && fprintf(f, "%s\n", name) > 0;
	if (f && fclose(f) != 0)
		ok = 0;
	if (!ok || trl_sync_path(tmp) != 0 || rename(tmp, path) != 0)
		return trl_errf(err, TRL_EIO, "cannot write %s: %s", path,
		                strerror(errno));
	trl_sync_path(output_dir);
	if (keep <= 0)
		return TRL_OK;
	/* Oldest first, by step; the new checkpoint is never among the removed. */
	DIR *dir = opendir(output_dir);
	long *steps = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while (dir && (de = readdir(dir))) {
		long s = name_step(de->d_name);
		if (s < 0)
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			long *grown = realloc(steps, cap * sizeof *steps);
			if (!grown)
				break;
			steps = grown;
		}
		steps[n++] = s;
	}
	if (dir)
		closedir(dir);
	qsort(steps, n, sizeof *steps, cmp_long);
	/* Checkpoints past the new one belong to an earlier run that this one
	 * replaced (latest no longer leads to them): they go first. Then the
	 * oldest, down to keep. */
	long newest = name_step(name);
	size_t left = n;
	for (size_t i = 0; i < n; i++)
		if (steps[i] > newest) {
			remove_step(output_dir, steps[i]);
			left--;
		}
	for (size_t i = 0; left > (size_t)keep && i < n && steps[i] < newest; i++) {
		remove_step(output_dir, steps[i]);
		left--;
	}
	free(steps);
	return TRL_OK;
}

void ckpt_remove_partial(const char *output_dir)
{
	DIR *dir = opendir(output_dir);
	struct dirent *de;
	while (dir && (de = readdir(dir))) {
		size_t len = strlen(de->d_name);
		if (strncmp(de->d_name, "checkpoint-", 11) != 0 || len < 8 ||
		    strcmp(de->d_name + len - 7, ".h5.tmp") != 0)
			continue;
		char path[TRL_PATH_MAX + 300];
		snprintf(path, sizeof path, "%s/%s", output_dir, de->d_name);
		unlink(path);
	}
	if (dir)
		closedir(dir);
}

int ckpt_resolve(const char *spec, const char *output_dir, char *path, size_t cap,
                 TrlErr *err)
{
	struct stat sb;
	const char *dir = NULL;
	if (strcmp(spec, "latest") == 0)
		dir = output_dir;
	else if (stat(spec, &sb) == 0 && S_ISDIR(sb.st_mode))
		dir = spec;
	if (!dir) {
		if (stat(spec, &sb) != 0)
			return trl_errf(
			    err, TRL_EINVAL,
			    "resume_from_checkpoint '%s': no such file (give a "
			    "checkpoint-<step>.h5 file, its folder, or latest)",
			    spec);
		snprintf(path, cap, "%s", spec);
		return TRL_OK;
	}
	char ptr[TRL_PATH_MAX + 16], name[256] = "";
	snprintf(ptr, sizeof ptr, "%s/latest", dir);
	FILE *f = fopen(ptr, "r");
	if (!f)
		return trl_errf(
		    err, TRL_EINVAL,
		    "resume_from_checkpoint '%s': %s has no checkpoint (no %s); "
		    "train without resume_from_checkpoint first",
		    spec, dir, ptr);
	int got = fgets(name, sizeof name, f) != NULL;
	fclose(f);
	name[strcspn(name, "\r\n")] = '\0';
	if (!got || !name[0] || strchr(name, '/'))
		return trl_errf(err, TRL_EFORMAT,
		                "%s does not name a checkpoint file (it holds '%s')", ptr,
		                name);
	snprintf(path, cap, "%s/%s", dir, name);
	if (stat(path, &sb) != 0)
		return trl_errf(err, TRL_EINVAL,
		                "%s points to %s, which does not exist: pass "
		                "resume_from_checkpoint the path of a checkpoint file",
		                ptr, path);
	return TRL_OK;
}
