/* SPDX-License-Identifier: MIT */
/*
 * The disk tier through the control socket, checked by the bytes:
 *  roundtrip: an offloaded process parks its host copy in a file (0600, the
 *    header naming its pid and start time, every piece checksummed), frees
 *    its pinned buffers, and a restore brings every byte back from the file
 *    at the same addresses, through pinned staging buffers, and removes the
 *    file; parking a running process, twice, to a relative path, over an
 *    existing file or a symbolic link is refused, and leaves what was there;
 *    with two devices the pieces go to each allocation's own device.
 *  damage: a flipped byte in a piece, in the header, a truncated file and a
 *    missing one each fail the restore with its exact error, the process
 *    stays parked and nothing of its memory is on the device; once the file
 *    is whole again the same restore brings every byte back.
 *  nospace: a file size limit (RLIMIT_FSIZE: EFBIG, as a full disk gives
 *    ENOSPC) refuses the park with the numbers, found before a byte is
 *    written (fallocate) or half-way through (VRAM_HOOK_PARK_PREALLOCATE=0);
 *    the file is gone and the process stays offloaded in host memory and
 *    restores from it intact.
 *  drop: the host buffers kept after a restore are freed by drop-host
 *    (host_kept goes to 0, the bytes freed are answered), which an
 *    offloaded process refuses.
 *  exit: a parked process that exits removes its park file; a child it
 *    forked does not, when it exits first.
 * Usage: fc-park roundtrip|damage|nospace|drop|exit, with VRAM_CONTROL set, and
 * FC_PARK_DIR the directory to park in (default /tmp).
 */
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "fc-test.h"
#include "proto/park_file.h"

struct block {
	CUdeviceptr va;
	size_t bytes;
	int dev;
	unsigned seed;
};

static struct block blocks[8];
static int nblocks;
static CUcontext ctxs[2];
static char dir[256];

static unsigned char pattern(unsigned seed, size_t i)
{
	return (unsigned char)((i * 131u + (i >> 12) + seed * 7u) & 0xff);
}

static void add_block(int dev, size_t bytes, unsigned seed)
{
	struct block *b = &blocks[nblocks++];
	CK(cuCtxSetCurrent(ctxs[dev]));
	CK(cuMemAlloc_v2(&b->va, bytes));
	b->bytes = bytes;
	b->dev = dev;
	b->seed = seed;
	unsigned char *buf = malloc(bytes);
	CHECK(buf);
	for (size_t i = 0; i < bytes; i++)
		buf[i] = pattern(seed, i);
	CK(cuMemcpyHtoD_v2(b->va, buf, bytes));
	free(buf);
}

/* Every block holds its pattern again. */
static void check_blocks(void)
{
	for (int k = 0; k < nblocks; k++) {
		struct block *b = &blocks[k];
		unsigned char *buf = malloc(b->bytes);
		CHECK(buf);
		CK(cuCtxSetCurrent(ctxs[b->dev]));
		CK(cuMemcpyDtoH_v2(buf, b->va, b->bytes));
		for (size_t i = 0; i < b->bytes; i++) {
			if (buf[i] != pattern(b->seed, i)) {
				fprintf(stderr, "block %d (device %d): byte %zu differs\n", k, b->dev, i);
				abort();
			}
		}
		free(buf);
	}
}

static size_t total_bytes(void)
{
	size_t t = 0;
	for (int k = 0; k < nblocks; k++)
		t += blocks[k].bytes;
	return t;
}

static void ctl_expect(const char *cmd, const char *prefix, char *out, size_t cap)
{
	fc_ctl(cmd, out, cap);
	if (strncmp(out, prefix, strlen(prefix)) != 0) {
		fprintf(stderr, "%s: expected \"%s...\", got: %s\n", cmd, prefix, out);
		abort();
	}
}

/* The answer's text= field. */
static const char *text_of(const char *line)
{
	const char *t = strstr(line, "text=");
	CHECK(t);
	return t + 5;
}

static void expect_text(const char *line, const char *want)
{
	if (strcmp(text_of(line), want) != 0) {
		fprintf(stderr, "expected text: %s\n     got text: %s\n", want, text_of(line));
		abort();
	}
}

static unsigned long long status_field(const char *key)
{
	char out[1024];
	ctl_expect("status", "ok status", out, sizeof(out));
	return fc_field(out, key);
}

static bool file_exists(const char *path)
{
	struct stat sb;
	return lstat(path, &sb) == 0;
}

