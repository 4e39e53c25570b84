/*
 * Native CPU kernel of detblocks.assign._dynamic_k (optional: without it the package
 * computes the same values with PyTorch ops).
 *
 * iou_k: for a block of ground-truth rows against the first `w` candidate columns of
 * their images, the IoU of every (row, column) pair and every row's dynamic k.
 *   - The IoU is mmdet's bbox_overlaps (eps 1e-6) in the PyTorch path's float32
 *     operations and order (_dynamic_k.pair_iou): areas, the clamped intersection sides,
 *     `union = max((area_a + area_g) - overlap, 1e-6)`, `overlap / union`. Every operation
 *     is one IEEE float32 operation, with no fused multiply-add (see setup.py), so the
 *     values are the PyTorch path's bit for bit. NaN propagates through min and max as
 *     torch.minimum/maximum do.
 *   - k is `max(1, int(t_0 + t_1 + ... ))`, the t_i the `topk` largest IoUs of the row's
 *     candidate columns (ok), in descending order, each at least 0 (the PyTorch path's
 *     topk of where(ok, iou, -1), clamped, summed one after another); at most `w` of them.
 *
 * select: each row's k cheapest candidate columns by the unique keys
 *   `cost bits << 32 | prior` and each column's lowest `cost bits << 32 | row` (conflicts).
 * region: SimOTA's candidate test of rows against every point: whether a point lies in
 *   some row's box or centre region (per image), and whether in both of a row's.
 *
 * Rows are split over `threads` OpenMP threads, whole images each (PyTorch's own team when built with
 * -fopenmp, see _native.c); without OpenMP on the calling thread.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define MAX_TOPK 64

typedef struct {
    const float *gt;      /* (R, 4) corner boxes of the rows */
    const int64_t *img;   /* (R,) image of each row */
    const float *boxes;   /* (B, L, 4) predicted corner boxes of the columns */
    const uint8_t *ok;    /* (B, L) whether a column is a candidate */
    int64_t width, w, topk;
    float *iou;           /* (R, w) */
    int32_t *k;           /* (R,) */
} iou_k_job;

static inline float fmin_nan(float a, float b) { return (a != a || b != b) ? (a != a ? a : b) : (a < b ? a : b); }
static inline float fmax_nan(float a, float b) { return (a != a || b != b) ? (a != a ? a : b) : (a > b ? a : b); }
/* torch's clamp(min=lo): NaN stays NaN. */
static inline float clamp_min(float x, float lo) { return x < lo ? lo : x; }

static void iou_k_rows(const iou_k_job *job, int64_t lo, int64_t hi) {
    const int64_t w = job->w, topk = job->topk < w ? job->topk : w;
    for (int64_t r = lo; r < hi; r++) {
        const float gx1 = job->gt[4 * r], gy1 = job->gt[4 * r + 1], gx2 = job->gt[4 * r + 2],
                    gy2 = job->gt[4 * r + 3];
        const float area_g = (gx2 - gx1) * (gy2 - gy1);
        const float *b = job->boxes + job->img[r] * job->width * 4;
        const uint8_t *ok = job->ok + job->img[r] * job->width;
        float *out = job->iou + r * w;
        float top[MAX_TOPK]; /* the largest clamped values so far, descending */
        int64_t held = 0;
        for (int64_t j = 0; j < w; j++) {
            const float ax1 = b[4 * j], ay1 = b[4 * j + 1], ax2 = b[4 * j + 2], ay2 = b[4 * j + 3];
            const float area_a = (ax2 - ax1) * (ay2 - ay1);
            const float iw = clamp_min(fmin_nan(ax2, gx2) - fmax_nan(ax1, gx1), 0.0f);
            const float ih = clamp_min(fmin_nan(ay2, gy2) - fmax_nan(ay1, gy1), 0.0f);
            const float overlap = iw * ih;
            const float sum = area_a + area_g;
            const float v = overlap / clamp_min(sum - overlap, 1e-6f);
            out[j] = v;
            if (topk == 0) continue;
            const float t = ok[j] ? clamp_min(v, 0.0f) : 0.0f; /* where(ok, iou, -1), clamped */
            if (held == topk && !(t > top[held - 1])) continue;
            int64_t at = held < topk ? held++ : held - 1;
            while (at > 0 && t > top[at - 1]) {
                top[at] = top[at - 1];
                at--;
            }
            top[at] = t;
        }
        float total = 0.0f;
        if (held > 0) {
            total = top[0];
            for (int64_t i = 1; i < held; i++) total = total + top[i];
        }
        for (int64_t i = held; i < topk; i++) total = total + 0.0f;
        int32_t k = (int32_t)total;
        job->k[r] = k < 1 ? 1 : k;
    }
}

/* Run rows(job, lo, hi) on `threads` threads, each on an even share of the rows moved to
 * image boundaries (img ascending), so that no two threads write one image's outputs. */
