/* SPDX-License-Identifier: MIT */
/* The monotonic clock in the units the daemon's timers and records use. */
#ifndef VRAM_CLOCK_H
#define VRAM_CLOCK_H

#include <stdint.h>

/* CLOCK_MONOTONIC in ms. */
uint64_t vram_now_ms(void);

#endif
