/*
 * A fake libnvidia-ml.so.1 for tests: the real pynvml code calls it through ctypes.
 *
 * It exports the NVML entry points aisentinel's GPU sampler uses, with the real
 * versioned symbol names and struct layouts (taken from nvml.h as mirrored by pynvml,
 * the nvidia-ml-py package). Its state comes from a scenario file named by the
 * environment variable FAKE_NVML_SCENARIO. Every call stat()s that file and re-parses
 * it when its inode, size or modification time changed, so a test rewrites it (write a
 * temporary file, rename it over) and the next NVML call sees the new state.
 *
 * Scenario format: one directive per line, words separated by spaces, '#' comments.
 *
 *   driver 550.54.15                  system driver version
 *   nvml 12.550.54.15                 NVML version
 *   init_error DRIVER_NOT_LOADED      every nvmlInit* call fails with this code
 *   error FN CODE                     before any device: a system call FN fails;
 *                                     after a device line: that device's call FN
 *                                     fails (FN '*' = every call for that device)
 *   device INDEX                      starts a device (indices 0..N-1)
 *   uuid GPU-...   name TEXT...   serial TEXT   pci 00000000:3B:00.0
 *   util GPU MEM                      utilization in percent
 *   memory TOTAL USED FREE RESERVED   bytes
 *   temperature C   power MILLIWATTS   energy MILLIJOULES
 *   ecc CORRECTED UNCORRECTED         volatile ECC error counts
 *   throttle MASK                     clocks throttle/event reasons (0x.. or decimal)
 *   mig CURRENT PENDING               MIG mode (0 disabled, 1 enabled)
 *   events MASK                       supported event types
 *   process PID USED_BYTES|na SM|- MEM|- [compute|graphics|both]
 *   xid SEQ CODE                      a critical Xid event; delivered once per event
 *                                     set, in SEQ order, if SEQ is above the largest
 *                                     SEQ present when the set was created
 *
 * Codes are NVML names without the NVML_ERROR_ prefix (GPU_IS_LOST, NOT_SUPPORTED,
 * NO_PERMISSION, DRIVER_NOT_LOADED, ...) or numbers, or HANG: the call blocks (a wedged
 * driver) until a rewritten scenario no longer says so, then goes on with the new
 * one; other threads' calls go on meanwhile. No scenario file: nvmlInit fails
 * with DRIVER_NOT_LOADED. A malformed scenario is reported on stderr and ignored (the
 * previous one stays in force).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define EXPORT __attribute__((visibility("default")))

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_ALREADY_INITIALIZED = 5,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_INSUFFICIENT_POWER = 8,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_IRQ_ISSUE = 11,
    NVML_ERROR_LIBRARY_NOT_FOUND = 12,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_CORRUPTED_INFOROM = 14,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_RESET_REQUIRED = 16,
    NVML_ERROR_OPERATING_SYSTEM = 17,
    NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18,
    NVML_ERROR_IN_USE = 19,
    NVML_ERROR_MEMORY = 20,
    NVML_ERROR_NO_DATA = 21,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};
#define FAKE_HANG (-1) /* "error FN HANG": not an NVML code; the call blocks */

#define NVML_EVENT_TYPE_XID_CRITICAL 0x8ULL
#define NVML_MEMORY_V2 0x02000028U /* sizeof(nvmlMemory_v2_t) | 2 << 24 */
#define NOT_AVAILABLE_ULL 0xFFFFFFFFFFFFFFFFULL
#define NO_INSTANCE 0xFFFFFFFFU

/* ------------------------------------------------------------ NVML's public structs */

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_v2_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_v2_t;

typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil;
    unsigned int memUtil;
    unsigned int encUtil;
    unsigned int decUtil;
} nvmlProcessUtilizationSample_t;

