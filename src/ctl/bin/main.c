/* SPDX-License-Identifier: MIT */
/* vramctl: the command-line client of vramd (commands live in src/ctl/ctl.c). */
#include "ctl/ctl.h"

int main(int argc, char **argv)
{
	return vram_ctl_main(argc, argv);
}
