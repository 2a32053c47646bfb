/* SPDX-License-Identifier: MIT */
/*
 * Device memory the process allocates, and how the hook keeps it movable.
 *
 * cuMemAlloc_v2 and cuMemAllocPitch_v2 are served from VMM: a reserved
 * address range, one physical allocation, one mapping, read-write access
 * for the device. The program sees an ordinary pointer; the hook can later
 * unmap and release the physical memory under it and map new memory at the
 * same address (suspend.c).
 *
 * The program's own VMM calls (PyTorch expandable segments, vLLM's sleep
 * mode, NCCL) go through handles of ours: cuMemCreate returns a pointer to a
 * struct vram_hook_phys that owns the driver's handle, and cuMemMap,
 * cuMemSetAccess, cuMemUnmap and cuMemRelease are recorded on it. The
 * driver's handle can then be swapped without the program noticing. The
 * physical memory goes away when the program has released its handle and
 * unmapped every mapping, as with the driver.
 *
 * Stream-ordered pool memory is served from VMM too (pool.c, through
 * vram_hook_vmm_alloc). Memory the hook cannot move is charged and counted
 * as non-movable: allocations of pools made for export, managed memory,
 * arrays, IPC imports and exports, VMM memory exported or imported through
 * shareable handles, and cuMemAlloc and pool memory when
 * VRAM_HOOK_VMM_ALLOC=0. Host allocations are not
 * charged and not wrapped. A free of a pointer the hook does not know always
 * reaches the driver.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hook/hook.h"

#define PHYS_MAGIC 0x7668726d70687973ull

pthread_mutex_t vram_hook_lock = PTHREAD_MUTEX_INITIALIZER;
struct vram_hook_phys *vram_hook_phys_list;

/* ------------------------------------------------------------ hash table */

/* Open addressing over 64-bit keys (struct vram_hook_table in hook.h). The
 * tables of this file are guarded by vram_hook_lock. */
#define KEY_EMPTY VRAM_HOOK_TABLE_EMPTY
#define KEY_DELETED VRAM_HOOK_TABLE_DELETED

static size_t hash64(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	return (size_t)k;
}

void *vram_hook_table_get(const struct vram_hook_table *t, uint64_t key)
{
	if (!t->cap)
		return NULL;
	for (size_t i = hash64(key) & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
		if (t->keys[i] == key)
			return t->vals[i];
		if (t->keys[i] == KEY_EMPTY)
			return NULL;
	}
}

static int table_grow(struct vram_hook_table *t)
{
	size_t ncap = t->cap ? (t->live * 4 >= t->cap ? t->cap * 2 : t->cap) : 256;
	struct vram_hook_table n = { calloc(ncap, sizeof(uint64_t)), calloc(ncap, sizeof(void *)), ncap, 0, 0 };
	if (!n.keys || !n.vals) {
		free(n.keys);
		free(n.vals);
		return -ENOMEM;
	}
	for (size_t i = 0; i < t->cap; i++)
		if (t->keys[i] > KEY_DELETED)
			vram_hook_table_put(&n, t->keys[i], t->vals[i]);
	free(t->keys);
	free(t->vals);
	*t = n;
	return 0;
}

int vram_hook_table_put(struct vram_hook_table *t, uint64_t key, void *val)
{
	if ((t->filled + 1) * 4 > t->cap * 3 && table_grow(t) < 0)
		return -ENOMEM;
	size_t i = hash64(key) & (t->cap - 1), slot = SIZE_MAX;
	for (;; i = (i + 1) & (t->cap - 1)) {
		if (t->keys[i] == key) {
			t->vals[i] = val;
			return 0;
		}
		if (t->keys[i] == KEY_DELETED && slot == SIZE_MAX)
			slot = i;
		if (t->keys[i] == KEY_EMPTY)
			break;
	}
	if (slot == SIZE_MAX) {
		slot = i;
		t->filled++;
	}
	t->keys[slot] = key;
	t->vals[slot] = val;
	t->live++;
	return 0;
}

void *vram_hook_table_del(struct vram_hook_table *t, uint64_t key)
{
	if (!t->cap)
		return NULL;
	for (size_t i = hash64(key) & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
		if (t->keys[i] == key) {
			void *v = t->vals[i];
			t->keys[i] = KEY_DELETED;
			t->vals[i] = NULL;
			t->live--;
			return v;
		}
		if (t->keys[i] == KEY_EMPTY)
			return NULL;
	}
}

/* --------------------------------------------------------------- records */

enum other_kind { OTHER_ASYNC, OTHER_MANAGED, OTHER_ARRAY, OTHER_IPC, OTHER_PLAIN };

