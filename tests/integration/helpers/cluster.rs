//! A throwaway local Redis Cluster of three primaries (no replicas), started by the test that uses
//! it and stopped when dropped. Each node listens on a free port and needs its cluster bus port
//! (port + 10000) free as well; a node that still loses a port race is started again on others.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use saasllm_shared::config::RedisConfig;

use crate::helpers::stack::eventually;

const NODES: usize = 3;
/// Redis Cluster listens for its bus on the client port plus this.
const BUS_PORT_OFFSET: u16 = 10_000;
/// Attempts at starting one node before the test gives up.
const START_ATTEMPTS: usize = 10;

/// A running local cluster; dropping it kills its nodes and removes their directories.
pub struct LocalCluster {
    nodes: Vec<(u16, Child)>,
    dir: PathBuf,
}

impl LocalCluster {
    /// Starts three nodes, joins them into one cluster and waits until every node reports it ok.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("saasllm-cluster-{}", uuid::Uuid::new_v4()));
        let mut cluster = Self {
            nodes: Vec::new(),
            dir,
        };
        for _ in 0..NODES {
            let node = cluster.start_node().await;
            cluster.nodes.push(node);
        }
        let addresses: Vec<String> = cluster
            .ports()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let created = tokio::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli runs");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let nodes = &cluster;
        let ready = eventually(Duration::from_secs(30), move || nodes.all_nodes_ok()).await;
        assert!(ready, "the cluster did not reach cluster_state:ok");
        cluster
    }

    /// Queue settings that reach the cluster through all its nodes as seeds.
    pub fn redis_config(&self, queue_name: &str) -> RedisConfig {
        let seeds: Vec<String> = self
            .ports()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect();
        RedisConfig {
            cluster: true,
            ..RedisConfig::standalone(&seeds.join(","), queue_name)
        }
    }

    /// A plain connection to each node, for looking at what one node holds.
    pub async fn node_connections(&self) -> Vec<redis::aio::MultiplexedConnection> {
        let mut connections = Vec::new();
        for port in self.ports() {
            connections.push(node_connection(port).await.expect("node answers"));
        }
        connections
    }

    fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes.iter().map(|(port, _)| *port)
    }

    async fn all_nodes_ok(&self) -> bool {
        for port in self.ports() {
            let Ok(mut conn) = node_connection(port).await else {
                return false;
            };
            let info: redis::RedisResult<String> = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut conn)
                .await;
            if !info.is_ok_and(|info| info.contains("cluster_state:ok")) {
                return false;
            }
        }
        true
    }

    /// Starts one node on free ports and waits until it answers; tries other ports if it exits
    /// (another process took one of its ports in the meantime).
    async fn start_node(&self) -> (u16, Child) {
        for _ in 0..START_ATTEMPTS {
            let port = free_port_pair();
            let dir = self.dir.join(port.to_string());
            std::fs::create_dir_all(&dir).expect("node directory");
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .arg("--dir")
                .arg(&dir)
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server starts");
            let up = eventually(Duration::from_secs(10), || {
                let exited = matches!(child.try_wait(), Ok(Some(_)));
                async move { exited || node_connection(port).await.is_ok() }
            })
            .await;
            if up && matches!(child.try_wait(), Ok(None)) {
                return (port, child);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("no redis-server node could start on free ports");
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn node_connection(port: u16) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// A port that is free, and whose cluster bus port is free too, at the time of asking.
fn free_port_pair() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = listener.local_addr().expect("local addr").port();
        let Some(bus) = port.checked_add(BUS_PORT_OFFSET) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            return port;
        }
    }
}
