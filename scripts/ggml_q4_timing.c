// ggml's CPU q4 matmul timed as llama.cpp runs it: the peer of pntk's q4 GEMV in
// scripts/bench_q4_cpu.py. Our own program, linked against a ggml built from the pinned upstream
// tarball by scripts/ggml_peer.py (only ggml's public headers: ggml.h, ggml-cpu.h, ggml-backend.h,
// ggml-alloc.h). It runs in a process of its own, so ggml's OpenMP runtime never meets torch's.
//
// W [N, K] (ggml: ne0 = K, ne1 = N) is quantized from random floats to q4_0 or q4_K, x [M, K] is
// f32 (ggml quantizes it to q8_0 / q8_K itself), y = ggml_mul_mat(W, x) [M, N], computed by the CPU
// backend (ggml_backend_graph_compute, one graph of one mul_mat per call, as pntk makes one call
// per matmul). The weights live in one of the CPU device's buffer types, as llama.cpp's loader puts
// them: "CPU" (plain blocks), or an "extra" buffer type from ggml_backend_dev_get_extra_bufts, whose
// set_tensor converts the weights when they are loaded: "CPU_REPACK" (q4_0 -> q4_0_8x8, q4_K ->
// q4_K_8x8 interleaved rows, on AVX2 and up) and "AMX" (builds with AMX-INT8 and AVX512-VNNI; its
// M = 1 path is an AVX512-VNNI GEMV, larger M AMX tiles). llama.cpp gives each weight the first extra
// buffer type whose supports_op accepts its matmul, else the plain one; here each is timed on its own.
// Enough weight copies are rotated to exceed the L3 (--min-mb), so each call streams its weights
// from memory. Once per (weights, M) the result is checked against a double reference on the
// dequantized weights (ggml's own to_float), within a loose tolerance for x's 8-bit quantization.
//
// One shot:   ggml_q4_timing --k K --n N --m M --threads T --type q4_0|q4_K [--buft all|CPU|CPU_REPACK|AMX]
//                            [--min-mb 320] [--calls C] [--repeats R] [--hugepages 0|1]
//   prints "info ..." and one "result ..." line per buffer type:
//   result k=.. n=.. m=.. type=.. buft=.. threads=.. copies=.. median_us=.. min_us=.. mean_us=.. rel_err=..
// Serve:      ggml_q4_timing --threads T --serve [--min-mb MB] [--hugepages 0|1]
//   reads one command a line on stdin and answers one line each (flushed):
//   setup id=ID k=K n=N type=T buft=B [copies=C]  -> ready id=ID copies=.. bytes_per_copy=.. thp_mb=.. | skip id=ID reason=..
//   check id=ID m=M                               -> check id=ID m=M rel_err=.. max_err=.. ok=0|1
//   time id=ID m=M calls=C [warmup=W]             -> time id=ID m=M calls=C median_us=.. min_us=.. mean_us=..
//   free id=ID                                    -> freed id=ID
//   threads n=T                                   -> threads n=T   (ggml_backend_cpu_set_n_threads)
//   info                                          -> the info line again
//   quit
// --hugepages 1 (default) asks for transparent huge pages on the weight buffers (madvise, before
// the weights are written), as pntk's packed weights have them, so both sides read memory alike;
// llama.cpp itself does not (0: ggml's buffers as it allocates them).
#define _GNU_SOURCE
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define MAX_WEIGHTS 32
#define MAX_MS 4

static int g_threads = 1;
static double g_min_mb = 320.0;
static int g_hugepages = 1;
static uint64_t g_seed = 1234;
static ggml_backend_t g_backend;
static ggml_backend_dev_t g_device;

