//! `corral.toml` and the paths it decides: read, validated, relative paths resolved.
//!
//! Every key is optional; a missing default config file means built-in defaults. A bad file is refused
//! with one line that names the file, the line and the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The config file as written. Unknown keys are errors, so typos are caught.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    state_dir: Option<PathBuf>,
    tools_dir: Option<PathBuf>,
    services_dir: Option<PathBuf>,
    listen: Option<String>,
    store: Option<String>,
    job_ttl: Option<String>,
    #[serde(default)]
    token: Vec<TokenConfig>,
    #[serde(default)]
    webhook: Option<WebhookSection>,
    #[serde(default)]
    notify: Vec<NotifyConfig>,
    #[serde(default)]
    tasks: TasksSection,
    #[serde(default)]
    processes: ProcessesSection,
}

/// `[processes]`: how children are parented.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessesSection {
    /// Start children through the keeper so they survive a crash of the daemon and are re-attached
    /// (default true). Off: children are the daemon's own and die with it, or run on unwatched.
    keeper: Option<bool>,
}

/// `[tasks]`: retention of finished tasks.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TasksSection {
    /// Finished tasks older than this are deleted (default 7 days).
    retention: Option<String>,
    /// At most this many finished tasks are kept (default 10,000).
    keep: Option<usize>,
}

/// One `[[token]]`: a bearer token for the TCP listener and the scopes it grants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenConfig {
    pub(crate) name: String,
    pub(crate) secret_env: Option<String>,
    pub(crate) secret_file: Option<PathBuf>,
    pub(crate) sha256: Option<String>,
    #[serde(default)]
    pub(crate) allow: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookSection {
    github: Option<GithubWebhook>,
}

/// `[webhook.github]` (served by a later issue; validated now so a config written for it loads).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GithubWebhook {
    pub(crate) secret_env: Option<String>,
}

/// One `[[notify]]` (used by a later issue; validated now).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotifyConfig {
    pub(crate) kind: String,
    pub(crate) url_env: Option<String>,
    pub(crate) url: Option<String>,
}

impl Config {
    /// What the config asks for that this build does not serve yet (services, the GitHub webhook), one line
    /// each, for a warning at start: accepted so that a config written for the whole contract loads, but
    /// never silently.
    pub(crate) fn not_served(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.github_webhook.is_some() {
            lines.push("[webhook.github] is set, but this build has no webhook route yet: it is ignored".to_owned());
        }
        let service_files = std::fs::read_dir(&self.services_dir)
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
                    .count()
            })
            .unwrap_or(0);
        if service_files > 0 {
            lines.push(format!(
                "{} holds {service_files} service file(s), but this build does not run services yet: ignored",
                self.services_dir.display()
            ));
        }
        lines
    }

    /// One line describing what was loaded, for the start-up log.
    pub(crate) fn summary(&self) -> String {
        format!(
            "config {}; tools_dir {}; services_dir {}; job_ttl {}s; {} token(s); {} notifier(s); github webhook {}",
            self.source
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(built-in defaults)".into()),
            self.tools_dir.display(),
            self.services_dir.display(),
            self.job_ttl.as_secs(),
            self.tokens.len(),
            self.notify.len(),
            if self.github_webhook.is_some() {
                "configured (not served yet)"
            } else {
                "off"
            },
        )
    }
}

/// The resolved configuration the daemon runs with.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The file it came from, if any.
    pub(crate) source: Option<PathBuf>,
    pub(crate) state_dir: PathBuf,
    pub(crate) tools_dir: PathBuf,
    pub(crate) services_dir: PathBuf,
    pub(crate) listen: Option<String>,
    pub(crate) store_path: PathBuf,
    pub(crate) job_ttl: Duration,
    pub(crate) task_retention: Duration,
    pub(crate) task_keep: usize,
    /// Children are started through the keeper (`[processes] keeper`).
    pub(crate) keeper: bool,
    pub(crate) tokens: Vec<TokenConfig>,
    pub(crate) github_webhook: Option<GithubWebhook>,
    pub(crate) notify: Vec<NotifyConfig>,
}

/// A config problem: the message names the file, the line and the key when known.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConfigError(pub(crate) String);

/// Where the config comes from: `--config`, else `$CORRAL_CONFIG`, else the XDG default (optional).
pub(crate) fn config_path(flag: Option<&Path>) -> (Option<PathBuf>, bool) {
    if let Some(path) = flag {
        return (Some(path.to_owned()), true);
    }
    if let Some(path) = std::env::var_os("CORRAL_CONFIG").filter(|v| !v.is_empty()) {
        return (Some(PathBuf::from(path)), true);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home_dir().map(|h| h.join(".config")));
    (base.map(|b| b.join("corral").join("corral.toml")), false)
}

pub(crate) fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// The default state dir when neither flag, env nor config name one.
pub(crate) fn default_state_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home_dir().map(|h| h.join(".local").join("state")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"))
        .join("corral")
}

