/* SPDX-License-Identifier: MIT */
/*
 * Parsing and formatting of sizes, fractions and durations. Parsing is strict:
 * the whole string must be consumed, and a negative, NaN or overflowing value
 * is an error, because these values come from users' configs.
 */
#include "common/units.h"

#include <ctype.h>
#include <inttypes.h>
#include <errno.h>
#include <stdbool.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/*
 * A non-negative decimal number as written: its value, and when it has no
 * fraction its exact integer value, so that large whole numbers are not
 * rounded through a double.
 */
struct number {
	double value;
	bool integral;   /* no '.' part: whole is exact */
	uint64_t whole;  /* when integral */
};

/* Reads a non-negative decimal number (digits with an optional fraction). */
static int parse_number(const char **p, struct number *ret)
{
	const char *s = *p;
	const char *start = s;
	bool seen_digit = false, integral = true, overflow = false;
	uint64_t whole = 0;
	while (isdigit((unsigned char)*s)) {
		if (__builtin_mul_overflow(whole, 10, &whole) ||
		    __builtin_add_overflow(whole, (uint64_t)(*s - '0'), &whole))
			overflow = true;
		s++;
		seen_digit = true;
	}
	if (*s == '.') {
		integral = false;
		s++;
		while (isdigit((unsigned char)*s)) {
			s++;
			seen_digit = true;
		}
	}
	if (!seen_digit)
		return -EINVAL;
	if (integral && overflow)
		return -ERANGE;
	char tmp[64];
	size_t n = (size_t)(s - start);
	if (n >= sizeof(tmp))
		return -ERANGE;
	memcpy(tmp, start, n);
	tmp[n] = '\0';
	errno = 0;
	double v = strtod(tmp, NULL);
	if (errno || !isfinite(v))
		return -ERANGE;
	*ret = (struct number){ .value = v, .integral = integral, .whole = whole };
	*p = s;
	return 0;
}

/*
 * num times unit, rounded to an integer, into *ret. Returns 0, or -ERANGE
 * when the product is above max.
 */
static int scale(const struct number *num, uint64_t unit, uint64_t max, uint64_t *ret)
{
	uint64_t v;
	if (num->integral) {
		if (__builtin_mul_overflow(num->whole, unit, &v) || v > max)
			return -ERANGE;
		*ret = v;
		return 0;
	}
	double d = num->value * (double)unit;
	/* compared in double: max itself may not be representable, 2^64 is */
	if (!(d < 0x1p64) || (uint64_t)d > max || (uint64_t)(d + 0.5) > max)
		return -ERANGE;
	*ret = (uint64_t)(d + 0.5);
	return 0;
}

static const struct {
	const char *suffix;
	uint64_t mult;
} size_suffixes[] = {
	{ "", 1 },         { "B", 1 },
	{ "KiB", VRAM_KiB }, { "MiB", VRAM_MiB }, { "GiB", VRAM_GiB }, { "TiB", VRAM_TiB },
	{ "K", VRAM_KiB },   { "M", VRAM_MiB },   { "G", VRAM_GiB },   { "T", VRAM_TiB },
	{ "kB", 1000 },    { "KB", 1000 },    { "MB", 1000000 },
	{ "GB", UINT64_C(1000000000) }, { "TB", UINT64_C(1000000000000) },
};

int vram_units_parse_bytes(const char *s, uint64_t *ret_bytes)
{
	if (!s)
		return -EINVAL;
	const char *p = s;
	struct number num;
	int r = parse_number(&p, &num);
	if (r < 0)
		return r;
	while (*p == ' ')
		p++;
	for (size_t i = 0; i < sizeof(size_suffixes) / sizeof(size_suffixes[0]); i++) {
		if (strcmp(p, size_suffixes[i].suffix) != 0)
			continue;
		if (size_suffixes[i].mult == 1 && !num.integral && num.value != floor(num.value))
			return -EINVAL; /* "1.5" bytes makes no sense */
		return scale(&num, size_suffixes[i].mult, VRAM_BYTES_MAX, ret_bytes);
	}
	return -EINVAL;
}

int vram_units_parse_mem(const char *s, struct vram_mem *ret_mem)
{
	if (!s)
		return -EINVAL;
	/* A bare number with a decimal point, or "1", in (0,1] is a fraction. */
	bool has_unit = false;
	for (const char *p = s; *p; p++)
		if (isalpha((unsigned char)*p))
			has_unit = true;
	if (!has_unit && (strchr(s, '.') || strcmp(s, "1") == 0)) {
		const char *p = s;
		struct number num;
		int r = parse_number(&p, &num);
		if (r < 0)
			return r;
		if (*p)
			return -EINVAL;
		if (!(num.value > 0.0 && num.value <= 1.0))
			return -ERANGE;
		*ret_mem = (struct vram_mem){ .is_fraction = true, .fraction = num.value };
		return 0;
	}
	uint64_t bytes;
	int r = vram_units_parse_bytes(s, &bytes);
	if (r < 0)
		return r;
	*ret_mem = (struct vram_mem){ .is_fraction = false, .bytes = bytes };
	return 0;
}

static const struct {
	const char *suffix;
	uint64_t ms;
} duration_suffixes[] = {
	{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 }, { "d", 86400000 },
};

