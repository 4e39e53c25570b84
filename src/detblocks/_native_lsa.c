/*
 * Native CPU kernel of detblocks' optimal one-to-one matching (optional: without it,
 * detblocks._optimal solves with the same algorithm in plain Python, with the same
 * result bit for bit).
 *
 * hungarian_cost: the box terms and weighted sum of the matcher's float32 cost (below).
 *
 * lsa: a minimum-cost assignment per image of a padded batch, by shortest augmenting
 * paths with dual variables (the Jonker-Volgenant family, in the rectangular form of
 * D. F. Crouse, "On implementing 2D rectangular assignment algorithms", IEEE TAES 2016,
 * which SciPy's linear_sum_assignment also implements). Each image's valid columns are
 * gathered into a dense float64 matrix with no more rows than columns (transposed when
 * the image has more rows than valid columns). The duals start at the row minima and
 * every row whose first cheapest column is still free takes it; each other row is then
 * added to the matching along a shortest augmenting path found by Dijkstra's method on
 * the reduced costs, and the duals are updated so that every reduced cost stays
 * non-negative (columns left unmatched keep a zero dual).
 * The scan visits the free columns in a fixed order and prefers, among columns at the
 * same distance, one that ends the path, so the tie-breaking is a deterministic
 * function of the input. +inf costs are never taken; an image where no complete path
 * exists is infeasible.
 *
 * The arithmetic is float64 in a fixed order without fused multiply-add (setup.py
 * builds with -ffp-contract=off), the same operations as detblocks._optimal's Python
 * loop, so both give the same assignment.
 *
 * The function takes the addresses of contiguous tensors prepared by the Python side and
 * releases the GIL while it computes, on `threads` OpenMP threads of PyTorch's own team
 * (libgomp is linked by name, as for detblocks._native); the images are handed out one
 * at a time, since their sizes differ. Without OpenMP it runs on the calling thread.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* Work (rows x columns x min(rows, columns), summed over images) a thread must have before
 * the solve takes a second one: about 5 ms of the worst case. */
#define LSA_GRAIN 5e7
/* Cost pairs a thread must have in hungarian_cost: about a millisecond. */
#define COST_GRAIN (1 << 20)

/* Per-image status written to the status array. */
enum { LSA_OK = 0, LSA_INVALID = 1, LSA_INFEASIBLE = 2, LSA_NO_MEMORY = 3 };

typedef struct {
    const void *cost;      /* (batch, n, m) contiguous, float32 or float64 */
    int is_double;
    const uint8_t *valid;  /* (batch, m) contiguous bool, or NULL: every column valid */
    int64_t batch, n, m;
    int64_t *out;          /* (batch, n) int64 */
    int8_t *status;        /* (batch,) */
} lsa_job;

typedef struct {          /* one thread's memory, sized for the largest image */
    double *a;            /* rows x cols reduced problem */
    double *u, *v, *dist; /* row duals, column duals, shortest path lengths */
    int64_t *path;        /* the row each column was reached from */
    int64_t *col_of_row, *row_of_col, *todo, *cols;
    uint8_t *row_seen, *col_seen;
} lsa_space;

static double cost_at(const lsa_job *job, int64_t b, int64_t i, int64_t j) {
    const int64_t at = (b * job->n + i) * job->m + j;
    return job->is_double ? ((const double *)job->cost)[at] : (double)((const float *)job->cost)[at];
}

/* One shortest augmenting path from the free row `start` to a free column, over the
 * reduced costs a[i][j] - u[i] - v[j]. Returns the sink column, or -1 when every column
 * still reachable costs +inf (infeasible); *reach is the length of the path. */
static int64_t shortest_path(int64_t nr, int64_t nc, const double *a, lsa_space *w, int64_t start, double *reach) {
    double *dist = w->dist;
    int64_t *todo = w->todo;
    int64_t left = nc;
    for (int64_t k = 0; k < nc; k++) {
        todo[k] = nc - 1 - k;
        dist[k] = INFINITY;
    }
    memset(w->row_seen, 0, (size_t)nr);
    memset(w->col_seen, 0, (size_t)nc);
    double base = 0.0;
    int64_t row = start;
    for (;;) {
        w->row_seen[row] = 1;
        const double *line = a + row * nc;
        const double ur = w->u[row];
        double lowest = INFINITY;
        int64_t pick = -1;
        for (int64_t k = 0; k < left; k++) {
            const int64_t j = todo[k];
            const double d = base + line[j] - ur - w->v[j];
            if (d < dist[j]) {
                dist[j] = d;
                w->path[j] = row;
            }
            if (dist[j] < lowest || (dist[j] == lowest && w->row_of_col[j] < 0)) {
                lowest = dist[j];
                pick = k;
            }
        }
        base = lowest;
        if (pick < 0 || lowest == INFINITY) return -1;
        const int64_t col = todo[pick];
        w->col_seen[col] = 1;
        todo[pick] = todo[--left];
        if (w->row_of_col[col] < 0) {
            *reach = base;
            return col;
        }
        row = w->row_of_col[col];
    }
}

