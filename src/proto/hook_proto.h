/* SPDX-License-Identifier: MIT */
/*
 * The protocol between libvram.so (inside a workload process) and vramd, over
 * a Unix stream socket (VRAM_HOOK_SOCKET). Header-only, so that the hook can
 * use it without linking vramd's library.
 *
 * Every message is a 16-byte header followed by a payload whose length is
 * fixed by the message type. All integers are little-endian; strings are
 * fixed-size fields that must contain a NUL. The encoder writes every byte
 * explicitly (no struct is copied to the wire), and the decoder rejects
 * anything that is not exactly a message of a version it knows: wrong magic
 * or version, unknown type, a length that does not match the type and
 * version, a device count above VRAM_HOOK_PROTO_MAX_DEVICES, an unterminated
 * string, an unknown operation or state (for the version), an unknown hello
 * flag.
 *
 * Versions: 2 adds to HELLO a flags word and the text of a VRAM_MEMORY_LIMIT
 * that did not parse; every other message is the same as in 1. 3 (current)
 * adds the disk tier: the commands PARK (with the path of the park file)
 * and DROP_HOST, the states PARKING and PARKED, and to USAGE the host
 * memory the process holds (host_pinned, host_kept, parked). The decoder
 * accepts every version from VRAM_HOOK_PROTO_VERSION_MIN and says which it
 * read (msg.version); the encoder writes msg.version (0 = current), so vramd
 * answers an older hook in its version and hooks loaded before an upgrade
 * keep working. What an older version cannot carry (PARK, DROP_HOST, the
 * new states, hello flags in version 1) is refused by the encoder rather
 * than dropped. A hook needs a vramd that knows its version. 4 (current)
 * adds overlapped swaps: PROGRESS (the device memory an offload has given
 * back so far, per device), GRANT (the device memory a restore may take,
 * per device), the OFFLOAD flag PROGRESS and the RESTORE flag GRANTED, and
 * PREPARE_HOST (make the pinned host buffers of a running process ahead of
 * its first offload, in the background, up to a number of bytes).
 *
 * Conversation: the hook connects and sends HELLO, then USAGE whenever its
 * numbers change (at most once a second), in answer to PING and, from
 * version 3, right before each RESULT. vramd sends OFFLOAD, RESTORE, PARK
 * or DROP_HOST; the hook answers each with one RESULT carrying the same
 * request_id. An OFFLOAD with the flag PROGRESS is followed, before its
 * RESULT, by PROGRESS messages whenever device memory has been given back;
 * a RESTORE with the flag GRANTED creates device memory only within what
 * GRANT messages for its request_id allow (none: nothing), and a GRANT with
 * the flag CANCEL ends it: the restore is undone and answered -ECANCELED.
 */
#ifndef VRAM_HOOK_PROTO_H
#define VRAM_HOOK_PROTO_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define VRAM_HOOK_PROTO_MAGIC 0x4b485256u /* "VRHK" on the wire */
#define VRAM_HOOK_PROTO_VERSION 4     /* written by default */
#define VRAM_HOOK_PROTO_VERSION_PARK 3 /* the first with PARK, DROP_HOST and host numbers */
#define VRAM_HOOK_PROTO_VERSION_GRANT 4 /* the first with PROGRESS, GRANT and their flags */
#define VRAM_HOOK_PROTO_VERSION_MIN 1 /* oldest still read and written */
#define VRAM_HOOK_PROTO_MAX_DEVICES 16
#define VRAM_HOOK_PROTO_NAME_MAX 64   /* bytes, NUL included */
#define VRAM_HOOK_PROTO_TEXT_MAX 256  /* bytes, NUL included */
#define VRAM_HOOK_PROTO_LIMIT_TEXT_MAX 128 /* bytes, NUL included */
#define VRAM_HOOK_PROTO_PATH_MAX 256  /* bytes of a park file's path, NUL included */
#define VRAM_HOOK_PROTO_HEADER_SIZE 16
#define VRAM_HOOK_PROTO_MAX_MESSAGE 2048 /* bytes, header included */

