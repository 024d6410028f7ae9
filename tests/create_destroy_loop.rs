//! Create/destroy in a loop leaves no thread behind. Alone in its binary:
//! it counts the process's threads, and libtest starts threads for the other
//! tests of a binary while they wait for the serial lock.

mod common;

use common::*;

#[test]
fn create_and_destroy_in_a_loop_leaves_nothing_behind() {
    let _g = serial();
    let threads_before = thread_count();
    for i in 0..50 {
        let p = Pair::new(64);
        p.a.submit_ok(&[p.write(64, i)]);
        assert_eq!(p.a.done.wait_one(i, LIMIT), OK);
    }
    // Every transport thread (progress, connectors, FlagCX accept) is gone.
    // (Threads leave /proc a moment after they are joined.)
    wait_until(|| thread_count() <= threads_before, "transport threads left behind");
    assert_eq!(thread_count(), threads_before);
    assert_no_violations();
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}
