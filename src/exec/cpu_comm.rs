//! Communication between threads standing for devices: each rank owns its buffers and moves
//! real data through channels to its peers, with NCCL's ring algorithms (Patarasuk & Yuan
//! 2009: reduce-scatter then all-gather around the ring, n − 1 steps each), direct exchange
//! for all-to-all, and a ring shift for send/receive as nccl-tests' sendrecv_perf does. Every
//! message carries a tag (so point-to-point transfers and collectives of several groups can
//! share a link in any order) and its sender's device clock (`clock`), so time is device time.
//!
//! In `verify`'s runs (`cpu_run`), a rank waiting for a message keeps its core busy
//! (`Filler`) where every rank has a core of its own. The GEMM probes time every device
//! computing at once (`cpu`), and on cores that share caches, memory bandwidth or a physical
//! core (SMT siblings of a cloud VM) a thread beside an idle core runs faster than that: had
//! waiting ranks blocked, a pipeline's busiest stage would run faster than its calibration
//! whenever the others waited for it, as a GPU beside an idle one never does.

use super::clock::{DeviceClock, thread_cpu_s};
use crate::graph::Coll;
use std::ops::Range;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Barrier, Mutex};

/// What a message is: (stream, sequence). Collectives use stream = group + 1 and sequence =
/// call << 16 | ring step; point-to-point transfers stream 0.
pub type Tag = (u64, u64);

struct Msg {
    tag: Tag,
    clock: f64,
    data: Vec<f32>,
}

/// One rank's links: a data channel to and from every peer, a channel returning spent
/// message buffers to their sender (so steady-state sends do not allocate), messages that
/// arrived before they were wanted, and the rank's device clock.
pub struct Mailbox {
    /// This rank.
    pub rank: usize,
    to: Vec<Option<Sender<Msg>>>,
    from: Vec<Option<Receiver<Msg>>>,
    give_back: Vec<Option<Sender<Vec<f32>>>>,
    returned: Vec<Option<Receiver<Vec<f32>>>>,
    early: Vec<Vec<Msg>>,
    /// Keeps the core busy while waiting; `None`: block (more ranks than cores).
    filler: Option<Filler>,
    /// Device time of this rank (create the mailbox's clock on the rank's own thread).
    pub clock: DeviceClock,
}

/// What a waiting rank computes: GEMMs of 96×96×96 (about 1.8 MFLOP, tens of microseconds
/// per call, so a message waits little longer than that; operands of 36 KiB each, in the
/// core's own caches), the kind of work its neighbour's probes ran beside.
#[derive(Default)]
struct Filler {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    /// GEMMs run so far.
    calls: u64,
}

impl Filler {
    const N: usize = 96;

    /// One GEMM.
    fn run(&mut self) {
        let n = Self::N;
        super::cpu::fill(&mut self.a, n * n);
        super::cpu::fill(&mut self.b, n * n);
        super::cpu::fill(&mut self.c, n * n);
        super::cpu::sgemm(&self.a, &self.b, &mut self.c, (n, n, n));
        std::hint::black_box(&self.c);
        self.calls += 1;
    }
}

/// A peer stopped (its thread failed): the collective cannot finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerGone(pub usize);

impl Mailbox {
    /// Sends `data` to `peer` under `tag`, stamped with the clock after the copy.
    pub fn send(&mut self, peer: usize, tag: Tag, data: &[f32]) -> Result<(), PeerGone> {
        let back = self.returned[peer].as_ref().ok_or(PeerGone(peer))?;
        let mut m = back.try_recv().unwrap_or_default();
        m.clear();
        m.extend_from_slice(data);
        let msg = Msg {
            tag,
            clock: self.clock.now(),
            data: m,
        };
        let to = self.to[peer].as_ref().ok_or(PeerGone(peer))?;
        to.send(msg).map_err(|_| PeerGone(peer))
    }

