/*
 * Native CPU kernel of detblocks.assign.atss (optional: without it the package computes
 * the same candidates with PyTorch ops).
 *
 * nearest: for every pair (image, ground truth), on every pyramid level, the indices of
 * the min(topk, level size) anchors whose centres are nearest the ground truth's centre,
 * in ascending (distance, anchor index) order, level after level. The distance is the
 * PyTorch path's float32 `sqrt(dx * dx + dy * dy)` (dx = anchor - gt centre; NaN counts
 * as +inf), computed with the same roundings (no fused multiply-add, see setup.py; the
 * square root is IEEE's correctly rounded one), so the candidates are the same, in the
 * same order, as atss._nearest_block's unique (distance bits, index) keys give them. No
 * distance matrix is held: one level's distances of one pair at a time, with the minimum
 * of every block of BLOCK anchors; blocks are then read nearest first until the k-th
 * nearest so far is nearer than every block left (for a grid of anchors, 2 or 3 blocks).
 *
 * Pairs are split over `threads` OpenMP threads (PyTorch's own team when built with
 * -fopenmp, see _native.c); without OpenMP on the calling thread.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define BLOCK 128

/* AVX-512 and AVX2 versions beside the baseline, picked at load time (as in _native.c);
 * none contracts a multiply-add (-ffp-contract=off). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define VECTOR_CLONES
#endif

/* A distance as the PyTorch path's key sees it: non-negative floats (and +inf) order as
 * their bit patterns, so the scan compares int32 bits, which vectorise. */
typedef union {
    float f;
    int32_t i;
} fbits;

typedef struct {
    const float *acx, *acy;  /* (N,) anchor centres, +inf for a non-finite anchor */
    const int64_t *sizes;    /* (L,) anchors per level */
    int64_t levels, topk, widest;
    const float *gcx, *gcy;  /* (P,) ground-truth centres */
    int64_t *out;            /* (P, K) */
    int64_t k_total;
} nearest_job;

/* Whether (d, i) comes before (e, j): nearer, or as near with a lower index. */
static inline int before(int32_t d, int64_t i, int32_t e, int64_t j) { return d < e || (d == e && i < j); }

/* The nearest `k` of the `size` anchors at ax, ay to (gx, gy) into idx (level-local
 * indices) in ascending (distance, index) order. `dist` holds `size` distances' bits and
 * `lows` the minimum of every block of BLOCK of them. The result does not depend on the
 * order blocks are read in; they are read nearest block first, and reading stops at the
 * first block whose minimum is beyond the current k-th nearest. */
static inline __attribute__((always_inline)) void nearest_level(const float *ax, const float *ay, int64_t size, int64_t k, float gx, float gy,
                          fbits *dist, int32_t *lows, int32_t *list_d, int64_t *idx) {
    for (int64_t j = 0; j < size; j++) {
        const float dx = ax[j] - gx, dy = ay[j] - gy;
        const float sq = dx * dx + dy * dy;
        const float v = sqrtf(sq);
        dist[j].f = v != v ? INFINITY : v;
    }
    const int64_t blocks = (size + BLOCK - 1) / BLOCK;
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t lo = b * BLOCK, hi = lo + BLOCK < size ? lo + BLOCK : size;
        int32_t low = INT32_MAX;
        for (int64_t j = lo; j < hi; j++) low = dist[j].i < low ? dist[j].i : low;
        lows[b] = low;
    }
    int64_t count = 0;
    for (;;) {
        int64_t b = -1;
        for (int64_t c = 0; c < blocks; c++)
            if (lows[c] != INT32_MAX && (b < 0 || lows[c] < lows[b])) b = c;
        if (b < 0) break;
        if (count == k && lows[b] > list_d[k - 1]) break; /* every block left is farther */
        lows[b] = INT32_MAX;                              /* read */
        const int64_t lo = b * BLOCK, hi = lo + BLOCK < size ? lo + BLOCK : size;
        for (int64_t j = lo; j < hi; j++) {
            const int32_t v = dist[j].i;
            if (count == k && !before(v, j, list_d[k - 1], idx[k - 1])) continue;
            int64_t pos = count < k ? count : k - 1; /* slot to fill, then move left */
            while (pos > 0 && before(v, j, list_d[pos - 1], idx[pos - 1])) {
                list_d[pos] = list_d[pos - 1], idx[pos] = idx[pos - 1];
                pos--;
            }
            list_d[pos] = v, idx[pos] = j;
            if (count < k) count++;
        }
    }
}

