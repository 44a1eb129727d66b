//! Reading one tool file (corral TOML or tailkit JSON) into a validated [`ToolSpec`].
//!
//! Both formats are read into their own serde structs, mapped to one raw shape, and checked by one
//! validator, so both obey exactly the same rules. The first problem found rejects the whole file.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regex::RegexBuilder;
use serde::Deserialize;

use super::spec::{ArgKind, ArgSpec, CommandSpec, Segment, Template, ToolSpec};
use crate::units::parse_duration;

/// Tool files larger than this are refused unread.
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// The longest value an arg accepts when its file does not say (`max_len`).
pub const DEFAULT_MAX_LEN: usize = 4096;

/// The largest `max_len` a file may declare: Linux refuses argv elements of `MAX_ARG_STRLEN` bytes or more,
/// the terminating NUL included.
pub const MAX_MAX_LEN: usize = super::spec::MAX_ARG_STRLEN - 1;

/// The longest pattern a file may declare, in bytes.
pub const MAX_PATTERN_LEN: usize = 4096;

/// The most memory one compiled pattern may take (the regex crate's size limits).
const REGEX_SIZE_LIMIT: usize = 1024 * 1024;

/// A tool file that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolFileError {
    /// The file (or the directory, when it cannot be read).
    pub file: PathBuf,
    /// The line of a syntax error, 1-based, when known.
    pub line: Option<usize>,
    /// The column of a syntax error, 1-based, when known.
    pub column: Option<usize>,
    /// What is wrong, in one line (without the file name).
    pub message: String,
}