/* Memory the hook charges but cannot move, by pointer or handle. */
struct other {
	enum other_kind kind;
	int dev;
	uint64_t size;            /* bytes */
};

static struct vram_hook_table phys_table;   /* our handle -> struct vram_hook_phys */
static struct vram_hook_table map_table;    /* mapped address -> struct vram_hook_map */
static struct vram_hook_table alloc_table;  /* cuMemAlloc address -> struct vram_hook_phys */
static struct vram_hook_table other_table;  /* pointer or handle -> struct other */

static _Atomic uint64_t granularity[VRAM_HOOK_MAX_DEVICES]; /* bytes, 0 until asked */
static _Atomic int pitch_align;                              /* bytes, 0 until asked */
static int vmm_alloc_enabled = -1;                           /* VRAM_HOOK_VMM_ALLOC */
static _Atomic int ipc_handle_ok;                            /* -1: the driver refuses POSIX fd memory */

/*
 * A zeroed record. Not calloc: glibc's calloc (2.36 at least) skips the
 * per-thread cache, so every cuMemAlloc + cuMemFree pair went through the
 * arena (and its consolidation) twice; malloc reuses the chunks just freed.
 */
static void *record_new(size_t size)
{
	void *r = malloc(size);
	if (r)
		memset(r, 0, size);
	return r;
}

static uint64_t round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

bool vram_hook_use_vmm(void)
{
	if (vmm_alloc_enabled < 0) {
		const char *s = secure_getenv("VRAM_HOOK_VMM_ALLOC");
		vmm_alloc_enabled = !(s && s[0] == '0');
	}
	return vmm_alloc_enabled;
}

static uint64_t device_granularity(int dev)
{
	uint64_t g = dev >= 0 && dev < VRAM_HOOK_MAX_DEVICES ? atomic_load(&granularity[dev]) : 0;
	if (g)
		return g;
	CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
				     .location = { CU_MEM_LOCATION_TYPE_DEVICE, dev } };
	size_t got = 0;
	if (VRAM_REAL(cuMemGetAllocationGranularity)(&got, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM) != CUDA_SUCCESS ||
	    !got)
		got = 2u << 20;
	if (dev >= 0 && dev < VRAM_HOOK_MAX_DEVICES)
		atomic_store(&granularity[dev], got);
	return got;
}

/* The current thread's device, or -1 (no context yet: the driver decides). */
int vram_hook_current_device(void)
{
	CUdevice dev = -1;
	if (VRAM_CALL_REAL(cuCtxGetDevice, &dev) != CUDA_SUCCESS)
		return -1;
	return dev;
}

static struct vram_hook_phys *phys_lookup(CUmemGenericAllocationHandle h)
{
	struct vram_hook_phys *p = vram_hook_table_get(&phys_table, h);
	return p && p->magic == PHYS_MAGIC ? p : NULL;
}

/* Called with vram_hook_lock held. Takes over the driver's handle. */
static struct vram_hook_phys *phys_new(CUmemGenericAllocationHandle real, uint64_t size, int dev,
				       const CUmemAllocationProp *prop, bool movable)
{
	struct vram_hook_phys *p = record_new(sizeof(*p));
	if (!p)
		return NULL;
	p->magic = PHYS_MAGIC;
	p->real = real;
	p->size = size;
	p->dev = dev;
	if (prop)
		p->prop = *prop;
	p->app_refs = 1;
	p->movable = movable && dev >= 0;
	if (vram_hook_table_put(&phys_table, (uint64_t)(uintptr_t)p, p) < 0) {
		free(p);
		return NULL;
	}
	p->next = vram_hook_phys_list;
	if (p->next)
		p->next->prev = p;
	vram_hook_phys_list = p;
	return p;
}

/* Called with vram_hook_lock held, when no handle and no mapping is left. */
static void phys_destroy(struct vram_hook_phys *p)
{
	if (p->real)
		VRAM_REAL(cuMemRelease)(p->real);
	if (p->dev >= 0 && !p->imported) {
		vram_hook_uncharge(p->dev, p->size);
		if (!p->movable)
			vram_hook_nonmovable_sub(p->dev, p->size);
		if (p->offloaded)
			atomic_fetch_sub(&vram_hook_usage[p->dev].offloaded, p->size);
	}
	vram_hook_host_free(p);
	vram_hook_ipc_forget(p);
	vram_hook_table_del(&phys_table, (uint64_t)(uintptr_t)p);
	if (p->prev)
		p->prev->next = p->next;
	else
		vram_hook_phys_list = p->next;
	if (p->next)
		p->next->prev = p->prev;
	p->magic = 0;
	free(p);
}

static void phys_maybe_destroy(struct vram_hook_phys *p)
{
	if (p->app_refs == 0 && p->nmaps == 0)
		phys_destroy(p);
}