typedef struct {
    char busIdLegacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

struct nvmlDevice_st {
    unsigned int index;
};
typedef struct nvmlDevice_st *nvmlDevice_t;

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType;
    unsigned long long eventData;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlEventData_t;

/* ------------------------------------------------------------ scenario */

#define MAX_DEVICES 64
#define MAX_PROCS 256
#define MAX_RULES 32
#define MAX_XIDS 256
#define NAME_LEN 96

typedef struct {
    char fn[64];
    int code;
} rule_t;

typedef struct {
    unsigned int pid;
    unsigned long long used;
    int has_util;
    unsigned int sm, mem;
    int compute, graphics;
} fproc_t;

typedef struct {
    char uuid[NAME_LEN], name[NAME_LEN], serial[32], pci[32];
    unsigned int util_gpu, util_mem;
    unsigned long long mem_total, mem_used, mem_free, mem_reserved;
    unsigned int temperature, power_mw;
    unsigned long long energy_mj, ecc_corrected, ecc_uncorrected, throttle, events;
    unsigned int mig_current, mig_pending;
    int nproc;
    fproc_t procs[MAX_PROCS];
    int nrule;
    rule_t rules[MAX_RULES];
} fdev_t;

typedef struct {
    unsigned long long seq, code;
    int dev;
} fxid_t;

typedef struct {
    char driver[80], nvml[80];
    int init_error;
    int ndev;
    fdev_t devs[MAX_DEVICES];
    int nrule;
    rule_t rules[MAX_RULES];
    int nxid;
    fxid_t xids[MAX_XIDS];
} scenario_t;

struct nvmlEventSet_st {
    unsigned long long mask[MAX_DEVICES];
    unsigned long long last_seq;
};
typedef struct nvmlEventSet_st *nvmlEventSet_t;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static scenario_t *g_scn;
static int g_init;
static unsigned long long g_calls;
static char g_path[4096];
static struct stat g_stamp;
static int g_have_stamp;
static struct nvmlDevice_st g_handles[MAX_DEVICES];

static const struct {
    const char *name;
    int code;
} CODES[] = {
    {"SUCCESS", NVML_SUCCESS},
    {"UNINITIALIZED", NVML_ERROR_UNINITIALIZED},
    {"INVALID_ARGUMENT", NVML_ERROR_INVALID_ARGUMENT},
    {"NOT_SUPPORTED", NVML_ERROR_NOT_SUPPORTED},
    {"NO_PERMISSION", NVML_ERROR_NO_PERMISSION},
    {"ALREADY_INITIALIZED", NVML_ERROR_ALREADY_INITIALIZED},
    {"NOT_FOUND", NVML_ERROR_NOT_FOUND},
    {"INSUFFICIENT_SIZE", NVML_ERROR_INSUFFICIENT_SIZE},
    {"INSUFFICIENT_POWER", NVML_ERROR_INSUFFICIENT_POWER},
    {"DRIVER_NOT_LOADED", NVML_ERROR_DRIVER_NOT_LOADED},
    {"TIMEOUT", NVML_ERROR_TIMEOUT},
    {"IRQ_ISSUE", NVML_ERROR_IRQ_ISSUE},
    {"LIBRARY_NOT_FOUND", NVML_ERROR_LIBRARY_NOT_FOUND},
    {"FUNCTION_NOT_FOUND", NVML_ERROR_FUNCTION_NOT_FOUND},
    {"CORRUPTED_INFOROM", NVML_ERROR_CORRUPTED_INFOROM},
    {"GPU_IS_LOST", NVML_ERROR_GPU_IS_LOST},
    {"RESET_REQUIRED", NVML_ERROR_RESET_REQUIRED},
    {"OPERATING_SYSTEM", NVML_ERROR_OPERATING_SYSTEM},
    {"LIB_RM_VERSION_MISMATCH", NVML_ERROR_LIB_RM_VERSION_MISMATCH},
    {"IN_USE", NVML_ERROR_IN_USE},
    {"MEMORY", NVML_ERROR_MEMORY},
    {"NO_DATA", NVML_ERROR_NO_DATA},
    {"ARGUMENT_VERSION_MISMATCH", NVML_ERROR_ARGUMENT_VERSION_MISMATCH},
    {"UNKNOWN", NVML_ERROR_UNKNOWN},
    {"HANG", FAKE_HANG},
};

static const struct {
    int code;
    const char *text;
} TEXTS[] = {
    {NVML_SUCCESS, "Success"},
    {NVML_ERROR_UNINITIALIZED, "Uninitialized"},
    {NVML_ERROR_INVALID_ARGUMENT, "Invalid Argument"},
    {NVML_ERROR_NOT_SUPPORTED, "Not Supported"},
    {NVML_ERROR_NO_PERMISSION, "Insufficient Permissions"},
    {NVML_ERROR_ALREADY_INITIALIZED, "Already Initialized"},
    {NVML_ERROR_NOT_FOUND, "Not Found"},
    {NVML_ERROR_INSUFFICIENT_SIZE, "Insufficient Size"},
    {NVML_ERROR_INSUFFICIENT_POWER, "Insufficient External Power"},
    {NVML_ERROR_DRIVER_NOT_LOADED, "Driver Not Loaded"},
    {NVML_ERROR_TIMEOUT, "Timeout"},
    {NVML_ERROR_IRQ_ISSUE, "Interrupt Request Issue"},
    {NVML_ERROR_LIBRARY_NOT_FOUND, "NVML Shared Library Not Found"},
    {NVML_ERROR_FUNCTION_NOT_FOUND, "Function Not Found"},
    {NVML_ERROR_CORRUPTED_INFOROM, "Corrupted infoROM"},
    {NVML_ERROR_GPU_IS_LOST, "GPU is lost"},
    {NVML_ERROR_RESET_REQUIRED, "GPU requires restart"},
    {NVML_ERROR_OPERATING_SYSTEM, "The operating system has blocked the request."},
    {NVML_ERROR_LIB_RM_VERSION_MISMATCH, "RM has detected an NVML/RM version mismatch."},
    {NVML_ERROR_IN_USE, "In use by another client"},
    {NVML_ERROR_MEMORY, "Insufficient Memory"},
    {NVML_ERROR_NO_DATA, "No data"},
    {NVML_ERROR_ARGUMENT_VERSION_MISMATCH, "Argument version mismatch"},
    {NVML_ERROR_UNKNOWN, "Unknown Error"},
};

static int parse_code(const char *word, int *out) {
    for (size_t i = 0; i < sizeof CODES / sizeof CODES[0]; i++) {
        if (strcmp(word, CODES[i].name) == 0) {
            *out = CODES[i].code;
            return 1;
        }
    }
    char *end;
    errno = 0;
    long v = strtol(word, &end, 0);
    if (errno || *end || end == word || v < 0 || v > 100000) {
        return 0;
    }
    *out = (int)v;
    return 1;
}

static int parse_ull(const char *word, unsigned long long *out) {
    if (word == NULL || *word == '-') {
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(word, &end, 0);
    if (errno || *end || end == word) {
        return 0;
    }
    *out = v;
    return 1;
}

static int parse_uint(const char *word, unsigned int *out) {
    unsigned long long v;
    if (!parse_ull(word, &v) || v > 0xFFFFFFFFULL) {
        return 0;
    }
    *out = (unsigned int)v;
    return 1;
}

static void copy_text(char *dst, size_t cap, const char *src) {
    snprintf(dst, cap, "%s", src ? src : "");
}

/* Splits `line` in place into at most `max` words; returns how many. */
static int split(char *line, char **words, int max) {
    int n = 0;
    char *p = line;
    while (*p && n < max) {
        while (*p && isspace((unsigned char)*p)) {
            p++;
        }
        if (!*p || *p == '#') {
            break;
        }
        words[n++] = p;
        while (*p && !isspace((unsigned char)*p)) {
            p++;
        }
        if (*p) {
            *p++ = '\0';
        }
    }
    return n;
}

static void default_device(fdev_t *d, int index) {
    memset(d, 0, sizeof *d);
    snprintf(d->uuid, sizeof d->uuid, "GPU-00000000-0000-0000-0000-%012d", index);
    copy_text(d->name, sizeof d->name, "NVIDIA Fake GPU");
    snprintf(d->serial, sizeof d->serial, "FAKE%08d", index);
    snprintf(d->pci, sizeof d->pci, "00000000:%02X:00.0", (unsigned)(0x10 + index));
    d->mem_total = 80ULL << 30;
    d->mem_free = d->mem_total;
    d->events = 0x1FULL;
}

static int add_rule(rule_t *rules, int *n, char **w, int nw) {
    if (nw != 3 || *n >= MAX_RULES || strlen(w[1]) >= sizeof rules[0].fn) {
        return 0;
    }
    copy_text(rules[*n].fn, sizeof rules[*n].fn, w[1]);
    if (!parse_code(w[2], &rules[*n].code)) {
        return 0;
    }
    (*n)++;
    return 1;
}

static int parse_process(fdev_t *d, char **w, int nw) {
    if (nw < 5 || nw > 6 || d->nproc >= MAX_PROCS) {
        return 0;
    }
    fproc_t *p = &d->procs[d->nproc];
    memset(p, 0, sizeof *p);
    if (!parse_uint(w[1], &p->pid)) {
        return 0;
    }
    if (strcmp(w[2], "na") == 0) {
        p->used = NOT_AVAILABLE_ULL;
    } else if (!parse_ull(w[2], &p->used)) {
        return 0;
    }
    if (strcmp(w[3], "-") == 0) {
        p->has_util = 0;
    } else if (parse_uint(w[3], &p->sm) && parse_uint(w[4], &p->mem)) {
        p->has_util = 1;
    } else {
        return 0;
    }
    const char *kind = nw == 6 ? w[5] : "compute";
    p->compute = strcmp(kind, "compute") == 0 || strcmp(kind, "both") == 0;
    p->graphics = strcmp(kind, "graphics") == 0 || strcmp(kind, "both") == 0;
    if (!p->compute && !p->graphics) {
        return 0;
    }
    d->nproc++;
    return 1;
}

/* Parses one directive; returns 1 if it is well formed. */
static int parse_line(scenario_t *s, char *line, fdev_t **cur) {
    char *w[8];
    char raw[512];
    copy_text(raw, sizeof raw, line);
    int nw = split(line, w, 8);
    if (nw == 0) {
        return 1;
    }
    fdev_t *d = *cur;
    const char *k = w[0];
    if (strcmp(k, "driver") == 0 && nw == 2) {
        copy_text(s->driver, sizeof s->driver, w[1]);
    } else if (strcmp(k, "nvml") == 0 && nw == 2) {
        copy_text(s->nvml, sizeof s->nvml, w[1]);
    } else if (strcmp(k, "init_error") == 0 && nw == 2) {
        return parse_code(w[1], &s->init_error);
    } else if (strcmp(k, "device") == 0 && nw == 2) {
        unsigned int idx;
        if (!parse_uint(w[1], &idx) || idx >= MAX_DEVICES || (int)idx != s->ndev) {
            return 0;
        }
        *cur = &s->devs[idx];
        default_device(*cur, (int)idx);
        s->ndev++;
    } else if (strcmp(k, "error") == 0) {
        return d ? add_rule(d->rules, &d->nrule, w, nw) : add_rule(s->rules, &s->nrule, w, nw);
    } else if (d == NULL) {
        return 0;
    } else if (strcmp(k, "uuid") == 0 && nw == 2) {
        copy_text(d->uuid, sizeof d->uuid, w[1]);
    } else if (strcmp(k, "name") == 0 && nw >= 2) {
        /* the rest of the raw line after "name " */
        const char *rest = strstr(raw, "name") + 4;
        while (isspace((unsigned char)*rest)) {
            rest++;
        }
        copy_text(d->name, sizeof d->name, rest);
        size_t n = strlen(d->name);
        while (n && isspace((unsigned char)d->name[n - 1])) {
            d->name[--n] = '\0';
        }
    } else if (strcmp(k, "serial") == 0 && nw == 2) {
        copy_text(d->serial, sizeof d->serial, w[1]);
    } else if (strcmp(k, "pci") == 0 && nw == 2) {
        copy_text(d->pci, sizeof d->pci, w[1]);
    } else if (strcmp(k, "util") == 0 && nw == 3) {
        return parse_uint(w[1], &d->util_gpu) && parse_uint(w[2], &d->util_mem);
    } else if (strcmp(k, "memory") == 0 && nw == 5) {
        return parse_ull(w[1], &d->mem_total) && parse_ull(w[2], &d->mem_used) &&
               parse_ull(w[3], &d->mem_free) && parse_ull(w[4], &d->mem_reserved);
    } else if (strcmp(k, "temperature") == 0 && nw == 2) {
        return parse_uint(w[1], &d->temperature);
    } else if (strcmp(k, "power") == 0 && nw == 2) {
        return parse_uint(w[1], &d->power_mw);
    } else if (strcmp(k, "energy") == 0 && nw == 2) {
        return parse_ull(w[1], &d->energy_mj);
    } else if (strcmp(k, "ecc") == 0 && nw == 3) {
        return parse_ull(w[1], &d->ecc_corrected) && parse_ull(w[2], &d->ecc_uncorrected);
    } else if (strcmp(k, "throttle") == 0 && nw == 2) {
        return parse_ull(w[1], &d->throttle);
    } else if (strcmp(k, "mig") == 0 && nw == 3) {
        return parse_uint(w[1], &d->mig_current) && parse_uint(w[2], &d->mig_pending);
    } else if (strcmp(k, "events") == 0 && nw == 2) {
        return parse_ull(w[1], &d->events);
    } else if (strcmp(k, "process") == 0) {
        return parse_process(d, w, nw);
    } else if (strcmp(k, "xid") == 0 && nw == 3) {
        if (s->nxid >= MAX_XIDS) {
            return 0;
        }
        fxid_t *x = &s->xids[s->nxid];
        x->dev = (int)(d - s->devs);
        if (!parse_ull(w[1], &x->seq) || !parse_ull(w[2], &x->code) || x->seq == 0) {
            return 0;
        }
        s->nxid++;
    } else {
        return 0;
    }
    return 1;
}

static scenario_t *parse_file(const char *path) {
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        return NULL;
    }
    scenario_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        fclose(f);
        return NULL;
    }
    copy_text(s->driver, sizeof s->driver, "550.54.15");
    copy_text(s->nvml, sizeof s->nvml, "12.550.54.15");
    fdev_t *cur = NULL;
    char line[512];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!parse_line(s, line, &cur)) {
            fprintf(stderr, "fakenvml: %s line %d is malformed; scenario ignored\n", path,
                    lineno);
            free(s);
            fclose(f);
            return NULL;
        }
    }
    fclose(f);
    return s;
}

