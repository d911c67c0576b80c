//! The background task: heartbeats at the server-set interval with jitter and backoff, and the periodic
//! refresh of the snapshot and trusted time in between.

use super::Agent;

impl Agent {
    /// Runs heartbeats in the background at the server-set interval, with ±10 % jitter and exponential
    /// backoff (from 15 s, capped at the interval) while the server is unreachable. Also refreshes the snapshot
    /// from the state file every minute (picks up codes applied by another process) and persists local time.
    /// Call from within a Tokio runtime; abort the returned handle to stop.
    pub fn spawn_heartbeats(&self) -> tokio::task::JoinHandle<()> {
        let agent = self.clone();
        tokio::spawn(async move { agent.heartbeat_loop().await })
    }

    async fn heartbeat_loop(&self) {
        let mut failures: u32 = 0;
        let mut next_beat = tokio::time::Instant::now();
        loop {
            let now = tokio::time::Instant::now();
            if now >= next_beat {
                if self.is_online_activated() {
                    match self.heartbeat().await {
                        Ok(o) => {
                            failures = 0;
                            tracing::info!(
                                status = o.activation_status.as_str(),
                                usage_acknowledged = o.usage_acknowledged,
                                "heartbeat"
                            );
                            let interval = std::time::Duration::from_secs(u64::from(o.next_heartbeat_secs.max(1)));
                            let lease_left = self.snapshot().lease_expires_at.map(|l| {
                                (l - self.inner.config.clock.now()).to_std().unwrap_or(std::time::Duration::ZERO)
                            });
                            next_beat = now + next_heartbeat_in(jitter(interval), interval, lease_left);
                        }
                        Err(e) => {
                            failures = failures.saturating_add(1);
                            let delay = backoff(failures, self.heartbeat_interval());
                            tracing::warn!(error = %e, retry_in_secs = delay.as_secs(), "heartbeat failed");
                            next_beat = now + delay;
                        }
                    }
                } else {
                    next_beat = now + std::time::Duration::from_secs(60);
                }
            } else {
                if let Err(e) = self.refresh() {
                    tracing::warn!(error = %e, "could not re-read the state file");
                }
                if let Err(e) = self.touch_clock() {
                    tracing::warn!(error = %e, "could not persist the trusted time");
                }
            }
            let wait = next_beat
                .saturating_duration_since(tokio::time::Instant::now())
                .min(std::time::Duration::from_secs(60));
            tokio::time::sleep(wait.max(std::time::Duration::from_millis(50))).await;
        }
    }
}

fn random_unit() -> f64 {
    let mut b = [0u8; 4];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    f64::from(u32::from_be_bytes(b)) / f64::from(u32::MAX)
}

/// When the next heartbeat is due: after the (jittered) interval, but early enough that the lease cannot
/// lapse before it: at most the lease left less a margin (a tenth of the interval, at least 5 s), and never
/// sooner than a second from now.
pub fn next_heartbeat_in(
    jittered: std::time::Duration,
    interval: std::time::Duration,
    lease_left: Option<std::time::Duration>,
) -> std::time::Duration {
    let margin = (interval / 10).max(std::time::Duration::from_secs(5));
    match lease_left {
        Some(left) => jittered.min(left.saturating_sub(margin)).max(std::time::Duration::from_secs(1)),
        None => jittered,
    }
}

/// `d` ± 10 %.
pub fn jitter(d: std::time::Duration) -> std::time::Duration {
    d.mul_f64(0.9 + 0.2 * random_unit())
}

/// Exponential backoff after `failures` consecutive failures: 15 s, 30 s, 60 s … capped at `cap`, with jitter.
pub fn backoff(failures: u32, cap: std::time::Duration) -> std::time::Duration {
    let base = std::time::Duration::from_secs(15).saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    jitter(base.min(cap.max(std::time::Duration::from_secs(1))))
}