enum vram_hook_msg_type {
	VRAM_HOOK_MSG_HELLO = 1,   /* hook -> vramd */
	VRAM_HOOK_MSG_USAGE = 2,   /* hook -> vramd */
	VRAM_HOOK_MSG_OFFLOAD = 3, /* vramd -> hook */
	VRAM_HOOK_MSG_RESTORE = 4, /* vramd -> hook */
	VRAM_HOOK_MSG_RESULT = 5,  /* hook -> vramd, answers OFFLOAD/RESTORE */
	VRAM_HOOK_MSG_PING = 6,    /* vramd -> hook, answered by USAGE */
	VRAM_HOOK_MSG_PARK = 7,    /* vramd -> hook (version 3): write the host copy to a file, free it */
	VRAM_HOOK_MSG_DROP_HOST = 8, /* vramd -> hook (version 3): free the host buffers kept after a restore */
	VRAM_HOOK_MSG_PROGRESS = 9,  /* hook -> vramd (version 4): an offload's memory given back so far */
	VRAM_HOOK_MSG_GRANT = 10,    /* vramd -> hook (version 4): what a GRANTED restore may take */
	VRAM_HOOK_MSG_PREPARE_HOST = 11, /* vramd -> hook (version 4): make host buffers ahead, up to limit */
};

enum vram_hook_state {
	VRAM_HOOK_STATE_RUNNING = 0,
	VRAM_HOOK_STATE_OFFLOADING = 1,
	VRAM_HOOK_STATE_OFFLOADED = 2,
	VRAM_HOOK_STATE_RESTORING = 3,
	VRAM_HOOK_STATE_PARKING = 4, /* version 3: writing its host copy to its park file */
	VRAM_HOOK_STATE_PARKED = 5,  /* version 3: offloaded, its copy in its park file only */
};

/* OFFLOAD flags. */
#define VRAM_HOOK_OFFLOAD_DROP_HOST 0x1u /* free the host buffers after the next restore */
/*
 * Version 4: report PROGRESS, and never take back memory once some is
 * given back: a copy that fails then leaves the process offloaded (the
 * RESULT has the error and state OFFLOADED), since what it gave back may
 * be granted to another process already.
 */
#define VRAM_HOOK_OFFLOAD_PROGRESS 0x2u
/* RESTORE flags (version 4): create device memory only within the GRANTs. */
#define VRAM_HOOK_RESTORE_GRANTED 0x4u
#define VRAM_HOOK_COMMAND_KNOWN_FLAGS                                                                  \
	(VRAM_HOOK_OFFLOAD_DROP_HOST | VRAM_HOOK_OFFLOAD_PROGRESS | VRAM_HOOK_RESTORE_GRANTED |         \
	 VRAM_HOOK_OFFLOAD_GATE_ONLY | VRAM_HOOK_RESTORE_HOLD_GATE)
/* GRANT flags. */
#define VRAM_HOOK_GRANT_CANCEL 0x1u /* give up the restore: undo it, answer -ECANCELED */
/*
 * Groups (the processes of one workload moved as one; only to a hook whose
 * HELLO has VRAM_HOOK_HELLO_GROUP): OFFLOAD with GATE_ONLY closes the gate
 * and waits for the calls in it, nothing more (state offloading); the
 * OFFLOAD that follows copies. RESTORE with HOLD_GATE restores and keeps
 * the gate closed (state restoring); a RESTORE to a process whose gate is
 * held (after either) opens it. An OFFLOAD to a restored process whose gate
 * is held moves it again (a group's rollback).
 */
#define VRAM_HOOK_OFFLOAD_GATE_ONLY 0x8u
#define VRAM_HOOK_RESTORE_HOLD_GATE 0x10u

/* HELLO flags (version 2). */
#define VRAM_HOOK_HELLO_LIMIT_INVALID 0x1u /* VRAM_MEMORY_LIMIT did not parse: no cap; see limit_text */
#define VRAM_HOOK_HELLO_GROUP 0x2u         /* understands GATE_ONLY and HOLD_GATE */
#define VRAM_HOOK_HELLO_KNOWN_FLAGS (VRAM_HOOK_HELLO_LIMIT_INVALID | VRAM_HOOK_HELLO_GROUP)

struct vram_hook_proto_dev {
	uint32_t index;          /* CUDA device ordinal in the process */
	uint8_t uuid[16];
	uint64_t physical;       /* bytes, the device's memory */
	uint64_t cap;            /* bytes, 0 = no cap */
	uint64_t used;           /* bytes charged to the process, context included */
	uint64_t resident;       /* bytes on the device now (used minus offloaded) */
	uint64_t nonmovable;     /* bytes that an offload cannot move */
};