    /// Receives the message `tag` from `peer` and hands its data to `f`; returns the device
    /// time spent waiting for it (the clock's jump to the sender's stamp).
    pub fn recv(&mut self, peer: usize, tag: Tag, f: impl FnOnce(&[f32])) -> Result<f64, PeerGone> {
        let msg = match self.early[peer].iter().position(|m| m.tag == tag) {
            Some(i) => self.early[peer].swap_remove(i),
            None => {
                // The CPU time of a busy wait, from its start (none if nothing was waited for).
                let mut busy_since: Option<f64> = None;
                let m = loop {
                    let rx = self.from[peer].as_ref().ok_or(PeerGone(peer))?;
                    let m = match self.filler.as_mut() {
                        None => rx.recv().map_err(|_| PeerGone(peer))?,
                        Some(f) => match rx.try_recv() {
                            Ok(m) => m,
                            Err(TryRecvError::Empty) => {
                                busy_since.get_or_insert_with(thread_cpu_s);
                                f.run();
                                // Where other work shares the cores after all, the peer
                                // this rank waits for goes first.
                                std::thread::yield_now();
                                continue;
                            }
                            Err(TryRecvError::Disconnected) => return Err(PeerGone(peer)),
                        },
                    };
                    if m.tag == tag {
                        break m;
                    }
                    self.early[peer].push(m);
                };
                if let Some(t0) = busy_since {
                    self.clock.exclude(thread_cpu_s() - t0);
                }
                m
            }
        };
        let waited = self.clock.advance_to(msg.clock);
        f(&msg.data);
        if let Some(back) = self.give_back[peer].as_ref() {
            let _ = back.send(msg.data);
        }
        Ok(waited)
    }

    /// Replaces the clock with a fresh one on the calling thread, reading `t`.
    pub fn start_clock(&mut self, t: f64) {
        self.clock = DeviceClock::new();
        self.clock.advance_to(t);
    }
}

/// Mailboxes of `n` ranks, each linked to every other; with `busy_wait`, a waiting rank
/// computes (`Filler`) rather than block.
pub fn mesh(n: usize, busy_wait: bool) -> Vec<Mailbox> {
    fn none<T>(n: usize) -> Vec<Option<T>> {
        (0..n).map(|_| None).collect()
    }
    let mut boxes: Vec<Mailbox> = (0..n)
        .map(|rank| Mailbox {
            rank,
            to: none(n),
            from: none(n),
            give_back: none(n),
            returned: none(n),
            early: (0..n).map(|_| Vec::new()).collect(),
            filler: busy_wait.then(Filler::default),
            clock: DeviceClock::new(),
        })
        .collect();
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let (tx, rx) = channel();
                let (btx, brx) = channel();
                boxes[i].to[j] = Some(tx);
                boxes[i].returned[j] = Some(brx);
                boxes[j].from[i] = Some(rx);
                boxes[j].give_back[i] = Some(btx);
            }
        }
    }
    boxes
}

fn chunk(len: usize, n: usize, i: usize) -> Range<usize> {
    i * len / n..(i + 1) * len / n
}

/// One collective call on a group: its members (global ranks, in group order), the call's
/// stream and sequence number for the tags.
pub struct Call<'a> {
    /// Global ranks of the group, in ring order.
    pub members: &'a [usize],
    /// Tag stream of the group (group index + 1).
    pub stream: u64,
    /// The call's number among the group's calls.
    pub seq: u64,
}

impl Call<'_> {
    fn tag(&self, step: usize) -> Tag {
        (self.stream, self.seq << 16 | step as u64)
    }
}

/// n − 1 ring steps; at step s position p sends chunk (p − s + shift) and receives chunk
/// (p − s − 1 + shift), combining it with `reduce` (add) or copying it.
fn ring(
    b: &mut Mailbox,
    c: &Call,
    pos: usize,
    buf: &mut [f32],
    shift: usize,
    reduce: bool,
    step0: usize,
) -> Result<f64, PeerGone> {
    let (n, len) = (c.members.len(), buf.len());
    let mut waited = 0.0;
    let (next, prev) = (c.members[(pos + 1) % n], c.members[(pos + n - 1) % n]);
    for s in 0..n - 1 {
        let send_i = (pos + shift + n - s) % n;
        let recv_i = (pos + shift + 2 * n - s - 1) % n;
        b.send(next, c.tag(step0 + s), &buf[chunk(len, n, send_i)])?;
        let dst = &mut buf[chunk(len, n, recv_i)];
        waited += b.recv(prev, c.tag(step0 + s), |m| {
            if reduce {
                dst.iter_mut().zip(m).for_each(|(d, x)| *d += x);
            } else {
                dst.copy_from_slice(m);
            }
        })?;
    }
    Ok(waited)
}

