//! Child processes: the real `cutover` / `cutover-probe` binaries and the DNS
//! servers.
//!
//! Output goes to files in the test's directory so nothing is lost when a
//! process dies; when a test panics, the tail of every process's output is
//! printed as the process is dropped. Processes are killed on drop.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::addr::AddrBlock;

/// Lines of output shown per process when a test fails.
const TAIL_LINES: usize = 40;

/// Path of one of the workspace's binaries: `$ENV` if set, else next to the
/// test executable (`target/debug/`).
pub fn bin_path(name: &str, env: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    // target/debug/deps/<test>-<hash> → target/debug/<name>
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let candidate = dir.join(name);
    if !candidate.exists() {
        bail!(
            "{} not found; run `cargo build --workspace` first or set {env}",
            candidate.display()
        );
    }
    Ok(candidate)
}

/// The coordinator binary.
pub fn cutover_bin() -> anyhow::Result<PathBuf> {
    bin_path("cutover", "CUTOVER_BIN")
}

/// The probe binary.
pub fn probe_bin() -> anyhow::Result<PathBuf> {
    bin_path("cutover-probe", "CUTOVER_PROBE_BIN")
}

/// A running child process with its output captured to files.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: std::process::Child,
    stdout: PathBuf,
    stderr: PathBuf,
    exited: Option<ExitStatus>,
    quiet: bool,
}

impl Proc {
    /// Starts `cmd`, sending its output to `<log_dir>/<name>.{stdout,stderr}`
    /// (appended, so a restarted process keeps the earlier log).
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log_dir: &Path,
        block: &AddrBlock,
    ) -> anyhow::Result<Self> {
        fs::create_dir_all(log_dir)?;
        let stdout = log_dir.join(format!("{name}.stdout"));
        let stderr = log_dir.join(format!("{name}.stderr"));
        let open = |p: &Path| {
            File::options()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))
        };
        cmd.stdin(Stdio::null())
            .stdout(open(&stdout)?)
            .stderr(open(&stderr)?);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        block.track_pid(child.id());
        tracing::info!(name, pid = child.id(), "started");
        Ok(Proc {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            exited: None,
            quiet: false,
        })
    }

    /// Don't print this process's output when a test fails while it still runs
    /// (for chatty infrastructure like BIND; its files are kept anyway).
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Fails, with the output tail, if the process has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.try_wait() {
            None => Ok(()),
            Some(status) => bail!("{} exited with {status}:\n{}", self.name, self.tail()),
        }
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`, …) via `kill(1)`.
    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -{sig} {} failed", self.child.id());
        }
        Ok(())
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }

    /// Waits for the process to exit, at most `deadline`.
    pub async fn wait_exit(&mut self, deadline: Duration) -> anyhow::Result<ExitStatus> {
        let name = self.name.clone();
        crate::poll::until(&format!("{name} to exit"), deadline, || {
            let st = self.try_wait();
            async move { Ok(st) }
        })
        .await
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The last lines of stdout and stderr, for failure messages.
    pub fn tail(&self) -> String {
        format!(
            "--- {} stdout (tail) ---\n{}\n--- {} stderr (tail) ---\n{}",
            self.name,
            tail(&self.stdout(), TAIL_LINES),
            self.name,
            tail(&self.stderr(), TAIL_LINES)
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let died = self.try_wait().is_some();
        self.kill();
        if std::thread::panicking() && (!self.quiet || died) {
            eprintln!("{}", self.tail());
        }
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs a short command to completion with a deadline, capturing its output.
pub async fn run(mut cmd: tokio::process::Command, deadline: Duration) -> anyhow::Result<Output> {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let desc = format!("{cmd:?}");
    match tokio::time::timeout(deadline, cmd.output()).await {
        Ok(out) => out.with_context(|| format!("running {desc}")),
        Err(_) => bail!("{desc} did not finish within {deadline:?}"),
    }
}

/// Like [`run`], but fails unless the command exits 0; returns stdout.
pub async fn run_ok(cmd: tokio::process::Command, deadline: Duration) -> anyhow::Result<String> {
    let desc = format!("{cmd:?}");
    let out = run(cmd, deadline).await?;
    if !out.status.success() {
        bail!(
            "{desc} exited with {}:\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
