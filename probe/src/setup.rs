//! `cutover-probe setup`: stores what the volunteer pasted, so that later runs
//! need no flags and the token lives in one file only its owner can read.
//!
//! The command `cutover probe enrol` prints pipes the token in on stdin (a
//! shell builtin `printf`, so it is never in any process's arguments where
//! `ps` shows it to other users). Settings go to `STATE_DIR/probe.toml` and the
//! token to `STATE_DIR/token`; both files are created with mode 0600 (never
//! wider, not even for a moment) and the directory with 0700.

use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};

use crate::config::{Cli, Config, ConfigError, FileConfig, STATE_CONFIG, STATE_TOKEN, state_dir};

/// Why `setup` stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "no state directory: pass --state-dir DIR (none of STATE_DIRECTORY, XDG_STATE_HOME, HOME is set)"
    )]
    NoStateDir,
    #[error(
        "no token on stdin: paste the whole command printed by `cutover probe enrol`, which pipes the token in"
    )]
    NoToken,
    #[error("reading the token from stdin: {0}")]
    Stdin(std::io::Error),
    #[error(
        "state directory {} can be read by other users (mode {mode:o}); use a directory only you can read, or `chmod 700 {}`",
        path.display(),
        path.display()
    )]
    OpenDirectory { path: PathBuf, mode: u32 },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `setup` wrote.
#[derive(Debug, Clone)]
pub struct Stored {
    pub dir: PathBuf,
    pub config_file: PathBuf,
    pub token_file: PathBuf,
    /// The settings, as later runs will read them.
    pub config: Config,
}

/// Validates the flags and the token (from `--token`, else the first line of
/// `stdin`) exactly as a run would, then writes both files.
pub fn setup(cli: Cli, stdin: &mut dyn BufRead) -> Result<Stored, SetupError> {
    let dir = state_dir(cli.state_dir.as_deref()).ok_or(SetupError::NoStateDir)?;
    let mut cli = cli;
    if cli.token.is_none() {
        let mut line = String::new();
        stdin.read_line(&mut line).map_err(SetupError::Stdin)?;
        let token = line.trim();
        if token.is_empty() {
            return Err(SetupError::NoToken);
        }
        cli.token = Some(token.to_owned());
    }
    // A relative CA file would be looked up next to probe.toml later.
    if let Some(ca) = &cli.ca_file
        && ca.is_relative()
        && let Ok(cwd) = std::env::current_dir()
    {
        cli.ca_file = Some(cwd.join(ca));
    }
    let config = Config::merge(cli, FileConfig::default())?;

    private_dir(&dir)?;
    let token_file = dir.join(STATE_TOKEN);
    write_private(&token_file, format!("{}\n", config.token).as_bytes())?;
    let config_file = dir.join(STATE_CONFIG);
    write_private(&config_file, settings_toml(&config).as_bytes())?;
    Ok(Stored {
        dir,
        config_file,
        token_file,
        config,
    })
}

/// `probe.toml` for `config`, without the token (it has its own file).
fn settings_toml(c: &Config) -> String {
    // A JSON string literal is a valid TOML basic string.
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let mut out = String::from("# Written by `cutover-probe setup`.\n");
    out += &format!("coordinator = {}\n", q(&c.coordinator));
    // Relative: next to this file, wherever it is handed over (systemd's
    // LoadCredential= puts both in $CREDENTIALS_DIRECTORY).
    out += &format!("token_file = {}\n", q(STATE_TOKEN));
    out += &format!("region = {}\n", q(&c.region));
    match &c.allow_domains {
        Some(d) => {
            let list: Vec<String> = d.iter().map(|d| q(d)).collect();
            out += &format!("allow_domains = [{}]\n", list.join(", "));
        }
        None => out += "allow_any_domain = true\n",
    }
    if c.allow_private_addresses {
        out += "allow_private_addresses = true\n";
    }
    if let Some(r) = c.resolver {
        out += &format!("resolver = {}\n", q(&r.to_string()));
    }
    if let Some(ca) = &c.ca_file {
        out += &format!("ca_file = {}\n", q(&ca.to_string_lossy()));
    }
    out
}

