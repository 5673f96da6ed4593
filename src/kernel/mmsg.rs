//! Batched datagram calls: recvmmsg(2) into reusable slots and sendmmsg(2)
//! of messages the caller lays out, so that a burst of datagrams costs one
//! system call rather than one each. Used by the relay.

use std::io;
use std::os::fd::RawFd;

/// A socket address recvmmsg may write and sendmmsg may read.
///
/// # Safety
/// Only for libc's plain-data socket addresses: `repr(C)`, no pointers, and
/// all-zero bytes a valid value.
pub unsafe trait SockAddr: Copy {
    fn zeroed() -> Self {
        // SAFETY: the trait's contract: all-zero is a valid value.
        unsafe { std::mem::zeroed() }
    }
}

// SAFETY: plain-data C structs of integers and byte arrays.
unsafe impl SockAddr for libc::sockaddr_in {}
// SAFETY: as above.
unsafe impl SockAddr for libc::sockaddr_ll {}

/// A message header for [`send`]: the bytes of `iovlen` iovecs from `iov`,
/// to `*name`. The caller keeps all three alive and in place until the
/// call (the header holds raw pointers, no borrows).
pub fn message<A: SockAddr>(
    name: *const A,
    iov: *const libc::iovec,
    iovlen: usize,
) -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain data (pointers and integers); all-zero is a
    // valid value (null pointers, no control data, no flags).
    let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
    m.msg_hdr.msg_name = name as *mut libc::c_void;
    m.msg_hdr.msg_namelen = std::mem::size_of::<A>() as libc::socklen_t;
    m.msg_hdr.msg_iov = iov as *mut libc::iovec;
    m.msg_hdr.msg_iovlen = iovlen as _;
    m
}

/// An iovec over `data`, for [`message`] (sendmmsg only reads it).
pub fn iovec(data: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    }
}

