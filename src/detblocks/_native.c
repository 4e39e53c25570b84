/*
 * Native CPU kernels of detblocks (optional: the package falls back to PyTorch ops
 * when this module is not built, with the same results bit for bit).
 *
 * box_iou: the IoU matrix of float32 boxes in one pass, each anchor's best IoU on the
 * side. It follows bbox._iou_block operation for operation (same roundings: no fused
 * multiply-add, see setup.py), so its output equals the PyTorch path's exactly.
 * ohem_samples: OHEM's samples from the background log-probabilities, a selection of the
 * k largest of sampler._hardest_k's unique integer keys per image (so the same anchors).
 * decode_per_class: coder.decode_per_class's class ids and scores in one pass.
 * bipartite: matcher._bipartite's greedy matching and recovery, per image, on the
 * candidate pairs that can matter (the same matches).
 *
 * The functions take the addresses of contiguous tensors prepared by the Python side
 * and release the GIL while they compute, on `threads` OpenMP threads. Built with
 * -fopenmp, the module links libgomp.so.1 by name, and the dynamic loader then gives it
 * the copy PyTorch has loaded already: its thread team is PyTorch's own, so the two
 * never compete for cores (a second team would find PyTorch's threads still spinning
 * after its last op). Built without OpenMP, the kernels run on the calling thread.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES 16   /* columns are padded to a multiple of this: whole vectors, no tail */
#ifdef _OPENMP
#include <omp.h>
#endif

static const float F16_MAX = 65504.0f;

/* The calling thread's share [*begin, *end) of `units` split evenly over its OpenMP team
 * (all of them outside a parallel region, or without OpenMP). */
static inline void share(int64_t units, int64_t *begin, int64_t *end) {
    int64_t t = 0, nt = 1;
#ifdef _OPENMP
    t = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
    *begin = units * t / nt, *end = units * (t + 1) / nt;
}

/* Starts the block after it on `threads` OpenMP threads, OR-ing their `failed` flags (a
 * plain block without OpenMP). */
#ifdef _OPENMP
#define PARALLEL_COUNTING_FAILURES _Pragma("omp parallel num_threads(threads) reduction(| : failed)")
#else
#define PARALLEL_COUNTING_FAILURES
#endif

/* Threads for `units` of work: `threads` (at least 1), but no more than one per `grain`. */
static int team(int threads, int64_t units, int64_t grain) {
    const int64_t most = units / grain;
    if (threads > most) threads = (int)most;
    return threads < 1 ? 1 : threads;
}

typedef struct {
    const float *a;     /* (Ba, N, 4) corner boxes */
    int64_t a_stride;   /* N * 4, or 0 when one set of anchors serves every image */
    const float *refs;  /* (B, 5, K) live references of every image: x1, y1, x2, y2, area */
    const int64_t *cols;  /* (B, K) output column of each live reference */
    const int64_t *count; /* (B,) live references of every image */
    const uint8_t *prefix; /* (B,) the live references are the first count columns */
    int64_t batch, n, m, k;
    float offset, eps;
    float *out;   /* (B, N, M) */
    float *best;  /* (B, N) */
    float *gmax;  /* (B, G, M) group maxima, or NULL */
    int64_t groups;  /* G */
} iou_job;

/* Box area as bbox._planes_and_areas computes it; a non-finite area makes the box a
 * point at the origin with infinite area (it intersects nothing). */
