/* The C ABI's layouts as a C11 compiler sees include/mooncake_flagcx.h: the
 * size and every field offset of each struct, against the same literal
 * numbers src/ffi_layout.rs pins on the Rust side (LP64: x86_64, aarch64).
 * Compiling this file is the check; running it prints one line. The structs
 * only ever grow at the end: a new field gets a new line here and there. */
#include <stddef.h>
#include <stdio.h>

#include "mooncake_flagcx.h"

#if UINTPTR_MAX == UINT64_MAX

#define SIZE(T, n) _Static_assert(sizeof(T) == (n), "size of " #T)
#define AT(T, f, n) _Static_assert(offsetof(T, f) == (n), "offset of " #T "." #f)

SIZE(mcfx_config, 112);
AT(mcfx_config, struct_size, 0);
AT(mcfx_config, abi_version, 4);
AT(mcfx_config, on_complete, 8);
AT(mcfx_config, complete_ctx, 16);
AT(mcfx_config, resolve, 24);
AT(mcfx_config, resolve_ctx, 32);
AT(mcfx_config, queue_capacity, 40);
AT(mcfx_config, submit_wait_us, 44);
AT(mcfx_config, op_timeout_ms, 48);
AT(mcfx_config, connect_timeout_ms, 52);
AT(mcfx_config, spin_grace_us, 56);
AT(mcfx_config, max_batch, 60);
AT(mcfx_config, max_slice_bytes, 64);
AT(mcfx_config, connect_threads, 72);
AT(mcfx_config, shutdown_timeout_ms, 76);
AT(mcfx_config, flags, 80);
AT(mcfx_config, log_level, 84);
AT(mcfx_config, log, 88);
AT(mcfx_config, log_ctx, 96);
AT(mcfx_config, max_in_flight, 104);
AT(mcfx_config, max_regions, 108);

SIZE(mcfx_op, 48);
AT(mcfx_op, opcode, 0);
AT(mcfx_op, reserved, 4);
AT(mcfx_op, local_addr, 8);
AT(mcfx_op, length, 16);
AT(mcfx_op, peer_id, 24);
AT(mcfx_op, remote_addr, 32);
AT(mcfx_op, user_data, 40);

SIZE(mcfx_region, 16);
AT(mcfx_region, addr, 0);
AT(mcfx_region, length, 8);

SIZE(mcfx_stats, 120);
AT(mcfx_stats, struct_size, 0);
AT(mcfx_stats, reserved, 4);
AT(mcfx_stats, submitted, 8);
AT(mcfx_stats, completed, 16);
AT(mcfx_stats, failed, 24);
AT(mcfx_stats, timed_out, 32);
AT(mcfx_stats, canceled, 40);
AT(mcfx_stats, bytes, 48);
AT(mcfx_stats, queue_full, 56);
AT(mcfx_stats, wakeups, 64);
AT(mcfx_stats, connects, 72);
AT(mcfx_stats, connect_failures, 80);
AT(mcfx_stats, reconnects, 88);
AT(mcfx_stats, flagcx_transfers, 96);
AT(mcfx_stats, callback_panics, 104);
AT(mcfx_stats, in_flight, 112);

SIZE(mcfx_api_v1, 128);
AT(mcfx_api_v1, abi_version, 0);
AT(mcfx_api_v1, struct_size, 4);
AT(mcfx_api_v1, impl_name, 8);
AT(mcfx_api_v1, strerror, 16);
AT(mcfx_api_v1, last_error, 24);
AT(mcfx_api_v1, config_init, 32);
AT(mcfx_api_v1, create, 40);
AT(mcfx_api_v1, destroy, 48);
AT(mcfx_api_v1, local_endpoint, 56);
AT(mcfx_api_v1, register_memory, 64);
AT(mcfx_api_v1, unregister_memory, 72);
AT(mcfx_api_v1, register_batch, 80);
AT(mcfx_api_v1, unregister_batch, 88);
AT(mcfx_api_v1, submit, 96);
AT(mcfx_api_v1, get_stats, 104);
AT(mcfx_api_v1, capabilities, 112);
AT(mcfx_api_v1, progress, 120);

/* The enums the structs and callbacks carry are int-sized. */
_Static_assert(sizeof(mcfx_status) == 4, "size of mcfx_status");
_Static_assert(sizeof(mcfx_log_level) == 4, "size of mcfx_log_level");
_Static_assert(MCFX_LOG_ERROR == 1 && MCFX_LOG_WARN == 2 && MCFX_LOG_INFO == 3 &&
                   MCFX_LOG_DEBUG == 4 && MCFX_LOG_TRACE == 5,
               "mcfx_log_level values");

int main(void) {
  puts("mooncake_flagcx.h layouts: as pinned");
  return 0;
}

#else
int main(void) {
  puts("not an LP64 target: layouts not checked");
  return 0;
}
#endif
