//! A broker of a test's own, for tests that stop, kill and restart Kafka. It runs the same
//! script as `make up` (deploy/kafka/kafka.sh) with its own ports and state directory.

use std::path::PathBuf;
use std::process::Command;

/// A single-node KRaft broker on free loopback ports, removed when dropped.
pub struct LocalBroker {
    pub port: u16,
    controller_port: u16,
    state: PathBuf,
}

fn script() -> PathBuf {
    crate::repo_root().join("deploy/kafka/kafka.sh")
}

impl LocalBroker {
    /// Starts a new broker and waits until it answers.
    pub fn start() -> Self {
        // Below the ephemeral range: `restart` needs the same ports free again.
        let port = crate::free_fixed_port();
        let mut controller_port = crate::free_fixed_port();
        while controller_port == port {
            controller_port = crate::free_fixed_port();
        }
        let state =
            std::env::temp_dir().join(format!("tributary-broker-{}", crate::random_suffix()));
        let broker = Self { port, controller_port, state };
        broker.run("start");
        broker
    }

    fn run(&self, action: &str) {
        assert!(
            self.try_run(action),
            "kafka.sh {action} failed for the broker on port {}",
            self.port
        );
    }

    fn try_run(&self, action: &str) -> bool {
        self.command(action).status().is_ok_and(|s| s.success())
    }

    fn command(&self, action: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg(script())
            .arg(action)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", self.controller_port.to_string())
            .env("KAFKA_STATE_DIR", &self.state)
            .env("KAFKA_HEAP", "512m");
        c
    }

    /// `host:port` to bootstrap from.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker cleanly (SIGTERM).
    pub fn stop(&self) {
        self.run("stop");
    }

    /// Kills the broker (SIGKILL).
    pub fn kill(&self) {
        self.run("kill");
    }

    /// Starts the broker again on the same ports with the same data.
    pub fn restart(&self) {
        self.run("start");
    }

    /// The broker's process id (`kafka.sh pid`).
    pub fn pid(&self) -> u32 {
        let out = self.command("pid").output().expect("running kafka.sh pid");
        assert!(
            out.status.success(),
            "kafka.sh pid: the broker on port {} is not running",
            self.port
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("kafka.sh pid prints a pid")
    }

    /// Freezes the broker (SIGSTOP): its connections stay open and requests already sent stay
    /// unanswered, as when a broker stalls, until [`LocalBroker::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen broker run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().to_string();
        let ok = Command::new("kill").args([sig, &pid]).status().is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid} failed");
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        // SIGKILL ends a frozen broker too.
        self.try_run("kill");
        let _ = std::fs::remove_dir_all(&self.state);
    }
}
