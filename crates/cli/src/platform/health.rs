//! Health checks of the local platform's services: an HTTP GET with a short timeout, and a
//! wait for one with a deadline that gives up early when the service has exited.

use super::process::{tail, Started};
use std::path::Path;
use std::time::{Duration, Instant};

/// What counts as healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// A 2xx or 3xx answer (curl -f).
    Ok,
    /// Any answer of a running server: 200, or 401 when basic auth is on (the registry).
    AnswersOrAuth,
}

impl Check {
    /// `status` passes this check.
    pub fn accepts(self, status: u16) -> bool {
        match self {
            Check::Ok => (200..400).contains(&status),
            Check::AnswersOrAuth => status == 200 || status == 401,
        }
    }
}

/// One GET of `url` (2 s at most) passes `check`.
pub async fn healthy(http: &reqwest::Client, url: &str, check: Check) -> bool {
    match http.get(url).timeout(Duration::from_secs(2)).send().await {
        Ok(resp) => check.accepts(resp.status().as_u16()),
        Err(_) => false,
    }
}

/// Waits until `url` passes `check`; an error naming the log when the service exits first or
/// is not healthy within `deadline`.
pub async fn wait_healthy(
    http: &reqwest::Client,
    name: &str,
    url: &str,
    check: Check,
    deadline: Duration,
    service: &mut Started,
    log: &Path,
) -> anyhow::Result<()> {
    let until = Instant::now() + deadline;
    while !healthy(http, url, check).await {
        if !service.alive() {
            anyhow::bail!("the {name} exited; last lines of {}:\n{}", log.display(), tail(log, 20));
        }
        if Instant::now() >= until {
            anyhow::bail!(
                "{name} not healthy after {}s; see {}",
                deadline.as_secs(),
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_accept_what_curl_did() {
        assert!(Check::Ok.accepts(200) && Check::Ok.accepts(204) && Check::Ok.accepts(302));
        assert!(!Check::Ok.accepts(401) && !Check::Ok.accepts(503));
        assert!(Check::AnswersOrAuth.accepts(200) && Check::AnswersOrAuth.accepts(401));
        assert!(!Check::AnswersOrAuth.accepts(404) && !Check::AnswersOrAuth.accepts(500));
    }
}
