//! Token-bucket rate limits, in memory, per key (client IP, license key hash).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

const SHARDS: usize = 16;
const MAX_ENTRIES_PER_SHARD: usize = 50_000;

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    shards: Vec<Mutex<HashMap<Vec<u8>, Bucket>>>,
}

impl RateLimiter {
    /// `rate` tokens per second, up to `burst`; a rate of 0 disables the limit.
    pub fn new(rate: f64, burst: f64) -> RateLimiter {
        RateLimiter { rate, burst: burst.max(1.0), shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    /// Takes one token for `key`; `Err(seconds)` to wait when none is left.
    pub fn check(&self, key: &[u8]) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let shard = key.iter().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(*b as usize)) % SHARDS;
        let mut map = self.shards[shard].lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if map.len() > MAX_ENTRIES_PER_SHARD {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < burst);
        }
        // Look up by slice first: a known caller costs no allocation.
        if !map.contains_key(key) {
            map.insert(key.to_vec(), Bucket { tokens: self.burst, last: now });
        }
        let Some(b) = map.get_mut(key) else { return Ok(()) };
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse() {
        let l = RateLimiter::new(1.0, 3.0);
        for _ in 0..3 {
            assert!(l.check(b"a").is_ok());
        }
        assert_eq!(l.check(b"a"), Err(1));
        assert!(l.check(b"b").is_ok());
        assert!(RateLimiter::new(0.0, 0.0).check(b"a").is_ok());
    }
}
