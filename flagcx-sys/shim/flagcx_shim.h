// fxs_: a C face for FlagCX's C++ P2P engine API.
//
// FlagCX exports global-namespace C++ functions that take std::vector
// arguments, which neither C nor Rust can call. This shim restates the calls
// the transport needs as extern "C" functions with plain arguments. Rules:
//   - every function returns an fxs_status (or a value with a stated sentinel);
//   - no C++ exception ever leaves a shim function;
//   - transfers are built in entry lists (fxs_list_*) that keep their
//     capacity, so after warm-up a WriteVector does not touch the heap (a
//     by-value ReadVector still copies: FlagCX's signature forces that copy
//     on every caller).

#ifndef FLAGCX_SHIM_H_
#define FLAGCX_SHIM_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fxs_status {
  FXS_OK = 0,
  FXS_INVALID = -1,   // the shim rejected an argument (NULL, 0 length, ...)
  FXS_FLAGCX = -2,    // FlagCX returned an error code or NULL
  FXS_EXCEPTION = -3, // a C++ exception was caught (e.g. std::bad_alloc)
} fxs_status;

// Layout-identical to FlagcxP2pRdmaDesc (static_assert in the shim).
typedef struct fxs_desc {
  uint64_t addr;
  uint32_t size;
  uint32_t rkey;
  uint32_t nmsgs;
  uint32_t rid;
  uint64_t idx;
  char padding[32];
} fxs_desc;

// Outcome of one status poll.
typedef enum fxs_poll_result {
  FXS_POLL_PENDING = 0,
  FXS_POLL_DONE = 1,
  FXS_POLL_FAILED = 2, // only reported when the provider can tell
} fxs_poll_result;

// Engine. Handles are FlagCX's own pointers, passed through untouched.
fxs_status fxs_engine_create(void **engine_out);
void fxs_engine_destroy(void *engine);
void fxs_engine_stop_accept(void *engine);
fxs_status fxs_engine_start_rpc_server(void *engine);
// Port, or -1.
int fxs_engine_rpc_port(void *engine);
// Copies "host:port?gpu?notif" into buf (NUL-terminated when it fits) and
// stores its length without the NUL in *len. FXS_INVALID when cap is too small
// (*len still tells the size needed).
fxs_status fxs_engine_metadata(void *engine, char *buf, size_t cap,
                               size_t *len);

// Connections (owned by the caller: fxs_conn_destroy).
fxs_status fxs_connect(void *engine, const char *ip, int remote_gpu,
                       int remote_port, void **conn_out);
void fxs_conn_destroy(void *conn);

// Memory registration.
fxs_status fxs_reg(void *engine, uintptr_t addr, size_t len, uint64_t *mr_out);
void fxs_mr_destroy(void *engine, uint64_t mr);
fxs_status fxs_make_desc(void *conn, uint64_t remote_addr, uint32_t len,
                         fxs_desc *desc_out);

// Transfers (non-blocking), through entry lists: the argument vectors of a
// vector call, built entry by entry in FlagCX's own layout (no entry array
// to convert, no thread-local lookup). A list belongs to one thread at a time; its vectors keep their
// capacity, so after warm-up building and issuing a call allocates nothing.
// NULL when out of memory.
void *fxs_list_create(void);
void fxs_list_destroy(void *list);
// Appends one entry moving `len` bytes between local `local` (inside region
// `mr`) and the remote range at `remote_addr`, whose descriptor FlagCX
// makes in place (from `conn`'s snapshot of the peer's regions). On any
// error nothing is appended.
fxs_status fxs_list_push(void *list, void *conn, uint64_t mr, void *local,
                         uint32_t len, uint64_t remote_addr);
// Drops the entries from index `n` on.
void fxs_list_truncate(void *list, size_t n);
// One vector call of every entry of the list (at least one); the list is
// empty afterwards, whatever the outcome.
fxs_status fxs_list_write(void *conn, void *list, uint64_t *id_out);
fxs_status fxs_list_read(void *conn, void *list, uint64_t *id_out);

// Polls one transfer once. Returns an fxs_poll_result value, or a negative
// fxs_status. After DONE or FAILED the id must never be polled again.
int fxs_poll(void *conn, uint64_t id);

// 1 when the provider tells failed transfers apart (flagcxSwXferResult was
// found at run time), 0 with real FlagCX.
int fxs_reports_failures(void);

#ifdef __cplusplus
}
#endif

#endif // FLAGCX_SHIM_H_