/* Re-reads the scenario if the file named by FAKE_NVML_SCENARIO changed. Lock held. */
static void reload(void) {
    const char *path = getenv("FAKE_NVML_SCENARIO");
    struct stat st;
    if (path == NULL || *path == '\0' || strlen(path) >= sizeof g_path || stat(path, &st) != 0) {
        free(g_scn);
        g_scn = NULL;
        g_have_stamp = 0;
        g_path[0] = '\0';
        return;
    }
    if (g_have_stamp && strcmp(path, g_path) == 0 && st.st_ino == g_stamp.st_ino &&
        st.st_dev == g_stamp.st_dev && st.st_size == g_stamp.st_size &&
        st.st_mtim.tv_sec == g_stamp.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == g_stamp.st_mtim.tv_nsec) {
        return;
    }
    scenario_t *s = parse_file(path);
    copy_text(g_path, sizeof g_path, path);
    g_stamp = st;
    g_have_stamp = 1;
    if (s != NULL) {
        free(g_scn);
        g_scn = s;
    }
}

static int rule_for(const rule_t *rules, int n, const char *fn, int any, int *code) {
    for (int i = 0; i < n; i++) {
        if (strcmp(rules[i].fn, fn) == 0 || (any && strcmp(rules[i].fn, "*") == 0)) {
            *code = rules[i].code;
            return 1;
        }
    }
    return 0;
}