/* The assignment of the nr x nc matrix a (nr <= nc): col_of_row for every row. */
static int solve(int64_t nr, int64_t nc, const double *a, lsa_space *w) {
    for (int64_t j = 0; j < nc; j++) w->v[j] = 0.0, w->row_of_col[j] = -1, w->path[j] = -1;
    /* Start: u = the row minima (v = 0), feasible duals; each row takes its first cheapest
     * column when that one is still free (a zero reduced cost). Usually most rows. */
    for (int64_t i = 0; i < nr; i++) {
        const double *line = a + i * nc;
        int64_t best = 0;
        for (int64_t j = 1; j < nc; j++)
            if (line[j] < line[best]) best = j;
        if (line[best] == INFINITY) return LSA_INFEASIBLE;
        w->u[i] = line[best];
        w->col_of_row[i] = -1;
        if (w->row_of_col[best] < 0) w->row_of_col[best] = i, w->col_of_row[i] = best;
    }
    /* Every free row in turn joins along a shortest augmenting path. */
    for (int64_t start = 0; start < nr; start++) {
        if (w->col_of_row[start] >= 0) continue;
        double reach = 0.0;
        const int64_t sink = shortest_path(nr, nc, a, w, start, &reach);
        if (sink < 0) return LSA_INFEASIBLE;
        /* Duals: reduced costs stay >= 0 and are 0 along the matching. */
        w->u[start] += reach;
        for (int64_t i = 0; i < nr; i++)
            if (w->row_seen[i] && i != start) w->u[i] += reach - w->dist[w->col_of_row[i]];
        for (int64_t j = 0; j < nc; j++)
            if (w->col_seen[j]) w->v[j] -= reach - w->dist[j];
        /* Flip the path: each column on it takes the row it was reached from. */
        int64_t col = sink;
        for (;;) {
            const int64_t row = w->path[col];
            w->row_of_col[col] = row;
            const int64_t before = w->col_of_row[row];
            w->col_of_row[row] = col;
            if (row == start) break;
            col = before;
        }
    }
    return LSA_OK;
}

static int solve_image(const lsa_job *job, int64_t b, lsa_space *w) {
    const int64_t n = job->n, m = job->m;
    int64_t *out = job->out + b * n;
    for (int64_t i = 0; i < n; i++) out[i] = -1;
    int64_t k = 0;  /* valid columns */
    for (int64_t j = 0; j < m; j++)
        if (!job->valid || job->valid[b * m + j]) w->cols[k++] = j;
    if (k == 0 || n == 0) return LSA_OK;
    const int transpose = k < n;  /* rows are then the valid columns */
    const int64_t nr = transpose ? k : n, nc = transpose ? n : k;
    for (int64_t r = 0; r < nr; r++) {
        for (int64_t c = 0; c < nc; c++) {
            const double x = transpose ? cost_at(job, b, c, w->cols[r]) : cost_at(job, b, r, w->cols[c]);
            if (isnan(x) || x == -INFINITY) return LSA_INVALID;
            w->a[r * nc + c] = x;
        }
    }
    const int status = solve(nr, nc, w->a, w);
    if (status != LSA_OK) return status;
    for (int64_t r = 0; r < nr; r++) {
        if (transpose)
            out[w->col_of_row[r]] = w->cols[r];
        else
            out[r] = w->cols[w->col_of_row[r]];
    }
    return LSA_OK;
}

static void free_space(lsa_space *w) {
    free(w->a), free(w->u), free(w->v), free(w->dist), free(w->path), free(w->col_of_row);
    free(w->row_of_col), free(w->todo), free(w->cols), free(w->row_seen), free(w->col_seen);
}