/// The state dir from the flag or `$CORRAL_STATE_DIR`, if either is given.
pub(crate) fn state_dir_override(flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(Path::to_owned).or_else(|| {
        std::env::var_os("CORRAL_STATE_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// The state dir the CLI looks for the daemon in: `$CORRAL_STATE_DIR`, else `state_dir` in the config file
/// (`$CORRAL_CONFIG`, else the default one; relative to the file, as the daemon reads it), else the default.
/// A config file that cannot be read or parsed counts as none: the daemon would refuse it and say why.
pub(crate) fn client_state_dir() -> PathBuf {
    if let Some(dir) = state_dir_override(None) {
        return dir;
    }
    let from_file = config_path(None).0.and_then(|path| {
        let text = std::fs::read_to_string(&path).ok()?;
        let dir = parse(&path, &text).ok()?.state_dir?;
        Some(match path.parent() {
            Some(base) if dir.is_relative() => base.join(dir),
            _ => dir,
        })
    });
    from_file.unwrap_or_else(default_state_dir)
}

impl Config {
    /// Loads the config: `config_flag`/`$CORRAL_CONFIG`/XDG default, then applies the state-dir override.
    pub(crate) fn load(config_flag: Option<&Path>, state_dir_flag: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, explicit) = config_path(config_flag);
        let (file, source) = match path {
            Some(path) => match std::fs::read_to_string(&path) {
                Ok(text) => (parse(&path, &text)?, Some(path)),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound && !explicit => (ConfigFile::default(), None),
                Err(err) => return Err(ConfigError(format!("{}: cannot read config: {err}", path.display()))),
            },
            None => (ConfigFile::default(), None),
        };
        Config::resolve(file, source, state_dir_flag)
    }

    /// Parses `text` as if read from `path` (for tests and `corral daemon --check` later).
    #[cfg(test)]
    pub(crate) fn from_str(path: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::resolve(parse(path, text)?, Some(path.to_owned()), None)
    }

    fn resolve(
        file: ConfigFile,
        source: Option<PathBuf>,
        state_dir_flag: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let name = source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in defaults".into());
        // Relative paths and default dirs live next to the config file (or where it would be).
        let base = source
            .as_ref()
            .and_then(|p| p.parent())
            .map(Path::to_owned)
            .or_else(|| config_path(None).0.and_then(|p| p.parent().map(Path::to_owned)))
            .unwrap_or_else(|| PathBuf::from("."));
        let rel = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        let state_dir = match state_dir_override(state_dir_flag) {
            Some(dir) => dir,
            None => file.state_dir.map(rel).unwrap_or_else(default_state_dir),
        };
        let tools_dir = file.tools_dir.map(rel).unwrap_or_else(|| base.join("tools.d"));
        let services_dir = file.services_dir.map(rel).unwrap_or_else(|| base.join("services.d"));
        let store_path = match file.store {
            None => state_dir.join("corral.db"),
            Some(url) => match url.strip_prefix("sqlite://") {
                Some(path) if !path.is_empty() => rel(PathBuf::from(path)),
                _ => {
                    return Err(ConfigError(format!(
                        "{name}: key `store`: unsupported store {url:?} (use sqlite:///path/to/corral.db)"
                    )))
                }
            },
        };
        let job_ttl = match file.job_ttl {
            None => Duration::from_secs(300),
            Some(text) => corral_core::units::parse_duration(&text)
                .map_err(|err| ConfigError(format!("{name}: key `job_ttl`: {err}")))?,
        };
        let task_retention = match &file.tasks.retention {
            None => Duration::from_secs(7 * 24 * 3600),
            Some(text) => corral_core::units::parse_duration(text)
                .map_err(|err| ConfigError(format!("{name}: [tasks] key `retention`: {err}")))?,
        };
        let task_keep = file.tasks.keep.unwrap_or(10_000);
        if let Some(listen) = &file.listen {
            if listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError(format!(
                    "{name}: key `listen`: {listen:?} is not an address such as 127.0.0.1:7070"
                )));
            }
        }
        for (idx, token) in file.token.iter().enumerate() {
            let sources = [
                token.secret_env.is_some(),
                token.secret_file.is_some(),
                token.sha256.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if sources != 1 {
                return Err(ConfigError(format!(
                    "{name}: [[token]] #{} ({:?}): give exactly one of secret_env, secret_file, sha256",
                    idx + 1,
                    token.name
                )));
            }
            for scope in &token.allow {
                crate::daemon::auth::Scope::parse(scope)
                    .map_err(|err| ConfigError(format!("{name}: [[token]] {:?}: key `allow`: {err}", token.name)))?;
            }
        }
        if let Some(github) = file.webhook.as_ref().and_then(|w| w.github.as_ref()) {
            match &github.secret_env {
                None => {
                    return Err(ConfigError(format!(
                        "{name}: [webhook.github]: key `secret_env` is required (unsigned webhooks are never run)"
                    )))
                }
                Some(var) if var.trim().is_empty() => {
                    return Err(ConfigError(format!(
                        "{name}: [webhook.github]: key `secret_env` is empty"
                    )))
                }
                Some(_) => {}
            }
        }
        for notify in &file.notify {
            if !["mattermost", "discord", "slack", "webhook"].contains(&notify.kind.as_str()) {
                return Err(ConfigError(format!(
                    "{name}: [[notify]]: key `kind`: {:?} is not one of mattermost, discord, slack, webhook",
                    notify.kind
                )));
            }
            if notify.url_env.is_none() && notify.url.is_none() {
                return Err(ConfigError(format!(
                    "{name}: [[notify]] {:?}: give `url_env` or `url`",
                    notify.kind
                )));
            }
        }
        let tokens = file
            .token
            .into_iter()
            .map(|mut t| {
                t.secret_file = t.secret_file.map(rel);
                t
            })
            .collect();
        Ok(Config {
            source,
            state_dir,
            tools_dir,
            services_dir,
            listen: file.listen,
            store_path,
            job_ttl,
            task_retention,
            task_keep,
            keeper: file.processes.keeper.unwrap_or(true),
            tokens,
            github_webhook: file.webhook.and_then(|w| w.github),
            notify: file.notify,
        })
    }
}

/// Parses the TOML, turning toml's multi-line error into one line: `file:line:col: message`.
fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
    toml::from_str(text).map_err(|err| {
        let location = err
            .span()
            .map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.rsplit('\n').next().map(|l| l.chars().count() + 1).unwrap_or(1);
                format!(":{line}:{col}")
            })
            .unwrap_or_default();
        let message = err.message().replace('\n', " ");
        ConfigError(format!("{}{location}: {message}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_gives_defaults_relative_to_the_file() {
        let config = Config::from_str(Path::new("/etc/corral/corral.toml"), "").expect("UNWRAP: empty is valid");
        assert_eq!(config.tools_dir, PathBuf::from("/etc/corral/tools.d"));
        assert_eq!(config.services_dir, PathBuf::from("/etc/corral/services.d"));
        assert_eq!(config.job_ttl, Duration::from_secs(300));
        assert!(config.listen.is_none());
        assert!(config.keeper, "children outlive a crash by default");
    }

    #[test]
    fn the_keeper_can_be_turned_off_and_a_bad_value_names_the_line() {
        let path = Path::new("/etc/corral/corral.toml");
        let config = Config::from_str(path, "[processes]\nkeeper = false\n").expect("UNWRAP: valid");
        assert!(!config.keeper);
        let err = Config::from_str(path, "[processes]\nkeeper = \"yes\"\n").expect_err("UNWRAP: a string");
        assert!(err.0.starts_with("/etc/corral/corral.toml:2:"), "{err}");
        let err = Config::from_str(path, "[processes]\nkeepr = true\n").expect_err("UNWRAP: unknown key");
        assert!(err.0.contains("keepr"), "{err}");
    }

    #[test]
    fn full_config_parses() {
        let text = r#"
state_dir = "state"
tools_dir = "/opt/tools"
listen = "127.0.0.1:7070"
store = "sqlite://db/corral.db"
job_ttl = "10m"
[[token]]
name = "ci"
sha256 = "00"
allow = ["read", "exec:deploy/*"]
[webhook.github]
secret_env = "GITHUB_WEBHOOK_SECRET"
[[notify]]
kind = "mattermost"
url_env = "HOOK"
"#;
        let config = Config::from_str(Path::new("/cfg/corral.toml"), text).expect("UNWRAP: valid");
        if std::env::var_os("CORRAL_STATE_DIR").is_none() {
            assert_eq!(config.state_dir, PathBuf::from("/cfg/state"));
        }
        assert_eq!(config.tools_dir, PathBuf::from("/opt/tools"));
        assert_eq!(config.store_path, PathBuf::from("/cfg/db/corral.db"));
        assert_eq!(config.job_ttl, Duration::from_secs(600));
        assert_eq!(config.tokens.len(), 1);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let err = Config::from_str(
            Path::new("/cfg/corral.toml"),
            "listen = \"127.0.0.1:1\"\nbogus_key = 1\n",
        )
        .expect_err("UNWRAP: unknown key");
        let text = err.to_string();
        assert!(text.starts_with("/cfg/corral.toml:2:"), "{text}");
        assert!(text.contains("bogus_key"), "{text}");
        assert!(!text.contains('\n'));

        let err = Config::from_str(Path::new("/c.toml"), "job_ttl = \"soon\"").expect_err("UNWRAP: bad duration");
        assert!(err.to_string().contains("job_ttl"), "{err}");
        let err = Config::from_str(Path::new("/c.toml"), "listen = \"everywhere\"").expect_err("UNWRAP: bad addr");
        assert!(err.to_string().contains("listen"), "{err}");
        let err = Config::from_str(Path::new("/c.toml"), "[[token]]\nname = \"x\"\n").expect_err("UNWRAP: no secret");
        assert!(err.to_string().contains("secret_env"), "{err}");
        let err = Config::from_str(
            Path::new("/c.toml"),
            "[[token]]\nname = \"x\"\nsha256 = \"ab\"\nallow = [\"root\"]\n",
        )
        .expect_err("UNWRAP: bad scope");
        assert!(err.to_string().contains("allow"), "{err}");
    }
}