VECTOR_CLONES
static void nearest_pairs(const nearest_job *job, int64_t begin, int64_t end) {
    const int64_t widest = job->widest;
    fbits *dist = malloc((size_t)(widest > 0 ? widest : 1) * sizeof(fbits));
    int32_t *lows = malloc((size_t)((widest + BLOCK - 1) / BLOCK + 1) * sizeof(int32_t));
    int32_t *list_d = malloc((size_t)job->topk * sizeof(int32_t));
    if (dist != NULL && lows != NULL && list_d != NULL) {
        for (int64_t p = begin; p < end; p++) {
            int64_t *row = job->out + p * job->k_total;
            int64_t start = 0;
            for (int64_t l = 0; l < job->levels; l++) {
                const int64_t size = job->sizes[l];
                const int64_t k = job->topk < size ? job->topk : size;
                if (k > 0) {
                    nearest_level(job->acx + start, job->acy + start, size, k, job->gcx[p], job->gcy[p], dist, lows,
                                  list_d, row);
                    for (int64_t i = 0; i < k; i++) row[i] += start;
                    row += k;
                }
                start += size;
            }
        }
    } /* else: out stays -1, reported by the caller */
    free(dist);
    free(lows);
    free(list_d);
}

/* nearest(acx, acy, sizes, levels, topk, gcx, gcy, pairs, out, k_total, threads): float32
 * centres, int64 level sizes, int64 out (pairs, k_total), all contiguous. */
static PyObject *native_nearest(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long acx, acy, sizes, gcx, gcy, out;
    long long levels, topk, pairs, k_total;
    int threads;
    if (!PyArg_ParseTuple(args, "KKKLLKKLKLi", &acx, &acy, &sizes, &levels, &topk, &gcx, &gcy, &pairs, &out,
                          &k_total, &threads))
        return NULL;
    if (levels < 0 || topk < 1 || pairs < 0 || k_total < 0) {
        PyErr_SetString(PyExc_ValueError, "nearest: bad sizes");
        return NULL;
    }
    int64_t widest = 0;
    for (int64_t l = 0; l < levels; l++)
        if (((const int64_t *)(uintptr_t)sizes)[l] > widest) widest = ((const int64_t *)(uintptr_t)sizes)[l];
    const nearest_job job = {(const float *)(uintptr_t)acx, (const float *)(uintptr_t)acy,
                             (const int64_t *)(uintptr_t)sizes, levels, topk, widest,
                             (const float *)(uintptr_t)gcx, (const float *)(uintptr_t)gcy,
                             (int64_t *)(uintptr_t)out, k_total};
    for (int64_t i = 0; i < pairs * k_total; i++) job.out[i] = -1;
    if (threads < 1) threads = 1;
    if (threads > pairs) threads = pairs < 1 ? 1 : (int)pairs;
    Py_BEGIN_ALLOW_THREADS
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
    {
        int64_t t = 0, nt = 1;
#ifdef _OPENMP
        t = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
        nearest_pairs(&job, pairs * t / nt, pairs * (t + 1) / nt);
    }
    Py_END_ALLOW_THREADS
    for (int64_t i = 0; i < pairs * k_total; i++)
        if (job.out[i] < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"nearest", native_nearest, METH_VARARGS, "Per level, the topk anchors nearest every ground-truth centre."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native_atss", "detblocks' native ATSS kernel.", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native_atss(void) { return PyModule_Create(&module); }