static void die(const char * what) {
    fprintf(stderr, "ggml_q4_timing: %s\n", what);
    exit(1);
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

static void quiet_log(enum ggml_log_level level, const char * text, void * user) {
    (void) user;
    if (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
    }
}

static uint64_t next_random(uint64_t * state) {  // xorshift64*
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 2685821657736338717ULL;
}

static float uniform(uint64_t * state) {  // [-1, 1)
    return (float) ((next_random(state) >> 40) * (2.0 / 16777216.0) - 1.0);
}

static int compare_doubles(const void * a, const void * b) {
    double x = *(const double *) a, y = *(const double *) b;
    return (x > y) - (x < y);
}

static long anon_huge_kb(void) {  // AnonHugePages of this process, kB (-1: unknown)
    FILE * f = fopen("/proc/self/smaps_rollup", "r");
    if (!f) {
        return -1;
    }
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "AnonHugePages: %ld kB", &kb) == 1) {
            break;
        }
    }
    fclose(f);
    return kb;
}

// ---- buffer types ----

static ggml_backend_buffer_type_t find_buft(const char * name) {
    if (strcmp(name, "CPU") == 0) {
        return ggml_backend_cpu_buffer_type();
    }
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(g_device);
    ggml_backend_dev_get_extra_bufts_t get_extra =
        (ggml_backend_dev_get_extra_bufts_t) ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
    if (!get_extra) {
        return NULL;
    }
    for (ggml_backend_buffer_type_t * buft = get_extra(g_device); buft && *buft; ++buft) {
        if (strcmp(ggml_backend_buft_name(*buft), name) == 0) {
            return *buft;
        }
    }
    return NULL;
}

static void list_extra_bufts(char * out, size_t size) {
    out[0] = 0;
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(g_device);
    ggml_backend_dev_get_extra_bufts_t get_extra =
        (ggml_backend_dev_get_extra_bufts_t) ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
    size_t used = 0;
    for (ggml_backend_buffer_type_t * buft = get_extra ? get_extra(g_device) : NULL; buft && *buft; ++buft) {
        used += snprintf(out + used, size - used, "%s%s", used ? "," : "", ggml_backend_buft_name(*buft));
        if (used >= size) {
            break;
        }
    }
    if (!used) {
        snprintf(out, size, "none");
    }
}

// ---- quantized host weights, one per type, kept while (k, n) stays the same ----

#define HOST_SLOTS 4

static struct host_slot {
    int64_t k, n;
    enum ggml_type type;
    void * data;  // ggml_row_size(type, k) * n bytes, plain blocks
} g_host[HOST_SLOTS];

static const void * host_weights(int64_t k, int64_t n, enum ggml_type type) {
    struct host_slot * slot = NULL;
    for (int i = 0; i < HOST_SLOTS; ++i) {
        if (g_host[i].data && g_host[i].k == k && g_host[i].n == n && g_host[i].type == type) {
            return g_host[i].data;
        }
    }
    for (int i = 0; i < HOST_SLOTS; ++i) {  // another shape's weights go
        if (g_host[i].data && (g_host[i].k != k || g_host[i].n != n)) {
            free(g_host[i].data);
            g_host[i].data = NULL;
        }
    }
    for (int i = 0; i < HOST_SLOTS && !slot; ++i) {
        slot = g_host[i].data ? NULL : &g_host[i];
    }
    if (!slot) {
        slot = &g_host[0];
        free(slot->data);
        slot->data = NULL;
    }
    size_t row = ggml_row_size(type, k);
    slot->data = malloc(row * n);
    const int64_t rows_per_chunk = 256;
    float * src = malloc(sizeof(float) * k * rows_per_chunk);
    if (!slot->data || !src) {
        die("out of memory (host weights)");
    }
    // the same floats for every type (the seed depends on the shape only)
    uint64_t state = g_seed ^ (uint64_t) (k * 1000003 + n);
    for (int64_t r0 = 0; r0 < n; r0 += rows_per_chunk) {
        int64_t rows = n - r0 < rows_per_chunk ? n - r0 : rows_per_chunk;
        for (int64_t i = 0; i < rows * k; ++i) {
            src[i] = uniform(&state);
        }
        ggml_quantize_chunk(type, src, (char *) slot->data + r0 * row, 0, rows, k, NULL);
    }
    free(src);
    slot->k = k;
    slot->n = n;
    slot->type = type;
    return slot->data;
}

// ---- weights: copies of W in one buffer of one buffer type, graphs per M ----

