/* libcublas.so.12 shim: the 8 cuBLAS entry points faiss-gpu-cu12 calls, forwarded to the CUDA 13 cuBLAS
   present on the device machine (whose symbols carry the libcublas.so.13 version node). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
static void *h;
static void *sym(const char *name) {
  if (!h) h = dlopen("libcublas.so.13", RTLD_NOW | RTLD_GLOBAL);
  if (!h) { fprintf(stderr, "cublas shim: %s\n", dlerror()); abort(); }
  void *f = dlsym(h, name);
  if (!f) { fprintf(stderr, "cublas shim: no %s\n", name); abort(); }
  return f;
}
#define FWD(ret, name, params, args) \
  ret name params { static ret (*f) params; if (!f) f = (ret (*) params) sym(#name); return f args; }
typedef long long ll;
FWD(int, cublasCreate_v2, (void **h_), (h_))
FWD(int, cublasDestroy_v2, (void *h_), (h_))
FWD(int, cublasSetStream_v2, (void *h_, void *s), (h_, s))
FWD(int, cublasGetMathMode, (void *h_, int *m), (h_, m))
FWD(int, cublasSetMathMode, (void *h_, int m), (h_, m))
FWD(int, cublasSgemmEx,
    (void *h_, int ta, int tb, int m, int n, int k, const float *al, const void *A, int At, int lda,
     const void *B, int Bt, int ldb, const float *be, void *C, int Ct, int ldc),
    (h_, ta, tb, m, n, k, al, A, At, lda, B, Bt, ldb, be, C, Ct, ldc))
FWD(int, cublasGemmEx,
    (void *h_, int ta, int tb, int m, int n, int k, const void *al, const void *A, int At, int lda,
     const void *B, int Bt, int ldb, const void *be, void *C, int Ct, int ldc, int ct, int algo),
    (h_, ta, tb, m, n, k, al, A, At, lda, B, Bt, ldb, be, C, Ct, ldc, ct, algo))
FWD(int, cublasGemmStridedBatchedEx,
    (void *h_, int ta, int tb, int m, int n, int k, const void *al, const void *A, int At, int lda, ll sA,
     const void *B, int Bt, int ldb, ll sB, const void *be, void *C, int Ct, int ldc, ll sC, int bc, int ct,
     int algo),
    (h_, ta, tb, m, n, k, al, A, At, lda, sA, B, Bt, ldb, sB, be, C, Ct, ldc, sC, bc, ct, algo))
