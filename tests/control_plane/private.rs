//! A control plane of one test's own, for tests that kill, stall or restart its components: the
//! shared one must never see such faults, since other tests run against it at the same time.
//! While a `PrivatePlane` lives, every helper of `control_plane` (clients, kubeconfigs, kubectl,
//! namespaces) uses it; dropping it runs `scripts/control-plane down` on its run directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{PRIVATE_RUN_DIR, eventually, unique_name};

/// One private control plane per test binary at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Run directories of private control planes start with this (scripts/test stops any that a
/// crashed test binary left behind).
pub const RUN_DIR_PREFIX: &str = "nsapi-private-cp";

pub struct PrivatePlane {
    pub run_dir: PathBuf,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/control-plane")
}

impl PrivatePlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager in a fresh run directory (about
    /// five seconds with the binaries cached).
    pub async fn start() -> PrivatePlane {
        Self::start_with(&[]).await
    }

    /// The same with a node (`up --node`: kube-scheduler, containerd and a kubelet), which
    /// needs root and the node's binaries and images (`scripts/control-plane build --node`,
    /// `scripts/build-image`, `scripts/build-image --busybox`).
    pub async fn start_with_node() -> PrivatePlane {
        Self::start_with(&["--node"]).await
    }

    async fn start_with(flags: &[&str]) -> PrivatePlane {
        let turn = TURN.lock().await;
        let run_dir = std::env::temp_dir().join(unique_name(RUN_DIR_PREFIX));
        let out = Command::new(script())
            .arg("up")
            .args(flags)
            .env("NSAPI_CP_RUN_DIR", &run_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run scripts/control-plane up");
        assert!(
            out.status.success(),
            "a private control plane did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        *PRIVATE_RUN_DIR.lock().unwrap_or_else(|p| p.into_inner()) = Some(run_dir.clone());
        PrivatePlane {
            run_dir,
            _turn: turn,
        }
    }

    /// The pid `scripts/control-plane` recorded for a component.
    pub fn pid(&self, component: &str) -> u32 {
        std::fs::read_to_string(self.run_dir.join(format!("{component}.pid")))
            .unwrap_or_else(|e| panic!("no pid file for {component}: {e}"))
            .trim()
            .parse()
            .expect("a pid")
    }

    /// The API server's URL (`https://127.0.0.1:PORT`).
    pub fn server(&self) -> String {
        self.env("NSAPI_CP_SERVER")
            .expect("NSAPI_CP_SERVER in the env file")
    }

    /// A variable of the run directory's `env` file.
    pub fn env(&self, name: &str) -> Option<String> {
        let env = std::fs::read_to_string(self.run_dir.join("env")).expect("the env file");
        let prefix = format!("export {name}=");
        env.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map(|v| v.trim_matches(['\'', '"']).to_owned())
    }

    /// Sends a signal (`KILL`, `STOP`, `CONT`, ...) to a component.
    pub fn signal(&self, component: &str, signal: &str) {
        let pid = self.pid(component);
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill -{signal} {component} ({pid}) failed"
        );
    }

    /// SIGKILLs kube-apiserver and starts it again with the same flags (so the same port and
    /// etcd data) plus `extra_args`, then waits until it is ready.
    pub async fn restart_apiserver(&self, pause: Duration, extra_args: &[&str]) {
        let pid = self.pid("kube-apiserver");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("its command line");
        let mut argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        argv.extend(extra_args.iter().map(|a| a.to_string()));
        self.signal("kube-apiserver", "KILL");
        eventually(
            "kube-apiserver to exit",
            Duration::from_secs(10),
            || async {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                (stat.is_empty() || stat.split(' ').nth(2) == Some("Z")).then_some(())
            },
        )
        .await;
        // A Go process's main thread can be a zombie while its other threads still hold the
        // listening socket: wait until the port is free, or the new server cannot bind it.
        let port: u16 = self
            .server()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the API server's port");
        eventually(
            "the API server's port to be free",
            Duration::from_secs(30),
            || async {
                std::net::TcpListener::bind(("127.0.0.1", port))
                    .ok()
                    .map(drop)
            },
        )
        .await;
        tokio::time::sleep(pause).await;
        // Through a shell that exits at once, so that init (not this test) reaps the process,
        // and `scripts/control-plane down` finds and stops it by its pid file.
        let log = self.run_dir.join("kube-apiserver.log");
        let pid_file = self.run_dir.join("kube-apiserver.pid");
        let status = Command::new("sh")
            .arg("-c")
            .arg(r#"log=$1; pidfile=$2; shift 2; nohup "$@" >>"$log" 2>&1 </dev/null & echo $! >"$pidfile""#)
            .arg("sh")
            .arg(&log)
            .arg(&pid_file)
            .args(&argv)
            .status()
            .expect("restart kube-apiserver");
        assert!(status.success());
        self.wait_ready().await;
    }

    /// Waits until the API server answers `/readyz` with `ok`; on timeout, panics with the tail
    /// of its log.
    pub async fn wait_ready(&self) {
        let kubeconfig = self.run_dir.join("admin.kubeconfig");
        let deadline = std::time::Instant::now() + Duration::from_secs(240);
        loop {
            let out = Command::new(super::kubectl_path())
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["--request-timeout=5s", "get", "--raw", "/readyz"])
                .output()
                .expect("run kubectl");
            if String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                return;
            }
            if std::time::Instant::now() >= deadline {
                let log = std::fs::read_to_string(self.run_dir.join("kube-apiserver.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let verbose = Command::new(super::kubectl_path())
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args(["--request-timeout=5s", "get", "--raw", "/readyz?verbose"])
                    .output()
                    .map(|o| {
                        format!(
                            "{}{}",
                            String::from_utf8_lossy(&o.stdout),
                            String::from_utf8_lossy(&o.stderr)
                        )
                    })
                    .unwrap_or_default();
                panic!(
                    "kube-apiserver is not ready after 240 s ({verbose}); its log ends with:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A copy of `kubeconfig` that talks to the API server at `server` instead (e.g. through a
    /// [`super::TcpProxy`]).
    pub fn kubeconfig_via(&self, kubeconfig: &Path, server: &str) -> PathBuf {
        let original = std::fs::read_to_string(kubeconfig).expect("the kubeconfig");
        let path = self
            .run_dir
            .join(format!("{}.kubeconfig", unique_name("via-proxy")));
        std::fs::write(&path, original.replace(&self.server(), server)).unwrap();
        path
    }
}

impl Drop for PrivatePlane {
    fn drop(&mut self) {
        *PRIVATE_RUN_DIR.lock().unwrap_or_else(|p| p.into_inner()) = None;
        // Resume anything a test left stopped, so that `down` can stop it.
        for component in ["etcd", "kube-apiserver", "kube-controller-manager"] {
            if let Ok(pid) = std::fs::read_to_string(self.run_dir.join(format!("{component}.pid")))
            {
                let _ = Command::new("kill").args(["-CONT", pid.trim()]).status();
            }
        }
        let out = Command::new(script())
            .arg("down")
            .env("NSAPI_CP_RUN_DIR", &self.run_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        if let Ok(out) = out
            && !out.status.success()
        {
            eprintln!(
                "could not stop the private control plane in {}: {}",
                self.run_dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut lock = self.run_dir.clone().into_os_string();
        lock.push(".lock");
        let _ = std::fs::remove_file(lock);
    }
}