struct graphs {
    int m;
    struct ggml_context * ctx;
    ggml_backend_buffer_t buffer;  // x and the outputs
    struct ggml_tensor * x;
    struct ggml_tensor ** y;
    struct ggml_cgraph ** graph;
    int checked;
};

struct weights {
    char id[64];
    int64_t k, n;
    enum ggml_type type;
    char buft_name[32];
    int copies;
    struct ggml_context * ctx;
    ggml_backend_buffer_t buffer;
    struct ggml_tensor ** w;
    struct graphs per_m[MAX_MS];
    int next;  // the copy the next call uses
};

static struct weights * g_weights[MAX_WEIGHTS];

static struct weights * find_weights(const char * id) {
    for (int i = 0; i < MAX_WEIGHTS; ++i) {
        if (g_weights[i] && strcmp(g_weights[i]->id, id) == 0) {
            return g_weights[i];
        }
    }
    return NULL;
}

static void free_weights(struct weights * w) {
    for (int i = 0; i < MAX_MS; ++i) {
        if (w->per_m[i].ctx) {
            ggml_backend_buffer_free(w->per_m[i].buffer);
            ggml_free(w->per_m[i].ctx);
            free(w->per_m[i].y);
            free(w->per_m[i].graph);
        }
    }
    if (w->buffer) {
        ggml_backend_buffer_free(w->buffer);
    }
    if (w->ctx) {
        ggml_free(w->ctx);
    }
    free(w->w);
    for (int i = 0; i < MAX_WEIGHTS; ++i) {
        if (g_weights[i] == w) {
            g_weights[i] = NULL;
        }
    }
    free(w);
}

static bool parse_type(const char * name, enum ggml_type * type) {
    if (strcmp(name, "q4_0") == 0) {
        *type = GGML_TYPE_Q4_0;
    } else if (strcmp(name, "q4_K") == 0) {
        *type = GGML_TYPE_Q4_K;
    } else {
        return false;
    }
    return true;
}

// Returns NULL and a reason when this buffer type does not take this matmul.
static struct weights * setup_weights(const char * id, int64_t k, int64_t n, const char * type_name,
                                      const char * buft_name, int copies, char * reason, size_t reason_size) {
    enum ggml_type type;
    if (!parse_type(type_name, &type)) {
        snprintf(reason, reason_size, "unknown_type_%s", type_name);
        return NULL;
    }
    if (k % ggml_blck_size(type)) {
        snprintf(reason, reason_size, "k_not_a_multiple_of_%lld", (long long) ggml_blck_size(type));
        return NULL;
    }
    ggml_backend_buffer_type_t buft = find_buft(buft_name);
    if (!buft) {
        snprintf(reason, reason_size, "no_%s_buffer_type_in_this_build", buft_name);
        return NULL;
    }
    size_t bytes_per_copy = ggml_row_size(type, k) * n;
    if (copies <= 0) {
        copies = (int) ceil(g_min_mb * 1e6 / bytes_per_copy);
        copies = copies < 2 ? 2 : copies;
    }
    struct weights * w = calloc(1, sizeof *w);
    snprintf(w->id, sizeof w->id, "%s", id);
    snprintf(w->buft_name, sizeof w->buft_name, "%s", buft_name);
    w->k = k;
    w->n = n;
    w->type = type;
    w->copies = copies;
    w->w = calloc(copies, sizeof *w->w);
    struct ggml_init_params params = {ggml_tensor_overhead() * (copies + 8), NULL, true};
    w->ctx = ggml_init(params);
    for (int c = 0; c < copies; ++c) {
        w->w[c] = ggml_new_tensor_2d(w->ctx, type, k, n);
        ggml_format_name(w->w[c], "w%d", c);
    }
    w->buffer = ggml_backend_alloc_ctx_tensors_from_buft(w->ctx, buft);
    if (!w->buffer) {
        free_weights(w);
        snprintf(reason, reason_size, "allocation_failed");
        return NULL;
    }
    ggml_backend_buffer_set_usage(w->buffer, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);

    // Would the CPU device run this matmul with the weights in this buffer type? (llama.cpp asks
    // the same before it places a weight there.)
    {
        struct ggml_init_params probe_params = {ggml_tensor_overhead() * 4, NULL, true};
        struct ggml_context * probe = ggml_init(probe_params);
        struct ggml_tensor * x = ggml_new_tensor_2d(probe, GGML_TYPE_F32, k, 1);
        struct ggml_tensor * y = ggml_mul_mat(probe, w->w[0], x);
        bool supported = ggml_backend_dev_supports_op(g_device, y);
        ggml_free(probe);
        if (!supported) {
            free_weights(w);
            snprintf(reason, reason_size, "%s_does_not_take_%s_%lldx%lld", buft_name, type_name, (long long) k,
                     (long long) n);
            return NULL;
        }
    }
    if (g_hugepages) {
        uintptr_t base = (uintptr_t) ggml_backend_buffer_get_base(w->buffer);
        uintptr_t end = base + ggml_backend_buffer_get_size(w->buffer);
        uintptr_t huge = 2u << 20;
        uintptr_t start = (base + huge - 1) & ~(huge - 1);
        if (end > start) {
            madvise((void *) start, (end - start) & ~(huge - 1), MADV_HUGEPAGE);
        }
    }
    const void * host = host_weights(k, n, type);
    for (int c = 0; c < copies; ++c) {
        ggml_backend_tensor_set(w->w[c], host, 0, bytes_per_copy);  // extra buffer types repack here
    }
    for (int i = 0; i < MAX_WEIGHTS; ++i) {
        if (!g_weights[i]) {
            g_weights[i] = w;
            return w;
        }
    }
    free_weights(w);
    snprintf(reason, reason_size, "too_many_weights_alive");
    return NULL;
}

