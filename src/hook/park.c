/* SPDX-License-Identifier: MIT */
/*
 * Park files (src/proto/park_file.h): the disk tier's I/O. The device work
 * around it (which allocations, their mappings, the copies to the device)
 * is suspend.c's; this module only moves bytes between host memory and one
 * file, and checks them.
 *
 * Writing: the host copies of the offloaded allocations are cut into
 * pieces (VRAM_HOOK_PARK_PIECE, default 64 MiB, never across two
 * allocations) and written by several threads at once (VRAM_HOOK_PARK_THREADS,
 * default 4), each piece checksummed (XXH64) as it goes; then the header,
 * which holds the checksums, and fsync. The file is created 0600 with
 * O_EXCL|O_NOFOLLOW, so an existing file or a symbolic link in its place
 * is never written through, and with O_DIRECT where the file system takes
 * it (buffered, then dropped from the page cache after fsync, where it
 * does not: tmpfs before Linux 6.6, some FUSE). The whole size is reserved
 * first with fallocate, so a disk that is too small is found before any
 * byte is written (VRAM_HOOK_PARK_PREALLOCATE=0 leaves that to the writes).
 * Any failure removes the file: a park is all or nothing.
 *
 * Reading: a ring of staging buffers (VRAM_HOOK_PARK_STAGING, default 4, of
 * one piece each, pinned) and one reader thread per buffer. Reader k reads
 * pieces k, k + K, ... in turn: it waits until the buffer is handed back
 * and the copies out of it are done (an event the restore records behind
 * them), reads the next piece into it and verifies its checksum. The
 * restore takes the pieces in file order, copies each to the device as it
 * arrives and hands its buffer back, so the disk, the checksums and the
 * copies all run at once. Before any piece is read, the header is checked
 * against the process (its pid and start time, its allocations' sizes) and
 * the file's size against the pieces it lists.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hook/hook.h"
#include "proto/park_file.h"

#define PARK_PIECE_DEFAULT (64ull << 20)  /* bytes */
#define PARK_PIECE_MIN (64ull << 10)      /* bytes */
#define PARK_THREADS_DEFAULT 4
#define PARK_THREADS_MAX 16
#define PARK_STAGING_DEFAULT 4
#define PARK_STAGING_MAX 16
#define BOUNCE_BYTES (1u << 20)           /* bytes: an aligned buffer for what O_DIRECT cannot take in place */
#define CU_MEMHOSTREGISTER_PORTABLE 0x01

_Static_assert(PARK_PIECE_DEFAULT <= VRAM_PARK_MAX_PIECE_BYTES && BOUNCE_BYTES % VRAM_PARK_ALIGN == 0,
	       "pieces fit the format; the bounce buffer is aligned");

static uint64_t now_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static unsigned env_count(const char *name, unsigned dflt, unsigned max)
{
	const char *s = secure_getenv(name);
	if (s && *s) {
		long v = strtol(s, NULL, 10);
		if (v >= 1 && v <= (long)max)
			return (unsigned)v;
	}
	return dflt;
}

static bool env_off(const char *name)
{
	const char *s = secure_getenv(name);
	return s && s[0] == '0';
}

/* Bytes per piece: VRAM_HOOK_PARK_PIECE, a power of two in [64 KiB, 1 GiB]. */
static uint64_t piece_setting(void)
{
	uint64_t v;
	const char *s = secure_getenv("VRAM_HOOK_PARK_PIECE");
	if (!s || vram_hook_parse_bytes(s, &v) < 0 || v < PARK_PIECE_MIN)
		return PARK_PIECE_DEFAULT;
	if (v > VRAM_PARK_MAX_PIECE_BYTES)
		v = VRAM_PARK_MAX_PIECE_BYTES;
	while (v & (v - 1))
		v &= v - 1;
	return v;
}

int vram_hook_self_start_ticks(uint64_t *ret)
{
	char buf[1024];
	int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -EIO;
	buf[n] = '\0';
	/* the name (field 2) may hold anything, spaces and ')' included: count from its last ')' */
	char *p = strrchr(buf, ')');
	for (int field = 2; p && field < 22; field++)
		p = strchr(p + 1, ' ');
	if (!p)
		return -EIO;
	*ret = strtoull(p + 1, NULL, 10);
	return 0;
}