static void park_ok(const char *path)
{
	char cmd[300], out[1024];
	snprintf(cmd, sizeof(cmd), "park %s", path);
	ctl_expect(cmd, "ok park status=0", out, sizeof(out));
	CHECK(strstr(out, "state=parked"));
	CHECK_EQ_U64(fc_field(out, "bytes="), total_bytes());
	CHECK(file_exists(path));
	/* written the way it was asked to be: buffered only when O_DIRECT is off (or refused) */
	const char *direct = getenv("VRAM_HOOK_PARK_DIRECT");
	if (direct && direct[0] == '0')
		CHECK(strstr(text_of(out), ", buffered, "));
}

/* Reads the park file's header and piece table (the test's own reading, through park_file.h). */
static void read_header(const char *path, struct vram_park_header *h, struct vram_park_piece *pieces, size_t max)
{
	int fd = open(path, O_RDONLY);
	CHECK(fd >= 0);
	static uint8_t buf[1 << 16];
	ssize_t n = read(fd, buf, sizeof(buf));
	close(fd);
	const char *why = "";
	CHECK(n >= VRAM_PARK_FIXED_SIZE);
	CHECK(vram_park_decode_fixed(buf, (size_t)n, h, &why) == 0);
	CHECK(h->header_bytes <= (size_t)n && h->piece_count <= max && h->alloc_count <= 64);
	uint64_t sizes[64];
	CHECK(vram_park_decode_tables(buf, h, sizes, pieces, &why) == 0);
}

static void flip_byte(const char *path, uint64_t off)
{
	int fd = open(path, O_RDWR);
	CHECK(fd >= 0);
	unsigned char c;
	CHECK(pread(fd, &c, 1, (off_t)off) == 1);
	c ^= 0x40;
	CHECK(pwrite(fd, &c, 1, (off_t)off) == 1);
	close(fd);
}

/* ------------------------------------------------------------ roundtrip */

static void test_roundtrip(void)
{
	char out[1024], path[300], cmd[400];
	int ndev = 0;
	CK(cuDeviceGetCount(&ndev));
	add_block(0, 6 * MiB, 1);
	add_block(0, 2 * MiB, 2);
	add_block(ndev > 1 ? 1 : 0, 10 * MiB, 3);
	add_block(0, 4 * MiB, 4);
	CK(cuCtxSetCurrent(ctxs[0]));
	size_t total = total_bytes();
	long unpinned = fc_unpinned_copies();

	snprintf(path, sizeof(path), "%s/p.park", dir);
	/* a running process has nothing to park */
	snprintf(cmd, sizeof(cmd), "park %s", path);
	ctl_expect(cmd, "error park status=-114", out, sizeof(out));
	expect_text(out, "Failed to park: the process is not offloaded: offload it first");
	CHECK(!file_exists(path));

	ctl_expect("offload", "ok offload", out, sizeof(out));
	CHECK_EQ_U64(status_field("host_pinned="), total);
	CHECK_EQ_U64(status_field("host_kept="), 0);
	CHECK(fc_host_registered() > 0);
	/* a relative path, an existing file, a symbolic link: refused, and what is there stays */
	ctl_expect("park p.park", "error park status=-22", out, sizeof(out));
	char existing[300], link_path[300];
	snprintf(existing, sizeof(existing), "%s/existing", dir);
	snprintf(link_path, sizeof(link_path), "%s/link.park", dir);
	int fd = open(existing, O_WRONLY | O_CREAT | O_EXCL, 0644);
	CHECK(fd >= 0 && write(fd, "keep", 4) == 4);
	close(fd);
	CHECK(symlink(existing, link_path) == 0);
	snprintf(cmd, sizeof(cmd), "park %s", existing);
	ctl_expect(cmd, "error park status=-17", out, sizeof(out));
	char want[600];
	snprintf(want, sizeof(want), "Failed to park: %s exists already (a park file is always new); the process stays "
		 "offloaded in host memory", existing);
	expect_text(out, want);
	snprintf(cmd, sizeof(cmd), "park %s", link_path);
	ctl_expect(cmd, "error park status=-17", out, sizeof(out));
	struct stat sb;
	CHECK(stat(existing, &sb) == 0 && sb.st_size == 4);
	CHECK(lstat(link_path, &sb) == 0 && S_ISLNK(sb.st_mode));
	CHECK(strstr(out, "state=offloaded"));

	park_ok(path);
	fc_ctl("status", out, sizeof(out));
	CHECK(strstr(out, "state=parked"));
	CHECK_EQ_U64(status_field("host_pinned="), 0);
	CHECK_EQ_U64(status_field("parked="), total);
	CHECK_EQ_U64(fc_host_registered(), 0); /* every pinned buffer is gone */
	CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600 && sb.st_uid == geteuid());

	/* the header names this process and holds every piece */
	struct vram_park_header h;
	struct vram_park_piece pieces[256];
	read_header(path, &h, pieces, 256);
	CHECK_EQ_U64(h.pid, getpid());
	CHECK_EQ_U64(h.total_bytes, total);
	CHECK_EQ_U64(h.alloc_count, nblocks);
	CHECK_EQ_U64(h.piece_count, total / MiB); /* VRAM_HOOK_PARK_PIECE=1MiB */
	CHECK((uint64_t)sb.st_size >= vram_park_file_size(&h, pieces));

	/* parked: neither again, nor an offload */
	snprintf(cmd, sizeof(cmd), "park %s/q.park", dir);
	ctl_expect(cmd, "error park status=-114", out, sizeof(out));
	snprintf(want, sizeof(want), "Failed to park: the process is parked already (in %s)", path);
	expect_text(out, want);
	ctl_expect("offload", "error offload status=-114", out, sizeof(out));
	expect_text(out, "Failed to offload: the process is already parked");
	ctl_expect("drop-host", "error drop-host status=-16", out, sizeof(out));

	ctl_expect("restore", "ok restore status=0", out, sizeof(out));
	CHECK_EQ_U64(fc_field(out, "bytes="), total);
	CHECK(strstr(out, "state=running"));
	snprintf(want, sizeof(want), "restored %zu bytes from %s in ", total, path);
	CHECK(strncmp(text_of(out), want, strlen(want)) == 0);
	check_blocks();
	CHECK(!file_exists(path)); /* it has served */
	CHECK_EQ_U64(status_field("parked="), 0);
	CHECK_EQ_U64(status_field("host_pinned="), 0); /* nothing kept: the copy came from the disk */
	CHECK_EQ_U64(fc_host_registered(), 0);          /* the staging buffers are gone too */
	CHECK_EQ_U64(fc_unpinned_copies(), unpinned);   /* every piece came from pinned staging */

	/* and once more, the whole way, with the buffers made anew */
	ctl_expect("offload", "ok offload", out, sizeof(out));
	park_ok(path);
	ctl_expect("restore", "ok restore status=0", out, sizeof(out));
	check_blocks();
	CHECK(!file_exists(path));
	unlink(link_path);
	unlink(existing);
}

