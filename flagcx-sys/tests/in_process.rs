//! Transfers between two engines of one process (the provider's memcpy path).

mod common;

use common::{serial, wait, Buf, Pair, LIMIT};
use flagcx_sys::{pattern, Error, Poll};

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

    let id = link.conn.read_vector(&[back.iov(0, len, link.desc)]).unwrap();
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

    let mut iovs = Vec::new();
    let mut back_iovs = Vec::new();
    let mut off = 0;
    for &len in &lens {
        let desc = conn.make_desc((dst.addr() + off) as u64, len as u32).unwrap();
        iovs.push(src.iov(off, len, desc));
        back_iovs.push(back.iov(off, len, desc));
        off += len;
    }
    let id = conn.write_vector(&iovs).unwrap();
    assert_eq!(wait(&conn, id, LIMIT), Poll::Done);
    assert_eq!(dst.bytes(), src.bytes());
    let id = conn.read_vector(&back_iovs).unwrap();
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
    let desc = conn.make_desc(dst.addr() as u64, 8192).unwrap();
    // One byte past the end of the local region.
    assert_eq!(conn.write_vector(&[src.iov(1, 4096, desc)]), Err(Error::Flagcx));
    assert_eq!(conn.read_vector(&[src.iov(0, 4097, desc)]), Err(Error::Flagcx));
}

#[test]
fn unregistered_local_memory_is_rejected_at_submit() {
    let _g = serial();
    let pair = Pair::new();
    let link = pair.link(4096);
    let mut iov = link.src.iov(0, 4096, link.desc);
    iov.mr = 0xdead_beef; // an id nobody registered
    assert_eq!(link.conn.write_vector(&[iov]), Err(Error::Flagcx));
    let stale = link.src.mr;
    drop(link.src);
    let mut iov = link.dst.iov(0, 16, link.desc);
    iov.mr = stale.0; // deregistered
    assert_eq!(link.conn.write_vector(&[iov]), Err(Error::Flagcx));
}

#[test]
fn remote_range_outside_peer_regions_has_no_descriptor_and_forged_ones_fail() {
    let _g = serial();
    let pair = Pair::new();
    let src = Buf::new(&pair.local, 8192);
    let dst = Buf::new(&pair.remote, 4096);
    let conn = pair.connect();
    assert_eq!(conn.make_desc(dst.addr() as u64 + 1, 4096), Err(Error::Flagcx));
    assert_eq!(conn.make_desc(u64::MAX - 10, 100), Err(Error::Flagcx));
    // A descriptor for the real region, used for a longer transfer: the
    // length comes from the iov, so the provider must catch the overrun.
    let desc = conn.make_desc(dst.addr() as u64, 4096).unwrap();
    let id = conn.write_vector(&[src.iov(0, 8192, desc)]).unwrap();
    assert_eq!(wait(&conn, id, LIMIT), Poll::Failed);
    // A forged key.
    let mut forged = desc;
    forged.rkey ^= 0x5a5a;
    let id = conn.write_vector(&[src.iov(0, 16, forged)]).unwrap();
    assert_eq!(wait(&conn, id, LIMIT), Poll::Failed);
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
    let desc = fresh.make_desc(late.addr() as u64, 4096).unwrap();
    let id = fresh.write_vector(&[src.iov(0, 4096, desc)]).unwrap();
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
fn cached_connection_is_shared_per_session() {
    let _g = serial();
    let pair = Pair::new();
    let dst = Buf::new(&pair.remote, 4096);
    let a = pair.local.get_conn(&pair.session()).unwrap();
    let b = pair.local.get_conn(&pair.session()).unwrap();
    assert_eq!(a.as_raw(), b.as_raw());
    assert!(a.make_desc(dst.addr() as u64, 4096).is_ok());
}

#[test]
fn write_vector_sync_returns_after_the_bytes_landed() {
    let _g = serial();
    let pair = Pair::new();
    let mut link = pair.link(1 << 16);
    pattern::fill(link.src.bytes(), 9);
    link.conn.write_vector_sync(&[link.src.iov(0, 1 << 16, link.desc)]).unwrap();
    assert_eq!(link.dst.bytes(), link.src.bytes());
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

/// The entry-list path (`IovList`, what the transport's progress thread
/// uses): entries built in place move the same bytes as `write_vector`; a
/// push whose remote range no region covers appends nothing; `truncate`
/// drops entries; a call empties the list whatever its outcome.
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