/* Makes p non-movable from now on (it was exported). */
static void phys_pin(struct vram_hook_phys *p)
{
	p->ipc_pinned = false; /* for good now, not only while an importer has it open */
	if (!p->movable)
		return;
	p->movable = false;
	vram_hook_nonmovable_add(p->dev, p->size);
}

/* Called with vram_hook_lock held. */
static struct vram_hook_map *map_add(CUdeviceptr va, uint64_t size, uint64_t offset, struct vram_hook_phys *p)
{
	struct vram_hook_map *m = record_new(sizeof(*m));
	if (!m)
		return NULL;
	m->va = va;
	m->size = size;
	m->offset = offset;
	m->phys = p;
	if (vram_hook_table_put(&map_table, va, m) < 0) {
		free(m);
		return NULL;
	}
	m->next_in_phys = p->maps;
	p->maps = m;
	p->nmaps++;
	return m;
}

/* Called with vram_hook_lock held; the driver mapping is already gone. */
static void map_remove(struct vram_hook_map *m)
{
	struct vram_hook_phys *p = m->phys;
	vram_hook_table_del(&map_table, m->va);
	for (struct vram_hook_map **pp = &p->maps; *pp; pp = &(*pp)->next_in_phys) {
		if (*pp == m) {
			*pp = m->next_in_phys;
			break;
		}
	}
	p->nmaps--;
	free(m);
	phys_maybe_destroy(p);
}

/* The mapping that contains va, or NULL. Exact starts are the common case. */
static struct vram_hook_map *map_containing(CUdeviceptr va)
{
	struct vram_hook_map *m = vram_hook_table_get(&map_table, va);
	if (m)
		return m;
	for (size_t i = 0; i < map_table.cap; i++) {
		if (map_table.keys[i] <= KEY_DELETED)
			continue;
		m = map_table.vals[i];
		if (va >= m->va && va < m->va + m->size)
			return m;
	}
	return NULL;
}

uint64_t vram_hook_nonmovable_total(void)
{
	uint64_t sum = 0;
	for (int d = 0; d < VRAM_HOOK_MAX_DEVICES; d++)
		sum += atomic_load(&vram_hook_usage[d].nonmovable);
	return sum;
}

static void other_add(uint64_t key, enum other_kind kind, int dev, uint64_t size)
{
	struct other *o = malloc(sizeof(*o));
	if (!o)
		return; /* charged but untracked: the free will not uncharge */
	o->kind = kind;
	o->dev = dev;
	o->size = size;
	pthread_mutex_lock(&vram_hook_lock);
	if (vram_hook_table_put(&other_table, key, o) < 0)
		free(o);
	pthread_mutex_unlock(&vram_hook_lock);
	vram_hook_nonmovable_add(dev, size);
}

/* Forgets key if it is of one of the kinds in mask; uncharges it. */
static bool other_remove(uint64_t key, unsigned kind_mask)
{
	pthread_mutex_lock(&vram_hook_lock);
	struct other *o = vram_hook_table_get(&other_table, key);
	if (o && (kind_mask & (1u << o->kind)))
		vram_hook_table_del(&other_table, key);
	else
		o = NULL;
	pthread_mutex_unlock(&vram_hook_lock);
	if (!o)
		return false;
	vram_hook_uncharge(o->dev, o->size);
	vram_hook_nonmovable_sub(o->dev, o->size);
	free(o);
	return true;
}

/* ------------------------------------------------------ cuMemAlloc family */

/*
 * Serves one allocation of bytes on dev from VMM; *ret_size: the bytes
 * mapped and charged (bytes rounded up to the granularity). A cuMemAlloc
 * allocation (for_free) is found by cuMemFree; a pool's is not (pool.c
 * owns it and gives it back with vram_hook_vmm_release).
 */