struct vram_hook_proto_hello {
	uint32_t pid;
	uint32_t ndev;           /* <= VRAM_HOOK_PROTO_MAX_DEVICES */
	char workload[VRAM_HOOK_PROTO_NAME_MAX];
	struct vram_hook_proto_dev dev[VRAM_HOOK_PROTO_MAX_DEVICES];
	/* version 2; zero when read from version 1 */
	uint32_t flags;          /* VRAM_HOOK_HELLO_* */
	char limit_text[VRAM_HOOK_PROTO_LIMIT_TEXT_MAX]; /* the unparsed VRAM_MEMORY_LIMIT, cut to fit */
};

struct vram_hook_proto_usage {
	uint32_t state;          /* enum vram_hook_state */
	uint32_t ndev;
	struct vram_hook_proto_dev dev[VRAM_HOOK_PROTO_MAX_DEVICES];
	/* version 3; zero when read from an older one */
	uint64_t host_pinned;    /* bytes of pinned host memory the process holds now */
	uint64_t host_kept;      /* bytes of host_pinned kept after a restore (DROP_HOST frees them) */
	uint64_t parked;         /* bytes of its memory in its park file */
};

struct vram_hook_proto_command {
	uint32_t request_id;
	uint32_t flags;          /* VRAM_HOOK_OFFLOAD_* */
	char path[VRAM_HOOK_PROTO_PATH_MAX]; /* PARK only: the file to write; on the wire only for PARK */
	uint64_t limit;          /* PREPARE_HOST only: bytes of buffers it may make; on the wire only there */
};

/*
 * PROGRESS (hook -> vramd): bytes of device memory the offload request_id
 * has given back so far, per device ordinal of the process. GRANT (vramd ->
 * hook): bytes of device memory the GRANTED restore request_id may have
 * created in all, per device ordinal; grants only grow.
 */
struct vram_hook_proto_grant {
	uint32_t request_id;
	uint32_t flags;          /* GRANT: VRAM_HOOK_GRANT_*; PROGRESS: 0 */
	uint64_t bytes[VRAM_HOOK_PROTO_MAX_DEVICES];
};

struct vram_hook_proto_result {
	uint32_t request_id;
	uint32_t op;             /* the VRAM_HOOK_MSG_* command it answers */
	int32_t status;          /* 0 or -errno */
	uint32_t state;          /* enum vram_hook_state after the operation */
	uint64_t bytes;          /* bytes moved */
	uint64_t nonmovable;     /* bytes that stayed on the device */
	uint64_t missing;        /* bytes of device memory a failed restore lacked */
	uint64_t usec;           /* duration */
	char text[VRAM_HOOK_PROTO_TEXT_MAX]; /* error or summary, for people */
};

struct vram_hook_proto_msg {
	uint16_t version;        /* on encode: 0 = VRAM_HOOK_PROTO_VERSION; on decode: as read */
	uint16_t type;           /* enum vram_hook_msg_type */
	uint32_t seq;            /* sender's counter, for logs */
	union {
		struct vram_hook_proto_hello hello;
		struct vram_hook_proto_usage usage;
		struct vram_hook_proto_command command;
		struct vram_hook_proto_result result;
		struct vram_hook_proto_grant grant; /* PROGRESS and GRANT */
	} u;
};

#define VRAM_HOOK_PROTO_DEV_SIZE (4 + 16 + 5 * 8)
#define VRAM_HOOK_PROTO_HELLO_V1_SIZE \
	(8 + VRAM_HOOK_PROTO_NAME_MAX + VRAM_HOOK_PROTO_MAX_DEVICES * VRAM_HOOK_PROTO_DEV_SIZE)
