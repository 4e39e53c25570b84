/*
 * Native CPU kernel of the IoU family (optional: bbox falls back to PyTorch ops when this
 * module is not built, with the same results bit for bit).
 *
 * pairwise: the (B, N, M) matrix of generalized_box_iou, distance_box_iou or
 * complete_box_iou of float32 boxes in one pass. The per-box terms (corners, area,
 * centre, aspect angle) come from the Python side, computed by the same PyTorch ops as
 * the PyTorch path (so the arctangent is PyTorch's); this kernel does only the pair
 * terms, following bbox._iou_pairs operation for operation in float32 (no fused
 * multiply-add, see setup.py), so its output equals the PyTorch path's exactly.
 *
 * The function takes the addresses of contiguous tensors prepared by the Python side and
 * releases the GIL while it computes, on `threads` OpenMP threads (PyTorch's own team, as
 * detblocks._native explains). Built without OpenMP, it runs on the calling thread.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

enum { KIND_GIOU = 1, KIND_DIOU = 2, KIND_CIOU = 3 };

/* Per-box terms of every kind, in this order along the planes' second axis (bbox._box_terms). */
enum { X1, Y1, X2, Y2, AREA, CX, CY, ANGLE };

typedef struct {
    const float *a;     /* (Ba, T, N) per-box term planes of the rows */
    int64_t a_stride;   /* T * N, or 0 when one set serves every image */
    const float *b;     /* (Bb, T, M) per-box term planes of the columns */
    int64_t b_stride;   /* T * M, or 0 */
    int64_t batch, n, m;
    float eps, v_scale;
    float *out;         /* (B, N, M) */
} pair_job;

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define VECTOR_CLONES
#endif

/* torch.minimum / torch.maximum / clamp(min=0) of finite values (the Python side sends
 * finite boxes only). */
static inline float min_f(float x, float y) { return x < y ? x : y; }
static inline float max_f(float x, float y) { return x > y ? x : y; }
static inline float pos_f(float x) { return x < 0.0f ? 0.0f : x; }
/* bbox._safe_div: num / den, 0 where den == 0. */
static inline float div0(float num, float den) { return den == 0.0f ? 0.0f : num / (den == 0.0f ? 1.0f : den); }

/* Row i of image b. `kind` is a constant in each caller: one specialised loop per kind. */
static inline __attribute__((always_inline)) void pair_row(const pair_job *job, const int kind, int64_t b,
                                                            int64_t i) {
    const int64_t n = job->n, m = job->m;
    const float *pa = job->a + b * job->a_stride;
    const float ax1 = pa[X1 * n + i], ay1 = pa[Y1 * n + i], ax2 = pa[X2 * n + i], ay2 = pa[Y2 * n + i];
    const float aarea = pa[AREA * n + i];
    const float acx = kind >= KIND_DIOU ? pa[CX * n + i] : 0.0f, acy = kind >= KIND_DIOU ? pa[CY * n + i] : 0.0f;
    const float aangle = kind == KIND_CIOU ? pa[ANGLE * n + i] : 0.0f;
    const float *pb = job->b + b * job->b_stride;
    const float *restrict bx1 = pb + X1 * m, *restrict by1 = pb + Y1 * m, *restrict bx2 = pb + X2 * m;
    const float *restrict by2 = pb + Y2 * m, *restrict barea = pb + AREA * m;
    const float *restrict bcx = pb + CX * m, *restrict bcy = pb + CY * m, *restrict bangle = pb + ANGLE * m;
    const float eps = job->eps, v_scale = job->v_scale;
    float *restrict row = job->out + (b * n + i) * m;
    for (int64_t j = 0; j < m; j++) {
        const float iw = pos_f(min_f(ax2, bx2[j]) - max_f(ax1, bx1[j]));
        const float ih = pos_f(min_f(ay2, by2[j]) - max_f(ay1, by1[j]));
        const float inter = iw * ih;
        const float uni = (aarea + barea[j]) - inter;
        const float iou = div0(inter, uni);
        const float cw = pos_f(max_f(ax2, bx2[j]) - min_f(ax1, bx1[j]));
        const float ch = pos_f(max_f(ay2, by2[j]) - min_f(ay1, by1[j]));
        if (kind == KIND_GIOU) {
            const float area_c = cw * ch;
            row[j] = iou - div0(area_c - uni, area_c);
            continue;
        }
        const float dx = acx - bcx[j], dy = acy - bcy[j];
        const float diagonal = (cw * cw + ch * ch) + eps;
        const float diou = iou - div0(dx * dx + dy * dy, diagonal);
        if (kind == KIND_DIOU) {
            row[j] = diou;
            continue;
        }
        const float dt = aangle - bangle[j];
        const float v = v_scale * (dt * dt);
        const float alpha = div0(v, ((1.0f - iou) + v) + eps);
        row[j] = diou - alpha * v;
    }
}