static CUresult vmm_alloc(CUdeviceptr *dptr, uint64_t bytes, int dev, bool for_free, uint64_t *ret_size)
{
	uint64_t gran = device_granularity(dev);
	uint64_t size = round_up(bytes, gran);
	CUdeviceptr va = 0;
	CUmemGenericAllocationHandle h = 0;
	CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
				     .location = { CU_MEM_LOCATION_TYPE_DEVICE, dev } };
	CUmemAccessDesc access = { { CU_MEM_LOCATION_TYPE_DEVICE, dev }, CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
	CUresult r;

	if (vram_hook_charge(dev, size) < 0)
		return CUDA_ERROR_OUT_OF_MEMORY;
	r = VRAM_REAL(cuMemAddressReserve)(&va, size, gran, 0, 0);
	if (r != CUDA_SUCCESS)
		goto out_uncharge;
	/*
	 * cuMemAlloc memory can be shared with cuIpcGetMemHandle (ipc.c),
	 * which hands over a file descriptor of the physical memory: only
	 * memory created for that handle type can be exported. Where the
	 * driver refuses the type, memory is made without it (not shareable).
	 */
	if (for_free && atomic_load(&ipc_handle_ok) >= 0)
		prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
	r = VRAM_REAL(cuMemCreate)(&h, size, &prop, 0);
	if (r != CUDA_SUCCESS && prop.requestedHandleTypes && r != CUDA_ERROR_OUT_OF_MEMORY) {
		atomic_store(&ipc_handle_ok, -1);
		prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_NONE;
		r = VRAM_REAL(cuMemCreate)(&h, size, &prop, 0);
	}
	if (r != CUDA_SUCCESS)
		goto out_free_va;
	r = VRAM_REAL(cuMemMap)(va, size, 0, h, 0);
	if (r != CUDA_SUCCESS)
		goto out_release;
	r = VRAM_REAL(cuMemSetAccess)(va, size, &access, 1);
	if (r != CUDA_SUCCESS)
		goto out_unmap;

	pthread_mutex_lock(&vram_hook_lock);
	struct vram_hook_phys *p = phys_new(h, size, dev, &prop, true);
	struct vram_hook_map *m = p ? map_add(va, size, 0, p) : NULL;
	if (!m || (for_free && vram_hook_table_put(&alloc_table, va, p) < 0)) {
		if (m) {
			vram_hook_table_del(&map_table, va);
			free(m);
		}
		if (p) {
			p->real = 0; /* released below */
			p->nmaps = 0;
			p->app_refs = 0;
			p->dev = -1;
			phys_destroy(p);
		}
		pthread_mutex_unlock(&vram_hook_lock);
		r = CUDA_ERROR_OUT_OF_MEMORY;
		goto out_unmap;
	}
	m->access[0] = access;
	m->naccess = 1;
	pthread_mutex_unlock(&vram_hook_lock);
	*dptr = va;
	if (ret_size)
		*ret_size = size;
	return CUDA_SUCCESS;

out_unmap:
	VRAM_REAL(cuMemUnmap)(va, size);
out_release:
	VRAM_REAL(cuMemRelease)(h);
out_free_va:
	VRAM_REAL(cuMemAddressFree)(va, size);
out_uncharge:
	vram_hook_uncharge(dev, size);
	return r;
}

/* A cuMemAlloc the hook does not serve from VMM: charged, not movable. */
static CUresult plain_alloc(CUdeviceptr *dptr, uint64_t bytes, int dev)
{
	if (vram_hook_charge(dev, bytes) < 0)
		return CUDA_ERROR_OUT_OF_MEMORY;
	CUresult r = VRAM_REAL(cuMemAlloc_v2)(dptr, bytes);
	if (r != CUDA_SUCCESS) {
		vram_hook_uncharge(dev, bytes);
		return r;
	}
	other_add(*dptr, OTHER_PLAIN, dev, bytes);
	return r;
}

VRAM_HOOK_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize)
{
	GATED_BEGIN();
	CUresult r;
	int dev = vram_hook_current_device();
	if (!dptr || bytesize == 0 || dev < 0 || dev >= VRAM_HOOK_MAX_DEVICES)
		r = VRAM_REAL(cuMemAlloc_v2)(dptr, bytesize); /* the driver reports the error */
	else if (vram_hook_use_vmm())
		r = vmm_alloc(dptr, bytesize, dev, true, NULL);
	else
		r = plain_alloc(dptr, bytesize, dev);
	GATED_END(r);
}

