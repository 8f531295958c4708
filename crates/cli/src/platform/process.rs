//! Process supervision for the local platform: each service runs detached in a process group
//! of its own, named by a pid file in the state directory (`<name>.pid`, its output appended
//! to `logs/<name>.log`), and is stopped with SIGTERM, then SIGKILL after a grace period.
//!
//! The pid files are the ones `deploy/kafka/kafka.sh` and `deploy/lib/process.sh` use: one
//! line, the pid.

use anyhow::Context as _;
use rustix::process::{kill_process, test_kill_process, Pid, Signal};
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(200);

/// The pid a pid file names, when it holds one.
pub fn parse_pid(text: &str) -> Option<i32> {
    text.trim().parse::<i32>().ok().filter(|pid| *pid > 0)
}

/// Reads the pid in `file`; `None` when there is no file or no pid in it.
pub fn read_pid(file: &Path) -> Option<i32> {
    parse_pid(&std::fs::read_to_string(file).ok()?)
}

/// The process runs: it exists and is not a zombie waiting to be reaped (a stopped service
/// whose parent never waits for it must not count as running).
pub fn alive(pid: i32) -> bool {
    let Some(p) = Pid::from_raw(pid) else { return false };
    if test_kill_process(p).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !is_zombie(&stat),
        Err(_) => true,
    }
}

/// `/proc/<pid>/stat` says the process is a zombie (state `Z`, or `X` for dead). The state is
/// the first field after the command name, which is in parentheses and may hold spaces.
pub fn is_zombie(stat: &str) -> bool {
    stat.rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X")
}

/// The process that `file` names runs; its pid.
pub fn running(file: &Path) -> Option<i32> {
    read_pid(file).filter(|pid| alive(*pid))
}

/// A service this process started: the child handle tells an exit apart from a zombie.
#[derive(Debug)]
pub struct Started {
    /// The service's pid (also in its pid file).
    pub pid: i32,
    child: Option<Child>,
}

impl Started {
    /// The service still runs.
    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => alive(self.pid),
        }
    }
}

/// Starts `command` detached: its own process group (a Ctrl-C in the terminal of `up` does
/// not reach it), stdin from /dev/null, stdout and stderr appended to `log`, and its pid
/// written to `pid_file`. A service already running under `pid_file` is left alone.
pub fn start(mut command: Command, pid_file: &Path, log: &Path) -> anyhow::Result<Started> {
    if let Some(pid) = running(pid_file) {
        return Ok(Started { pid, child: None });
    }
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    command.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
    let child = command
        .spawn()
        .with_context(|| format!("starting {}", command.get_program().to_string_lossy()))?;
    let pid = i32::try_from(child.id()).context("a pid out of range")?;
    std::fs::write(pid_file, format!("{pid}\n"))
        .with_context(|| format!("writing {}", pid_file.display()))?;
    Ok(Started { pid, child: Some(child) })
}

/// What [`stop`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Nothing ran under the pid file (a stale file is removed).
    NotRunning,
    /// The process ended on SIGTERM within the grace period.
    Terminated,
    /// The process ignored SIGTERM for the grace period and was killed.
    Killed,
}

/// Stops the process `pid_file` names: SIGTERM, then SIGKILL when it still runs after
/// `grace`; waits until it is gone (at most `grace` plus ten seconds) and removes the file.
pub fn stop(pid_file: &Path, grace: Duration) -> anyhow::Result<Stopped> {
    let Some(pid) = running(pid_file) else {
        let _ = std::fs::remove_file(pid_file);
        return Ok(Stopped::NotRunning);
    };
    let p = Pid::from_raw(pid).context("a pid out of range")?;
    let _ = kill_process(p, Signal::TERM);
    let mut outcome = Stopped::Terminated;
    if !wait_gone(pid, grace) {
        outcome = Stopped::Killed;
        let _ = kill_process(p, Signal::KILL);
        if !wait_gone(pid, Duration::from_secs(10)) {
            anyhow::bail!("pid {pid} ({}) still runs after SIGKILL", pid_file.display());
        }
    }
    let _ = std::fs::remove_file(pid_file);
    Ok(outcome)
}

/// Waits until `pid` is gone; false when it still runs after `timeout`.
fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
    true
}

/// The last `n` lines of a log file, for an error message.
pub fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A program is installed: a path to a file, or a name found on `PATH`.
pub fn installed(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return path.is_file().then_some(path);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_files_hold_one_positive_pid() {
        assert_eq!(parse_pid("1234\n"), Some(1234));
        assert_eq!(parse_pid("  42 "), Some(42));
        assert_eq!(parse_pid(""), None);
        assert_eq!(parse_pid("0"), None);
        assert_eq!(parse_pid("-1"), None);
        assert_eq!(parse_pid("abc"), None);
    }

    #[test]
    fn zombies_do_not_count_as_running() {
        assert!(is_zombie("123 (tributary) Z 1 123 123 0"));
        assert!(is_zombie("123 (a name) with) spaces) X 1"));
        assert!(!is_zombie("123 (tributary) S 1 123 123 0"));
        assert!(!is_zombie("123 (Z) R 1"));
        assert!(!is_zombie("garbage"));
    }

    #[test]
    fn this_process_is_alive_and_a_missing_file_names_nothing() {
        assert!(alive(i32::try_from(std::process::id()).expect("pid")));
        assert!(!alive(0));
        assert_eq!(read_pid(Path::new("/nonexistent/x.pid")), None);
        assert_eq!(
            stop(Path::new("/nonexistent/x.pid"), Duration::ZERO).expect("stop"),
            Stopped::NotRunning
        );
    }

    #[test]
    fn start_then_stop_a_real_process() {
        let dir = std::env::temp_dir().join(format!("tributary-process-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (pid_file, log) = (dir.join("sleep.pid"), dir.join("logs/sleep.log"));
        let mut command = Command::new("sh");
        command.args(["-c", "echo started; exec sleep 60"]);
        let mut started = start(command, &pid_file, &log).expect("start");
        assert!(started.alive());
        // Its output goes to the log.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tail(&log, 5).contains("started") {
            assert!(Instant::now() < deadline, "nothing in {}", log.display());
            std::thread::sleep(POLL);
        }
        assert_eq!(read_pid(&pid_file), Some(started.pid));
        // A second start finds it running and leaves it alone.
        let again = start(Command::new("false"), &pid_file, &log).expect("start again");
        assert_eq!(again.pid, started.pid);
        assert_eq!(stop(&pid_file, Duration::from_secs(10)).expect("stop"), Stopped::Terminated);
        assert!(!started.alive());
        assert!(!pid_file.exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
