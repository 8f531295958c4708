//! Prometheus's configuration for the local platform, rendered from
//! `deploy/monitoring/prometheus.yml` (the file that documents the jobs, their intervals and
//! the rules) with each job's target set to the address the configuration gives it.

use std::collections::BTreeMap;
use std::path::Path;

/// Why a template could not be rendered.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A job to point somewhere has no `targets:` line in the template.
    #[error("the prometheus template has no targets for job {0}")]
    MissingJob(String),
}

/// The template with the `targets:` line of every job in `targets` (job name -> `host:port`)
/// replaced by that one address, and relative rule files (`- rules/...`) made absolute under
/// `rules_dir`, so Prometheus can run from any directory. Everything else is kept as written.
pub fn render(
    template: &str,
    targets: &BTreeMap<&str, String>,
    rules_dir: &Path,
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(template.len() + 256);
    let mut job: Option<String> = None;
    let mut done: Vec<String> = Vec::new();
    for line in template.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if let Some(name) = trimmed.strip_prefix("- job_name:") {
            job = Some(name.trim().trim_matches('"').to_owned());
        }
        let target = job.as_deref().and_then(|j| targets.get(j).map(|t| (j, t)));
        match (trimmed.strip_prefix("- targets:"), target) {
            (Some(_), Some((name, addr))) => {
                out.push_str(&format!("{indent}- targets: [\"{addr}\"]\n"));
                done.push(name.to_owned());
            }
            _ => match trimmed.strip_prefix("- rules/") {
                Some(rest) if indent.len() == 2 => {
                    out.push_str(&format!("{indent}- {}/{rest}\n", rules_dir.display()));
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            },
        }
    }
    match targets.keys().find(|name| !done.iter().any(|d| d == *name)) {
        Some(missing) => Err(RenderError::MissingJob((*missing).to_owned())),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> String {
        let path = tributary_test_support::repo_root().join("deploy/monitoring/prometheus.yml");
        std::fs::read_to_string(path).expect("deploy/monitoring/prometheus.yml")
    }

    fn targets() -> BTreeMap<&'static str, String> {
        [
            ("gateway", "127.0.0.1:18080"),
            ("processor", "127.0.0.1:18082"),
            ("sink", "127.0.0.1:18084"),
            ("kafka", "127.0.0.1:19404"),
        ]
        .into_iter()
        .map(|(job, addr)| (job, addr.to_owned()))
        .collect()
    }

    #[test]
    fn every_job_points_at_its_address_and_rules_are_absolute() {
        let out = render(&shipped(), &targets(), Path::new("/repo/deploy/monitoring/rules"))
            .expect("render");
        for (job, addr) in targets() {
            let at = out.find(&format!("- job_name: {job}")).expect(job);
            let next = out[at..].find("targets:").expect("targets") + at;
            let line = out[next..].lines().next().expect("line");
            assert_eq!(line, format!("targets: [\"{addr}\"]"), "{job}");
        }
        assert!(out.contains("\n  - /repo/deploy/monitoring/rules/*.yml\n"), "{out}");
        for default in ["8080", "8082", "8084", "9404"] {
            assert!(!out.contains(&format!("127.0.0.1:{default}\"")), "{default} left in {out}");
        }
        // What is not a target stays as written (comments, intervals, job settings).
        assert!(out.contains("scrape_interval: 5s") && out.contains("scrape_timeout: 10s"));
        assert_eq!(out.lines().count(), shipped().lines().count());
    }

    #[test]
    fn a_job_the_template_lacks_is_an_error() {
        let mut t = targets();
        t.insert("registry", "127.0.0.1:1".into());
        assert_eq!(
            render(&shipped(), &t, Path::new("/r")),
            Err(RenderError::MissingJob("registry".into()))
        );
    }

    #[test]
    fn only_the_named_jobs_change() {
        let template = "scrape_configs:\n  - job_name: a\n    static_configs:\n      - targets: [\"x:1\"]\n  - job_name: \"b\"\n    static_configs:\n      - targets: [\"y:2\"]\n";
        let one: BTreeMap<&str, String> = [("b", "z:3".to_owned())].into_iter().collect();
        let out = render(template, &one, Path::new("/r")).expect("render");
        assert!(out.contains("- targets: [\"x:1\"]") && out.contains("- targets: [\"z:3\"]"));
        assert!(!out.contains("y:2"));
    }
}
