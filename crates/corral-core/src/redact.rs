//! Redaction of secret-looking values in argv before it is stored or logged.

/// Words that make a flag or key look secret.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "auth",
    "credential",
    "private",
];

/// True when a name (an option, an environment variable) suggests its value is a secret: password, token,
/// secret, key, ...
pub fn looks_secret(name: &str) -> bool {
    let lower = name.trim_start_matches('-').to_ascii_lowercase();
    !lower.is_empty() && SECRET_WORDS.iter().any(|w| lower.contains(w))
}

/// Replaces secret-looking values with `***`: `--password x` → `--password ***`, `--token=x` →
/// `--token=***`, `PASSWORD=x` / `token=x` → `token=***`, and the password in `scheme://user:pass@host`.
pub fn redact_argv(argv: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut redact_next = false;
    for (idx, arg) in argv.iter().enumerate() {
        if redact_next {
            out.push("***".to_owned());
            redact_next = false;
            continue;
        }
        if idx > 0 && arg.starts_with('-') && !arg.contains('=') && looks_secret(arg) {
            out.push(arg.clone());
            redact_next = true;
            continue;
        }
        if let Some((key, _)) = arg.split_once('=') {
            if looks_secret(key) {
                out.push(format!("{key}=***"));
                continue;
            }
        }
        out.push(redact_url_password(arg));
    }
    out
}

fn redact_url_password(arg: &str) -> String {
    let Some(scheme_end) = arg.find("://") else {
        return arg.to_owned();
    };
    let rest = &arg[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{}{}:***{}", &arg[..scheme_end + 3], &authority[..colon], &rest[at..])
        }
        _ => arg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(args: &[&str]) -> Vec<String> {
        redact_argv(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn redacts_secret_looking_values() {
        assert_eq!(
            r(&["mysql", "--password", "hunter2", "-u", "root"]),
            ["mysql", "--password", "***", "-u", "root"]
        );
        assert_eq!(r(&["app", "--api-key=abc"]), ["app", "--api-key=***"]);
        assert_eq!(r(&["env", "TOKEN=abc", "PATH=/bin"]), ["env", "TOKEN=***", "PATH=/bin"]);
        assert_eq!(
            r(&["git", "clone", "https://me:pw@example.com/r.git"]),
            ["git", "clone", "https://me:***@example.com/r.git"]
        );
        assert_eq!(r(&["echo", "hello", "world"]), ["echo", "hello", "world"]);
        // The program itself is never taken for a flag.
        assert_eq!(r(&["--token-tool", "x"]), ["--token-tool", "x"]);
    }
}