static void lock(void) {
    pthread_mutex_lock(&g_lock);
    g_calls++;
    reload();
}

static nvmlReturn_t unlock_ret(nvmlReturn_t r) {
    pthread_mutex_unlock(&g_lock);
    return r;
}

/* Lock held: sleeps a moment with it released (a HANG rule), then re-reads the scenario. */
static void hang_a_moment(void) {
    struct timespec nap = {0, 5000000L};
    pthread_mutex_unlock(&g_lock);
    nanosleep(&nap, NULL);
    pthread_mutex_lock(&g_lock);
    reload();
}

/* Lock held: initialisation and the system-level error rules for `fn` (HANG waited out). */
static nvmlReturn_t sys_check(const char *fn) {
    for (;;) {
        if (!g_init) {
            return NVML_ERROR_UNINITIALIZED;
        }
        if (g_scn == NULL) {
            return NVML_ERROR_DRIVER_NOT_LOADED;
        }
        int code;
        if (!rule_for(g_scn->rules, g_scn->nrule, fn, 1, &code)) {
            return NVML_SUCCESS;
        }
        if (code != FAKE_HANG) {
            return code;
        }
        hang_a_moment();
    }
}

/* Lock held: device `index`'s error rule for `fn` into `code` (1 if there is one; HANG
 * waited out, the system rules checked again after it). */
