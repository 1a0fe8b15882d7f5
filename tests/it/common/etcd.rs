//! A real etcd for the fleet tests (Debian's `etcd-server`; `scripts/test` installs it):
//! started on free loopback ports with a data directory of its own, stopped, killed and
//! started again on the same data; and a TCP relay the test can cut and restore, to put
//! between a client and etcd.
//!
//! etcd takes its addresses as flags, so port 0 cannot be used: a port is picked free by
//! binding port 0 and closing it, and a start that loses the port to someone else in
//! between is tried again on other ports.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream as TokioStream};
use tokio::sync::watch;

use super::TempDir;

/// An etcd process of the test's own.
pub struct Etcd {
    child: Option<Child>,
    client: SocketAddr,
    peer: SocketAddr,
    /// Plain http, for `/health` whatever the client URL's scheme.
    metrics: SocketAddr,
    /// `http` or `https`.
    scheme: &'static str,
    /// More flags (TLS files).
    extra: Vec<String>,
    pub data: TempDir,
    log: PathBuf,
}

/// A loopback port nobody listens on right now.
fn free_port() -> SocketAddr {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

impl Etcd {
    /// Starts etcd and waits until it answers. Panics, with etcd's log, when it cannot.
    pub fn start() -> Etcd {
        Etcd::start_with("http", Vec::new())
    }

    /// Starts etcd serving clients over TLS with `cert` and `key`; with `client_ca`, it
    /// asks clients for a certificate that CA signed.
    pub fn start_tls(cert: &str, key: &str, client_ca: Option<&str>) -> Etcd {
        let mut extra = vec![
            "--cert-file".to_string(),
            cert.to_string(),
            "--key-file".to_string(),
            key.to_string(),
        ];
        if let Some(ca) = client_ca {
            extra.extend([
                "--client-cert-auth".to_string(),
                "--trusted-ca-file".to_string(),
                ca.to_string(),
            ]);
        }
        Etcd::start_with("https", extra)
    }

    fn start_with(scheme: &'static str, extra: Vec<String>) -> Etcd {
        let data = TempDir::new("etcd");
        let log = data.0.join("etcd.log");
        let mut etcd = Etcd {
            child: None,
            client: free_port(),
            peer: free_port(),
            metrics: free_port(),
            scheme,
            extra,
            data,
            log,
        };
        let mut last_log = String::new();
        for _ in 0..5 {
            match etcd.run() {
                Ok(()) => return etcd,
                Err(log) => {
                    // Most likely a port taken between picking and binding: other ports,
                    // and a fresh data directory (the old one names the old peer URL).
                    last_log = log;
                    let _ = std::fs::remove_dir_all(etcd.data.0.join("data"));
                    etcd.client = free_port();
                    etcd.peer = free_port();
                    etcd.metrics = free_port();
                }
            }
        }
        panic!("etcd did not start in 5 attempts; its last log:\n{last_log}");
    }

    /// The client URL, `http://127.0.0.1:PORT` (or https).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.client)
    }

    pub fn addr(&self) -> SocketAddr {
        self.client
    }

    /// Starts the process on this handle's ports and data; Err(its log) if it exits or
    /// does not answer within 20 s.
    fn run(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(&self.log).expect("create etcd's log");
        let peer = format!("http://{}", self.peer);
        let child = Command::new("etcd")
            .args([
                "--name",
                "serin-test",
                "--data-dir",
                &self.data.0.join("data").display().to_string(),
                "--listen-client-urls",
                &self.url(),
                "--advertise-client-urls",
                &self.url(),
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("serin-test={peer}"),
                "--listen-metrics-urls",
                &format!("http://{}", self.metrics),
                "--log-level",
                "warn",
                "--logger",
                "zap",
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|err| {
                format!("cannot run etcd ({err}): install Debian's etcd-server (scripts/test does)")
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.healthy() {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || Instant::now() > deadline {
                self.kill();
                return Err(std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether etcd answers `GET /health` (on the metrics URL) with `"health":"true"`.
    fn healthy(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.metrics, Duration::from_millis(200))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.contains("\"health\":\"true\"")
    }

    /// SIGKILL: the process dies at once; its data stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills etcd and starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(log) = self.run() {
            panic!("etcd did not start again; its log:\n{log}");
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP relay from a loopback port to `target`, which the test can cut (every open
/// connection closed, new ones refused at once) and restore.
pub struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let cut = Arc::new(AtomicBool::new(false));
        let (cuts, _) = watch::channel(0u64);
        let task = tokio::spawn({
            let cut = cut.clone();
            let cuts = cuts.clone();
            async move {
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if cut.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let mut cut_now = cuts.subscribe();
                    tokio::spawn(async move {
                        let Ok(outbound) = TokioStream::connect(target).await else {
                            return;
                        };
                        let (mut inbound, mut outbound) = (inbound, outbound);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut_now.changed() => {}
                        }
                    });
                }
            }
        });
        Relay {
            addr,
            cut,
            cuts,
            task,
        }
    }

    /// The relay's address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every connection through the relay and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
