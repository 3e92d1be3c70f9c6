/* bench_ckpt.c - times the real checkpoint save or load of a GPT-2 model and
 * its AdamW moments on every rank of the job, for bench/ckpt_io.sh.
 *
 *     mpirun -np N bench/bench_ckpt write|read PATH [--stage S] [--config C]
 *     bench/bench_ckpt rawwrite|rawread PATH [--config C]
 *
 *     C  gpt2-124M (default): 124.4 M parameters, 1.49 GB with the moments
 *        tiny: 2 layers of 128, for a quick try
 *
 * write fills the model with its seeded initialisation and the moments with
 * values derived from it, then calls ckpt_save; read calls ckpt_load (which
 * verifies every tensor's checksum). Rank 0 prints one line:
 *     ckpt op=write ranks=N stage=S bytes=B seconds=T mb_per_s=R
 * bytes are the tensor bytes moved (MB = 10^6 bytes, as dd prints).
 *
 * rawwrite and rawread are the least any checkpoint must do, on one
 * process: write the same number of bytes from one buffer of that size (a
 * byte pattern, not zeros) in 16 MiB requests and fsync, or read the whole
 * file in order in 16 MiB requests into one buffer of its size. Both buffers
 * are touched first, as the model's and optimizer's memory is. dd moves data
 * through one small buffer over and over, which no save or load can; the
 * benchmark prints both.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_h5.h"
#include "zero.h"

static int usage(void)
{
	fprintf(stderr,
	        "usage: bench_ckpt write|read|rawwrite|rawread PATH [--stage 0-3] "
	        "[--config gpt2-124M|tiny]\n");
	return 2;
}

static void shape_of(const char *name, ModelConfig *mc)
{
	memset(mc, 0, sizeof *mc);
	mc->arch = TRL_ARCH_GPT2;
	mc->tie_word_embeddings = 1;
	mc->norm_eps = 1e-5f;
	mc->rope_theta = 10000.0f;
	mc->initializer_range = 0.02f;
	int tiny = strcmp(name, "tiny") == 0;
	mc->vocab_size = tiny ? 512 : 50257;
	mc->hidden_size = tiny ? 128 : 768;
	mc->num_hidden_layers = tiny ? 2 : 12;
	mc->num_attention_heads = tiny ? 4 : 12;
	mc->max_position_embeddings = 1024;
}

/* rawwrite (n bytes) or rawread (the whole file) of path. */
static int raw_io(const char *path, int write, size_t n)
{
	int fd =
	    write ? open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644) : open(path, O_RDONLY);
	struct stat sb;
	if (fd < 0 || fstat(fd, &sb) != 0) {
		perror(path);
		return 1;
	}
	if (!write)
		n = (size_t)sb.st_size;
	size_t done = 0, chunk = (size_t)16 << 20;
	unsigned char *buf = malloc(n);
	if (!buf) {
		fprintf(stderr, "bench_ckpt: out of memory\n");
		return 1;
	}
	for (size_t i = 0; i < n; i++)
		buf[i] = (unsigned char)(i * 2654435761u >> 13);
	double t0 = MPI_Wtime();
	while (done < n) {
		size_t want = n - done < chunk ? n - done : chunk;
		ssize_t got = write ? pwrite(fd, buf + done, want, (off_t)done)
		                    : pread(fd, buf + done, want, (off_t)done);
		if (got <= 0) {
			perror(path);
			return 1;
		}
		done += (size_t)got;
	}
	if (write && fsync(fd) != 0) {
		perror(path);
		return 1;
	}
	double dt = MPI_Wtime() - t0;
	printf("ckpt op=%s ranks=1 stage=0 bytes=%zu seconds=%.3f mb_per_s=%.1f\n",
	       write ? "rawwrite" : "rawread", n, dt, (double)n / 1e6 / dt);
	close(fd);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	MPI_Init(&argc, &argv);
	int rank, size, stage = 3;
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	const char *config = "gpt2-124M";
	for (int i = 3; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--stage") == 0)
			stage = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--config") == 0)
			config = argv[i + 1];
	}
	ModelConfig mc;
	shape_of(config, &mc);
	if (argc >= 3 && strncmp(argv[1], "raw", 3) == 0) {
		int w = strcmp(argv[1], "rawwrite") == 0;
		TrlErr e;
		size_t n = 0;
		if (w) { /* the tensor bytes of the checkpoint: parameters and moments */
			model_config_check(&mc, &e);
			n = 12 * model_config_num_params(&mc);
		}
		int status = rank == 0 ? raw_io(argv[2], w, n) : 0;
		MPI_Finalize();
		return status;
	}
	if (argc < 3 || (strcmp(argv[1], "write") != 0 && strcmp(argv[1], "read") != 0)) {
		if (rank == 0)
			usage();
		MPI_Finalize();
		return 2;
	}
	int write = argv[1][0] == 'w';
	TrlErr err = {0, ""};
	Model m;
	memset(&m, 0, sizeof m);
	Zero z;
	memset(&z, 0, sizeof z);
	int rc = model_config_check(&mc, &err);
	if (!rc)
		rc = model_init_flags(&m, &mc, zero_model_flags(stage), &err);
	if (!rc && m.params)
		model_init_weights(&m, 1234);
	if (!rc)
		rc = zero_init(&z, &m, MPI_COMM_WORLD, stage, 100000, 1, NULL, 1234, 0.9,
		               0.999, 1e-8, 0.0, 0, &err);
	if (rc) {
		fprintf(stderr, "bench_ckpt rank %d: %s\n", rank, err.msg);
		MPI_Abort(MPI_COMM_WORLD, 1);
	}
	/* Moments that are not all zero, so the checksums have work to do. */
	for (int u = 0; u < z.U && write; u++) {
		size_t b, e, pb, pe;
		const float *w = zero_region(&z, u, ZERO_PARAMS, 1, &pb, &pe);
		for (int k = ZERO_EXP_AVG; k <= ZERO_EXP_AVG_SQ; k++) {
			float *x = zero_region(&z, u, k, 1, &b, &e);
			for (size_t i = 0; i < e - b; i++)
				x[i] = k == ZERO_EXP_AVG ? 0.1f * w[i] : w[i] * w[i];
		}
	}
	Config cfg;
	config_defaults(&cfg);
	CkptState st;
	memset(&st, 0, sizeof st);
	st.world_size = size;
	st.zero_stage = stage;
	st.rows_per_step = st.num_rows = 1;
	st.bos_token_id = st.eos_token_id = -1;
	st.rng[0] = (uint64_t)rank + 1;
	CkptIo io;
	MPI_Barrier(MPI_COMM_WORLD);
	double t0 = MPI_Wtime();
	rc = write ? ckpt_save(argv[2], &z, &cfg, &st, &io, &err)
	           : ckpt_load(argv[2], &z, &st, &io, &err);
	double dt = MPI_Wtime() - t0;
	double bytes = io.bytes;
	MPI_Allreduce(MPI_IN_PLACE, &bytes, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
	if (rc && rank == 0)
		fprintf(stderr, "bench_ckpt: %s\n", err.msg);
	if (!rc && rank == 0)
		printf("ckpt op=%s ranks=%d stage=%d bytes=%.0f seconds=%.3f "
		       "mb_per_s=%.1f\n",
		       argv[1], size, stage, bytes, dt, bytes / 1e6 / dt);
	zero_free(&z);
	model_free(&m);
	MPI_Finalize();
	return rc ? 1 : 0;
}
