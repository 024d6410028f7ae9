//! Transfers between two engines of one process (the provider's memcpy path).

mod common;

use common::{read, serial, wait, write, Buf, Pair, LIMIT};
use flagcx_sys::{pattern, sw, Error, MrId, Poll};

/// Writes `len` bytes local -> remote, reads them back into a third buffer,
/// and checks both copies.
fn round_trip(pair: &Pair, len: usize, seed: u64) {
    let mut back = Buf::new(&pair.local, len);
    let mut link = pair.link(len);
    pattern::fill(link.src.bytes(), seed);
    let want = pattern::checksum(link.src.bytes());

    let id = link.write(len);
    assert_eq!(link.wait(id), Poll::Done);
    assert_eq!(pattern::checksum(link.dst.bytes()), want, "write of {len} bytes");

    let id = read(&link.conn, &[back.entry(0, len, link.remote())]).unwrap();
    assert_eq!(link.wait(id), Poll::Done);
    assert_eq!(pattern::checksum(back.bytes()), want, "read of {len} bytes");
}

#[test]
fn write_and_read_keep_data_intact_from_1b_to_64mib() {
    let _g = serial();
    let pair = Pair::new();
    for (i, len) in [1, 7, 64, 4096, 4099, 65536, (1 << 20) + 3, 64 << 20].into_iter().enumerate() {
        round_trip(&pair, len, i as u64 + 1);
    }
    common::assert_no_violations();
}

#[test]
fn vector_write_and_read_with_hundreds_of_entries() {
    let _g = serial();
    let pair = Pair::new();
    const N: usize = 300;
    // Entry i moves 1 + 37*i bytes, packed back to back on both sides.
    let lens: Vec<usize> = (0..N).map(|i| 1 + 37 * i).collect();
    let total: usize = lens.iter().sum();
    let mut src = Buf::new(&pair.local, total);
    let mut back = Buf::new(&pair.local, total);
    let mut dst = Buf::new(&pair.remote, total);
    pattern::fill(src.bytes(), 42);
    let conn = pair.connect();

    let mut entries = Vec::new();
    let mut back_entries = Vec::new();
    let mut off = 0;
    for &len in &lens {
        let remote = (dst.addr() + off) as u64;
        entries.push(src.entry(off, len, remote));
        back_entries.push(back.entry(off, len, remote));
        off += len;
    }
    let id = write(&conn, &entries).unwrap();
    assert_eq!(wait(&conn, id, LIMIT), Poll::Done);
    assert_eq!(dst.bytes(), src.bytes());
    let id = read(&conn, &back_entries).unwrap();
    assert_eq!(wait(&conn, id, LIMIT), Poll::Done);
    assert_eq!(back.bytes(), src.bytes());
    common::assert_no_violations();
}

#[test]
fn local_range_outside_its_region_is_rejected_at_submit() {
    let _g = serial();
    let pair = Pair::new();
    let src = Buf::new(&pair.local, 4096);
    let dst = Buf::new(&pair.remote, 8192);
    let conn = pair.connect();
    let remote = dst.addr() as u64;
    // One byte past the end of the local region.
    assert_eq!(write(&conn, &[src.entry(1, 4096, remote)]), Err(Error::Flagcx));
    assert_eq!(read(&conn, &[src.entry(0, 4097, remote)]), Err(Error::Flagcx));
}

#[test]
fn unregistered_local_memory_is_rejected_at_submit() {
    let _g = serial();
    let pair = Pair::new();
    let link = pair.link(4096);
    let remote = link.remote();
    let mut entry = link.src.entry(0, 4096, remote);
    entry.mr = MrId(0xdead_beef); // an id nobody registered
    assert_eq!(write(&link.conn, &[entry]), Err(Error::Flagcx));
    let stale = link.src.mr;
    drop(link.src);
    let mut entry = link.dst.entry(0, 16, remote);
    entry.mr = stale; // deregistered
    assert_eq!(write(&link.conn, &[entry]), Err(Error::Flagcx));
}

