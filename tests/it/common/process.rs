//! `serin run` as a child process, with its JSON log lines (stderr) and its access log
//! lines (stdout) readable.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SERIN: &str = env!("CARGO_BIN_EXE_serin");

/// Runs `serin ARGS` (an ops command) to completion off the async runtime, with
/// `token` in SERIN_ADMIN_TOKEN and neither it nor SERIN_ADMIN inherited otherwise.
pub async fn ops(args: &[&str], token: Option<&str>) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let token = token.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(SERIN);
        command
            .args(&args)
            .env_remove("SERIN_ADMIN")
            .env_remove("SERIN_ADMIN_TOKEN")
            .stdin(Stdio::null());
        if let Some(token) = token {
            command.env("SERIN_ADMIN_TOKEN", token);
        }
        command.output().expect("run serin")
    })
    .await
    .expect("join")
}

pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A running `serin run`; killed when dropped.
pub struct SerinProcess {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Every log line read so far, and whether a `wait_for` has taken it.
    seen: Vec<(Value, bool)>,
    stdout: mpsc::Receiver<String>,
    /// Every stdout line read so far, and whether a `wait_for_stdout` has taken it.
    stdout_seen: Vec<(String, bool)>,
    /// `admin.listen` and the first listener, as logged.
    pub admin: SocketAddr,
    pub web: SocketAddr,
}

impl SerinProcess {
    /// `serin run --log-format json --workers WORKERS --config CONFIG EXTRA…` with `env`
    /// (a `None` value removes the variable); waits until both addresses are logged and
    /// serin says it is ready.
    pub fn start(
        config: &Path,
        workers: u16,
        extra: &[&str],
        env: &[(&str, Option<&str>)],
    ) -> Self {
        let mut command = Command::new(SERIN);
        command
            .args(["run", "--log-format", "json", "--workers"])
            .arg(workers.to_string())
            .arg("--config")
            .arg(config)
            .args(extra)
            .env_remove("SERIN_ADMIN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            match value {
                Some(v) => command.env(key, v),
                None => command.env_remove(key),
            };
        }
        let mut child = command.spawn().expect("spawn serin run");
        let lines = read_lines(child.stderr.take().expect("stderr"));
        let stdout = read_lines(child.stdout.take().expect("stdout"));
        let mut process = SerinProcess {
            child,
            lines,
            seen: Vec::new(),
            stdout,
            stdout_seen: Vec::new(),
            admin: SocketAddr::from(([0, 0, 0, 0], 0)),
            web: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        process.admin = process.addr_of("admin listening");
        process.web = process.addr_of("listening");
        // Signal handlers are installed by then: a SIGHUP before them would end serin.
        process.wait_for("readiness", |l| l["message"] == "serin is ready");
        process
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.web)
    }

    /// The first log line not yet taken that satisfies `matches`, waiting up to 20 s.
    pub fn wait_for(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut checked = 0;
        loop {
            for (line, taken) in self.seen.iter_mut().skip(checked) {
                if !*taken && matches(line) {
                    *taken = true;
                    return line.clone();
                }
            }
            checked = self.seen.len();
            assert!(Instant::now() < deadline, "serin never logged {what}");
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                if let Ok(json) = serde_json::from_str::<Value>(&line) {
                    self.seen.push((json, false));
                }
            }
        }
    }

    /// How many of the log lines read so far satisfy `matches`.
    pub fn logged(&self, matches: impl Fn(&Value) -> bool) -> usize {
        self.seen.iter().filter(|(line, _)| matches(line)).count()
    }

    /// The first stdout line not yet taken that satisfies `matches`, waiting up to 20 s.
    pub fn wait_for_stdout(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut checked = 0;
        loop {
            for (line, taken) in self.stdout_seen.iter_mut().skip(checked) {
                if !*taken && matches(line) {
                    *taken = true;
                    return line.clone();
                }
            }
            checked = self.stdout_seen.len();
            assert!(Instant::now() < deadline, "serin never printed {what}");
            if let Ok(line) = self.stdout.recv_timeout(Duration::from_millis(100)) {
                self.stdout_seen.push((line, false));
            }
        }
    }

    /// Every log line written so far (taken by `wait_for` or not), in order.
    pub fn all_logged(&mut self) -> Vec<Value> {
        while let Ok(line) = self.lines.try_recv() {
            if let Ok(json) = serde_json::from_str::<Value>(&line) {
                self.seen.push((json, false));
            }
        }
        self.seen.iter().map(|(line, _)| line.clone()).collect()
    }

    /// The `addr` field of the next log line whose message is `message`.
    pub fn addr_of(&mut self, message: &str) -> SocketAddr {
        let line = self.wait_for(message, |l| l["message"] == message);
        line["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("addr field")
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill failed: {}", std::io::Error::last_os_error());
    }
}

/// The lines of `pipe`, read on a thread of their own.
fn read_lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

impl Drop for SerinProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