static void by_images(void (*rows_fn)(const void *, int64_t, int64_t), const void *job, const int64_t *img,
                      int64_t rows, int threads) {
    if (threads < 1) threads = 1;
    if (threads > rows) threads = rows < 1 ? 1 : (int)rows;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
    {
        int64_t t = 0, nt = 1;
#ifdef _OPENMP
        t = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
        int64_t lo = rows * t / nt, hi = rows * (t + 1) / nt;
        while (lo > 0 && lo < rows && img[lo] == img[lo - 1]) lo++;
        while (hi > 0 && hi < rows && img[hi] == img[hi - 1]) hi++;
        if (lo < hi) rows_fn(job, lo, hi);
    }
}

typedef struct {
    const float *x1, *y1, *x2, *y2, *cx, *cy; /* (R,) the rows' boxes and centres */
    const int64_t *img;                        /* (R,) image of each row, ascending */
    const float *px, *py, *rx, *ry;            /* (N,) points and centre-region half-sides */
    int64_t rows, n;
    uint8_t *hits; /* (B, N): in some row's box or centre region (OR, zeroed by the caller) */
    uint8_t *both; /* (R, N): in the row's box and its centre region */
} region_job;

/* Rows lo..hi (whole images: no other thread writes their hits rows). */
static void region_rows(const region_job *job, int64_t lo, int64_t hi) {
    const int64_t n = job->n;
    const float *px = job->px, *py = job->py, *rx = job->rx, *ry = job->ry;
    for (int64_t r = lo; r < hi; r++) {
        const float x1 = job->x1[r], y1 = job->y1[r], x2 = job->x2[r], y2 = job->y2[r], cx = job->cx[r],
                    cy = job->cy[r];
        uint8_t *hit = job->hits + job->img[r] * n, *both = job->both + r * n;
        for (int64_t p = 0; p < n; p++) {
            const int in_box = (px[p] > x1) & (py[p] > y1) & (x2 > px[p]) & (y2 > py[p]);
            const int in_ctr = (px[p] > cx - rx[p]) & (py[p] > cy - ry[p]) & (cx + rx[p] > px[p]) & (cy + ry[p] > py[p]);
            hit[p] |= (uint8_t)(in_box | in_ctr);
            both[p] = (uint8_t)(in_box & in_ctr);
        }
    }
}

static void region_rows_of(const void *job, int64_t lo, int64_t hi) { region_rows((const region_job *)job, lo, hi); }

/* region(x1, y1, x2, y2, cx, cy, img, rows, px, py, rx, ry, n, hits, both, threads):
 * float32 (R,) and (N,) arrays, int64 img (R,) ascending, uint8 hits (B, N) zeroed and
 * both (R, N), all contiguous. The comparisons are the PyTorch path's (simota.region). */