/* --------------------------------------------------------------- damage */

/* Restores expecting exactly the error want, with the process parked after it and its memory not on the device. */
static void restore_fails(int status, const char *want)
{
	char out[1024], prefix[64];
	snprintf(prefix, sizeof(prefix), "error restore status=%d ", status);
	ctl_expect("restore", prefix, out, sizeof(out));
	CHECK(strstr(out, "state=parked"));
	expect_text(out, want);
	for (int k = 0; k < nblocks; k++)
		CHECK(!fc_is_mapped(blocks[k].va));
	CHECK_EQ_U64(status_field("parked="), total_bytes());
}

static void copy_file(const char *from, const char *to)
{
	int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(in >= 0 && out >= 0);
	static char buf[1 << 16];
	ssize_t n;
	while ((n = read(in, buf, sizeof(buf))) > 0)
		CHECK(write(out, buf, (size_t)n) == n);
	close(in);
	close(out);
}

static void test_damage(void)
{
	char out[1024], path[300], saved[300], want[600];
	add_block(0, 4 * MiB, 5);
	add_block(0, 2 * MiB, 6);
	snprintf(path, sizeof(path), "%s/d.park", dir);
	snprintf(saved, sizeof(saved), "%s/d.saved", dir);
	ctl_expect("offload", "ok offload", out, sizeof(out));
	park_ok(path);
	copy_file(path, saved);
	struct vram_park_header h;
	struct vram_park_piece pieces[64];
	read_header(path, &h, pieces, 64);
	CHECK_EQ_U64(h.piece_count, 6);

	/* one byte in the middle of piece 4, then the very last byte of the last piece */
	const struct { size_t piece; uint64_t at; } flips[] = { { 4, 12345 }, { 5, pieces[5].length - 1 } };
	for (size_t k = 0; k < sizeof(flips) / sizeof(flips[0]); k++) {
		const struct vram_park_piece *pc = &pieces[flips[k].piece];
		flip_byte(path, pc->file_offset + flips[k].at);
		snprintf(want, sizeof(want), "Failed to restore: checksum mismatch in piece %zu of %s (allocation %u, "
			 "bytes %llu..%llu); the process stays parked", flips[k].piece, path, pc->alloc,
			 (unsigned long long)pc->offset, (unsigned long long)(pc->offset + pc->length));
		restore_fails(-EBADMSG, want);
		copy_file(saved, path);
	}

	/* a byte of the header (its piece table) */
	flip_byte(path, VRAM_PARK_FIXED_SIZE + 16 + 3);
	snprintf(want, sizeof(want), "Failed to restore: %s: header checksum mismatch; the process stays parked", path);
	restore_fails(-EBADMSG, want);
	copy_file(saved, path);

	/* truncated in piece 3 */
	CHECK(truncate(path, (off_t)(pieces[3].file_offset + 100)) == 0);
	snprintf(want, sizeof(want), "Failed to restore: %s is truncated: %llu bytes, piece 3 (allocation %u) ends at "
		 "%llu; the process stays parked", path, (unsigned long long)(pieces[3].file_offset + 100),
		 pieces[3].alloc, (unsigned long long)(pieces[3].file_offset + pieces[3].length));
	restore_fails(-ENODATA, want);
	/* truncated in the header */
	CHECK(truncate(path, 100) == 0);
	snprintf(want, sizeof(want), "Failed to restore: %s is truncated: 100 bytes, its header alone has %u; the "
		 "process stays parked", path, h.header_bytes);
	restore_fails(-ENODATA, want);

	/* missing */
	CHECK(unlink(path) == 0);
	snprintf(want, sizeof(want), "Failed to restore: the park file %s is missing; the process stays parked", path);
	restore_fails(-ENOENT, want);

	/* another process's file, or one others may write: refused before it is read */
	copy_file(saved, path);
	CHECK(chmod(path, 0666) == 0);
	fc_ctl("restore", out, sizeof(out));
	CHECK(strncmp(out, "error restore status=-1 ", 24) == 0);
	CHECK(strstr(text_of(out), "mode 666"));
	CHECK(chmod(path, 0600) == 0);

	/* whole again: every byte comes back */
	ctl_expect("restore", "ok restore status=0", out, sizeof(out));
	check_blocks();
	CHECK(!file_exists(path));
	unlink(saved);
}