/* The directory part of path into out (cap bytes), for messages. */
static void dir_of(const char *path, char *out, size_t cap)
{
	const char *slash = strrchr(path, '/');
	size_t len = !slash ? 1 : slash == path ? 1 : (size_t)(slash - path);
	snprintf(out, cap, "%.*s", (int)len, slash ? path : ".");
}

void vram_hook_park_remove(const char *path, dev_t dev, ino_t ino)
{
	struct stat sb;
	if (lstat(path, &sb) == 0 && sb.st_dev == dev && sb.st_ino == ino)
		(void)unlink(path);
}

/* ------------------------------------------------------------------ write */

struct writer {
	int fd;
	bool direct;
	const struct vram_hook_park_alloc *allocs;
	struct vram_park_piece *pieces;
	size_t npieces;
	_Atomic size_t next;           /* the next piece a thread takes */
	_Atomic int err;               /* the first error, -errno; 0 */
	_Atomic uint64_t written;      /* bytes of the host copy written so far */
};

static void writer_fail(struct writer *w, int err)
{
	int none = 0;
	atomic_compare_exchange_strong(&w->err, &none, err);
}

/*
 * pwrites len bytes of buf at off; the first data bytes of them count as
 * written, to w and to *counted (what this call chain added, so that a
 * retry can take it back without touching the other threads' counts).
 */
