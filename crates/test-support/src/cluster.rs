//! The three-node SASL_SSL cluster for tests (deploy/kafka/cluster.sh, the script behind
//! `make up KAFKA=cluster`): the one `make test` starts and shares (named by
//! `TRIBUTARY_TEST_CLUSTER_PORT` and `TRIBUTARY_TEST_CLUSTER_STATE`), or else one of the test's
//! own, stopped when dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// librdkafka settings from a user's `TRIBUTARY_KAFKA__*` settings (those of
/// [`LocalCluster::client_env`]): the same client the services configure.
pub fn client_config(env: &BTreeMap<String, String>) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    for (name, key) in [
        ("BOOTSTRAP_SERVERS", "bootstrap.servers"),
        ("SECURITY_PROTOCOL", "security.protocol"),
        ("SASL_MECHANISM", "sasl.mechanism"),
        ("SASL_USERNAME", "sasl.username"),
        ("SASL_PASSWORD", "sasl.password"),
        ("SSL_CA_LOCATION", "ssl.ca.location"),
    ] {
        if let Some(v) = env.get(&format!("TRIBUTARY_KAFKA__{name}")) {
            c.set(key, v);
        }
    }
    c
}

/// A running three-node cluster.
pub struct LocalCluster {
    /// Node 1's client port; nodes 2 and 3 use the next two.
    pub port: u16,
    state: PathBuf,
    /// Started by this value (stopped and removed on drop), not shared.
    owned: bool,
}

fn script() -> PathBuf {
    crate::repo_root().join("deploy/kafka/cluster.sh")
}

impl LocalCluster {
    /// The cluster `make test` shares, else a new one.
    pub fn shared_or_start() -> Self {
        let port = std::env::var("TRIBUTARY_TEST_CLUSTER_PORT").ok().and_then(|p| p.parse().ok());
        let state = std::env::var_os("TRIBUTARY_TEST_CLUSTER_STATE").map(PathBuf::from);
        match (port, state) {
            (Some(port), Some(state)) => Self { port, state, owned: false },
            _ => Self::start(),
        }
    }

    /// Starts a new cluster on free ports and waits until it answers (a minute or two).
    pub fn start() -> Self {
        // Clients, +100 brokers, +200 controllers; see `free_fixed_ports` for the range.
        let port =
            crate::free_fixed_ports(20_000..25_800, &[0, 1, 2, 100, 101, 102, 200, 201, 202]);
        let state =
            std::env::temp_dir().join(format!("tributary-cluster-{}", crate::random_suffix()));
        let cluster = Self { port, state, owned: true };
        cluster.run(&["start"]);
        cluster
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("bash");
        c.arg(script())
            .args(args)
            .env("KAFKA_CLUSTER_PORT", self.port.to_string())
            .env("KAFKA_CLUSTER_STATE_DIR", &self.state);
        c
    }

    fn run(&self, args: &[&str]) {
        let status = self.command(args).status().expect("running cluster.sh");
        assert!(status.success(), "cluster.sh {} failed (port {})", args.join(" "), self.port);
    }

