//! A memo of ILP results keyed by their exact inputs (every coefficient's bits and the
//! solver options), shared by all searches of a process: the same instance is never solved
//! twice. Deterministic: a hit returns what solving would.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Entries kept before the memo is emptied (a long-running process stays bounded).
const CAPACITY: usize = 1 << 16;

/// The exact inputs of one ILP instance, as words.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Key(Vec<u64>);

impl Key {
    /// Appends a number (its exact bits).
    pub fn f(&mut self, x: f64) -> &mut Key {
        self.0.push(x.to_bits());
        self
    }

    /// Appends an integer.
    pub fn u(&mut self, x: u64) -> &mut Key {
        self.0.push(x);
        self
    }
}

/// Results by key, with hit and miss counters.
pub struct Memo<V> {
    map: Mutex<HashMap<Key, V>>,
    hits: AtomicUsize,
    misses: AtomicUsize,
}

impl<V: Clone> Default for Memo<V> {
    fn default() -> Self {
        Memo {
            map: Mutex::new(HashMap::new()),
            hits: AtomicUsize::new(0),
            misses: AtomicUsize::new(0),
        }
    }
}

impl<V: Clone> Memo<V> {
    /// The value for `key`, computed by `f` (outside the lock) on the first request.
    pub fn get_or_compute(&self, key: Key, f: impl FnOnce() -> V) -> V {
        if let Some(v) = self.lock().get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return v.clone();
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let v = f();
        let mut map = self.lock();
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(key, v.clone());
        v
    }

    /// (hits, misses) so far.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, V>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computes_once_per_key() {
        let m: Memo<f64> = Memo::default();
        let mut k = Key::default();
        k.f(1.5).u(3);
        let mut calls = 0;
        let a = m.get_or_compute(k.clone(), || {
            calls += 1;
            2.0
        });
        let b = m.get_or_compute(k, || {
            calls += 1;
            3.0
        });
        assert_eq!((a, b, calls), (2.0, 2.0, 1));
        assert_eq!(m.counts(), (1, 1));
        let mut other = Key::default();
        other.f(1.5).u(4);
        assert_eq!(m.get_or_compute(other, || 5.0), 5.0);
    }
}