VRAM_HOOK_EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pPitch, size_t WidthInBytes, size_t Height,
					     unsigned int ElementSizeBytes)
{
	GATED_BEGIN();
	CUresult r;
	int dev = vram_hook_current_device();
	if (!dptr || !pPitch || WidthInBytes == 0 || Height == 0 || dev < 0 || dev >= VRAM_HOOK_MAX_DEVICES ||
	    (ElementSizeBytes != 4 && ElementSizeBytes != 8 && ElementSizeBytes != 16)) {
		r = VRAM_REAL(cuMemAllocPitch_v2)(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
		GATED_END(r);
	}
	if (!vram_hook_use_vmm()) {
		r = VRAM_REAL(cuMemAllocPitch_v2)(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
		if (r == CUDA_SUCCESS) {
			uint64_t bytes = (uint64_t)*pPitch * Height;
			vram_hook_charge_force(dev, bytes);
			other_add(*dptr, OTHER_PLAIN, dev, bytes);
		}
		GATED_END(r);
	}
	int align = atomic_load(&pitch_align);
	if (!align) {
		if (VRAM_CALL_REAL(cuDeviceGetAttribute, &align, CU_DEVICE_ATTRIBUTE_TEXTURE_PITCH_ALIGNMENT, dev) !=
		    CUDA_SUCCESS || align <= 0)
			align = 512;
		if (align < 512)
			align = 512;
		atomic_store(&pitch_align, align);
	}
	uint64_t pitch = round_up(WidthInBytes, (uint64_t)align);
	r = vmm_alloc(dptr, pitch * Height, dev, true, NULL);
	if (r == CUDA_SUCCESS)
		*pPitch = pitch;
	GATED_END(r);
}

CUresult vram_hook_vmm_alloc(CUdeviceptr *ret_va, uint64_t bytes, int dev, uint64_t *ret_size)
{
	return vmm_alloc(ret_va, bytes, dev, false, ret_size);
}

/* Unmaps and releases p, mapped once at va; nothing on the device may still use it. */
static CUresult vmm_unmap_release(struct vram_hook_phys *p, CUdeviceptr va)
{
	uint64_t size = p->size;
	/*
	 * The record goes in the same hold of the lock as the address range:
	 * once the range is free, another thread's cuMemAlloc can reserve it
	 * again and record its own mapping at va, which a lookup made after
	 * that would find and remove instead of ours, leaving p listed with a
	 * mapping that no longer exists for the next offload to copy from.
	 */
	pthread_mutex_lock(&vram_hook_lock);
	struct vram_hook_map *m = vram_hook_table_get(&map_table, va);
	CUresult r = VRAM_REAL(cuMemUnmap)(va, size);
	VRAM_REAL(cuMemAddressFree)(va, size);
	p->app_refs--;
	if (m && m->phys == p)
		map_remove(m); /* destroys p: no handle, no mapping left */
	else
		phys_maybe_destroy(p);
	pthread_mutex_unlock(&vram_hook_lock);
	return r;
}

/* Frees one of our cuMemAlloc allocations. */
static CUresult vmm_free(struct vram_hook_phys *p, CUdeviceptr va)
{
	/* cuMemFree waits for the device; unmapping under running work would fault. */
	VRAM_CALL_REAL(cuCtxSynchronize);
	return vmm_unmap_release(p, va);
}

CUresult vram_hook_vmm_release(CUdeviceptr va)
{
	pthread_mutex_lock(&vram_hook_lock);
	struct vram_hook_map *m = vram_hook_table_get(&map_table, va);
	struct vram_hook_phys *p = m ? m->phys : NULL;
	pthread_mutex_unlock(&vram_hook_lock);
	if (!p)
		return CUDA_ERROR_INVALID_VALUE;
	return vmm_unmap_release(p, va);
}

VRAM_HOOK_EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr)
{
	GATED_BEGIN();
	CUresult r;
	pthread_mutex_lock(&vram_hook_lock);
	struct vram_hook_phys *p = dptr ? vram_hook_table_del(&alloc_table, dptr) : NULL;
	pthread_mutex_unlock(&vram_hook_lock);
	if (p) {
		r = vmm_free(p, dptr);
		GATED_END(r);
	}
	if (dptr && vram_hook_pool_free_sync(dptr, &r))
		GATED_END(r);
	r = VRAM_REAL(cuMemFree_v2)(dptr);
	if (r == CUDA_SUCCESS && dptr)
		other_remove(dptr, 1u << OTHER_PLAIN | 1u << OTHER_MANAGED | 1u << OTHER_ASYNC);
	GATED_END(r);
}

VRAM_HOOK_EXPORT CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags)
{
	GATED_BEGIN();
	int dev = vram_hook_current_device();
	if (dptr && bytesize && vram_hook_charge(dev, bytesize) < 0)
		GATED_END(CUDA_ERROR_OUT_OF_MEMORY);
	CUresult r = VRAM_REAL(cuMemAllocManaged)(dptr, bytesize, flags);
	if (dptr && bytesize) {
		if (r == CUDA_SUCCESS)
			other_add(*dptr, OTHER_MANAGED, dev, bytesize);
		else
			vram_hook_uncharge(dev, bytesize);
	}
	GATED_END(r);
}

static uint64_t array_bytes(const CUDA_ARRAY_DESCRIPTOR *d)
{
	uint64_t elem;
	switch (d->Format) {
	case CU_AD_FORMAT_UNSIGNED_INT8: case CU_AD_FORMAT_SIGNED_INT8: elem = 1; break;
	case CU_AD_FORMAT_UNSIGNED_INT16: case CU_AD_FORMAT_SIGNED_INT16: case CU_AD_FORMAT_HALF: elem = 2; break;
	default: elem = 4; break;
	}
	return (uint64_t)d->Width * (d->Height ? d->Height : 1) * elem * (d->NumChannels ? d->NumChannels : 1);
}

