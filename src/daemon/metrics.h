/* SPDX-License-Identifier: MIT */
/*
 * GET /metrics: the daemon's state in the Prometheus text exposition format
 * (version 0.0.4). Gauges for GPUs and workloads are read from the manager at
 * scrape time; counters and histograms of things that happen (offloads,
 * restores, evictions, gateway requests) are kept here, fed by the manager's
 * state events and by the gateway. docs/api.md lists every metric.
 *
 * On a reload of the config (the manager's "reload" event) the counts of an
 * added workload start from zero, those of a changed one go on, and those of
 * a removed one are dropped.
 */
#ifndef VRAM_METRICS_H
#define VRAM_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct evhttp_request;
struct vram_buf;
struct vram_manager;
struct vram_metrics;

#define VRAM_METRICS_TEXT_MAX (8u * 1024 * 1024) /* bytes of one scrape */
#define VRAM_HISTOGRAM_BUCKETS_MAX 16

/* A histogram with fixed upper bounds (the +Inf bucket is count). */
struct vram_histogram {
	const double *bounds;                        /* borrowed, static, ascending */
	size_t n_bounds;                             /* <= VRAM_HISTOGRAM_BUCKETS_MAX */
	uint64_t buckets[VRAM_HISTOGRAM_BUCKETS_MAX]; /* observations <= bounds[i], not cumulative */
	uint64_t count;
	double sum;
};

void vram_histogram_init(struct vram_histogram *h, const double *bounds, size_t n_bounds);
void vram_histogram_observe(struct vram_histogram *h, double value);
/*
 * Writes name_bucket{labels,le="..."} (cumulative, ending with le="+Inf"),
 * name_sum{labels} and name_count{labels}. labels is the text inside the
 * braces, already escaped ("workload=\"chat\""), or "" for none.
 * Returns 0, -E2BIG or -ENOMEM.
 */
int vram_histogram_write(struct vram_buf *out, const char *name, const char *labels,
			 const struct vram_histogram *h);

/*
 * Appends value as a label value: backslash, double quote and line feed
 * escaped as \\, \" and \n. Returns 0, -E2BIG or -ENOMEM.
 */
int vram_metrics_escape_label(struct vram_buf *out, const char *value);

/* Creates the metrics over m (borrowed, outlives it). Returns 0 or -ENOMEM. */
int vram_metrics_new(struct vram_manager *m, struct vram_metrics **ret);
void vram_metrics_free(struct vram_metrics *mx); /* accepts NULL */

/*
 * From the gateway: a request for workload ("" when none was found) ended with
 * an HTTP status (0 = the client went away first) after seconds; the queue of
 * a workload is depth requests long. mx may be NULL, and a workload that a
 * reload removed is no longer counted (nothing is counted then).
 */
void vram_metrics_gateway_request(struct vram_metrics *mx, const char *workload, int status,
				  double seconds);
void vram_metrics_gateway_queue(struct vram_metrics *mx, const char *workload, unsigned depth);
/*
 * From the gateway, for a request of workload that went upstream or waited
 * for it: bytes of the response sent to the client (head included), s from
 * arrival to its first byte (< 0: none sent) and s it waited in the queue.
 */
void vram_metrics_gateway_timing(struct vram_metrics *mx, const char *workload, uint64_t bytes,
				 double first_byte_s, double queue_s);

/* Writes the whole exposition into out. Returns 0, -E2BIG or -ENOMEM. */
int vram_metrics_render(struct vram_metrics *mx, struct vram_buf *out);
/* Answers a GET /metrics request. */
void vram_metrics_handle(struct vram_metrics *mx, struct evhttp_request *req);

#endif