#define VRAM_HOOK_PROTO_HELLO_SIZE (VRAM_HOOK_PROTO_HELLO_V1_SIZE + 4 + VRAM_HOOK_PROTO_LIMIT_TEXT_MAX)
#define VRAM_HOOK_PROTO_USAGE_V2_SIZE (8 + VRAM_HOOK_PROTO_MAX_DEVICES * VRAM_HOOK_PROTO_DEV_SIZE)
#define VRAM_HOOK_PROTO_USAGE_SIZE (VRAM_HOOK_PROTO_USAGE_V2_SIZE + 3 * 8)
#define VRAM_HOOK_PROTO_COMMAND_SIZE 8
#define VRAM_HOOK_PROTO_PARK_SIZE (VRAM_HOOK_PROTO_COMMAND_SIZE + VRAM_HOOK_PROTO_PATH_MAX)
#define VRAM_HOOK_PROTO_RESULT_SIZE (16 + 4 * 8 + VRAM_HOOK_PROTO_TEXT_MAX)
#define VRAM_HOOK_PROTO_PING_SIZE 0
#define VRAM_HOOK_PROTO_GRANT_SIZE (8 + VRAM_HOOK_PROTO_MAX_DEVICES * 8)
#define VRAM_HOOK_PROTO_PREPARE_SIZE (VRAM_HOOK_PROTO_COMMAND_SIZE + 8)

_Static_assert(VRAM_HOOK_PROTO_HEADER_SIZE + VRAM_HOOK_PROTO_HELLO_SIZE <= VRAM_HOOK_PROTO_MAX_MESSAGE,
	       "hello fits");
_Static_assert(VRAM_HOOK_PROTO_HEADER_SIZE + VRAM_HOOK_PROTO_USAGE_SIZE <= VRAM_HOOK_PROTO_MAX_MESSAGE,
	       "usage fits");
_Static_assert(VRAM_HOOK_PROTO_HEADER_SIZE + VRAM_HOOK_PROTO_PARK_SIZE <= VRAM_HOOK_PROTO_MAX_MESSAGE,
	       "park fits");

static inline bool vram_hook_proto_version_ok(uint16_t version)
{
	return version >= VRAM_HOOK_PROTO_VERSION_MIN && version <= VRAM_HOOK_PROTO_VERSION;
}

/* Payload length of a message type in a known version, or -1 for a type the version lacks. */
static inline long vram_hook_proto_payload_size(uint16_t version, uint16_t type)
{
	switch (type) {
	case VRAM_HOOK_MSG_HELLO:
		return version >= 2 ? VRAM_HOOK_PROTO_HELLO_SIZE : VRAM_HOOK_PROTO_HELLO_V1_SIZE;
	case VRAM_HOOK_MSG_USAGE:
		return version >= VRAM_HOOK_PROTO_VERSION_PARK ? VRAM_HOOK_PROTO_USAGE_SIZE
							     : VRAM_HOOK_PROTO_USAGE_V2_SIZE;
	case VRAM_HOOK_MSG_OFFLOAD:
	case VRAM_HOOK_MSG_RESTORE: return VRAM_HOOK_PROTO_COMMAND_SIZE;
	case VRAM_HOOK_MSG_RESULT: return VRAM_HOOK_PROTO_RESULT_SIZE;
	case VRAM_HOOK_MSG_PING: return VRAM_HOOK_PROTO_PING_SIZE;
	case VRAM_HOOK_MSG_PARK:
		return version >= VRAM_HOOK_PROTO_VERSION_PARK ? VRAM_HOOK_PROTO_PARK_SIZE : -1;
	case VRAM_HOOK_MSG_DROP_HOST:
		return version >= VRAM_HOOK_PROTO_VERSION_PARK ? VRAM_HOOK_PROTO_COMMAND_SIZE : -1;
	case VRAM_HOOK_MSG_PROGRESS:
	case VRAM_HOOK_MSG_GRANT:
		return version >= VRAM_HOOK_PROTO_VERSION_GRANT ? VRAM_HOOK_PROTO_GRANT_SIZE : -1;
	case VRAM_HOOK_MSG_PREPARE_HOST:
		return version >= VRAM_HOOK_PROTO_VERSION_GRANT ? VRAM_HOOK_PROTO_PREPARE_SIZE : -1;
	default: return -1;
	}
}

/* The highest hook state a version knows. */
static inline uint32_t vram_hook_proto_max_state(uint16_t version)
{
	return version >= VRAM_HOOK_PROTO_VERSION_PARK ? VRAM_HOOK_STATE_PARKED : VRAM_HOOK_STATE_RESTORING;
}