/// (Descriptors that do not match the snapshot, a forged key or a length
/// past the region, cannot be made through this crate: the provider's
/// checks of those are tested from C++, cpp_tests/provider/.)
#[test]
fn remote_range_outside_peer_regions_has_no_descriptor_and_is_not_pushed() {
    let _g = serial();
    let pair = Pair::new();
    let src = Buf::new(&pair.local, 8192);
    let dst = Buf::new(&pair.remote, 4096);
    let conn = pair.connect();
    assert_eq!(conn.make_desc(dst.addr() as u64 + 1, 4096), Err(Error::Flagcx));
    assert_eq!(conn.make_desc(u64::MAX - 10, 100), Err(Error::Flagcx));
    // Past the end of the region: no descriptor, so no transfer starts.
    let remote = dst.addr() as u64;
    assert_eq!(write(&conn, &[src.entry(0, 8192, remote)]), Err(Error::Flagcx));
    common::assert_no_violations();
}

/// A base registered again in place with a smaller size: a connection made
/// before still describes the old size, and the provider checks the live
/// registration, so a transfer past the new end fails (and one inside it
/// works).
#[test]
fn a_transfer_past_a_region_shrunk_after_connect_fails() {
    let _g = serial();
    let pair = Pair::new();
    let src = Buf::new(&pair.local, 8192);
    let dst = Buf::new(&pair.remote, 8192);
    let conn = pair.connect();
    // SAFETY: the same live buffer, still owned by `dst`, with a smaller size.
    let again = unsafe { pair.remote.register(dst.addr(), 4096) }.unwrap();
    assert_eq!(again, dst.mr, "the base's registration is resized in place");
    let remote = dst.addr() as u64;
    let id = write(&conn, &[src.entry(0, 8192, remote)]).expect("the snapshot describes it");
    assert_eq!(wait(&conn, id, LIMIT), Poll::Failed);
    let id = write(&conn, &[src.entry(0, 4096, remote)]).unwrap();
    assert_eq!(wait(&conn, id, LIMIT), Poll::Done);
    common::assert_no_violations();
}

/// With FLAGCX_SW_NEW_ID_ON_REREGISTER a base registered again gets a new
/// key; once the first registration is destroyed, a connection that learned
/// its key fails (a key the peer no longer has), and one made now works.
#[test]
fn a_key_destroyed_after_connect_fails_transfers_through_it() {
    let _g = serial();
    assert!(sw::set_knob(sw::Knob::NewIdOnReregister, 1));
    let pair = Pair::new();
    let src = Buf::new(&pair.local, 4096);
    let dst = Buf::new(&pair.remote, 4096);
    let old = pair.connect();
    let remote = dst.addr() as u64;
    let old_key = old.make_desc(remote, 4096).unwrap();
    // SAFETY: the same live buffer, still owned by `dst`.
    let second = unsafe { pair.remote.register(dst.addr(), 4096) }.unwrap();
    assert_ne!(second, dst.mr);
    pair.remote.deregister(dst.mr);
    let id = write(&old, &[src.entry(0, 16, remote)]).expect("the snapshot describes it");
    assert_eq!(wait(&old, id, LIMIT), Poll::Failed);
    let fresh = pair.connect();
    assert_ne!(fresh.make_desc(remote, 4096).unwrap(), old_key);
    let id = write(&fresh, &[src.entry(0, 16, remote)]).unwrap();
    assert_eq!(wait(&fresh, id, LIMIT), Poll::Done);
    pair.remote.deregister(second);
    common::assert_no_violations();
}

#[test]
fn memory_registered_after_connect_needs_a_new_connection() {
    let _g = serial();
    let pair = Pair::new();
    let src = Buf::new(&pair.local, 4096);
    let old = pair.connect();
    let late = Buf::new(&pair.remote, 4096);
    assert_eq!(old.make_desc(late.addr() as u64, 4096), Err(Error::Flagcx));
    let fresh = pair.connect();
    let id = write(&fresh, &[src.entry(0, 4096, late.addr() as u64)]).unwrap();
    assert_eq!(wait(&fresh, id, LIMIT), Poll::Done);
}