static struct graphs * graphs_for(struct weights * w, int m) {
    for (int i = 0; i < MAX_MS; ++i) {
        if (w->per_m[i].ctx && w->per_m[i].m == m) {
            return &w->per_m[i];
        }
    }
    for (int i = 0; i < MAX_MS; ++i) {
        struct graphs * g = &w->per_m[i];
        if (g->ctx) {
            continue;
        }
        g->m = m;
        size_t size = ggml_tensor_overhead() * (w->copies + 4) + ggml_graph_overhead() * w->copies + 1024;
        struct ggml_init_params params = {size, NULL, true};
        g->ctx = ggml_init(params);
        g->x = ggml_new_tensor_2d(g->ctx, GGML_TYPE_F32, w->k, m);
        g->y = calloc(w->copies, sizeof *g->y);
        g->graph = calloc(w->copies, sizeof *g->graph);
        for (int c = 0; c < w->copies; ++c) {
            g->y[c] = ggml_mul_mat(g->ctx, w->w[c], g->x);
            g->graph[c] = ggml_new_graph(g->ctx);
            ggml_build_forward_expand(g->graph[c], g->y[c]);
        }
        g->buffer = ggml_backend_alloc_ctx_tensors(g->ctx, g_backend);
        if (!g->buffer) {
            die("out of memory (activations)");
        }
        float * x = malloc(sizeof(float) * w->k * m);
        uint64_t state = g_seed * 7 + (uint64_t) m;
        for (int64_t i = 0; i < w->k * m; ++i) {
            x[i] = uniform(&state);
        }
        ggml_backend_tensor_set(g->x, x, 0, sizeof(float) * w->k * m);
        free(x);
        return g;
    }
    die("too many M values for one set of weights");
    return NULL;
}

