//! Local ranks of a multi-process job: `verify --backend cuda` starts ranks 1.. of a plan on
//! this node's GPUs as child processes of the same binary, with the environment a launcher
//! would give them (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), and is rank 0
//! itself, listening on a free local port for the rendezvous.

use super::ExecError;
use std::ffi::OsString;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

fn io(call: &str, e: std::io::Error) -> ExecError {
    ExecError::Device {
        backend: "cuda",
        call: call.into(),
        message: e.to_string(),
    }
}

/// Ranks 1..world running as child processes (stopped if dropped unfinished).
#[derive(Debug)]
pub struct LocalRanks {
    children: Vec<Child>,
}

impl LocalRanks {
    /// Starts ranks 1..`world` as `current_exe args…`; returns them and the listener rank 0
    /// serves the rendezvous on (`Rendezvous::serve`).
    pub fn start(args: &[OsString], world: u64) -> Result<(LocalRanks, TcpListener), ExecError> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| io("bind", e))?;
        let port = listener.local_addr().map_err(|e| io("bind", e))?.port();
        let exe = std::env::current_exe().map_err(|e| io("current_exe", e))?;
        let mut ranks = LocalRanks {
            children: Vec::new(),
        };
        for rank in 1..world {
            let child = Command::new(&exe)
                .args(args)
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| io("spawn", e))?;
            ranks.children.push(child);
        }
        Ok((ranks, listener))
    }

    /// Waits for every rank, stopping them first when `stop` (rank 0 failed); an error names
    /// the first rank that failed.
    pub fn finish(mut self, stop: bool) -> Result<(), ExecError> {
        let mut out = Ok(());
        for (i, mut c) in std::mem::take(&mut self.children).into_iter().enumerate() {
            if stop {
                let _ = c.kill();
            }
            let status = c.wait().map_err(|e| io("wait", e));
            match status {
                Ok(s) if s.success() || stop => {}
                Ok(s) if out.is_ok() => {
                    out = Err(ExecError::Device {
                        backend: "cuda",
                        call: format!("rank {}", i + 1),
                        message: format!("exited with {s}"),
                    })
                }
                Err(e) if out.is_ok() => out = Err(e),
                _ => {}
            }
        }
        out
    }
}

impl Drop for LocalRanks {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
