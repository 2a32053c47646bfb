/* SPDX-License-Identifier: MIT */
/*
 * An intrusive doubly linked list, in the shape of libuv's queue.h and the
 * kernel's list.h: a struct vram_list node sits inside each element, a
 * struct vram_list head sits in the owner, and both are circular, so that
 * insert and remove are a few pointer writes with no special cases and no
 * allocation. An element is on at most one list per node it embeds.
 *
 *   struct req { struct vram_list link; ... };
 *   struct owner { struct vram_list reqs; };
 *
 *   vram_list_init(&o->reqs);
 *   vram_list_push_back(&o->reqs, &r->link);
 *   vram_list_for_each_safe(pos, tmp, &o->reqs) {
 *           struct req *r = vram_list_entry(pos, struct req, link);
 *           ...            (r may be removed here)
 *   }
 *
 * A node that is on no list points to itself once vram_list_init (or
 * vram_list_remove) ran on it, so vram_list_linked tells whether it is on
 * one. Header-only: every function is static inline.
 */
#ifndef VRAM_LIST_H
#define VRAM_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct vram_list {
	struct vram_list *prev, *next;
};

/* The element of type type whose member node is ptr. */
#define vram_list_entry(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* An empty list, or a node on none. */
static inline void vram_list_init(struct vram_list *l)
{
	l->prev = l->next = l;
}

static inline bool vram_list_empty(const struct vram_list *head)
{
	return head->next == head;
}

/* Whether node is on a list (it was initialised or removed, else linked). */
static inline bool vram_list_linked(const struct vram_list *node)
{
	return node->next && node->next != node;
}

static inline void vram_list_insert_between(struct vram_list *node, struct vram_list *prev,
					    struct vram_list *next)
{
	node->prev = prev;
	node->next = next;
	prev->next = node;
	next->prev = node;
}

/* Adds node at the front (head->next) or the back (head->prev). */
static inline void vram_list_push_front(struct vram_list *head, struct vram_list *node)
{
	vram_list_insert_between(node, head, head->next);
}

static inline void vram_list_push_back(struct vram_list *head, struct vram_list *node)
{
	vram_list_insert_between(node, head->prev, head);
}

/* Takes node off its list and leaves it on none; a node on none is left as it is. */
static inline void vram_list_remove(struct vram_list *node)
{
	node->prev->next = node->next;
	node->next->prev = node->prev;
	vram_list_init(node);
}

/* Moves every node of from to the back of to, in order; from is left empty. */
static inline void vram_list_move(struct vram_list *from, struct vram_list *to)
{
	if (vram_list_empty(from))
		return;
	struct vram_list *first = from->next, *last = from->prev;
	first->prev = to->prev;
	to->prev->next = first;
	last->next = to;
	to->prev = last;
	vram_list_init(from);
}

/* The first or last node, or NULL when the list is empty. */
static inline struct vram_list *vram_list_first(const struct vram_list *head)
{
	return vram_list_empty(head) ? NULL : head->next;
}

static inline struct vram_list *vram_list_last(const struct vram_list *head)
{
	return vram_list_empty(head) ? NULL : head->prev;
}

/* Walks the nodes; pos must stay on the list while the body runs. */
#define vram_list_for_each(pos, head) for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)

/* Walks the nodes; the body may remove (or free) pos. tmp holds the next one. */
#define vram_list_for_each_safe(pos, tmp, head)                                      \
	for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);             \
	     (pos) = (tmp), (tmp) = (pos)->next)

/*
 * Walks the elements: var, declared here as a type *, is each element of
 * type type whose member node is on the list. The body must not remove var
 * (use vram_list_for_each_safe for that).
 *
 *   vram_list_for_each_entry(r, &o->reqs, struct req, link)
 *           total += r->size;
 */
#define vram_list_for_each_entry(var, head, type, member)                            \
	for (type *var = vram_list_entry((head)->next, type, member);                \
	     &var->member != (head); var = vram_list_entry(var->member.next, type, member))

/* The number of nodes: a walk, for tests and limits on short lists. */
static inline size_t vram_list_count(const struct vram_list *head)
{
	size_t n = 0;
	for (const struct vram_list *p = head->next; p != head; p = p->next)
		n++;
	return n;
}

#endif
