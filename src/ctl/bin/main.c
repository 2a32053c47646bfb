/* SPDX-License-Identifier: MIT */
/* vramctl: the command-line client of vramd (commands live in src/ctl/ctl.c). */
#include "ctl/ctl.h"
#include "ctl/top.h"

int main(int argc, char **argv)
{
	vram_ctl_set_top(vram_top_main); /* ncurses is linked here only */
	return vram_ctl_main(argc, argv);
}
