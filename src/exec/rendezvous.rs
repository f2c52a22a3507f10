//! Multi-process rendezvous over TCP, torchrun-style: every process knows its RANK, the
//! WORLD_SIZE and where rank 0 listens (MASTER_ADDR:MASTER_PORT). Rank 0 accepts the others;
//! then ranks can gather small blobs from all (host names, device counts) and receive a blob
//! from rank 0 (an NCCL unique id). Used by `calibrate` and, later, `verify`.

use super::ExecError;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// This process's place in the job, from the launcher's environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    /// RANK.
    pub rank: u64,
    /// WORLD_SIZE.
    pub world: u64,
    /// MASTER_ADDR.
    pub addr: String,
    /// MASTER_PORT.
    pub port: u16,
}

fn err(m: impl Into<String>) -> ExecError {
    ExecError::Rendezvous(m.into())
}

impl Env {
    /// Reads RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT through `get` (the environment in
    /// the binary). `None` when WORLD_SIZE is unset or 1: a single process.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Env>, ExecError> {
        let num = |k: &str| -> Result<Option<u64>, ExecError> {
            get(k)
                .map(|v| {
                    v.trim()
                        .parse()
                        .map_err(|_| err(format!("{k}={v} is not a number")))
                })
                .transpose()
        };
        let world = num("WORLD_SIZE")?.unwrap_or(1);
        if world <= 1 {
            return Ok(None);
        }
        let rank = num("RANK")?.ok_or_else(|| err("WORLD_SIZE is set but RANK is not"))?;
        if rank >= world {
            return Err(err(format!("RANK={rank} must be below WORLD_SIZE={world}")));
        }
        let addr = get("MASTER_ADDR").ok_or_else(|| err("set MASTER_ADDR to rank 0's host"))?;
        let port = num("MASTER_PORT")?
            .ok_or_else(|| err("set MASTER_PORT to a free port on rank 0's host"))?;
        let port =
            u16::try_from(port).map_err(|_| err(format!("MASTER_PORT={port} is not a port")))?;
        Ok(Some(Env {
            rank,
            world,
            addr,
            port,
        }))
    }
}

/// A connected job: rank 0 holds a stream to every other rank, the others one to rank 0.
#[derive(Debug)]
pub struct Rendezvous {
    /// This rank.
    pub rank: u64,
    /// Ranks in the job.
    pub world: u64,
    /// Rank 0: streams to ranks 1..world, in rank order. Others: the stream to rank 0.
    links: Vec<TcpStream>,
}

/// One write of length and payload together: two small writes would meet Nagle's algorithm
/// and the peer's delayed ACK (~40 ms per message on Linux), which a per-step barrier pays.
fn send(s: &mut TcpStream, data: &[u8]) -> Result<(), ExecError> {
    let len = u32::try_from(data.len()).map_err(|_| err("message too large"))?;
    let mut msg = Vec::with_capacity(4 + data.len());
    msg.extend_from_slice(&len.to_le_bytes());
    msg.extend_from_slice(data);
    s.write_all(&msg).map_err(|e| err(format!("send: {e}")))
}

fn recv(s: &mut TcpStream) -> Result<Vec<u8>, ExecError> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)
        .map_err(|e| err(format!("receive: {e} (did a peer stop?)")))?;
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut buf)
        .map_err(|e| err(format!("receive: {e}")))?;
    Ok(buf)
}

impl Rendezvous {
    /// Joins the job described by `env`, waiting up to `timeout` for the others (reads may
    /// then block as long as a phase of the job lasts).
    pub fn join(env: &Env, timeout: Duration) -> Result<Rendezvous, ExecError> {
        if env.rank == 0 {
            let l = TcpListener::bind(("0.0.0.0", env.port))
                .map_err(|e| err(format!("rank 0 cannot listen on port {}: {e}", env.port)))?;
            Rendezvous::serve(l, env.world, timeout)
        } else {
            Rendezvous::connect(env, timeout)
        }
    }