/// Runs `coll` for this rank (`b.rank` must be one of `c.members`) on `buf` (the message:
/// the full buffer for all-reduce, the gathered result for all-gather, the input for
/// reduce-scatter, what this rank sends for all-to-all and send/receive), writing received
/// data for all-to-all and send/receive into `out` (as long as `buf`). Returns the device
/// time spent waiting for peers that arrived later (the rest is the collective's own work).
pub fn collective(
    b: &mut Mailbox,
    coll: Coll,
    c: &Call,
    buf: &mut [f32],
    out: &mut [f32],
) -> Result<f64, PeerGone> {
    let n = c.members.len();
    let pos = c.members.iter().position(|&r| r == b.rank).unwrap_or(0);
    if n < 2 {
        return Ok(0.0);
    }
    match coll {
        Coll::AllReduce => {
            let w = ring(b, c, pos, buf, 0, true, 0)?;
            Ok(w + ring(b, c, pos, buf, 1, false, n)?)
        }
        Coll::AllGather => ring(b, c, pos, buf, 0, false, 0),
        Coll::ReduceScatter => ring(b, c, pos, buf, 0, true, 0),
        Coll::AllToAll => {
            let len = buf.len();
            for j in (0..n).filter(|&j| j != pos) {
                b.send(c.members[j], c.tag(pos), &buf[chunk(len, n, j)])?;
            }
            let mut waited = 0.0;
            for j in (0..n).filter(|&j| j != pos) {
                let dst = &mut out[chunk(len, n, j)];
                waited += b.recv(c.members[j], c.tag(j), |m| dst.copy_from_slice(m))?;
            }
            Ok(waited)
        }
        Coll::SendRecv => {
            let (next, prev) = (c.members[(pos + 1) % n], c.members[(pos + n - 1) % n]);
            b.send(next, c.tag(0), buf)?;
            b.recv(prev, c.tag(0), |m| out.copy_from_slice(m))
        }
    }
}