static int write_span(struct writer *w, const void *buf, size_t len, uint64_t off, uint64_t data, uint64_t *counted)
{
	const char *p = buf;
	while (len) {
		ssize_t n = pwrite(w->fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		uint64_t add = (uint64_t)n < data ? (uint64_t)n : data;
		atomic_fetch_add(&w->written, add);
		*counted += add;
		data -= add;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Writes len bytes from src at off through the aligned bounce buffer, zero-padded to the alignment. */
static int write_bounced(struct writer *w, uint8_t *bounce, const uint8_t *src, uint64_t len, uint64_t off,
			 uint64_t *counted)
{
	for (uint64_t done = 0; done < len;) {
		uint64_t n = len - done < BOUNCE_BYTES ? len - done : BOUNCE_BYTES;
		uint64_t padded = vram_park_align_up(n);
		memcpy(bounce, src + done, n);
		memset(bounce + n, 0, padded - n);
		int err = write_span(w, bounce, w->direct ? padded : n, off + done, n, counted);
		if (err < 0)
			return err;
		done += n;
	}
	return 0;
}

/*
 * One piece: its checksum, then its bytes. With O_DIRECT the aligned part
 * goes straight from the host buffer and the tail through the bounce
 * buffer; memory that O_DIRECT refuses (EFAULT, EINVAL: a driver's
 * mapping) goes through the bounce buffer whole.
 */
static int write_piece(struct writer *w, struct vram_park_piece *pc, uint8_t *bounce)
{
	const uint8_t *src = (const uint8_t *)w->allocs[pc->alloc].host + pc->offset;
	uint64_t counted = 0;
	pc->sum = vram_park_xxh64(src, pc->length, 0);
	if (!w->direct)
		return write_span(w, src, pc->length, pc->file_offset, pc->length, &counted);
	uint64_t aligned = pc->length & ~(uint64_t)(VRAM_PARK_ALIGN - 1);
	if ((uintptr_t)src % VRAM_PARK_ALIGN == 0 && aligned) {
		int err = write_span(w, src, aligned, pc->file_offset, aligned, &counted);
		if (err == -EFAULT || err == -EINVAL) {
			atomic_fetch_sub(&w->written, counted); /* written again below */
			counted = 0;
			return write_bounced(w, bounce, src, pc->length, pc->file_offset, &counted);
		}
		if (err < 0 || aligned == pc->length)
			return err;
		return write_bounced(w, bounce, src + aligned, pc->length - aligned, pc->file_offset + aligned,
				     &counted);
	}
	return write_bounced(w, bounce, src, pc->length, pc->file_offset, &counted);
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint8_t *bounce = NULL;
	if (posix_memalign((void **)&bounce, VRAM_PARK_ALIGN, BOUNCE_BYTES) != 0) {
		writer_fail(w, -ENOMEM);
		return NULL;
	}
	for (;;) {
		size_t i = atomic_fetch_add(&w->next, 1);
		if (i >= w->npieces || atomic_load(&w->err))
			break;
		int err = write_piece(w, &w->pieces[i], bounce);
		if (err < 0) {
			writer_fail(w, err);
			break;
		}
	}
	free(bounce);
	return NULL;
}

/*
 * Opens path with flags, and O_DIRECT unless VRAM_HOOK_PARK_DIRECT=0 or
 * the file system refuses it (EINVAL). Returns the fd or -errno.
 */
static int open_file(const char *path, int flags, mode_t mode, bool *ret_direct)
{
	bool try_direct = !env_off("VRAM_HOOK_PARK_DIRECT");
	int fd = try_direct ? open(path, flags | O_DIRECT, mode) : -1;
	*ret_direct = fd >= 0;
	if (fd < 0 && (!try_direct || errno == EINVAL))
		fd = open(path, flags, mode);
	return fd < 0 ? -errno : fd;
}

/* The reason a write failed, with the numbers. */
static void write_why(char *why, size_t cap, const char *path, int err, uint64_t written, uint64_t total)
{
	char dir[VRAM_HOOK_PARK_PATH_MAX];
	dir_of(path, dir, sizeof(dir));
	switch (err) {
	case -ENOSPC:
		vram_hook_textf(why, cap, "no space on %s: wrote %llu of %llu bytes", dir, (unsigned long long)written,
				(unsigned long long)total);
		break;
	case -EDQUOT:
		vram_hook_textf(why, cap, "disk quota exceeded on %s: wrote %llu of %llu bytes", dir,
				(unsigned long long)written, (unsigned long long)total);
		break;
	case -EFBIG:
		vram_hook_textf(why, cap, "file size limit reached on %s (RLIMIT_FSIZE or the file system's): "
				"wrote %llu of %llu bytes", dir, (unsigned long long)written,
				(unsigned long long)total);
		break;
	default:
		vram_hook_textf(why, cap, "cannot write %s: %s: wrote %llu of %llu bytes", path, strerror(-err),
				(unsigned long long)written, (unsigned long long)total);
		break;
	}
}

int vram_hook_park_write(const char *path, const struct vram_hook_park_alloc *allocs, size_t n,
			 struct vram_hook_park_stats *st, char *why, size_t cap)
{
	uint64_t piece = piece_setting(), total = 0, t0 = now_usec();
	size_t npieces = 0;
	memset(st, 0, sizeof(*st));
	for (size_t i = 0; i < n; i++) {
		total += allocs[i].size;
		npieces += (size_t)((allocs[i].size + piece - 1) / piece);
	}
	st->total = total;
	uint64_t header_bytes = vram_park_header_size(n, npieces);
	if (!header_bytes) {
		vram_hook_textf(why, cap, "%zu allocations in %zu pieces are more than a park file holds (%u, %u)", n,
				npieces, VRAM_PARK_MAX_ALLOCS, VRAM_PARK_MAX_PIECES);
		return -E2BIG;
	}
	struct vram_park_header h = {
		.version = VRAM_PARK_VERSION,
		.header_bytes = (uint32_t)header_bytes,
		.pid = (uint32_t)getpid(),
		.piece_bytes = piece,
		.piece_count = npieces,
		.total_bytes = total,
		.alloc_count = n,
	};
	if (vram_hook_self_start_ticks(&h.start_ticks) < 0) {
		vram_hook_textf(why, cap, "cannot read this process's start time from /proc/self/stat");
		return -EIO;
	}
	struct vram_park_piece *pieces = npieces ? calloc(npieces, sizeof(*pieces)) : NULL;
	uint64_t *sizes = n ? calloc(n, sizeof(*sizes)) : NULL;
	uint8_t *head = NULL;
	struct writer w = { .fd = -1, .allocs = allocs, .pieces = pieces, .npieces = npieces };
	int err = 0;
	if ((npieces && !pieces) || (n && !sizes) || posix_memalign((void **)&head, VRAM_PARK_ALIGN, header_bytes)) {
		vram_hook_textf(why, cap, "out of memory for the piece table");
		err = -ENOMEM;
		goto out_free;
	}
	uint64_t at = header_bytes;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		sizes[i] = allocs[i].size;
		for (uint64_t off = 0; off < allocs[i].size; off += piece, k++) {
			uint64_t len = allocs[i].size - off < piece ? allocs[i].size - off : piece;
			pieces[k] = (struct vram_park_piece){ .alloc = (uint32_t)i, .offset = off, .length = len,
							      .file_offset = at };
			at += vram_park_align_up(len);
		}
	}

	/* new (never through an existing file or a link), ours alone */
	w.fd = open_file(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600, &w.direct);
	if (w.fd < 0) {
		err = w.fd;
		if (err == -EEXIST)
			vram_hook_textf(why, cap, "%s exists already (a park file is always new)", path);
		else
			vram_hook_textf(why, cap, "cannot create %s: %s", path, strerror(-err));
		goto out_free;
	}
	st->direct = w.direct;
	struct stat sb;
	if (fstat(w.fd, &sb) < 0) {
		err = -errno;
		close(w.fd);
		(void)unlink(path); /* just made by O_EXCL: ours */
		vram_hook_textf(why, cap, "cannot stat %s: %s", path, strerror(-err));
		goto out_free;
	}
	st->dev = sb.st_dev;
	st->ino = sb.st_ino;
	/* the whole size at once: a disk that is too small says so before a byte is written */
	if (!env_off("VRAM_HOOK_PARK_PREALLOCATE") && fallocate(w.fd, 0, 0, (off_t)at) < 0 && errno != EOPNOTSUPP &&
	    errno != ENOSYS) {
		err = -errno;
		goto out_write_failed;
	}

	unsigned want = env_count("VRAM_HOOK_PARK_THREADS", PARK_THREADS_DEFAULT, PARK_THREADS_MAX);
	if (want > npieces)
		want = npieces ? (unsigned)npieces : 1;
	pthread_t threads[PARK_THREADS_MAX];
	unsigned started = 0;
	while (started < want && pthread_create(&threads[started], NULL, writer_main, &w) == 0)
		started++;
	if (!started)
		writer_main(&w); /* no thread to be had: this one writes them all */
	for (unsigned t = 0; t < started; t++)
		pthread_join(threads[t], NULL);
	st->threads = started ? started : 1;
	st->pieces = npieces;
	err = atomic_load(&w.err);
	if (err)
		goto out_write_failed;

	/* the header last: it holds the checksums, and a file without it is no park file */
	if (vram_park_encode(head, &h, sizes, pieces) < 0) {
		err = -EINVAL;
		vram_hook_textf(why, cap, "cannot encode the header");
		goto out_close;
	}
	uint64_t none = 0;
	err = write_span(&w, head, header_bytes, 0, 0, &none);
	if (!err && fsync(w.fd) < 0)
		err = -errno;
	if (err)
		goto out_write_failed;
	if (!w.direct)
		(void)posix_fadvise(w.fd, 0, 0, POSIX_FADV_DONTNEED); /* it is read once, much later */
	if (close(w.fd) < 0) {
		w.fd = -1;
		err = -errno;
		goto out_write_failed;
	}
	w.fd = -1;
	st->written = atomic_load(&w.written);
	st->file_bytes = at;
	st->usec = now_usec() - t0;
	goto out_free;

out_write_failed:
	write_why(why, cap, path, err, atomic_load(&w.written), total);
out_close:
	st->written = atomic_load(&w.written);
	if (w.fd >= 0)
		close(w.fd);
	vram_hook_park_remove(path, st->dev, st->ino); /* O_EXCL made it: ours, unless replaced since */
out_free:
	free(head);
	free(sizes);
	free(pieces);
	return err;
}

/* ------------------------------------------------------------------- read */

enum slot_state { SLOT_FREE, SLOT_READY, SLOT_TAKEN };

struct slot {
	struct vram_hook_park_reader *r;
	unsigned index;
	uint8_t *buf;                  /* staging, r->buf_bytes */
	bool pinned;
	pthread_t thread;
	/* guarded by r->lock */
	enum slot_state state;
	size_t piece;                  /* READY, TAKEN: the piece it holds */
	int err;                       /* READY: 0, or why the piece could not be had */
	char why[200];
	int ev_dev;                    /* the device whose event follows the copies out of buf; -1: none */
	CUevent ev[VRAM_HOOK_MAX_DEVICES];
	CUcontext ctx[VRAM_HOOK_MAX_DEVICES]; /* each event's context, made current to wait for it */
};

struct vram_hook_park_reader {
	int fd;
	bool direct;
	char path[VRAM_HOOK_PARK_PATH_MAX];
	struct vram_park_header h;
	uint64_t *sizes;
	struct vram_park_piece *pieces;
	struct slot *slots;
	unsigned nslots;               /* slots with a reader thread */
	uint64_t buf_bytes;            /* per staging buffer */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool go, stop;
	size_t next;                   /* the piece vram_hook_park_read_next hands out next */
	dev_t dev;                     /* the file's, as opened */
	ino_t ino;
	uint64_t wait_us;              /* time the restore waited for the disk */
};

/*
 * Reads len bytes at off into buf (aligned for O_DIRECT). Returns the bytes
 * read (fewer at the end of the file) or -errno.
 */
static long read_at(int fd, void *buf, size_t len, uint64_t off)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = pread(fd, (char *)buf + got, len - got, (off_t)(off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (long)got;
}

/* Reads piece i into buf and checks it. Returns 0, -errno with why. */
static int read_piece(struct vram_hook_park_reader *r, size_t i, uint8_t *buf, char *why, size_t cap)
{
	const struct vram_park_piece *pc = &r->pieces[i];
	/* O_DIRECT reads whole blocks; the padding of the last piece may be missing (a buffered write) */
	long got = read_at(r->fd, buf, r->direct ? vram_park_align_up(pc->length) : pc->length, pc->file_offset);
	if (got < 0) {
		vram_hook_textf(why, cap, "cannot read piece %zu of %s: %s", i, r->path, strerror((int)-got));
		return (int)got;
	}
	if ((uint64_t)got < pc->length) {
		vram_hook_textf(why, cap, "short read in piece %zu of %s: %ld of %llu bytes", i, r->path, got,
				(unsigned long long)pc->length);
		return -ENODATA;
	}
	if (vram_park_xxh64(buf, pc->length, 0) != pc->sum) {
		vram_hook_textf(why, cap, "checksum mismatch in piece %zu of %s (allocation %u, bytes %llu..%llu)", i,
				r->path, pc->alloc, (unsigned long long)pc->offset,
				(unsigned long long)(pc->offset + pc->length));
		return -EBADMSG;
	}
	return 0;
}

static void *reader_main(void *arg)
{
	struct slot *s = arg;
	struct vram_hook_park_reader *r = s->r;
	pthread_mutex_lock(&r->lock);
	while (!r->go && !r->stop)
		pthread_cond_wait(&r->cond, &r->lock);
	unsigned stride = r->nslots;
	pthread_mutex_unlock(&r->lock);
	for (size_t i = s->index; i < r->h.piece_count; i += stride) {
		pthread_mutex_lock(&r->lock);
		while (s->state != SLOT_FREE && !r->stop)
			pthread_cond_wait(&r->cond, &r->lock);
		bool stop = r->stop;
		int ev_dev = s->ev_dev;
		pthread_mutex_unlock(&r->lock);
		if (stop)
			break;
		/* the copies out of the buffer must be done before it is overwritten; one that
		 * failed is the restore's to see when it synchronizes its streams */
		if (ev_dev >= 0) {
			(void)VRAM_REAL(cuCtxSetCurrent)(s->ctx[ev_dev]);
			(void)VRAM_REAL(cuEventSynchronize)(s->ev[ev_dev]);
		}
		char why[sizeof(s->why)];
		int err = read_piece(r, i, s->buf, why, sizeof(why));
		pthread_mutex_lock(&r->lock);
		s->ev_dev = -1;
		s->piece = i;
		s->err = err;
		if (err)
			snprintf(s->why, sizeof(s->why), "%s", why);
		s->state = SLOT_READY;
		pthread_cond_broadcast(&r->cond);
		pthread_mutex_unlock(&r->lock);
		if (err)
			break; /* the restore stops at the first error */
	}
	return NULL;
}

/* Frees the staging buffers, the events and the tables; closes the file. The threads are gone. */
static void reader_free(struct vram_hook_park_reader *r)
{
	for (unsigned k = 0; r->slots && k < PARK_STAGING_MAX; k++) {
		struct slot *s = &r->slots[k];
		if (s->buf) {
			if (s->pinned)
				VRAM_REAL(cuMemHostUnregister)(s->buf);
			munmap(s->buf, r->buf_bytes);
		}
		for (int d = 0; d < VRAM_HOOK_MAX_DEVICES; d++)
			if (s->ev[d])
				VRAM_REAL(cuEventDestroy_v2)(s->ev[d]);
	}
	if (r->fd >= 0)
		close(r->fd);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->cond);
	free(r->slots);
	free(r->sizes);
	free(r->pieces);
	free(r);
}

/*
 * Reads and checks the header of r's file against this process: its pid
 * and start time, sizes (expected[i] the size of allocation i here; 0: no
 * longer here, not compared), and the file's size against its pieces.
 */
static int reader_check(struct vram_hook_park_reader *r, const uint64_t *expected, size_t n, char *why, size_t cap)
{
	uint8_t *head = NULL;
	const char *bad = NULL;
	int err = -ENOMEM;
	struct stat sb;
	if (fstat(r->fd, &sb) < 0) {
		err = -errno;
		vram_hook_textf(why, cap, "cannot stat %s: %s", r->path, strerror(-err));
		return err;
	}
	r->dev = sb.st_dev;
	r->ino = sb.st_ino;
	if (!S_ISREG(sb.st_mode) || sb.st_uid != geteuid() || (sb.st_mode & 022)) {
		vram_hook_textf(why, cap, "%s is not a park file of this process's user (a regular file of uid %u, "
				"not writable by others): uid %u, mode %o", r->path, (unsigned)geteuid(),
				(unsigned)sb.st_uid, (unsigned)(sb.st_mode & 07777));
		return -EPERM;
	}
	if (posix_memalign((void **)&head, VRAM_PARK_ALIGN, VRAM_PARK_ALIGN) != 0)
		goto out_oom;
	long got = read_at(r->fd, head, VRAM_PARK_ALIGN, 0);
	if (got < 0) {
		err = (int)got;
		vram_hook_textf(why, cap, "cannot read the header of %s: %s", r->path, strerror(-err));
		goto out_free;
	}
	err = -EBADMSG;
	if (vram_park_decode_fixed(head, (size_t)got, &r->h, &bad) < 0)
		goto out_bad;
	if (r->h.header_bytes > VRAM_PARK_ALIGN) {
		free(head);
		head = NULL;
		if (posix_memalign((void **)&head, VRAM_PARK_ALIGN, r->h.header_bytes) != 0)
			goto out_oom;
		got = read_at(r->fd, head, r->h.header_bytes, 0);
		if (got < 0) {
			err = (int)got;
			vram_hook_textf(why, cap, "cannot read the header of %s: %s", r->path, strerror(-err));
			goto out_free;
		}
	}
	if ((uint64_t)got < r->h.header_bytes) {
		vram_hook_textf(why, cap, "%s is truncated: %lld bytes, its header alone has %u", r->path,
				(long long)sb.st_size, r->h.header_bytes);
		err = -ENODATA;
		goto out_free;
	}
	r->sizes = r->h.alloc_count ? calloc(r->h.alloc_count, sizeof(*r->sizes)) : NULL;
	r->pieces = r->h.piece_count ? calloc(r->h.piece_count, sizeof(*r->pieces)) : NULL;
	if ((r->h.alloc_count && !r->sizes) || (r->h.piece_count && !r->pieces))
		goto out_oom;
	if (vram_park_decode_tables(head, &r->h, r->sizes, r->pieces, &bad) < 0)
		goto out_bad;
	uint64_t start = 0;
	if (r->h.pid != (uint32_t)getpid() || vram_hook_self_start_ticks(&start) < 0 || r->h.start_ticks != start) {
		vram_hook_textf(why, cap, "%s belongs to pid %u started at tick %llu, not to this process (pid %d, "
				"tick %llu)", r->path, r->h.pid, (unsigned long long)r->h.start_ticks, (int)getpid(),
				(unsigned long long)start);
		err = -EPERM;
		goto out_free;
	}
	if (r->h.alloc_count != n) {
		vram_hook_textf(why, cap, "%s holds %llu allocations, this process parked %zu", r->path,
				(unsigned long long)r->h.alloc_count, n);
		goto out_free;
	}
	for (size_t i = 0; i < n; i++) {
		if (expected[i] && expected[i] != r->sizes[i]) {
			vram_hook_textf(why, cap, "%s does not match this process: allocation %zu has %llu bytes in "
					"the file, %llu here", r->path, i, (unsigned long long)r->sizes[i],
					(unsigned long long)expected[i]);
			goto out_free;
		}
	}
	for (size_t i = 0; i < r->h.piece_count; i++) {
		const struct vram_park_piece *pc = &r->pieces[i];
		if (pc->file_offset + pc->length > (uint64_t)sb.st_size) {
			vram_hook_textf(why, cap, "%s is truncated: %lld bytes, piece %zu (allocation %u) ends at %llu",
					r->path, (long long)sb.st_size, i, pc->alloc,
					(unsigned long long)(pc->file_offset + pc->length));
			err = -ENODATA;
			goto out_free;
		}
	}
	free(head);
	return 0;

out_bad:
	vram_hook_textf(why, cap, "%s: %s", r->path, bad);
	goto out_free;
out_oom:
	err = -ENOMEM;
	vram_hook_textf(why, cap, "out of memory for the header of %s", r->path);
out_free:
	free(head);
	return err;
}

/* Makes slot s's staging buffer: aligned for O_DIRECT, pinned where the driver lets it. */
static int slot_buffer(struct vram_hook_park_reader *r, struct slot *s)
{
	void *p = mmap(NULL, r->buf_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	madvise(p, r->buf_bytes, MADV_DONTFORK);
	s->buf = p;
	s->pinned = VRAM_REAL(cuMemHostRegister_v2)(p, r->buf_bytes, CU_MEMHOSTREGISTER_PORTABLE) == CUDA_SUCCESS;
	if (!s->pinned)
		vram_hook_log(VRAM_HOOK_LOG_WARN, "park: staging buffer %u is not pinned: copies run at pageable speed",
			      s->index);
	return 0;
}

int vram_hook_park_read_open(const char *path, const uint64_t *expected, size_t n,
			     struct vram_hook_park_reader **ret, char *why, size_t cap)
{
	struct vram_hook_park_reader *r = calloc(1, sizeof(*r));
	if (!r) {
		vram_hook_textf(why, cap, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	snprintf(r->path, sizeof(r->path), "%s", path);
	r->fd = open_file(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0, &r->direct);
	int err;
	if (r->fd < 0) {
		err = r->fd;
		if (err == -ENOENT)
			vram_hook_textf(why, cap, "the park file %s is missing", path);
		else
			vram_hook_textf(why, cap, "cannot open %s: %s", path, strerror(-err));
		goto out_free;
	}
	err = reader_check(r, expected, n, why, cap);
	if (err < 0)
		goto out_free;
	if (!r->direct)
		(void)posix_fadvise(r->fd, 0, 0, POSIX_FADV_SEQUENTIAL);

	unsigned want = env_count("VRAM_HOOK_PARK_STAGING", PARK_STAGING_DEFAULT, PARK_STAGING_MAX);
	if (want < 2)
		want = 2; /* one filling while one copies, at least */
	if (want > r->h.piece_count)
		want = r->h.piece_count ? (unsigned)r->h.piece_count : 1;
	r->buf_bytes = vram_park_align_up(r->h.piece_bytes);
	r->slots = calloc(PARK_STAGING_MAX, sizeof(*r->slots));
	err = -ENOMEM;
	if (!r->slots) {
		vram_hook_textf(why, cap, "out of memory");
		goto out_free;
	}
	for (unsigned k = 0; k < want && r->h.piece_count; k++) {
		struct slot *s = &r->slots[k];
		s->r = r;
		s->index = k;
		s->ev_dev = -1;
		if (slot_buffer(r, s) < 0) {
			if (k)
				break; /* fewer buffers, fewer reads in flight */
			vram_hook_textf(why, cap, "cannot map a staging buffer of %llu bytes",
					(unsigned long long)r->buf_bytes);
			goto out_free;
		}
		if (pthread_create(&s->thread, NULL, reader_main, s) != 0) {
			if (k)
				break;
			vram_hook_textf(why, cap, "cannot start a reader thread");
			err = -EAGAIN;
			goto out_free;
		}
		r->nslots = k + 1;
	}
	pthread_mutex_lock(&r->lock);
	r->go = true; /* the threads read with the stride of the slots that exist */
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	*ret = r;
	return 0;

out_free:
	vram_hook_park_read_close(r);
	return err;
}

void vram_hook_park_read_info(const struct vram_hook_park_reader *r, struct vram_hook_park_stats *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->total = r->h.total_bytes;
	ret->pieces = r->h.piece_count;
	ret->direct = r->direct;
	ret->threads = r->nslots;
	ret->staging_bytes = r->buf_bytes;
	ret->usec = r->wait_us;
	ret->dev = r->dev;
	ret->ino = r->ino;
}

int vram_hook_park_read_next(struct vram_hook_park_reader *r, struct vram_hook_park_chunk *ret, char *why,
			     size_t cap)
{
	if (r->next >= r->h.piece_count)
		return 0;
	size_t i = r->next;
	struct slot *s = &r->slots[i % r->nslots];
	uint64_t t0 = now_usec();
	pthread_mutex_lock(&r->lock);
	while (!(s->state == SLOT_READY && s->piece == i))
		pthread_cond_wait(&r->cond, &r->lock);
	int err = s->err;
	if (err)
		vram_hook_textf(why, cap, "%s", s->why);
	else
		s->state = SLOT_TAKEN;
	pthread_mutex_unlock(&r->lock);
	r->wait_us += now_usec() - t0;
	if (err)
		return err;
	const struct vram_park_piece *pc = &r->pieces[i];
	*ret = (struct vram_hook_park_chunk){ .index = i, .alloc = pc->alloc, .offset = pc->offset,
					      .length = pc->length, .data = s->buf };
	r->next++;
	return 1;
}

int vram_hook_park_read_done(struct vram_hook_park_reader *r, int dev, CUstream stream)
{
	struct slot *s = &r->slots[(r->next - 1) % r->nslots];
	int err = 0, ev_dev = -1;
	if (dev >= 0 && dev < VRAM_HOOK_MAX_DEVICES) {
		/* the event is made in dev's context, current on this thread: the copy's */
		if (!s->ev[dev] && (VRAM_REAL(cuCtxGetCurrent)(&s->ctx[dev]) != CUDA_SUCCESS ||
				    VRAM_REAL(cuEventCreate)(&s->ev[dev], CU_EVENT_DISABLE_TIMING) != CUDA_SUCCESS))
			s->ev[dev] = NULL;
		if (s->ev[dev] && VRAM_REAL(cuEventRecord)(s->ev[dev], stream) == CUDA_SUCCESS)
			ev_dev = dev;
		else if (VRAM_REAL(cuStreamSynchronize)(stream) != CUDA_SUCCESS)
			err = -EIO; /* no event: the buffer is free only once the stream is done */
	}
	pthread_mutex_lock(&r->lock);
	s->ev_dev = ev_dev;
	s->state = SLOT_FREE;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	return err;
}

void vram_hook_park_read_close(struct vram_hook_park_reader *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	r->stop = true;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	for (unsigned k = 0; k < r->nslots; k++)
		pthread_join(r->slots[k].thread, NULL);
	reader_free(r);
}