impl ToolFileError {
    pub(crate) fn new(file: &Path, message: impl Into<String>) -> Self {
        ToolFileError {
            file: file.to_owned(),
            line: None,
            column: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ToolFileError {
    /// `file:line:col: message`, or `file: message` when the problem has no position.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ToolFileError {}

/// The format of a tool file, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Toml,
    Json,
}

impl Format {
    /// `x.toml` → TOML, `x.json` → JSON; editor leftovers and hidden files → `None`.
    pub(crate) fn of(file_name: &str) -> Option<Format> {
        if file_name.starts_with('.') || file_name.starts_with('#') || file_name.ends_with('~') {
            return None;
        }
        let (stem, format) = if let Some(stem) = file_name.strip_suffix(".toml") {
            (stem, Format::Toml)
        } else if let Some(stem) = file_name.strip_suffix(".json") {
            (stem, Format::Json)
        } else {
            return None;
        };
        (!stem.is_empty()).then_some(format)
    }
}

/// Reads and validates one file. Never panics, whatever the file holds.
pub(crate) fn read_tool_file(path: &Path, format: Format) -> Result<ToolSpec, ToolFileError> {
    let text = read_capped(path).map_err(|message| ToolFileError::new(path, message))?;
    parse_tool(path, format, &text)
}

/// Parses and validates the text of one tool file; `path` names it in errors and gives the default tool
/// name (its stem) for TOML.
pub(crate) fn parse_tool(path: &Path, format: Format, text: &str) -> Result<ToolSpec, ToolFileError> {
    let raw = match format {
        Format::Toml => parse_toml(path, text)?,
        Format::Json => parse_json(path, text)?,
    };
    build_tool(path, format, raw).map_err(|message| ToolFileError::new(path, message))
}

/// The file's text: a regular file of at most [`MAX_FILE_SIZE`] bytes of UTF-8.
fn read_capped(path: &Path) -> Result<String, String> {
    // Check before opening, so that a FIFO or a device is never opened (opening a FIFO would block).
    let metadata = std::fs::metadata(path).map_err(|err| format!("cannot read: {err}"))?;
    if !metadata.is_file() {
        return Err("not a regular file".to_owned());
    }
    if metadata.len() > MAX_FILE_SIZE {
        return Err(format!("too large: {} bytes, at most {MAX_FILE_SIZE}", metadata.len()));
    }
    let file = File::open(path).map_err(|err| format!("cannot read: {err}"))?;
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read: {err}"))?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(format!("too large: more than {MAX_FILE_SIZE} bytes"));
    }
    String::from_utf8(bytes).map_err(|err| {
        format!(
            "not UTF-8 text (invalid byte at offset {}): is it a binary file?",
            err.utf8_error().valid_up_to()
        )
    })
}

// ─── The raw shape both formats map to ──────────────────────────────────────────────────────────────

struct RawTool {
    name: Option<String>,
    description: Option<String>,
    version: Option<String>,
    commands: Vec<RawCommand>,
}

struct RawCommand {
    name: Option<String>,
    description: Option<String>,
    exec: Option<Vec<String>>,
    timeout: Option<RawTimeout>,
    concurrency: Option<i64>,
    acl_cap: Option<String>,
    args: Vec<RawArg>,
}

enum RawTimeout {
    /// `"30s"`.
    Text(String),
    /// tailkit's Go `time.Duration`: integer nanoseconds.
    Nanos(serde_json::Number),
    /// Anything else (a bool, an array, ...): its JSON type.
    Other(&'static str),
}

struct RawArg {
    name: Option<String>,
    kind: Option<String>,
    required: bool,
    pattern: Option<String>,
    default: Option<String>,
    secret: bool,
    max_len: Option<i64>,
    description: Option<String>,
}

// ─── corral TOML ────────────────────────────────────────────────────────────────────────────────────

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlTool {
    name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    command: Vec<TomlCommand>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlCommand {
    name: Option<String>,
    description: Option<String>,
    exec: Option<Vec<String>>,
    timeout: Option<String>,
    concurrency: Option<i64>,
    acl_cap: Option<String>,
    #[serde(default)]
    arg: Vec<TomlArg>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlArg {
    name: Option<String>,
    #[serde(default)]
    required: bool,
    pattern: Option<String>,
    default: Option<String>,
    #[serde(default)]
    secret: bool,
    max_len: Option<i64>,
    description: Option<String>,
}

fn parse_toml(path: &Path, text: &str) -> Result<RawTool, ToolFileError> {
    let tool: TomlTool = toml::from_str(text).map_err(|err| {
        let mut error = ToolFileError::new(path, err.message().trim().replace('\n', " "));
        if let Some(span) = err.span() {
            let before = text.get(..span.start).unwrap_or(text);
            error.line = Some(before.matches('\n').count() + 1);
            error.column = Some(before.rsplit('\n').next().map(|l| l.chars().count() + 1).unwrap_or(1));
        }
        error
    })?;
    Ok(RawTool {
        name: tool.name,
        description: tool.description,
        version: None,
        commands: tool
            .command
            .into_iter()
            .map(|c| RawCommand {
                name: c.name,
                description: c.description,
                exec: c.exec,
                timeout: c.timeout.map(RawTimeout::Text),
                concurrency: c.concurrency,
                acl_cap: c.acl_cap,
                args: c
                    .arg
                    .into_iter()
                    .map(|a| RawArg {
                        name: a.name,
                        kind: None,
                        required: a.required,
                        pattern: a.pattern,
                        default: a.default,
                        secret: a.secret,
                        max_len: a.max_len,
                        description: a.description,
                    })
                    .collect(),
            })
            .collect(),
    })
}

// ─── tailkit JSON ───────────────────────────────────────────────────────────────────────────────────

/// `tailkit.Tool` as `tailkit.Install` writes it (`json.MarshalIndent`), plus corral's optional extras
/// (`description`). Unknown fields are ignored (logged at debug).
#[derive(Deserialize)]
#[serde(expecting = "a tool object, as tailkit writes it")]
struct JsonTool {
    name: Option<String>,
    version: Option<String>,
    #[allow(dead_code)]
    tsnet_host: Option<String>,
    description: Option<String>,
    commands: Option<Vec<JsonCommand>>,
    #[serde(flatten)]
    unknown: BTreeMap<String, serde_json::Value>,
}

/// `tailkit.Command`, plus corral's `concurrency`.
#[derive(Deserialize)]
struct JsonCommand {
    name: Option<String>,
    description: Option<String>,
    acl_cap: Option<String>,
    exec_parts: Option<Vec<String>>,
    timeout: Option<serde_json::Value>,
    concurrency: Option<i64>,
    args: Option<Vec<JsonArg>>,
    #[serde(flatten)]
    unknown: BTreeMap<String, serde_json::Value>,
}

/// `tailkit.Arg`, plus corral's `default`, `secret`, `max_len` and `description`.
#[derive(Deserialize)]
struct JsonArg {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    required: Option<bool>,
    pattern: Option<String>,
    default: Option<String>,
    secret: Option<bool>,
    max_len: Option<i64>,
    description: Option<String>,
    #[serde(flatten)]
    unknown: BTreeMap<String, serde_json::Value>,
}

fn parse_json(path: &Path, text: &str) -> Result<RawTool, ToolFileError> {
    let tool: JsonTool = serde_json::from_str(text).map_err(|err| {
        let mut message = err.to_string();
        let suffix = format!(" at line {} column {}", err.line(), err.column());
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_owned();
        }
        let mut error = ToolFileError::new(path, message);
        if err.line() > 0 {
            error.line = Some(err.line());
            error.column = Some(err.column());
        }
        error
    })?;
    let log_unknown = |at: &str, unknown: &BTreeMap<String, serde_json::Value>| {
        for key in unknown.keys() {
            tracing::debug!(file = %path.display(), at, field = %key, "tool file: unknown field ignored");
        }
    };
    log_unknown("tool", &tool.unknown);
    let commands = tool.commands.unwrap_or_default();
    let mut raw_commands = Vec::with_capacity(commands.len());
    for command in commands {
        let at = format!("command {:?}", command.name.as_deref().unwrap_or_default());
        log_unknown(&at, &command.unknown);
        let mut args = Vec::new();
        for arg in command.args.unwrap_or_default() {
            log_unknown(
                &format!("{at} arg {:?}", arg.name.as_deref().unwrap_or_default()),
                &arg.unknown,
            );
            args.push(RawArg {
                name: arg.name,
                kind: arg.kind,
                required: arg.required.unwrap_or(false),
                pattern: arg.pattern,
                default: arg.default,
                secret: arg.secret.unwrap_or(false),
                max_len: arg.max_len,
                description: arg.description,
            });
        }
        raw_commands.push(RawCommand {
            name: command.name,
            description: command.description,
            exec: command.exec_parts,
            timeout: command.timeout.and_then(|value| match value {
                serde_json::Value::Null => None,
                serde_json::Value::Number(n) => Some(RawTimeout::Nanos(n)),
                serde_json::Value::String(s) => Some(RawTimeout::Text(s)),
                serde_json::Value::Bool(_) => Some(RawTimeout::Other("a boolean")),
                serde_json::Value::Array(_) => Some(RawTimeout::Other("an array")),
                serde_json::Value::Object(_) => Some(RawTimeout::Other("an object")),
            }),
            concurrency: command.concurrency,
            acl_cap: command.acl_cap,
            args,
        });
    }
    Ok(RawTool {
        name: tool.name,
        description: tool.description,
        version: tool.version.filter(|v| !v.is_empty()),
        commands: raw_commands,
    })
}

// ─── Validation ─────────────────────────────────────────────────────────────────────────────────────

/// Tool and command names: they appear in URL paths (`/exec/{tool}/{cmd}`) and in token scopes
/// (`exec:<tool>/<cmd>`, with globs), so no `/`, `*`, spaces or leading dot.
fn check_name(what: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} name {name:?}: use letters, digits, '_', '-' and '.', starting with a letter or digit \
             (at most 128)"
        ))
    }
}