/* -------------------------------------------------------------- nospace */

static void test_nospace(void)
{
	char out[1024], path[300], cmd[400], want[600];
	add_block(0, 6 * MiB, 7);
	add_block(0, 2 * MiB, 8);
	size_t total = total_bytes();
	snprintf(path, sizeof(path), "%s/n.park", dir);
	snprintf(cmd, sizeof(cmd), "park %s", path);
	/* no SIGXFSZ handler: the hook writes on threads that block every signal, so the write
	 * fails with EFBIG rather than the signal killing the process */
	struct rlimit lim = { 3 * MiB, RLIM_INFINITY };
	CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);

	ctl_expect("offload", "ok offload", out, sizeof(out));
	/* found before any byte is written */
	ctl_expect(cmd, "error park status=-27", out, sizeof(out));
	CHECK(strstr(out, "state=offloaded"));
	snprintf(want, sizeof(want), "Failed to park: file size limit reached on %s (RLIMIT_FSIZE or the file system's): "
		 "wrote 0 of %zu bytes; the process stays offloaded in host memory", dir, total);
	expect_text(out, want);
	CHECK(!file_exists(path));
	CHECK_EQ_U64(status_field("host_pinned="), total);
	CHECK_EQ_U64(status_field("parked="), 0);

	/* found half-way: the pieces that fit are written, then the file goes */
	setenv("VRAM_HOOK_PARK_PREALLOCATE", "0", 1);
	setenv("VRAM_HOOK_PARK_THREADS", "1", 1); /* one writer: the bytes before the limit, in order */
	ctl_expect(cmd, "error park status=-27", out, sizeof(out));
	unsigned long long wrote = 0, of = 0;
	const char *w = strstr(text_of(out), "wrote ");
	CHECK(w && sscanf(w, "wrote %llu of %llu bytes", &wrote, &of) == 2);
	CHECK_EQ_U64(of, total);
	CHECK(wrote >= 2 * MiB && wrote < 3 * MiB); /* the limit is 3 MiB of file, 4 KiB of it the header */
	CHECK(!file_exists(path));
	unsetenv("VRAM_HOOK_PARK_PREALLOCATE");
	unsetenv("VRAM_HOOK_PARK_THREADS");

	/* the process is as before: offloaded in host memory, and restores intact */
	fc_ctl("status", out, sizeof(out));
	CHECK(strstr(out, "state=offloaded"));
	lim.rlim_cur = RLIM_INFINITY;
	CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
	ctl_expect("restore", "ok restore status=0", out, sizeof(out));
	check_blocks();
	/* and parks once there is room */
	ctl_expect("offload", "ok offload", out, sizeof(out));
	park_ok(path);
	ctl_expect("restore", "ok restore status=0", out, sizeof(out));
	check_blocks();
}

