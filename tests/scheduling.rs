//! The progress thread's scheduling attributes: a short slice (so a woken
//! progress thread is not kept off a CPU by a caller spinning for its
//! completions), with the creating thread's policy and nice value kept.
//!
//! One test in its own binary: it changes the nice value of the thread that
//! creates the transport, which nothing else here may see.

#![cfg(target_os = "linux")]

use std::time::Duration;

use mooncake_flagcx::{Config, Transport};

/// The tids of this process's threads named `name`.
fn threads_named(name: &str) -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|tid| {
            std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                .is_ok_and(|c| c.trim_end() == name)
        })
        .collect()
}

/// A field of `/proc/self/task/<tid>/sched` (only kernels built with
/// scheduler debugging have the file; only EEVDF kernels have `se.slice`).
fn sched_field(tid: i32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/sched")).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == field).then(|| v.trim().parse().ok())?
    })
}

#[test]
fn the_progress_thread_asks_for_a_short_slice_and_keeps_its_policy_and_nice_value() {
    // Threads inherit the nice value of the thread that creates them; the
    // progress thread's scheduler call must keep it (raising nice needs no
    // privilege).
    // SAFETY: setpriority on this thread (who = 0 with PRIO_PROCESS is the
    // calling thread on Linux); no pointers.
    let set = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 7) };
    assert_eq!(set, 0, "setpriority: {}", std::io::Error::last_os_error());
    let t = Transport::create(
        Config { serve_peers: false, ..Config::default() },
        Box::new(|_, _| {}),
        Box::new(|_| Err("no peers here".into())),
    )
    .expect("create");
    // The thread names itself and sets its slice before it takes any work;
    // wait (bounded) until it shows up named.
    let mut tids = Vec::new();
    for _ in 0..2000 {
        tids = threads_named("mcfx-progress");
        if !tids.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(tids.len(), 1, "one progress thread");
    let tid = tids[0];
    // SAFETY: getpriority of a thread of this process; no pointers.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) };
    assert_eq!(nice, 7, "the progress thread kept the creator's nice value");
    // SAFETY: sched_getscheduler of a thread of this process; no pointers.
    let policy = unsafe { libc::sched_getscheduler(tid) };
    assert_eq!(policy, libc::SCHED_OTHER, "the progress thread kept the normal policy");
    // The slice is set from the thread itself as it starts: wait (bounded)
    // for it where the kernel reports it.
    if sched_field(tid, "se.slice").is_some() {
        let mut slice = None;
        for _ in 0..2000 {
            slice = sched_field(tid, "se.slice");
            if slice == Some(100_000) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(slice, Some(100_000), "the progress thread's slice, in ns");
    } else {
        eprintln!("this kernel does not report se.slice: slice not checked");
    }
    drop(t);
}
