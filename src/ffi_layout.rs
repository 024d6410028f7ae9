//! The C ABI's layouts, pinned: the size and every field offset of each
//! struct of `include/mooncake_flagcx.h`, against literal numbers, checked at
//! compile time on LP64 targets (x86_64, aarch64). A reordered, resized or
//! inserted field fails the build; the structs only ever grow at the end
//! (then add the new field here). Each field must also end where the next
//! one starts and the last one at the struct's end: no padding holes.
//! cpp_tests/abi/layout_check.c asserts the same numbers from C.

#[cfg(target_pointer_width = "64")]
mod lp64 {
    use crate::ffi::{mcfx_api_v1, mcfx_config, mcfx_op, mcfx_region, mcfx_stats};
    use std::mem::{offset_of, size_of};

    /// The size of a field, from a projection of it (never called).
    const fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
        size_of::<F>()
    }

    /// `pin!(Struct, size; field offset, ...)`: the fields in order.
    macro_rules! pin {
        ($t:ty, $size:literal; $($f:ident $off:literal),+ $(,)?) => {
            const _: () = {
                assert!(size_of::<$t>() == $size, concat!("size of ", stringify!($t)));
                let mut end = 0;
                $(
                    assert!(offset_of!($t, $f) == $off,
                        concat!("offset of ", stringify!($t), ".", stringify!($f)));
                    assert!($off == end,
                        concat!("padding before ", stringify!($t), ".", stringify!($f)));
                    end = $off + field_size(|s: &$t| &s.$f);
                )+
                assert!(end == $size, concat!("padding at the end of ", stringify!($t)));
            };
        };
    }

    pin!(mcfx_config, 112;
        struct_size 0, abi_version 4, on_complete 8, complete_ctx 16, resolve 24,
        resolve_ctx 32, queue_capacity 40, submit_wait_us 44, op_timeout_ms 48,
        connect_timeout_ms 52, spin_grace_us 56, max_batch 60, max_slice_bytes 64,
        connect_threads 72, shutdown_timeout_ms 76, flags 80, log_level 84, log 88,
        log_ctx 96, max_in_flight 104, max_regions 108);

    pin!(mcfx_op, 48;
        opcode 0, reserved 4, local_addr 8, length 16, peer_id 24, remote_addr 32,
        user_data 40);

    pin!(mcfx_region, 16; addr 0, length 8);

    pin!(mcfx_stats, 120;
        struct_size 0, reserved 4, submitted 8, completed 16, failed 24, timed_out 32,
        canceled 40, bytes 48, queue_full 56, wakeups 64, connects 72, connect_failures 80,
        reconnects 88, flagcx_transfers 96, callback_panics 104, in_flight 112);

    pin!(mcfx_api_v1, 128;
        abi_version 0, struct_size 4, impl_name 8, strerror 16, last_error 24,
        config_init 32, create 40, destroy 48, local_endpoint 56, register_memory 64,
        unregister_memory 72, register_batch 80, unregister_batch 88, submit 96,
        get_stats 104, capabilities 112, progress 120);
}
