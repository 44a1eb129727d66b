//! Bearer tokens and scopes for the TCP listener.
//!
//! The Unix socket is trusted by peer credentials (same uid or root) and needs no token. Over TCP every
//! request but `/health` and `/ready` needs `Authorization: Bearer <token>`: 401 without a valid token, 403
//! when the token's scopes do not cover the route. Secrets are never kept: only their SHA-256, compared in
//! constant time.

use std::fmt;

use axum::http;
use sha2::{Digest, Sha256};

use crate::config::TokenConfig;

/// A permission a token can hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every route.
    Admin,
    /// Every `GET`.
    Read,
    /// Start, signal, stop and interrupt processes; run pipelines.
    Processes,
    /// Submit and remove tasks.
    Tasks,
    /// Control services.
    Services,
    /// Run tool commands matching `tool/cmd` (globs with `*`).
    Exec(String),
    /// A tailkit `acl_cap` capability.
    Cap(String),
}

impl Scope {
    /// Parses `read`, `processes`, `exec:deploy/*`, `cap:ops`, ...
    pub(crate) fn parse(text: &str) -> Result<Scope, String> {
        Ok(match text {
            "admin" => Scope::Admin,
            "read" => Scope::Read,
            "processes" => Scope::Processes,
            "tasks" => Scope::Tasks,
            "services" => Scope::Services,
            other => {
                if let Some(pattern) = other.strip_prefix("exec:").filter(|p| !p.is_empty()) {
                    Scope::Exec(pattern.to_owned())
                } else if let Some(cap) = other.strip_prefix("cap:").filter(|p| !p.is_empty()) {
                    Scope::Cap(cap.to_owned())
                } else {
                    return Err(format!(
                        "unknown scope {other:?} (use read, processes, tasks, services, admin, exec:<tool>/<cmd>, cap:<name>)"
                    ));
                }
            }
        })
    }
}

impl fmt::Display for Scope {
    /// As written in a token's `allow`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Admin => f.write_str("admin"),
            Scope::Read => f.write_str("read"),
            Scope::Processes => f.write_str("processes"),
            Scope::Tasks => f.write_str("tasks"),
            Scope::Services => f.write_str("services"),
            Scope::Exec(pattern) => write!(f, "exec:{pattern}"),
            Scope::Cap(cap) => write!(f, "cap:{cap}"),
        }
    }
}

/// What a route needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Required {
    /// Nothing: health and readiness probes.
    Nothing,
    /// One scope (admin always suffices).
    Scope(Scope),
    /// An exec job's routes: the scope that may run the job's own command (`exec:<tool>/<cmd>`), so that a
    /// caller can poll, stream and cancel the jobs it may submit; for a `GET`, `read` suffices too. Which
    /// command that is, only the job's record says: the caller looks it up ([`Required::job_scope`]).
    Job {
        /// The job id from the path.
        id: String,
        /// `GET`/`HEAD`: `read` suffices.
        read: bool,
    },
}

impl Required {
    /// The scope a job's routes need, given its tool and command; `None` (the job is unknown) needs any
    /// exec scope, so that a caller who may run something learns "no such job" (404) and nobody else does.
    pub(crate) fn job_scope(tool_and_command: Option<(&str, &str)>) -> Option<Scope> {
        tool_and_command.map(|(tool, cmd)| Scope::Exec(format!("{tool}/{cmd}")))
    }
}

/// Maps a request to the scope it needs.
pub(crate) fn required_scope(method: &http::Method, path: &str) -> Required {
    if path == "/health" || path == "/ready" {
        return Required::Nothing;
    }
    let read = method == http::Method::GET || method == http::Method::HEAD;
    if let ["exec", "jobs", id, ..] = path.trim_start_matches('/').split('/').collect::<Vec<_>>().as_slice() {
        if !id.is_empty() {
            return Required::Job {
                id: (*id).to_owned(),
                read,
            };
        }
    }
    if read {
        return Required::Scope(Scope::Read);
    }
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    Required::Scope(match first {
        "processes" | "interrupt" | "pipelines" => Scope::Processes,
        "tasks" => Scope::Tasks,
        "services" => Scope::Services,
        "exec" => {
            let rest: Vec<&str> = path.trim_start_matches('/').splitn(4, '/').collect();
            match rest.as_slice() {
                ["exec", tool, cmd] => Scope::Exec(format!("{tool}/{cmd}")),
                _ => Scope::Admin,
            }
        }
        _ => Scope::Admin,
    })
}