#[test]
fn deregistered_remote_region_fails_transfers_that_still_hold_its_descriptor() {
    let _g = serial();
    let pair = Pair::new();
    let link = pair.link(4096);
    pair.remote.deregister(link.dst.mr);
    let id = link.write(4096);
    assert_eq!(link.wait(id), Poll::Failed);
}

#[test]
fn metadata_names_a_loopback_endpoint_and_the_rpc_port() {
    let _g = serial();
    let pair = Pair::new();
    let md = pair.remote.metadata().unwrap();
    let port = pair.remote.rpc_port().unwrap();
    assert!(md.starts_with(&format!("127.0.0.1:{port}?")), "{md}");
    assert_eq!(pair.remote.endpoint().unwrap(), format!("127.0.0.1:{port}"));
}

#[test]
fn registering_the_same_base_twice_gives_the_same_id() {
    let _g = serial();
    let pair = Pair::new();
    let buf = Buf::new(&pair.local, 4096);
    // SAFETY: same live buffer, still owned by `buf`.
    let again = unsafe { pair.remote.register(buf.addr(), 4096) }.unwrap();
    assert_eq!(again, buf.mr, "registration is process-wide, keyed by base");
}

/// The entry list itself (`IovList`, what the transport's progress thread
/// uses), reused across calls: a push whose remote range no region covers
/// appends nothing; `truncate` drops entries; a call empties the list
/// whatever its outcome.
#[test]
fn entry_lists_write_read_truncate_and_reject() {
    let _g = serial();
    let pair = Pair::new();
    const N: usize = 40;
    let lens: Vec<usize> = (0..N).map(|i| 1 + 53 * i).collect();
    let total: usize = lens.iter().sum();
    let mut src = Buf::new(&pair.local, total);
    let mut back = Buf::new(&pair.local, total);
    let mut dst = Buf::new(&pair.remote, total);
    pattern::fill(src.bytes(), 7);
    let conn = pair.connect();
    let mut list = flagcx_sys::IovList::new().unwrap();
    assert_eq!(conn.write_list(&mut list), Err(Error::Invalid), "an empty list is refused");

    // Two rounds, so the second reuses the first's vectors.
    for round in 0..2 {
        let mut off = 0;
        for &len in &lens {
            let remote = (dst.addr() + off) as u64;
            list.push(&conn, src.mr, src.addr() + off, len as u32, remote).unwrap();
            // Past the end of every region the peer has: refused, nothing added.
            let bad = (dst.addr() + total) as u64 + 4096;
            assert_eq!(list.push(&conn, src.mr, src.addr(), 1, bad), Err(Error::Flagcx));
            assert_eq!(list.push(&conn, src.mr, src.addr(), 0, remote), Err(Error::Invalid));
            off += len;
        }
        assert_eq!(list.len(), N);
        // An extra entry, dropped again before the call.
        list.push(&conn, back.mr, back.addr(), 8, dst.addr() as u64).unwrap();
        list.truncate(N);
        let id = conn.write_list(&mut list).unwrap();
        assert!(list.is_empty());
        assert_eq!(wait(&conn, id, LIMIT), Poll::Done, "round {round}");
        assert_eq!(dst.bytes(), src.bytes());

        let mut off = 0;
        for &len in &lens {
            let remote = (dst.addr() + off) as u64;
            list.push(&conn, back.mr, back.addr() + off, len as u32, remote).unwrap();
            off += len;
        }
        let id = conn.read_list(&mut list).unwrap();
        assert!(list.is_empty());
        assert_eq!(wait(&conn, id, LIMIT), Poll::Done);
        assert_eq!(back.bytes(), src.bytes());
        back.bytes().fill(0);
        dst.bytes().fill(0);
    }

    // A call FlagCX refuses (local range outside its region) empties the list too.
    list.push(&conn, src.mr, src.addr() + total - 8, 16, dst.addr() as u64).unwrap();
    assert_eq!(conn.write_list(&mut list), Err(Error::Flagcx));
    assert!(list.is_empty());
    common::assert_no_violations();
}