// ||y - y_ref|| / ||y_ref|| and max |y - y_ref| / rms(y_ref), y_ref in double on ggml's dequantized
// weights (copy 0: the same data every copy holds, repacked or not by its buffer type).
static void check_result(struct weights * w, int m, double * rel_err, double * max_err) {
    struct graphs * g = graphs_for(w, m);
    if (ggml_backend_graph_compute(g_backend, g->graph[0]) != GGML_STATUS_SUCCESS) {
        die("graph compute failed");
    }
    float * y = malloc(sizeof(float) * w->n * m);
    float * x = malloc(sizeof(float) * w->k * m);
    float * row = malloc(sizeof(float) * w->k);
    double * ref = calloc((size_t) w->n * m, sizeof(double));
    ggml_backend_tensor_get(g->y[0], y, 0, sizeof(float) * w->n * m);
    ggml_backend_tensor_get(g->x, x, 0, sizeof(float) * w->k * m);
    const struct ggml_type_traits * traits = ggml_get_type_traits(w->type);
    const char * host = host_weights(w->k, w->n, w->type);
    size_t row_size = ggml_row_size(w->type, w->k);
    // every output column of copy 0 up to 2^27 multiply-adds, else an evenly strided subset of them
    int64_t stride = (w->n * w->k * m) >> 27;
    stride = stride < 1 ? 1 : stride;
    for (int64_t j = 0; j < w->n; j += stride) {
        traits->to_float(host + j * row_size, row, w->k);
        for (int i = 0; i < m; ++i) {
            double sum = 0;
            const float * xi = x + (size_t) i * w->k;
            for (int64_t l = 0; l < w->k; ++l) {
                sum += (double) row[l] * xi[l];
            }
            ref[(size_t) i * w->n + j] = sum;
        }
    }
    double diff2 = 0, ref2 = 0, worst = 0;
    size_t compared = 0;
    for (size_t i = 0; i < (size_t) w->n * m; ++i) {
        if ((int64_t) (i % w->n) % stride) {
            continue;
        }
        ++compared;
        double d = y[i] - ref[i];
        diff2 += d * d;
        ref2 += ref[i] * ref[i];
        worst = fabs(d) > worst || d != d ? (d != d ? INFINITY : fabs(d)) : worst;
    }
    double rms = sqrt(ref2 / (double) compared);
    *rel_err = ref2 > 0 ? sqrt(diff2 / ref2) : INFINITY;
    *max_err = rms > 0 ? worst / rms : INFINITY;
    free(y);
    free(x);
    free(row);
    free(ref);
    g->checked = 1;
}

// The per-call times (us) of `calls` calls after `warmup` untimed ones, rotating the copies.
static void time_calls(struct weights * w, int m, int calls, int warmup, double * median, double * min, double * mean) {
    struct graphs * g = graphs_for(w, m);
    double * samples = malloc(sizeof(double) * calls);
    for (int c = -warmup; c < calls; ++c) {
        int i = w->next;
        w->next = (w->next + 1) % w->copies;
        double start = now_us();
        if (ggml_backend_graph_compute(g_backend, g->graph[i]) != GGML_STATUS_SUCCESS) {
            die("graph compute failed");
        }
        double end = now_us();
        if (c >= 0) {
            samples[c] = end - start;
        }
    }
    double total = 0;
    for (int c = 0; c < calls; ++c) {
        total += samples[c];
    }
    qsort(samples, calls, sizeof(double), compare_doubles);
    *median = calls % 2 ? samples[calls / 2] : 0.5 * (samples[calls / 2 - 1] + samples[calls / 2]);
    *min = samples[0];
    *mean = total / calls;
    free(samples);
}

static const double TOLERANCE = 0.03;  // rel_err: x's 8-bit quantization gives ~0.3-0.6%

static void print_info(void) {
    char extra[256];
    list_extra_bufts(extra, sizeof extra);
    printf("info ggml_commit=d99724f2b141 threads=%d avx2=%d avx512=%d avx512_vnni=%d avx512_bf16=%d amx_int8=%d "
           "f16c=%d fma=%d llamafile=%d extra_bufts=%s hugepages=%d min_mb=%.0f\n",
           g_threads, ggml_cpu_has_avx2(), ggml_cpu_has_avx512(), ggml_cpu_has_avx512_vnni(),
           ggml_cpu_has_avx512_bf16(), ggml_cpu_has_amx_int8(), ggml_cpu_has_f16c(), ggml_cpu_has_fma(),
           ggml_cpu_has_llamafile(), extra, g_hugepages, g_min_mb);
    fflush(stdout);
}

