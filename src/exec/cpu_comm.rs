//! Collectives between threads standing for devices: each rank owns its buffers and moves
//! real data through channels to its peers, with NCCL's ring algorithms (Patarasuk & Yuan
//! 2009: reduce-scatter then all-gather around the ring, n − 1 steps each), direct exchange
//! for all-to-all, and ring send/receive as nccl-tests' sendrecv_perf does.

use crate::graph::Coll;
use std::ops::Range;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Barrier, Mutex};
use std::time::Instant;

/// One rank's links: a data channel to and from every peer, and a channel returning spent
/// message buffers to their sender (so steady-state sends do not allocate).
struct Links {
    rank: usize,
    n: usize,
    to: Vec<Option<Sender<Vec<f32>>>>,
    from: Vec<Option<Receiver<Vec<f32>>>>,
    give_back: Vec<Option<Sender<Vec<f32>>>>,
    returned: Vec<Option<Receiver<Vec<f32>>>>,
}

impl Links {
    fn send(&self, peer: usize, data: &[f32]) {
        let back = self.returned[peer].as_ref().expect("a link to every peer");
        let mut m = back.try_recv().unwrap_or_default();
        m.clear();
        m.extend_from_slice(data);
        self.to[peer]
            .as_ref()
            .expect("a link")
            .send(m)
            .expect("peers outlive the collective");
    }

    /// Receives from `peer` and hands the data to `f`.
    fn recv(&self, peer: usize, f: impl FnOnce(&[f32])) {
        let m = self.from[peer]
            .as_ref()
            .expect("a link")
            .recv()
            .expect("peers outlive the collective");
        f(&m);
        let _ = self.give_back[peer].as_ref().expect("a link").send(m);
    }

    fn next(&self) -> usize {
        (self.rank + 1) % self.n
    }

    fn prev(&self) -> usize {
        (self.rank + self.n - 1) % self.n
    }
}

fn mesh(n: usize) -> Vec<Links> {
    let mut links: Vec<Links> = (0..n)
        .map(|rank| Links {
            rank,
            n,
            to: (0..n).map(|_| None).collect(),
            from: (0..n).map(|_| None).collect(),
            give_back: (0..n).map(|_| None).collect(),
            returned: (0..n).map(|_| None).collect(),
        })
        .collect();
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let (tx, rx) = channel();
                let (btx, brx) = channel();
                links[i].to[j] = Some(tx);
                links[i].returned[j] = Some(brx);
                links[j].from[i] = Some(rx);
                links[j].give_back[i] = Some(btx);
            }
        }
    }
    links
}

fn chunk(len: usize, n: usize, i: usize) -> Range<usize> {
    i * len / n..(i + 1) * len / n
}

/// n − 1 ring steps; at step s rank r sends chunk (r − s + shift) and receives chunk
/// (r − s − 1 + shift), combining it with `reduce` (add) or copying it.
fn ring(l: &Links, buf: &mut [f32], shift: usize, reduce: bool) {
    let (n, len) = (l.n, buf.len());
    for s in 0..n - 1 {
        let send_i = (l.rank + shift + n - s) % n;
        let recv_i = (l.rank + shift + 2 * n - s - 1) % n;
        l.send(l.next(), &buf[chunk(len, n, send_i)]);
        let dst = &mut buf[chunk(len, n, recv_i)];
        l.recv(l.prev(), |m| {
            if reduce {
                dst.iter_mut().zip(m).for_each(|(d, x)| *d += x);
            } else {
                dst.copy_from_slice(m);
            }
        });
    }
}

fn one(coll: Coll, l: &Links, buf: &mut [f32], out: &mut [f32]) {
    let n = l.n;
    match coll {
        Coll::AllReduce => {
            ring(l, buf, 0, true);
            ring(l, buf, 1, false);
        }
        Coll::AllGather => ring(l, buf, 0, false),
        Coll::ReduceScatter => ring(l, buf, 0, true),
        Coll::AllToAll => {
            let len = buf.len();
            for j in (0..n).filter(|&j| j != l.rank) {
                l.send(j, &buf[chunk(len, n, j)]);
            }
            for j in (0..n).filter(|&j| j != l.rank) {
                let dst = &mut out[chunk(len, n, j)];
                l.recv(j, |m| dst.copy_from_slice(m));
            }
        }
        Coll::SendRecv => {
            l.send(l.next(), buf);
            l.recv(l.prev(), |m| out.copy_from_slice(m));
        }
    }
}

/// Seconds for `iters` collectives of message size `bytes` (f32 elements) among `n` threads,
/// timed by rank 0 between two barriers that every rank passes.
pub fn run(coll: Coll, n: usize, bytes: usize, iters: u32) -> f64 {
    // A whole number of f32 per rank chunk, so every chunk (and all-to-all block) is equal.
    let len = (bytes / 4 / n).max(1) * n;
    let barrier = Barrier::new(n);
    let elapsed = Mutex::new(0.0);
    std::thread::scope(|s| {
        for l in mesh(n) {
            let (barrier, elapsed) = (&barrier, &elapsed);
            s.spawn(move || {
                let mut buf: Vec<f32> = (0..len).map(|i| (i % 97) as f32).collect();
                let mut out = vec![0f32; len];
                barrier.wait();
                let t0 = Instant::now();
                for _ in 0..iters {
                    one(coll, &l, &mut buf, &mut out);
                }
                barrier.wait();
                if l.rank == 0 {
                    *elapsed.lock().expect("no rank panics") = t0.elapsed().as_secs_f64();
                }
                std::hint::black_box((&buf, &out));
            });
        }
    });
    elapsed.into_inner().expect("no rank panics")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one collective on `n` threads with rank r's buffer holding r + 1 everywhere and
    /// returns every rank's (buf, out).
    fn results(coll: Coll, n: usize, len: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
        let res = Mutex::new(vec![(Vec::new(), Vec::new()); n]);
        std::thread::scope(|s| {
            for l in mesh(n) {
                let res = &res;
                s.spawn(move || {
                    let mut buf: Vec<f32> = (0..len)
                        .map(|i| {
                            if coll == Coll::AllGather {
                                (i * n / len + 1) as f32 * (l.rank == i * n / len) as u8 as f32
                            } else {
                                (l.rank + 1) as f32
                            }
                        })
                        .collect();
                    let mut out = vec![0f32; len];
                    one(coll, &l, &mut buf, &mut out);
                    res.lock().unwrap()[l.rank] = (buf, out);
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
}