/// Arg names: what may stand in a placeholder.
fn is_arg_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

fn non_empty(text: Option<String>) -> Option<String> {
    text.filter(|t| !t.is_empty())
}

fn build_tool(path: &Path, format: Format, raw: RawTool) -> Result<ToolSpec, String> {
    let name = match (non_empty(raw.name), format) {
        (Some(name), _) => name,
        (None, Format::Toml) => {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
            check_name("tool", &stem).map_err(|err| format!("no `name`, and the file name is no tool name: {err}"))?;
            stem
        }
        (None, Format::Json) => return Err("missing tool name (\"name\")".to_owned()),
    };
    check_name("tool", &name)?;
    let mut commands: Vec<Arc<CommandSpec>> = Vec::with_capacity(raw.commands.len());
    for (index, command) in raw.commands.into_iter().enumerate() {
        let spec = build_command(path, format, &name, index, command)?;
        if commands.iter().any(|c| c.name == spec.name) {
            return Err(format!("command {:?} is declared twice", spec.name));
        }
        commands.push(Arc::new(spec));
    }
    Ok(ToolSpec {
        name,
        description: raw.description.unwrap_or_default(),
        version: raw.version,
        file: path.to_owned(),
        commands,
    })
}

fn build_command(
    path: &Path,
    format: Format,
    tool: &str,
    index: usize,
    raw: RawCommand,
) -> Result<CommandSpec, String> {
    let Some(name) = non_empty(raw.name) else {
        return Err(format!("command #{} has no name", index + 1));
    };
    check_name("command", &name)?;
    let context = |message: String| format!("command {name:?}: {message}");

    let timeout = match raw.timeout {
        None => {
            return Err(context(
                "missing timeout (every command needs one, such as \"30s\")".to_owned(),
            ))
        }
        Some(timeout) => parse_timeout(format, timeout).map_err(context)?,
    };
    if timeout.is_zero() {
        return Err(context("timeout must be more than zero".to_owned()));
    }
    let concurrency = match raw.concurrency {
        None => None,
        Some(n) if n >= 1 && n <= i64::from(u32::MAX) => Some(n as u32),
        Some(n) => return Err(context(format!("concurrency must be at least 1 (got {n})"))),
    };

    let mut args: Vec<ArgSpec> = Vec::with_capacity(raw.args.len());
    for (arg_index, raw_arg) in raw.args.into_iter().enumerate() {
        let arg = build_arg(arg_index, raw_arg).map_err(context)?;
        if args.iter().any(|a| a.name == arg.name) {
            return Err(context(format!("arg {:?} is declared twice", arg.name)));
        }
        args.push(arg);
    }

    let key = match format {
        Format::Toml => "exec",
        Format::Json => "exec_parts",
    };
    let raw_exec = raw.exec.unwrap_or_default();
    if raw_exec.is_empty() {
        return Err(context(format!(
            "`{key}` is missing or empty: it must hold at least the program"
        )));
    }
    let mut exec = Vec::with_capacity(raw_exec.len());
    for (i, element) in raw_exec.into_iter().enumerate() {
        if element.contains('\0') {
            return Err(context(format!("{key}[{i}] contains a NUL byte")));
        }
        if i == 0 {
            if element.is_empty() {
                return Err(context(format!("{key}[0], the program, is empty")));
            }
            if element.contains("{{") || element.contains("}}") {
                return Err(context(format!(
                    "{key}[0], the program, must be fixed: it cannot hold a placeholder ({element:?})"
                )));
            }
        }
        let segments =
            parse_template(&element, &args).map_err(|err| context(format!("{key}[{i}] {element:?}: {err}")))?;
        exec.push(Template { raw: element, segments });
    }

    Ok(CommandSpec {
        tool: tool.to_owned(),
        name,
        description: raw.description.unwrap_or_default(),
        exec,
        timeout,
        concurrency,
        acl_cap: non_empty(raw.acl_cap),
        args,
        file: path.to_owned(),
    })
}