static inline float box_area(float *x1, float *y1, float *x2, float *y2, float offset) {
    float area = (*x2 - *x1 + offset) * (*y2 - *y1 + offset);
    if (!isfinite(area)) {
        *x1 = *y1 = *x2 = *y2 = 0.0f;
        return INFINITY;
    }
    return area < 0.0f ? 0.0f : area;
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define VECTOR_CLONES
#endif

/* Row i of image b: its IoU written into the result, its maximum into best; tmp (K
 * floats) keeps the IoU of the image's live references, whole vectors of LANES. */
static inline __attribute__((always_inline)) void iou_row(const iou_job *job, int64_t b, int64_t i,
                                                           float *restrict tmp) {
    const int64_t m = job->m, k = job->k;
    const float *box = job->a + b * job->a_stride + i * 4;
    float x1 = box[0], y1 = box[1], x2 = box[2], y2 = box[3];
    const float area = box_area(&x1, &y1, &x2, &y2, job->offset) + job->eps;
    const float *rx1 = job->refs + b * 5 * k, *ry1 = rx1 + k, *rx2 = ry1 + k, *ry2 = rx2 + k, *rarea = ry2 + k;
    const int64_t live = job->count[b];
    const int64_t width = (live + LANES - 1) / LANES * LANES;
    float lane_max[LANES] __attribute__((aligned(64)));
    for (int l = 0; l < LANES; l++) lane_max[l] = 0.0f;
    for (int64_t j0 = 0; j0 < width; j0 += LANES) {
        for (int l = 0; l < LANES; l++) {
            const int64_t j = j0 + l;
            const float right = x2 < rx2[j] ? x2 : rx2[j], left = x1 > rx1[j] ? x1 : rx1[j];
            const float bottom = y2 < ry2[j] ? y2 : ry2[j], top = y1 > ry1[j] ? y1 : ry1[j];
            float w = right - left + job->offset, h = bottom - top + job->offset;
            w = w < 0.0f ? 0.0f : (w > F16_MAX ? F16_MAX : w);
            h = h < 0.0f ? 0.0f : (h > F16_MAX ? F16_MAX : h);
            const float inter = w * h;
            const float v = inter / ((area + rarea[j]) - inter);
            tmp[j] = v;
            lane_max[l] = v > lane_max[l] ? v : lane_max[l];
        }
    }
    float best = 0.0f;
    for (int l = 0; l < LANES; l++) best = lane_max[l] > best ? lane_max[l] : best;
    job->best[b * job->n + i] = best;
    float *row = job->out + (b * job->n + i) * m;
    if (job->prefix[b]) {
        const int64_t head = width < m ? width : m;  /* padding columns compute to 0 */
        memcpy(row, tmp, head * sizeof(float));
        if (head < m) memset(row + head, 0, (m - head) * sizeof(float));
    } else {
        memset(row, 0, m * sizeof(float));
        const int64_t *cols = job->cols + b * k;
        for (int64_t j = 0; j < live; j++) row[cols[j]] = tmp[j];
    }
}

/* Rows begin..end (flat b * N + i) of the result. */
VECTOR_CLONES
static void iou_rows(const iou_job *job, int64_t begin, int64_t end, float *restrict tmp) {
    for (int64_t r = begin; r < end; r++) iou_row(job, r / job->n, r % job->n, tmp);
}

/* Groups begin..end (flat b * G + g) of the result and their maxima: group g of an image
 * holds its rows g, g + G, g + 2 G, ... (the matcher's grouping), and its maximum over
 * them goes to gmax (B, G, M), which is 0 where no IoU is above 0. */
VECTOR_CLONES
static void iou_groups(const iou_job *job, int64_t begin, int64_t end, float *restrict tmp) {
    const int64_t n = job->n, m = job->m, k = job->k, g = job->groups;
    for (int64_t b = begin / g; b <= (end - 1) / g && begin < end; b++) {
        const int64_t lo = b == begin / g ? begin % g : 0, hi = b == (end - 1) / g ? (end - 1) % g + 1 : g;
        float *gmax = job->gmax + (b * g) * m;
        memset(gmax + lo * m, 0, (hi - lo) * m * sizeof(float));
        const int64_t live = job->count[b], width = (live + LANES - 1) / LANES * LANES;
        const int64_t head = width < m ? width : m;
        const int64_t *cols = job->cols + b * k;
        for (int64_t base = 0; base < n; base += g) {  /* block by block: each keeps its rows in order */
            for (int64_t grp = lo; grp < hi && base + grp < n; grp++) {
                iou_row(job, b, base + grp, tmp);
                float *best = gmax + grp * m;
                if (job->prefix[b]) {
                    for (int64_t j = 0; j < head; j++) best[j] = tmp[j] > best[j] ? tmp[j] : best[j];
                } else {
                    for (int64_t j = 0; j < live; j++) {
                        const int64_t c = cols[j];
                        best[c] = tmp[j] > best[c] ? tmp[j] : best[c];
                    }
                }
            }
        }
    }
}

/* Every row (or every group when the job has gmax), split evenly over the threads;
 * nonzero when a row buffer could not be had. */
static int iou_parallel(const iou_job *job, int threads) {
    (void)threads;  /* without OpenMP */
    const int64_t units = job->batch * (job->gmax != NULL ? job->groups : job->n);
    int failed = 0;
    PARALLEL_COUNTING_FAILURES
    {
        float *tmp = aligned_alloc(64, (size_t)job->k * sizeof(float));  /* K: whole 64-byte vectors */
        if (tmp == NULL) {
            failed = 1;
        } else {
            int64_t begin, end;
            share(units, &begin, &end);
            if (job->gmax != NULL) iou_groups(job, begin, end, tmp);
            else iou_rows(job, begin, end, tmp);
            free(tmp);
        }
    }
    return failed;
}

/* box_iou(a, a_batch, b, b_batch, batch, n, m, offset, eps, out, best, gmax, groups, threads):
 * a (a_batch, n, 4) and b (b_batch, m, 4) contiguous float32 corner boxes (a batch of 1
 * serves every image), out (batch, n, m) and best (batch, n) float32; gmax (batch,
 * groups, m) float32, or 0 for none. */
static PyObject *native_box_iou(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long a_ptr, b_ptr, out_ptr, best_ptr, gmax_ptr;
    long long a_batch, b_batch, batch, n, m, groups;
    double offset, eps;
    int threads;
    if (!PyArg_ParseTuple(args, "KLKLLLLddKKKLi", &a_ptr, &a_batch, &b_ptr, &b_batch, &batch, &n, &m,
                          &offset, &eps, &out_ptr, &best_ptr, &gmax_ptr, &groups, &threads))
        return NULL;
    if (batch < 0 || n < 0 || m < 0 || (a_batch != 1 && a_batch != batch) || (b_batch != 1 && b_batch != batch) ||
        (gmax_ptr != 0 && (groups < 1 || groups > n))) {
        PyErr_SetString(PyExc_ValueError, "box_iou: inconsistent sizes");
        return NULL;
    }
    const float *a = (const float *)(uintptr_t)a_ptr, *b = (const float *)(uintptr_t)b_ptr;
    const float off = (float)offset;
    /* Live references of every image (width and height + offset > 0), first, then dead
     * padding up to K, a whole number of LANES (every image's live ones fit). */
    const int64_t k = m < 1 ? LANES : (m + LANES - 1) / LANES * LANES;
    float *refs = malloc(sizeof(float) * (size_t)(batch * 5 * k + 1));
    int64_t *cols = malloc(sizeof(int64_t) * (size_t)(batch * k + 1));
    int64_t *count = malloc(sizeof(int64_t) * (size_t)(batch + 1));
    uint8_t *prefix = malloc((size_t)(batch + 1));
    if (!refs || !cols || !count || !prefix) {
        free(refs), free(cols), free(count), free(prefix);
        return PyErr_NoMemory();
    }
    for (int64_t i = 0; i < batch; i++) {
        const float *bi = b + (b_batch == 1 ? 0 : i * m * 4);
        float *rx1 = refs + i * 5 * k, *ry1 = rx1 + k, *rx2 = ry1 + k, *ry2 = rx2 + k, *rarea = ry2 + k;
        int64_t live = 0;
        uint8_t in_order = 1;
        for (int64_t j = 0; j < m; j++) {
            float x1 = bi[j * 4], y1 = bi[j * 4 + 1], x2 = bi[j * 4 + 2], y2 = bi[j * 4 + 3];
            const float area = box_area(&x1, &y1, &x2, &y2, off);
            if (!((x2 - x1 + off > 0.0f) && (y2 - y1 + off > 0.0f))) continue;
            rx1[live] = x1, ry1[live] = y1, rx2[live] = x2, ry2[live] = y2, rarea[live] = area;
            in_order &= j == live;
            cols[i * k + live] = j;
            live++;
        }
        count[i] = live;
        prefix[i] = in_order;
        for (int64_t j = live; j < k; j++) {  /* dead padding: IoU exactly 0 with everything */
            rx1[j] = ry1[j] = 0.0f, rx2[j] = ry2[j] = -INFINITY, rarea[j] = 0.0f;
            cols[i * k + j] = -1;
        }
    }
    const iou_job job = {a, a_batch == 1 ? 0 : n * 4, refs, cols, count, prefix, batch, n, m, k, off, (float)eps,
                         (float *)(uintptr_t)out_ptr, (float *)(uintptr_t)best_ptr,
                         (float *)(uintptr_t)gmax_ptr, groups};
    const int64_t rows = batch * n;
    threads = team(threads, rows, 256);  /* small: fewer threads */
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    if (rows > 0) failed = iou_parallel(&job, threads);
    Py_END_ALLOW_THREADS
    free(refs), free(cols), free(count), free(prefix);
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- hard negatives */

/* The k-th largest of v[0..n) (1 <= k <= n), v reordered: quickselect with
 * median-of-three pivots. */
static int64_t kth_largest(int64_t *v, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1, want = k - 1;  /* position of the answer in descending order */
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        const int64_t a = v[lo], b = v[mid], c = v[hi];
        const int64_t pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        int64_t i = lo, j = hi;
        while (i <= j) {  /* descending: larger first */
            while (v[i] > pivot) i++;
            while (v[j] < pivot) j--;
            if (i <= j) {
                const int64_t t = v[i];
                v[i] = v[j], v[j] = t;
                i++, j--;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else return v[want];
    }
    return v[want];
}

typedef struct {
    const int64_t *matches;  /* (B, N) */
    const char *log_p;       /* log_p_bg[b, i] at log_p + b * stride_b + i * stride_n (bytes), float32 */
    int64_t stride_b, stride_n;
    const float *best;       /* (B, N) best IoU of every anchor */
    float ratio, thresh;
    int64_t min_samples, batch, n;
    int64_t *samples;        /* (B, N) */
} ohem_job;

/* Hardness key of anchor i: the magnitude bits of log_p_bg (which order like the hardness
 * -log_p_bg) times N, minus i: unique, and larger for harder anchors, on equal hardness
 * for the lower one (sampler._hardest_k's key). */
static inline int64_t hardness_key(const ohem_job *job, int64_t b, int64_t i) {
    int32_t bits;
    memcpy(&bits, job->log_p + b * job->stride_b + i * job->stride_n, sizeof bits);
    return (int64_t)(bits & 0x7FFFFFFF) * job->n - i;
}

/* Image by image (sampler._ohem's rules): positives are the matched anchors; eligible are
 * the others with a best IoU (floored at 0) below thresh; the number of negatives is
 * min(floor(clamp(float32(P) * ratio, min_samples, N)), eligible), in float32 like GluonCV;
 * they are the eligible anchors with the largest keys. keys holds 2 N. */
static void ohem_rows(const ohem_job *job, int64_t begin, int64_t end, int64_t *keys) {
    const int64_t n = job->n;
    int64_t *all = keys + n;  /* every anchor's key, INT64_MIN when not eligible */
    for (int64_t b = begin; b < end; b++) {
        const int64_t *matches = job->matches + b * n;
        const float *best = job->best + b * n;
        int64_t *samples = job->samples + b * n;
        int64_t count = 0, positives = 0;
        for (int64_t i = 0; i < n; i++) {
            const float overlap = best[i] < 0.0f ? 0.0f : best[i];  /* NaN stays NaN: not eligible */
            positives += matches[i] >= 0;
            all[i] = INT64_MIN;
            if (matches[i] < 0 && overlap < job->thresh) keys[count++] = all[i] = hardness_key(job, b, i);
        }
        float wanted = (float)positives * job->ratio;
        if (wanted < (float)job->min_samples) wanted = (float)job->min_samples;
        if (wanted > (float)n) wanted = (float)n;
        int64_t k = (int64_t)floorf(wanted);
        if (k > count) k = count;
        /* the k largest keys are those at least the k-th largest (keys are unique) */
        const int64_t floor = k <= 0 ? INT64_MAX : kth_largest(keys, count, k);
        for (int64_t i = 0; i < n; i++) samples[i] = matches[i] >= 0 ? 1 : (all[i] >= floor ? -1 : 0);
    }
}

/* ohem_samples(matches, log_p, stride_b, stride_n, best, ratio, min_samples, thresh, batch,
 * n, samples, threads): samples (batch, n) int64 of OHEM from matches (batch, n) int64, the
 * float32 background log-probabilities (strides in bytes) and best IoU (batch, n) float32. */
static PyObject *native_ohem_samples(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long matches, log_p, best, samples;
    long long stride_b, stride_n, min_samples, batch, n;
    double ratio, thresh;
    int threads;
    if (!PyArg_ParseTuple(args, "KKLLKdLdLLKi", &matches, &log_p, &stride_b, &stride_n, &best, &ratio, &min_samples,
                          &thresh, &batch, &n, &samples, &threads))
        return NULL;
    if (batch < 0 || n < 0) {
        PyErr_SetString(PyExc_ValueError, "ohem_samples: negative sizes");
        return NULL;
    }
    const ohem_job job = {(const int64_t *)(uintptr_t)matches, (const char *)(uintptr_t)log_p, stride_b, stride_n,
                          (const float *)(uintptr_t)best, (float)ratio, (float)thresh, min_samples, batch, n,
                          (int64_t *)(uintptr_t)samples};
    threads = team(threads, batch, 1);
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    PARALLEL_COUNTING_FAILURES
    {
        int64_t *keys = malloc((size_t)(2 * n + 1) * sizeof(int64_t));
        if (keys == NULL) {
            failed = 1;
        } else {
            int64_t begin, end;
            share(batch, &begin, &end);
            ohem_rows(&job, begin, end, keys);
            free(keys);
        }
    }
    Py_END_ALLOW_THREADS
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- per-class decoding */

typedef struct {
    const float *x;          /* scores (B, N, C), element strides sb, sn, sc */
    int64_t sb, sn, sc, n, classes;  /* classes = C - 1 foreground classes */
    float thresh;
    int64_t *cls;            /* (B, N, C - 1) */
    float *scores;           /* (B, N, C - 1) */
} per_class_job;

/* Rows begin..end (flat b * N + i): class j (0-based among the foreground) kept where its
 * score is above thresh, else -1 and score 0 (coder.decode_per_class). */
VECTOR_CLONES
static void per_class_rows(const per_class_job *job, int64_t begin, int64_t end) {
    const int64_t classes = job->classes;
    const float thresh = job->thresh;
    for (int64_t r = begin; r < end; r++) {
        const float *row = job->x + (r / job->n) * job->sb + (r % job->n) * job->sn;
        int64_t *restrict cls = job->cls + r * classes;
        float *restrict out = job->scores + r * classes;
        if (job->sc == 1) {
            const float *v = row + 1;
            for (int64_t j = 0; j < classes; j++) {
                const int keep = v[j] > thresh;
                cls[j] = keep ? j : -1;
                out[j] = keep ? v[j] : 0.0f;
            }
        } else {
            for (int64_t j = 0; j < classes; j++) {
                const float v = row[(j + 1) * job->sc];
                const int keep = v > thresh;
                cls[j] = keep ? j : -1;
                out[j] = keep ? v : 0.0f;
            }
        }
    }
}

/* decode_per_class(x, sb, sn, sc, batch, n, c, thresh, cls, scores, threads): x float32
 * with element strides sb, sn, sc; cls (batch, n, c - 1) int64 and scores (batch, n, c - 1)
 * float32 contiguous. The threshold is compared in float32. */
static PyObject *native_decode_per_class(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long x, cls, scores;
    long long sb, sn, sc, batch, n, c;
    double thresh;
    int threads;
    if (!PyArg_ParseTuple(args, "KLLLLLLdKKi", &x, &sb, &sn, &sc, &batch, &n, &c, &thresh, &cls, &scores, &threads))
        return NULL;
    if (batch < 0 || n < 0 || c < 1) {
        PyErr_SetString(PyExc_ValueError, "decode_per_class: inconsistent sizes");
        return NULL;
    }
    const per_class_job job = {(const float *)(uintptr_t)x, sb, sn, sc, n, c - 1, (float)thresh,
                               (int64_t *)(uintptr_t)cls, (float *)(uintptr_t)scores};
    const int64_t rows = batch * n;
    threads = team(threads, rows, 256);
    Py_BEGIN_ALLOW_THREADS
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
    {
        int64_t begin, end;
        share(rows, &begin, &end);
        per_class_rows(&job, begin, end);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- bipartite matching */

typedef struct {
    float score;
    int64_t anchor, ref;
} pair;

/* Candidate anchors per reference in the first round of the bipartite matching (the lists
 * double while a reference may need more). */
#define FIRST_ANCHORS 4

/* Whether pair a is visited before pair b by the greedy matching: score descending,
 * then row-major (anchor, ref). */
static inline int visited_before(const pair *a, const pair *b) {
    if (a->score != b->score) return a->score > b->score;
    if (a->anchor != b->anchor) return a->anchor < b->anchor;
    return a->ref < b->ref;
}

static int pair_order(const void *pa, const void *pb) {
    return visited_before(pa, pb) ? -1 : (visited_before(pb, pa) ? 1 : 0);
}

/* Keeps top[0..*have) the (at most) k largest values offered, descending. */
static inline void offer_value(float *top, int64_t *have, int64_t k, float v) {
    if (*have == k && !(v > top[k - 1])) return;
    int64_t at = *have < k ? (*have)++ : k - 1;
    for (; at > 0 && v > top[at - 1]; at--) top[at] = top[at - 1];
    top[at] = v;
}

/* Keeps first[0..*have) the first (at most) k pairs in visiting order of those offered. */
static inline void offer(pair *first, int64_t *have, int64_t k, pair p) {
    if (*have == k && !visited_before(&p, &first[k - 1])) return;
    int64_t at = *have < k ? (*have)++ : k - 1;
    for (; at > 0 && visited_before(&p, &first[at - 1]); at--) first[at] = first[at - 1];
    first[at] = p;
}

typedef struct {
    const float *x;       /* (B, N, M) scores, no NaN */
    const float *gmax;    /* (B, G, M) group maxima: group g holds the anchors g + t * G, t < size */
    const float *colmax;  /* (B, M) */
    int64_t batch, n, m, groups, size;
    float thr, eps;
    int share_max, recover;
    int64_t *out;         /* (B, N): written where still -1 */
} bipartite_job;

typedef struct {     /* one thread's memory */
    int64_t *live;   /* M */
    float *level;    /* M */
    pair *pairs;     /* Q * Q */
    uint8_t *taken;  /* N anchors, M references after them */
    uint8_t *reach;  /* G */
    uint8_t *full;   /* M: the reference's list holds k anchors */
    float *floors;   /* M */
    int64_t *have;   /* M */
    float *top;      /* M * M: each reference's largest group maxima */
} bipartite_space;

/* Greedy matching of image b, then its recovery (matcher._bipartite's rules). A reference
 * can only be matched to one of its first Q anchors in visiting order (Q: references
 * above the threshold; each earlier anchor must have gone to another reference), and
 * those lie in groups whose maximum reaches the Q-th largest group maximum. */
static void bipartite_image(const bipartite_job *job, int64_t b, bipartite_space *w) {
    const int64_t n = job->n, m = job->m, g = job->groups, size = job->size;
    const float *x = job->x + b * n * m, *gmax = job->gmax + b * g * m, *colmax = job->colmax + b * m;
    int64_t *out = job->out + b * n;
    const float thr = job->thr;
    int64_t q = 0;
    for (int64_t j = 0; j < m; j++)
        if (colmax[j] > thr) w->live[q++] = j;
    if (q == 0) return;  /* nothing to match, nothing to recover */
    /* A reference can only be matched to one of its first bound = min(q, N) anchors in
     * visiting order (each earlier one must have gone to another of the q references).
     * Matching restricted to each reference's first k anchors is exact when every reference
     * it leaves unmatched had fewer takeable anchors than that (its list held them all);
     * otherwise k doubles. A reference's first k anchors lie in the groups whose maximum
     * reaches the k-th largest of its group maxima (and is above the threshold). */
    const int64_t bound = q < n ? q : n;
    uint8_t *ref_taken = w->taken + n;
    for (int64_t k = bound < FIRST_ANCHORS ? bound : FIRST_ANCHORS;; k = 2 * k < bound ? 2 * k : bound) {
        /* Row-major passes over the group maxima: each reference's k largest of them (its
         * floor), then its first k anchors from the groups reaching its floor. */
        for (int64_t r = 0; r < q; r++) w->have[r] = 0;
        if (g > k) {
            for (int64_t c = 0; c < g; c++) {
                const float *gc = gmax + c * m;
                for (int64_t r = 0; r < q; r++) offer_value(w->top + r * k, &w->have[r], k, gc[w->live[r]]);
            }
        }
        for (int64_t r = 0; r < q; r++) {
            w->floors[r] = g > k ? w->top[r * k + k - 1] : -INFINITY;
            if (!(w->floors[r] > thr)) w->floors[r] = nextafterf(thr, INFINITY);  /* takeable only */
            w->have[r] = 0;
        }
        for (int64_t c = 0; c < g; c++) {
            const float *gc = gmax + c * m;
            for (int64_t r = 0; r < q; r++) {
                const int64_t j = w->live[r];
                if (!(gc[j] >= w->floors[r])) continue;
                for (int64_t t = 0; t < size; t++) {
                    const int64_t i = c + t * g;
                    if (i >= n) break;
                    const float v = x[i * m + j];
                    if (v > thr) offer(w->pairs + r * k, &w->have[r], k, (pair){v, i, j});
                }
            }
        }
        int64_t npairs = 0;
        for (int64_t r = 0; r < q; r++) {
            w->full[r] = w->have[r] == k;
            for (int64_t c = 0; c < w->have[r]; c++) w->pairs[npairs++] = w->pairs[r * k + c];
        }
        qsort(w->pairs, (size_t)npairs, sizeof(pair), pair_order);
        int64_t taken = 0;  /* the pairs taken go first */
        for (int64_t p = 0; p < npairs; p++) {
            const pair pr = w->pairs[p];
            if (w->taken[pr.anchor] || ref_taken[pr.ref]) continue;
            w->taken[pr.anchor] = ref_taken[pr.ref] = 1;
            w->pairs[taken++] = pr;
        }
        int exact = 1;  /* no reference left unmatched with a full list */
        for (int64_t r = 0; r < q && exact; r++) exact = !(w->full[r] && !ref_taken[w->live[r]]);
        exact |= k == bound;
        for (int64_t p = 0; p < taken; p++) w->taken[w->pairs[p].anchor] = 0;
        memset(ref_taken, 0, (size_t)m);
        if (exact) {
            for (int64_t p = 0; p < taken; p++)
                if (out[w->pairs[p].anchor] < 0) out[w->pairs[p].anchor] = w->pairs[p].ref;
            break;
        }
    }
    if (!job->recover) return;
    /* Recovery: anchors reaching (within eps) the column maximum of a reference above the
     * threshold take their best reference (share_max: any such reference's maximum will
     * do; otherwise their best one's). Only groups whose maximum reaches a level hold them. */
    const float eps = job->eps;
    for (int64_t k = 0; k < g; k++) {
        w->reach[k] = 0;
        for (int64_t r = 0; r < q && !w->reach[k]; r++) {
            const int64_t j = w->live[r];
            w->reach[k] = gmax[k * m + j] + eps >= colmax[j];
        }
    }
    float *level = w->level;  /* column maxima of the references above the threshold, else NaN */
    for (int64_t j = 0; j < m; j++) level[j] = colmax[j] > thr ? colmax[j] : NAN;
    for (int64_t k = 0; k < g; k++) {
        if (!w->reach[k]) continue;
        for (int64_t t = 0; t < size; t++) {
            const int64_t i = k + t * g;
            if (i >= n) break;
            if (out[i] >= 0) continue;
            const float *row = x + i * m;
            int64_t arg = 0;
            for (int64_t j = 1; j < m; j++)
                if (row[j] > row[arg]) arg = j;
            int near = 0;
            if (job->share_max) {
                for (int64_t j = 0; j < m && !near; j++) near = row[j] + eps >= level[j];
            } else {
                near = row[arg] + eps >= level[arg];
            }
            if (near) out[i] = arg;
        }
    }
}

/* bipartite(x, gmax, colmax, batch, n, m, groups, size, threshold, eps, share_max, recover,
 * out, threads): matcher._bipartite for scores x (float32, larger is better, no NaN) and
 * their group maxima gmax (batch, groups, m) and column maxima colmax (batch, m), all
 * contiguous; out (batch, n) int64 is filled where it holds -1. */
static PyObject *native_bipartite(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long x, gmax, colmax, out;
    long long batch, n, m, groups, size;
    double threshold, eps;
    int share_max, recover, threads;
    if (!PyArg_ParseTuple(args, "KKKLLLLLddppKi", &x, &gmax, &colmax, &batch, &n, &m, &groups, &size, &threshold,
                          &eps, &share_max, &recover, &out, &threads))
        return NULL;
    if (batch < 0 || n < 1 || m < 1 || groups < 1 || size < 1 || groups * size < n) {
        PyErr_SetString(PyExc_ValueError, "bipartite: inconsistent sizes");
        return NULL;
    }
    const bipartite_job job = {(const float *)(uintptr_t)x, (const float *)(uintptr_t)gmax,
                               (const float *)(uintptr_t)colmax, batch, n, m, groups, size, (float)threshold,
                               (float)eps, share_max, recover, (int64_t *)(uintptr_t)out};
    threads = team(threads, batch, 1);
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    PARALLEL_COUNTING_FAILURES
    {
        bipartite_space w = {malloc((size_t)m * sizeof(int64_t)),
                             malloc((size_t)m * sizeof(float)),
                             malloc((size_t)(m * m) * sizeof(pair)),
                             calloc((size_t)(n + m), 1), malloc((size_t)groups), malloc((size_t)m),
                             malloc((size_t)m * sizeof(float)), malloc((size_t)m * sizeof(int64_t)),
                             malloc((size_t)(m * m) * sizeof(float))};
        if (!w.live || !w.level || !w.pairs || !w.taken || !w.reach || !w.full || !w.floors || !w.have || !w.top) {
            failed = 1;
        } else {
            int64_t begin, end;
            share(batch, &begin, &end);
            for (int64_t b = begin; b < end; b++) bipartite_image(&job, b, &w);
        }
        free(w.live), free(w.level), free(w.pairs), free(w.taken), free(w.reach), free(w.full), free(w.floors);
        free(w.have), free(w.top);
    }
    Py_END_ALLOW_THREADS
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"box_iou", native_box_iou, METH_VARARGS, "IoU of float32 boxes into out, row maxima into best, group maxima into gmax."},
    {"ohem_samples", native_ohem_samples, METH_VARARGS, "OHEM samples from float32 background log-probabilities."},
    {"decode_per_class", native_decode_per_class, METH_VARARGS, "Thresholded per-class ids and scores."},
    {"bipartite", native_bipartite, METH_VARARGS, "Greedy bipartite matching with recovery."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "detblocks' native CPU kernels.", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
