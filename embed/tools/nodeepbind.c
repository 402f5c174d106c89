/* For the sanitizer build only (CMUNEXT_SANITIZE): TBB, inside OpenVINO, dlopens libtbbbind with
 * RTLD_DEEPBIND, which AddressSanitizer refuses (it aborts the process). Preloaded, this drops the
 * flag and hands the call on to the next dlopen (ASan's):
 *   LD_PRELOAD=libcmunext_nodeepbind.so ASAN_OPTIONS=verify_asan_link_order=0 ./cmunext_segment ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>

void* dlopen(const char* file, int mode) {
    static void* (*next)(const char*, int);
    if (!next) next = (void* (*)(const char*, int))dlsym(RTLD_NEXT, "dlopen");
    return next(file, mode & ~RTLD_DEEPBIND);
}