static PyObject *native_region(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long x1, y1, x2, y2, cx, cy, img, px, py, rx, ry, hits, both;
    long long rows, n;
    int threads;
    if (!PyArg_ParseTuple(args, "KKKKKKKLKKKKLKKi", &x1, &y1, &x2, &y2, &cx, &cy, &img, &rows, &px, &py, &rx,
                          &ry, &n, &hits, &both, &threads))
        return NULL;
    if (rows < 0 || n < 0) {
        PyErr_SetString(PyExc_ValueError, "region: bad sizes");
        return NULL;
    }
    const region_job job = {(const float *)(uintptr_t)x1, (const float *)(uintptr_t)y1,
                            (const float *)(uintptr_t)x2, (const float *)(uintptr_t)y2,
                            (const float *)(uintptr_t)cx, (const float *)(uintptr_t)cy,
                            (const int64_t *)(uintptr_t)img, (const float *)(uintptr_t)px,
                            (const float *)(uintptr_t)py, (const float *)(uintptr_t)rx,
                            (const float *)(uintptr_t)ry, rows, n, (uint8_t *)(uintptr_t)hits,
                            (uint8_t *)(uintptr_t)both};
    Py_BEGIN_ALLOW_THREADS
    by_images(region_rows_of, &job, job.img, rows, threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}


typedef struct {
    const float *cost;    /* (R, w) */
    const int64_t *img;   /* (R,) ascending */
    const int64_t *row;   /* (R,) ground-truth row of each */
    const uint8_t *ok;    /* (B, L) */
    const int64_t *prior; /* (B, L) */
    const int32_t *k;     /* (R,) */
    int64_t rows, width, w, t;
    int64_t *sel;   /* (R, t) columns of the t smallest keys, ascending */
    uint8_t *chosen; /* (R, t) the first k of them that are candidates */
    int64_t *best;  /* (B, L) conflict keys: min(best, cost bits << 32 | row) */
} select_job;

/* The PyTorch path's _dynamic_k.cost_bits(cost) << 32 (order-preserving). */
static inline int64_t high_bits(float c) {
    union {
        float f;
        int32_t i;
    } u;
    u.f = c + 0.0f;
    const int32_t bits = u.i < 0 ? u.i ^ 0x7FFFFFFF : u.i;
    return (int64_t)((uint64_t)(int64_t)bits << 32);
}

static void select_rows(const select_job *job, int64_t lo, int64_t hi) {
    const int64_t w = job->w, t = job->t;
    int64_t keys[MAX_TOPK], cols[MAX_TOPK];
    for (int64_t r = lo; r < hi; r++) {
        const int64_t b = job->img[r], rw = job->row[r];
        const float *cost = job->cost + r * w;
        const uint8_t *ok = job->ok + b * job->width;
        const int64_t *prior = job->prior + b * job->width;
        int64_t *best = job->best + b * job->width;
        int64_t held = 0;
        for (int64_t j = 0; j < w; j++) {
            if (!ok[j]) continue;
            const int64_t high = high_bits(cost[j]);
            const int64_t conflict = high | rw;
            if (conflict < best[j]) best[j] = conflict;
            if (t == 0) continue;
            const int64_t key = high | prior[j];
            if (held == t && !(key < keys[held - 1])) continue;
            int64_t at = held < t ? held++ : held - 1;
            while (at > 0 && key < keys[at - 1]) {
                keys[at] = keys[at - 1];
                cols[at] = cols[at - 1];
                at--;
            }
            keys[at] = key;
            cols[at] = j;
        }
        for (int64_t i = 0; i < t; i++) {
            job->sel[r * t + i] = i < held ? cols[i] : 0;
            job->chosen[r * t + i] = (uint8_t)(i < held && i < job->k[r]);
        }
    }
}

static void select_rows_of(const void *job, int64_t lo, int64_t hi) { select_rows((const select_job *)job, lo, hi); }

/* select(cost, img, row, ok, prior, k, rows, width, w, t, sel, chosen, best, threads):
 * float32 cost (R, w), int64 img/row (R,) (img ascending), bool ok (B, width), int64
 * prior (B, width), int32 k (R,), int64 sel (R, t), bool chosen (R, t), int64 best
 * (B, width), all contiguous; t <= 64. The keys and conflict keys of
 * _dynamic_k.dynamic_k_match, the selection of its k smallest keys per row, and the
 * minimum conflict key per column (threads own whole images). */
static PyObject *native_select(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long cost, img, row, ok, prior, k, sel, chosen, best;
    long long rows, width, w, t;
    int threads;
    if (!PyArg_ParseTuple(args, "KKKKKKLLLLKKKi", &cost, &img, &row, &ok, &prior, &k, &rows, &width, &w, &t, &sel,
                          &chosen, &best, &threads))
        return NULL;
    if (rows < 0 || width < 0 || w < 0 || w > width || t < 0 || t > MAX_TOPK) {
        PyErr_SetString(PyExc_ValueError, "select: bad sizes");
        return NULL;
    }
    const select_job job = {(const float *)(uintptr_t)cost, (const int64_t *)(uintptr_t)img,
                            (const int64_t *)(uintptr_t)row, (const uint8_t *)(uintptr_t)ok,
                            (const int64_t *)(uintptr_t)prior, (const int32_t *)(uintptr_t)k,
                            rows, width, w, t, (int64_t *)(uintptr_t)sel, (uint8_t *)(uintptr_t)chosen,
                            (int64_t *)(uintptr_t)best};
    Py_BEGIN_ALLOW_THREADS
    by_images(select_rows_of, &job, job.img, rows, threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static void iou_k_rows_of(const void *job, int64_t lo, int64_t hi) { iou_k_rows((const iou_k_job *)job, lo, hi); }

/* iou_k(gt, img, boxes, ok, rows, width, w, topk, iou, k, threads): float32 gt (R, 4),
 * int64 img (R,), float32 boxes (B, width, 4), bool ok (B, width), float32 iou (R, w),
 * int32 k (R,), all contiguous. */
static PyObject *native_iou_k(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long gt, img, boxes, ok, iou, k;
    long long rows, width, w, topk;
    int threads;
    if (!PyArg_ParseTuple(args, "KKKKLLLLKKi", &gt, &img, &boxes, &ok, &rows, &width, &w, &topk, &iou, &k,
                          &threads))
        return NULL;
    if (rows < 0 || width < 0 || w < 0 || w > width || topk < 0 || topk > MAX_TOPK) {
        PyErr_SetString(PyExc_ValueError, "iou_k: bad sizes");
        return NULL;
    }
    const iou_k_job job = {(const float *)(uintptr_t)gt, (const int64_t *)(uintptr_t)img,
                           (const float *)(uintptr_t)boxes, (const uint8_t *)(uintptr_t)ok, width, w, topk,
                           (float *)(uintptr_t)iou, (int32_t *)(uintptr_t)k};
    Py_BEGIN_ALLOW_THREADS
    by_images(iou_k_rows_of, &job, job.img, rows, threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"iou_k", native_iou_k, METH_VARARGS, "IoU of rows against candidate columns, and each row's dynamic k."},
    {"region", native_region, METH_VARARGS, "SimOTA's candidate region test of rows against points."},
    {"select", native_select, METH_VARARGS, "Each row's k cheapest candidates, and each column's cheapest row."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native_dynk", "detblocks' native dynamic-k kernel.",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native_dynk(void) { return PyModule_Create(&module); }