/// Device seconds for `iters` collectives of message size `bytes` (f32 elements) among `n`
/// threads: every rank starts at the same device time, and the answer is the latest clock at
/// the end (the slowest rank, as nccl-tests reports).
pub fn run(coll: Coll, n: usize, bytes: usize, iters: u32) -> f64 {
    // A whole number of f32 per rank chunk, so every chunk (and all-to-all block) is equal.
    let len = (bytes / 4 / n).max(1) * n;
    let barrier = Barrier::new(n);
    let end = Mutex::new(0.0f64);
    let members: Vec<usize> = (0..n).collect();
    std::thread::scope(|s| {
        for mut b in mesh(n, false) {
            let (barrier, end, members) = (&barrier, &end, &members);
            s.spawn(move || {
                let mut buf: Vec<f32> = (0..len).map(|i| (i % 97) as f32).collect();
                let mut out = vec![0f32; len];
                barrier.wait();
                b.start_clock(0.0);
                for seq in 0..iters as u64 {
                    let call = Call {
                        members,
                        stream: 1,
                        seq,
                    };
                    collective(&mut b, coll, &call, &mut buf, &mut out)
                        .expect("every rank of the probe runs to the end");
                }
                let t = b.clock.now();
                let mut e = end.lock().expect("no rank panics");
                *e = e.max(t);
                std::hint::black_box((&buf, &out));
            });
        }
    });
    end.into_inner().expect("no rank panics")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one collective on `n` threads with rank r's buffer holding r + 1 everywhere and
    /// returns every rank's (buf, out).
    fn results(coll: Coll, n: usize, len: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
        let res = Mutex::new(vec![(Vec::new(), Vec::new()); n]);
        let members: Vec<usize> = (0..n).collect();
        std::thread::scope(|s| {
            for mut b in mesh(n, false) {
                let (res, members) = (&res, &members);
                s.spawn(move || {
                    let r = b.rank;
                    let mut buf: Vec<f32> = (0..len)
                        .map(|i| {
                            if coll == Coll::AllGather {
                                (i * n / len + 1) as f32 * (r == i * n / len) as u8 as f32
                            } else {
                                (r + 1) as f32
                            }
                        })
                        .collect();
                    let mut out = vec![0f32; len];
                    let call = Call {
                        members,
                        stream: 1,
                        seq: 0,
                    };
                    collective(&mut b, coll, &call, &mut buf, &mut out).unwrap();
                    res.lock().unwrap()[r] = (buf, out);
                });
            }
        });
        res.into_inner().unwrap()
    }

    #[test]
    fn ring_all_reduce_sums_every_element_on_every_rank() {
        // 4 ranks holding 1, 2, 3, 4: every element becomes 10; 10 elements split 2,3,2,3.
        for (buf, _) in results(Coll::AllReduce, 4, 10) {
            assert_eq!(buf, vec![10.0; 10]);
        }
    }

    #[test]
    fn ring_reduce_scatter_leaves_each_rank_one_reduced_chunk() {
        // After n − 1 steps rank r holds the full sum (1+2+3 = 6) in chunk (r + 1) mod 3.
        for (r, (buf, _)) in results(Coll::ReduceScatter, 3, 6).into_iter().enumerate() {
            let c = chunk(6, 3, (r + 1) % 3);
            assert_eq!(&buf[c], &[6.0, 6.0]);
        }
    }

    #[test]
    fn ring_all_gather_collects_every_chunk() {
        // Rank r starts with only its chunk r (value r + 1): afterwards all hold [1,1,2,2,3,3].
        for (buf, _) in results(Coll::AllGather, 3, 6) {
            assert_eq!(buf, vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
        }
    }

    #[test]
    fn all_to_all_and_sendrecv_deliver_from_the_right_peer() {
        // All-to-all: rank r's chunk j comes from rank j (value j + 1).
        for (r, (_, out)) in results(Coll::AllToAll, 3, 3).into_iter().enumerate() {
            for j in (0..3).filter(|&j| j != r) {
                assert_eq!(out[j], (j + 1) as f32);
            }
        }
        // Send/receive around the ring: rank r receives rank r − 1's data.
        for (r, (_, out)) in results(Coll::SendRecv, 3, 4).into_iter().enumerate() {
            assert_eq!(out, vec![((r + 2) % 3 + 1) as f32; 4]);
        }
    }

    #[test]
    fn every_collective_runs_on_group_sizes_that_do_not_divide_the_message() {
        // 4096 B = 1024 f32 over 3 or 7 ranks: chunks are rounded to whole elements per rank
        // (an uneven all-to-all block once panicked here).
        for coll in [
            Coll::AllReduce,
            Coll::AllGather,
            Coll::ReduceScatter,
            Coll::AllToAll,
            Coll::SendRecv,
        ] {
            for n in [2, 3, 7] {
                assert!(run(coll, n, 4096, 2) > 0.0, "{coll:?} on {n}");
            }
        }
    }

    #[test]
    fn messages_wanted_later_wait_and_a_late_sender_pulls_the_clock() {
        // Rank 0 sends tag B then tag A; rank 1 asks for A first. Rank 0's clock is pushed
        // 1 s ahead before sending, so rank 1 waits about 1 s of device time, blocking or
        // busy alike.
        for busy_wait in [false, true] {
            let mut boxes = mesh(2, busy_wait);
            let mut b1 = boxes.pop().unwrap();
            let mut b0 = boxes.pop().unwrap();
            let t = std::thread::spawn(move || {
                b0.start_clock(1.0);
                b0.send(1, (0, 2), &[2.0]).unwrap();
                b0.send(1, (0, 1), &[1.0]).unwrap();
                b0
            });
            b1.start_clock(0.0);
            let mut got = Vec::new();
            let waited = b1.recv(0, (0, 1), |m| got.extend_from_slice(m)).unwrap();
            b1.recv(0, (0, 2), |m| got.extend_from_slice(m)).unwrap();
            assert_eq!(got, vec![1.0, 2.0]);
            assert!((waited - 1.0).abs() < 0.05, "busy {busy_wait}: {waited}");
            drop(t.join().unwrap());
        }
    }

    #[test]
    fn a_busy_waiting_rank_computes_off_its_clock() {
        // Rank 0 sends after 200 ms of wall time, at device time 0.5 s; rank 1 waits from 0.
        // Busy-waiting, rank 1 runs filler GEMMs meanwhile, yet its device clock jumps
        // exactly to the sender's stamp: the filler's time is not the device's.
        let mut boxes = mesh(2, true);
        let mut b1 = boxes.pop().unwrap();
        let mut b0 = boxes.pop().unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            b0.start_clock(0.5);
            b0.send(1, (0, 1), &[1.0]).unwrap();
            b0
        });
        b1.start_clock(0.0);
        let waited = b1.recv(0, (0, 1), |_| {}).unwrap();
        let calls = b1.filler.as_ref().map_or(0, |f| f.calls);
        assert!(calls > 0, "the waiting rank ran no filler GEMM");
        assert!((waited - 0.5).abs() < 0.002, "{waited}");
        assert!((b1.clock.now() - 0.5).abs() < 0.002, "{}", b1.clock.now());
        drop(t.join().unwrap());
    }
}