/// One configured token, with its secret hashed.
#[derive(Clone)]
pub(crate) struct Token {
    pub(crate) name: String,
    digest: [u8; 32],
    scopes: Vec<Scope>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Resolves a `[[token]]`: reads the secret from the environment or a file, or takes the hash as given.
    pub(crate) fn from_config(config: &TokenConfig) -> Result<Token, String> {
        let digest = if let Some(var) = &config.secret_env {
            let secret = std::env::var(var)
                .map_err(|_| format!("token {:?}: environment variable {var} is not set", config.name))?;
            digest_of_secret(&config.name, secret.trim())?
        } else if let Some(path) = &config.secret_file {
            let secret = std::fs::read_to_string(path)
                .map_err(|err| format!("token {:?}: cannot read {}: {err}", config.name, path.display()))?;
            digest_of_secret(&config.name, secret.trim())?
        } else if let Some(hex) = &config.sha256 {
            parse_hex32(hex).ok_or_else(|| format!("token {:?}: sha256 must be 64 hex digits", config.name))?
        } else {
            return Err(format!("token {:?}: no secret", config.name));
        };
        let scopes = config.allow.iter().map(|s| Scope::parse(s)).collect::<Result<_, _>>()?;
        Ok(Token {
            name: config.name.clone(),
            digest,
            scopes,
        })
    }

    /// True when this token holds some exec scope (or admin).
    pub(crate) fn may_exec_something(&self) -> bool {
        self.scopes
            .iter()
            .any(|held| matches!(held, Scope::Admin | Scope::Exec(_)))
    }

    /// True when this token's scopes cover `required`.
    pub(crate) fn allows(&self, required: &Scope) -> bool {
        self.scopes.iter().any(|held| match (held, required) {
            (Scope::Admin, _) => true,
            (Scope::Exec(pattern), Scope::Exec(wanted)) => glob_match(pattern, wanted),
            (held, required) => held == required,
        })
    }
}

fn digest_of_secret(name: &str, secret: &str) -> Result<[u8; 32], String> {
    if secret.len() < 16 {
        return Err(format!("token {name:?}: the secret is shorter than 16 characters"));
    }
    Ok(Sha256::digest(secret.as_bytes()).into())
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tokens(Vec<Token>);

impl Tokens {
    pub(crate) fn new(tokens: Vec<Token>) -> Self {
        Tokens(tokens)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The token whose secret is `presented`, comparing digests in constant time.
    pub(crate) fn find(&self, presented: &str) -> Option<&Token> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for token in &self.0 {
            let diff = token
                .digest
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(token);
            }
        }
        found
    }
}

/// Matches `text` against a pattern where `*` stands for any run of characters.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == t[ti] || p[pi] == '?') {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(allow: &[&str]) -> Token {
        Token::from_config(&TokenConfig {
            name: "t".into(),
            secret_env: None,
            secret_file: None,
            sha256: Some("a".repeat(64)),
            allow: allow.iter().map(|s| s.to_string()).collect(),
        })
        .expect("UNWRAP: valid")
    }

    #[test]
    fn scopes_cover_routes() {
        use http::Method;
        let reader = token(&["read"]);
        let Required::Scope(need) = required_scope(&Method::GET, "/processes") else {
            panic!("needs a scope")
        };
        assert!(reader.allows(&need));
        let Required::Scope(need) = required_scope(&Method::POST, "/processes") else {
            panic!("needs a scope")
        };
        assert!(!reader.allows(&need));
        assert!(token(&["processes"]).allows(&need));
        assert!(token(&["admin"]).allows(&need));
        assert_eq!(required_scope(&Method::GET, "/health"), Required::Nothing);
        let Required::Scope(need) = required_scope(&Method::POST, "/exec/deploy/api") else {
            panic!("needs a scope")
        };
        assert!(token(&["exec:deploy/*"]).allows(&need));
        assert!(!token(&["exec:docker/*"]).allows(&need));
        for method in [Method::GET, Method::DELETE] {
            let read = method == Method::GET;
            assert_eq!(
                required_scope(&method, "/exec/jobs/j1"),
                Required::Job { id: "j1".into(), read }
            );
            assert_eq!(
                required_scope(&method, "/exec/jobs/j1/stream"),
                Required::Job { id: "j1".into(), read }
            );
        }
        assert_eq!(Scope::Exec("deploy/*".into()).to_string(), "exec:deploy/*");
        assert_eq!(Scope::parse("cap:ops").map(|s| s.to_string()), Ok("cap:ops".into()));
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("deploy/*", "deploy/api"));
        assert!(glob_match("*/restart", "docker/restart"));
        assert!(!glob_match("deploy/*", "deployx/api"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }

    #[test]
    fn finds_tokens_by_secret() {
        let secret = "correct horse battery staple";
        let hex: String = Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let tokens = Tokens::new(vec![Token::from_config(&TokenConfig {
            name: "ci".into(),
            secret_env: None,
            secret_file: None,
            sha256: Some(hex),
            allow: vec!["read".into()],
        })
        .expect("UNWRAP: valid")]);
        assert_eq!(tokens.find(secret).map(|t| t.name.as_str()), Some("ci"));
        assert!(tokens.find("wrong").is_none());
        assert!(Scope::parse("root").is_err());
    }
}