/// sendmmsg(2) of `msgs` without waiting: how many went, from the first.
/// An error is the first message's (the kernel reports one only when
/// nothing went); an interrupted call is retried.
///
/// Every header must come from [`message`] with its name and iovecs (and
/// the bytes they point to) alive and unmoved for the call.
pub fn send(fd: RawFd, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    if msgs.is_empty() {
        return Ok(0);
    }
    let vlen = msgs.len().min(1024) as libc::c_uint; // UIO_MAXIOV
    loop {
        // SAFETY: `msgs` is a valid array of `vlen` headers whose names and
        // iovecs point at live memory (this function's contract); the
        // kernel reads them and writes only each header's `msg_len`.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), vlen, libc::MSG_DONTWAIT as _) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sends `n` messages in order through `send` (sendmmsg from message
/// `from` on: how many went, or the error of message `from`) and tells
/// `done` the fate of each, once, in order.
///
/// When fewer went than asked, the next call tells why the next message
/// did not go. A message too big (EMSGSIZE) is dropped alone; any other
/// error holds for the destination or the socket (a full queue, no route, a
/// firewall), so the messages after it are dropped with the same error
/// without being tried: a peer that is down costs one failed call a batch.
pub fn send_all(
    n: usize,
    mut send: impl FnMut(usize) -> io::Result<usize>,
    mut done: impl FnMut(usize, Result<(), &io::Error>),
) {
    let mut at = 0;
    while at < n {
        let r = match send(at) {
            Ok(0) => Err(io::Error::new(io::ErrorKind::WriteZero, "nothing sent")),
            r => r,
        };
        match r {
            Ok(k) => {
                let end = (at + k).min(n);
                (at..end).for_each(|i| done(i, Ok(())));
                at = end;
            }
            Err(e) => {
                done(at, Err(&e));
                at += 1;
                if e.raw_os_error() != Some(libc::EMSGSIZE) {
                    (at..n).for_each(|i| done(i, Err(&e)));
                    at = n;
                }
            }
        }
    }
}

/// `slots` receive buffers of `cap` bytes each, filled with one
/// recvmmsg(2) each [`RecvBatch::recv`], with each datagram's length and
/// sender. Allocated once: the buffers are reused.
pub struct RecvBatch<A: SockAddr> {
    data: Vec<u8>,
    cap: usize,
    names: Vec<A>,
    /// Each datagram's whole length (MSG_TRUNC): more than `cap` when cut.
    lens: Vec<usize>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    count: usize,
}

// SAFETY: the raw pointers a batch holds (its iovecs and headers) point
// only into its own heap buffers, are rebuilt before every call and never
// used outside `recv`: moving the batch to another thread moves all of it.
unsafe impl<A: SockAddr + Send> Send for RecvBatch<A> {}

impl<A: SockAddr> RecvBatch<A> {
    pub fn new(slots: usize, cap: usize) -> RecvBatch<A> {
        RecvBatch {
            // zeroed pages are mapped on first write: small datagrams
            // touch a page per slot
            data: vec![0u8; slots * cap],
            cap,
            names: vec![A::zeroed(); slots],
            lens: vec![0; slots],
            iovs: Vec::with_capacity(slots),
            hdrs: Vec::with_capacity(slots),
            count: 0,
        }
    }

    /// Reads what is pending, up to one datagram a slot, without waiting:
    /// how many (0: nothing pending). An interrupted call is retried.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.count = 0;
        let slots = self.names.len();
        // the headers point into this batch's own vectors: rebuilt every
        // call, so they never outlive or miss a move of what they point at
        self.iovs.clear();
        self.iovs
            .extend(self.data.chunks_exact_mut(self.cap).map(|c| libc::iovec {
                iov_base: c.as_mut_ptr() as *mut libc::c_void,
                iov_len: c.len(),
            }));
        self.hdrs.clear();
        let names = self.names.as_mut_ptr();
        let iovs = self.iovs.as_mut_ptr();
        // `names` and `iovs` have `slots` elements: add(i) stays inside
        self.hdrs
            .extend((0..slots).map(|i| message(names.wrapping_add(i), iovs.wrapping_add(i), 1)));
        loop {
            // SAFETY: `slots` headers, each with a name of its own size and
            // one iovec over its own `cap` bytes of `data`, all alive and
            // unmoved for the call; the kernel writes within those bounds.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    slots as libc::c_uint,
                    (libc::MSG_DONTWAIT | libc::MSG_TRUNC) as _,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(0),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                }
            }
            let n = n as usize;
            for (l, h) in self.lens.iter_mut().zip(&self.hdrs).take(n) {
                *l = h.msg_len as usize;
            }
            self.count = n;
            return Ok(n);
        }
    }

    /// How many datagrams the last [`RecvBatch::recv`] read.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Datagram `i`'s whole length: more than [`RecvBatch::cap`] when it
    /// was cut.
    pub fn len(&self, i: usize) -> usize {
        self.lens[i]
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Datagram `i`'s sender.
    pub fn name(&self, i: usize) -> &A {
        &self.names[i]
    }

    /// Datagram `i`'s bytes (what fit in its slot), to change in place.
    pub fn data_mut(&mut self, i: usize) -> &mut [u8] {
        let n = self.lens[i].min(self.cap);
        &mut self.data[i * self.cap..i * self.cap + n]
    }

    /// Datagram `i`'s bytes (what fit in its slot).
    pub fn data(&self, i: usize) -> &[u8] {
        let n = self.lens[i].min(self.cap);
        &self.data[i * self.cap..i * self.cap + n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs send_all over `n` messages with a fake sendmmsg answering from
    /// `answers` in turn; returns the calls' `from`s and each fate.
    fn run(n: usize, answers: Vec<io::Result<usize>>) -> (Vec<usize>, Vec<Option<i32>>) {
        let mut answers = answers.into_iter();
        let mut calls = vec![];
        let mut fates = vec![];
        send_all(
            n,
            |from| {
                calls.push(from);
                answers.next().expect("no more calls expected")
            },
            |i, r| {
                assert_eq!(i, fates.len(), "each message once, in order");
                fates.push(r.err().map(|e| e.raw_os_error().unwrap_or(-1)));
            },
        );
        (calls, fates)
    }

    fn os(code: i32) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(code))
    }

    #[test]
    fn a_whole_batch_goes_in_one_call() {
        let (calls, fates) = run(5, vec![Ok(5)]);
        assert_eq!(calls, [0]);
        assert_eq!(fates, [None; 5]);
        let (calls, fates) = run(0, vec![]);
        assert!(calls.is_empty() && fates.is_empty());
    }

    #[test]
    fn a_partial_send_asks_again_and_the_rest_drops_with_its_error() {
        // 2 went, then the queue is full: message 2 fails with EAGAIN and
        // 3, 4 are dropped with it, untried
        let (calls, fates) = run(5, vec![Ok(2), os(libc::EAGAIN)]);
        assert_eq!(calls, [0, 2]);
        assert_eq!(
            fates,
            [
                None,
                None,
                Some(libc::EAGAIN),
                Some(libc::EAGAIN),
                Some(libc::EAGAIN)
            ]
        );
        // the short count was passing: the retry sends the rest
        let (calls, fates) = run(4, vec![Ok(1), Ok(3)]);
        assert_eq!(calls, [0, 1]);
        assert_eq!(fates, [None; 4]);
    }

    #[test]
    fn a_peer_that_is_down_costs_one_call() {
        let (calls, fates) = run(3, vec![os(libc::EHOSTUNREACH)]);
        assert_eq!(calls, [0]);
        assert_eq!(fates, [Some(libc::EHOSTUNREACH); 3]);
    }

    #[test]
    fn a_message_too_big_drops_alone() {
        let (calls, fates) = run(4, vec![Ok(1), os(libc::EMSGSIZE), Ok(2)]);
        assert_eq!(calls, [0, 1, 2]);
        assert_eq!(fates, [None, Some(libc::EMSGSIZE), None, None]);
    }

    #[test]
    fn a_call_that_sends_nothing_does_not_loop() {
        let (calls, fates) = run(2, vec![Ok(0)]);
        assert_eq!(calls, [0]);
        assert_eq!(fates.len(), 2);
        assert!(fates.iter().all(|f| f.is_some()));
        // more reported than asked: only the asked are told
        let (_, fates) = run(2, vec![Ok(7)]);
        assert_eq!(fates, [None; 2]);
    }

    #[test]
    fn udp_datagrams_round_trip_in_batches() {
        use std::net::UdpSocket;
        use std::os::fd::AsRawFd;
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(to) = rx.local_addr().unwrap() else {
            unreachable!()
        };
        let mut name: libc::sockaddr_in = SockAddr::zeroed();
        name.sin_family = libc::AF_INET as libc::sa_family_t;
        name.sin_port = to.port().to_be();
        name.sin_addr.s_addr = u32::from(*to.ip()).to_be();
        let head = b"H:";
        let bodies: [&[u8]; 3] = [b"one", b"two!", b"a datagram cut short"];
        let iovs: Vec<libc::iovec> = bodies
            .iter()
            .flat_map(|b| [iovec(head), iovec(b)])
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = (0..3)
            .map(|i| message(&name, iovs.as_ptr().wrapping_add(2 * i), 2))
            .collect();
        assert_eq!(send(tx.as_raw_fd(), &mut msgs).unwrap(), 3);
        let mut b = RecvBatch::<libc::sockaddr_in>::new(4, 8);
        assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 3);
        assert_eq!(b.count(), 3);
        assert_eq!(b.data(0), b"H:one");
        assert_eq!(b.data_mut(1), b"H:two!");
        assert_eq!(
            (b.len(2), b.data(2)),
            (22, &b"H:a data"[..]),
            "cut, whole length told"
        );
        let from = b.name(0);
        assert_eq!(u16::from_be(from.sin_port), tx.local_addr().unwrap().port());
        assert_eq!(
            b.recv(rx.as_raw_fd()).unwrap(),
            0,
            "nothing pending: no wait"
        );
    }
}
