//! Out of file descriptors (the soft `RLIMIT_NOFILE` reached, as a server
//! with many sockets open reaches it): every call answers with a documented
//! status, every op completes exactly once, nothing aborts; once
//! descriptors are free again, the same peer is reached and the same calls
//! succeed. The library opens no descriptor itself; FlagCX does (sockets
//! for connects, and the software provider's key table), so this is what a
//! refused `socket()` turns into.
//!
//! The limit is the whole process's: the tests of this binary take turns
//! (`serial`), and the first create of a process (its FlagCX engine and RPC
//! server) runs in a child process of its own.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use flagcx_sys::testing::AlignedBuf;
use mooncake_flagcx::ffi::mcfx_status::{self, *};
use mooncake_flagcx::ffi::{mcfx_log_level, mcfx_register, mcfx_unregister};

/// While alive, no new descriptor can be opened: the soft limit sits at the
/// lowest free descriptor number (every lower one is open). Dropped, the
/// limit is as it was.
struct NoNewDescriptors {
    before: libc::rlimit,
}

impl NoNewDescriptors {
    fn now() -> NoNewDescriptors {
        let mut before = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: a valid resource and a writable rlimit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut before) }, 0);
        // SAFETY: a NUL-terminated path; the descriptor is closed at once.
        let lowest = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        assert!(lowest >= 0, "open /dev/null");
        // SAFETY: the descriptor opened just above.
        unsafe { libc::close(lowest) };
        let limit = libc::rlimit { rlim_cur: lowest as libc::rlim_t, rlim_max: before.rlim_max };
        // SAFETY: as above; lowering the soft limit needs no privilege.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
        // SAFETY: as above.
        let refused =
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        assert_eq!(refused, -1, "a descriptor could still be opened under the limit");
        NoNewDescriptors { before }
    }
}

impl Drop for NoNewDescriptors {
    fn drop(&mut self) {
        // SAFETY: the limits read before; raising the soft limit back up to
        // the hard one needs no privilege.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.before) };
    }
}

/// Asserts `st` is one of `allowed`, naming the call.
fn documented(call: &str, st: mcfx_status, allowed: &[mcfx_status]) {
    assert!(
        allowed.contains(&st),
        "{call} returned {st:?} ({}), not one of {allowed:?}",
        last_error()
    );
}

/// Selects the child role of `the_first_create_without_descriptors_fails_and_the_next_succeeds`.
const CHILD_ENV: &str = "MCFX_FD_LIMIT_CHILD";

/// The process's first transport, out of descriptors: its FlagCX engine
/// cannot open its sockets, so create fails with a documented status and
/// leaves nothing behind; with descriptors again, create succeeds.
#[test]
fn the_first_create_without_descriptors_fails_and_the_next_succeeds() {
    if std::env::var_os(CHILD_ENV).is_some() {
        {
            let _no_fds = NoNewDescriptors::now();
            match Node::try_with(|_| {}) {
                Ok(_) => panic!("create succeeded without a descriptor to spare"),
                Err((st, msg)) => {
                    documented(
                        "mcfx_create",
                        st,
                        &[MCFX_E_FLAGCX, MCFX_E_NO_MEMORY, MCFX_E_INTERNAL],
                    );
                    assert!(msg.contains("file descriptor"), "{st:?}: {msg}");
                    println!("create without descriptors: {st:?}: {msg}");
                }
            }
        }
        let pair = Pair::new(1 << 16);
        pair.a.submit_ok(&[pair.write(4096, 1)]);
        assert_eq!(pair.a.done.wait_one(1, Duration::from_secs(60)), OK, "{}", last_error());
        return;
    }
    let _serial = serial();
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", "the_first_create_without_descriptors_fails_and_the_next_succeeds"])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the child");
    assert!(
        out.status.success(),
        "child: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn out_of_file_descriptors_every_call_answers_and_the_peer_is_reached_after() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let _serial = serial();
    // Outlives the pair (declared first, dropped last).
    let lines = Arc::new(LogLines::default());
    let pair = Pair::with(1 << 20, with_log(&lines, mcfx_log_level::MCFX_LOG_WARN));
    // Peer 2 is the same transport under another id: a second connection.
    pair.a.knows(2, &pair.b);
    let to_peer_2 = |ud| write(pair.src.addr(), 4096, 2, pair.dst.addr() as u64, ud);
    let more = AlignedBuf::new(1 << 16);
    let limit = Duration::from_secs(60);
    // Peer 1 is connected before the limit.
    pair.a.submit_ok(&[pair.write(4096, 10)]);
    assert_eq!(pair.a.done.wait_one(10, limit), OK);
    {
        let _no_fds = NoNewDescriptors::now();
        // A connected peer needs no new descriptor.
        pair.a.submit_ok(&[pair.write(4096, 11)]);
        assert_eq!(pair.a.done.wait_one(11, limit), OK, "{}", last_error());
        // The first op to peer 2 needs a connection, so a socket.
        pair.a.submit_ok(&[to_peer_2(1)]);
        documented("op to a new peer", pair.a.done.wait_one(1, limit), &[MCFX_E_CONNECT]);
        // The log says why: no descriptor, not an unreachable peer.
        wait_until(
            || lines.contains("cannot open a file descriptor"),
            "no log line names the descriptor limit",
        );
        // Another transport; the process's engine exists already.
        match Node::try_with(|_| {}) {
            Ok(mut n) => assert_eq!(n.destroy(), OK),
            Err((st, _)) => {
                documented("mcfx_create", st, &[MCFX_E_FLAGCX, MCFX_E_NO_MEMORY, MCFX_E_INTERNAL])
            }
        }
        // SAFETY: `more` outlives the registration (unregistered below or
        // at destroy, before it is freed).
        let st = unsafe { mcfx_register(pair.a.t, more.addr() as *mut _, more.len()) };
        documented("mcfx_register", st, &[OK, MCFX_E_FLAGCX, MCFX_E_NO_MEMORY]);
        if st == OK {
            // SAFETY: live handle, the base registered just above.
            assert_eq!(unsafe { mcfx_unregister(pair.a.t, more.addr() as *mut _) }, OK);
        }
        // The failed connect left no op behind and no connection half made.
        pair.a.submit_ok(&[to_peer_2(2)]);
        documented("a second op to that peer", pair.a.done.wait_one(2, limit), &[MCFX_E_CONNECT]);
    }
    // Descriptors again: the peer is reached, and the calls succeed.
    pair.a.submit_ok(&[to_peer_2(3)]);
    assert_eq!(pair.a.done.wait_one(3, limit), OK, "{}", last_error());
    let mut n = Node::new();
    assert_eq!(n.destroy(), OK);
    for ud in [1, 2, 3, 10, 11] {
        pair.a.done.status(ud); // exactly one completion each
    }
    let s = pair.a.stats();
    assert_eq!((s.completed, s.failed), (3, 2));
}
