//! Device time for threads standing for devices. A thread-device's clock advances by the CPU
//! time its thread runs (`CLOCK_THREAD_CPUTIME_ID`), and jumps forward to a sender's clock when
//! it receives a message stamped later than its own (Lamport 1978, "Time, Clocks, and the
//! Ordering of Events"). So other processes sharing the host's cores do not slow a device down,
//! more ranks than cores still behave as devices with a core each, and a device never runs
//! ahead of the data it waits for: the latest clock at the end of a step is the step's
//! critical path.

/// CPU seconds the calling thread has run.
pub fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// One thread-device's clock, in seconds. Create it on the thread it measures.
#[derive(Debug)]
pub struct DeviceClock {
    offset: f64,
}

impl Default for DeviceClock {
    fn default() -> Self {
        DeviceClock::new()
    }
}

impl DeviceClock {
    /// A clock reading 0 now.
    pub fn new() -> DeviceClock {
        DeviceClock {
            offset: -thread_cpu_s(),
        }
    }

    /// The device time now.
    pub fn now(&self) -> f64 {
        thread_cpu_s() + self.offset
    }

    /// Takes `s` seconds the thread ran off the device's clock: work that is not the
    /// device's (a waiting rank keeping its core busy, `cpu_comm::Mailbox::recv`).
    pub fn exclude(&mut self, s: f64) {
        self.offset -= s.max(0.0);
    }

    /// Moves the clock forward to `t` if it reads less (a message stamped `t` arrived, or a
    /// barrier released at `t`); returns how far it moved: the time the device waited.
    pub fn advance_to(&mut self, t: f64) -> f64 {
        let now = self.now();
        if t > now {
            self.offset += t - now;
            t - now
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_does_not_advance_device_time_but_messages_do() {
        let mut c = DeviceClock::new();
        let t0 = c.now();
        // Sleeping uses no CPU: the device clock stands almost still (scheduler noise only).
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(c.now() - t0 < 0.01, "{}", c.now() - t0);
        // A message stamped 1 s later pulls the clock forward by (almost exactly) 1 s.
        let waited = c.advance_to(t0 + 1.0);
        assert!((waited - 1.0).abs() < 0.01, "{waited}");
        assert!(c.now() >= t0 + 1.0);
        // An older stamp changes nothing.
        assert_eq!(c.advance_to(t0), 0.0);
    }
}
