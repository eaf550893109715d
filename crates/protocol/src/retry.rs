//! Which failures are retried, how often and after how long (fal-api.md §6): the defaults, the
//! per-operation overrides of `@fal-ai/client` 1.10.1, and the backoff formula.

/// `DEFAULT_RETRYABLE_STATUS_CODES`.
pub const DEFAULT_RETRYABLE_STATUS_CODES: [u16; 4] = [429, 502, 503, 504];

#[derive(Debug, Clone, PartialEq)]
pub struct RetryOptions {
    pub max_retries: u32,
    /// Milliseconds.
    pub base_delay: f64,
    /// Milliseconds.
    pub max_delay: f64,
    pub backoff_multiplier: f64,
    pub retryable_status_codes: Vec<u16>,
    pub enable_jitter: bool,
}

impl Default for RetryOptions {
    /// `DEFAULT_RETRY_OPTIONS`.
    fn default() -> Self {
        RetryOptions {
            max_retries: 3,
            base_delay: 1000.0,
            max_delay: 30_000.0,
            backoff_multiplier: 2.0,
            retryable_status_codes: DEFAULT_RETRYABLE_STATUS_CODES.to_vec(),
            enable_jitter: true,
        }
    }
}

/// The client operations whose retry settings differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Run,
    Submit,
    Result,
    /// One status poll.
    Status,
    /// Cancel, storage initiate, token fetch, server-mode streams: the configured options as they are.
    Other,
}

impl RetryOptions {
    /// The options an operation uses, given the configured ones (`{...config.retry, ...perCall}`).
    pub fn for_operation(&self, op: Operation) -> RetryOptions {
        let mut o = self.clone();
        match op {
            Operation::Run => {
                o.max_retries = 3;
                o.base_delay = 500.0;
                o.max_delay = 15_000.0;
            }
            Operation::Submit | Operation::Result => {
                o.max_retries = 3;
                o.base_delay = 1000.0;
                o.max_delay = 60_000.0;
                o.retryable_status_codes = DEFAULT_RETRYABLE_STATUS_CODES.to_vec();
            }
            Operation::Status => {
                o.max_retries = 5;
                o.base_delay = 1000.0;
                o.max_delay = 30_000.0;
                o.retryable_status_codes = [500]
                    .into_iter()
                    .chain(DEFAULT_RETRYABLE_STATUS_CODES)
                    .collect();
            }
            Operation::Other => {}
        }
        o
    }

    /// Whether an HTTP error is retried: never a user start-timeout (504 with timeout type
    /// `user`), otherwise when its status is listed.
    pub fn is_retryable_status(&self, status: u16, timeout_type: Option<&str>) -> bool {
        let user_timeout = status == 504 && timeout_type == Some("user");
        !user_timeout && self.retryable_status_codes.contains(&status)
    }

    /// The delay before retry number `attempt` (0-based), in ms. `unit` is a uniform sample in
    /// [0, 1) for the ±25% jitter (ignored without jitter).
    pub fn backoff_delay(&self, attempt: u32, unit: f64) -> f64 {
        let d =
            (self.base_delay * self.backoff_multiplier.powi(attempt as i32)).min(self.max_delay);
        if !self.enable_jitter {
            return d;
        }
        (d + 0.25 * d * (unit * 2.0 - 1.0)).max(0.0)
    }

    /// How many HTTP attempts a request that always answers `status` gets.
    pub fn attempts_for_status(&self, status: u16, timeout_type: Option<&str>) -> u32 {
        if self.is_retryable_status(status, timeout_type) {
            self.max_retries + 1
        } else {
            1
        }
    }
}

/// Network error codes that are retried (Node's and undici's), wherever they are in a cause chain.
pub const RETRYABLE_NETWORK_CODES: [&str; 13] = [
    "ECONNABORTED",
    "ECONNREFUSED",
    "ECONNRESET",
    "EAI_AGAIN",
    "EHOSTUNREACH",
    "ENETUNREACH",
    "ENOTFOUND",
    "EPIPE",
    "ETIMEDOUT",
    "UND_ERR_BODY_TIMEOUT",
    "UND_ERR_CONNECT_TIMEOUT",
    "UND_ERR_HEADERS_TIMEOUT",
    "UND_ERR_SOCKET",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Appendix A, t2.js: how many attempts each failure gets.
    #[test]
    fn attempt_counts_of_the_transcript() {
        let config = RetryOptions::default();
        let run = config.for_operation(Operation::Run);
        assert_eq!(run.attempts_for_status(422, None), 1);
        assert_eq!(
            run.attempts_for_status(500, None),
            1,
            "500 is not retried on run"
        );
        assert_eq!(run.attempts_for_status(502, None), 4);
        assert_eq!(
            run.attempts_for_status(504, Some("user")),
            1,
            "a user start-timeout is final"
        );
        assert_eq!(
            config
                .for_operation(Operation::Status)
                .attempts_for_status(500, None),
            6
        );
        assert_eq!(
            config
                .for_operation(Operation::Submit)
                .attempts_for_status(502, None),
            4
        );
        assert_eq!(
            config
                .for_operation(Operation::Other)
                .attempts_for_status(502, None),
            4
        );
    }

    #[test]
    fn nominal_delays_of_each_table() {
        let no_jitter = RetryOptions {
            enable_jitter: false,
            ..Default::default()
        };
        let delays =
            |o: &RetryOptions, n: u32| (0..n).map(|a| o.backoff_delay(a, 0.5)).collect::<Vec<_>>();
        assert_eq!(delays(&no_jitter, 3), [1000.0, 2000.0, 4000.0]);
        assert_eq!(
            delays(&no_jitter.for_operation(Operation::Run), 3),
            [500.0, 1000.0, 2000.0]
        );
        assert_eq!(
            delays(&no_jitter.for_operation(Operation::Status), 5),
            [1000.0, 2000.0, 4000.0, 8000.0, 16000.0]
        );
        // Capped by max_delay.
        assert_eq!(no_jitter.backoff_delay(10, 0.5), 30_000.0);
    }

    #[test]
    fn jitter_is_plus_or_minus_a_quarter() {
        let o = RetryOptions::default();
        assert_eq!(o.backoff_delay(1, 0.0), 1500.0);
        assert_eq!(o.backoff_delay(1, 0.5), 2000.0);
        assert!((o.backoff_delay(1, 0.999_999) - 2500.0).abs() < 0.01);
    }

    #[test]
    fn a_configured_list_applies_to_run_but_not_to_the_queue() {
        let config = RetryOptions {
            retryable_status_codes: vec![500],
            ..Default::default()
        };
        assert!(
            config
                .for_operation(Operation::Run)
                .is_retryable_status(500, None)
        );
        assert!(
            !config
                .for_operation(Operation::Submit)
                .is_retryable_status(500, None)
        );
        assert!(
            config
                .for_operation(Operation::Submit)
                .is_retryable_status(503, None)
        );
    }
}
