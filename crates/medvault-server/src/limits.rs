//! Per-account limits on reading patient data: each answer counts once for every patient
//! whose data it carries; past the limit within a window the account's reads are refused
//! (429 with Retry-After) until the window ends, and an alert is raised once per window.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::ledger::AlertHook;

/// How much patient data one account may read.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    /// Patient records (counted per answer) per window.
    pub max: u64,
    /// The window, in milliseconds.
    pub window_ms: i64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max: 1000,
            window_ms: 3_600_000,
        }
    }
}

#[derive(Clone, Copy)]
struct Window {
    start_ms: i64,
    count: u64,
    alerted: bool,
}

/// The counters of every account in its current window (in memory: a restart starts
/// them again, which errs on the side of availability).
pub struct ReadLimiter {
    limits: ReadLimits,
    windows: Mutex<HashMap<String, Window>>,
    alert: Mutex<Option<AlertHook>>,
}

impl ReadLimiter {
    pub fn new(limits: ReadLimits) -> ReadLimiter {
        ReadLimiter {
            limits,
            windows: Mutex::new(HashMap::new()),
            alert: Mutex::new(None),
        }
    }

    pub fn limits(&self) -> ReadLimits {
        self.limits
    }

    /// Run `hook` (with a description) when an account first exceeds its limit in a window.
    pub fn set_alert(&self, hook: AlertHook) {
        *self.alert.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    fn current(&self, map: &mut HashMap<String, Window>, account: &str, now_ms: i64) -> Window {
        let fresh = Window {
            start_ms: now_ms,
            count: 0,
            alerted: false,
        };
        let w = map.entry(account.to_string()).or_insert(fresh);
        if now_ms >= w.start_ms.saturating_add(self.limits.window_ms) || now_ms < w.start_ms {
            *w = fresh;
        }
        *w
    }

    /// `Err(seconds to wait)` if `account` has used up its window.
    pub fn check(&self, account: &str, now_ms: i64) -> Result<(), u64> {
        let mut map = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        // Forget windows that ended, so the map does not grow with every account ever seen.
        if map.len() > 10_000 {
            let window = self.limits.window_ms;
            map.retain(|_, w| now_ms < w.start_ms.saturating_add(window));
        }
        let w = self.current(&mut map, account, now_ms);
        if w.count >= self.limits.max {
            let end = w.start_ms.saturating_add(self.limits.window_ms);
            let wait = (end - now_ms).max(0) as u64;
            return Err(wait.div_ceil(1000).max(1));
        }
        Ok(())
    }

    /// Count `records` read by `account`; raises the alert the first time the window's
    /// count reaches the limit.
    pub fn add(&self, account: &str, records: u64, now_ms: i64) {
        let crossed = {
            let mut map = self.windows.lock().unwrap_or_else(|e| e.into_inner());
            let mut w = self.current(&mut map, account, now_ms);
            w.count = w.count.saturating_add(records);
            let crossed = w.count >= self.limits.max && !w.alerted;
            if crossed {
                w.alerted = true;
            }
            map.insert(account.to_string(), w);
            crossed
        };
        if crossed {
            // The account id is not PHI; it tells the operator whom to look at.
            tracing::warn!(
                account,
                "PHI read limit reached; further reads refused until the window ends"
            );
            let hook = self.alert.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(hook) = hook {
                hook(format!(
                    "account {account} read {} or more patient records within {} s",
                    self.limits.max,
                    self.limits.window_ms / 1000
                ));
            }
        }
    }
}
