/* SPDX-License-Identifier: MIT */
/*
 * The intrusive list: order of insertion at either end, removal from any
 * place (also while walking), and the state of a node that is on no list.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/list.h"

struct item {
	int value;
	struct vram_list link;
};

/* The values in list order, as digits ("312"). */
static void values(struct vram_list *head, char *buf)
{
	struct vram_list *pos;
	vram_list_for_each(pos, head)
		*buf++ = (char)('0' + vram_list_entry(pos, struct item, link)->value);
	*buf = '\0';
}

static void test_order_and_remove(void **state)
{
	struct vram_list head;
	struct item it[4] = { { 1 }, { 2 }, { 3 }, { 4 } };
	char got[8];
	vram_list_init(&head);
	assert_true(vram_list_empty(&head));
	assert_null(vram_list_first(&head));
	vram_list_push_back(&head, &it[0].link);
	vram_list_push_back(&head, &it[1].link);
	vram_list_push_front(&head, &it[2].link);
	vram_list_push_back(&head, &it[3].link);
	values(&head, got);
	assert_string_equal(got, "3124");
	assert_int_equal(vram_list_count(&head), 4);
	assert_ptr_equal(vram_list_first(&head), &it[2].link);
	assert_ptr_equal(vram_list_last(&head), &it[3].link);

	vram_list_remove(&it[0].link); /* the middle */
	assert_false(vram_list_linked(&it[0].link));
	vram_list_remove(&it[0].link); /* again: on no list, nothing happens */
	values(&head, got);
	assert_string_equal(got, "324");
	assert_true(vram_list_linked(&it[1].link));
}

static void test_remove_while_walking(void **state)
{
	struct vram_list head, *pos, *tmp;
	struct item it[5] = { { 1 }, { 2 }, { 3 }, { 4 }, { 5 } };
	char got[8];
	vram_list_init(&head);
	for (int i = 0; i < 5; i++)
		vram_list_push_back(&head, &it[i].link);
	vram_list_for_each_safe(pos, tmp, &head) {
		if (vram_list_entry(pos, struct item, link)->value % 2)
			vram_list_remove(pos);
	}
	values(&head, got);
	assert_string_equal(got, "24");
	vram_list_for_each_safe(pos, tmp, &head)
		vram_list_remove(pos);
	assert_true(vram_list_empty(&head));
	assert_int_equal(vram_list_count(&head), 0);
}

/* The typed walk sees every element in order, and none on an empty list. */
static void test_for_each_entry(void **state)
{
	struct vram_list head;
	struct item it[3] = { { 7 }, { 8 }, { 9 } };
	vram_list_init(&head);
	vram_list_for_each_entry(i, &head, struct item, link)
		fail_msg("an empty list has element %d", i->value);
	for (int i = 0; i < 3; i++)
		vram_list_push_back(&head, &it[i].link);
	int sum = 0, n = 0;
	vram_list_for_each_entry(i, &head, const struct item, link) {
		assert_int_equal(i->value, 7 + n);
		sum += i->value;
		n++;
	}
	assert_int_equal(n, 3);
	assert_int_equal(sum, 24);
}

/* Moving a list: every node, in order, to the back of another; the first left empty. */
static void test_move(void **state)
{
	struct vram_list a, b;
	struct item it[4] = { { 1 }, { 2 }, { 3 }, { 4 } };
	char got[8];
	vram_list_init(&a);
	vram_list_init(&b);
	vram_list_move(&a, &b); /* empty onto empty */
	assert_true(vram_list_empty(&a) && vram_list_empty(&b));
	vram_list_push_back(&a, &it[0].link);
	vram_list_push_back(&a, &it[1].link);
	vram_list_push_back(&b, &it[2].link);
	vram_list_move(&a, &b);
	assert_true(vram_list_empty(&a));
	values(&b, got);
	assert_string_equal(got, "312");
	vram_list_push_back(&a, &it[3].link); /* the emptied head is usable again */
	values(&a, got);
	assert_string_equal(got, "4");
	vram_list_move(&b, &a);
	values(&a, got);
	assert_string_equal(got, "4312");
	assert_int_equal(vram_list_count(&b), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order_and_remove),
		cmocka_unit_test(test_remove_while_walking),
		cmocka_unit_test(test_for_each_entry),
		cmocka_unit_test(test_move),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