    /// The `TRIBUTARY_KAFKA__*` settings of SCRAM user `user` (admin, gateway, registry,
    /// processor, sink, connect).
    pub fn client_env(&self, user: &str) -> BTreeMap<String, String> {
        let out = self.command(&["client-env", user]).output().expect("running cluster.sh");
        assert!(
            out.status.success(),
            "client-env {user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// Comma-separated bootstrap servers.
    pub fn bootstrap(&self) -> String {
        (0..3).map(|i| format!("127.0.0.1:{}", self.port + i)).collect::<Vec<_>>().join(",")
    }

    /// SIGKILLs node `n` (1-3).
    pub fn kill(&self, n: u8) {
        self.run(&["kill", &n.to_string()]);
    }

    /// Starts node `n` again and waits until its port answers.
    pub fn start_node(&self, n: u8) {
        self.run(&["start-node", &n.to_string()]);
    }

    /// Stops node `n` cleanly (SIGTERM, a controlled shutdown).
    pub fn stop_node(&self, n: u8) {
        self.run(&["stop-node", &n.to_string()]);
    }

    /// Whether node `n`'s process is running (its pid file names a live process).
    pub fn alive(&self, n: u8) -> bool {
        let file = self.state.join(format!("node-{n}")).join("kafka.pid");
        let pid = std::fs::read_to_string(file).unwrap_or_default();
        let pid = pid.trim();
        !pid.is_empty() && Path::new(&format!("/proc/{pid}")).exists()
    }

    /// What an operator looks at when a node does not come back: for each node, whether its
    /// process is alive, the last warnings it printed (`logs/kafka.out`) and the last lines
    /// of its `server.log`. For failure messages.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for n in 1..=3u8 {
            let dir = self.state.join(format!("node-{n}"));
            out += &format!("--- node {n}: alive {} ---\n", self.alive(n));
            for (file, lines) in [("kafka.out", 12), ("server.log", 25)] {
                let text = std::fs::read_to_string(dir.join("logs").join(file)).unwrap_or_default();
                let all: Vec<&str> = text.lines().collect();
                out += &format!("[{file}, last {lines} lines]\n");
                for line in &all[all.len().saturating_sub(lines)..] {
                    // Kafka's lines can run to kilobytes (whole partition registrations).
                    let end = line.char_indices().nth(300).map_or(line.len(), |(i, _)| i);
                    out += &line[..end];
                    out.push('\n');
                }
            }
        }
        out
    }

    /// The process id of node `n`.
    pub fn pid(&self, n: u8) -> u32 {
        let out = self.command(&["pid", &n.to_string()]).output().expect("running cluster.sh");
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim().parse().unwrap_or_else(|_| panic!("no pid for node {n}: {text:?}"))
    }
}

/// Broker faults of one scenario, undone when it ends, passing or failing: nodes killed or
/// stopped are started again, frozen ones resumed. Faults on the [`LocalCluster`] `make test`
/// shares must leave it whole for the next scenario.
pub struct Faults<'a> {
    cluster: &'a LocalCluster,
    down: std::collections::BTreeSet<u8>,
    frozen: std::collections::BTreeSet<u8>,
}

impl<'a> Faults<'a> {
    pub fn new(cluster: &'a LocalCluster) -> Self {
        Self { cluster, down: Default::default(), frozen: Default::default() }
    }

    /// SIGKILLs node `n`.
    pub fn kill(&mut self, n: u8) {
        self.cluster.kill(n);
        self.down.insert(n);
    }

    /// Stops node `n` with SIGTERM and waits until it is gone.
    pub fn stop(&mut self, n: u8) {
        self.cluster.stop_node(n);
        self.down.insert(n);
    }

    /// Starts node `n` again and waits until its port answers.
    pub fn start(&mut self, n: u8) {
        self.cluster.start_node(n);
        self.down.remove(&n);
    }

    /// Freezes node `n` with SIGSTOP: its connections stay open and nothing answers.
    pub fn freeze(&mut self, n: u8) {
        signal(self.cluster.pid(n), "STOP");
        self.frozen.insert(n);
    }

    /// Resumes a frozen node with SIGCONT.
    pub fn thaw(&mut self, n: u8) {
        signal(self.cluster.pid(n), "CONT");
        self.frozen.remove(&n);
    }
}

impl Drop for Faults<'_> {
    fn drop(&mut self) {
        for n in std::mem::take(&mut self.frozen) {
            signal(self.cluster.pid(n), "CONT");
        }
        // Nodes this scenario took down, and any that died on their own: the next scenario
        // needs all three.
        let down = std::mem::take(&mut self.down);
        for n in (1..=3u8).filter(|n| down.contains(n) || !self.cluster.alive(*n)) {
            let _ = self.cluster.command(&["start-node", &n.to_string()]).status();
        }
    }
}

/// Sends `SIG<name>` to `pid` with kill(1).
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
    assert!(status.is_ok_and(|s| s.success()), "kill -{name} {pid}");
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if self.owned {
            for n in 1..=3u8 {
                let _ = self.command(&["kill", &n.to_string()]).status();
            }
            let _ = std::fs::remove_dir_all(&self.state);
        }
    }
}