/* Whether a RESULT of version may answer the command op. */
static inline bool vram_hook_proto_result_op_ok(uint16_t version, uint32_t op)
{
	if (op == VRAM_HOOK_MSG_OFFLOAD || op == VRAM_HOOK_MSG_RESTORE)
		return true;
	if (op == VRAM_HOOK_MSG_PREPARE_HOST)
		return version >= VRAM_HOOK_PROTO_VERSION_GRANT;
	return version >= VRAM_HOOK_PROTO_VERSION_PARK && (op == VRAM_HOOK_MSG_PARK || op == VRAM_HOOK_MSG_DROP_HOST);
}

/* ---- little-endian cursor helpers (bounds are checked by the callers) */

static inline uint8_t *vram_hook_proto_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
	return p + 4;
}

static inline uint8_t *vram_hook_proto_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
	return p + 8;
}

static inline uint8_t *vram_hook_proto_putstr(uint8_t *p, const char *s, size_t field)
{
	size_t n = strnlen(s, field - 1);
	memcpy(p, s, n);
	memset(p + n, 0, field - n);
	return p + field;
}

static inline const uint8_t *vram_hook_proto_get32(const uint8_t *p, uint32_t *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++)
		*v |= (uint32_t)p[i] << (8 * i);
	return p + 4;
}

static inline const uint8_t *vram_hook_proto_get64(const uint8_t *p, uint64_t *v)
{
	*v = 0;
	for (int i = 0; i < 8; i++)
		*v |= (uint64_t)p[i] << (8 * i);
	return p + 8;
}

/* Copies a fixed string field; false if it holds no NUL. */
static inline bool vram_hook_proto_getstr(const uint8_t *p, char *out, size_t field)
{
	if (!memchr(p, 0, field))
		return false;
	memcpy(out, p, field);
	return true;
}

static inline uint8_t *vram_hook_proto_put_devs(uint8_t *p, const struct vram_hook_proto_dev *dev, uint32_t ndev)
{
	for (uint32_t i = 0; i < VRAM_HOOK_PROTO_MAX_DEVICES; i++) {
		struct vram_hook_proto_dev zero = { 0 };
		const struct vram_hook_proto_dev *d = i < ndev ? &dev[i] : &zero;
		p = vram_hook_proto_put32(p, d->index);
		memcpy(p, d->uuid, 16);
		p += 16;
		p = vram_hook_proto_put64(p, d->physical);
		p = vram_hook_proto_put64(p, d->cap);
		p = vram_hook_proto_put64(p, d->used);
		p = vram_hook_proto_put64(p, d->resident);
		p = vram_hook_proto_put64(p, d->nonmovable);
	}
	return p;
}

static inline const uint8_t *vram_hook_proto_get_devs(const uint8_t *p, struct vram_hook_proto_dev *dev)
{
	for (uint32_t i = 0; i < VRAM_HOOK_PROTO_MAX_DEVICES; i++) {
		struct vram_hook_proto_dev *d = &dev[i];
		p = vram_hook_proto_get32(p, &d->index);
		memcpy(d->uuid, p, 16);
		p += 16;
		p = vram_hook_proto_get64(p, &d->physical);
		p = vram_hook_proto_get64(p, &d->cap);
		p = vram_hook_proto_get64(p, &d->used);
		p = vram_hook_proto_get64(p, &d->resident);
		p = vram_hook_proto_get64(p, &d->nonmovable);
	}
	return p;
}

/*
 * Encodes m into buf (cap bytes) in version m->version (0: the current one).
 * Returns the number of bytes written, or -EINVAL (unknown version or type,
 * too many devices, anything the version cannot carry: hello flags in
 * version 1, PARK, DROP_HOST, the park states and host numbers before
 * version 3; a park path without a NUL in its field) or -ENOBUFS (cap too
 * small).
 */
