//! The progress thread's CPU affinity: pinned to its CPU while it sleeps (so
//! a wake-up finds it where it slept, not queued behind the waker), and its
//! own affinity again whenever it runs.

#![cfg(target_os = "linux")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{assert_napping, wait_until};
use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::{Config, OpRequest, Opcode, Transport};

/// CPUs in the calling thread's affinity mask.
fn my_cpu_count() -> usize {
    // SAFETY: an all-zero cpu_set_t is valid; pid 0 is this thread and the
    // set is `size_of` writable bytes.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set), 0);
        libc::CPU_COUNT(&set) as usize
    }
}

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

/// The tid of the one transport's progress thread, once it has started.
fn the_progress_thread() -> i32 {
    let mut tids = Vec::new();
    wait_until(
        || {
            tids = threads_named("mcfx-progress");
            !tids.is_empty()
        },
        "the progress thread",
    );
    assert_eq!(tids.len(), 1, "one progress thread");
    tids[0]
}

/// `Cpus_allowed_list` of a thread of this process, e.g. "0-1" or "1".
fn allowed_list(tid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list")
        .trim()
        .to_owned()
}

/// The tests look threads up by name: one transport at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn the_progress_thread_is_pinned_only_while_it_sleeps() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cpus = my_cpu_count();
    // What each completion callback (run on the progress thread, just
    // woken) sees of its own affinity.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let t = Transport::create(
        Config { serve_peers: false, spin_grace: Duration::from_micros(10), ..Config::default() },
        Box::new(move |_, _| s.lock().unwrap().push(my_cpu_count())),
        Box::new(|_| Err("no peers here".into())),
    )
    .expect("create");
    let buf = AlignedBuf::new(4096);
    // SAFETY: `buf` outlives the transport (dropped after it below).
    unsafe { t.register(buf.addr(), buf.len()).expect("register") };
    let tid = the_progress_thread();
    // An op for a peer nobody can resolve: it completes (MCFX_E_RESOLVE)
    // on the progress thread, which the submit woke.
    let mut sent = 0u64;
    let mut wake_it = || {
        let op = OpRequest {
            opcode: Opcode::Write,
            local: buf.addr(),
            len: 64,
            peer: 1 + sent,
            remote: 0x1000,
            user_data: sent,
        };
        let mut accepted = 0;
        t.submit(&[op], &mut accepted).expect("submit");
        sent += 1;
        wait_until(|| seen.lock().unwrap().len() as u64 >= sent, "the completion");
    };
    for _round in 0..3 {
        if cpus > 1 {
            // Idle past its grace, it sleeps pinned to one CPU. Unless it saw
            // itself preempted in the last second (a busy machine): then it
            // sleeps unpinned, and an op that wakes it lets it decide again.
            let until = std::time::Instant::now() + common::LIMIT;
            let mut polls = 0;
            while allowed_list(tid).contains([',', '-']) {
                assert!(std::time::Instant::now() < until, "the parked thread's pin");
                std::thread::sleep(Duration::from_millis(1));
                polls += 1;
                if polls % 200 == 0 {
                    wake_it();
                }
            }
        }
        wake_it();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec![cpus; sent as usize], "awake, the progress thread runs on all its CPUs");
    drop(t);
    drop(buf);
}

#[test]
fn with_pinning_off_the_parked_progress_thread_keeps_its_affinity() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cpus = my_cpu_count();
    if cpus < 2 {
        return; // one CPU: a pin would not show
    }
    let t = Transport::create(
        Config {
            serve_peers: false,
            spin_grace: Duration::from_micros(10),
            pin_asleep: false,
            ..Config::default()
        },
        Box::new(|_, _| {}),
        Box::new(|_| Err("no peers here".into())),
    )
    .expect("create");
    let tid = the_progress_thread();
    // Idle after 10 us, it sleeps for nearly all of these 200 samples over
    // at least 200 ms; with pinning on, every sample would show one CPU.
    for _ in 0..200 {
        let list = allowed_list(tid);
        assert!(list.contains([',', '-']), "pinned while asleep: {list}");
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(t);
}

/// Lets the silent resolver return when dropped.
struct Release(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl Drop for Release {
    fn drop(&mut self) {
        let (released, wake) = &*self.0;
        *released.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
    }
}

/// What a transport must look at later, but not at once (an op waiting for
/// a peer that does not answer; the summary of a burst of failures, due
/// seconds later), costs naps, not a spinning core: a serving host keeps
/// dead peers in its list for as long as their timeouts.
#[test]
fn waiting_for_a_peer_or_a_due_failure_summary_the_progress_thread_naps() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const SILENT: u64 = 1;
    const UNKNOWN: u64 = 7;
    let release = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let r = Arc::clone(&release);
    let done = Arc::new(Mutex::new(Vec::new()));
    let d = Arc::clone(&done);
    let t = Transport::create(
        Config {
            serve_peers: false,
            spin_grace: Duration::from_micros(10),
            connect_timeout: Duration::from_secs(120),
            op_timeout: Duration::from_secs(120),
            ..Config::default()
        },
        Box::new(move |user_data, status| d.lock().unwrap().push((user_data, status))),
        Box::new(move |peer| {
            if peer == SILENT {
                // Never answers until the test ends.
                let (released, wake) = &*r;
                let mut go = released.lock().unwrap();
                while !*go {
                    go = wake.wait(go).unwrap();
                }
            }
            Err("no such peer".into())
        }),
    )
    .expect("create");
    // Declared after the transport, so dropped before it, also when an
    // assertion fails: destroy waits for a resolver call to return.
    let _release = Release(Arc::clone(&release));
    let buf = AlignedBuf::new(4096);
    // SAFETY: `buf` outlives the transport (dropped after it below).
    unsafe { t.register(buf.addr(), buf.len()).expect("register") };
    let tid = the_progress_thread();
    let op = |peer, user_data| OpRequest {
        opcode: Opcode::Write,
        local: buf.addr(),
        len: 64,
        peer,
        remote: 0x1000,
        user_data,
    };
    let mut accepted = 0;
    t.submit(&[op(SILENT, 0)], &mut accepted).expect("submit");
    assert_napping(tid, "an op waiting for a peer that does not answer");
    // Three failures for one peer: the first is logged, the others are
    // summarized once the interval has passed (seconds).
    for i in 1..=3 {
        t.submit(&[op(UNKNOWN, i)], &mut accepted).expect("submit");
        wait_until(|| done.lock().unwrap().len() as u64 >= i, "the failure");
    }
    assert_napping(tid, "failures waiting for their summary");
    assert!(done.lock().unwrap().iter().all(|&(u, _)| u != 0), "the silent peer's op still waits");
    drop(_release);
    drop(t);
    drop(buf);
    let done = done.lock().unwrap();
    assert_eq!(done.len(), 4, "every op completed once: {done:?}");
}