static int alloc_space(lsa_space *w, int64_t n, int64_t m) {
    const size_t big = (size_t)(n > m ? n : m) + 1, cells = (size_t)n * (size_t)m + 1;
    w->a = malloc(cells * sizeof(double));
    w->u = malloc(big * sizeof(double)), w->v = malloc(big * sizeof(double));
    w->dist = malloc(big * sizeof(double));
    w->path = malloc(big * sizeof(int64_t)), w->col_of_row = malloc(big * sizeof(int64_t));
    w->row_of_col = malloc(big * sizeof(int64_t)), w->todo = malloc(big * sizeof(int64_t));
    w->cols = malloc(big * sizeof(int64_t));
    w->row_seen = malloc(big), w->col_seen = malloc(big);
    return w->a && w->u && w->v && w->dist && w->path && w->col_of_row && w->row_of_col && w->todo && w->cols &&
           w->row_seen && w->col_seen;
}

/* lsa(cost, is_double, valid, batch, n, m, out, status, threads): the assignment of every
 * image into out (batch, n) int64 (-1: unassigned row) and its status into status
 * (batch,) int8: 0 solved, 1 NaN or -inf among its valid costs, 2 infeasible, 3 out of
 * memory. valid is 0 when every column is valid. */
static PyObject *native_lsa(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long cost, valid, out, status;
    long long batch, n, m;
    int is_double, threads;
    if (!PyArg_ParseTuple(args, "KpKLLLKKi", &cost, &is_double, &valid, &batch, &n, &m, &out, &status, &threads))
        return NULL;
    if (batch < 0 || n < 0 || m < 0) {
        PyErr_SetString(PyExc_ValueError, "lsa: negative sizes");
        return NULL;
    }
    const lsa_job job = {(const void *)(uintptr_t)cost, is_double, (const uint8_t *)(uintptr_t)valid,
                         batch, n, m, (int64_t *)(uintptr_t)out, (int8_t *)(uintptr_t)status};
    /* A second thread only for work worth a few milliseconds: on a busy machine a parallel
     * region can wait a whole scheduler time slice for a thread that is not running. */
    double work = 0.0;  /* sum over images of rows * columns * min(rows, columns) */
    for (int64_t b = 0; b < batch; b++) {
        int64_t k = m;
        if (job.valid) {
            k = 0;
            for (int64_t j = 0; j < m; j++) k += job.valid[b * m + j] != 0;
        }
        work += (double)n * (double)k * (double)(n < k ? n : k);
    }
    if (threads > work / LSA_GRAIN) threads = (int)(work / LSA_GRAIN);
    if (threads > batch) threads = (int)batch;
    if (threads < 1) threads = 1;
    (void)threads;  /* without OpenMP */
    Py_BEGIN_ALLOW_THREADS
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
    {
        lsa_space w;
        const int ready = alloc_space(&w, n, m);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t b = 0; b < batch; b++) job.status[b] = (int8_t)(ready ? solve_image(&job, b, &w) : LSA_NO_MEMORY);
        free_space(&w);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* min/max that return NaN when either side is NaN, as torch.minimum/torch.maximum. */
static inline float nan_min(float a, float b) { return (a < b || a != a) ? a : b; }
static inline float nan_max(float a, float b) { return (a > b || a != a) ? a : b; }

typedef struct {
    const float *pred;  /* (batch, q, 4) center boxes */
    const float *gt;    /* (batch, m, 4) center boxes */
    const float *cls;   /* (batch, q, m) class cost */
    int64_t batch, q, m;
    float w_class, w_bbox, w_giou, eps;
    float *out;         /* (batch, q, m) */
} cost_job;

/* The rows [begin, end) (over batch * q) of _optimal._matching_cost's float32 cost, with
 * the PyTorch path's operations in its order (the same roundings: every operation is
 * float32, no fused multiply-add), so the same values. planes: 9 * m floats. */
static void cost_rows(const cost_job *job, int64_t begin, int64_t end, float *planes) {
    const int64_t m = job->m;
    float *gx = planes, *gy = gx + m, *gw = gy + m, *gh = gw + m;
    float *gx1 = gh + m, *gx2 = gx1 + m, *gy1 = gx2 + m, *gy2 = gy1 + m, *garea = gy2 + m;
    int64_t image = -1;
    for (int64_t row = begin; row < end; row++) {
        const int64_t b = row / job->q;
        if (b != image) {
            image = b;
            const float *g = job->gt + b * m * 4;
            for (int64_t j = 0; j < m; j++) {
                gx[j] = g[4 * j], gy[j] = g[4 * j + 1], gw[j] = g[4 * j + 2], gh[j] = g[4 * j + 3];
                const float hw = gw[j] / 2.0f, hh = gh[j] / 2.0f;
                gx1[j] = gx[j] - hw, gx2[j] = gx[j] + hw, gy1[j] = gy[j] - hh, gy2[j] = gy[j] + hh;
                garea[j] = gw[j] * gh[j];
            }
        }
        const float *p = job->pred + row * 4;
        const float px = p[0], py = p[1], pw = p[2], ph = p[3];
        const float phw = pw / 2.0f, phh = ph / 2.0f;
        const float px1 = px - phw, px2 = px + phw, py1 = py - phh, py2 = py + phh;
        const float parea = pw * ph;
        const float *cls = job->cls + row * m;
        float *out = job->out + row * m;
        const float wc = job->w_class, wb = job->w_bbox, wg = job->w_giou, eps = job->eps;
        for (int64_t j = 0; j < m; j++) {
            float iw = nan_min(px2, gx2[j]) - nan_max(px1, gx1[j]);
            float ih = nan_min(py2, gy2[j]) - nan_max(py1, gy1[j]);
            iw = iw < 0.0f ? 0.0f : iw;
            ih = ih < 0.0f ? 0.0f : ih;
            const float inter = iw * ih;
            const float uni = ((parea + garea[j]) - inter) + eps;
            const float cw = nan_max(px2, gx2[j]) - nan_min(px1, gx1[j]);
            const float ch = nan_max(py2, gy2[j]) - nan_min(py1, gy1[j]);
            const float hull = cw * ch + eps;
            const float giou = inter / uni - (hull - uni) / hull;
            const float l1 = ((fabsf(px - gx[j]) + fabsf(py - gy[j])) + fabsf(pw - gw[j])) + fabsf(ph - gh[j]);
            const float c = (cls[j] * wc + l1 * wb) + (1.0f - giou) * wg;
            out[j] = isfinite(c) ? c : 0.0f;
        }
    }
}

/* hungarian_cost(pred, gt, cls, batch, q, m, w_class, w_bbox, w_giou, eps, out, threads):
 * RT-DETR's matching cost from the float32 class cost, all float32 contiguous. */
static PyObject *native_hungarian_cost(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long pred, gt, cls, out;
    long long batch, q, m;
    double w_class, w_bbox, w_giou, eps;
    int threads;
    if (!PyArg_ParseTuple(args, "KKKLLLddddKi", &pred, &gt, &cls, &batch, &q, &m, &w_class, &w_bbox, &w_giou, &eps,
                          &out, &threads))
        return NULL;
    if (batch < 0 || q < 0 || m < 0) {
        PyErr_SetString(PyExc_ValueError, "hungarian_cost: negative sizes");
        return NULL;
    }
    const cost_job job = {(const float *)(uintptr_t)pred, (const float *)(uintptr_t)gt,
                          (const float *)(uintptr_t)cls, batch, q, m, (float)w_class, (float)w_bbox, (float)w_giou,
                          (float)eps, (float *)(uintptr_t)out};
    const int64_t rows = batch * q;
    if (threads > rows * m / COST_GRAIN) threads = (int)(rows * m / COST_GRAIN);  /* see LSA_GRAIN */
    if (threads < 1) threads = 1;
    (void)threads;  /* without OpenMP */
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(| : failed)
#endif
    {
        float *planes = malloc((size_t)(9 * m + 1) * sizeof(float));
        if (!planes) {
            failed = 1;
        } else {
            int64_t t = 0, nt = 1;
#ifdef _OPENMP
            t = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
            cost_rows(&job, rows * t / nt, rows * (t + 1) / nt, planes);
        }
        free(planes);
    }
    Py_END_ALLOW_THREADS
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"lsa", native_lsa, METH_VARARGS, "Minimum-cost one-to-one assignment of every image of a padded batch."},
    {"hungarian_cost", native_hungarian_cost, METH_VARARGS, "RT-DETR's float32 matching cost."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native_lsa",
                                    "detblocks' native optimal assignment kernel.", -1, methods, NULL, NULL, NULL,
                                    NULL};

PyMODINIT_FUNC PyInit__native_lsa(void) { return PyModule_Create(&module); }