static inline long vram_hook_proto_encode(const struct vram_hook_proto_msg *m, uint8_t *buf, size_t cap)
{
	uint16_t version = m->version ? m->version : VRAM_HOOK_PROTO_VERSION;
	if (!vram_hook_proto_version_ok(version))
		return -EINVAL;
	long payload = vram_hook_proto_payload_size(version, m->type);
	if (payload < 0)
		return -EINVAL;
	if (cap < (size_t)(VRAM_HOOK_PROTO_HEADER_SIZE + payload))
		return -ENOBUFS;
	uint8_t *p = buf;
	p = vram_hook_proto_put32(p, VRAM_HOOK_PROTO_MAGIC);
	p[0] = (uint8_t)(version & 0xff);
	p[1] = (uint8_t)(version >> 8);
	p[2] = (uint8_t)(m->type & 0xff);
	p[3] = (uint8_t)(m->type >> 8);
	p += 4;
	p = vram_hook_proto_put32(p, (uint32_t)payload);
	p = vram_hook_proto_put32(p, m->seq);
	switch (m->type) {
	case VRAM_HOOK_MSG_HELLO:
		if (m->u.hello.ndev > VRAM_HOOK_PROTO_MAX_DEVICES)
			return -EINVAL;
		p = vram_hook_proto_put32(p, m->u.hello.pid);
		p = vram_hook_proto_put32(p, m->u.hello.ndev);
		p = vram_hook_proto_putstr(p, m->u.hello.workload, VRAM_HOOK_PROTO_NAME_MAX);
		p = vram_hook_proto_put_devs(p, m->u.hello.dev, m->u.hello.ndev);
		if (version < 2) {
			if (m->u.hello.flags)
				return -EINVAL;
			break;
		}
		p = vram_hook_proto_put32(p, m->u.hello.flags);
		p = vram_hook_proto_putstr(p, m->u.hello.limit_text, VRAM_HOOK_PROTO_LIMIT_TEXT_MAX);
		break;
	case VRAM_HOOK_MSG_USAGE:
		if (m->u.usage.ndev > VRAM_HOOK_PROTO_MAX_DEVICES || m->u.usage.state > vram_hook_proto_max_state(version))
			return -EINVAL;
		p = vram_hook_proto_put32(p, m->u.usage.state);
		p = vram_hook_proto_put32(p, m->u.usage.ndev);
		p = vram_hook_proto_put_devs(p, m->u.usage.dev, m->u.usage.ndev);
		if (version < VRAM_HOOK_PROTO_VERSION_PARK) {
			if (m->u.usage.host_pinned || m->u.usage.host_kept || m->u.usage.parked)
				return -EINVAL;
			break;
		}
		p = vram_hook_proto_put64(p, m->u.usage.host_pinned);
		p = vram_hook_proto_put64(p, m->u.usage.host_kept);
		p = vram_hook_proto_put64(p, m->u.usage.parked);
		break;
	case VRAM_HOOK_MSG_OFFLOAD:
	case VRAM_HOOK_MSG_RESTORE:
	case VRAM_HOOK_MSG_DROP_HOST:
		if ((m->u.command.flags & ~VRAM_HOOK_COMMAND_KNOWN_FLAGS) ||
		    (version < VRAM_HOOK_PROTO_VERSION_GRANT && (m->u.command.flags & ~VRAM_HOOK_OFFLOAD_DROP_HOST)))
			return -EINVAL;
		p = vram_hook_proto_put32(p, m->u.command.request_id);
		p = vram_hook_proto_put32(p, m->u.command.flags);
		break;
	case VRAM_HOOK_MSG_PREPARE_HOST:
		if (m->u.command.flags)
			return -EINVAL;
		p = vram_hook_proto_put32(p, m->u.command.request_id);
		p = vram_hook_proto_put32(p, m->u.command.flags);
		p = vram_hook_proto_put64(p, m->u.command.limit);
		break;
	case VRAM_HOOK_MSG_PROGRESS:
	case VRAM_HOOK_MSG_GRANT:
		if (m->u.grant.flags & ~(m->type == VRAM_HOOK_MSG_GRANT ? VRAM_HOOK_GRANT_CANCEL : 0u))
			return -EINVAL;
		p = vram_hook_proto_put32(p, m->u.grant.request_id);
		p = vram_hook_proto_put32(p, m->u.grant.flags);
		for (int i = 0; i < VRAM_HOOK_PROTO_MAX_DEVICES; i++)
			p = vram_hook_proto_put64(p, m->u.grant.bytes[i]);
		break;
	case VRAM_HOOK_MSG_PARK:
		/* a path cut to fit would name another file: refused instead */
		if (strnlen(m->u.command.path, VRAM_HOOK_PROTO_PATH_MAX) >= VRAM_HOOK_PROTO_PATH_MAX)
			return -EINVAL;
		p = vram_hook_proto_put32(p, m->u.command.request_id);
		p = vram_hook_proto_put32(p, m->u.command.flags);
		p = vram_hook_proto_putstr(p, m->u.command.path, VRAM_HOOK_PROTO_PATH_MAX);
		break;
	case VRAM_HOOK_MSG_RESULT:
		if (m->u.result.state > vram_hook_proto_max_state(version) ||
		    !vram_hook_proto_result_op_ok(version, m->u.result.op))
			return -EINVAL;
		p = vram_hook_proto_put32(p, m->u.result.request_id);
		p = vram_hook_proto_put32(p, m->u.result.op);
		p = vram_hook_proto_put32(p, (uint32_t)m->u.result.status);
		p = vram_hook_proto_put32(p, m->u.result.state);
		p = vram_hook_proto_put64(p, m->u.result.bytes);
		p = vram_hook_proto_put64(p, m->u.result.nonmovable);
		p = vram_hook_proto_put64(p, m->u.result.missing);
		p = vram_hook_proto_put64(p, m->u.result.usec);
		p = vram_hook_proto_putstr(p, m->u.result.text, VRAM_HOOK_PROTO_TEXT_MAX);
		break;
	default:
		break;
	}
	return (long)(p - buf);
}