VRAM_HOOK_EXPORT CUresult cuArrayCreate_v2(CUarray *pHandle, const CUDA_ARRAY_DESCRIPTOR *desc)
{
	GATED_BEGIN();
	int dev = vram_hook_current_device();
	uint64_t bytes = desc ? array_bytes(desc) : 0;
	if (pHandle && bytes && vram_hook_charge(dev, bytes) < 0)
		GATED_END(CUDA_ERROR_OUT_OF_MEMORY);
	CUresult r = VRAM_REAL(cuArrayCreate_v2)(pHandle, desc);
	if (pHandle && bytes) {
		if (r == CUDA_SUCCESS)
			other_add((uint64_t)(uintptr_t)*pHandle, OTHER_ARRAY, dev, bytes);
		else
			vram_hook_uncharge(dev, bytes);
	}
	GATED_END(r);
}

VRAM_HOOK_EXPORT CUresult cuArrayDestroy(CUarray hArray)
{
	GATED_BEGIN();
	CUresult r = VRAM_REAL(cuArrayDestroy)(hArray);
	if (r == CUDA_SUCCESS && hArray)
		other_remove((uint64_t)(uintptr_t)hArray, 1u << OTHER_ARRAY);
	GATED_END(r);
}

/* ------------------------------------------------------------------- IPC */

/* The wrappers are in ipc.c; what the driver serves itself is counted here. */

struct vram_hook_phys *vram_hook_alloc_lookup(CUdeviceptr dptr)
{
	return vram_hook_table_get(&alloc_table, dptr);
}

void vram_hook_phys_share(struct vram_hook_phys *p, bool on)
{
	if (on) {
		if (p->ipc_opens++ == 0 && p->movable && p->dev >= 0) {
			p->movable = false;
			p->ipc_pinned = true;
			vram_hook_nonmovable_add(p->dev, p->size);
		}
	} else if (p->ipc_opens && --p->ipc_opens == 0 && p->ipc_pinned) {
		p->ipc_pinned = false;
		p->movable = true;
		vram_hook_nonmovable_sub(p->dev, p->size);
	}
}

CUresult vram_hook_ipc_passthrough_get(CUipcMemHandle *pHandle, CUdeviceptr dptr)
{
	CUresult r = VRAM_REAL(cuIpcGetMemHandle)(pHandle, dptr);
	if (r == CUDA_SUCCESS) {
		/* Another process may map it: it must stay where it is. */
		pthread_mutex_lock(&vram_hook_lock);
		struct vram_hook_phys *p = vram_hook_table_get(&alloc_table, dptr);
		if (p)
			phys_pin(p);
		pthread_mutex_unlock(&vram_hook_lock);
	}
	return r;
}

CUresult vram_hook_ipc_passthrough_open(CUresult (*real)(CUdeviceptr *, CUipcMemHandle, unsigned int),
					CUdeviceptr *pdptr, CUipcMemHandle handle, unsigned int flags)
{
	if (!real)
		return CUDA_ERROR_NOT_FOUND;
	CUresult r = real(pdptr, handle, flags);
	if (r != CUDA_SUCCESS || !pdptr)
		return r;
	CUdeviceptr base = 0;
	size_t size = 0;
	int dev = vram_hook_current_device();
	if (VRAM_CALL_REAL(cuMemGetAddressRange_v2, &base, &size, *pdptr) != CUDA_SUCCESS)
		size = 0;
	if (vram_hook_charge(dev, size) < 0) {
		VRAM_REAL(cuIpcCloseMemHandle)(*pdptr);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	other_add(*pdptr, OTHER_IPC, dev, size);
	return r;
}

CUresult vram_hook_ipc_passthrough_close(CUdeviceptr dptr)
{
	CUresult r = VRAM_REAL(cuIpcCloseMemHandle)(dptr);
	if (r == CUDA_SUCCESS)
		other_remove(dptr, 1u << OTHER_IPC);
	return r;
}

/* ------------------------------------------------------------------- VMM */

VRAM_HOOK_EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
				      const CUmemAllocationProp *prop, unsigned long long flags)
{
	GATED_BEGIN();
	if (!handle || !prop)
		GATED_END(VRAM_REAL(cuMemCreate)(handle, size, prop, flags));
	/* The device comes from the request, never from the current context
	 * (a worker thread may have none); host locations are not charged. */
	int dev = -1;
	if (prop->location.type == CU_MEM_LOCATION_TYPE_DEVICE && prop->location.id >= 0 &&
	    prop->location.id < VRAM_HOOK_MAX_DEVICES)
		dev = prop->location.id;
	if (dev >= 0 && vram_hook_charge(dev, size) < 0)
		GATED_END(CUDA_ERROR_OUT_OF_MEMORY);
	CUmemGenericAllocationHandle real = 0;
	CUresult r = VRAM_REAL(cuMemCreate)(&real, size, prop, flags);
	if (r != CUDA_SUCCESS) {
		if (dev >= 0)
			vram_hook_uncharge(dev, size);
		GATED_END(r);
	}
	/* Memory meant for export stays put: another process maps it. */
	bool movable = dev >= 0 && prop->requestedHandleTypes == CU_MEM_HANDLE_TYPE_NONE;
	pthread_mutex_lock(&vram_hook_lock);
	struct vram_hook_phys *p = phys_new(real, size, dev, prop, movable);
	pthread_mutex_unlock(&vram_hook_lock);
	if (!p) {
		VRAM_REAL(cuMemRelease)(real);
		if (dev >= 0)
			vram_hook_uncharge(dev, size);
		GATED_END(CUDA_ERROR_OUT_OF_MEMORY);
	}
	if (dev >= 0 && !movable)
		vram_hook_nonmovable_add(dev, size);
	*handle = (CUmemGenericAllocationHandle)(uintptr_t)p;
	GATED_END(CUDA_SUCCESS);
}