    /// Rank 0 on an already bound listener: accepts world − 1 ranks, each announcing itself.
    pub fn serve(l: TcpListener, world: u64, timeout: Duration) -> Result<Rendezvous, ExecError> {
        let deadline = Instant::now() + timeout;
        l.set_nonblocking(true).map_err(|e| err(e.to_string()))?;
        let mut slots: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
        while slots.iter().any(Option::is_none) {
            match l.accept() {
                Ok((mut s, peer)) => {
                    s.set_nonblocking(false).map_err(|e| err(e.to_string()))?;
                    s.set_nodelay(true).map_err(|e| err(e.to_string()))?;
                    // The hello must arrive before the join deadline: a connection that says
                    // nothing (a port scanner, a wrong MASTER_PORT) must not hang rank 0.
                    let left = deadline
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1));
                    s.set_read_timeout(Some(left))
                        .map_err(|e| err(e.to_string()))?;
                    let r = recv(&mut s).map_err(|e| {
                        err(format!(
                            "{peer} connected to MASTER_PORT but did not say its RANK within \
                             {timeout:?} ({e}); is another program using port {}?",
                            l.local_addr().map(|a| a.port()).unwrap_or(0)
                        ))
                    })?;
                    s.set_read_timeout(None).map_err(|e| err(e.to_string()))?;
                    let r = u64::from_le_bytes(r.try_into().map_err(|_| err("bad hello"))?);
                    match slots.get_mut((r as usize).wrapping_sub(1)) {
                        Some(slot @ None) => *slot = Some(s),
                        _ => return Err(err(format!("unexpected or repeated RANK={r}"))),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        let missing = slots.iter().filter(|s| s.is_none()).count();
                        return Err(err(format!(
                            "{missing} rank(s) did not join within {timeout:?}"
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(err(e.to_string())),
            }
        }
        Ok(Rendezvous {
            rank: 0,
            world,
            links: slots.into_iter().flatten().collect(),
        })
    }

    fn connect(env: &Env, timeout: Duration) -> Result<Rendezvous, ExecError> {
        let deadline = Instant::now() + timeout;
        let addr = (env.addr.as_str(), env.port)
            .to_socket_addrs()
            .map_err(|e| err(format!("MASTER_ADDR={}: {e}", env.addr)))?
            .next()
            .ok_or_else(|| err(format!("MASTER_ADDR={} resolves to nothing", env.addr)))?;
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(mut s) => {
                    s.set_nodelay(true).ok();
                    send(&mut s, &env.rank.to_le_bytes())?;
                    return Ok(Rendezvous {
                        rank: env.rank,
                        world: env.world,
                        links: vec![s],
                    });
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(err(format!("cannot reach rank 0 at {addr}: {e}")));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Every rank's `mine`, in rank order, on every rank.
    pub fn all_gather(&mut self, mine: &[u8]) -> Result<Vec<Vec<u8>>, ExecError> {
        if self.rank == 0 {
            let mut all = vec![mine.to_vec()];
            for s in &mut self.links {
                all.push(recv(s)?);
            }
            let packed = pack(&all);
            for s in &mut self.links {
                send(s, &packed)?;
            }
            Ok(all)
        } else {
            send(&mut self.links[0], mine)?;
            unpack(&recv(&mut self.links[0])?)
        }
    }

    /// Rank 0's `data` on every rank (others pass `None`).
    pub fn broadcast(&mut self, data: Option<&[u8]>) -> Result<Vec<u8>, ExecError> {
        if self.rank == 0 {
            let d = data.ok_or_else(|| err("rank 0 must give the data to broadcast"))?;
            for s in &mut self.links {
                send(s, d)?;
            }
            Ok(d.to_vec())
        } else {
            recv(&mut self.links[0])
        }
    }

    /// Returns once every rank has called it.
    pub fn barrier(&mut self) -> Result<(), ExecError> {
        self.all_gather(&[]).map(|_| ())
    }
}

fn pack(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

fn unpack(mut b: &[u8]) -> Result<Vec<Vec<u8>>, ExecError> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 4 {
            return Err(err("truncated message"));
        }
        let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let rest = b.get(4..4 + n).ok_or_else(|| err("truncated message"))?;
        out.push(rest.to_vec());
        b = &b[4 + n..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(kv: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| kv.iter().find(|(a, _)| *a == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn environment_is_read_and_checked() {
        assert_eq!(Env::from_vars(vars(&[])).unwrap(), None);
        let e = Env::from_vars(vars(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((e.rank, e.world, e.port), (1, 2, 29500));
        let bad = Env::from_vars(vars(&[("WORLD_SIZE", "2"), ("RANK", "2")]));
        assert!(bad.unwrap_err().to_string().contains("RANK=2"));
        let bad = Env::from_vars(vars(&[("WORLD_SIZE", "2"), ("RANK", "1")]));
        assert!(bad.unwrap_err().to_string().contains("MASTER_ADDR"));
    }

    #[test]
    fn a_silent_connection_is_an_error_not_a_hang() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let _silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let e = Rendezvous::serve(l, 2, Duration::from_millis(300)).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("did not say its RANK"), "{m}");
        assert!(m.contains(&format!("port {port}")), "{m}");
    }

    #[test]
    fn sockets_on_both_sides_send_without_delay() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let peer = std::thread::spawn(move || {
            let env = Env {
                rank: 1,
                world: 2,
                addr: "127.0.0.1".into(),
                port,
            };
            let r = Rendezvous::join(&env, Duration::from_secs(20)).unwrap();
            r.links[0].nodelay().unwrap()
        });
        let r0 = Rendezvous::serve(l, 2, Duration::from_secs(20)).unwrap();
        assert!(r0.links[0].nodelay().unwrap());
        assert!(peer.join().unwrap());
    }

    #[test]
    fn three_processes_gather_and_broadcast() {
        // Three ranks on threads over loopback TCP.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = Duration::from_secs(20);
        let peers: Vec<_> = (1..3u64)
            .map(|rank| {
                std::thread::spawn(move || {
                    let env = Env {
                        rank,
                        world: 3,
                        addr: "127.0.0.1".into(),
                        port,
                    };
                    let mut r = Rendezvous::join(&env, t).unwrap();
                    let all = r.all_gather(&[rank as u8; 2]).unwrap();
                    let b = r.broadcast(None).unwrap();
                    r.barrier().unwrap();
                    (all, b)
                })
            })
            .collect();
        let mut r0 = Rendezvous::serve(l, 3, t).unwrap();
        let all = r0.all_gather(&[0, 0]).unwrap();
        assert_eq!(all, vec![vec![0, 0], vec![1, 1], vec![2, 2]]);
        assert_eq!(r0.broadcast(Some(b"nccl-id")).unwrap(), b"nccl-id");
        r0.barrier().unwrap();
        for p in peers {
            let (all_p, b) = p.join().unwrap();
            assert_eq!(all_p, all);
            assert_eq!(b, b"nccl-id");
        }
    }
}