int vram_units_parse_duration_ms(const char *s, uint64_t *ret_ms)
{
	if (!s || !*s)
		return -EINVAL;
	if (strcasecmp(s, "never") == 0 || strcasecmp(s, "off") == 0) {
		*ret_ms = VRAM_DURATION_NEVER;
		return 0;
	}
	const char *p = s;
	uint64_t total = 0;
	bool any = false;
	while (*p) {
		struct number num;
		int r = parse_number(&p, &num);
		if (r < 0)
			return r;
		size_t n = 0;
		while (isalpha((unsigned char)p[n]))
			n++;
		uint64_t unit = 0;
		if (n == 0) {
			if (any || p[0] != '\0')
				return -EINVAL; /* "1h30" or trailing junk */
			unit = 1000; /* bare number: seconds */
		} else {
			for (size_t i = 0; i < sizeof(duration_suffixes) / sizeof(duration_suffixes[0]); i++) {
				if (strlen(duration_suffixes[i].suffix) == n &&
				    strncmp(p, duration_suffixes[i].suffix, n) == 0) {
					unit = duration_suffixes[i].ms;
					break;
				}
			}
			if (!unit)
				return -EINVAL;
			p += n;
		}
		uint64_t ms;
		if (scale(&num, unit, VRAM_DURATION_MAX_MS, &ms) < 0 ||
		    __builtin_add_overflow(total, ms, &total) || total > VRAM_DURATION_MAX_MS)
			return -ERANGE;
		any = true;
	}
	*ret_ms = total;
	return 0;
}

uint64_t vram_mem_resolve(const struct vram_mem *mem, uint64_t total_bytes)
{
	if (!mem->is_fraction)
		return mem->bytes;
	return (uint64_t)((double)total_bytes * mem->fraction);
}

char *vram_units_format_bytes(uint64_t bytes, char *buf, size_t size)
{
	static const char *const names[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)bytes;
	size_t i = 0;
	while (v >= 1024.0 && i + 1 < sizeof(names) / sizeof(names[0])) {
		v /= 1024.0;
		i++;
	}
	if (i == 0)
		snprintf(buf, size, "%" PRIu64 "B", bytes);
	else if (v == floor(v))
		snprintf(buf, size, "%.0f%s", v, names[i]);
	else
		snprintf(buf, size, "%.1f%s", v, names[i]);
	return buf;
}

char *vram_units_format_duration_ms(uint64_t ms, char *buf, size_t size)
{
	if (ms == VRAM_DURATION_NEVER) {
		snprintf(buf, size, "never");
		return buf;
	}
	if (ms % 1000 != 0) {
		if (ms < 1000)
			snprintf(buf, size, "%" PRIu64 "ms", ms);
		else
			snprintf(buf, size, "%.1fs", (double)ms / 1000.0);
		return buf;
	}
	uint64_t s = ms / 1000;
	uint64_t h = s / 3600, m = (s % 3600) / 60, sec = s % 60;
	size_t n = 0;
	buf[0] = '\0';
	if (h)
		n += (size_t)snprintf(buf + n, n < size ? size - n : 0, "%" PRIu64 "h", h);
	if (m)
		n += (size_t)snprintf(buf + n, n < size ? size - n : 0, "%" PRIu64 "m", m);
	if (sec || (!h && !m))
		snprintf(buf + n, n < size ? size - n : 0, "%" PRIu64 "s", sec);
	return buf;
}

char *vram_units_format_mem(const struct vram_mem *mem, char *buf, size_t size)
{
	if (mem->is_fraction) {
		snprintf(buf, size, "%g", mem->fraction);
		return buf;
	}
	return vram_units_format_bytes(mem->bytes, buf, size);
}

/* Whether a size ends in a unit (a letter), trailing blanks aside. */
static bool has_unit(const char *size_s)
{
	size_t n = strlen(size_s);
	while (n > 0 && size_s[n - 1] == ' ')
		n--;
	return n > 0 && isalpha((unsigned char)size_s[n - 1]);
}

char *vram_units_gpu_list_hint(const char *s, char *buf, size_t size)
{
	size_t o = 0;
	if (size == 0)
		return buf;
	for (const char *p = s;; p++) {
		bool end_of_item = *p == ',' || *p == '\0';
		/* a digit closing an item: the size had no unit */
		if (end_of_item && p > s && isdigit((unsigned char)p[-1]))
			o += (size_t)snprintf(buf + (o < size ? o : size - 1), o < size ? size - o : 1,
					      "GiB");
		if (*p == '\0')
			break;
		if (o + 1 < size)
			buf[o++] = *p;
	}
	buf[o < size ? o : size - 1] = '\0';
	return buf;
}

int vram_units_parse_gpu_list(const char *s, uint64_t *ret_sizes, size_t max)
{
	if (!s || !*s)
		return -EINVAL;
	char *copy = strdup(s);
	if (!copy)
		return -ENOMEM;
	int r = 0;
	size_t n = 0;
	uint64_t tmp[256];
	if (max > 256)
		max = 256;
	char *save = NULL;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		while (*tok == ' ')
			tok++;
		unsigned long count = 1;
		char *x = strchr(tok, 'x');
		const char *size_s = tok;
		if (x) {
			char *end;
			errno = 0;
			count = strtoul(tok, &end, 10);
			if (end != x || errno || count == 0 || count > 256) {
				r = -EINVAL;
				goto out_free;
			}
			size_s = x + 1;
		}
		uint64_t bytes;
		r = vram_units_parse_bytes(size_s, &bytes);
		if (r < 0 || bytes == 0) {
			r = -EINVAL;
			goto out_free;
		}
		if (!has_unit(size_s)) {
			r = -EDOM;
			goto out_free;
		}
		for (unsigned long i = 0; i < count; i++) {
			if (n >= max) {
				r = -E2BIG;
				goto out_free;
			}
			tmp[n++] = bytes;
		}
	}
	if (n == 0) {
		r = -EINVAL;
		goto out_free;
	}
	memcpy(ret_sizes, tmp, n * sizeof(uint64_t));
	r = (int)n;
out_free:
	free(copy);
	return r;
}