// "key=value" from a command line's words.
static const char * field(char ** words, int count, const char * key) {
    size_t len = strlen(key);
    for (int i = 1; i < count; ++i) {
        if (strncmp(words[i], key, len) == 0 && words[i][len] == '=') {
            return words[i] + len + 1;
        }
    }
    return NULL;
}

static int serve(void) {
    char line[1024];
    while (fgets(line, sizeof line, stdin)) {
        char * words[32];
        int count = 0;
        for (char * tok = strtok(line, " \t\r\n"); tok && count < 32; tok = strtok(NULL, " \t\r\n")) {
            words[count++] = tok;
        }
        if (!count) {
            continue;
        }
        const char * id = field(words, count, "id");
        const char * m_text = field(words, count, "m");
        if (strcmp(words[0], "quit") == 0) {
            break;
        } else if (strcmp(words[0], "info") == 0) {
            print_info();
            continue;
        } else if (strcmp(words[0], "threads") == 0) {
            const char * n = field(words, count, "n");
            if (n && atoi(n) > 0) {
                g_threads = atoi(n);
                ggml_backend_cpu_set_n_threads(g_backend, g_threads);
            }
            printf("threads n=%d\n", g_threads);
        } else if (!id) {
            printf("error reason=no_id\n");
        } else if (strcmp(words[0], "setup") == 0) {
            const char * k = field(words, count, "k"), * n = field(words, count, "n");
            const char * type = field(words, count, "type"), * buft = field(words, count, "buft");
            const char * copies = field(words, count, "copies");
            char reason[160];
            struct weights * old = find_weights(id);
            if (old) {
                free_weights(old);
            }
            if (!k || !n || !type || !buft) {
                printf("skip id=%s reason=setup_needs_k_n_type_buft\n", id);
            } else {
                struct weights * w = setup_weights(id, atoll(k), atoll(n), type, buft, copies ? atoi(copies) : 0,
                                                   reason, sizeof reason);
                if (w) {
                    printf("ready id=%s type=%s buft=%s copies=%d bytes_per_copy=%zu thp_mb=%.0f\n", id, type, buft,
                           w->copies, ggml_row_size(w->type, w->k) * w->n, anon_huge_kb() / 1024.0);
                } else {
                    printf("skip id=%s reason=%s\n", id, reason);
                }
            }
        } else if (strcmp(words[0], "free") == 0) {
            struct weights * w = find_weights(id);
            if (w) {
                free_weights(w);
            }
            printf("freed id=%s\n", id);
        } else {
            struct weights * w = find_weights(id);
            int m = m_text ? atoi(m_text) : 1;
            if (!w) {
                printf("error id=%s reason=unknown_id\n", id);
            } else if (strcmp(words[0], "check") == 0) {
                double rel, worst;
                check_result(w, m, &rel, &worst);
                printf("check id=%s m=%d rel_err=%.5f max_err=%.4f ok=%d\n", id, m, rel, worst, rel < TOLERANCE);
            } else if (strcmp(words[0], "time") == 0) {
                const char * calls_text = field(words, count, "calls"), * warmup_text = field(words, count, "warmup");
                int calls = calls_text ? atoi(calls_text) : w->copies;
                int warmup = warmup_text ? atoi(warmup_text) : 1;
                double median, min, mean;
                time_calls(w, m, calls < 1 ? 1 : calls, warmup < 0 ? 0 : warmup, &median, &min, &mean);
                printf("time id=%s m=%d calls=%d median_us=%.2f min_us=%.2f mean_us=%.2f\n", id, m, calls, median, min,
                       mean);
            } else {
                printf("error id=%s reason=unknown_command_%s\n", id, words[0]);
            }
        }
        fflush(stdout);
    }
    return 0;
}