/*
 * Decodes one message from the start of buf (len bytes). Returns the number
 * of bytes it used (> 0), 0 if buf holds only part of a message so far, or
 * -EBADMSG if the bytes are not a valid message (the stream cannot be
 * resynchronized: close it). ret_m is written only on success.
 */
static inline long vram_hook_proto_decode(const uint8_t *buf, size_t len, struct vram_hook_proto_msg *ret_m)
{
	if (len < VRAM_HOOK_PROTO_HEADER_SIZE) {
		/* Reject a bad magic as early as it can be seen. */
		for (size_t i = 0; i < len && i < 4; i++)
			if (buf[i] != (uint8_t)(VRAM_HOOK_PROTO_MAGIC >> (8 * i)))
				return -EBADMSG;
		return 0;
	}
	uint32_t magic, length, seq;
	const uint8_t *p = vram_hook_proto_get32(buf, &magic);
	uint16_t version = (uint16_t)(p[0] | p[1] << 8);
	uint16_t type = (uint16_t)(p[2] | p[3] << 8);
	p += 4;
	p = vram_hook_proto_get32(p, &length);
	p = vram_hook_proto_get32(p, &seq);
	if (magic != VRAM_HOOK_PROTO_MAGIC || !vram_hook_proto_version_ok(version))
		return -EBADMSG;
	long want = vram_hook_proto_payload_size(version, type);
	if (want < 0 || length != (uint32_t)want)
		return -EBADMSG;
	if (len < VRAM_HOOK_PROTO_HEADER_SIZE + length)
		return 0;

	struct vram_hook_proto_msg m;
	memset(&m, 0, sizeof(m));
	m.version = version;
	m.type = type;
	m.seq = seq;
	switch (type) {
	case VRAM_HOOK_MSG_HELLO:
		p = vram_hook_proto_get32(p, &m.u.hello.pid);
		p = vram_hook_proto_get32(p, &m.u.hello.ndev);
		if (m.u.hello.ndev > VRAM_HOOK_PROTO_MAX_DEVICES)
			return -EBADMSG;
		if (!vram_hook_proto_getstr(p, m.u.hello.workload, VRAM_HOOK_PROTO_NAME_MAX))
			return -EBADMSG;
		p += VRAM_HOOK_PROTO_NAME_MAX;
		p = vram_hook_proto_get_devs(p, m.u.hello.dev);
		if (version < 2)
			break;
		p = vram_hook_proto_get32(p, &m.u.hello.flags);
		if (m.u.hello.flags & ~VRAM_HOOK_HELLO_KNOWN_FLAGS)
			return -EBADMSG;
		if (!vram_hook_proto_getstr(p, m.u.hello.limit_text, VRAM_HOOK_PROTO_LIMIT_TEXT_MAX))
			return -EBADMSG;
		p += VRAM_HOOK_PROTO_LIMIT_TEXT_MAX;
		break;
	case VRAM_HOOK_MSG_USAGE:
		p = vram_hook_proto_get32(p, &m.u.usage.state);
		p = vram_hook_proto_get32(p, &m.u.usage.ndev);
		if (m.u.usage.ndev > VRAM_HOOK_PROTO_MAX_DEVICES || m.u.usage.state > vram_hook_proto_max_state(version))
			return -EBADMSG;
		p = vram_hook_proto_get_devs(p, m.u.usage.dev);
		if (version < VRAM_HOOK_PROTO_VERSION_PARK)
			break;
		p = vram_hook_proto_get64(p, &m.u.usage.host_pinned);
		p = vram_hook_proto_get64(p, &m.u.usage.host_kept);
		p = vram_hook_proto_get64(p, &m.u.usage.parked);
		break;
	case VRAM_HOOK_MSG_OFFLOAD:
	case VRAM_HOOK_MSG_RESTORE:
	case VRAM_HOOK_MSG_DROP_HOST:
		p = vram_hook_proto_get32(p, &m.u.command.request_id);
		p = vram_hook_proto_get32(p, &m.u.command.flags);
		if (version >= VRAM_HOOK_PROTO_VERSION_GRANT && (m.u.command.flags & ~VRAM_HOOK_COMMAND_KNOWN_FLAGS))
			return -EBADMSG;
		break;
	case VRAM_HOOK_MSG_PREPARE_HOST:
		p = vram_hook_proto_get32(p, &m.u.command.request_id);
		p = vram_hook_proto_get32(p, &m.u.command.flags);
		p = vram_hook_proto_get64(p, &m.u.command.limit);
		if (m.u.command.flags)
			return -EBADMSG;
		break;
	case VRAM_HOOK_MSG_PROGRESS:
	case VRAM_HOOK_MSG_GRANT:
		p = vram_hook_proto_get32(p, &m.u.grant.request_id);
		p = vram_hook_proto_get32(p, &m.u.grant.flags);
		if (m.u.grant.flags & ~(type == VRAM_HOOK_MSG_GRANT ? VRAM_HOOK_GRANT_CANCEL : 0u))
			return -EBADMSG;
		for (int i = 0; i < VRAM_HOOK_PROTO_MAX_DEVICES; i++)
			p = vram_hook_proto_get64(p, &m.u.grant.bytes[i]);
		break;
	case VRAM_HOOK_MSG_PARK:
		p = vram_hook_proto_get32(p, &m.u.command.request_id);
		p = vram_hook_proto_get32(p, &m.u.command.flags);
		if (!vram_hook_proto_getstr(p, m.u.command.path, VRAM_HOOK_PROTO_PATH_MAX))
			return -EBADMSG;
		p += VRAM_HOOK_PROTO_PATH_MAX;
		break;
	case VRAM_HOOK_MSG_RESULT: {
		uint32_t status;
		p = vram_hook_proto_get32(p, &m.u.result.request_id);
		p = vram_hook_proto_get32(p, &m.u.result.op);
		p = vram_hook_proto_get32(p, &status);
		m.u.result.status = (int32_t)status;
		p = vram_hook_proto_get32(p, &m.u.result.state);
		p = vram_hook_proto_get64(p, &m.u.result.bytes);
		p = vram_hook_proto_get64(p, &m.u.result.nonmovable);
		p = vram_hook_proto_get64(p, &m.u.result.missing);
		p = vram_hook_proto_get64(p, &m.u.result.usec);
		if (!vram_hook_proto_result_op_ok(version, m.u.result.op))
			return -EBADMSG;
		if (m.u.result.state > vram_hook_proto_max_state(version) || m.u.result.status > 0)
			return -EBADMSG;
		if (!vram_hook_proto_getstr(p, m.u.result.text, VRAM_HOOK_PROTO_TEXT_MAX))
			return -EBADMSG;
		p += VRAM_HOOK_PROTO_TEXT_MAX;
		break;
	}
	case VRAM_HOOK_MSG_PING:
	default:
		break;
	}
	if ((size_t)(p - buf) != VRAM_HOOK_PROTO_HEADER_SIZE + length)
		return -EBADMSG;
	*ret_m = m;
	return (long)(VRAM_HOOK_PROTO_HEADER_SIZE + length);
}

#endif