/* ----------------------------------------------------------------- drop */

static void test_drop(void)
{
	char out[1024];
	add_block(0, 4 * MiB, 9);
	add_block(0, 2 * MiB, 10);
	size_t total = total_bytes();
	ctl_expect("drop-host", "ok drop-host status=0 bytes=0", out, sizeof(out)); /* nothing kept yet */
	ctl_expect("offload", "ok offload", out, sizeof(out));
	ctl_expect("drop-host", "error drop-host status=-16", out, sizeof(out));
	expect_text(out, "Failed to drop the host buffers: the process is offloaded, its host memory is not kept but "
		    "in use (restore it first)");
	ctl_expect("restore", "ok restore status=0", out, sizeof(out));
	check_blocks();
	/* VRAM_HOOK_KEEP_HOST is on by default: the buffers stay, kept */
	CHECK_EQ_U64(status_field("host_pinned="), total);
	CHECK_EQ_U64(status_field("host_kept="), total);
	CHECK(fc_host_registered() > 0);
	ctl_expect("drop-host", "ok drop-host status=0", out, sizeof(out));
	CHECK_EQ_U64(fc_field(out, "bytes="), total);
	expect_text(out, "dropped 6291456 bytes of pinned host buffers kept after a restore");
	CHECK_EQ_U64(status_field("host_kept="), 0);
	CHECK_EQ_U64(status_field("host_pinned="), 0);
	CHECK_EQ_U64(fc_host_registered(), 0);
	check_blocks(); /* the device memory is untouched */
	/* the next offload makes new buffers and works as ever */
	ctl_expect("offload", "ok offload", out, sizeof(out));
	CHECK(strstr(out, "pinned 6291456 new bytes"));
	ctl_expect("restore", "ok restore status=0", out, sizeof(out));
	check_blocks();
}

/* ----------------------------------------------------------------- exit */

/* In a process of its own (forked before CUDA is touched): parks, forks a child that exits, exits. */
static void park_and_exit(const char *path)
{
	char out[1024];
	ctxs[0] = fc_setup(0);
	add_block(0, 2 * MiB, 11);
	ctl_expect("offload", "ok offload", out, sizeof(out));
	park_ok(path);
	pid_t kid = fork();
	CHECK(kid >= 0);
	if (kid == 0)
		exit(0); /* its destructors run: the file is its parent's, not its own */
	int st;
	CHECK(waitpid(kid, &st, 0) == kid && WIFEXITED(st));
	CHECK(file_exists(path));
	exit(0);
}

static void test_exit(void)
{
	char path[300];
	snprintf(path, sizeof(path), "%s/e.park", dir);
	pid_t kid = fork();
	CHECK(kid >= 0);
	if (kid == 0)
		park_and_exit(path);
	int st;
	CHECK(waitpid(kid, &st, 0) == kid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CHECK(!file_exists(path));
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "roundtrip";
	const char *base = getenv("FC_PARK_DIR");
	snprintf(dir, sizeof(dir), "%s/fc-park-XXXXXX", base && *base ? base : "/tmp");
	CHECK(mkdtemp(dir));
	if (!strcmp(mode, "exit")) {
		test_exit(); /* CUDA only in its child */
		CHECK(rmdir(dir) == 0);
		printf("park exit: ok\n");
		return 0;
	}
	ctxs[0] = fc_setup(0);
	int ndev = 0;
	CK(cuDeviceGetCount(&ndev));
	if (ndev > 1) {
		CK(cuDevicePrimaryCtxRetain(&ctxs[1], 1));
	}
	CK(cuCtxSetCurrent(ctxs[0]));
	if (!strcmp(mode, "roundtrip"))
		test_roundtrip();
	else if (!strcmp(mode, "damage"))
		test_damage();
	else if (!strcmp(mode, "nospace"))
		test_nospace();
	else if (!strcmp(mode, "drop"))
		test_drop();
	else
		return 2;
	CHECK(rmdir(dir) == 0); /* nothing left behind */
	printf("park %s: ok\n", mode);
	return 0;
}