fn parse_timeout(format: Format, timeout: RawTimeout) -> Result<Duration, String> {
    match timeout {
        RawTimeout::Text(text) => parse_duration(&text).map_err(|err| format!("timeout: {err}")),
        RawTimeout::Nanos(number) => match number.as_u64() {
            Some(nanos) => Ok(Duration::from_nanos(nanos)),
            None if number.as_i64().is_some() => Err(format!("timeout {number} is negative")),
            None => Err(format!("timeout {number} is not a whole number of nanoseconds")),
        },
        RawTimeout::Other(kind) => Err(match format {
            Format::Json => {
                format!("timeout is {kind}: write nanoseconds (30000000000) or a string such as \"30s\"")
            }
            Format::Toml => format!("timeout is {kind}: write a string such as \"30s\""),
        }),
    }
}

fn build_arg(index: usize, raw: RawArg) -> Result<ArgSpec, String> {
    let Some(name) = non_empty(raw.name) else {
        return Err(format!("arg #{} has no name", index + 1));
    };
    if !is_arg_name(&name) {
        return Err(format!(
            "invalid arg name {name:?}: use letters, digits, '_' and '-', starting with a letter or '_' (at most 64)"
        ));
    }
    let context = |message: String| format!("arg {name:?}: {message}");
    let kind_text = raw.kind.unwrap_or_default();
    let kind = ArgKind::parse(&kind_text).ok_or_else(|| {
        context(format!(
            "unknown type {kind_text:?}: use \"string\", \"int\" or \"bool\""
        ))
    })?;
    let max_len = match raw.max_len {
        None => DEFAULT_MAX_LEN,
        Some(n) if n >= 1 && n <= MAX_MAX_LEN as i64 => n as usize,
        Some(n) => {
            return Err(context(format!(
                "max_len must be between 1 and {MAX_MAX_LEN} (got {n})"
            )))
        }
    };
    let pattern = non_empty(raw.pattern);
    let regex = match &pattern {
        None => None,
        Some(pattern) => Some(compile_pattern(pattern).map_err(context)?),
    };
    if raw.required && raw.default.is_some() {
        return Err(context(
            "is required and has a default: a required arg must come from the caller; drop one".to_owned(),
        ));
    }
    let spec = ArgSpec {
        name: name.clone(),
        description: raw.description.unwrap_or_default(),
        kind,
        required: raw.required,
        pattern,
        regex,
        default: raw.default,
        secret: raw.secret,
        max_len,
    };
    if let Some(default) = &spec.default {
        // The default is a value like any other: it must pass the arg's own checks. The message must not
        // quote it: it may be a secret.
        spec.check(default)
            .map_err(|err| context(format!("its default is refused: {err}")))?;
    }
    Ok(spec)
}