VRAM_HOOK_EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle handle)
{
	GATED_BEGIN();
	pthread_mutex_lock(&vram_hook_lock);
	struct vram_hook_phys *p = phys_lookup(handle);
	if (p) {
		if (p->app_refs == 0) {
			pthread_mutex_unlock(&vram_hook_lock);
			GATED_END(CUDA_ERROR_INVALID_VALUE);
		}
		p->app_refs--;
		phys_maybe_destroy(p);
	}
	pthread_mutex_unlock(&vram_hook_lock);
	if (p)
		GATED_END(CUDA_SUCCESS);
	GATED_END(VRAM_REAL(cuMemRelease)(handle));
}

VRAM_HOOK_EXPORT CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
				   unsigned long long flags)
{
	GATED_BEGIN();
	pthread_mutex_lock(&vram_hook_lock);
	struct vram_hook_phys *p = phys_lookup(handle);
	if (!p) {
		pthread_mutex_unlock(&vram_hook_lock);
		GATED_END(VRAM_REAL(cuMemMap)(ptr, size, offset, handle, flags));
	}
	CUresult r = VRAM_REAL(cuMemMap)(ptr, size, offset, p->real, flags);
	if (r == CUDA_SUCCESS && !map_add(ptr, size, offset, p)) {
		VRAM_REAL(cuMemUnmap)(ptr, size);
		r = CUDA_ERROR_OUT_OF_MEMORY;
	}
	pthread_mutex_unlock(&vram_hook_lock);
	GATED_END(r);
}

/* Calls fn on every recorded mapping inside [ptr, ptr+size). */
static void for_maps_in(CUdeviceptr ptr, uint64_t size, void (*fn)(struct vram_hook_map *, void *), void *arg)
{
	CUdeviceptr va = ptr;
	while (va < ptr + size) {
		struct vram_hook_map *m = vram_hook_table_get(&map_table, va);
		if (!m)
			break;
		va += m->size;
		fn(m, arg);
	}
	if (va >= ptr + size)
		return;
	/* Not a run of exact starts: look at every mapping. */
	for (size_t i = 0; i < map_table.cap; i++) {
		if (map_table.keys[i] <= KEY_DELETED)
			continue;
		struct vram_hook_map *m = map_table.vals[i];
		/* fn may delete the entry; deletion never moves other slots. */
		if (m->va >= va && m->va + m->size <= ptr + size)
			fn(m, arg);
	}
}

static void unmap_one(struct vram_hook_map *m, void *arg)
{
	(void)arg;
	map_remove(m);
}

VRAM_HOOK_EXPORT CUresult cuMemUnmap(CUdeviceptr ptr, size_t size)
{
	GATED_BEGIN();
	CUresult r = VRAM_REAL(cuMemUnmap)(ptr, size);
	if (r == CUDA_SUCCESS) {
		pthread_mutex_lock(&vram_hook_lock);
		for_maps_in(ptr, size, unmap_one, NULL);
		pthread_mutex_unlock(&vram_hook_lock);
	}
	GATED_END(r);
}

struct access_arg {
	const CUmemAccessDesc *desc;
	size_t count;
};

static void record_access(struct vram_hook_map *m, void *arg)
{
	const struct access_arg *a = arg;
	for (size_t i = 0; i < a->count; i++) {
		unsigned j;
		for (j = 0; j < m->naccess; j++)
			if (m->access[j].location.type == a->desc[i].location.type &&
			    m->access[j].location.id == a->desc[i].location.id)
				break;
		if (j == m->naccess) {
			if (m->naccess == VRAM_HOOK_MAX_ACCESS)
				continue;
			m->naccess++;
		}
		m->access[j] = a->desc[i];
	}
}