/// Creates `dir` with mode 0700, or insists an existing one is not open to others.
fn private_dir(dir: &Path) -> Result<(), SetupError> {
    let io = |source| SetupError::Io {
        what: "cannot create the state directory",
        path: dir.to_owned(),
        source,
    };
    if !dir.exists() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir).map_err(io)?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SetupError::OpenDirectory {
                path: dir.to_owned(),
                mode,
            });
        }
    }
    Ok(())
}

/// Writes `path` through a temporary file created with mode 0600 and renamed
/// over it, so the content is never readable by others, nor half-written.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SetupError> {
    let io = |source| SetupError::Io {
        what: "cannot write",
        path: path.to_owned(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn cli(dir: &Path) -> Cli {
        Cli {
            coordinator: Some("https://probes.example.org:7443".into()),
            region: Some("asia".into()),
            allow_domains: vec!["elm-lang.org".into(), "github.com".into()],
            state_dir: Some(dir.to_owned()),
            ..Cli::default()
        }
    }

    #[test]
    fn token_and_settings_are_stored_owner_only_and_read_back() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state/cutover-probe");
        let stored = setup(cli(&dir), &mut &b"cutover_abc123\n"[..]).unwrap();
        assert_eq!(stored.token_file, dir.join("token"));
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&stored.token_file), 0o600);
        assert_eq!(mode(&stored.config_file), 0o600);
        assert_eq!(
            std::fs::read_to_string(&stored.token_file).unwrap(),
            "cutover_abc123\n"
        );
        let settings = std::fs::read_to_string(&stored.config_file).unwrap();
        assert!(!settings.contains("cutover_abc123"), "{settings}");
        assert!(settings.contains("token_file = \"token\""), "{settings}");

        // Read through --config alone, as the systemd unit does.
        let cfg = Config::load(Cli {
            config: Some(stored.config_file.clone()),
            state_dir: Some(root.path().join("elsewhere")),
            ..Cli::default()
        })
        .unwrap();
        assert_eq!(cfg.token, "cutover_abc123");
        assert!(
            settings.contains("allow_domains = [\"elm-lang.org\", \"github.com\"]"),
            "{settings}"
        );

        // A later run with nothing but the state directory.
        let cfg = Config::load(Cli {
            state_dir: Some(dir.clone()),
            ..Cli::default()
        })
        .unwrap();
        assert_eq!(cfg.token, "cutover_abc123");
        assert_eq!(cfg.coordinator, "https://probes.example.org:7443");
        assert_eq!(cfg.region, "asia");
        assert_eq!(
            cfg.allow_domains,
            Some(vec!["elm-lang.org".to_owned(), "github.com".to_owned()])
        );

        // Setting up again (a new token) replaces both, still 0600.
        setup(cli(&dir), &mut &b"cutover_new\n"[..]).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("token")).unwrap(),
            "cutover_new\n"
        );
        assert_eq!(mode(&dir.join("token")), 0o600);
    }

    #[test]
    fn nothing_is_stored_without_a_token_or_an_allowlist_or_in_an_open_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("p");
        assert!(matches!(
            setup(cli(&dir), &mut &b"\n"[..]),
            Err(SetupError::NoToken)
        ));
        let no_domains = Cli {
            allow_domains: Vec::new(),
            ..cli(&dir)
        };
        let e = setup(no_domains, &mut &b"t\n"[..]).unwrap_err().to_string();
        assert!(e.contains("no allowed domains"), "{e}");
        assert!(!dir.exists(), "nothing written after a refusal");

        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = setup(cli(&dir), &mut &b"t\n"[..]).unwrap_err().to_string();
        assert!(e.contains("chmod 700"), "{e}");
        assert!(!dir.join("token").exists());
    }
}