static int dev_rule(unsigned int index, const char *fn, nvmlReturn_t *code) {
    for (;;) {
        nvmlReturn_t r = sys_check(fn);
        if (r != NVML_SUCCESS) {
            *code = r;
            return 1;
        }
        if ((int)index >= g_scn->ndev) {
            return 0;
        }
        const fdev_t *d = &g_scn->devs[index];
        if (!rule_for(d->rules, d->nrule, fn, 0, code) &&
            !rule_for(d->rules, d->nrule, "*", 1, code)) {
            return 0;
        }
        if (*code != FAKE_HANG) {
            return 1;
        }
        hang_a_moment();
    }
}

/* Lock, then check initialisation and the system-level error rules for `fn`. */
static nvmlReturn_t sys_begin(const char *fn) {
    lock();
    return sys_check(fn);
}

/* Lock, then check initialisation, the handle and the error rules for `fn`. */
static nvmlReturn_t dev_begin(const char *fn, nvmlDevice_t h, fdev_t **out) {
    lock();
    nvmlReturn_t r = sys_check(fn);
    if (r != NVML_SUCCESS) {
        return r;
    }
    if (h == NULL || h < g_handles || h >= g_handles + MAX_DEVICES) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (dev_rule(h->index, fn, &r)) {
        return r;
    }
    if ((int)h->index >= g_scn->ndev) {
        return NVML_ERROR_GPU_IS_LOST;
    }
    *out = &g_scn->devs[h->index];
    return NVML_SUCCESS;
}

#define DEVICE_CALL(fn, handle)                                                    \
    fdev_t *d = NULL;                                                              \
    do {                                                                           \
        nvmlReturn_t begin_ = dev_begin(fn, handle, &d);                           \
        if (begin_ != NVML_SUCCESS) {                                              \
            return unlock_ret(begin_);                                             \
        }                                                                          \
    } while (0)

