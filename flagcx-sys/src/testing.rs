//! Test support shared by this crate's tests, the transport's tests and the
//! benchmarks: aligned heap buffers and `flagcx-sw-peer` child processes.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// A zeroed, page-aligned heap buffer with a stable address.
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a plain owned allocation; access goes through &self/&mut self.
unsafe impl Send for AlignedBuf {}
// SAFETY: as above.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len.max(1), 4096).expect("layout");
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory allocating {len} bytes");
        AlignedBuf { ptr, len }
    }

    pub fn addr(&self) -> usize {
        self.ptr as usize
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes. Callers must not hold this while a transfer may write the
    /// buffer (tests look only between transfers).
    pub fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: owned allocation of len bytes.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.len.max(1), 4096).expect("layout");
        // SAFETY: allocated in new with this layout.
        unsafe { dealloc(self.ptr, layout) }
    }
}

/// Tests share one process-wide provider: they run one at a time under this
/// lock, each from default knobs (copy mode) and zero violations. Panics unless the
/// loaded libflagcx is the software provider.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    use crate::sw::{self, Knob};
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    assert!(sw::available(), "these tests need the in-tree software provider");
    for (k, v) in [
        (Knob::LatencyNs, 0),
        (Knob::FailOp, 0),
        (Knob::HangOp, 0),
        (Knob::ConnectDelayMs, 0),
        (Knob::RefuseConnect, 0),
        (Knob::ConnectTimeoutMs, 10_000),
        (Knob::NicGbps, 0),
        (Knob::NicLatencyNs, 0),
        (Knob::NewIdOnReregister, 0),
    ] {
        assert!(sw::set_knob(k, v));
    }
    sw::reset_violations();
    guard
}

/// Panics when the provider recorded any misuse of the FlagCX API.
pub fn assert_no_violations() {
    let v = crate::sw::violations().expect("software provider");
    assert_eq!(v.total(), 0, "the provider saw FlagCX misuse: {v:?}");
}

/// Where `flagcx-sw-peer` was built: next to the running test binary's
/// directory (`target/<profile>/`), or `FLAGCX_SW_PEER` if set.
pub fn peer_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("FLAGCX_SW_PEER") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("flagcx-sw-peer");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("flagcx-sw-peer not found near {} (build it: cargo build -p flagcx-sys --features test-support)", exe.display());
}

/// A `flagcx-sw-peer` child process (see its module docs for the protocol).
pub struct PeerProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub endpoint: String,
    pub addr: u64,
    pub len: u64,
    pub pid: u32,
}

impl PeerProcess {
    /// Starts a peer with a `size`-byte registered buffer.
    pub fn spawn(size: usize) -> PeerProcess {
        Self::spawn_with(size, &[])
    }

    /// As `spawn`, with extra environment variables (provider knobs).
    pub fn spawn_with(size: usize, env: &[(&str, &str)]) -> PeerProcess {
        let mut child = Command::new(peer_binary())
            .args(["--size", &size.to_string()])
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn flagcx-sw-peer");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("peer ready line");
        let field = |name: &str| -> String {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")).map(str::to_owned))
                .unwrap_or_else(|| panic!("flagcx-sw-peer said {line:?}"))
        };
        PeerProcess {
            endpoint: field("endpoint"),
            addr: parse_num(&field("addr")).unwrap(),
            len: parse_num(&field("len")).unwrap(),
            pid: parse_num(&field("pid")).unwrap() as u32,
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one command and returns its one-line answer.
    pub fn cmd(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("peer stdin");
        self.stdin.flush().expect("peer stdin");
        let mut reply = String::new();
        self.stdout.read_line(&mut reply).expect("peer stdout");
        reply.trim().to_owned()
    }

    /// Checksum (`pattern::checksum`) of the peer's buffer range.
    pub fn sum(&mut self, off: u64, len: u64) -> u64 {
        let r = self.cmd(&format!("sum {off} {len}"));
        let hex = r.strip_prefix("sum ").unwrap_or_else(|| panic!("peer said {r:?}"));
        u64::from_str_radix(hex, 16).expect("hex checksum")
    }

    pub fn port(&self) -> u16 {
        self.endpoint.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port")
    }

    /// Kills the peer at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "exit");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill();
    }
}

/// A number of the peer's protocol: decimal or `0x` hex (its commands and
/// its ready line both use them).
pub fn parse_num(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|_| format!("bad number {s:?}"))
}