VRAM_HOOK_EXPORT CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count)
{
	GATED_BEGIN();
	CUresult r = VRAM_REAL(cuMemSetAccess)(ptr, size, desc, count);
	if (r == CUDA_SUCCESS && desc) {
		struct access_arg a = { desc, count };
		pthread_mutex_lock(&vram_hook_lock);
		for_maps_in(ptr, size, record_access, &a);
		pthread_mutex_unlock(&vram_hook_lock);
	}
	GATED_END(r);
}

VRAM_HOOK_EXPORT CUresult cuMemRetainAllocationHandle(CUmemGenericAllocationHandle *handle, void *addr)
{
	GATED_BEGIN();
	if (!handle)
		GATED_END(VRAM_REAL(cuMemRetainAllocationHandle)(handle, addr));
	pthread_mutex_lock(&vram_hook_lock);
	struct vram_hook_map *m = map_containing((CUdeviceptr)(uintptr_t)addr);
	if (m) {
		m->phys->app_refs++;
		*handle = (CUmemGenericAllocationHandle)(uintptr_t)m->phys;
	}
	pthread_mutex_unlock(&vram_hook_lock);
	if (m)
		GATED_END(CUDA_SUCCESS);
	GATED_END(VRAM_REAL(cuMemRetainAllocationHandle)(handle, addr));
}

VRAM_HOOK_EXPORT CUresult cuMemGetAllocationPropertiesFromHandle(CUmemAllocationProp *prop,
								 CUmemGenericAllocationHandle handle)
{
	GATED_BEGIN();
	pthread_mutex_lock(&vram_hook_lock);
	struct vram_hook_phys *p = phys_lookup(handle);
	CUresult r = CUDA_SUCCESS;
	if (p && prop)
		*prop = p->prop;
	else if (p)
		r = CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_unlock(&vram_hook_lock);
	if (!p)
		r = VRAM_REAL(cuMemGetAllocationPropertiesFromHandle)(prop, handle);
	GATED_END(r);
}

VRAM_HOOK_EXPORT CUresult cuMemExportToShareableHandle(void *shareableHandle, CUmemGenericAllocationHandle handle,
						       CUmemAllocationHandleType handleType, unsigned long long flags)
{
	GATED_BEGIN();
	pthread_mutex_lock(&vram_hook_lock);
	struct vram_hook_phys *p = phys_lookup(handle);
	CUmemGenericAllocationHandle real = p ? p->real : handle;
	CUresult r = VRAM_REAL(cuMemExportToShareableHandle)(shareableHandle, real, handleType, flags);
	if (r == CUDA_SUCCESS && p)
		phys_pin(p);
	pthread_mutex_unlock(&vram_hook_lock);
	GATED_END(r);
}

VRAM_HOOK_EXPORT CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *handle, void *osHandle,
							 CUmemAllocationHandleType shHandleType)
{
	GATED_BEGIN();
	CUmemGenericAllocationHandle real = 0;
	CUresult r = VRAM_REAL(cuMemImportFromShareableHandle)(&real, osHandle, shHandleType);
	if (r != CUDA_SUCCESS || !handle)
		GATED_END(r);
	CUmemAllocationProp prop;
	memset(&prop, 0, sizeof(prop));
	VRAM_CALL_REAL(cuMemGetAllocationPropertiesFromHandle, &prop, real);
	/* The exporting process owns (and is charged for) this memory. */
	pthread_mutex_lock(&vram_hook_lock);
	struct vram_hook_phys *p = phys_new(real, 0, -1, &prop, false);
	if (p)
		p->imported = true;
	pthread_mutex_unlock(&vram_hook_lock);
	if (!p) {
		VRAM_REAL(cuMemRelease)(real);
		GATED_END(CUDA_ERROR_OUT_OF_MEMORY);
	}
	*handle = (CUmemGenericAllocationHandle)(uintptr_t)p;
	GATED_END(CUDA_SUCCESS);
}

/* ------------------------------------------------- stream-ordered memory */

/* The wrappers are in pool.c; memory of pools made for export stays here. */

CUresult vram_hook_async_passthrough(CUresult r_call, CUdeviceptr *dptr, size_t bytes, int dev)
{
	if (r_call == CUDA_SUCCESS && dptr)
		other_add(*dptr, OTHER_ASYNC, dev, bytes);
	else if (dptr && bytes)
		vram_hook_uncharge(dev, bytes);
	return r_call;
}

void vram_hook_async_passthrough_freed(CUdeviceptr dptr)
{
	other_remove(dptr, 1u << OTHER_ASYNC);
}