static nvmlReturn_t copy_string(char *dst, unsigned int length, const char *src) {
    if (dst == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (strlen(src) + 1 > length) {
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    memcpy(dst, src, strlen(src) + 1);
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------ test-only helpers */

EXPORT void fakenvml_reset(void) {
    pthread_mutex_lock(&g_lock);
    g_init = 0;
    g_have_stamp = 0;
    free(g_scn);
    g_scn = NULL;
    pthread_mutex_unlock(&g_lock);
}

EXPORT unsigned long long fakenvml_calls(void) {
    pthread_mutex_lock(&g_lock);
    unsigned long long n = g_calls;
    pthread_mutex_unlock(&g_lock);
    return n;
}

/* ------------------------------------------------------------ init and system */

static nvmlReturn_t do_init(void) {
    lock();
    if (g_scn == NULL) {
        return unlock_ret(NVML_ERROR_DRIVER_NOT_LOADED);
    }
    if (g_scn->init_error != NVML_SUCCESS) {
        return unlock_ret(g_scn->init_error);
    }
    for (unsigned int i = 0; i < MAX_DEVICES; i++) {
        g_handles[i].index = i;
    }
    g_init++;
    return unlock_ret(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlInit(void) { return do_init(); }
EXPORT nvmlReturn_t nvmlInit_v2(void) { return do_init(); }
EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    return do_init();
}

EXPORT nvmlReturn_t nvmlShutdown(void) {
    lock();
    if (!g_init) {
        return unlock_ret(NVML_ERROR_UNINITIALIZED);
    }
    g_init--;
    return unlock_ret(NVML_SUCCESS);
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    for (size_t i = 0; i < sizeof TEXTS / sizeof TEXTS[0]; i++) {
        if (TEXTS[i].code == result) {
            return TEXTS[i].text;
        }
    }
    return "Unknown Error";
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    nvmlReturn_t r = sys_begin("nvmlSystemGetDriverVersion");
    if (r != NVML_SUCCESS) {
        return unlock_ret(r);
    }
    return unlock_ret(copy_string(version, length, g_scn->driver));
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    nvmlReturn_t r = sys_begin("nvmlSystemGetNVMLVersion");
    if (r != NVML_SUCCESS) {
        return unlock_ret(r);
    }
    return unlock_ret(copy_string(version, length, g_scn->nvml));
}

static nvmlReturn_t get_count(const char *fn, unsigned int *count) {
    nvmlReturn_t r = sys_begin(fn);
    if (r != NVML_SUCCESS) {
        return unlock_ret(r);
    }
    if (count == NULL) {
        return unlock_ret(NVML_ERROR_INVALID_ARGUMENT);
    }
    *count = (unsigned int)g_scn->ndev;
    return unlock_ret(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    return get_count("nvmlDeviceGetCount_v2", count);
}
EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) {
    return get_count("nvmlDeviceGetCount", count);
}

static nvmlReturn_t get_handle(const char *fn, unsigned int index, nvmlDevice_t *device) {
    nvmlReturn_t r = sys_begin(fn);
    if (r != NVML_SUCCESS) {
        return unlock_ret(r);
    }
    if (device == NULL || index >= (unsigned int)g_scn->ndev) {
        return unlock_ret(NVML_ERROR_INVALID_ARGUMENT);
    }
    if (dev_rule(index, fn, &r)) {
        return unlock_ret(r);
    }
    if (index >= (unsigned int)g_scn->ndev) { /* the scenario changed while it hung */
        return unlock_ret(NVML_ERROR_INVALID_ARGUMENT);
    }
    *device = &g_handles[index];
    return unlock_ret(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    return get_handle("nvmlDeviceGetHandleByIndex_v2", index, device);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return get_handle("nvmlDeviceGetHandleByIndex", index, device);
}

/* ------------------------------------------------------------ identity */

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    DEVICE_CALL("nvmlDeviceGetUUID", device);
    return unlock_ret(copy_string(uuid, length, d->uuid));
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    DEVICE_CALL("nvmlDeviceGetName", device);
    return unlock_ret(copy_string(name, length, d->name));
}

EXPORT nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t device, char *serial, unsigned int length) {
    DEVICE_CALL("nvmlDeviceGetSerial", device);
    return unlock_ret(copy_string(serial, length, d->serial));
}

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    DEVICE_CALL("nvmlDeviceGetIndex", device);
    if (index == NULL) {
        return unlock_ret(NVML_ERROR_INVALID_ARGUMENT);
    }
    *index = device->index;
    return unlock_ret(NVML_SUCCESS);
}

static nvmlReturn_t fill_pci(const fdev_t *d, nvmlPciInfo_t *pci) {
    unsigned int domain = 0, bus = 0, dev = 0, func = 0;
    if (pci == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    memset(pci, 0, sizeof *pci);
    if (sscanf(d->pci, "%x:%x:%x.%x", &domain, &bus, &dev, &func) != 4) {
        return NVML_ERROR_UNKNOWN;
    }
    pci->domain = domain;
    pci->bus = bus;
    pci->device = dev;
    pci->pciDeviceId = 0x233010DE;
    pci->pciSubSystemId = 0x16C110DE;
    snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.%X", domain, bus, dev, func);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.%X", domain & 0xFFFF,
             bus, dev, func);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    DEVICE_CALL("nvmlDeviceGetPciInfo_v3", device);
    return unlock_ret(fill_pci(d, pci));
}

/* ------------------------------------------------------------ gauges */

EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *u) {
    DEVICE_CALL("nvmlDeviceGetUtilizationRates", device);
    if (u == NULL) {
        return unlock_ret(NVML_ERROR_INVALID_ARGUMENT);
    }
    u->gpu = d->util_gpu;
    u->memory = d->util_mem;
    return unlock_ret(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *m) {
    DEVICE_CALL("nvmlDeviceGetMemoryInfo", device);
    if (m == NULL) {
        return unlock_ret(NVML_ERROR_INVALID_ARGUMENT);
    }
    /* v1 counts the reserved memory as used */
    m->total = d->mem_total;
    m->free = d->mem_free;
    m->used = d->mem_used + d->mem_reserved;
    return unlock_ret(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *m) {
    DEVICE_CALL("nvmlDeviceGetMemoryInfo_v2", device);
    if (m == NULL) {
        return unlock_ret(NVML_ERROR_INVALID_ARGUMENT);
    }
    if (m->version != NVML_MEMORY_V2) {
        return unlock_ret(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    }
    m->total = d->mem_total;
    m->reserved = d->mem_reserved;
    m->free = d->mem_free;
    m->used = d->mem_used;
    return unlock_ret(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensor, unsigned int *t) {
    DEVICE_CALL("nvmlDeviceGetTemperature", device);
    if (t == NULL || sensor != 0) {
        return unlock_ret(NVML_ERROR_INVALID_ARGUMENT);
    }
    *t = d->temperature;
    return unlock_ret(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    DEVICE_CALL("nvmlDeviceGetPowerUsage", device);
    if (power == NULL) {
        return unlock_ret(NVML_ERROR_INVALID_ARGUMENT);
    }
    *power = d->power_mw;
    return unlock_ret(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device,
                                                        unsigned long long *energy) {
    DEVICE_CALL("nvmlDeviceGetTotalEnergyConsumption", device);
    if (energy == NULL) {
        return unlock_ret(NVML_ERROR_INVALID_ARGUMENT);
    }
    *energy = d->energy_mj;
    return unlock_ret(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, int errorType,
                                                int counterType, unsigned long long *count) {
    DEVICE_CALL("nvmlDeviceGetTotalEccErrors", device);
    if (count == NULL || errorType < 0 || errorType > 1 || counterType < 0 || counterType > 1) {
        return unlock_ret(NVML_ERROR_INVALID_ARGUMENT);
    }
    *count = errorType == 0 ? d->ecc_corrected : d->ecc_uncorrected;
    return unlock_ret(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t device,
                                                              unsigned long long *reasons) {
    DEVICE_CALL("nvmlDeviceGetCurrentClocksThrottleReasons", device);
    if (reasons == NULL) {
        return unlock_ret(NVML_ERROR_INVALID_ARGUMENT);
    }
    *reasons = d->throttle;
    return unlock_ret(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t device,
                                                           unsigned long long *reasons) {
    DEVICE_CALL("nvmlDeviceGetCurrentClocksEventReasons", device);
    if (reasons == NULL) {
        return unlock_ret(NVML_ERROR_INVALID_ARGUMENT);
    }
    *reasons = d->throttle;
    return unlock_ret(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *current,
                                         unsigned int *pending) {
    DEVICE_CALL("nvmlDeviceGetMigMode", device);
    if (current == NULL || pending == NULL) {
        return unlock_ret(NVML_ERROR_INVALID_ARGUMENT);
    }
    *current = d->mig_current;
    *pending = d->mig_pending;
    return unlock_ret(NVML_SUCCESS);
}

/* ------------------------------------------------------------ processes */

static nvmlReturn_t running(const fdev_t *d, int graphics, unsigned int *count,
                            nvmlProcessInfo_v2_t *infos) {
    if (count == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    unsigned int n = 0;
    for (int i = 0; i < d->nproc; i++) {
        n += graphics ? (unsigned)d->procs[i].graphics : (unsigned)d->procs[i].compute;
    }
    if (n == 0) {
        *count = 0;
        return NVML_SUCCESS;
    }
    if (infos == NULL || *count < n) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    unsigned int j = 0;
    for (int i = 0; i < d->nproc; i++) {
        const fproc_t *p = &d->procs[i];
        if (graphics ? p->graphics : p->compute) {
            infos[j].pid = p->pid;
            infos[j].usedGpuMemory = p->used;
            infos[j].gpuInstanceId = NO_INSTANCE;
            infos[j].computeInstanceId = NO_INSTANCE;
            j++;
        }
    }
    *count = n;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device,
                                                            unsigned int *count,
                                                            nvmlProcessInfo_v2_t *infos) {
    DEVICE_CALL("nvmlDeviceGetComputeRunningProcesses_v3", device);
    return unlock_ret(running(d, 0, count, infos));
}

EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t device,
                                                             unsigned int *count,
                                                             nvmlProcessInfo_v2_t *infos) {
    DEVICE_CALL("nvmlDeviceGetGraphicsRunningProcesses_v3", device);
    return unlock_ret(running(d, 1, count, infos));
}

static unsigned long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL;
}

EXPORT nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t device,
                                                    nvmlProcessUtilizationSample_t *samples,
                                                    unsigned int *count,
                                                    unsigned long long lastSeenTimeStamp) {
    DEVICE_CALL("nvmlDeviceGetProcessUtilization", device);
    if (count == NULL) {
        return unlock_ret(NVML_ERROR_INVALID_ARGUMENT);
    }
    unsigned long long ts = now_us();
    unsigned int n = 0;
    if (ts > lastSeenTimeStamp) {
        for (int i = 0; i < d->nproc; i++) {
            n += (unsigned)d->procs[i].has_util;
        }
    }
    if (n == 0) {
        *count = 0;
        return unlock_ret(NVML_ERROR_NOT_FOUND);
    }
    if (samples == NULL || *count < n) {
        *count = n;
        return unlock_ret(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    unsigned int j = 0;
    for (int i = 0; i < d->nproc; i++) {
        const fproc_t *p = &d->procs[i];
        if (p->has_util) {
            samples[j].pid = p->pid;
            samples[j].timeStamp = ts;
            samples[j].smUtil = p->sm;
            samples[j].memUtil = p->mem;
            samples[j].encUtil = 0;
            samples[j].decUtil = 0;
            j++;
        }
    }
    *count = n;
    return unlock_ret(NVML_SUCCESS);
}

/* ------------------------------------------------------------ events */

static unsigned long long max_seq(void) {
    unsigned long long m = 0;
    for (int i = 0; g_scn && i < g_scn->nxid; i++) {
        if (g_scn->xids[i].seq > m) {
            m = g_scn->xids[i].seq;
        }
    }
    return m;
}

EXPORT nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    nvmlReturn_t r = sys_begin("nvmlEventSetCreate");
    if (r != NVML_SUCCESS) {
        return unlock_ret(r);
    }
    if (set == NULL) {
        return unlock_ret(NVML_ERROR_INVALID_ARGUMENT);
    }
    nvmlEventSet_t s = calloc(1, sizeof *s);
    if (s == NULL) {
        return unlock_ret(NVML_ERROR_MEMORY);
    }
    s->last_seq = max_seq();
    *set = s;
    return unlock_ret(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    lock();
    if (!g_init) {
        return unlock_ret(NVML_ERROR_UNINITIALIZED);
    }
    if (set == NULL) {
        return unlock_ret(NVML_ERROR_INVALID_ARGUMENT);
    }
    free(set);
    return unlock_ret(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device,
                                                     unsigned long long *types) {
    DEVICE_CALL("nvmlDeviceGetSupportedEventTypes", device);
    if (types == NULL) {
        return unlock_ret(NVML_ERROR_INVALID_ARGUMENT);
    }
    *types = d->events;
    return unlock_ret(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long types,
                                             nvmlEventSet_t set) {
    DEVICE_CALL("nvmlDeviceRegisterEvents", device);
    if (set == NULL) {
        return unlock_ret(NVML_ERROR_INVALID_ARGUMENT);
    }
    if (types & ~d->events) {
        return unlock_ret(NVML_ERROR_NOT_SUPPORTED);
    }
    set->mask[device->index] |= types;
    return unlock_ret(NVML_SUCCESS);
}

/* One look at the scenario for the wait below. Lock held. */
static nvmlReturn_t poll_events(nvmlEventSet_t set, nvmlEventData_t *data) {
    if (!g_init) {
        return NVML_ERROR_UNINITIALIZED;
    }
    if (g_scn == NULL) {
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    int code;
    if (rule_for(g_scn->rules, g_scn->nrule, "nvmlEventSetWait_v2", 1, &code)) {
        return code;
    }
    const fxid_t *best = NULL;
    for (int i = 0; i < g_scn->ndev; i++) {
        const fdev_t *d = &g_scn->devs[i];
        if (set->mask[i] == 0) {
            continue;
        }
        if (rule_for(d->rules, d->nrule, "nvmlEventSetWait_v2", 1, &code) &&
            code == NVML_ERROR_GPU_IS_LOST) {
            return code;
        }
    }
    for (int i = 0; i < g_scn->nxid; i++) {
        const fxid_t *x = &g_scn->xids[i];
        if (x->seq > set->last_seq && (set->mask[x->dev] & NVML_EVENT_TYPE_XID_CRITICAL) &&
            (best == NULL || x->seq < best->seq)) {
            best = x;
        }
    }
    if (best == NULL) {
        return NVML_ERROR_TIMEOUT;
    }
    set->last_seq = best->seq;
    data->device = &g_handles[best->dev];
    data->eventType = NVML_EVENT_TYPE_XID_CRITICAL;
    data->eventData = best->code;
    data->gpuInstanceId = NO_INSTANCE;
    data->computeInstanceId = NO_INSTANCE;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data,
                                        unsigned int timeoutms) {
    if (set == NULL || data == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        lock();
        nvmlReturn_t r = poll_events(set, data);
        pthread_mutex_unlock(&g_lock);
        if (r != NVML_ERROR_TIMEOUT) {
            return r;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long waited = (now.tv_sec - start.tv_sec) * 1000LL +
                           (now.tv_nsec - start.tv_nsec) / 1000000LL;
        if (waited >= (long long)timeoutms) {
            return NVML_ERROR_TIMEOUT;
        }
        long long left = (long long)timeoutms - waited;
        struct timespec nap = {0, (left < 5 ? left : 5) * 1000000L};
        nanosleep(&nap, NULL);
    }
}