static int one_shot(int64_t k, int64_t n, int m, const char * type, const char * buft_list, int calls, int repeats) {
    static const char * all[] = {"CPU", "CPU_REPACK", "AMX"};
    const char * names[8];
    int count = 0;
    char buffer[128];
    if (strcmp(buft_list, "all") == 0) {
        for (int i = 0; i < 3; ++i) {
            names[count++] = all[i];
        }
    } else {
        snprintf(buffer, sizeof buffer, "%s", buft_list);
        for (char * tok = strtok(buffer, ","); tok && count < 8; tok = strtok(NULL, ",")) {
            names[count++] = tok;
        }
    }
    int status = 0;
    for (int i = 0; i < count; ++i) {
        char reason[160];
        struct weights * w = setup_weights(names[i], k, n, type, names[i], 0, reason, sizeof reason);
        if (!w) {
            printf("skip k=%lld n=%lld type=%s buft=%s reason=%s\n", (long long) k, (long long) n, type, names[i], reason);
            continue;
        }
        double rel, worst;
        check_result(w, m, &rel, &worst);
        if (rel >= TOLERANCE) {
            status = 3;
        }
        double best_median = INFINITY, best_min = INFINITY, mean_sum = 0;
        for (int r = 0; r < repeats; ++r) {
            double median, min, mean;
            time_calls(w, m, calls > 0 ? calls : w->copies, 1, &median, &min, &mean);
            best_median = median < best_median ? median : best_median;
            best_min = min < best_min ? min : best_min;
            mean_sum += mean;
        }
        printf("result k=%lld n=%lld m=%d type=%s buft=%s threads=%d copies=%d bytes_per_copy=%zu median_us=%.2f "
               "min_us=%.2f mean_us=%.2f rel_err=%.5f max_err=%.4f ok=%d\n",
               (long long) k, (long long) n, m, type, names[i], g_threads, w->copies, ggml_row_size(w->type, k) * n,
               best_median, best_min, mean_sum / repeats, rel, worst, rel < TOLERANCE);
        fflush(stdout);
        free_weights(w);
    }
    return status;
}

int main(int argc, char ** argv) {
    int64_t k = 4096, n = 4096;
    int m = 1, calls = 0, repeats = 5, serve_mode = 0;
    const char * type = "q4_0";
    const char * buft = "all";
    for (int i = 1; i < argc; ++i) {
        const char * a = argv[i];
        const char * v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--serve") == 0) {
            serve_mode = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "ggml_q4_timing: %s needs a value\n", a);
            return 2;
        }
        ++i;
        if (strcmp(a, "--k") == 0) {
            k = atoll(v);
        } else if (strcmp(a, "--n") == 0) {
            n = atoll(v);
        } else if (strcmp(a, "--m") == 0) {
            m = atoi(v);
        } else if (strcmp(a, "--threads") == 0) {
            g_threads = atoi(v);
        } else if (strcmp(a, "--type") == 0) {
            type = v;
        } else if (strcmp(a, "--buft") == 0) {
            buft = v;
        } else if (strcmp(a, "--min-mb") == 0) {
            g_min_mb = atof(v);
        } else if (strcmp(a, "--calls") == 0) {
            calls = atoi(v);
        } else if (strcmp(a, "--repeats") == 0) {
            repeats = atoi(v);
        } else if (strcmp(a, "--hugepages") == 0) {
            g_hugepages = atoi(v);
        } else if (strcmp(a, "--seed") == 0) {
            g_seed = strtoull(v, NULL, 10);
        } else {
            fprintf(stderr, "ggml_q4_timing: unknown option %s\n", a);
            return 2;
        }
    }
    if (g_threads < 1 || k < 1 || n < 1 || m < 1 || repeats < 1) {
        fprintf(stderr, "ggml_q4_timing: bad arguments\n");
        return 2;
    }
    ggml_log_set(quiet_log, NULL);
    ggml_cpu_init();
    g_device = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    g_backend = ggml_backend_cpu_init();
    if (!g_device || !g_backend) {
        die("no CPU backend");
    }
    ggml_backend_cpu_set_n_threads(g_backend, g_threads);
    print_info();
    int status = serve_mode ? serve() : one_shot(k, n, m, type, buft, calls, repeats);
    for (int i = 0; i < MAX_WEIGHTS; ++i) {
        if (g_weights[i]) {
            free_weights(g_weights[i]);
        }
    }
    for (int i = 0; i < HOST_SLOTS; ++i) {
        free(g_host[i].data);
    }
    ggml_backend_free(g_backend);
    return status;
}