/// Compiles a pattern so that it must match the whole value: `^(?:pattern)$`.
///
/// The pattern is first compiled alone: a pattern that parses on its own has balanced groups, so it
/// cannot close the wrapping group early (`a)|(b` would otherwise turn the anchors off).
fn compile_pattern(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!(
            "pattern is too long: {} bytes, at most {MAX_PATTERN_LEN}",
            pattern.len()
        ));
    }
    let build = |text: &str| {
        RegexBuilder::new(text)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
    };
    let describe = |err: regex::Error| match err {
        regex::Error::CompiledTooBig(limit) => {
            format!("pattern {pattern:?} is too complex (its compiled form exceeds {limit} bytes)")
        }
        err => format!("pattern {pattern:?} does not compile: {}", one_line(&err.to_string())),
    };
    build(pattern).map_err(describe)?;
    build(&format!("^(?:{pattern})$")).map_err(describe)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Splits one exec element into literal text and placeholders.
///
/// A placeholder is `{{name}}` or `{{.name}}` (Go template style), spaces allowed inside the braces,
/// naming a declared arg. Any other template syntax (`{{if ...}}`, `{{.x | f}}`, `{{- .x}}`, `{{.}}`),
/// an unclosed `{{` and a stray `}}` are refused: there is no escape, and no hidden logic in a tool file.
pub(crate) fn parse_template(element: &str, args: &[ArgSpec]) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut rest = element;
    loop {
        let open = rest.find("{{");
        let close = rest.find("}}");
        match (open, close) {
            (None, None) => {
                if !rest.is_empty() {
                    segments.push(Segment::Literal(rest.to_owned()));
                }
                return Ok(segments);
            }
            (None, Some(_)) => return Err("has a \"}}\" with no \"{{\" before it".to_owned()),
            (Some(open), Some(close)) if close < open => {
                return Err("has a \"}}\" with no \"{{\" before it".to_owned());
            }
            (Some(open), _) => {
                if open > 0 {
                    segments.push(Segment::Literal(rest[..open].to_owned()));
                }
                let after = &rest[open + 2..];
                let Some(end) = after.find("}}") else {
                    return Err("has a \"{{\" that is never closed".to_owned());
                };
                let inner = &after[..end];
                let trimmed = inner.trim_matches([' ', '\t']);
                let name = trimmed.strip_prefix('.').unwrap_or(trimmed);
                if inner.contains("{{") || !is_arg_name(name) {
                    return Err(format!(
                        "unsupported template syntax \"{{{{{inner}}}}}\": only {{{{name}}}} and {{{{.name}}}} are allowed"
                    ));
                }
                let Some(index) = args.iter().position(|a| a.name == name) else {
                    return Err(format!("placeholder \"{{{{{inner}}}}}\" names no declared arg"));
                };
                segments.push(Segment::Arg(index));
                rest = &after[end + 2..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(name: &str) -> ArgSpec {
        ArgSpec {
            name: name.to_owned(),
            description: String::new(),
            kind: ArgKind::String,
            required: false,
            pattern: None,
            regex: None,
            default: None,
            secret: false,
            max_len: DEFAULT_MAX_LEN,
        }
    }

    #[test]
    fn templates_parse_both_placeholder_styles() {
        let args = [arg("name"), arg("tag")];
        assert_eq!(
            parse_template("--name={{name}}:{{ .tag }}!", &args).expect("UNWRAP: valid"),
            vec![
                Segment::Literal("--name=".to_owned()),
                Segment::Arg(0),
                Segment::Literal(":".to_owned()),
                Segment::Arg(1),
                Segment::Literal("!".to_owned()),
            ]
        );
        assert_eq!(
            parse_template("{{.name}}", &args).expect("UNWRAP: valid"),
            vec![Segment::Arg(0)]
        );
        assert_eq!(
            parse_template("plain", &args).expect("UNWRAP: valid"),
            vec![Segment::Literal("plain".into())]
        );
        assert_eq!(parse_template("", &args).expect("UNWRAP: valid"), vec![]);
        assert_eq!(
            parse_template("{a}", &args)
                .expect("UNWRAP: single braces are text")
                .len(),
            1
        );
    }

    #[test]
    fn templates_refuse_other_syntax() {
        let args = [arg("name")];
        for (element, needle) in [
            ("{{if .name}}x{{end}}", "unsupported"),
            ("{{.name | printf}}", "unsupported"),
            ("{{- .name}}", "unsupported"),
            ("{{.}}", "unsupported"),
            ("{{}}", "unsupported"),
            ("{{.name.x}}", "unsupported"),
            ("{{\"{{\"}}", "unsupported"),
            ("{{{{name}}}}", "unsupported"),
            ("{{name", "never closed"),
            ("x}}", "no \"{{\""),
            ("}}{{name}}", "no \"{{\""),
            ("{{name}}}}", "no \"{{\""),
            ("{{other}}", "names no declared arg"),
            ("{{.other}}", "names no declared arg"),
        ] {
            let err = parse_template(element, &args).expect_err(element);
            assert!(err.contains(needle), "{element}: {err}");
        }
    }

    #[test]
    fn file_names_select_the_format() {
        assert_eq!(Format::of("docker.toml"), Some(Format::Toml));
        assert_eq!(Format::of("devbox.json"), Some(Format::Json));
        for ignored in [
            ".docker.toml",
            ".docker.toml.swp",
            "docker.toml~",
            "#docker.toml#",
            ".#docker.toml",
            "docker.toml.tmp",
            "docker.yaml",
            ".toml",
            ".json",
            "4913",
            ".tailkit-tmp-123",
        ] {
            assert_eq!(Format::of(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn patterns_match_whole_values_and_cannot_escape_the_anchors() {
        let re = compile_pattern("[a-z]+").expect("UNWRAP: valid");
        assert!(re.is_match("abc"));
        assert!(!re.is_match("abc;"));
        assert!(!re.is_match("abc\n"));
        let re = compile_pattern("^a|b$").expect("UNWRAP: valid");
        assert!(re.is_match("a") && re.is_match("b"));
        assert!(!re.is_match("ax") && !re.is_match("xb"));
        assert!(compile_pattern("a)|(b").is_err());
        assert!(compile_pattern("(a").is_err());
        let err = compile_pattern(r"(\w{100}){100}").expect_err("too big");
        assert!(err.contains("too complex"), "{err}");
        assert!(compile_pattern(&"a".repeat(MAX_PATTERN_LEN + 1))
            .expect_err("too long")
            .contains("too long"));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("tool", "docker").is_ok());
        assert!(check_name("tool", "docker-compose_v2.1").is_ok());
        for bad in ["", "a/b", "a*", ".x", "-x", "a b", "é"] {
            assert!(check_name("tool", bad).is_err(), "{bad:?}");
        }
        assert!(is_arg_name("container") && is_arg_name("_x") && is_arg_name("my-arg"));
        assert!(!is_arg_name("1x") && !is_arg_name("a.b") && !is_arg_name(""));
    }
}