/* Rows begin..end (flat b * N + i) of the result. */
VECTOR_CLONES
static void pair_rows(const pair_job *job, int kind, int64_t begin, int64_t end) {
    switch (kind) {
    case KIND_GIOU:
        for (int64_t r = begin; r < end; r++) pair_row(job, KIND_GIOU, r / job->n, r % job->n);
        break;
    case KIND_DIOU:
        for (int64_t r = begin; r < end; r++) pair_row(job, KIND_DIOU, r / job->n, r % job->n);
        break;
    default:
        for (int64_t r = begin; r < end; r++) pair_row(job, KIND_CIOU, r / job->n, r % job->n);
        break;
    }
}

/* pairwise(kind, a, a_batch, b, b_batch, batch, n, m, eps, v_scale, out, threads):
 * kind 1 GIoU, 2 DIoU, 3 CIoU; a (a_batch, T, n) and b (b_batch, T, m) contiguous float32
 * term planes with T = 5, 7, 8 for the kinds (a batch of 1 serves every image); out
 * (batch, n, m) float32. */
static PyObject *native_pairwise(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long a_ptr, b_ptr, out_ptr;
    long long a_batch, b_batch, batch, n, m;
    double eps, v_scale;
    int kind, threads;
    if (!PyArg_ParseTuple(args, "iKLKLLLLddKi", &kind, &a_ptr, &a_batch, &b_ptr, &b_batch, &batch, &n, &m, &eps,
                          &v_scale, &out_ptr, &threads))
        return NULL;
    if (kind < KIND_GIOU || kind > KIND_CIOU || batch < 0 || n < 0 || m < 0 || (a_batch != 1 && a_batch != batch) ||
        (b_batch != 1 && b_batch != batch)) {
        PyErr_SetString(PyExc_ValueError, "pairwise: inconsistent arguments");
        return NULL;
    }
    const int64_t terms = kind == KIND_GIOU ? 5 : (kind == KIND_DIOU ? 7 : 8);
    pair_job job = {(const float *)(uintptr_t)a_ptr, a_batch == 1 ? 0 : terms * n,
                    (const float *)(uintptr_t)b_ptr, b_batch == 1 ? 0 : terms * m,
                    batch, n, m, (float)eps, (float)v_scale, (float *)(uintptr_t)out_ptr};
    const int64_t units = batch * n;
    /* At least 64k pairs per thread: below that a thread team costs more than it saves. */
    const int64_t most = m > 0 ? units * m / 65536 : 0;
    if (threads > most) threads = (int)most;
    if (threads < 1) threads = 1;
    Py_BEGIN_ALLOW_THREADS
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
    {
        int64_t t = 0, nt = 1;
#ifdef _OPENMP
        t = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
        pair_rows(&job, kind, units * t / nt, units * (t + 1) / nt);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"pairwise", native_pairwise, METH_VARARGS, "Pairwise GIoU, DIoU or CIoU of float32 box term planes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native_ioufam",
                                    "detblocks' native CPU kernel of the IoU family.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native_ioufam(void) { return PyModule_Create(&module); }
